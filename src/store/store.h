/*
 * store.h - everything mlpipe remembers, in one SQLite file.
 *
 * The store module is the only one that includes SQLite: it owns the
 * schema, its migrations (store-migrations.c, append-only), and every
 * query.  Each domain has its own file (store-runs.c: runs, stage attempts,
 * outputs, metrics); later domains (models, gates, deployments, deliveries)
 * add a file and a migration rather than changing these.
 *
 * The database is opened in WAL mode with foreign keys on and a busy
 * timeout, so readers never block the running pipeline and concurrent
 * writers wait instead of failing.  Logs are files under the data
 * directory (the database's directory); the database holds their paths.
 */
#ifndef MLP_STORE_H
#define MLP_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

struct mlp_store;

/* The database path to use: $MLPIPE_DB, else $XDG_DATA_HOME/mlpipe/mlpipe.db,
 * else ~/.local/share/mlpipe/mlpipe.db.  The caller frees *out. */
int mlp_store_default_path(char **out);

enum {
	MLP_STORE_READONLY = 1 << 0, /* do not create or migrate */
};

/*
 * Opens (creating it and its directory when needed) and migrates the
 * database at path (NULL: the default path).  Runs recorded as running whose
 * mlpipe process has died are marked interrupted.  Errors: MLP_EDB with a
 * message (read-only, locked, corrupt, newer schema).
 */
int mlp_store_open(struct mlp_store **out, const char *path, int flags);
/* Accepts NULL. */
void mlp_store_close(struct mlp_store *s);

/* The database file, and the directory that holds it with logs/ and locks/.
 * Owned by the store. */
const char *mlp_store_path(const struct mlp_store *s);
const char *mlp_store_data_dir(const struct mlp_store *s);

/* Transactions; begin is IMMEDIATE (takes the write lock at once). */
int mlp_store_begin(struct mlp_store *s);
int mlp_store_commit(struct mlp_store *s);
void mlp_store_rollback(struct mlp_store *s);

/* The schema version the database is at, and the newest this build knows. */
int mlp_store_schema_version(int *out, struct mlp_store *s);
int mlp_store_schema_latest(void);

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

/* ---- artifacts, models (store-models.c), gates (store-gates.c) ------------------------
 *
 * Artifacts are files kept by content: artifacts/sha256/ab/cdef... under
 * the data directory, written atomically, stored once however often they
 * are registered.  A model is a name; each registration of a file under it
 * is a new version (1, 2, ...) with its artifact, the run and stage that
 * made it, the git commit, its metrics and a status:
 *
 *     candidate -> approved | rejected -> deployed -> retired
 *
 * Gate thresholds (gate, metric, op, value) live here, every change to
 * them in a history; a gate's decisions are recorded with every value it
 * compared (detail, JSON).
 */

struct mlp_metric; /* json.h */

enum mlp_model_status {
	MLP_MODEL_CANDIDATE,
	MLP_MODEL_APPROVED,
	MLP_MODEL_REJECTED,
	MLP_MODEL_DEPLOYED,
	MLP_MODEL_RETIRED,
};

const char *mlp_model_status_name(enum mlp_model_status s);
/* 0 or MLP_EINVAL (no message). */
int mlp_model_status_parse(enum mlp_model_status *out, const char *name);

/*
 * Copies the file at src into the artifact store unless identical content
 * is there already, then records it.  The copy is hashed (so the digest
 * names exactly the stored bytes) and written before anything is written
 * to the database: no write lock is held while a large file is copied.
 * out_sha256 receives the digest (65 bytes); *out_path (may be NULL; the
 * caller frees) the stored file's path.  MLP_EIO with a message when the
 * file cannot be read or stored.
 */
int mlp_store_artifact_put(char out_sha256[65], char **out_path, struct mlp_store *s,
                           const char *src);

