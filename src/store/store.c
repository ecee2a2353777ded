/*
 * store.c - opening the database, migrations and transactions (store.h).
 *
 * Why the pragmas: WAL lets `mlpipe runs` read while a pipeline writes;
 * synchronous=NORMAL in WAL mode is still crash-safe for the database (a
 * power cut may lose the last commits, never corrupt) and keeps a stage
 * hand-off from waiting on fsync; the busy timeout turns a concurrent
 * writer into a short wait rather than an error.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"
#include "store/store-int.h"
#include "store/store-runs.h"
#include "base/util.h"

#define BUSY_TIMEOUT_MS 5000

int store_fail(struct mlp_store *s, const char *doing)
{
	int code = sqlite3_errcode(s->db);

	if (code == SQLITE_BUSY || code == SQLITE_LOCKED)
		mlp_error_set("%s: database %s is locked by another process (waited %d ms)", doing,
		              s->path, s->busy_timeout_ms);
	else if (code == SQLITE_READONLY)
		mlp_error_set("%s: database %s is read-only", doing, s->path);
	else
		mlp_error_set("%s: %s (database %s)", doing, sqlite3_errmsg(s->db), s->path);
	return MLP_EDB;
}

sqlite3_stmt *store_prepare(struct mlp_store *s, const char *sql)
{
	sqlite3_stmt *st = NULL;

	if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) {
		store_fail(s, "preparing a query");
		return NULL;
	}
	return st;
}

int store_exec_stmt(struct mlp_store *s, sqlite3_stmt *st, const char *doing)
{
	int rc = sqlite3_step(st);

	if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
		store_fail(s, doing);
		sqlite3_finalize(st);
		return MLP_EDB;
	}
	sqlite3_finalize(st);
	return 0;
}

sqlite3_stmt *store_cached(struct mlp_store *s, const char *sql)
{
	sqlite3_stmt *st = NULL;

	for (size_t i = 0; i < s->ncache; i++) {
		if (s->cache[i].sql == sql) {
			sqlite3_reset(s->cache[i].st);
			sqlite3_clear_bindings(s->cache[i].st);
			return s->cache[i].st;
		}
	}
	if (sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK) {
		store_fail(s, "preparing a query");
		sqlite3_finalize(st);
		return NULL;
	}
	xgrow((void **)&s->cache, &s->cache_cap, s->ncache + 1, sizeof(*s->cache));
	s->cache[s->ncache].sql = sql;
	s->cache[s->ncache].st = st;
	s->ncache++;
	return st;
}

int store_exec_cached(struct mlp_store *s, sqlite3_stmt *st, const char *doing)
{
	int rc = sqlite3_step(st);

	if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
		store_fail(s, doing);
		sqlite3_reset(st);
		return MLP_EDB;
	}
	sqlite3_reset(st);
	return 0;
}

void store_bind_text(sqlite3_stmt *st, int i, const char *v)
{
	if (v)
		sqlite3_bind_text(st, i, v, -1, SQLITE_TRANSIENT);
	else
		sqlite3_bind_null(st, i);
}

void store_bind_id(sqlite3_stmt *st, int i, int64_t id)
{
	if (id > 0)
		sqlite3_bind_int64(st, i, id);
	else
		sqlite3_bind_null(st, i);
}

char *store_column_text(sqlite3_stmt *st, int col)
{
	const unsigned char *t = sqlite3_column_text(st, col);

	return t ? xstrdup((const char *)t) : NULL;
}

char *store_run_lock_path(const struct mlp_store *s, int64_t run_id)
{
	return xasprintf("%s/locks/run-%lld.lock", s->data_dir, (long long)run_id);
}

static int exec_sql(struct mlp_store *s, const char *sql, const char *doing)
{
	if (sqlite3_exec(s->db, sql, NULL, NULL, NULL) != SQLITE_OK)
		return store_fail(s, doing);
	return 0;
}

int mlp_store_begin(struct mlp_store *s)
{
	return exec_sql(s, "BEGIN IMMEDIATE", "starting a transaction");
}

int mlp_store_commit(struct mlp_store *s)
{
	return exec_sql(s, "COMMIT", "committing");
}

void mlp_store_rollback(struct mlp_store *s)
{
	if (!sqlite3_get_autocommit(s->db))
		sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
}

void mlp_store_no_autocheckpoint(struct mlp_store *s)
{
	sqlite3_wal_autocheckpoint(s->db, 0);
}

int mlp_store_checkpoint(int *out_frames, struct mlp_store *s)
{
	int log = 0, done = 0;

	*out_frames = 0;
	if (sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &done) !=
	    SQLITE_OK)
		return store_fail(s, "checkpointing the write-ahead log");
	*out_frames = done > 0 ? done : 0;
	return 0;
}

int mlp_store_schema_version(int *out, struct mlp_store *s)
{
	sqlite3_stmt *st = store_prepare(s, "PRAGMA user_version");
	int rc;

	if (st == NULL)
		return MLP_EDB;
	rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		store_fail(s, "reading the schema version");
		sqlite3_finalize(st);
		return MLP_EDB;
	}
	*out = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return 0;
}

int mlp_store_schema_latest(void)
{
	return mlp_store_migrations[mlp_store_nmigrations - 1].version;
}

static int migrate(struct mlp_store *s)
{
	int version, rc;

	if ((rc = mlp_store_schema_version(&version, s)) != 0)
		return rc;
	if (version > mlp_store_schema_latest()) {
		mlp_error_set("database %s has schema version %d, newer than this mlpipe "
		              "knows (%d): upgrade mlpipe",
		              s->path, version, mlp_store_schema_latest());
		return MLP_EDB;
	}
	if (version == mlp_store_schema_latest())
		return 0;
	if (s->readonly) {
		mlp_error_set("database %s is read-only and needs an upgrade to schema "
		              "version %d",
		              s->path, mlp_store_schema_latest());
		return MLP_EDB;
	}
	if ((rc = mlp_store_begin(s)) != 0)
		return rc;
	/* Read again under the write lock: another process may have migrated. */
	if ((rc = mlp_store_schema_version(&version, s)) != 0)
		goto fail;
	for (size_t i = 0; i < mlp_store_nmigrations; i++) {
		const struct mlp_migration *m = &mlp_store_migrations[i];
		char *pragma;

		if (m->version <= version)
			continue;
		if (sqlite3_exec(s->db, m->sql, NULL, NULL, NULL) != SQLITE_OK) {
			char *doing = xasprintf("migrating to schema version %d (%s)", m->version,
			                        m->what);

			rc = store_fail(s, doing);
			free(doing);
			goto fail;
		}
		pragma = xasprintf("PRAGMA user_version = %d", m->version);
		rc = exec_sql(s, pragma, "recording the schema version");
		free(pragma);
		if (rc != 0)
			goto fail;
	}
	return mlp_store_commit(s);
