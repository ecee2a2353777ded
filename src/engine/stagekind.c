/*
 * stagekind.c - the table of stage kinds (see stagekind.h) and the helpers
 * several kinds share: the shell command line, the command line of a kind
 * that re-enters mlpipe, and the model: finish.  What one kind does lives
 * in its stage-<kind>.c.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/crypto.h"
#include "base/error.h"
#include "base/shell.h"
#include "engine/stagekind.h"
#include "store/store.h"
#include "store/store-models.h"

static const struct mlp_stage_kind_ops *const kinds[] = {
        &mlp_stage_kind_run,
        &mlp_stage_kind_train,
        &mlp_stage_kind_gate,
        &mlp_stage_kind_rollout,
};

const struct mlp_stage_kind_ops *mlp_stage_kind_ops(enum mlp_stage_kind kind)
{
	for (size_t i = 0; i < MLP_ARRAY_SIZE(kinds); i++)
		if (kinds[i]->kind == kind)
			return kinds[i];
	abort();
}

char *mlp_stage_script_path(const struct mlp_stage_ctx *ctx)
{
	return xasprintf("%s/%s.%d.sh", ctx->run_dir ? ctx->run_dir : ctx->workdir,
	                 ctx->stage->name, ctx->attempt);
}

int mlp_stage_shell_argv(struct mlp_strv *argv, const struct mlp_stage_ctx *ctx,
                         const char *command)
{
	char *cmd, *script;
	int rc = mlp_expr_expand(&cmd, command, MLP_EXPR_SHELL, ctx->resolve, ctx->resolve_payload);

	if (rc != 0)
		return rc;
	script = mlp_stage_script_path(ctx);
	rc = mlp_sh_argv(argv, cmd, script);
	free(script);
	return rc;
}

int mlp_stage_reenter_argv(struct mlp_strv *argv, const struct mlp_stage_ctx *ctx,
                           const char *subcommand)
{
	char id[32], *db = NULL;
	int rc;

	if ((rc = mlp_realpath(&db, mlp_store_path(ctx->store))) != 0)
		return rc;
	snprintf(id, sizeof(id), "%lld", (long long)ctx->run_id);
	mlp_strv_push(argv, ctx->self_exe);
	mlp_strv_push(argv, subcommand);
	mlp_strv_push(argv, "--db");
	mlp_strv_push_owned(argv, db);
	mlp_strv_push(argv, "--run");
	mlp_strv_push(argv, id);
	mlp_strv_push(argv, "--stage");
	mlp_strv_push(argv, ctx->stage->name);
	return 0;
}

/*
 * The copy is made before anything is written to the database (the engine
 * commits its turn's transaction first); the registration is a savepoint.
 */
int mlp_stage_model_finish(struct mlp_kvlist *outputs, const struct mlp_stage_ctx *ctx)
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

		rc = mlp_store_artifact_put(hex, &stored, ctx->store, path);
		if (rc == 0)
			rc = mlp_store_model_register(NULL, &version, ctx->store, &v);
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
