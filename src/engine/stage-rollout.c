/*
 * stage-rollout.c - `rollout:` stages (see stage-rollout.h).
 *
 * The engine's half: the attempt re-enters mlpipe (`mlpipe stage-rollout`,
 * cmd-stage-rollout.c, which calls mlp_stage_rollout_exec) with the image
 * and env values resolved here, where the expressions' context (run,
 * stages' outputs) is; the rest it reads from the run.  The stage's half:
 * which model version goes out, the rollout itself (deploy/rollout.c), and
 * its report like any stage's: progress on stdout, outputs in
 * $MLPIPE_OUTPUT, the reason of a failure in $MLPIPE_REASON.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "deploy/k8s.h"
#include "deploy/rollout.h"
#include "engine/stage-io.h"
#include "engine/stage-rollout.h"
#include "engine/stagekind.h"
#include "store/store.h"
#include "store/store-models.h"
#include "store/store-runs.h"

/* ---- the engine's half -------------------------------------------------- */

static int rollout_prepare(struct mlp_strv *argv, const struct mlp_stage_ctx *ctx)
{
	const struct mlp_rollout *r = &ctx->stage->rollout;
	char *value;
	int rc;

	if ((rc = mlp_stage_reenter_argv(argv, ctx, "stage-rollout")) != 0)
		return rc;
	if (r->image) {
		if ((rc = mlp_expr_expand(&value, r->image, MLP_EXPR_RAW, ctx->resolve,
		                          ctx->resolve_payload)) != 0)
			return rc;
		mlp_strv_push(argv, "--image");
		mlp_strv_push_owned(argv, value);
	}
	for (size_t i = 0; i < r->env.len; i++) {
		if ((rc = mlp_expr_expand(&value, r->env.items[i].value, MLP_EXPR_RAW, ctx->resolve,
		                          ctx->resolve_payload)) != 0)
			return rc;
		mlp_strv_push(argv, "--env");
		mlp_strv_push_owned(argv, xasprintf("%s=%s", r->env.items[i].key, value));
		free(value);
	}
	return 0;
}

const struct mlp_stage_kind_ops mlp_stage_kind_rollout = {
        .kind = MLP_STAGE_ROLLOUT,
        .prepare = rollout_prepare,
};

/* ---- the stage's half --------------------------------------------------- */

/* Everything one rollout stage reads and makes. */
struct rollout_job {
	struct mlp_store *s;
	struct mlp_run_info run;
	struct mlp_diags diags;
	struct mlp_pipeline *p;
	const struct mlp_rollout *r;
	struct mlp_model_version mv; /* id 0: none */
	struct mlp_k8s *k;
	struct mlp_rollout_outcome out;
	bool tried; /* mlp_rollout_run was called */
};

static void job_clear(struct rollout_job *j)
{
	mlp_rollout_outcome_clear(&j->out);
	mlp_model_version_clear(&j->mv);
	mlp_k8s_close(j->k);
	mlp_pipeline_free(j->p);
	mlp_diags_free(&j->diags);
	mlp_run_info_clear(&j->run);
	mlp_store_close(j->s);
}

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

/* Reads the run, re-parses its pipeline, finds the rollout stage and the
 * model version it rolls out (none when the run registered none). */
static int load_stage(struct rollout_job *j, const struct mlp_stage_rollout_args *a)
{
	const char *model;
	ssize_t idx;
	int rc;

	if ((rc = mlp_store_run_get(&j->run, j->s, a->run_id)) != 0)
		return rc;
	if (mlp_pipeline_parse(&j->p, &j->diags,
	                       j->run.pipeline_path ? j->run.pipeline_path : "pipeline.yml",
	                       j->run.pipeline_text, strlen(j->run.pipeline_text)) != 0) {
		mlp_error_set("the pipeline of run %lld no longer parses", (long long)a->run_id);
		return MLP_EINVAL;
	}
	idx = mlp_pipeline_find_stage(j->p, a->stage);
	if (idx < 0 || j->p->stages[idx].kind != MLP_STAGE_ROLLOUT) {
		mlp_error_set("run %lld has no rollout stage '%s'", (long long)a->run_id, a->stage);
		return MLP_ENOTFOUND;
	}
	j->r = &j->p->stages[idx].rollout;
	model = j->r->model ? j->r->model : stage_model(j->p, (size_t)idx);
	if (model == NULL)
		return 0;
	rc = mlp_store_model_version_of_run(&j->mv, j->s, model, a->run_id);
	if (rc == MLP_ENOTFOUND && j->r->model) {
		/* A deploy-only pipeline: the newest version a gate approved. */
		rc = mlp_store_model_version_with_status(&j->mv, j->s, model, MLP_MODEL_APPROVED,
		                                         0);
		if (rc == MLP_ENOTFOUND) {
			mlp_error_set("model %s has no version to roll out: this run registered "
			              "none and none is approved",
			              model);
			return MLP_EINVAL;
		}
	}
	if (rc == MLP_ENOTFOUND)
		return 0;
	if (rc != 0)
		return rc;
	if (j->mv.status != MLP_MODEL_APPROVED && j->mv.status != MLP_MODEL_DEPLOYED) {
		mlp_error_set("model %s version %d is %s, not approved: not rolling it out",
		              j->mv.model, j->mv.version, mlp_model_status_name(j->mv.status));
		return MLP_EINVAL;
	}
	return 0;
}

