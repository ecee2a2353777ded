/*
 * store-queue.h - what `mlpipe serve` keeps: the run queue, projects, deliveries, schedules, tokens (store-queue.c).
 * Part of the store's API (store.h has opening, transactions and the
 * schema); include the domain headers a file uses.
 */
#ifndef MLP_STORE_QUEUE_H
#define MLP_STORE_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

/* ---- serve: the run queue, projects, deliveries, schedules, tokens ------
 * (store-queue.c; mlp_store_run_claim in store-runs.c beside the liveness
 * lock it takes)
 *
 * `mlpipe serve` queues runs here and starts each in a child process
 * (`mlpipe exec-run`) that claims it.  A run queued by the server has
 * queued_at set; only such runs are resumed by the server after a crash.
 */

struct mlp_run_queued {
	const char *project;       /* NULL: none (a manual run of a file) */
	const char *pipeline;      /* name; the project's until the file is read */
	const char *pipeline_text; /* NULL: read at the commit when it starts */
	const char *pipeline_path;
	const char *trigger; /* "webhook", "schedule", "api", "poll" */
	const char *user;
	const char *git_commit;
	const char *git_ref;
	const char *git_author;
	const char *git_message;
	const char *schedule; /* the schedule's key, for its concurrency */
	bool once_per_commit; /* a run of (project, git_ref, git_commit)
	                            * exists already: queue nothing, answer
	                            * MLP_EEXISTS with its id */
};

/*
 * Queues a run.  With forge and delivery_id (both non-NULL), the delivery
 * is recorded in the same transaction: a delivery seen before queues
 * nothing and returns MLP_EEXISTS (no message) with *out_id the run it
 * queued the first time (0: it was ignored).  With once_per_commit, an
 * existing run of the same commit also answers MLP_EEXISTS with its id
 * (the delivery is still recorded, pointing at that run).
 */
int mlp_store_run_enqueue(int64_t *out_id, struct mlp_store *s, const struct mlp_run_queued *r,
                          const char *forge, const char *delivery_id);

/* The commit of the newest run of project on ref (NULL: none; the caller
 * frees). */
int mlp_store_latest_commit(char **out, struct mlp_store *s, const char *project, const char *ref);

/* Records a delivery that queues nothing (a deleted ref, a branch no
 * project watches); MLP_EEXISTS (no message) when seen before. */
int mlp_store_delivery_ignore(struct mlp_store *s, const char *forge, const char *delivery_id,
                              const char *project, const char *reason);

/*
 * Claims a run for this process: queued -> running, or, for a run the
 * server queued that was interrupted, interrupted -> running (a resume:
 * *out_resumed true; its never-started stage records are dropped so the
 * engine decides them again).  Takes the run's liveness lock exactly as
 * mlp_store_run_create does.  MLP_EEXISTS with a message when another
 * process holds it or it has ended; MLP_ENOTFOUND when there is no such run.
 */
int mlp_store_run_claim(bool *out_resumed, struct mlp_store *s, int64_t run_id);

/* Fills in what exec-run learnt from the repository: the pipeline's name,
 * text and sha256, the workspace, and the commit with its author and
 * message. */
struct mlp_run_source {
	const char *pipeline;
	const char *text;
	const char *sha256;
	const char *workspace;
	const char *git_commit;
	const char *git_author;
	const char *git_message;
};

int mlp_store_run_set_pipeline(struct mlp_store *s, int64_t run_id,
                               const struct mlp_run_source *src);

/* A run the server manages, as the dispatcher needs it. */
struct mlp_queued_run {
	int64_t id;
	enum mlp_status status; /* queued, running or interrupted */
	char *project;
	char *pipeline;
	char *schedule;
	char *trigger;
	char *git_commit;
	char *git_ref;
	char *git_author;
	char *git_message;
	int exec_attempts; /* how many times exec-run claimed it */
	int64_t exec_pid;
	bool cancel_requested;
	int64_t queued_at;
};

/* Runs queued_at IS NOT NULL with status queued, running or interrupted,
 * oldest first. */
int mlp_store_queue_list(struct mlp_queued_run **out, size_t *n, struct mlp_store *s);
/* The same, but of the queued runs only each project's per_project oldest
 * (none when per_project <= 0): those the dispatcher may start next. */
int mlp_store_queue_list_next(struct mlp_queued_run **out, size_t *n, struct mlp_store *s,
                              int per_project);
/* One run's queue fields (any status); MLP_ENOTFOUND with a message. */
int mlp_store_queued_run_get(struct mlp_queued_run *out, struct mlp_store *s, int64_t run_id);
void mlp_queued_run_clear(struct mlp_queued_run *r);
void mlp_queued_run_free_all(struct mlp_queued_run *r, size_t n);

