/*
 * store-gates.c - gate thresholds with their history, and gate decisions
 * (store.h).  The model versions a decision names are store-models.c's.
 *
 * A threshold and its history row are written together in a SAVEPOINT:
 * alone it is its own transaction, inside a caller's (the gate's
 * decision) it nests in it.  The savepoint has the name store-models.c
 * uses (mlp_models), so the two nest alike.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "store/store-int.h"
#include "store/store-models.h"
#include "base/util.h"

/* ---- gate thresholds ---------------------------------------------------- */

static int insert_history(struct mlp_store *s, const char *gate, const char *metric,
                          const char *old_op, double old_value, const char *new_op,
                          double new_value, const char *user, const char *reason,
                          const char *source)
{
	sqlite3_stmt *st = store_prepare(
	        s, "INSERT INTO gate_threshold_history (gate, metric, old_op, old_value, new_op,"
	           " new_value, user, at, reason, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");

	if (st == NULL)
		return MLP_EDB;
	store_bind_text(st, 1, gate);
	store_bind_text(st, 2, metric);
	store_bind_text(st, 3, old_op);
	if (old_op)
		sqlite3_bind_double(st, 4, old_value);
	else
		sqlite3_bind_null(st, 4);
	store_bind_text(st, 5, new_op);
	if (new_op)
		sqlite3_bind_double(st, 6, new_value);
	else
		sqlite3_bind_null(st, 6);
	store_bind_text(st, 7, user);
	sqlite3_bind_int64(st, 8, mlp_wall_ms());
	store_bind_text(st, 9, reason);
	store_bind_text(st, 10, source);
	return store_exec_stmt(s, st, "recording a threshold change");
}

/* The current threshold of (gate, metric): *out_op is NULL when none. */
static int read_threshold(struct mlp_store *s, char **out_op, double *out_value, const char *gate,
                          const char *metric)
{
	sqlite3_stmt *st = store_prepare(s, "SELECT op, value FROM gate_thresholds"
	                                    " WHERE gate = ? AND metric = ?");
	int rc;

	*out_op = NULL;
	*out_value = 0;
	if (st == NULL)
		return MLP_EDB;
	store_bind_text(st, 1, gate);
	store_bind_text(st, 2, metric);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*out_op = store_column_text(st, 0);
		*out_value = sqlite3_column_double(st, 1);
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return store_fail(s, "reading a threshold");
	return 0;
}

static int write_threshold(struct mlp_store *s, const char *gate, const char *metric,
                           const char *op, double value, const char *user)
{
	sqlite3_stmt *st = store_prepare(
	        s, "INSERT OR REPLACE INTO gate_thresholds (gate, metric, op, value, updated_at,"
	           " updated_by) VALUES (?, ?, ?, ?, ?, ?)");

	if (st == NULL)
		return MLP_EDB;
	store_bind_text(st, 1, gate);
	store_bind_text(st, 2, metric);
	store_bind_text(st, 3, op);
	sqlite3_bind_double(st, 4, value);
	sqlite3_bind_int64(st, 5, mlp_wall_ms());
	store_bind_text(st, 6, user);
	return store_exec_stmt(s, st, "setting a threshold");
}

int mlp_store_gate_threshold_set(bool *out_changed, struct mlp_store *s, const char *gate,
                                 const char *metric, const char *op, double value, const char *user,
                                 const char *reason)
{
	char *old_op = NULL;
	double old_value;
	int rc;

	if (out_changed)
		*out_changed = false;
	if ((rc = store_savepoint(s, "setting a threshold")) != 0)
		return rc;
	if ((rc = read_threshold(s, &old_op, &old_value, gate, metric)) != 0)
		goto fail;
	if (old_op && strcmp(old_op, op) == 0 && old_value == value) {
		free(old_op);
		return store_release(s, "setting a threshold");
	}
	if ((rc = write_threshold(s, gate, metric, op, value, user)) != 0 ||
	    (rc = insert_history(s, gate, metric, old_op, old_value, op, value, user, reason,
	                         "cli")) != 0)
		goto fail;
	free(old_op);
	if ((rc = store_release(s, "setting a threshold")) == 0 && out_changed)
		*out_changed = true;
	return rc;
fail:
	free(old_op);
	store_rollback_to(s);
	return rc;
}

