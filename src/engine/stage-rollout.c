/*
 * stage-rollout.c - `rollout:` stages.
 *
 * The attempt re-enters mlpipe (`mlpipe stage-rollout`,
 * cmd-stage-rollout.c) with the image and env values resolved here, where
 * the expressions' context (run, stages' outputs) is; the rest it reads
 * from the run.
 */
#include "config.h"

#include <stdlib.h>

#include "engine/stagekind.h"

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