struct mlp_model_version_new {
	const char *model;
	const char *sha256;     /* of an artifact already put */
	int64_t run_id;         /* 0: not made by a run */
	const char *stage;      /* may be NULL */
	const char *git_commit; /* NULL: the run's commit, if any */
	const struct mlp_metric *metrics;
	size_t nmetrics;
};

/*
 * Registers the next version of a model (creating the model on first use)
 * as a candidate.  Atomic on its own (a savepoint), and usable inside a
 * transaction the caller holds.  *out_version (may be NULL) receives the
 * version number, *out_id (may be NULL) its row id.
 */
int mlp_store_model_register(int64_t *out_id, int *out_version, struct mlp_store *s,
                             const struct mlp_model_version_new *v);

struct mlp_model_version {
	int64_t id;
	char *model;
	int version;
	char *sha256;
	char *artifact_path;
	int64_t size;
	int64_t run_id; /* 0: none */
	char *stage;
	char *git_commit;
	enum mlp_model_status status;
	char *status_reason;
	char *status_by;
	int64_t status_changed_at; /* 0: never changed */
	int64_t created_at;
	struct mlp_metric *metrics; /* by name */
	size_t nmetrics;
};

/* Version 0 means the latest.  MLP_ENOTFOUND with a message ("no model
 * 'x'", "model 'x' has no version 7"). */
int mlp_store_model_version_get(struct mlp_model_version *out, struct mlp_store *s,
                                const char *model, int version);
/* The latest version of model registered by run_id; MLP_ENOTFOUND (no
 * message) when that run registered none. */
int mlp_store_model_version_of_run(struct mlp_model_version *out, struct mlp_store *s,
                                   const char *model, int64_t run_id);
/* The latest version of model with the given status other than the one
 * with row id exclude (0: none); MLP_ENOTFOUND (no message) when none. */
int mlp_store_model_version_with_status(struct mlp_model_version *out, struct mlp_store *s,
                                        const char *model, enum mlp_model_status status,
                                        int64_t exclude);
/* Every version of model, newest first (none: *n = 0, not an error). */
int mlp_store_model_versions_list(struct mlp_model_version **out, size_t *n, struct mlp_store *s,
                                  const char *model);
void mlp_model_version_clear(struct mlp_model_version *v);
void mlp_model_version_free_all(struct mlp_model_version *v, size_t n);

/*
 * Moves a version to status, recording who, when and why (an event per
 * change).  Allowed: candidate/rejected -> approved, candidate/approved ->
 * rejected, approved -> deployed, deployed -> retired, and to the status it
 * has (a no-op that still records the reason).  Anything else is
 * MLP_EINVAL with a message naming the current status.
 */
int mlp_store_model_set_status(struct mlp_store *s, int64_t version_id,
                               enum mlp_model_status status, const char *user, const char *reason);

/* Sets (inserting or replacing) metrics of a version; stage names where
 * they came from (may be NULL). */
int mlp_store_model_metrics_put(struct mlp_store *s, int64_t version_id, const char *stage,
                                const struct mlp_metric *metrics, size_t n);

struct mlp_model_info {
	char *name;
	int64_t created_at;
	int versions; /* how many */
	int latest;   /* the newest version number */
	enum mlp_model_status latest_status;
	int64_t latest_created_at;
	int approved; /* newest approved version, 0: none */
	int deployed; /* newest deployed version, 0: none */
};

/* Every model, by name. */
int mlp_store_models_list(struct mlp_model_info **out, size_t *n, struct mlp_store *s);
void mlp_model_info_free_all(struct mlp_model_info *m, size_t n);

/* Thresholds; op is one of ">=", ">", "<=", "<". */
struct mlp_gate_threshold {
	char *gate;
	char *metric;
	char *op;
	double value;
	int64_t updated_at;
	char *updated_by;
};

/*
 * Sets a threshold and records the change (old and new op and value, user,
 * reason, source "cli").  *out_changed (may be NULL) is false when it
 * already had this op and value (then nothing is recorded).
 */
int mlp_store_gate_threshold_set(bool *out_changed, struct mlp_store *s, const char *gate,
                                 const char *metric, const char *op, double value, const char *user,
                                 const char *reason);
