/*
 * poller.c - the git poller of `mlpipe serve`: a thread that fetches each
 * project's remote into its mirror every poll_interval and queues the
 * branch heads that moved and have no run yet (serve-int.h).  Such a run
 * is a push like a webhook's: when it starts, the pipeline at its commit
 * decides whether it wants it (its on.push, exec-run.c), the same way.
 *
 * For forges that cannot send webhooks, and to catch pushes whose
 * delivery was lost.  The thread has its own database connection; it only
 * queues and wakes the main loop, which starts the runs (dispatch.c) and
 * reads the schedules again from the fetched mirrors (schedules.c).
 */
#include "config.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/error.h"
#include "base/git.h"
#include "base/util.h"
#include "serve/serve-int.h"
#include "serve/webhook.h"
#include "store/store.h"
#include "store/store-queue.h"

static void poll_project(struct serve *sv, struct mlp_store *db, const struct mlp_project *p)
{
	char *mirror = mlp_project_mirror(db, p->name);
	struct mlp_git_creds creds = {p->token_file, p->ssh_key_file};
	char **refs = NULL, **commits = NULL;
	size_t n = 0;

	if (mlp_git_mirror_fetch(mirror, p->remote, NULL, &creds) != 0) {
		serve_log(sv, "poll %s: %s", p->name, mlp_error_last());
		goto done;
	}
	if (mlp_git_branches(&refs, &commits, &n, mirror) != 0)
		goto done;
	for (size_t i = 0; i < n; i++) {
		char *last = NULL;
		int64_t id;

		if (!mlp_branch_matches(p->branches, refs[i] + 11))
			continue;
		/* A branch never run before is where we start from, not a push. */
		if (mlp_store_latest_commit(&last, db, p->name, refs[i]) != 0 || last == NULL ||
		    strcmp(last, commits[i]) == 0) {
			free(last);
			continue;
		}
		free(last);
		{
			struct mlp_run_queued q = {
			        .project = p->name,
			        .trigger = "poll",
			        .user = "poll",
			        .git_commit = commits[i],
			        .git_ref = refs[i],
			        .once_per_commit = true,
			};

			if (mlp_store_run_enqueue(&id, db, &q, NULL, NULL) == 0) {
				serve_log(sv, "poll %s: %s moved to %.12s: run %lld queued",
				          p->name, refs[i], commits[i], (long long)id);
				serve_wake(sv);
			}
		}
	}
done:
	mlp_git_refs_free(refs, commits, n);
	free(mirror);
}

static void *poller_main(void *arg)
{
	struct serve *sv = arg;
	struct mlp_store *db = NULL;

	if (mlp_store_open(&db, sv->db_path, 0) != 0) {
		serve_log(sv, "poller: %s", mlp_error_last());
		return NULL;
	}
	while (!atomic_load(&sv->stopping)) {
		struct mlp_project *ps = NULL;
		size_t n = 0;
		struct timespec until;

		if (mlp_store_projects_list(&ps, &n, db) == 0)
			for (size_t i = 0; i < n && !atomic_load(&sv->stopping); i++)
				poll_project(sv, db, &ps[i]);
		mlp_project_free_all(ps, n);
		serve_wake(sv); /* mirrors changed: schedules are read again */
		if (sv->cfg.poll_interval_ms <= 0)
			break;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += sv->cfg.poll_interval_ms / 1000;
		until.tv_nsec += (sv->cfg.poll_interval_ms % 1000) * 1000000;
		if (until.tv_nsec >= 1000000000) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000;
		}
		/*
		 * A wait on a condition variable, not a timer of the main loop: a
		 * fetch blocks in libgit2 for as long as the network takes, which
		 * the loop must never do, so the poller is a thread of its own and
		 * waits here until the interval is over or a stop broadcasts
		 * poll_cond (serve_poller_wake()).
		 */
		pthread_mutex_lock(&sv->poll_lock);
		while (!atomic_load(&sv->stopping) &&
		       pthread_cond_timedwait(&sv->poll_cond, &sv->poll_lock, &until) == 0)
			;
		pthread_mutex_unlock(&sv->poll_lock);
	}
	mlp_store_close(db);
	return NULL;
}

void serve_poller_start(struct serve *sv)
{
	if (pthread_create(&sv->poller, NULL, poller_main, sv) == 0)
		sv->poller_started = true;
}

void serve_poller_wake(struct serve *sv)
{
	pthread_mutex_lock(&sv->poll_lock);
	pthread_cond_broadcast(&sv->poll_cond);
	pthread_mutex_unlock(&sv->poll_lock);
}

void serve_poller_join(struct serve *sv)
{
	if (!sv->poller_started)
		return;
	serve_poller_wake(sv);
	pthread_join(sv->poller, NULL);
	sv->poller_started = false;
}
