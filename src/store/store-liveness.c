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
 *
 * The lock says a run's mlpipe died; it does not stop the stages it
 * started, whose process groups outlive it.  Each attempt's group is
 * recorded (pgid, session, the leader's start time: what pid reuse cannot
 * fake) so the engine can stop them later (mlp_store_leftover_groups).
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
		/*
		 * Looked at again with the write lock held.  Since the first look
		 * a new exec-run may have claimed the run: it takes the run's lock
		 * before its claim commits, and cannot commit while this
		 * transaction is open.  Marking its run interrupted would have the
		 * run resumed by a second exec-run while the first one still runs
		 * stages: two live attempts of a stage (tests/crash/crash.sh).
		 */
		if (!store_run_owner_dead(s, dead[i])) {
			mlp_store_rollback(s);
			continue;
		}
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
		/* The lock file goes before the commit, for the same reason: once
		 * the run is committed interrupted, a new exec-run may claim it
		 * and lock this file, and a lock on a file unlinked after that is
		 * one that nobody looking at the path sees. */
		if (rc == 0) {
			path = store_run_lock_path(s, dead[i]);
			unlink(path);
			free(path);
			rc = mlp_store_commit(s);
		}
		if (rc != 0) {
			mlp_store_rollback(s);
			break;
		}
		if (out_count)
			(*out_count)++;
	}
	free(dead);
	return rc;
}

/* ---- the process groups of attempts --------------------------------------- */

int mlp_store_attempt_set_group(struct mlp_store *s, const struct mlp_attempt_group *g)
{
	sqlite3_stmt *st = store_cached(s, "UPDATE stages SET pgid = ?, pgid_session = ?,"
	                                   " pgid_start_time = ?, kill_grace_ms = ? WHERE id = ?");

	if (st == NULL)
		return MLP_EDB;
	sqlite3_bind_int64(st, 1, g->pgid);
	sqlite3_bind_int64(st, 2, g->session);
	sqlite3_bind_int64(st, 3, g->start_time);
	sqlite3_bind_int64(st, 4, g->kill_grace_ms);
	sqlite3_bind_int64(st, 5, g->attempt_id);
	return store_exec_cached(s, st, "recording a stage's process group");
}

int mlp_store_leftover_groups(struct mlp_attempt_group **out, size_t *n, struct mlp_store *s,
                              int64_t run_id)
{
	sqlite3_stmt *st = store_prepare(
	        s, "SELECT id, run_id, stage, attempt, pgid, pgid_session, pgid_start_time,"
	           " kill_grace_ms FROM stages WHERE status = 'interrupted' AND pgid IS NOT NULL"
	           " AND (?1 = 0 OR run_id = ?1) ORDER BY id");
	struct mlp_attempt_group *g = NULL;
	size_t len = 0, cap = 0;
	int rc;

	*out = NULL;
	*n = 0;
	if (st == NULL)
		return MLP_EDB;
	sqlite3_bind_int64(st, 1, run_id);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct mlp_attempt_group *x;

		xgrow((void **)&g, &cap, len + 1, sizeof(*g));
		x = &g[len++];
		x->attempt_id = sqlite3_column_int64(st, 0);
		x->run_id = sqlite3_column_int64(st, 1);
		x->stage = store_column_text(st, 2);
		x->attempt = sqlite3_column_int(st, 3);
		x->pgid = sqlite3_column_int64(st, 4);
		x->session = sqlite3_column_int64(st, 5);
		x->start_time = sqlite3_column_int64(st, 6);
		x->kill_grace_ms = sqlite3_column_int64(st, 7);
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		mlp_attempt_group_free_all(g, len);
		return store_fail(s, "listing the process groups of interrupted attempts");
	}
	*out = g;
	*n = len;
	return 0;
}

int mlp_store_attempt_clear_group(struct mlp_store *s, int64_t attempt_id)
{
	sqlite3_stmt *st = store_cached(s, "UPDATE stages SET pgid = NULL WHERE id = ?");

	if (st == NULL)
		return MLP_EDB;
	sqlite3_bind_int64(st, 1, attempt_id);
	return store_exec_cached(s, st, "forgetting a stage's process group");
}

void mlp_attempt_group_free_all(struct mlp_attempt_group *g, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(g[i].stage);
	free(g);
}
