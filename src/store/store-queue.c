/*
 * store-queue.c - what `mlpipe serve` keeps: queued runs, projects,
 * webhook deliveries, schedule fire times, API tokens, and the counts
 * /metrics reports (store.h).
 *
 * Every acknowledgement the server gives is one transaction here: a
 * delivery id is recorded with the run it queues, a schedule's fire time
 * with its run, so a crash between the two cannot happen and a retry or a
 * restart cannot queue twice.
 */
#include "config.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "base/crypto.h"
#include "base/error.h"
#include "store/store-int.h"
#include "store/store-queue.h"
#include "base/util.h"

/* ---- queue ---------------------------------------------------------------- */

static int insert_queued(struct mlp_store *s, int64_t *out_id, const struct mlp_run_queued *r)
{
	sqlite3_stmt *st = store_cached(
	        s,
	        "INSERT INTO runs (pipeline, pipeline_path, pipeline_text, pipeline_sha256, status,"
	        " trigger, user, git_commit, git_ref, git_author, git_message, project, schedule,"
	        " created_at, queued_at)"
	        " VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
	int64_t now = mlp_wall_ms();
	int rc;

	if (st == NULL)
		return MLP_EDB;
	store_bind_text(st, 1, r->pipeline ? r->pipeline : r->project);
	store_bind_text(st, 2, r->pipeline_path);
	store_bind_text(st, 3, r->pipeline_text ? r->pipeline_text : "");
	if (r->pipeline_text) {
		char sha[MLP_SHA256_HEX_LEN + 1];

		mlp_sha256_hex(sha, r->pipeline_text, strlen(r->pipeline_text));
		store_bind_text(st, 4, sha);
	} else {
		store_bind_text(st, 4, "");
	}
	store_bind_text(st, 5, r->trigger);
	store_bind_text(st, 6, r->user);
	store_bind_text(st, 7, r->git_commit);
	store_bind_text(st, 8, r->git_ref);
	store_bind_text(st, 9, r->git_author);
	store_bind_text(st, 10, r->git_message);
	store_bind_text(st, 11, r->project);
	store_bind_text(st, 12, r->schedule);
	sqlite3_bind_int64(st, 13, now);
	sqlite3_bind_int64(st, 14, now);
	rc = store_exec_cached(s, st, "queueing a run");
	if (rc == 0)
		*out_id = sqlite3_last_insert_rowid(s->db);
	return rc;
}

/* Inserts the delivery unless it exists; MLP_EEXISTS with *out_run. */
static int insert_delivery(struct mlp_store *s, int64_t *out_run, const char *forge, const char *id,
                           const char *project, const char *result, const char *reason)
{
	sqlite3_stmt *st = store_cached(
	        s,
	        "INSERT OR IGNORE INTO deliveries (forge, id, project, result, reason, received_at)"
	        " VALUES (?, ?, ?, ?, ?, ?)");
	int rc;

	if (st == NULL)
		return MLP_EDB;
	store_bind_text(st, 1, forge);
	store_bind_text(st, 2, id);
	store_bind_text(st, 3, project);
	store_bind_text(st, 4, result);
	store_bind_text(st, 5, reason);
	sqlite3_bind_int64(st, 6, mlp_wall_ms());
	if ((rc = store_exec_cached(s, st, "recording a delivery")) != 0)
		return rc;
	if (sqlite3_changes(s->db) == 1)
		return 0;
	st = store_prepare(s, "SELECT run_id FROM deliveries WHERE forge = ? AND id = ?");
	if (st == NULL)
		return MLP_EDB;
	store_bind_text(st, 1, forge);
	store_bind_text(st, 2, id);
	*out_run = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
	sqlite3_finalize(st);
	return MLP_EEXISTS;
}

int mlp_store_run_enqueue(int64_t *out_id, struct mlp_store *s, const struct mlp_run_queued *r,
                          const char *forge, const char *delivery_id)
{
	bool existing = false;
	int rc;

	*out_id = 0;
	if ((rc = mlp_store_begin(s)) != 0)
		return rc;
	if (forge && delivery_id &&
	    (rc = insert_delivery(s, out_id, forge, delivery_id, r->project, "queued", NULL)) != 0)
		goto fail;
	if (r->once_per_commit) {
		sqlite3_stmt *st = store_cached(
		        s,
		        "SELECT id FROM runs WHERE project = ? AND git_ref = ? AND git_commit = ?"
		        " ORDER BY id LIMIT 1");

		if (st == NULL) {
			rc = MLP_EDB;
			goto fail;
		}
		store_bind_text(st, 1, r->project);
		store_bind_text(st, 2, r->git_ref);
		store_bind_text(st, 3, r->git_commit);
		if (sqlite3_step(st) == SQLITE_ROW) {
			*out_id = sqlite3_column_int64(st, 0);
			existing = true;
		}
		sqlite3_reset(st);
	}
	if (*out_id == 0 && (rc = insert_queued(s, out_id, r)) != 0)
		goto fail;
	if (forge && delivery_id) {
		sqlite3_stmt *st = store_cached(
		        s, "UPDATE deliveries SET run_id = ? WHERE forge = ? AND id = ?");

		if (st == NULL) {
			rc = MLP_EDB;
			goto fail;
		}
		sqlite3_bind_int64(st, 1, *out_id);
		store_bind_text(st, 2, forge);
		store_bind_text(st, 3, delivery_id);
		if ((rc = store_exec_cached(s, st, "recording a delivery")) != 0)
			goto fail;
	}
	if ((rc = mlp_store_commit(s)) != 0)
		goto fail;
	return existing ? MLP_EEXISTS : 0;
fail:
	mlp_store_rollback(s);
	return rc;
}

int mlp_store_latest_commit(char **out, struct mlp_store *s, const char *project, const char *ref)
{
	sqlite3_stmt *st =
	        store_prepare(s, "SELECT git_commit FROM runs WHERE project = ? AND git_ref = ?"
	                         " AND git_commit IS NOT NULL ORDER BY id DESC LIMIT 1");
	int rc;

	*out = NULL;
	if (st == NULL)
		return MLP_EDB;
	store_bind_text(st, 1, project);
	store_bind_text(st, 2, ref);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*out = store_column_text(st, 0);
	sqlite3_finalize(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return store_fail(s, "reading the latest run of a branch");
	return 0;
}

int mlp_store_delivery_ignore(struct mlp_store *s, const char *forge, const char *delivery_id,
                              const char *project, const char *reason)
{
	int64_t run = 0;

	return insert_delivery(s, &run, forge, delivery_id, project, "ignored", reason);
}

int mlp_store_run_set_pipeline(struct mlp_store *s, int64_t run_id,
                               const struct mlp_run_source *src)
{
	sqlite3_stmt *st = store_prepare(
	        s, "UPDATE runs SET pipeline = ?, pipeline_text = ?, pipeline_sha256 = ?,"
	           " workspace = ?, git_commit = ?, git_author = ?, git_message = ? WHERE id = ?");

	if (st == NULL)
		return MLP_EDB;
	store_bind_text(st, 1, src->pipeline);
	store_bind_text(st, 2, src->text);
	store_bind_text(st, 3, src->sha256);
	store_bind_text(st, 4, src->workspace);
	store_bind_text(st, 5, src->git_commit);
	store_bind_text(st, 6, src->git_author);
	store_bind_text(st, 7, src->git_message);
	sqlite3_bind_int64(st, 8, run_id);
	return store_exec_stmt(s, st, "recording the run's pipeline");
}

#define QUEUE_COLUMNS                                                            \
	"id, status, project, pipeline, schedule, trigger, git_commit, git_ref," \
	" git_author, git_message, exec_attempts, exec_pid, cancel_requested, queued_at"

static void read_queued(struct mlp_queued_run *r, sqlite3_stmt *st)
{
	char *status = store_column_text(st, 1);

	memset(r, 0, sizeof(*r));
	r->id = sqlite3_column_int64(st, 0);
	if (status == NULL || mlp_status_parse(&r->status, status) != 0)
		r->status = MLP_STATUS_INTERRUPTED;
	free(status);
	r->project = store_column_text(st, 2);
	r->pipeline = store_column_text(st, 3);
	r->schedule = store_column_text(st, 4);
	r->trigger = store_column_text(st, 5);
	r->git_commit = store_column_text(st, 6);
	r->git_ref = store_column_text(st, 7);
	r->git_author = store_column_text(st, 8);
	r->git_message = store_column_text(st, 9);
	r->exec_attempts = sqlite3_column_int(st, 10);
	r->exec_pid = sqlite3_column_int64(st, 11);
	r->cancel_requested = sqlite3_column_int(st, 12) != 0;
	r->queued_at = sqlite3_column_int64(st, 13);
}

int mlp_store_queue_list(struct mlp_queued_run **out, size_t *n, struct mlp_store *s)
{
	return mlp_store_queue_list_next(out, n, s, INT_MAX);
}

/* Two halves, each on the index on (status, id): the few running and
 * interrupted runs, and (only when there is room, ?1 > 0, a constant
 * SQLite tests before it reads a row) the window over the queued ones that
 * keeps a backlog of thousands from being read whole each time the
 * dispatcher looks, which is after every delivery: hence also cached. */
static const char next_sql[] =
        "SELECT " QUEUE_COLUMNS " FROM runs WHERE status IN ('running', 'interrupted')"
        " AND queued_at IS NOT NULL UNION ALL SELECT " QUEUE_COLUMNS " FROM runs"
        " WHERE ?1 > 0 AND status = 'queued' AND queued_at IS NOT NULL AND id IN"
        " (SELECT id FROM (SELECT id, row_number() OVER (PARTITION BY"
        " coalesce(project, id) ORDER BY id) AS k FROM runs WHERE ?1 > 0 AND"
        " status = 'queued' AND queued_at IS NOT NULL) WHERE k <= ?1) ORDER BY 1";

int mlp_store_queue_list_next(struct mlp_queued_run **out, size_t *n, struct mlp_store *s,
                              int per_project)
{
	sqlite3_stmt *st = store_cached(s, next_sql);
	struct mlp_queued_run *r = NULL;
	size_t len = 0, cap = 0;
	int rc;

	*out = NULL;
	*n = 0;
	if (st == NULL)
		return MLP_EDB;
	sqlite3_bind_int(st, 1, per_project);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		xgrow((void **)&r, &cap, len + 1, sizeof(*r));
		read_queued(&r[len++], st);
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		mlp_queued_run_free_all(r, len);
		return store_fail(s, "listing queued runs");
	}
	*out = r;
	*n = len;
	return 0;
}

int mlp_store_queued_run_get(struct mlp_queued_run *out, struct mlp_store *s, int64_t run_id)
{
	sqlite3_stmt *st = store_prepare(s, "SELECT " QUEUE_COLUMNS " FROM runs WHERE id = ?");
	int rc;

	memset(out, 0, sizeof(*out));
	if (st == NULL)
		return MLP_EDB;
	sqlite3_bind_int64(st, 1, run_id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		read_queued(out, st);
	sqlite3_finalize(st);
	if (rc == SQLITE_ROW)
		return 0;
	if (rc == SQLITE_DONE) {
		mlp_error_set("no run %lld", (long long)run_id);
		return MLP_ENOTFOUND;
	}
	return store_fail(s, "reading a run");
}

void mlp_queued_run_clear(struct mlp_queued_run *r)
{
	free(r->project);
	free(r->pipeline);
	free(r->schedule);
	free(r->trigger);
	free(r->git_commit);
	free(r->git_ref);
	free(r->git_author);
	free(r->git_message);
	memset(r, 0, sizeof(*r));
}

void mlp_queued_run_free_all(struct mlp_queued_run *r, size_t n)
{
	for (size_t i = 0; i < n; i++)
		mlp_queued_run_clear(&r[i]);
	free(r);
}

int mlp_store_run_cancel(int64_t *out_pid, struct mlp_store *s, int64_t run_id)
{
	struct mlp_queued_run r;
	sqlite3_stmt *st;
	int rc;

	*out_pid = 0;
	if ((rc = mlp_store_begin(s)) != 0)
		return rc;
	if ((rc = mlp_store_queued_run_get(&r, s, run_id)) != 0)
		goto fail;
	if (r.status == MLP_STATUS_QUEUED || r.status == MLP_STATUS_INTERRUPTED) {
		st = store_prepare(
		        s,
		        "UPDATE runs SET status = 'cancelled', ended_at = ?2, exit_code = 143,"
		        " message = 'cancelled before it ran', cancel_requested = 1 WHERE id = ?1");
	} else if (r.status == MLP_STATUS_RUNNING) {
		st = store_prepare(s, "UPDATE runs SET cancel_requested = 1 WHERE id = ?1");
		*out_pid = r.exec_pid;
	} else {
		mlp_error_set("run %lld has already ended (%s)", (long long)run_id,
		              mlp_status_name(r.status));
		mlp_queued_run_clear(&r);
		rc = MLP_EINVAL;
		goto fail;
	}
	mlp_queued_run_clear(&r);
	if (st == NULL) {
		rc = MLP_EDB;
		goto fail;
	}
	sqlite3_bind_int64(st, 1, run_id);
	if (sqlite3_bind_parameter_count(st) >= 2)
		sqlite3_bind_int64(st, 2, mlp_wall_ms());
	if ((rc = store_exec_stmt(s, st, "cancelling a run")) != 0)
		goto fail;
	return mlp_store_commit(s);
fail:
	mlp_store_rollback(s);
	return rc;
}

int mlp_store_run_abandon(struct mlp_store *s, int64_t run_id, const char *message)
{
	sqlite3_stmt *st = store_prepare(
	        s, "UPDATE runs SET status = 'failed', exit_code = 1, message = ?,"
	           " ended_at = coalesce(ended_at, ?) WHERE id = ? AND status = 'interrupted'");

	if (st == NULL)
		return MLP_EDB;
	store_bind_text(st, 1, message);
	sqlite3_bind_int64(st, 2, mlp_wall_ms());
	sqlite3_bind_int64(st, 3, run_id);
	return store_exec_stmt(s, st, "giving up on a run");
}

/* ---- projects ------------------------------------------------------------- */

int mlp_store_project_add(struct mlp_store *s, const struct mlp_project *p)
{
	sqlite3_stmt *st = store_prepare(
	        s, "INSERT INTO projects (name, remote, branches, pipeline_path, secret_file,"
	           " secret_env, token_file, ssh_key_file, created_at)"
	           " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)");
	int rc;

	if (st == NULL)
		return MLP_EDB;
	store_bind_text(st, 1, p->name);
	store_bind_text(st, 2, p->remote);
	store_bind_text(st, 3, p->branches);
	store_bind_text(st, 4, p->pipeline_path);
	store_bind_text(st, 5, p->secret_file);
	store_bind_text(st, 6, p->secret_env);
	store_bind_text(st, 7, p->token_file);
	store_bind_text(st, 8, p->ssh_key_file);
	sqlite3_bind_int64(st, 9, mlp_wall_ms());
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc == SQLITE_CONSTRAINT) {
		mlp_error_set("project '%s' exists already", p->name);
		return MLP_EEXISTS;
	}
	if (rc != SQLITE_DONE)
		return store_fail(s, "adding a project");
	return 0;
}

int mlp_store_project_remove(struct mlp_store *s, const char *name)
{
	sqlite3_stmt *st = store_prepare(s, "DELETE FROM projects WHERE name = ?");
	int rc;

	if (st == NULL)
		return MLP_EDB;
	store_bind_text(st, 1, name);
	if ((rc = store_exec_stmt(s, st, "removing a project")) != 0)
		return rc;
	if (sqlite3_changes(s->db) == 0) {
		mlp_error_set("no project '%s'", name);
		return MLP_ENOTFOUND;
	}
	return 0;
}

int mlp_store_projects_list(struct mlp_project **out, size_t *n, struct mlp_store *s)
{
	sqlite3_stmt *st = store_prepare(
	        s, "SELECT name, remote, branches, pipeline_path, secret_file, secret_env,"
	           " token_file, ssh_key_file, created_at FROM projects ORDER BY name");
	struct mlp_project *p = NULL;
	size_t len = 0, cap = 0;
	int rc;

	*out = NULL;
	*n = 0;
	if (st == NULL)
		return MLP_EDB;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct mlp_project *x;

		xgrow((void **)&p, &cap, len + 1, sizeof(*p));
		x = &p[len++];
		x->name = store_column_text(st, 0);
		x->remote = store_column_text(st, 1);
		x->branches = store_column_text(st, 2);
		x->pipeline_path = store_column_text(st, 3);
		x->secret_file = store_column_text(st, 4);
		x->secret_env = store_column_text(st, 5);
		x->token_file = store_column_text(st, 6);
		x->ssh_key_file = store_column_text(st, 7);
		x->created_at = sqlite3_column_int64(st, 8);
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		mlp_project_free_all(p, len);
		return store_fail(s, "listing projects");
	}
	*out = p;
	*n = len;
	return 0;
}

