/*
 * engine.h - running a pipeline's DAG of stages.
 *
 * One thread, one poll() loop: stage processes signal completion through
 * pidfds, their output through pipes, Ctrl-C and SIGTERM through a
 * signalfd; timeouts and retry back-offs are the poll timeout.  Nothing
 * sleeps, so a stage whose needs are met starts as soon as the last of them
 * exits.  Every state change is written to the store before it is acted
 * on.
 */
#ifndef MLP_ENGINE_H
#define MLP_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "pipeline/pipeline.h"

struct mlp_store;

/* A stage as observers see it. */
struct mlp_stage_view {
	const char *name;
	enum mlp_status status; /* queued (waiting / backing off), running, or final */
	int attempt;            /* 1-based; 0 before the first */
	int max_attempts;
	int64_t started_ms; /* monotonic start of the current attempt */
	int64_t ended_ms;
	int64_t retry_at_ms;  /* monotonic; 0 when not backing off */
	const char *detail;   /* "exit code 3", "timed out after 5s" ... or NULL */
	bool allowed_failure; /* failed, but continue_on_error */
};

struct mlp_engine_observer {
	/* The state of stage `index` changed. */
	void (*stage)(void *payload, size_t index, const struct mlp_stage_view *view);
	/* A line the stage printed (without its newline). */
	void (*log)(void *payload, size_t index, const char *line, size_t len);
	/* Called every tick_ms while anything runs (0: never). */
	void (*tick)(void *payload);
	int tick_ms;
	void *payload;
};

struct mlp_engine_opts {
	int jobs;                      /* stages at once; <= 0: number of cores */
	const char *workspace;         /* absolute; stages run here (or in workdir) */
	const struct mlp_kvlist *vars; /* --var K=V: override the pipeline's env */
	const char *self_exe;
	const struct mlp_engine_observer *observer; /* may be NULL */
	/* For `mlpipe serve` (serve/exec-run.c): */
	const char *const *extra_env; /* NULL-terminated "NAME=VALUE": the
	                                * trigger's (MLPIPE_COMMIT ...), set
	                                * last; never part of a command */
	bool resume;                  /* continue an interrupted run: stages
	                                * whose latest stored attempt succeeded
	                                * are done with their stored outputs and
	                                * metrics; attempt numbers continue */
};

struct mlp_engine_result {
	enum mlp_status status; /* succeeded, failed, cancelled */
	int signal;             /* what cancelled it (SIGINT, SIGTERM), or 0 */
	char *message;          /* the first failure, or NULL; caller frees */
};

/*
 * Checks that this build can execute every stage of p; adds a diagnostic
 * per stage it cannot.  Returns 0 or MLP_EINVAL.
 */
int mlp_engine_check(const struct mlp_pipeline *p, struct mlp_diags *diags);

/*
 * Runs every stage of p for the run run_id (already recorded as running),
 * and records each attempt, output and metric.  Returns 0 with out filled
 * however the stages ended; a negative code only when the engine itself
 * could not go on (the database failed, say).
 */
int mlp_engine_run(struct mlp_engine_result *out, const struct mlp_pipeline *p,
                   struct mlp_store *store, int64_t run_id, const struct mlp_engine_opts *opts);

/*
 * Stops what is left of interrupted attempts of run run_id (0: of every
 * run): an attempt whose mlpipe died (kill -9) may leave its process
 * group running, and no stage may have two live attempts.  Each group
 * still there (mlp_proc_group_stop: same leader start time, same session)
 * gets SIGTERM, then SIGKILL after the stage's kill grace, and this waits
 * until it is empty, printing one line to stderr for each group it
 * stopped; a group that is gone is forgotten.  Blocks up to the grace plus
 * 5 s per group found.  Returns 0, or a negative code with a message when
 * the database fails or a group survives SIGKILL.
 */
int mlp_engine_stop_leftovers(struct mlp_store *store, int64_t run_id);

#endif