static int roll_out(struct rollout_job *j, const struct mlp_stage_rollout_args *a)
{
	struct mlp_k8s_options ko = {.context = j->r->context};
	struct mlp_kvlist env = {0};
	struct mlp_rollout_request req = {
	        .namespace_ = j->r->namespace_,
	        .deployment = j->r->deployment,
	        .container = j->r->container,
	        .image = a->image,
	        .env = a->env,
	        .timeout_ms = j->r->timeout_ms,
	        .on_failure = j->r->on_failure,
	        .dry_run = j->r->dry_run,
	        .run_id = a->run_id,
	        .stage = a->stage,
	        .user = j->run.user,
	        .progress = stdout,
	};
	int rc;

	if ((rc = mlp_k8s_open(&j->k, &ko)) != 0)
		return rc;
	if (j->mv.id) {
		req.model = j->mv.model;
		req.model_version = j->mv.version;
		req.model_version_id = j->mv.id;
		req.model_sha256 = j->mv.sha256;
	}
	if (j->r->model && j->mv.id) {
		/* The model as configuration: the env: values, then the model's. */
		for (size_t i = 0; a->env && i < a->env->len; i++)
			mlp_kvlist_set(&env, a->env->items[i].key, a->env->items[i].value);
		mlp_rollout_model_env(&env, j->mv.model, j->mv.version, j->mv.sha256,
		                      j->mv.artifact_path, j->r->model_base_url);
		req.env = &env;
	}
	j->tried = true;
	rc = mlp_rollout_run(&j->out, j->k, j->s, &req);
	mlp_kvlist_free(&env);
	return rc;
}

static int write_outputs(const struct mlp_rollout_outcome *o)
{
	struct mlp_buf b = {0};
	int rc;

	mlp_buf_printf(&b, "previous_image=%s\n", o->previous_image ? o->previous_image : "");
	mlp_buf_printf(&b, "image=%s\n", o->image ? o->image : "");
	mlp_buf_printf(&b, "revision=%s\n", o->revision ? o->revision : "");
	mlp_buf_printf(&b, "deployment=%lld\n", (long long)o->deployment_id);
	mlp_buf_printf(&b, "rolled_back=%s\n", o->rolled_back ? "true" : "false");
	rc = mlp_stage_io_write(MLP_STAGE_ENV_OUTPUT, b.data, b.len);
	mlp_buf_free(&b);
	return rc;
}

int mlp_stage_rollout_exec(bool *out_failed, const struct mlp_stage_rollout_args *a)
{
	struct rollout_job j = {0};
	const char *why;
	int rc;

	*out_failed = false;
	if ((rc = mlp_store_open(&j.s, a->db, 0)) == 0 && (rc = load_stage(&j, a)) == 0)
		rc = roll_out(&j, a);
	if (rc == 0) {
		rc = write_outputs(&j.out);
	} else if (j.tried) {
		/* What it did before it failed (the image it replaced ...). */
		write_outputs(&j.out);
		*out_failed = rc == MLP_ERROR && j.out.reason;
	}
	if (rc != 0) {
		why = mlp_error_last();
		mlp_stage_io_write(MLP_STAGE_ENV_REASON, why, strlen(why));
	}
	job_clear(&j);
	return rc;
}
