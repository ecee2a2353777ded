/*
 * store.h - everything mlpipe remembers, in one SQLite file.
 *
 * The store module is the only one that includes SQLite: it owns the
 * schema, its migrations (store-migrations.c, append-only), and every
 * query.  This header opens and closes the store; each domain has a header
 * of its own (store-runs.h, store-models.h, store-queue.h,
 * store-deployments.h).  Each domain has its own file (store-runs.c: runs, stage attempts,
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

/*
 * Write-ahead log checkpoints.  By default the connection whose commit
 * makes the log pass 1000 pages copies it into the database then and
 * there, fsyncs included (10-40 ms), before its caller goes on.  A caller
 * that must not wait so (serve's HTTP threads, under one mutex) turns that
 * off for its connection and has another connection call
 * mlp_store_checkpoint() (PASSIVE: it never waits for, nor blocks, a
 * writer), which says in *out_frames how many frames it copied.
 */
void mlp_store_no_autocheckpoint(struct mlp_store *s);
int mlp_store_checkpoint(int *out_frames, struct mlp_store *s);

/* The schema version the database is at, and the newest this build knows. */
int mlp_store_schema_version(int *out, struct mlp_store *s);
int mlp_store_schema_latest(void);

#endif
