/*
 * cmd-run.c - `mlpipe run FILE`: execute a pipeline here and now.
 *
 * Parses the options and calls mlp_run_local (engine/run.c).  Everything
 * that can be refused is refused before the run is recorded: an invalid
 * file, a stage kind this build cannot execute, a missing working
 * directory, a database that cannot be written.  Those exit 2 and leave no
 * row behind.
 */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cmd.h"
#include "base/error.h"
#include "base/util.h"
#include "engine/run.h"
#include "pipeline/pipeline.h"

static bool valid_var_name(const char *s, size_t len)
{
	if (len == 0 || (s[0] >= '0' && s[0] <= '9'))
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];

		if (!(c == '_' || (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') ||
		      (c >= 'a' && c <= 'z')))
			return false;
	}
	return true;
}

static int run_exec(int argc, char **argv)
{
	static const struct option opts[] = {
	        {"jobs", required_argument, NULL, 'j'},
	        {"var", required_argument, NULL, 'v'},
	        {"workdir", required_argument, NULL, 'C'},
	        {"db", required_argument, NULL, 'd'},
	        {"plain", no_argument, NULL, 'p'},
	        {"help", no_argument, NULL, 'h'},
	        {NULL, 0, NULL, 0},
	};
	struct mlp_kvlist vars = {0};
	struct mlp_diags diags = {0};
	struct mlp_run_local_opts o = {.live = -1};
	char *self = NULL, *user = NULL;
	long long jobs = 0;
	int c, status = MLP_EXIT_USAGE;

	while ((c = getopt_long(argc, argv, "j:C:h", opts, NULL)) != -1) {
		switch (c) {
		case 'j':
			if (mlp_parse_int(&jobs, optarg, 1, 4096) != 0) {
				status = mlp_cmd_usage_error(
				        &mlp_cmd_run, "-j wants a number from 1 to 4096, not '%s'",
				        optarg);
				goto done;
			}
			break;
		case 'v': {
			const char *eq = strchr(optarg, '=');

			if (eq == NULL || !valid_var_name(optarg, (size_t)(eq - optarg))) {
				status = mlp_cmd_usage_error(
				        &mlp_cmd_run, "--var wants NAME=VALUE, not '%s'", optarg);
				goto done;
			}
			{
				char *k = xstrndup(optarg, (size_t)(eq - optarg));

				mlp_kvlist_set(&vars, k, eq + 1);
				free(k);
			}
			break;
		}
		case 'C':
			o.workdir = optarg;
			break;
		case 'd':
			o.db = optarg;
			break;
		case 'p':
			o.live = 0;
			break;
		case 'h':
			mlp_cmd_print_help(&mlp_cmd_run, stdout);
			status = MLP_EXIT_OK;
			goto done;
		default:
			status = mlp_cmd_usage_error(&mlp_cmd_run, "unknown option");
			goto done;
		}
	}
	if (optind >= argc) {
		status = mlp_cmd_usage_error(&mlp_cmd_run, "no pipeline file given");
		goto done;
	}
	if (optind + 1 < argc) {
		status = mlp_cmd_usage_error(&mlp_cmd_run, "one pipeline file at a time");
		goto done;
	}

	o.file = argv[optind];
	o.vars = &vars;
	o.jobs = (int)jobs;
	o.self_exe = self = mlp_cmd_self_exe();
	o.user = user = mlp_cmd_current_user();
	if (mlp_run_local(&status, &diags, &o) != 0) {
		if (diags.len)
			mlp_diags_print(&diags, stderr);
		else
			mlp_cmd_error("%s", mlp_error_last());
		status = MLP_EXIT_USAGE;
	}
done:
	mlp_diags_free(&diags);
	mlp_kvlist_free(&vars);
	free(self);
	free(user);
	return status;
}

const struct mlp_cmd mlp_cmd_run = {
        .name = "run",
        .args = "FILE [-j N] [--var NAME=VALUE]... [--workdir DIR] [--db PATH] [--plain]",
        .summary = "Run a pipeline file here and now, recording it in the database.",
        .help = "Stages start as soon as the stages they need have succeeded, up to -j at\n"
                "a time.  Each `run:` stage is a /bin/sh -c command in its own process\n"
                "group, in the workspace (the pipeline file's directory unless the file\n"
                "or --workdir says otherwise).  On a terminal a live view shows every\n"
                "stage; elsewhere each event and log line is one plain line.\n\n"
                "Options:\n"
                "  -j, --jobs N           stages at once (default: the number of cores)\n"
                "  --var NAME=VALUE       set NAME in the pipeline's env, overriding env:\n"
                "  -C, --workdir DIR      the workspace the stages run in\n"
                "  --db PATH              the database (default: $MLPIPE_DB, else\n"
                "                         $XDG_DATA_HOME/mlpipe/mlpipe.db)\n"
                "  --plain                plain lines even on a terminal\n\n"
                "Ctrl-C or SIGTERM cancels the run: every stage's process group gets\n"
                "SIGTERM, then SIGKILL after its kill_grace, and the run is recorded as\n"
                "cancelled.  What the stages of an mlpipe killed -9 left running is\n"
                "stopped the same way before a new run starts (docs/running.md).\n\n"
                "Exit code: 0 the run succeeded, 1 it failed, 2 the file or the options\n"
                "are invalid (nothing was run), 130/143 cancelled by SIGINT/SIGTERM.\n",
        .exec = run_exec,
};
