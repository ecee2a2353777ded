/*
 * stage-train.c - `train:` stages: what this node must have for them, and
 * the command line of the launcher.
 *
 * A train stage's attempt is `mlpipe launch` (runners/launch.c) with the
 * stage's ranks, restarts, watchdog and GPUs, running either the builtin
 * trainer (mlpipe-train, found next to the mlpipe binary or on PATH) or the
 * user's command through /bin/sh -c.  The launcher's grace period is half
 * the stage's, so that it has stopped its ranks before the engine would
 * SIGKILL it.  Before a run is recorded, the stage's GPUs are counted on
 * this node (runners/launch.h).  A stage with runs-on: kubernetes goes to
 * stage-k8s.c instead.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"
#include "base/exec.h"
#include "engine/stage-io.h"
#include "engine/stage-k8s.h"
#include "engine/stagekind.h"
#include "base/util.h"
#include "launch.h"

static void push_int(struct mlp_strv *argv, const char *flag, long long v)
{
	mlp_strv_push(argv, flag);
	mlp_strv_push_owned(argv, xasprintf("%lld", v));
}

static void push_double(struct mlp_strv *argv, const char *flag, double v)
{
	mlp_strv_push(argv, flag);
	mlp_strv_push_owned(argv, xasprintf("%.17g", v));
}

/* mlpipe-train beside the running mlpipe, else on PATH. */
static int find_trainer(char **out, const char *self_exe)
{
	char *dir = mlp_dirname(self_exe);
	char *beside = xasprintf("%s/mlpipe-train", dir);

	free(dir);
	if (access(beside, X_OK) == 0) {
		*out = beside;
		return 0;
	}
	free(beside);
	if (mlp_exec_find(out, "mlpipe-train") != 0) {
		mlp_error_set("the builtin trainer mlpipe-train is neither next to %s nor on PATH",
		              self_exe);
		return MLP_ENOTFOUND;
	}
	return 0;
}

int mlp_stage_train_builtin_argv(struct mlp_strv *argv, const struct mlp_stage_ctx *ctx,
                                 const char *trainer_path)
{
	const struct mlp_builtin_train *b = &ctx->stage->train.builtin;
	struct mlp_buf layers = {0};
	char *trainer = NULL, *data = NULL, *test = NULL, *out = NULL;
	int rc;

	if (trainer_path)
		trainer = xstrdup(trainer_path);
	else if ((rc = find_trainer(&trainer, ctx->self_exe)) != 0)
		return rc;
	if ((rc = mlp_expr_expand(&data, b->data, MLP_EXPR_RAW, ctx->resolve,
	                          ctx->resolve_payload)) != 0)
		goto done;
	if (b->test_data && (rc = mlp_expr_expand(&test, b->test_data, MLP_EXPR_RAW, ctx->resolve,
	                                          ctx->resolve_payload)) != 0)
		goto done;
	if (ctx->stage->model.set &&
	    (rc = mlp_expr_expand(&out, ctx->stage->model.path, MLP_EXPR_RAW, ctx->resolve,
	                          ctx->resolve_payload)) != 0)
		goto done;
	for (size_t i = 0; i < b->nlayers; i++)
		mlp_buf_printf(&layers, "%s%d", i ? "," : "", b->layers[i]);
	mlp_strv_push_owned(argv, trainer);
	trainer = NULL;
	mlp_strv_push(argv, "train");
	mlp_strv_push(argv, "--layers");
	mlp_strv_push(argv, mlp_buf_str(&layers));
	push_int(argv, "--epochs", b->epochs);
	push_int(argv, "--batch", b->batch);
	push_double(argv, "--lr", b->lr);
	push_double(argv, "--momentum", b->momentum);
	push_double(argv, "--weight-decay", b->weight_decay);
	push_int(argv, "--seed", b->seed);
	mlp_strv_push(argv, "--data");
	mlp_strv_push(argv, data);
	if (test) {
		mlp_strv_push(argv, "--test-data");
		mlp_strv_push(argv, test);
	}
	if (b->validation_split > 0)
		push_double(argv, "--validation-split", b->validation_split);
	mlp_strv_push(argv, "--device");
	mlp_strv_push(argv, b->device ? b->device : "auto");
	mlp_strv_push(argv, "--out");
	mlp_strv_push(argv, out ? out : "model.bin");
done:
	mlp_buf_free(&layers);
	free(trainer);
	free(data);
	free(test);
	free(out);
	return rc;
}

/* This node must have the GPUs the stage asks for (a stage on Kubernetes
 * gets them on the cluster). */
static int train_check(struct mlp_diags *diags, const struct mlp_pipeline *p,
                       const struct mlp_stage *s)
{
	int rc = 0;

	if (s->runs_on == MLP_RUNS_ON_KUBERNETES)
		return 0;
	if (s->train.gpus_per_node > 0) {
		char(*ids)[32] = xcalloc(MLP_LAUNCH_MAX_GPUS, sizeof(*ids));
		const char *source = NULL;
		int have = mlp_launch_node_gpus(ids, MLP_LAUNCH_MAX_GPUS, &source);

		free(ids);
		if (have < s->train.gpus_per_node) {
			mlp_diags_add(diags, p->path, s->kind_pos,
			              "stage '%s' asks for %d GPU%s per node, but this node "
			              "has %d (%s)",
			              s->name, s->train.gpus_per_node,
			              s->train.gpus_per_node == 1 ? "" : "s", have, source);
			rc = MLP_EINVAL;
		}
	}
	return rc;
}

static int train_prepare(struct mlp_strv *argv, const struct mlp_stage_ctx *ctx)
{
	const struct mlp_train *t = &ctx->stage->train;
	const char *metrics = mlp_strv_getenv(ctx->env, MLP_STAGE_ENV_METRICS);

	if (ctx->stage->runs_on == MLP_RUNS_ON_KUBERNETES)
		return mlp_stage_k8s_prepare(argv, ctx);
	mlp_strv_push(argv, ctx->self_exe);
	mlp_strv_push(argv, "launch");
	push_int(argv, "--nproc-per-node", t->ranks > 0 ? t->ranks : 1);
	push_int(argv, "--max-restarts", t->max_restarts);
	if (t->stall_timeout_ms > 0) {
		mlp_strv_push(argv, "--stall-timeout");
		mlp_strv_push_owned(argv, xasprintf("%lldms", (long long)t->stall_timeout_ms));
	}
	mlp_strv_push(argv, "--kill-grace");
	mlp_strv_push_owned(argv, xasprintf("%lldms", (long long)ctx->stage->kill_grace_ms / 2));
	if (t->gpus_per_node > 0)
		push_int(argv, "--gpus-per-node", t->gpus_per_node);
	mlp_strv_push(argv, "--run-id");
	mlp_strv_push_owned(argv, xasprintf("run-%lld-%s-%d", (long long)ctx->run_id,
	                                    ctx->stage->name, ctx->attempt));
	if (metrics) {
		mlp_strv_push(argv, "--progress-file");
		mlp_strv_push(argv, metrics);
	}
	mlp_strv_push(argv, "--");
	if (t->has_builtin)
		return mlp_stage_train_builtin_argv(argv, ctx, NULL);
	return mlp_stage_shell_argv(argv, ctx, t->command);
}

const struct mlp_stage_kind_ops mlp_stage_kind_train = {
        .kind = MLP_STAGE_TRAIN,
        .check = train_check,
        .prepare = train_prepare,
        .finish = mlp_stage_model_finish,
};
