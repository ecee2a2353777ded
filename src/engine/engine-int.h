/*
 * engine-int.h - what the engine's own files share; never included outside
 * src/engine/engine*.c.  engine.c is the scheduler (the loop, deciding and
 * starting stages, timers, cancel, set-up and resume); engine-attempt.c is
 * one attempt's life (its environment and ${{ }} values, its process, its
 * output, its end and whether it is retried).
 */
#ifndef MLP_ENGINE_INT_H
#define MLP_ENGINE_INT_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/exec.h"
#include "base/json.h"
#include "base/util.h"
#include "engine/engine.h"
#include "engine/stage-io.h"
#include "pipeline/expr.h"

enum rt_state { WAITING, READY, RUNNING, BACKOFF, DONE };

struct stage_rt {
	const struct mlp_stage *def;
	enum rt_state state;
	enum mlp_status result; /* when DONE */
	bool allowed_failure;   /* failed under continue_on_error */
	bool tainted;           /* it or something it needs failed */
	int attempt;
	int64_t attempt_id;
	struct mlp_proc proc;
	int log_fd;
	bool log_created;       /* the log file exists (made on first output) */
	struct mlp_stage_io io; /* $MLPIPE_OUTPUT, $MLPIPE_METRICS, $MLPIPE_REASON */
	char *log_path;
	int64_t started_ms;
	int64_t ended_ms;
	int64_t deadline_ms; /* timeout; 0: none */
	int64_t kill_at_ms;  /* SIGKILL after grace; 0: not terminating */
	int64_t retry_at_ms;
	bool timed_out;
	char detail[256];
	struct mlp_buf line;
	struct mlp_kvlist outputs;
	struct mlp_metric *metrics;
	size_t nmetrics;
};

struct engine {
	const struct mlp_pipeline *p;
	struct mlp_store *store;
	int64_t run_id;
	const struct mlp_engine_opts *opts;
	const struct mlp_engine_observer *obs;
	struct stage_rt *st;
	size_t *starting; /* scratch: stages started in this turn */
	size_t n;
	bool in_tx;
	int jobs;
	int running;
	int sigfd;
	sigset_t oldmask;
	bool cancelled;
	int cancel_signal;
	char *first_failure;
	char *run_dir;
	char *commit;             /* the run's git commit, "" when none (${{ run.commit }}) */
	struct mlp_strv base_env; /* process env + pipeline env + vars */
};

/* The payload of engine_resolve: references made by stage `stage`
 * ((size_t)-1: the pipeline's env:), env.NAME read from env. */
struct resolve_ctx {
	struct engine *e;
	size_t stage;
	const struct mlp_strv *env;
	char scratch[64];
};

/* ---- engine.c ----------------------------------------------------------- */

/* Tells the observer that stage i changed. */
void engine_notify(struct engine *e, size_t i);

/*
 * Writes go into one transaction per turn of the loop, committed before
 * any process it records is started: engine_tx_ensure begins it when none
 * is open, engine_tx_commit commits it (rolling back when that fails).
 */
int engine_tx_ensure(struct engine *e);
int engine_tx_commit(struct engine *e);

/* ---- engine-attempt.c --------------------------------------------------- */

/* Sets the stage's detail ("exit code 3", "timed out after 5s" ...). */
void engine_set_detail(struct stage_rt *s, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));

/* Resolves a ${{ }} reference (mlp_expr_resolve_fn; payload: resolve_ctx). */
int engine_resolve(const char **out, const struct mlp_expr_ref *ref, void *payload);

/* Reads what is available on a stage's pipe; closes it at EOF. */
void engine_drain_output(struct engine *e, size_t i);

/* Records the next attempt of stage i (inside the turn's transaction). */
int engine_record_attempt(struct engine *e, size_t i);

/* Starts the process of a recorded attempt.  A failure to start fails the
 * attempt (and may retry it); only database errors are returned. */
int engine_spawn_attempt(struct engine *e, size_t i);

/* The process of stage i has exited (its pidfd is readable): records the
 * attempt's end, its outputs and metrics, or retries it. */
int engine_handle_exit(struct engine *e, size_t i);

/* Closes the attempt's process handles and log. */
void engine_close_attempt(struct stage_rt *s);

#endif
