/*
 * cmd-stage-gate.c - `mlpipe stage-gate`: the process of a `gate:` stage.
 *
 * Internal: the engine starts it (stage-gate.c, gate_prepare) with the
 * database, the run and the stage.  It parses those and calls
 * mlp_stage_gate_exec (stage-gate.c), which decides in one write
 * transaction and reports like any stage: exit 0 on a pass and 1 on a fail
 * (with a one-line reason on stderr), 2 when it could not decide.
 */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli/cmd.h"
#include "base/error.h"
#include "base/util.h"
#include "engine/stage-gate.h"

static int stage_gate_exec(int argc, char **argv)
{
	static const struct option opts[] = {
	        {"db", required_argument, NULL, 'd'},
	        {"run", required_argument, NULL, 'r'},
	        {"stage", required_argument, NULL, 's'},
	        {"help", no_argument, NULL, 'h'},
	        {NULL, 0, NULL, 0},
	};
	const char *db = NULL, *stage = NULL;
	long long run = 0;
	bool passed;
	int c;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'd':
			db = optarg;
			break;
		case 'r':
			if (mlp_parse_int(&run, optarg, 1, INT64_MAX) != 0)
				return mlp_cmd_usage_error(&mlp_cmd_stage_gate,
				                           "'%s' is not a run id", optarg);
			break;
		case 's':
			stage = optarg;
			break;
		case 'h':
			mlp_cmd_print_help(&mlp_cmd_stage_gate, stdout);
			return MLP_EXIT_OK;
		default:
			return mlp_cmd_usage_error(&mlp_cmd_stage_gate, "unknown option");
		}
	}
	if (optind < argc)
		return mlp_cmd_usage_error(&mlp_cmd_stage_gate, "unexpected argument '%s'",
		                           argv[optind]);
	if (run == 0 || stage == NULL)
		return mlp_cmd_usage_error(&mlp_cmd_stage_gate, "--run and --stage are required");
	if (mlp_stage_gate_exec(&passed, db, run, stage) != 0) {
		mlp_cmd_error("%s", mlp_error_last());
		return MLP_EXIT_USAGE;
	}
	return passed ? MLP_EXIT_OK : MLP_EXIT_FAILED;
}

const struct mlp_cmd mlp_cmd_stage_gate = {
        .name = "stage-gate",
        .args = "--db PATH --run ID --stage NAME",
        .internal = true,
        .summary = "The process of a gate: stage; `mlpipe run` starts it.",
        .help = "Decides one gate stage of a recorded run: seeds the thresholds its\n"
                "require: names that the database never had, checks the metrics of its\n"
                "metrics_from stage against every threshold (and its baseline), records\n"
                "the decision and sets the model version's status, in one transaction.\n"
                "See docs/gates.md.\n\n"
                "Exit code: 0 the gate passed, 1 it failed, 2 it could not decide.\n",
        .exec = stage_gate_exec,
};
