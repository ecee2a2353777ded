/*
 * store-runs.c - runs, stage attempts, outputs and metrics (store.h).
 * A run's liveness lock is store-liveness.c's.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "base/error.h"
#include "store/store-int.h"
#include "store/store-queue.h"
#include "store/store-runs.h"
#include "base/util.h"

int mlp_store_run_create(int64_t *out_id, struct mlp_store *s, const struct mlp_run_new *r)
{
	sqlite3_stmt *st;
	int64_t now = mlp_wall_ms();
	int rc;

	if ((rc = mlp_store_begin(s)) != 0)
		return rc;
	st = store_prepare(
	        s, "INSERT INTO runs (pipeline, pipeline_path, pipeline_text, pipeline_sha256,"
	           " status, trigger, user, git_commit, git_ref, workspace, created_at, started_at)"
	           " VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, ?, ?)");
	if (st == NULL) {
		rc = MLP_EDB;
		goto fail;
	}
	store_bind_text(st, 1, r->pipeline);
	store_bind_text(st, 2, r->pipeline_path);
	store_bind_text(st, 3, r->pipeline_text);
	store_bind_text(st, 4, r->pipeline_sha256);
	store_bind_text(st, 5, r->trigger ? r->trigger : "cli");
	store_bind_text(st, 6, r->user);
	store_bind_text(st, 7, r->git_commit);
	store_bind_text(st, 8, r->git_ref);
	store_bind_text(st, 9, r->workspace);
	sqlite3_bind_int64(st, 10, now);
	sqlite3_bind_int64(st, 11, now);
	if ((rc = store_exec_stmt(s, st, "recording the run")) != 0)
		goto fail;
	*out_id = sqlite3_last_insert_rowid(s->db);
	/* Lock before commit: nobody can see the run without its lock held. */
	if ((rc = store_take_run_lock(s, *out_id)) != 0)
		goto fail;
	if ((rc = mlp_store_commit(s)) != 0)
		goto fail;
	return 0;
fail:
	mlp_store_rollback(s);
	return rc;
}

int mlp_store_run_finish(struct mlp_store *s, int64_t run_id, enum mlp_status status, int exit_code,
                         const char *message)
{
	sqlite3_stmt *st = store_prepare(
	        s, "UPDATE runs SET status = ?, exit_code = ?, message = ?, ended_at = ?"
	           " WHERE id = ?");
	int rc;

	if (st == NULL)
		return MLP_EDB;
	store_bind_text(st, 1, mlp_status_name(status));
	sqlite3_bind_int(st, 2, exit_code);
	store_bind_text(st, 3, message);
	sqlite3_bind_int64(st, 4, mlp_wall_ms());
	sqlite3_bind_int64(st, 5, run_id);
	rc = store_exec_stmt(s, st, "recording the end of the run");
	if (rc == 0 && s->run_lock_fd >= 0 && s->run_lock_id == run_id) {
		char *path = store_run_lock_path(s, run_id);

		unlink(path);
		free(path);
		close(s->run_lock_fd);
		s->run_lock_fd = -1;
	}
	return rc;
}

/* True when the run's owner is gone: nobody holds its lock. */

