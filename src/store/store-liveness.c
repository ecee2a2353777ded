/*
 * store-liveness.c - whether a run's mlpipe process is alive, and marking
 * the runs of dead ones interrupted (mlp_store_recover, which opening the
 * store calls).
 *
 * A run being executed holds an exclusive flock() on locks/run-ID.lock for
 * as long as its mlpipe process lives.  The kernel drops the lock when the
 * process dies, however it dies (kill -9 too), so "running in the database
 * but nobody holds the lock" means interrupted.  A lock, unlike a stored
 * pid, cannot be fooled by pid reuse.  store.c (open) and store-runs.c
 * (create, claim) both build on this file, which builds on neither.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "base/error.h"
#include "base/util.h"
#include "store/store-int.h"
#include "store/store-runs.h"

int store_take_run_lock(struct mlp_store *s, int64_t run_id)
{
	char *dir = xasprintf("%s/locks", s->data_dir);
	char *path = store_run_lock_path(s, run_id);
	int fd = -1, rc = MLP_EIO;

	if (mlp_mkdirs(dir, 0755) != 0)
		goto done;
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0) {
		mlp_error_set_errno(errno, "cannot create %s", path);
		goto done;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		mlp_error_set_errno(errno, "cannot lock %s", path);
		close(fd);
		goto done;
	}
	if (s->run_lock_fd >= 0)
		close(s->run_lock_fd);
	s->run_lock_fd = fd;
	s->run_lock_id = run_id;
	rc = 0;
done:
	free(dir);
	free(path);
	return rc;
}

bool store_run_owner_dead(struct mlp_store *s, int64_t run_id)
{
	char *path;
	int fd;
	bool dead;

	if (s->run_lock_fd >= 0 && s->run_lock_id == run_id)
		return false;
	path = store_run_lock_path(s, run_id);
	fd = open(path, O_RDWR | O_CLOEXEC);
	free(path);
	if (fd < 0)
		return errno == ENOENT;
	dead = flock(fd, LOCK_EX | LOCK_NB) == 0;
	close(fd);
	return dead;
}

int mlp_store_recover(int *out_count, struct mlp_store *s)
{
	sqlite3_stmt *st = store_prepare(s, "SELECT id FROM runs WHERE status = 'running'");
	int64_t *dead = NULL;
	size_t ndead = 0, cap = 0;
	int rc = 0;

	if (out_count)
		*out_count = 0;
	if (st == NULL)
		return MLP_EDB;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		int64_t id = sqlite3_column_int64(st, 0);

		if (store_run_owner_dead(s, id)) {
			xgrow((void **)&dead, &cap, ndead + 1, sizeof(*dead));
			dead[ndead++] = id;
		}
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		free(dead);
		return store_fail(s, "listing running runs");
	}
	rc = 0;
	for (size_t i = 0; i < ndead && rc == 0; i++) {
		int64_t now = mlp_wall_ms();
		char *path;

		if ((rc = mlp_store_begin(s)) != 0)
			break;
		st = store_prepare(s, "UPDATE runs SET status = 'interrupted', ended_at = ?,"
		                      " message = 'the mlpipe process running it died'"
		                      " WHERE id = ? AND status = 'running'");
		if (st == NULL) {
			rc = MLP_EDB;
		} else {
			sqlite3_bind_int64(st, 1, now);
			sqlite3_bind_int64(st, 2, dead[i]);
			rc = store_exec_stmt(s, st, "marking a run interrupted");
		}
		if (rc == 0) {
			st = store_prepare(s,
			                   "UPDATE stages SET status = 'interrupted', ended_at = ?"
			                   " WHERE run_id = ? AND status = 'running'");
			if (st == NULL) {
				rc = MLP_EDB;
			} else {
				sqlite3_bind_int64(st, 1, now);
				sqlite3_bind_int64(st, 2, dead[i]);
				rc = store_exec_stmt(s, st, "marking stages interrupted");
			}
		}
		if (rc == 0)
			rc = mlp_store_commit(s);
		if (rc != 0) {
			mlp_store_rollback(s);
			break;
		}
		path = store_run_lock_path(s, dead[i]);
		unlink(path);
		free(path);
		if (out_count)
			(*out_count)++;
	}
	free(dead);
	return rc;
}
