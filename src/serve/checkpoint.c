/*
 * checkpoint.c - the checkpointer thread of `mlpipe serve` (serve-int.h).
 *
 * The HTTP threads write through one connection under db_lock.  Left to
 * SQLite, the commit that takes the write-ahead log past 1000 pages copies
 * it back into the database there and then, fsyncs included (10-40 ms
 * here), with db_lock held: every webhook behind it waits, and at 64
 * concurrent deliveries that was most of the p99 (bench/webhook).  So the
 * HTTP connection never checkpoints, and this thread, on a connection of
 * its own, checkpoints PASSIVE every CHECKPOINT_MS: it neither waits for
 * nor blocks a writer, so only this thread pays for the copy.
 */
#include "config.h"

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "base/error.h"
#include "serve/serve-int.h"
#include "store/store.h"

#define CHECKPOINT_MS 200

static void wait_ms(struct serve *sv, int ms)
{
	struct timespec until;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_nsec += (long)ms * 1000000;
	until.tv_sec += until.tv_nsec / 1000000000;
	until.tv_nsec %= 1000000000;
	pthread_mutex_lock(&sv->poll_lock);
	while (!atomic_load(&sv->stopping) &&
	       pthread_cond_timedwait(&sv->poll_cond, &sv->poll_lock, &until) == 0)
		;
	pthread_mutex_unlock(&sv->poll_lock);
}

static void *checkpointer_main(void *arg)
{
	struct serve *sv = arg;
	struct mlp_store *db = NULL;
	bool said = false;

	if (mlp_store_open(&db, sv->db_path, 0) != 0) {
		serve_log(sv, "checkpointer: %s", mlp_error_last());
		return NULL;
	}
	while (!atomic_load(&sv->stopping)) {
		int frames;

		/* A failure (the disk is full) is said once; the next try may
		 * work, and until then the log only grows. */
		if (mlp_store_checkpoint(&frames, db) != 0 && !said) {
			serve_log(sv, "checkpointer: %s", mlp_error_last());
			said = true;
		}
		wait_ms(sv, CHECKPOINT_MS);
	}
	mlp_store_close(db);
	return NULL;
}

void serve_checkpointer_start(struct serve *sv)
{
	if (pthread_create(&sv->checkpointer, NULL, checkpointer_main, sv) != 0) {
		serve_log(sv, "checkpointer: cannot start a thread; commits checkpoint");
		return;
	}
	sv->checkpointer_started = true;
	mlp_store_no_autocheckpoint(sv->db);
}

void serve_checkpointer_join(struct serve *sv)
{
	if (!sv->checkpointer_started)
		return;
	serve_poller_wake(sv);
	pthread_join(sv->checkpointer, NULL);
	sv->checkpointer_started = false;
}
