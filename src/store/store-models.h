/*
 * store-models.h - artifacts and model versions (store-models.c), gate thresholds and decisions (store-gates.c).
 * Part of the store's API (store.h has opening, transactions and the
 * schema); include the domain headers a file uses.
 */
#ifndef MLP_STORE_MODELS_H
#define MLP_STORE_MODELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

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

#endif
