/*
 * cmd-token.c - `mlpipe token create NAME`: a bearer token for the HTTP
 * API.  The token is printed once; the database keeps its SHA-256.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "cli/cmd.h"
#include "base/crypto.h"
#include "base/error.h"
#include "store/store.h"
#include "store/store-queue.h"
#include "base/util.h"

static int token_exec(int argc, char **argv)
{
	struct mlp_store *store = NULL;
	const char *db = NULL;
	unsigned char raw[32];
	char token[4 + 2 * sizeof(raw) + 1], sha[MLP_SHA256_HEX_LEN + 1];
	int first = 1, status = MLP_EXIT_FAILED;

	if (argc > 2 && strcmp(argv[1], "--db") == 0) {
		db = argv[2];
		first = 3;
	}
	if (first < argc &&
	    (strcmp(argv[first], "--help") == 0 || strcmp(argv[first], "-h") == 0)) {
		mlp_cmd_print_help(&mlp_cmd_token, stdout);
		return MLP_EXIT_OK;
	}
	if (first + 2 != argc || strcmp(argv[first], "create") != 0)
		return mlp_cmd_usage_error(&mlp_cmd_token, "token create NAME");
	if (mlp_random_bytes(raw, sizeof(raw)) != 0) {
		mlp_cmd_error("%s", mlp_error_last());
		return MLP_EXIT_FAILED;
	}
	memcpy(token, "mlp_", 4);
	for (size_t i = 0; i < sizeof(raw); i++)
		snprintf(token + 4 + 2 * i, 3, "%02x", raw[i]);
	mlp_sha256_hex(sha, token, strlen(token));
	if (mlp_store_open(&store, db, 0) != 0 ||
	    mlp_store_token_create(store, argv[first + 1], sha) != 0) {
		mlp_cmd_error("%s", mlp_error_last());
	} else {
		printf("%s\n", token);
		status = MLP_EXIT_OK;
	}
	explicit_bzero(token, sizeof(token));
	mlp_store_close(store);
	return status;
}

const struct mlp_cmd mlp_cmd_token = {
        .name = "token",
        .args = "[--db PATH] create NAME",
        .summary = "Create a bearer token for the HTTP API (printed once, stored hashed).",
        .help = "Use it as `Authorization: Bearer TOKEN` with /api/v1 (docs/api.md).\n",
        .exec = token_exec,
};
