/*
 * store-runs.h - runs, stage attempts, outputs and metrics (store-runs.c).
 * Part of the store's API (store.h has opening, transactions and the
 * schema); include the domain headers a file uses.
 */
#ifndef MLP_STORE_RUNS_H
#define MLP_STORE_RUNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

/* ---- runs (store-runs.c) ---------------------------------------------- */

struct mlp_run_new {
	const char *pipeline;      /* the pipeline's name */
	const char *pipeline_path; /* absolute path of the file, or NULL */
	const char *pipeline_text;
	const char *pipeline_sha256;
	const char *trigger; /* "cli", "webhook", "schedule", "api" */
	const char *user;
	const char *git_commit; /* NULL when not in a repository */
	const char *git_ref;
	const char *workspace;
};

/*
 * Records a new run as running and takes its liveness lock: while this
 * process lives (and until mlp_store_run_finish), others see the run as
 * running; once it dies, as interrupted.
 */
int mlp_store_run_create(int64_t *out_id, struct mlp_store *s, const struct mlp_run_new *run);
/* Records the run's end and releases its lock. */
int mlp_store_run_finish(struct mlp_store *s, int64_t run_id, enum mlp_status status, int exit_code,
                         const char *message);

/* Marks runs whose owner died as interrupted (and their running attempts);
 * *out_count (may be NULL) is how many. */
int mlp_store_recover(int *out_count, struct mlp_store *s);

/*
 * The process group an attempt's process leads, recorded once it started:
 * when the mlpipe running it dies (kill -9), the group lives on, and the
 * next mlpipe to resume the run (or to run anything) stops it first.
 */
struct mlp_attempt_group {
	int64_t attempt_id;
	int64_t run_id;
	char *stage; /* filled by mlp_store_leftover_groups only */
	int attempt;
	int64_t pgid;
	int64_t session;
	int64_t start_time;    /* the leader's, in clock ticks since boot */
	int64_t kill_grace_ms; /* the stage's TERM -> KILL delay */
};

/* Records the group of a started attempt (stage, attempt and run_id are
 * not written). */
int mlp_store_attempt_set_group(struct mlp_store *s, const struct mlp_attempt_group *g);

/* Interrupted attempts whose group is still recorded, of run run_id or,
 * when run_id is 0, of every run.  Free with mlp_attempt_group_free_all. */
int mlp_store_leftover_groups(struct mlp_attempt_group **out, size_t *n, struct mlp_store *s,
                              int64_t run_id);
/* Forgets an attempt's group (it has been stopped, or was gone). */
int mlp_store_attempt_clear_group(struct mlp_store *s, int64_t attempt_id);
void mlp_attempt_group_free_all(struct mlp_attempt_group *g, size_t n);

/* Records that an attempt of a stage started. */
int mlp_store_attempt_start(int64_t *out_id, struct mlp_store *s, int64_t run_id, const char *stage,
                            const char *kind, int attempt, const char *log_path);

struct mlp_attempt_end {
	enum mlp_status status; /* succeeded, failed, cancelled */
	int exit_code;          /* -1 when killed by a signal or never started */
	int signal;             /* 0 when it exited */
	bool timed_out;
	const char *message; /* why it failed, or NULL */
};

int mlp_store_attempt_finish(struct mlp_store *s, int64_t attempt_id,
                             const struct mlp_attempt_end *end);

/* Records a stage that never started (skipped or cancelled) as attempt 0. */
int mlp_store_stage_not_run(struct mlp_store *s, int64_t run_id, const char *stage,
                            const char *kind, enum mlp_status status, const char *message);

int mlp_store_output_put(struct mlp_store *s, int64_t run_id, const char *stage, const char *key,
                         const char *value);
int mlp_store_metric_put(struct mlp_store *s, int64_t run_id, const char *stage, const char *name,
                         double value);

struct mlp_run_info {
	int64_t id;
	char *pipeline;
	char *pipeline_path;
	char *pipeline_sha256;
	char *pipeline_text; /* filled by mlp_store_run_get only */
	enum mlp_status status;
	char *trigger;
	char *user;
	char *git_commit;
	char *workspace;
	int64_t created_at; /* wall-clock ms */
	int64_t started_at;
	int64_t ended_at; /* 0 while running */
	int exit_code;    /* -1 while running */
	char *message;
};

struct mlp_run_filter {
	const char *pipeline; /* NULL: any */
	bool has_status;
	enum mlp_status status;
	int limit; /* 0: no limit */
};

/* Newest first.  Free with mlp_run_info_free_all. */
int mlp_store_runs_list(struct mlp_run_info **out, size_t *n, struct mlp_store *s,
                        const struct mlp_run_filter *filter);
/* MLP_ENOTFOUND with a message when there is no such run. */
int mlp_store_run_get(struct mlp_run_info *out, struct mlp_store *s, int64_t run_id);
void mlp_run_info_clear(struct mlp_run_info *r);
void mlp_run_info_free_all(struct mlp_run_info *r, size_t n);

struct mlp_attempt_info {
	int64_t id;
	char *stage;
	int attempt; /* 0: never started */
	char *kind;
	enum mlp_status status;
	int exit_code;
	int signal;
	bool timed_out;
	int64_t started_at;
	int64_t ended_at;
	char *log_path;
	char *message;
};

/* In the order they started (stages that never ran last). */
int mlp_store_attempts_list(struct mlp_attempt_info **out, size_t *n, struct mlp_store *s,
                            int64_t run_id);
void mlp_attempt_info_free_all(struct mlp_attempt_info *a, size_t n);

/* A named value of a stage: an output (text) or a metric (number). */
struct mlp_stage_value {
	char *stage;
	char *name;
	char *text;
	double number;
};

int mlp_store_outputs_list(struct mlp_stage_value **out, size_t *n, struct mlp_store *s,
                           int64_t run_id);
int mlp_store_metrics_list(struct mlp_stage_value **out, size_t *n, struct mlp_store *s,
                           int64_t run_id);
void mlp_stage_value_free_all(struct mlp_stage_value *v, size_t n);

#endif