int mlp_store_gate_threshold_seed(bool *out_seeded, struct mlp_store *s, const char *gate,
                                  const char *metric, const char *op, double value,
                                  const char *user, const char *reason)
{
	sqlite3_stmt *st;
	bool known;
	int rc;

	if (out_seeded)
		*out_seeded = false;
	if ((rc = store_savepoint(s, "seeding a threshold")) != 0)
		return rc;
	st = store_prepare(
	        s, "SELECT EXISTS (SELECT 1 FROM gate_thresholds WHERE gate = ?1 AND metric = ?2)"
	           " OR EXISTS (SELECT 1 FROM gate_threshold_history WHERE gate = ?1 AND metric = "
	           "?2)");
	if (st == NULL) {
		rc = MLP_EDB;
		goto fail;
	}
	store_bind_text(st, 1, gate);
	store_bind_text(st, 2, metric);
	if (sqlite3_step(st) != SQLITE_ROW) {
		rc = store_fail(s, "reading a threshold");
		sqlite3_finalize(st);
		goto fail;
	}
	known = sqlite3_column_int(st, 0) != 0;
	sqlite3_finalize(st);
	if (known)
		return store_release(s, "seeding a threshold");
	if ((rc = write_threshold(s, gate, metric, op, value, user)) != 0 ||
	    (rc = insert_history(s, gate, metric, NULL, 0, op, value, user, reason,
	                         "pipeline-seed")) != 0)
		goto fail;
	if ((rc = store_release(s, "seeding a threshold")) == 0 && out_seeded)
		*out_seeded = true;
	return rc;
fail:
	store_rollback_to(s);
	return rc;
}

int mlp_store_gate_threshold_unset(struct mlp_store *s, const char *gate, const char *metric,
                                   const char *user, const char *reason)
{
	char *old_op = NULL;
	double old_value;
	sqlite3_stmt *st;
	int rc;

	if ((rc = store_savepoint(s, "removing a threshold")) != 0)
		return rc;
	if ((rc = read_threshold(s, &old_op, &old_value, gate, metric)) != 0)
		goto fail;
	if (old_op == NULL) {
		mlp_error_set("gate '%s' has no threshold on '%s'", gate, metric);
		rc = MLP_ENOTFOUND;
		goto fail;
	}
	st = store_prepare(s, "DELETE FROM gate_thresholds WHERE gate = ? AND metric = ?");
	if (st == NULL) {
		rc = MLP_EDB;
		goto fail;
	}
	store_bind_text(st, 1, gate);
	store_bind_text(st, 2, metric);
	if ((rc = store_exec_stmt(s, st, "removing a threshold")) != 0 ||
	    (rc = insert_history(s, gate, metric, old_op, old_value, NULL, 0, user, reason,
	                         "cli")) != 0)
		goto fail;
	free(old_op);
	return store_release(s, "removing a threshold");
fail:
	free(old_op);
	store_rollback_to(s);
	return rc;
}

int mlp_store_gate_thresholds_list(struct mlp_gate_threshold **out, size_t *n, struct mlp_store *s,
                                   const char *gate)
{
	sqlite3_stmt *st = store_prepare(
	        s, "SELECT gate, metric, op, value, updated_at, updated_by FROM gate_thresholds"
	           " WHERE ?1 IS NULL OR gate = ?1 ORDER BY gate, metric");
	struct mlp_gate_threshold *t = NULL;
	size_t len = 0, cap = 0;
	int rc;

	*out = NULL;
	*n = 0;
	if (st == NULL)
		return MLP_EDB;
	store_bind_text(st, 1, gate);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		xgrow((void **)&t, &cap, len + 1, sizeof(*t));
		t[len].gate = store_column_text(st, 0);
		t[len].metric = store_column_text(st, 1);
		t[len].op = store_column_text(st, 2);
		t[len].value = sqlite3_column_double(st, 3);
		t[len].updated_at = sqlite3_column_int64(st, 4);
		t[len].updated_by = store_column_text(st, 5);
		len++;
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		mlp_gate_threshold_free_all(t, len);
		return store_fail(s, "listing thresholds");
	}
	*out = t;
	*n = len;
	return 0;
}

void mlp_gate_threshold_free_all(struct mlp_gate_threshold *t, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(t[i].gate);
		free(t[i].metric);
		free(t[i].op);
		free(t[i].updated_by);
	}
	free(t);
}