/*
 * Asks for a run to stop: a queued or interrupted one is cancelled at
 * once (*out_pid 0); a running one gets cancel_requested and *out_pid the
 * exec-run process to signal.  MLP_EINVAL with a message when it has
 * ended; MLP_ENOTFOUND when there is no such run.
 */
int mlp_store_run_cancel(int64_t *out_pid, struct mlp_store *s, int64_t run_id);
/* Gives up on an interrupted run: marks it failed with message. */
int mlp_store_run_abandon(struct mlp_store *s, int64_t run_id, const char *message);

/* Projects; secrets are never stored, only where to read them. */
struct mlp_project {
	char *name;
	char *remote;
	char *branches;      /* comma-separated globs ("main,release-*") */
	char *pipeline_path; /* in the repository */
	char *secret_file;
	char *secret_env;
	char *token_file;
	char *ssh_key_file;
	int64_t created_at;
};

/* MLP_EEXISTS with a message when the name is taken. */
int mlp_store_project_add(struct mlp_store *s, const struct mlp_project *p);
/* MLP_ENOTFOUND with a message. */
int mlp_store_project_remove(struct mlp_store *s, const char *name);
/* By name. */
int mlp_store_projects_list(struct mlp_project **out, size_t *n, struct mlp_store *s);
void mlp_project_free_all(struct mlp_project *p, size_t n);
/* The branch a project's schedules read their pipeline file from: the
 * first branch it watches that is not a pattern, else "main".  Returns buf
 * (filled) or a literal. */
const char *mlp_project_default_branch(const struct mlp_project *p, char *buf, size_t size);
/* The project's bare mirror, beside the database (the caller frees). */
char *mlp_project_mirror(const struct mlp_store *s, const char *name);

/* Schedules: when each (by key) last fired, in Unix seconds (0: never). */
int mlp_store_schedule_last(int64_t *out, struct mlp_store *s, const char *key);
/* Records that key fired at fired_at and, when r is not NULL, queues its
 * run: one transaction, so a restart never fires it twice. */
int mlp_store_schedule_fire(int64_t *out_id, struct mlp_store *s, const char *key, int64_t fired_at,
                            const struct mlp_run_queued *r);
/* Whether a run of the schedule key is queued or running; *out_id one. */
int mlp_store_schedule_active(int64_t *out_id, struct mlp_store *s, const char *key);

/* API tokens, stored as the SHA-256 hex of the token, with the scopes they
 * grant: a comma-separated list (NULL or "all": every scope; docs/api.md). */
int mlp_store_token_create(struct mlp_store *s, const char *name, const char *sha256_hex,
                           const char *scopes);
/* Compares with every stored hash in constant time; 0 with *out_name and
 * *out_scopes (the caller frees each; either may be NULL) or MLP_ENOTFOUND
 * (no message). */
int mlp_store_token_check(char **out_name, char **out_scopes, struct mlp_store *s,
                          const char *sha256_hex);

/* Counts for /metrics.  Up to four labels (NULL when a kind has fewer)
 * and a value. */
struct mlp_count {
	char *label;
	char *label2;
	char *label3;
	char *label4;
	double value;
};

enum mlp_count_kind {
	MLP_COUNT_RUNS_BY_STATUS,
	MLP_COUNT_DELIVERIES_BY_RESULT,
	MLP_COUNT_GATE_DECISIONS,     /* label "passed" / "failed" */
	MLP_COUNT_ROLLOUTS_BY_RESULT, /* result, kind ("rollout" / "rollback") */
	MLP_COUNT_DEPLOYED_METRICS,   /* model, metric, version */
	/* model, version, metric, status: every metric of the newest
	 * MLP_VERSION_METRICS_MAX versions of each model. */
	MLP_COUNT_VERSION_METRICS,
	MLP_COUNT_STAGE_KINDS, /* kind: the kinds of finished stage attempts */
};

/* How many versions per model MLP_COUNT_VERSION_METRICS reports: it bounds
 * the series a model's history makes in /metrics. */
#define MLP_VERSION_METRICS_MAX 100

/* The rows of one kind of count, in a stable order; *out (free with
 * mlp_count_free_all) is NULL and *n 0 when there are none. */
int mlp_store_counts(struct mlp_count **out, size_t *n, struct mlp_store *s,
                     enum mlp_count_kind kind);
void mlp_count_free_all(struct mlp_count *c, size_t n);

/* Every finished stage attempt's duration in seconds, counted into
 * buckets (counts[i]: at most bounds[i]; counts[nbounds]: all); only the
 * attempts of stages of kind stage_kind ("run", "train" ...) unless it is
 * NULL. */
int mlp_store_stage_durations(double *out_sum, struct mlp_store *s, const char *stage_kind,
                              const double *bounds, size_t nbounds, uint64_t *counts);

/* Runs recorded with the given status and project (NULL: any), counted. */
int mlp_store_runs_count(int64_t *out, struct mlp_store *s, const char *project,
                         enum mlp_status status);

#endif