void mlp_project_free_all(struct mlp_project *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(p[i].name);
		free(p[i].remote);
		free(p[i].branches);
		free(p[i].pipeline_path);
		free(p[i].secret_file);
		free(p[i].secret_env);
		free(p[i].token_file);
		free(p[i].ssh_key_file);
	}
	free(p);
}

const char *mlp_project_default_branch(const struct mlp_project *p, char *buf, size_t size)
{
	const char *b = p->branches ? p->branches : "";
	size_t len = strcspn(b, ",");

	if (len == 0 || len >= size || memchr(b, '*', len) || memchr(b, '?', len) ||
	    memchr(b, '[', len))
		return "main";
	memcpy(buf, b, len);
	buf[len] = '\0';
	return buf;
}

char *mlp_project_mirror(const struct mlp_store *s, const char *name)
{
	return xasprintf("%s/mirrors/%s.git", mlp_store_data_dir(s), name);
}

/* ---- schedules ------------------------------------------------------------ */

int mlp_store_schedule_last(int64_t *out, struct mlp_store *s, const char *key)
{
	sqlite3_stmt *st = store_prepare(s, "SELECT last_fire FROM schedules WHERE key = ?");
	int rc;

	*out = 0;
	if (st == NULL)
		return MLP_EDB;
	store_bind_text(st, 1, key);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*out = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return store_fail(s, "reading a schedule");
	return 0;
}

