/*
 * stagekind.h - what each kind of stage (run, train, gate, rollout) does
 * when the engine starts an attempt of it.
 *
 * The engine knows nothing about kinds: every attempt is a process whose
 * command line a kind's prepare() builds, so timeouts, retries, cancel,
 * logs, outputs and metrics work the same for every kind.  A kind that
 * runs inside mlpipe (a gate, a rollout) prepares a command that re-enters
 * the mlpipe binary (ctx->self_exe) with an internal subcommand.  Adding a
 * kind is adding a file stage-<kind>.c with its operations and an entry
 * to the table in stagekind.c; the engine calls the operations and never
 * names a kind.
 */
#ifndef MLP_STAGEKIND_H
#define MLP_STAGEKIND_H

#include <stdint.h>

#include "pipeline/expr.h"
#include "pipeline/pipeline.h"
#include "base/util.h"

struct mlp_store;
struct mlp_metric;

struct mlp_stage_ctx {
	const struct mlp_pipeline *pipeline;
	const struct mlp_stage *stage;
	int64_t run_id;
	int attempt;
	const char *workdir;  /* absolute */
	const char *run_dir;  /* the run's logs and files (may be NULL) */
	const char *self_exe; /* the running mlpipe binary */
	struct mlp_store *store;
	struct mlp_strv *env; /* the attempt's environment; prepare may add to it */
	/* Resolves ${{ }} references for this stage. */
	mlp_expr_resolve_fn resolve;
	void *resolve_payload;
	/* In finish(): the metrics the attempt reported ($MLPIPE_METRICS). */
	const struct mlp_metric *metrics;
	size_t nmetrics;
};

struct mlp_stage_kind_ops {
	enum mlp_stage_kind kind;
	/* Checks, before a run is recorded, that this build and this node can
	 * execute stage s of p; adds a diagnostic per problem.  Returns 0 or
	 * MLP_EINVAL.  May be NULL. */
	int (*check)(struct mlp_diags *diags, const struct mlp_pipeline *p,
	             const struct mlp_stage *s);
	/* Builds the attempt's command (argv[0] an absolute path).  NULL when
	 * this build cannot execute the kind yet. */
	int (*prepare)(struct mlp_strv *argv, const struct mlp_stage_ctx *ctx);
	/* Called after the process succeeded, before its outputs are recorded;
	 * may add outputs.  A failure fails the attempt.  May be NULL. */
	int (*finish)(struct mlp_kvlist *outputs, const struct mlp_stage_ctx *ctx);
};

/* The kinds, one stage-<kind>.c each. */
extern const struct mlp_stage_kind_ops mlp_stage_kind_run;
extern const struct mlp_stage_kind_ops mlp_stage_kind_train;
extern const struct mlp_stage_kind_ops mlp_stage_kind_gate;
extern const struct mlp_stage_kind_ops mlp_stage_kind_rollout;

/* The operations of a kind (never NULL). */
const struct mlp_stage_kind_ops *mlp_stage_kind_ops(enum mlp_stage_kind kind);

/* ---- helpers the kinds share (stagekind.c) ------------------------------ */

/* Where a shell command too long for one argument is written for
 * /bin/sh to read (in the run's directory; the caller frees it). */
char *mlp_stage_script_path(const struct mlp_stage_ctx *ctx);

/*
 * Appends to argv the /bin/sh command line of command, a stage's shell
 * text whose ${{ }} values are expanded shell-quoted (a command too long
 * for one argument goes through mlp_stage_script_path).  Returns 0, or the
 * expansion's error.
 */
int mlp_stage_shell_argv(struct mlp_strv *argv, const struct mlp_stage_ctx *ctx,
                         const char *command);

/*
 * Appends the command line of a kind that runs inside mlpipe: the running
 * binary with the internal subcommand, then --db (made absolute: the stage
 * runs in the workspace, not where mlpipe was started), --run and --stage.
 */
int mlp_stage_reenter_argv(struct mlp_strv *argv, const struct mlp_stage_ctx *ctx,
                           const char *subcommand);

/* The command line of the builtin trainer for a train stage: trainer_path
 * as argv[0] (NULL: mlpipe-train beside the mlpipe binary, else on PATH),
 * then the stage's settings (stage-train.c). */
int mlp_stage_train_builtin_argv(struct mlp_strv *argv, const struct mlp_stage_ctx *ctx,
                                 const char *trainer_path);

/*
 * The finish of a stage with model: (run, train): the file must exist; its
 * path and sha256 become outputs (model_path, model_sha256); with a store,
 * it is copied into the artifact store and registered as the next version
 * of the model (model_version, model_artifact).  0 when the stage has no
 * model:.
 */
int mlp_stage_model_finish(struct mlp_kvlist *outputs, const struct mlp_stage_ctx *ctx);

#endif
