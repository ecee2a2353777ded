/*
 * cmd-validate.c - `mlpipe validate FILE...`: every problem, one per line.
 */
#include "config.h"

#include <getopt.h>
#include <stdio.h>

#include "cli/cmd.h"
#include "base/error.h"
#include "pipeline/pipeline.h"

static int validate_exec(int argc, char **argv)
{
	static const struct option opts[] = {
	        {"help", no_argument, NULL, 'h'},
	        {NULL, 0, NULL, 0},
	};
	int c, status = MLP_EXIT_OK;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'h':
			mlp_cmd_print_help(&mlp_cmd_validate, stdout);
			return MLP_EXIT_OK;
		default:
			return mlp_cmd_usage_error(&mlp_cmd_validate, "unknown option");
		}
	}
	if (optind >= argc)
		return mlp_cmd_usage_error(&mlp_cmd_validate, "no pipeline file given");
	for (int i = optind; i < argc; i++) {
		struct mlp_pipeline *p = NULL;
		struct mlp_diags diags = {0};
		int rc = mlp_pipeline_load(&p, &diags, argv[i]);

		if (rc == 0) {
			printf("%s: ok (%zu stage%s)\n", argv[i], p->nstages,
			       p->nstages == 1 ? "" : "s");
		} else if (diags.len > 0) {
			mlp_diags_print(&diags, stderr);
			status = MLP_EXIT_USAGE;
		} else {
			mlp_cmd_error("%s", mlp_error_last());
			status = MLP_EXIT_USAGE;
		}
		mlp_diags_free(&diags);
		mlp_pipeline_free(p);
	}
	return status;
}

const struct mlp_cmd mlp_cmd_validate = {
        .name = "validate",
        .args = "FILE...",
        .summary = "Check pipeline files and report every problem as FILE:LINE:COL.",
        .help = "Reads each pipeline file and checks everything that can be checked\n"
                "without running it: YAML syntax, keys, types, stage dependencies and\n"
                "cycles, durations, retry rules and ${{ }} expressions.  Every problem\n"
                "is printed on its own line as FILE:LINE:COL: message.\n\n"
                "Exit code: 0 when every file is valid, 2 otherwise.\n",
        .exec = validate_exec,
};