int mlp_store_schedule_fire(int64_t *out_id, struct mlp_store *s, const char *key, int64_t fired_at,
                            const struct mlp_run_queued *r)
{
	sqlite3_stmt *st;
	int rc;

	*out_id = 0;
	if ((rc = mlp_store_begin(s)) != 0)
		return rc;
	st = store_cached(s, "INSERT OR REPLACE INTO schedules (key, last_fire) VALUES (?, ?)");
	if (st == NULL) {
		rc = MLP_EDB;
		goto fail;
	}
	store_bind_text(st, 1, key);
	sqlite3_bind_int64(st, 2, fired_at);
	if ((rc = store_exec_cached(s, st, "recording a schedule's fire")) != 0)
		goto fail;
	if (r && (rc = insert_queued(s, out_id, r)) != 0)
		goto fail;
	if ((rc = mlp_store_commit(s)) != 0)
		goto fail;
	return 0;
fail:
	mlp_store_rollback(s);
	return rc;
}

int mlp_store_schedule_active(int64_t *out_id, struct mlp_store *s, const char *key)
{
	sqlite3_stmt *st = store_prepare(
	        s, "SELECT id FROM runs WHERE schedule = ? AND status IN ('queued', 'running')"
	           " ORDER BY id LIMIT 1");
	int rc;

	*out_id = 0;
	if (st == NULL)
		return MLP_EDB;
	store_bind_text(st, 1, key);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*out_id = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return store_fail(s, "reading a schedule's runs");
	return 0;
}

