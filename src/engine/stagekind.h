/*
 * stagekind.h - what each kind of stage (run, train, gate, rollout) does
 * when the engine starts an attempt of it.
 *
 * The engine knows nothing about kinds: every attempt is a process whose
 * command line a kind's prepare() builds, so timeouts, retries, cancel,
 * logs, outputs and metrics work the same for every kind.  A kind that
 * runs inside mlpipe (a gate, a rollout) prepares a command that re-enters
 * the mlpipe binary (ctx->self_exe) with an internal subcommand.  Adding a
 * kind is adding an entry to the table in stagekind.c.
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
	/* Builds the attempt's command (argv[0] an absolute path).  NULL when
	 * this build cannot execute the kind yet. */
	int (*prepare)(struct mlp_strv *argv, const struct mlp_stage_ctx *ctx);
	/* Called after the process succeeded, before its outputs are recorded;
	 * may add outputs.  A failure fails the attempt.  May be NULL. */
	int (*finish)(struct mlp_kvlist *outputs, const struct mlp_stage_ctx *ctx);
};

/* train: the launcher's command line (stage-train.c). */
int mlp_train_prepare(struct mlp_strv *argv, const struct mlp_stage_ctx *ctx);

/* Where a shell command too long for one argument is written for
 * /bin/sh to read (in the run's directory; the caller frees it). */
char *mlp_stage_script_path(const struct mlp_stage_ctx *ctx);

/* The operations of a kind (never NULL). */
const struct mlp_stage_kind_ops *mlp_stage_kind_ops(enum mlp_stage_kind kind);

#endif