/*
 * Seeds a threshold from a pipeline's require: only when the database has
 * never had one for (gate, metric): neither now nor in its history, so a
 * threshold an operator removed stays removed.  Recorded with source
 * "pipeline-seed".  *out_seeded (may be NULL) says whether it was added.
 */
int mlp_store_gate_threshold_seed(bool *out_seeded, struct mlp_store *s, const char *gate,
                                  const char *metric, const char *op, double value,
                                  const char *user, const char *reason);
/* Removes a threshold, recording it; MLP_ENOTFOUND with a message when the
 * gate has no threshold on metric. */
int mlp_store_gate_threshold_unset(struct mlp_store *s, const char *gate, const char *metric,
                                   const char *user, const char *reason);
/* The thresholds of gate (NULL: every gate), by gate and metric. */
int mlp_store_gate_thresholds_list(struct mlp_gate_threshold **out, size_t *n, struct mlp_store *s,
                                   const char *gate);
void mlp_gate_threshold_free_all(struct mlp_gate_threshold *t, size_t n);

/* One change of a threshold; old_op NULL: it was added, new_op NULL: it
 * was removed. */
struct mlp_gate_threshold_change {
	int64_t id;
	char *gate;
	char *metric;
	char *old_op;
	double old_value;
	char *new_op;
	double new_value;
	char *user;
	int64_t at;
	char *reason;
	char *source; /* "cli" or "pipeline-seed" */
};

/* Every change to gate's thresholds, oldest first. */
int mlp_store_gate_history(struct mlp_gate_threshold_change **out, size_t *n, struct mlp_store *s,
                           const char *gate);
void mlp_gate_threshold_change_free_all(struct mlp_gate_threshold_change *c, size_t n);

struct mlp_gate_decision {
	int64_t id;
	int64_t run_id; /* 0: none */
	char *stage;
	char *gate;
	int64_t model_version_id; /* 0: none */
	bool passed;
	int64_t baseline_version_id; /* 0: none */
	char *reason;                /* why it failed, or a note; may be NULL */
	char *detail;                /* JSON: every comparison */
	int64_t decided_at;
};

/* Records a decision (id and decided_at of d are ignored). */
int mlp_store_gate_decision_record(int64_t *out_id, struct mlp_store *s,
                                   const struct mlp_gate_decision *d);
/* Decisions of gate (NULL: any) about the version with row id version_id
 * (0: any), newest first, at most limit (0: all). */
int mlp_store_gate_decisions_list(struct mlp_gate_decision **out, size_t *n, struct mlp_store *s,
                                  const char *gate, int64_t version_id, int limit);
void mlp_gate_decision_free_all(struct mlp_gate_decision *d, size_t n);

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

/* API tokens, stored as the SHA-256 hex of the token. */
int mlp_store_token_create(struct mlp_store *s, const char *name, const char *sha256_hex);
/* Compares with every stored hash in constant time; 0 with *out_name (the
 * caller frees; may be NULL) or MLP_ENOTFOUND (no message). */
int mlp_store_token_check(char **out_name, struct mlp_store *s, const char *sha256_hex);

/* Counts for /metrics.  A label (and a second one) and a value. */
struct mlp_count {
	char *label;
	char *label2;
	char *label3;
	double value;
};

enum mlp_count_kind {
	MLP_COUNT_RUNS_BY_STATUS,
	MLP_COUNT_DELIVERIES_BY_RESULT,
	MLP_COUNT_GATE_DECISIONS,     /* label "passed" / "failed" */
	MLP_COUNT_ROLLOUTS_BY_RESULT, /* empty when there is no deployments table */
	MLP_COUNT_DEPLOYED_METRICS,   /* model, metric, version */
};

int mlp_store_counts(struct mlp_count **out, size_t *n, struct mlp_store *s,
                     enum mlp_count_kind kind);
void mlp_count_free_all(struct mlp_count *c, size_t n);

