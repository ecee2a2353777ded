/*
 * stage-rollout.h - the execution half of a `rollout:` stage: rolling out
 * one rollout stage of a recorded run (deploy/rollout.h does the
 * Kubernetes part) and reporting it the way any stage reports
 * (stage-io.h).
 */
#ifndef MLP_STAGE_ROLLOUT_H
#define MLP_STAGE_ROLLOUT_H

#include <stdbool.h>
#include <stdint.h>

#include "base/kvlist.h"

/* What the engine passes to a rollout stage's process. */
struct mlp_stage_rollout_args {
	const char *db; /* the database; NULL: the default */
	int64_t run_id;
	const char *stage;
	const char *image;            /* resolved by the engine; NULL: unchanged */
	const struct mlp_kvlist *env; /* resolved env values; may be NULL */
};

/*
 * The process of a rollout stage (`mlpipe stage-rollout`): reads the run's
 * pipeline from the database for the rest of the stage's settings, finds
 * the model version this run registered under the rollout's model: (else
 * the model of a gate, or model:, stage the rollout depends on), refusing
 * one that is not approved; with model: and no version from this run, the
 * newest approved one.  With model: the container's env gets MODEL_URI,
 * MODEL_SHA256, MODEL_NAME and MODEL_VERSION (mlp_rollout_model_env).  It
 * rolls out (mlp_rollout_run), printing progress lines on stdout.  previous_image=, image=, revision=, deployment= and
 * rolled_back= go to $MLPIPE_OUTPUT.
 *
 * Returns 0 when the rollout completed (or was validated, for a dry run).
 * Otherwise a negative code with a message, which is also written to
 * $MLPIPE_REASON; *out_failed then says whether the rollout was tried and
 * failed (and was rolled back unless on_failure: keep) rather than could
 * not be tried.
 */
int mlp_stage_rollout_exec(bool *out_failed, const struct mlp_stage_rollout_args *args);

#endif