/* ---- tokens --------------------------------------------------------------- */

int mlp_store_token_create(struct mlp_store *s, const char *name, const char *sha256_hex,
                           const char *scopes)
{
	sqlite3_stmt *st = store_prepare(
	        s, "INSERT INTO api_tokens (name, sha256, created_at, scopes) VALUES (?, ?, ?, ?)");
	int rc;

	if (st == NULL)
		return MLP_EDB;
	store_bind_text(st, 1, name);
	store_bind_text(st, 2, sha256_hex);
	sqlite3_bind_int64(st, 3, mlp_wall_ms());
	store_bind_text(st, 4, scopes ? scopes : "all");
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc == SQLITE_CONSTRAINT) {
		mlp_error_set("a token named '%s' exists already", name);
		return MLP_EEXISTS;
	}
	if (rc != SQLITE_DONE)
		return store_fail(s, "creating a token");
	return 0;
}

int mlp_store_token_check(char **out_name, char **out_scopes, struct mlp_store *s,
                          const char *sha256_hex)
{
	sqlite3_stmt *st = store_cached(s, "SELECT name, sha256, scopes FROM api_tokens");
	size_t len = strlen(sha256_hex);
	char *found = NULL, *scopes = NULL;
	int rc;

	if (out_name)
		*out_name = NULL;
	if (out_scopes)
		*out_scopes = NULL;
	if (st == NULL)
		return MLP_EDB;
	/* Every row is compared, in constant time, whichever matches. */
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *h = (const char *)sqlite3_column_text(st, 1);

		if (h && strlen(h) == len && mlp_equal_ct(h, sha256_hex, len) && found == NULL) {
			found = store_column_text(st, 0);
			scopes = store_column_text(st, 2);
		}
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		free(found);
		free(scopes);
		return store_fail(s, "checking a token");
	}
	if (found == NULL)
		return MLP_ENOTFOUND;
	if (out_name)
		*out_name = found;
	else
		free(found);
	if (out_scopes)
		*out_scopes = scopes;
	else
		free(scopes);
	return 0;
}