/* Claiming a queued run (store.h; the server's exec-run children). */
int mlp_store_run_claim(bool *out_resumed, struct mlp_store *s, int64_t run_id)
{
	sqlite3_stmt *st;
	char *status = NULL;
	bool managed;
	int rc;

	*out_resumed = false;
	if ((rc = mlp_store_begin(s)) != 0)
		return rc;
	st = store_prepare(s, "SELECT status, queued_at IS NOT NULL FROM runs WHERE id = ?");
	if (st == NULL) {
		rc = MLP_EDB;
		goto fail;
	}
	sqlite3_bind_int64(st, 1, run_id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		status = store_column_text(st, 0);
		managed = sqlite3_column_int(st, 1) != 0;
	}
	sqlite3_finalize(st);
	if (rc == SQLITE_DONE) {
		mlp_error_set("no run %lld", (long long)run_id);
		rc = MLP_ENOTFOUND;
		goto fail;
	}
	if (rc != SQLITE_ROW) {
		rc = store_fail(s, "reading a run");
		goto fail;
	}
	/* A run still marked running whose owner died is interrupted. */
	if (strcmp(status, mlp_status_name(MLP_STATUS_RUNNING)) == 0 && managed &&
	    store_run_owner_dead(s, run_id)) {
		free(status);
		status = xstrdup(mlp_status_name(MLP_STATUS_INTERRUPTED));
	}
	if (strcmp(status, mlp_status_name(MLP_STATUS_INTERRUPTED)) == 0 && managed) {
		*out_resumed = true;
		st = store_prepare(s, "DELETE FROM stages WHERE run_id = ? AND attempt = 0");
		if (st == NULL) {
			rc = MLP_EDB;
			goto fail;
		}
		sqlite3_bind_int64(st, 1, run_id);
		if ((rc = store_exec_stmt(s, st, "resuming a run")) != 0)
			goto fail;
		st = store_prepare(
		        s,
		        "UPDATE stages SET status = 'interrupted', ended_at = coalesce(ended_at, ?)"
		        " WHERE run_id = ? AND status = 'running'");
		if (st == NULL) {
			rc = MLP_EDB;
			goto fail;
		}
		sqlite3_bind_int64(st, 1, mlp_wall_ms());
		sqlite3_bind_int64(st, 2, run_id);
		if ((rc = store_exec_stmt(s, st, "resuming a run")) != 0)
			goto fail;
	} else if (strcmp(status, mlp_status_name(MLP_STATUS_QUEUED)) != 0) {
		mlp_error_set("run %lld is %s: nothing to claim", (long long)run_id, status);
		rc = MLP_EEXISTS;
		goto fail;
	}
	st = store_prepare(s, "UPDATE runs SET status = 'running', started_at = ?, ended_at = NULL,"
	                      " exit_code = NULL, message = NULL, exec_pid = ?,"
	                      " exec_attempts = exec_attempts + 1 WHERE id = ?");
	if (st == NULL) {
		rc = MLP_EDB;
		goto fail;
	}
	sqlite3_bind_int64(st, 1, mlp_wall_ms());
	sqlite3_bind_int64(st, 2, (int64_t)getpid());
	sqlite3_bind_int64(st, 3, run_id);
	if ((rc = store_exec_stmt(s, st, "claiming a run")) != 0)
		goto fail;
	/* Lock before commit: nobody can see the run running without it. */
	if ((rc = store_take_run_lock(s, run_id)) != 0)
		goto fail;
	if ((rc = mlp_store_commit(s)) != 0)
		goto fail;
	free(status);
	return 0;
fail:
	free(status);
	mlp_store_rollback(s);
	return rc;
}

int mlp_store_attempt_start(int64_t *out_id, struct mlp_store *s, int64_t run_id, const char *stage,
                            const char *kind, int attempt, const char *log_path)
{
	sqlite3_stmt *st = store_cached(
	        s, "INSERT INTO stages (run_id, stage, attempt, kind, status, started_at, log_path)"
	           " VALUES (?, ?, ?, ?, 'running', ?, ?)");
	int rc;

	if (st == NULL)
		return MLP_EDB;
	sqlite3_bind_int64(st, 1, run_id);
	store_bind_text(st, 2, stage);
	sqlite3_bind_int(st, 3, attempt);
	store_bind_text(st, 4, kind);
	sqlite3_bind_int64(st, 5, mlp_wall_ms());
	store_bind_text(st, 6, log_path);
	rc = store_exec_cached(s, st, "recording a stage start");
	if (rc == 0)
		*out_id = sqlite3_last_insert_rowid(s->db);
	return rc;
}

int mlp_store_attempt_finish(struct mlp_store *s, int64_t attempt_id,
                             const struct mlp_attempt_end *end)
{
	sqlite3_stmt *st = store_cached(
	        s, "UPDATE stages SET status = ?, exit_code = ?, signal = ?, timed_out = ?,"
	           " message = ?, ended_at = ? WHERE id = ?");

	if (st == NULL)
		return MLP_EDB;
	store_bind_text(st, 1, mlp_status_name(end->status));
	if (end->exit_code >= 0)
		sqlite3_bind_int(st, 2, end->exit_code);
	else
		sqlite3_bind_null(st, 2);
	if (end->signal > 0)
		sqlite3_bind_int(st, 3, end->signal);
	else
		sqlite3_bind_null(st, 3);
	sqlite3_bind_int(st, 4, end->timed_out);
	store_bind_text(st, 5, end->message);
	sqlite3_bind_int64(st, 6, mlp_wall_ms());
	sqlite3_bind_int64(st, 7, attempt_id);
	return store_exec_cached(s, st, "recording a stage end");
}

int mlp_store_stage_not_run(struct mlp_store *s, int64_t run_id, const char *stage,
                            const char *kind, enum mlp_status status, const char *message)
{
	sqlite3_stmt *st =
	        store_cached(s, "INSERT INTO stages (run_id, stage, attempt, kind, status, message)"
	                        " VALUES (?, ?, 0, ?, ?, ?)");

	if (st == NULL)
		return MLP_EDB;
	sqlite3_bind_int64(st, 1, run_id);
	store_bind_text(st, 2, stage);
	store_bind_text(st, 3, kind);
	store_bind_text(st, 4, mlp_status_name(status));
	store_bind_text(st, 5, message);
	return store_exec_cached(s, st, "recording a stage that did not run");
}

