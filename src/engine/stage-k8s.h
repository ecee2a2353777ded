/*
 * stage-k8s.h - run and train stages that run on Kubernetes
 * (runs-on: kubernetes): the engine's half prepares `mlpipe stage-k8s`,
 * whose process (this file's second half) runs the attempt as a gang of
 * pods with deploy/k8s-job.h and reports like any stage: the pods' lines
 * on stdout, $MLPIPE_OUTPUT, $MLPIPE_METRICS and the model file fetched
 * back from rank 0, the root cause in $MLPIPE_REASON.
 */
#ifndef MLP_STAGE_K8S_H
#define MLP_STAGE_K8S_H

#include <signal.h>
#include <stdint.h>

#include "base/util.h"
#include "engine/stagekind.h"

/* The prepare of a run or train stage with runs-on: kubernetes. */
int mlp_stage_k8s_prepare(struct mlp_strv *argv, const struct mlp_stage_ctx *ctx);

/* What the engine passes to the stage's process. */
struct mlp_stage_k8s_args {
	const char *db;
	int64_t run_id;
	const char *stage;
	int attempt;
	const char *image;              /* resolved */
	const char *model_path;         /* resolved; NULL: none */
	const char *script_file;        /* the shell script (run, train.command); or NULL */
	char *const *argv;              /* else the container's command (builtin trainer) */
	const struct mlp_strv *pod_env; /* names whose values (in our env) go to the pods */
	int once;                       /* -1: as the stage says */
	const volatile sig_atomic_t *stop;
};

/*
 * The process of such a stage (`mlpipe stage-k8s`).  Returns the exit code
 * to exit with: 0 when the gang succeeded and its results were fetched,
 * the root cause's exit code (or 1) when it failed, 143 when cancelled, 2
 * when it could not be tried; the reason is in $MLPIPE_REASON and on
 * stderr.
 */
int mlp_stage_k8s_exec(const struct mlp_stage_k8s_args *args);

#endif