/* ---- counts for /metrics -------------------------------------------------- */

int mlp_store_counts(struct mlp_count **out, size_t *n, struct mlp_store *s,
                     enum mlp_count_kind kind)
{
	const char *sql = NULL;
	sqlite3_stmt *st = NULL;
	struct mlp_count *c = NULL;
	size_t len = 0, cap = 0;
	int rc, ncol;

	*out = NULL;
	*n = 0;
	switch (kind) {
	case MLP_COUNT_RUNS_BY_STATUS:
		sql = "SELECT status, NULL, NULL, count(*) FROM runs GROUP BY status";
		break;
	case MLP_COUNT_DELIVERIES_BY_RESULT:
		/* A delivery of a commit that already had a run points at that
		 * run as "queued" too: only the one that queued a webhook's run
		 * counts as queued (the others are duplicates, counted by serve). */
		sql = "SELECT result, NULL, NULL, count(*) FROM deliveries"
		      " WHERE result <> 'queued' OR run_id IS NULL OR rowid IN"
		      "  (SELECT min(d.rowid) FROM deliveries d JOIN runs r ON r.id = d.run_id"
		      "   WHERE d.result = 'queued' AND r.trigger = 'webhook' GROUP BY d.run_id)"
		      " GROUP BY result";
		break;
	case MLP_COUNT_GATE_DECISIONS:
		sql = "SELECT CASE passed WHEN 1 THEN 'passed' ELSE 'failed' END, NULL, NULL,"
		      " count(*) FROM gate_decisions GROUP BY passed";
		break;
	case MLP_COUNT_ROLLOUTS_BY_RESULT:
		sql = "SELECT result, kind, NULL, count(*) FROM deployments"
		      " GROUP BY kind, result ORDER BY kind DESC, result";
		break;
	case MLP_COUNT_DEPLOYED_METRICS:
		sql = "SELECT v.model, m.name, v.version, m.value FROM model_versions v"
		      " JOIN model_metrics m ON m.version_id = v.id"
		      " WHERE v.status = 'deployed' AND v.version = (SELECT max(version)"
		      "  FROM model_versions w WHERE w.model = v.model AND w.status = 'deployed')"
		      " ORDER BY v.model, m.name";
		break;
	case MLP_COUNT_VERSION_METRICS:
		/* The versions above the model's (?1 + 1)-th newest, 0 when it
		 * has no more than ?1: (model, version) is unique, so indexed,
		 * and that is a short walk down the index from its end. */
		sql = "SELECT v.model, v.version, m.name, v.status, m.value FROM model_versions v"
		      " JOIN model_metrics m ON m.version_id = v.id"
		      " WHERE v.version > coalesce((SELECT w.version FROM model_versions w"
		      "  WHERE w.model = v.model ORDER BY w.version DESC LIMIT 1 OFFSET ?1), 0)"
		      " ORDER BY v.model, v.version, m.name";
		break;
	case MLP_COUNT_STAGE_KINDS:
		sql = "SELECT kind, NULL, NULL, count(*) FROM stages WHERE started_at IS NOT NULL"
		      " AND ended_at IS NOT NULL AND attempt > 0 GROUP BY kind ORDER BY kind";
		break;
	}
	if ((st = store_prepare(s, sql)) == NULL)
		return MLP_EDB;
	if (kind == MLP_COUNT_VERSION_METRICS)
		sqlite3_bind_int(st, 1, MLP_VERSION_METRICS_MAX);
	/* The labels come first, the value last. */
	ncol = sqlite3_column_count(st);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		char **labels[4];