int mlp_store_output_put(struct mlp_store *s, int64_t run_id, const char *stage, const char *key,
                         const char *value)
{
	sqlite3_stmt *st = store_cached(
	        s,
	        "INSERT OR REPLACE INTO outputs (run_id, stage, key, value) VALUES (?, ?, ?, ?)");

	if (st == NULL)
		return MLP_EDB;
	sqlite3_bind_int64(st, 1, run_id);
	store_bind_text(st, 2, stage);
	store_bind_text(st, 3, key);
	store_bind_text(st, 4, value);
	return store_exec_cached(s, st, "recording an output");
}

int mlp_store_metric_put(struct mlp_store *s, int64_t run_id, const char *stage, const char *name,
                         double value)
{
	sqlite3_stmt *st = store_cached(
	        s,
	        "INSERT OR REPLACE INTO metrics (run_id, stage, name, value) VALUES (?, ?, ?, ?)");

	if (st == NULL)
		return MLP_EDB;
	sqlite3_bind_int64(st, 1, run_id);
	store_bind_text(st, 2, stage);
	store_bind_text(st, 3, name);
	sqlite3_bind_double(st, 4, value);
	return store_exec_cached(s, st, "recording a metric");
}

#define RUN_COLUMNS                                                            \
	"id, pipeline, pipeline_path, pipeline_sha256, status, trigger, user," \
	" git_commit, workspace, created_at, started_at, ended_at, exit_code, message"

static void read_run(struct mlp_run_info *r, sqlite3_stmt *st)
{
	char *status = store_column_text(st, 4);

	memset(r, 0, sizeof(*r));
	r->id = sqlite3_column_int64(st, 0);
	r->pipeline = store_column_text(st, 1);
	r->pipeline_path = store_column_text(st, 2);
	r->pipeline_sha256 = store_column_text(st, 3);
	if (status == NULL || mlp_status_parse(&r->status, status) != 0)
		r->status = MLP_STATUS_INTERRUPTED;
	free(status);
	r->trigger = store_column_text(st, 5);
	r->user = store_column_text(st, 6);
	r->git_commit = store_column_text(st, 7);
	r->workspace = store_column_text(st, 8);
	r->created_at = sqlite3_column_int64(st, 9);
	r->started_at = sqlite3_column_int64(st, 10);
	r->ended_at = sqlite3_column_int64(st, 11);
	r->exit_code = sqlite3_column_type(st, 12) == SQLITE_NULL ? -1 : sqlite3_column_int(st, 12);
	r->message = store_column_text(st, 13);
}

int mlp_store_runs_list(struct mlp_run_info **out, size_t *n, struct mlp_store *s,
                        const struct mlp_run_filter *f)
{
	sqlite3_stmt *st = store_prepare(
	        s, "SELECT " RUN_COLUMNS " FROM runs"
	           " WHERE (?1 IS NULL OR pipeline = ?1) AND (?2 IS NULL OR status = ?2)"
	           " ORDER BY id DESC LIMIT ?3");
	struct mlp_run_info *runs = NULL;
	size_t len = 0, cap = 0;
	int rc;

	*out = NULL;
	*n = 0;
	if (st == NULL)
		return MLP_EDB;
	store_bind_text(st, 1, f ? f->pipeline : NULL);
	store_bind_text(st, 2, f && f->has_status ? mlp_status_name(f->status) : NULL);
	sqlite3_bind_int(st, 3, f && f->limit > 0 ? f->limit : -1);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		xgrow((void **)&runs, &cap, len + 1, sizeof(*runs));
		read_run(&runs[len++], st);
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		mlp_run_info_free_all(runs, len);
		return store_fail(s, "listing runs");
	}
	*out = runs;
	*n = len;
	return 0;
}

int mlp_store_run_get(struct mlp_run_info *out, struct mlp_store *s, int64_t run_id)
{
	sqlite3_stmt *st =
	        store_prepare(s, "SELECT " RUN_COLUMNS ", pipeline_text FROM runs WHERE id = ?");
	int rc;

	memset(out, 0, sizeof(*out));
	if (st == NULL)
		return MLP_EDB;
	sqlite3_bind_int64(st, 1, run_id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		read_run(out, st);
		out->pipeline_text = store_column_text(st, 14);
		sqlite3_finalize(st);
		return 0;
	}
	sqlite3_finalize(st);
	if (rc == SQLITE_DONE) {
		mlp_error_set("no run %lld", (long long)run_id);
		return MLP_ENOTFOUND;
	}
	return store_fail(s, "reading a run");
}