fail:
	mlp_store_rollback(s);
	return rc;
}

int mlp_store_default_path(char **out)
{
	const char *env = getenv("MLPIPE_DB");
	const char *xdg = getenv("XDG_DATA_HOME");
	const char *home = getenv("HOME");

	if (env && *env) {
		*out = xstrdup(env);
		return 0;
	}
	if (xdg && xdg[0] == '/') {
		*out = xasprintf("%s/mlpipe/mlpipe.db", xdg);
		return 0;
	}
	if (home && *home) {
		*out = xasprintf("%s/.local/share/mlpipe/mlpipe.db", home);
		return 0;
	}
	mlp_error_set("cannot find a place for the database: set MLPIPE_DB or HOME");
	return MLP_EINVAL;
}

int mlp_store_open(struct mlp_store **out, const char *path, int flags)
{
	struct mlp_store *s = xcalloc(1, sizeof(*s));
	int rc;

	*out = NULL;
	s->run_lock_fd = -1;
	if (path)
		s->path = xstrdup(path);
	else if ((rc = mlp_store_default_path(&s->path)) != 0)
		goto fail;
	s->data_dir = mlp_dirname(s->path);
	if (access(s->path, F_OK) != 0 && (rc = mlp_mkdirs(s->data_dir, 0755)) != 0) {
		rc = MLP_EDB;
		goto fail;
	}
	if (sqlite3_open_v2(s->path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
	    SQLITE_OK) {
		if (s->db == NULL) {
			mlp_error_set("cannot open database %s: out of memory", s->path);
			rc = MLP_EDB;
		} else {
			mlp_error_set("cannot open database %s: %s", s->path,
			              sqlite3_errmsg(s->db));
			rc = MLP_EDB;
		}
		goto fail;
	}
	sqlite3_extended_result_codes(s->db, 0);
	s->busy_timeout_ms = BUSY_TIMEOUT_MS;
	{
		/* Tests shorten the wait for a locked database. */
		const char *t = getenv("MLPIPE_DB_BUSY_TIMEOUT_MS");
		long long v;

		if (t && mlp_parse_int(&v, t, 0, 600000) == 0)
			s->busy_timeout_ms = (int)v;
	}
	sqlite3_busy_timeout(s->db, s->busy_timeout_ms);
	s->readonly = sqlite3_db_readonly(s->db, "main") == 1;
	if (s->readonly && !(flags & MLP_STORE_READONLY)) {
		mlp_error_set("database %s is read-only", s->path);
		rc = MLP_EDB;
		goto fail;
	}
	/* Touch the file first: a file that is not a database fails here with
	 * a message that says so, rather than in a pragma. */
	{
		int version;

		if ((rc = mlp_store_schema_version(&version, s)) != 0)
			goto fail;
	}
	if (!s->readonly &&
	    ((rc = exec_sql(s, "PRAGMA journal_mode=WAL", "enabling WAL")) != 0 ||
	     (rc = exec_sql(s, "PRAGMA synchronous=NORMAL", "setting synchronous")) != 0))
		goto fail;
	if ((rc = exec_sql(s, "PRAGMA foreign_keys=ON", "enabling foreign keys")) != 0)
		goto fail;
	if ((rc = migrate(s)) != 0)
		goto fail;
	if (!s->readonly && (rc = mlp_store_recover(NULL, s)) != 0)
		goto fail;
	*out = s;
	return 0;
fail:
	mlp_store_close(s);
	return rc;
}

void mlp_store_close(struct mlp_store *s)
{
	if (s == NULL)
		return;
	if (s->run_lock_fd >= 0)
		close(s->run_lock_fd);
	for (size_t i = 0; i < s->ncache; i++)
		sqlite3_finalize(s->cache[i].st);
	free(s->cache);
	sqlite3_close(s->db);
	free(s->path);
	free(s->data_dir);
	free(s);
}

const char *mlp_store_path(const struct mlp_store *s)
{
	return s->path;
}

const char *mlp_store_data_dir(const struct mlp_store *s)
{
	return s->data_dir;
}

int store_savepoint(struct mlp_store *s, const char *what)
{
	if (sqlite3_exec(s->db, "SAVEPOINT mlp_models", NULL, NULL, NULL) != SQLITE_OK)
		return store_fail(s, what);
	return 0;
}

int store_release(struct mlp_store *s, const char *what)
{
	if (sqlite3_exec(s->db, "RELEASE mlp_models", NULL, NULL, NULL) != SQLITE_OK) {
		int rc = store_fail(s, what);

		sqlite3_exec(s->db, "ROLLBACK TO mlp_models", NULL, NULL, NULL);
		sqlite3_exec(s->db, "RELEASE mlp_models", NULL, NULL, NULL);
		return rc;
	}
	return 0;
}

void store_rollback_to(struct mlp_store *s)
{
	sqlite3_exec(s->db, "ROLLBACK TO mlp_models", NULL, NULL, NULL);
	sqlite3_exec(s->db, "RELEASE mlp_models", NULL, NULL, NULL);
}
