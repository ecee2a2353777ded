/*
 * cmd-stage-rollout.c - `mlpipe stage-rollout`: the process of a
 * `rollout:` stage.
 *
 * Internal: the engine starts it (stage-rollout.c, rollout_prepare) with the
 * database, the run, the stage, and the image and env values with their
 * ${{ }} expressions already resolved.  It reads the run's pipeline from
 * the database for the rest of the stage's settings, finds the model
 * version this run registered under the model of a gate (or model:) stage
 * the rollout depends on, and rolls out (rollout.c).
 *
 * It talks back like any stage: progress lines on stdout (the stage's log
 * and live view), previous_image=, image=, revision= and deployment= in
 * $MLPIPE_OUTPUT, the reason of a failure in $MLPIPE_REASON; exit 0 when
 * the rollout completed, 1 when it failed (rolled back unless on_failure:
 * keep), 2 when it could not be tried.
 */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cmd.h"
#include "base/error.h"
#include "deploy/k8s.h"
#include "pipeline/pipeline.h"
#include "deploy/rollout.h"
#include "engine/stagekind.h"
#include "store/store.h"
#include "base/util.h"

/* The model of the nearest gate (else model:) stage the rollout needs. */
static const char *stage_model(const struct mlp_pipeline *p, size_t index)
{
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < p->nstages; i++) {
			const struct mlp_stage *st = &p->stages[i];

			if (i == index || !mlp_pipeline_depends_on(p, index, i))
				continue;
			if (pass == 0 && st->kind == MLP_STAGE_GATE && st->gate.model)
				return st->gate.model;
			if (pass == 1 && st->model.set)
				return st->model.name;
		}
	}
	return NULL;
}

static void write_reason(const char *why)
{
	const char *path = getenv("MLPIPE_REASON");

	if (path && *path && why)
		mlp_write_file_atomic(path, why, strlen(why), 0644);
}

static int write_outputs(const struct mlp_rollout_outcome *o)
{
	const char *path = getenv("MLPIPE_OUTPUT");
	struct mlp_buf b = {0};
	int rc;

	if (path == NULL || *path == '\0')
		return 0;
	mlp_buf_printf(&b, "previous_image=%s\n", o->previous_image ? o->previous_image : "");
	mlp_buf_printf(&b, "image=%s\n", o->image ? o->image : "");
	mlp_buf_printf(&b, "revision=%s\n", o->revision ? o->revision : "");
	mlp_buf_printf(&b, "deployment=%lld\n", (long long)o->deployment_id);
	mlp_buf_printf(&b, "rolled_back=%s\n", o->rolled_back ? "true" : "false");
	rc = mlp_write_file_atomic(path, b.data, b.len, 0644);
	mlp_buf_free(&b);
	return rc;
}

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
	struct mlp_run_info run = {0};
	struct mlp_diags diags = {0};
	struct mlp_pipeline *p = NULL;
	struct mlp_kvlist env = {0};
	struct mlp_model_version mv = {0};
	struct mlp_rollout_outcome out = {0};
	struct mlp_k8s_options ko = {0};
	struct mlp_k8s *k = NULL;
	struct mlp_store *s = NULL;
	const struct mlp_rollout *r;
	const char *db = NULL, *stage = NULL, *image = NULL, *model;
	long long run_id = 0;
	ssize_t idx;
	int c, rc, status = MLP_EXIT_USAGE;

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
	if (mlp_store_open(&s, db, 0) != 0 || mlp_store_run_get(s, &run, run_id) != 0)
		goto fail;
	if (mlp_pipeline_parse(&p, &diags, run.pipeline_path ? run.pipeline_path : "pipeline.yml",
	                       run.pipeline_text, strlen(run.pipeline_text)) != 0) {
		mlp_error_set("the pipeline of run %lld no longer parses", run_id);
		goto fail;
	}
	idx = mlp_pipeline_find_stage(p, stage);
	if (idx < 0 || p->stages[idx].kind != MLP_STAGE_ROLLOUT) {
		mlp_error_set("run %lld has no rollout stage '%s'", run_id, stage);
		goto fail;
	}
	r = &p->stages[idx].rollout;
	model = stage_model(p, (size_t)idx);
	if (model) {
		rc = mlp_store_model_version_of_run(s, &mv, model, run_id);
		if (rc != 0 && rc != MLP_ENOTFOUND)
			goto fail;
		if (rc == 0 && mv.status != MLP_MODEL_APPROVED && mv.status != MLP_MODEL_DEPLOYED) {
			mlp_error_set("model %s version %d is %s, not approved: not rolling it out",
			              mv.model, mv.version, mlp_model_status_name(mv.status));
			goto fail;
		}
	}
	ko.context = r->context;
	if (mlp_k8s_open(&k, &ko) != 0)
		goto fail;
	{
		struct mlp_rollout_request req = {
		        .namespace_ = r->namespace_,
		        .deployment = r->deployment,
		        .container = r->container,
		        .image = image,
		        .env = &env,
		        .timeout_ms = r->timeout_ms,
		        .on_failure = r->on_failure,
		        .dry_run = r->dry_run,
		        .run_id = run_id,
		        .stage = stage,
		        .user = run.user,
		        .progress = stdout,
		};

		if (mv.id) {
			req.model = mv.model;
			req.model_version = mv.version;
			req.model_version_id = mv.id;
			req.model_sha256 = mv.sha256;
		}
		rc = mlp_rollout_run(k, s, &out, &req);
	}
	if (rc == 0) {
		if (write_outputs(&out) != 0)
			goto fail;
		status = MLP_EXIT_OK;
		goto done;
	}
	write_outputs(&out);
	status = rc == MLP_ERROR && out.reason ? MLP_EXIT_FAILED : MLP_EXIT_USAGE;
	write_reason(mlp_error_last());
	mlp_cmd_error("%s", mlp_error_last());
	goto done;
fail:
	write_reason(mlp_error_last());
	mlp_cmd_error("%s", mlp_error_last());
	status = MLP_EXIT_USAGE;
done:
	mlp_rollout_outcome_clear(&out);
	mlp_model_version_clear(&mv);
	mlp_kvlist_free(&env);
	mlp_k8s_close(k);
	mlp_pipeline_free(p);
	mlp_diags_free(&diags);
	mlp_run_info_clear(&run);
	mlp_store_close(s);
	return status;
}

const struct mlp_cmd mlp_cmd_stage_rollout = {
        .name = "stage-rollout",
        .args = "--db PATH --run ID --stage NAME [--image IMAGE] [--env NAME=VALUE]...",
        .summary = "(internal) The process of a rollout: stage; `mlpipe run` starts it.",
        .help = "Rolls out one rollout: stage of a recorded run: the image and env given\n"
                "(resolved by the engine), the Deployment, container, timeout and\n"
                "on_failure of the stage, and the model version the run registered.\n"
                "See docs/rollout.md.\n\n"
                "Exit code: 0 the rollout completed, 1 it failed, 2 it could not be tried.\n",
        .exec = stage_rollout_exec,
};