void mlp_run_info_clear(struct mlp_run_info *r)
{
	free(r->pipeline);
	free(r->pipeline_path);
	free(r->pipeline_sha256);
	free(r->pipeline_text);
	free(r->trigger);
	free(r->user);
	free(r->git_commit);
	free(r->workspace);
	free(r->message);
	memset(r, 0, sizeof(*r));
}

void mlp_run_info_free_all(struct mlp_run_info *r, size_t n)
{
	for (size_t i = 0; i < n; i++)
		mlp_run_info_clear(&r[i]);
	free(r);
}

int mlp_store_attempts_list(struct mlp_attempt_info **out, size_t *n, struct mlp_store *s,
                            int64_t run_id)
{
	sqlite3_stmt *st = store_prepare(
	        s, "SELECT id, stage, attempt, kind, status, exit_code, signal, timed_out,"
	           " started_at, ended_at, log_path, message FROM stages WHERE run_id = ?"
	           " ORDER BY started_at IS NULL, started_at, id");
	struct mlp_attempt_info *a = NULL;
	size_t len = 0, cap = 0;
	int rc;

	*out = NULL;
	*n = 0;
	if (st == NULL)
		return MLP_EDB;
	sqlite3_bind_int64(st, 1, run_id);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct mlp_attempt_info *x;
		char *status;

		xgrow((void **)&a, &cap, len + 1, sizeof(*a));
		x = &a[len++];
		memset(x, 0, sizeof(*x));
		x->id = sqlite3_column_int64(st, 0);
		x->stage = store_column_text(st, 1);
		x->attempt = sqlite3_column_int(st, 2);
		x->kind = store_column_text(st, 3);
		status = store_column_text(st, 4);
		if (status == NULL || mlp_status_parse(&x->status, status) != 0)
			x->status = MLP_STATUS_INTERRUPTED;
		free(status);
		x->exit_code =
		        sqlite3_column_type(st, 5) == SQLITE_NULL ? -1 : sqlite3_column_int(st, 5);
		x->signal = sqlite3_column_int(st, 6);
		x->timed_out = sqlite3_column_int(st, 7) != 0;
		x->started_at = sqlite3_column_int64(st, 8);
		x->ended_at = sqlite3_column_int64(st, 9);
		x->log_path = store_column_text(st, 10);
		x->message = store_column_text(st, 11);
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		mlp_attempt_info_free_all(a, len);
		return store_fail(s, "listing stage attempts");
	}
	*out = a;
	*n = len;
	return 0;
}

void mlp_attempt_info_free_all(struct mlp_attempt_info *a, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(a[i].stage);
		free(a[i].kind);
		free(a[i].log_path);
		free(a[i].message);
	}
	free(a);
}

static int list_values(struct mlp_store *s, struct mlp_stage_value **out, size_t *n, int64_t run_id,
                       const char *sql, bool numeric)
{
	sqlite3_stmt *st = store_prepare(s, sql);
	struct mlp_stage_value *v = NULL;
	size_t len = 0, cap = 0;
	int rc;

	*out = NULL;
	*n = 0;
	if (st == NULL)
		return MLP_EDB;
	sqlite3_bind_int64(st, 1, run_id);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		xgrow((void **)&v, &cap, len + 1, sizeof(*v));
		v[len].stage = store_column_text(st, 0);
		v[len].name = store_column_text(st, 1);
		v[len].text = numeric ? NULL : store_column_text(st, 2);
		v[len].number = numeric ? sqlite3_column_double(st, 2) : 0;
		len++;
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		mlp_stage_value_free_all(v, len);
		return store_fail(s, "listing stage values");
	}
	*out = v;
	*n = len;
	return 0;
}

int mlp_store_outputs_list(struct mlp_stage_value **out, size_t *n, struct mlp_store *s,
                           int64_t run_id)
{
	return list_values(s, out, n, run_id,
	                   "SELECT stage, key, value FROM outputs WHERE run_id = ?"
	                   " ORDER BY rowid",
	                   false);
}

int mlp_store_metrics_list(struct mlp_stage_value **out, size_t *n, struct mlp_store *s,
                           int64_t run_id)
{
	return list_values(s, out, n, run_id,
	                   "SELECT stage, name, value FROM metrics WHERE run_id = ?"
	                   " ORDER BY rowid",
	                   true);
}

void mlp_stage_value_free_all(struct mlp_stage_value *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(v[i].stage);
		free(v[i].name);
		free(v[i].text);
	}
	free(v);
}
