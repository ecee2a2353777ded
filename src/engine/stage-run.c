/*
 * stage-run.c - `run:` stages: a shell command.
 *
 * The attempt is /bin/sh -c with the stage's text, every ${{ }} value
 * shell-quoted (mlp_stage_shell_argv); a stage with model: registers its
 * file after it succeeded (mlp_stage_model_finish).  Nothing else: what a
 * command does is the user's.  With runs-on: kubernetes it runs in a pod
 * instead (stage-k8s.c).
 */
#include "config.h"

#include "engine/stage-k8s.h"
#include "engine/stagekind.h"

static int run_prepare(struct mlp_strv *argv, const struct mlp_stage_ctx *ctx)
{
	if (ctx->stage->runs_on == MLP_RUNS_ON_KUBERNETES)
		return mlp_stage_k8s_prepare(argv, ctx);
	return mlp_stage_shell_argv(argv, ctx, ctx->stage->run);
}

const struct mlp_stage_kind_ops mlp_stage_kind_run = {
        .kind = MLP_STAGE_RUN,
        .prepare = run_prepare,
        .finish = mlp_stage_model_finish,
};
