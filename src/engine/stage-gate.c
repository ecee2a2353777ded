/*
 * stage-gate.c - `gate:` stages.
 *
 * The attempt re-enters mlpipe (`mlpipe stage-gate`, cmd-stage-gate.c),
 * which reads the thresholds and metrics from the database and records its
 * decision there.
 */
#include "config.h"

#include "engine/stagekind.h"

static int gate_prepare(struct mlp_strv *argv, const struct mlp_stage_ctx *ctx)
{
	return mlp_stage_reenter_argv(argv, ctx, "stage-gate");
}

const struct mlp_stage_kind_ops mlp_stage_kind_gate = {
        .kind = MLP_STAGE_GATE,
        .prepare = gate_prepare,
};
