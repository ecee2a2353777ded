/*
 * stagekind.c - the table of stage kinds (see stagekind.h).
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/crypto.h"
#include "base/error.h"
#include "base/shell.h"
#include "engine/stagekind.h"
#include "store/store.h"

/* run: a shell command, every expression value shell-quoted. */
static int run_prepare(struct mlp_strv *argv, const struct mlp_stage_ctx *ctx)
{
	char *cmd, *script;
	int rc = mlp_expr_expand(&cmd, ctx->stage->run, MLP_EXPR_SHELL, ctx->resolve,
	                         ctx->resolve_payload);

	if (rc != 0)
		return rc;
	script = mlp_stage_script_path(ctx);
	rc = mlp_sh_argv(argv, cmd, script);
	free(script);
	return rc;
}

char *mlp_stage_script_path(const struct mlp_stage_ctx *ctx)
{
	return xasprintf("%s/%s.%d.sh", ctx->run_dir ? ctx->run_dir : ctx->workdir,
	                 ctx->stage->name, ctx->attempt);
}

/*
 * model: on a stage that succeeded: the file must exist; its path and
 * sha256 become outputs (model_path, model_sha256) for later stages.  The
 * file is copied into the artifact store and registered as the next
 * version of the model (a candidate, with the stage's metrics); its number
 * and stored copy become outputs too (model_version, model_artifact).
 * The copy is made before anything is written to the database (the engine
 * commits its turn's transaction first); the registration is a savepoint.
 */
static int model_finish(struct mlp_kvlist *outputs, const struct mlp_stage_ctx *ctx)
{
	const struct mlp_model_ref *m = &ctx->stage->model;
	char hex[MLP_SHA256_HEX_LEN + 1];
	char *rel, *path;
	int rc;

	if (!m->set)
		return 0;
	rc = mlp_expr_expand(&rel, m->path, MLP_EXPR_RAW, ctx->resolve, ctx->resolve_payload);
	if (rc != 0)
		return rc;
	path = rel[0] == '/' ? xstrdup(rel) : xasprintf("%s/%s", ctx->workdir, rel);
	free(rel);
	if (access(path, R_OK) != 0) {
		mlp_error_set("model '%s': the stage succeeded but did not write %s", m->name,
		              path);
		free(path);
		return MLP_EINVAL;
	}
	if (ctx->store == NULL) {
		rc = mlp_sha256_file_hex(hex, path);
	} else {
		struct mlp_model_version_new v = {
		        .model = m->name,
		        .run_id = ctx->run_id,
		        .stage = ctx->stage->name,
		        .metrics = ctx->metrics,
		        .nmetrics = ctx->nmetrics,
		        .sha256 = hex,
		};
		char *stored = NULL, num[16];
		int version = 0;

		rc = mlp_store_artifact_put(ctx->store, hex, &stored, path);
		if (rc == 0)
			rc = mlp_store_model_register(ctx->store, NULL, &version, &v);
		if (rc == 0) {
			snprintf(num, sizeof(num), "%d", version);
			mlp_kvlist_set(outputs, "model_version", num);
			mlp_kvlist_set(outputs, "model_artifact", stored);
		}
		free(stored);
	}
	if (rc == 0) {
		mlp_kvlist_set(outputs, "model_path", path);
		mlp_kvlist_set(outputs, "model_sha256", hex);
	}
	free(path);
	return rc;
}

/*
 * gate: re-enters mlpipe (`mlpipe stage-gate`, cmd-stage-gate.c), which
 * reads the thresholds and metrics from the database and records its
 * decision there.  The database path is made absolute: the stage runs in
 * the workspace, not where mlpipe was started.
 */
static int gate_prepare(struct mlp_strv *argv, const struct mlp_stage_ctx *ctx)
{
	char id[32], *db = NULL;
	int rc;

	if ((rc = mlp_realpath(&db, mlp_store_path(ctx->store))) != 0)
		return rc;
	snprintf(id, sizeof(id), "%lld", (long long)ctx->run_id);
	mlp_strv_push(argv, ctx->self_exe);
	mlp_strv_push(argv, "stage-gate");
	mlp_strv_push(argv, "--db");
	mlp_strv_push_owned(argv, db);
	mlp_strv_push(argv, "--run");
	mlp_strv_push(argv, id);
	mlp_strv_push(argv, "--stage");
	mlp_strv_push(argv, ctx->stage->name);
	return 0;
}

/*
 * rollout: re-enters mlpipe (`mlpipe stage-rollout`, cmd-stage-rollout.c)
 * with the image and env values resolved here, where the expressions'
 * context (run, stages' outputs) is; the rest it reads from the run.
 */
static int rollout_prepare(struct mlp_strv *argv, const struct mlp_stage_ctx *ctx)
{
	const struct mlp_rollout *r = &ctx->stage->rollout;
	size_t base = argv->len;
	char *value;
	int rc;

	/* The same --db/--run/--stage command line as a gate's. */
	if ((rc = gate_prepare(argv, ctx)) != 0)
		return rc;
	free(argv->v[base + 1]);
	argv->v[base + 1] = xstrdup("stage-rollout");
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

static const struct mlp_stage_kind_ops kinds[] = {
        {MLP_STAGE_RUN, run_prepare, model_finish},
        {MLP_STAGE_TRAIN, mlp_train_prepare, model_finish},
        {MLP_STAGE_GATE, gate_prepare, NULL},
        {MLP_STAGE_ROLLOUT, rollout_prepare, NULL},
};

const struct mlp_stage_kind_ops *mlp_stage_kind_ops(enum mlp_stage_kind kind)
{
	for (size_t i = 0; i < MLP_ARRAY_SIZE(kinds); i++)
		if (kinds[i].kind == kind)
			return &kinds[i];
	abort();
}