int mlp_store_gate_history(struct mlp_gate_threshold_change **out, size_t *n, struct mlp_store *s,
                           const char *gate)
{
	sqlite3_stmt *st = store_prepare(
	        s,
	        "SELECT id, gate, metric, old_op, old_value, new_op, new_value, user, at, reason,"
	        " source FROM gate_threshold_history WHERE gate = ? ORDER BY id");
	struct mlp_gate_threshold_change *c = NULL;
	size_t len = 0, cap = 0;
	int rc;

	*out = NULL;
	*n = 0;
	if (st == NULL)
		return MLP_EDB;
	store_bind_text(st, 1, gate);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct mlp_gate_threshold_change *x;

		xgrow((void **)&c, &cap, len + 1, sizeof(*c));
		x = &c[len++];
		x->id = sqlite3_column_int64(st, 0);
		x->gate = store_column_text(st, 1);
		x->metric = store_column_text(st, 2);
		x->old_op = store_column_text(st, 3);
		x->old_value = sqlite3_column_double(st, 4);
		x->new_op = store_column_text(st, 5);
		x->new_value = sqlite3_column_double(st, 6);
		x->user = store_column_text(st, 7);
		x->at = sqlite3_column_int64(st, 8);
		x->reason = store_column_text(st, 9);
		x->source = store_column_text(st, 10);
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		mlp_gate_threshold_change_free_all(c, len);
		return store_fail(s, "listing threshold changes");
	}
	*out = c;
	*n = len;
	return 0;
}

void mlp_gate_threshold_change_free_all(struct mlp_gate_threshold_change *c, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(c[i].gate);
		free(c[i].metric);
		free(c[i].old_op);
		free(c[i].new_op);
		free(c[i].user);
		free(c[i].reason);
		free(c[i].source);
	}
	free(c);
}

/* ---- gate decisions ----------------------------------------------------- */

int mlp_store_gate_decision_record(int64_t *out_id, struct mlp_store *s,
                                   const struct mlp_gate_decision *d)
{
	sqlite3_stmt *st = store_prepare(
	        s, "INSERT INTO gate_decisions (run_id, stage, gate, model_version_id, passed,"
	           " baseline_version_id, reason, detail, decided_at)"
	           " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)");
	int rc;

	if (st == NULL)
		return MLP_EDB;
	store_bind_id(st, 1, d->run_id);
	store_bind_text(st, 2, d->stage);
	store_bind_text(st, 3, d->gate);
	store_bind_id(st, 4, d->model_version_id);
	sqlite3_bind_int(st, 5, d->passed ? 1 : 0);
	store_bind_id(st, 6, d->baseline_version_id);
	store_bind_text(st, 7, d->reason);
	store_bind_text(st, 8, d->detail ? d->detail : "{}");
	sqlite3_bind_int64(st, 9, mlp_wall_ms());
	rc = store_exec_stmt(s, st, "recording a gate decision");
	if (rc == 0 && out_id)
		*out_id = sqlite3_last_insert_rowid(s->db);
	return rc;
}

int mlp_store_gate_decisions_list(struct mlp_gate_decision **out, size_t *n, struct mlp_store *s,
                                  const char *gate, int64_t version_id, int limit)
{
	sqlite3_stmt *st = store_prepare(
	        s, "SELECT id, run_id, stage, gate, model_version_id, passed, baseline_version_id,"
	           " reason, detail, decided_at FROM gate_decisions"
	           " WHERE (?1 IS NULL OR gate = ?1) AND (?2 = 0 OR model_version_id = ?2)"
	           " ORDER BY id DESC LIMIT ?3");
	struct mlp_gate_decision *d = NULL;
	size_t len = 0, cap = 0;
	int rc;

	*out = NULL;
	*n = 0;
	if (st == NULL)
		return MLP_EDB;
	store_bind_text(st, 1, gate);
	sqlite3_bind_int64(st, 2, version_id);
	sqlite3_bind_int(st, 3, limit > 0 ? limit : -1);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct mlp_gate_decision *x;

		xgrow((void **)&d, &cap, len + 1, sizeof(*d));
		x = &d[len++];
		x->id = sqlite3_column_int64(st, 0);
		x->run_id = sqlite3_column_int64(st, 1);
		x->stage = store_column_text(st, 2);
		x->gate = store_column_text(st, 3);
		x->model_version_id = sqlite3_column_int64(st, 4);
		x->passed = sqlite3_column_int(st, 5) != 0;
		x->baseline_version_id = sqlite3_column_int64(st, 6);
		x->reason = store_column_text(st, 7);
		x->detail = store_column_text(st, 8);
		x->decided_at = sqlite3_column_int64(st, 9);
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		mlp_gate_decision_free_all(d, len);
		return store_fail(s, "listing gate decisions");
	}
	*out = d;
	*n = len;
	return 0;
}

void mlp_gate_decision_free_all(struct mlp_gate_decision *d, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(d[i].stage);
		free(d[i].gate);
		free(d[i].reason);
		free(d[i].detail);
	}
	free(d);
}
