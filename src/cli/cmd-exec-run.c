/*
 * cmd-exec-run.c - `mlpipe exec-run --db PATH --run ID`: how `mlpipe serve`
 * executes one queued run, in a process of its own.
 *
 * Parses the options and calls mlp_exec_run (serve/exec-run.c), or
 * mlp_exec_run_standby for a process started ahead of its run, which
 * claims the run, checks out its commit and runs the engine exactly as
 * `mlpipe run` does.
 */
#include "config.h"

#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "cli/cmd.h"
#include "base/error.h"
#include "base/util.h"
#include "serve/exec-run.h"

static int exec_run_exec(int argc, char **argv)
{
	static const struct option opts[] = {
	        {"db", required_argument, NULL, 'd'},   {"run", required_argument, NULL, 'r'},
	        {"jobs", required_argument, NULL, 'j'}, {"standby", no_argument, NULL, 's'},
	        {"help", no_argument, NULL, 'h'},       {NULL, 0, NULL, 0},
	};
	struct mlp_exec_run_opts o = {0};
	char *self = NULL;
	long long run = 0, jobs = 0;
	bool standby = false;
	int c, rc, status = MLP_EXIT_USAGE;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'd':
			o.db = optarg;
			break;
		case 'r':
			if (mlp_parse_int(&run, optarg, 1, INT64_MAX) != 0) {
				status = mlp_cmd_usage_error(&mlp_cmd_exec_run, "bad --run '%s'",
				                             optarg);
				goto done;
			}
			break;
		case 'j':
			if (mlp_parse_int(&jobs, optarg, 1, 4096) != 0) {
				status = mlp_cmd_usage_error(&mlp_cmd_exec_run, "bad --jobs '%s'",
				                             optarg);
				goto done;
			}
			break;
		case 's':
			standby = true;
			break;
		case 'h':
			mlp_cmd_print_help(&mlp_cmd_exec_run, stdout);
			status = MLP_EXIT_OK;
			goto done;
		default:
			status = mlp_cmd_usage_error(&mlp_cmd_exec_run, "unknown option");
			goto done;
		}
	}
	if ((run == 0) == !standby) {
		status = mlp_cmd_usage_error(&mlp_cmd_exec_run,
		                             "one of --run ID and --standby is required");
		goto done;
	}
	o.run_id = (int64_t)run;
	o.jobs = (int)jobs;
	o.self_exe = self = mlp_cmd_self_exe();
	rc = standby ? mlp_exec_run_standby(&status, &o, STDIN_FILENO) : mlp_exec_run(&status, &o);
	if (rc != 0) {
		mlp_cmd_error("%s", mlp_error_last());
		status = MLP_EXIT_FAILED;
	}
done:
	free(self);
	return status;
}

const struct mlp_cmd mlp_cmd_exec_run = {
        .name = "exec-run",
        .args = "--db PATH (--run ID | --standby) [--jobs N]",
        .internal = true,
        .summary = "Execute a run queued by `mlpipe serve`, in this process.",
        .help = "Started by `mlpipe serve` once per queued run.  Claims the run, fetches\n"
                "its commit into the project's mirror, checks out a workspace under the\n"
                "data directory and runs the pipeline file found at that commit.  A run\n"
                "that was interrupted is resumed: stages that succeeded are not run again.\n"
                "\n"
                "With --standby it starts ahead of its run: it loads, opens the database\n"
                "and waits for the run's ID on a line of standard input; end of input\n"
                "before one makes it exit 0 having done nothing.\n",
        .exec = exec_run_exec,
};
