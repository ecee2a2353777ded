/*
 * cmd-stage-rollout.c - `mlpipe stage-rollout`: the process of a
 * `rollout:` stage.
 *
 * Internal: the engine starts it (stage-rollout.c, rollout_prepare) with
 * the database, the run, the stage, and the image and env values with
 * their ${{ }} expressions already resolved.  It parses those and calls
 * mlp_stage_rollout_exec (stage-rollout.c): exit 0 when the rollout
 * completed, 1 when it failed (rolled back unless on_failure: keep), 2
 * when it could not be tried.
 */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cmd.h"
#include "base/error.h"
#include "base/util.h"
#include "engine/stage-rollout.h"

static int stage_rollout_exec(int argc, char **argv)
{
	static const struct option opts[] = {
	        {"db", required_argument, NULL, 'd'},
	        {"run", required_argument, NULL, 'r'},
	        {"stage", required_argument, NULL, 's'},
	        {"image", required_argument, NULL, 'i'},
	        {"env", required_argument, NULL, 'e'},
	        {"help", no_argument, NULL, 'h'},
	        {NULL, 0, NULL, 0},
	};
	const struct mlp_cmd *self = &mlp_cmd_stage_rollout;
	struct mlp_kvlist env = {0};
	const char *db = NULL, *stage = NULL, *image = NULL;
	long long run_id = 0;
	bool failed;
	int c, status = MLP_EXIT_OK;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'd':
			db = optarg;
			break;
		case 'r':
			if (mlp_parse_int(&run_id, optarg, 1, INT64_MAX) != 0)
				return mlp_cmd_usage_error(self, "'%s' is not a run id", optarg);
			break;
		case 's':
			stage = optarg;
			break;
		case 'i':
			image = optarg;
			break;
		case 'e': {
			const char *eq = strchr(optarg, '=');
			char *key;

			if (eq == NULL || eq == optarg) {
				mlp_kvlist_free(&env);
				return mlp_cmd_usage_error(self, "--env takes NAME=VALUE");
			}
			key = xstrndup(optarg, (size_t)(eq - optarg));
			mlp_kvlist_set(&env, key, eq + 1);
			free(key);
			break;
		}
		case 'h':
			mlp_kvlist_free(&env);
			mlp_cmd_print_help(self, stdout);
			return MLP_EXIT_OK;
		default:
			mlp_kvlist_free(&env);
			return mlp_cmd_usage_error(self, "unknown option");
		}
	}
	if (optind < argc || run_id == 0 || stage == NULL) {
		mlp_kvlist_free(&env);
		return mlp_cmd_usage_error(self, "--run and --stage are required");
	}
	{
		struct mlp_stage_rollout_args args = {
		        .db = db,
		        .run_id = run_id,
		        .stage = stage,
		        .image = image,
		        .env = &env,
		};

		if (mlp_stage_rollout_exec(&failed, &args) != 0) {
			mlp_cmd_error("%s", mlp_error_last());
			status = failed ? MLP_EXIT_FAILED : MLP_EXIT_USAGE;
		}
	}
	mlp_kvlist_free(&env);
	return status;
}

const struct mlp_cmd mlp_cmd_stage_rollout = {
        .name = "stage-rollout",
        .args = "--db PATH --run ID --stage NAME [--image IMAGE] [--env NAME=VALUE]...",
        .internal = true,
        .summary = "The process of a rollout: stage; `mlpipe run` starts it.",
        .help = "Rolls out one rollout: stage of a recorded run: the image and env given\n"
                "(resolved by the engine), the Deployment, container, timeout and\n"
                "on_failure of the stage, and the model version the run registered.\n"
                "See docs/rollout.md.\n\n"
                "Exit code: 0 the rollout completed, 1 it failed, 2 it could not be tried.\n",
        .exec = stage_rollout_exec,
};