		xgrow((void **)&c, &cap, len + 1, sizeof(*c));
		memset(&c[len], 0, sizeof(c[len]));
		labels[0] = &c[len].label;
		labels[1] = &c[len].label2;
		labels[2] = &c[len].label3;
		labels[3] = &c[len].label4;
		for (int i = 0; i + 1 < ncol && i < (int)MLP_ARRAY_SIZE(labels); i++)
			*labels[i] = store_column_text(st, i);
		c[len].value = sqlite3_column_double(st, ncol - 1);
		if (c[len].label == NULL)
			c[len].label = xstrdup("");
		len++;
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		mlp_count_free_all(c, len);
		return store_fail(s, "counting for metrics");
	}
	*out = c;
	*n = len;
	return 0;
}

void mlp_count_free_all(struct mlp_count *c, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(c[i].label);
		free(c[i].label2);
		free(c[i].label3);
		free(c[i].label4);
	}
	free(c);
}

int mlp_store_stage_durations(double *out_sum, struct mlp_store *s, const char *stage_kind,
                              const double *bounds, size_t nbounds, uint64_t *counts)
{
	sqlite3_stmt *st = store_prepare(
	        s, "SELECT (ended_at - started_at) / 1000.0 FROM stages"
	           " WHERE started_at IS NOT NULL AND ended_at IS NOT NULL AND attempt > 0"
	           " AND (?1 IS NULL OR kind = ?1)");
	int rc;

	memset(counts, 0, (nbounds + 1) * sizeof(*counts));
	*out_sum = 0;
	if (st == NULL)
		return MLP_EDB;
	store_bind_text(st, 1, stage_kind);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		double d = sqlite3_column_double(st, 0);

		for (size_t i = 0; i < nbounds; i++)
			if (d <= bounds[i])
				counts[i]++;
		counts[nbounds]++;
		*out_sum += d;
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return store_fail(s, "reading stage durations");
	return 0;
}

int mlp_store_runs_count(int64_t *out, struct mlp_store *s, const char *project,
                         enum mlp_status status)
{
	sqlite3_stmt *st = store_prepare(
	        s, "SELECT count(*) FROM runs WHERE status = ?1 AND (?2 IS NULL OR project = ?2)");
	int rc;

	*out = 0;
	if (st == NULL)
		return MLP_EDB;
	store_bind_text(st, 1, mlp_status_name(status));
	store_bind_text(st, 2, project);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*out = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	if (rc != SQLITE_ROW)
		return store_fail(s, "counting runs");
	return 0;
}
