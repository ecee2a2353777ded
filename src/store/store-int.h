/*
 * store-int.h - what the store's own files share; never included outside
 * src/store*.c.  This is where sqlite3 types may appear.
 */
#ifndef MLP_STORE_INT_H
#define MLP_STORE_INT_H

#include <sqlite3.h>

#include "store/store.h"

struct mlp_store {
	sqlite3 *db;
	char *path;
	char *data_dir;
	bool readonly;
	int busy_timeout_ms;
	/* Prepared statements of the hot paths, keyed by their SQL text's
	 * address (each is a string literal); grows as queries are added. */
	struct store_cached_stmt {
		const char *sql;
		sqlite3_stmt *st;
	} * cache;
	size_t ncache;
	size_t cache_cap;
	/* The liveness lock of the run this process executes (-1: none). */
	int run_lock_fd;
	int64_t run_lock_id;
};

struct mlp_migration {
	int version;
	const char *what;
	const char *sql;
};

extern const struct mlp_migration mlp_store_migrations[];
extern const size_t mlp_store_nmigrations;

/* Sets the error message from the database's last error, naming what was
 * being done, and returns MLP_EDB. */
int store_fail(struct mlp_store *s, const char *doing);

/* Prepares sql; on failure sets the message and returns NULL. */
sqlite3_stmt *store_prepare(struct mlp_store *s, const char *sql);

/* A cached statement for sql (a string literal), reset and unbound; NULL
 * with the message set when it cannot be prepared.  Step it with
 * store_exec_cached(), never finalize it. */
sqlite3_stmt *store_cached(struct mlp_store *s, const char *sql);

/* Steps a cached statement that returns no rows, then resets it. */
int store_exec_cached(struct mlp_store *s, sqlite3_stmt *st, const char *doing);

/* Steps a statement that returns no rows, then finalizes it. */
int store_exec_stmt(struct mlp_store *s, sqlite3_stmt *st, const char *doing);

/* Binds v, or SQL NULL when v is NULL. */
void store_bind_text(sqlite3_stmt *st, int i, const char *v);
/* Binds a row id, or SQL NULL when id is 0 (no row). */
void store_bind_id(sqlite3_stmt *st, int i, int64_t id);

/* A column as a new string, or NULL for SQL NULL. */
char *store_column_text(sqlite3_stmt *st, int col);

/*
 * A savepoint inside the caller's transaction (models, gates: a
 * registration or a threshold change that fails leaves nothing behind).
 * store_release undoes and ends it when the release itself fails;
 * store_rollback_to undoes everything since store_savepoint and keeps the
 * error message.
 */
int store_savepoint(struct mlp_store *s, const char *what);
int store_release(struct mlp_store *s, const char *what);
void store_rollback_to(struct mlp_store *s);

/* store-liveness.c: takes run_id's liveness lock for this process (kept
 * in s until closed); whether nobody holds it (the run's process died). */
int store_take_run_lock(struct mlp_store *s, int64_t run_id);
bool store_run_owner_dead(struct mlp_store *s, int64_t run_id);

/* Path of the liveness lock file of a run. */
char *store_run_lock_path(const struct mlp_store *s, int64_t run_id);

#endif
