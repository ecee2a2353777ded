/*
 * dispatch.c - starting and reaping the runs of `mlpipe serve`: each queued
 * run executes in a child process, `mlpipe exec-run --db DB --run ID`, in
 * a session of its own, its output in runs/ID.exec.log (serve-int.h).
 *
 * Main loop only, on its connection `ctl`.  Bounds: jobs runs at once,
 * per_project of one project.  An interrupted run (its child died) is
 * resumed by a new child up to resume_limit times.  What exec-run does
 * with the run is not this file's business (engine.h); this file only
 * decides when it starts, and tells it to stop.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/error.h"
#include "base/util.h"
#include "engine/engine.h"
#include "serve/serve-int.h"
#include "store/store.h"
#include "store/store-queue.h"
#include "store/store-runs.h"

static struct serve_child *find_child(struct serve *sv, int64_t run)
{
	for (size_t i = 0; i < sv->nchildren; i++)
		if (sv->children[i].run == run)
			return &sv->children[i];
	return NULL;
}

static void spawn_run(struct serve *sv, const struct mlp_queued_run *q, const sigset_t *mask)
{
	char id[32], *logdir, *logpath;
	pid_t pid;

	snprintf(id, sizeof(id), "%lld", (long long)q->id);
	logdir = xasprintf("%s/runs", mlp_store_data_dir(sv->ctl));
	mlp_mkdirs(logdir, 0755);
	logpath = xasprintf("%s/%lld.exec.log", logdir, (long long)q->id);
	pid = fork();
	if (pid == 0) {
		int fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
		int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);

		/* Its own session: a Ctrl-C meant for the server is not the run's. */
		setsid();
		sigprocmask(SIG_SETMASK, mask, NULL);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		if (devnull >= 0)
			dup2(devnull, 0);
		execl(sv->self, "mlpipe", "exec-run", "--db", sv->db_path, "--run", id,
		      (char *)NULL);
		_exit(127);
	}
	if (pid < 0) {
		serve_log(sv, "run %s: cannot fork: %s", id, strerror(errno));
	} else {
		struct serve_child *c;

		xgrow((void **)&sv->children, &sv->cap_children, sv->nchildren + 1,
		      sizeof(*sv->children));
		c = &sv->children[sv->nchildren++];
		c->pid = pid;
		c->run = q->id;
		c->project = xstrdup(q->project ? q->project : "");
		serve_log(sv, "run %s: started (%s%s, pid %d)", id, q->trigger ? q->trigger : "?",
		          q->status == MLP_STATUS_INTERRUPTED ? ", resuming" : "", (int)pid);
	}
	free(logdir);
	free(logpath);
}

/*
 * A run that ends interrupted, never resumed, has no child to stop what
 * its dead one left running (a resumed run's child does that itself):
 * the server does, here.  This blocks the main loop for up to the
 * stage's kill grace; it happens once per such run, which is rare (a run
 * cancelled while interrupted, or interrupted resume_limit times), and
 * HTTP is answered meanwhile by libmicrohttpd's threads.
 */
static void stop_leftovers(struct serve *sv, int64_t run)
{
	if (mlp_engine_stop_leftovers(sv->ctl, run) != 0)
		serve_log(sv, "run %lld: %s", (long long)run, mlp_error_last());
}

void serve_dispatch(struct serve *sv, const sigset_t *mask)
{
	struct mlp_queued_run *q = NULL;
	size_t n = 0;
	int running = 0;

	mlp_store_recover(NULL, sv->ctl);
	if (mlp_store_queue_list(&q, &n, sv->ctl) != 0) {
		serve_log(sv, "dispatch: %s", mlp_error_last());
		return;
	}
	for (size_t i = 0; i < n; i++)
		if (q[i].status == MLP_STATUS_RUNNING || find_child(sv, q[i].id))
			running++;
	for (size_t i = 0; i < n; i++) {
		int same = 0;

		if (q[i].status == MLP_STATUS_RUNNING || find_child(sv, q[i].id))
			continue;
		if (q[i].status == MLP_STATUS_INTERRUPTED) {
			if (q[i].cancel_requested) {
				int64_t pid;

				mlp_store_run_cancel(&pid, sv->ctl, q[i].id);
				stop_leftovers(sv, q[i].id);
				continue;
			}
			if (q[i].exec_attempts >= sv->cfg.resume_limit) {
				char *why = xasprintf("interrupted %d times; not resumed again",
				                      q[i].exec_attempts);

				mlp_store_run_abandon(sv->ctl, q[i].id, why);
				serve_log(sv, "run %lld: %s", (long long)q[i].id, why);
				free(why);
				stop_leftovers(sv, q[i].id);
				continue;
			}
		}
		if (!sv->cfg.dispatch || atomic_load(&sv->stopping) || running >= sv->cfg.jobs)
			break;
		for (size_t k = 0; k < n; k++)
			if ((q[k].status == MLP_STATUS_RUNNING || find_child(sv, q[k].id)) &&
			    q[k].project && q[i].project && strcmp(q[k].project, q[i].project) == 0)
				same++;
		if (same >= sv->cfg.per_project)
			continue;
		spawn_run(sv, &q[i], mask);
		running++;
	}
	mlp_queued_run_free_all(q, n);
}

void serve_reap(struct serve *sv)
{
	int st;
	pid_t pid;

	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		for (size_t i = 0; i < sv->nchildren; i++) {
			if (sv->children[i].pid != pid)
				continue;
			serve_log(sv, "run %lld: exec-run ended (%s %d)",
			          (long long)sv->children[i].run, WIFEXITED(st) ? "exit" : "signal",
			          WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
			free(sv->children[i].project);
			sv->children[i] = sv->children[--sv->nchildren];
			break;
		}
	}
}

void serve_run_cancel(struct serve *sv, int64_t run)
{
	int64_t pid = 0;

	if (mlp_store_run_cancel(&pid, sv->ctl, run) == 0 && pid > 0)
		kill((pid_t)pid, SIGTERM);
}

void serve_children_cancel(struct serve *sv)
{
	for (size_t i = 0; i < sv->nchildren; i++)
		serve_run_cancel(sv, sv->children[i].run);
}

void serve_children_kill(struct serve *sv)
{
	for (size_t i = 0; i < sv->nchildren; i++)
		kill(sv->children[i].pid, SIGKILL);
}

void serve_children_free(struct serve *sv)
{
	for (size_t i = 0; i < sv->nchildren; i++)
		free(sv->children[i].project);
	free(sv->children);
	sv->children = NULL;
	sv->nchildren = sv->cap_children = 0;
}
