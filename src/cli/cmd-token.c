/*
 * cmd-token.c - `mlpipe token create NAME [--scope SCOPE]...`: a bearer
 * token for the HTTP API.  The token is printed once; the database keeps
 * its SHA-256 and the scopes it grants (docs/api.md).
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "cli/cmd.h"
#include "base/crypto.h"
#include "base/error.h"
#include "serve/serve.h"
#include "store/store.h"
#include "store/store-queue.h"
#include "base/util.h"

/* The --scope options after NAME, joined with commas into b. */
static int token_scopes(struct mlp_buf *b, int argc, char **argv, int first)
{
	for (int i = first; i < argc; i++) {
		const char *v = argv[i];

		if (strncmp(v, "--scope=", 8) == 0) {
			v += 8;
		} else if (strcmp(v, "--scope") == 0 && i + 1 < argc) {
			v = argv[++i];
		} else {
			return mlp_cmd_usage_error(&mlp_cmd_token, "unexpected '%s'", argv[i]);
		}
		if (!mlp_serve_scope_known(v))
			return mlp_cmd_usage_error(&mlp_cmd_token,
			                           "unknown scope '%s' (runs:read, runs:write, "
			                           "models:read or all)",
			                           v);
		mlp_buf_printf(b, "%s%s", b->len ? "," : "", v);
	}
	return 0;
}

static int token_exec(int argc, char **argv)
{
	struct mlp_store *store = NULL;
	struct mlp_buf scopes = {0};
	const char *db = NULL;
	unsigned char raw[32];
	char token[4 + 2 * sizeof(raw) + 1], sha[MLP_SHA256_HEX_LEN + 1];
	int first = 1, status;

	if (argc > 2 && strcmp(argv[1], "--db") == 0) {
		db = argv[2];
		first = 3;
	}
	if (first < argc &&
	    (strcmp(argv[first], "--help") == 0 || strcmp(argv[first], "-h") == 0)) {
		mlp_cmd_print_help(&mlp_cmd_token, stdout);
		return MLP_EXIT_OK;
	}
	if (first + 2 > argc || strcmp(argv[first], "create") != 0 || argv[first + 1][0] == '-')
		return mlp_cmd_usage_error(&mlp_cmd_token, "token create NAME [--scope SCOPE]...");
	if ((status = token_scopes(&scopes, argc, argv, first + 2)) != 0)
		goto done;
	status = MLP_EXIT_FAILED;
	if (mlp_random_bytes(raw, sizeof(raw)) != 0) {
		mlp_cmd_error("%s", mlp_error_last());
		goto done;
	}
	memcpy(token, "mlp_", 4);
	for (size_t i = 0; i < sizeof(raw); i++)
		snprintf(token + 4 + 2 * i, 3, "%02x", raw[i]);
	mlp_sha256_hex(sha, token, strlen(token));
	if (mlp_store_open(&store, db, 0) != 0 ||
	    mlp_store_token_create(store, argv[first + 1], sha,
	                           scopes.len ? mlp_buf_str(&scopes) : NULL) != 0) {
		mlp_cmd_error("%s", mlp_error_last());
	} else {
		printf("%s\n", token);
		status = MLP_EXIT_OK;
	}
	explicit_bzero(token, sizeof(token));
done:
	mlp_buf_free(&scopes);
	mlp_store_close(store);
	return status;
}

const struct mlp_cmd mlp_cmd_token = {
        .name = "token",
        .args = "[--db PATH] create NAME [--scope SCOPE]...",
        .summary = "Create a bearer token for the HTTP API (printed once, stored hashed).",
        .help = "Use it as `Authorization: Bearer TOKEN` with /api/v1 (docs/api.md).\n\n"
                "Options:\n"
                "  --scope SCOPE   what the token may do (repeatable; default all):\n"
                "                  runs:read    list runs, read a run and its logs\n"
                "                  runs:write   start and cancel runs\n"
                "                  models:read  download model artifacts (the model\n"
                "                               server's token: docs/model-server.md)\n"
                "                  all          every scope, present and future\n",
        .exec = token_exec,
};
