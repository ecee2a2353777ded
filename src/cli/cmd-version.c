/*
 * cmd-version.c - `mlpipe version`.
 */
#include "config.h"

#include <stdio.h>

#include "cli/cmd.h"
#include "store/store.h"

static int version_exec(int argc, char **argv)
{
	if (argc > 1) {
		if (argv[1][0] == '-' && argv[1][1] == 'h') {
			mlp_cmd_print_help(&mlp_cmd_version, stdout);
			return MLP_EXIT_OK;
		}
		if (argv[1][0] == '-' && argv[1][1] == '-' && argv[1][2] == 'h') {
			mlp_cmd_print_help(&mlp_cmd_version, stdout);
			return MLP_EXIT_OK;
		}
		return mlp_cmd_usage_error(&mlp_cmd_version, "unexpected argument '%s'", argv[1]);
	}
	printf("mlpipe %s\n", PACKAGE_VERSION);
	printf("database schema: %d\n", mlp_store_schema_latest());
#ifdef HAVE_CUDA
	printf("cuda: yes\n");
#else
	printf("cuda: no\n");
#endif
#ifdef HAVE_NCCL
	printf("nccl: yes\n");
#else
	printf("nccl: no\n");
#endif
	return MLP_EXIT_OK;
}

const struct mlp_cmd mlp_cmd_version = {
        .name = "version",
        .args = "",
        .summary = "Show mlpipe's version and what this build supports.",
        .help = "",
        .exec = version_exec,
};