/* Every finished stage attempt's duration in seconds, counted into
 * buckets (counts[i]: at most bounds[i]; counts[nbounds]: all). */
int mlp_store_stage_durations(double *out_sum, struct mlp_store *s, const double *bounds,
                              size_t nbounds, uint64_t *counts);

/* Runs recorded with the given status and project (NULL: any), counted. */
int mlp_store_runs_count(int64_t *out, struct mlp_store *s, const char *project,
                         enum mlp_status status);

/* ---- deployments (store-deployments.c) ---------------------------------
 *
 * Every Kubernetes rollout and rollback mlpipe makes is a row: what it
 * changed (deployment, container, from and to image, the env it set), the
 * state it found before (the container's env and the pod template's
 * annotations, as JSON, so that a rollback can patch them back), the model
 * version and run it deployed, and how it ended.  A row is written
 * 'pending' BEFORE the PATCH is sent, so a crash never leaves a change
 * nobody can undo.  Credentials are never stored here.
 */

enum mlp_deploy_result {
	MLP_DEPLOY_PENDING,
	MLP_DEPLOY_COMPLETE,
	MLP_DEPLOY_FAILED,
	MLP_DEPLOY_ROLLED_BACK,
	MLP_DEPLOY_DRY_RUN,
};

const char *mlp_deploy_result_name(enum mlp_deploy_result r);

struct mlp_deployment {
	int64_t id;
	bool rollback; /* kind 'rollback' (else 'rollout') */
	char *namespace_;
	char *deployment;
	char *container;
	char *from_image;
	char *to_image;
	char *env;                  /* JSON object: what was set; may be NULL */
	char *previous_env;         /* JSON array or null */
	char *previous_annotations; /* JSON object or null */
	char *model;                /* NULL: no model */
	int model_version;          /* 0: none */
	int64_t model_version_id;   /* 0: none */
	int64_t run_id;             /* 0: none */
	char *stage;
	int64_t rollback_of; /* 0: none */
	enum mlp_deploy_result result;
	char *reason;
	char *revision; /* deployment.kubernetes.io/revision */
	char *user;
	int64_t started_at; /* wall-clock ms */
	int64_t ended_at;   /* 0: not ended */
};

/* Records a new row from d (id, ended_at, reason and revision ignored;
 * result is pending or dry_run); *out_id receives its id. */
int mlp_store_deployment_start(int64_t *out_id, struct mlp_store *s,
                               const struct mlp_deployment *d);
/* Sets a row's result, reason (may be NULL) and revision (may be NULL)
 * and its end time. */
int mlp_store_deployment_finish(struct mlp_store *s, int64_t id, enum mlp_deploy_result result,
                                const char *reason, const char *revision);
/* Replaces the previous state a pending row recorded (after a 409 the
 * Deployment is read again and the patch built on that read). */
int mlp_store_deployment_set_previous(struct mlp_store *s, int64_t id, const char *from_image,
                                      const char *previous_env, const char *previous_annotations);
/* One row; MLP_ENOTFOUND with a message when there is none. */
int mlp_store_deployment_get(struct mlp_deployment *out, struct mlp_store *s, int64_t id);
/* Rows for namespace/deployment (either NULL: any), newest first, at most
 * limit (0: all).  Free with mlp_deployment_free_all. */
int mlp_store_deployments_list(struct mlp_deployment **out, size_t *n, struct mlp_store *s,
                               const char *namespace_, const char *deployment, int limit);
/* The newest rollout of namespace/deployment that is still in effect
 * (complete or failed and kept: not rolled back, not a dry run);
 * MLP_ENOTFOUND with a message when there is none. */
int mlp_store_deployment_last_rollout(struct mlp_deployment *out, struct mlp_store *s,
                                      const char *namespace_, const char *deployment);
void mlp_deployment_clear(struct mlp_deployment *d);
void mlp_deployment_free_all(struct mlp_deployment *d, size_t n);

#endif
