/*
 * dispatch.c - starting and reaping the runs of `mlpipe serve`: each queued
 * run executes in a child process, `mlpipe exec-run --db DB --run ID`, in
 * a session of its own, its output in runs/ID.exec.log (serve-int.h).
 *
 * Main loop only, on its connection `ctl`.  Bounds: jobs runs at once,
 * per_project of one project.  An interrupted run (its child died) is
 * resumed by a new child up to resume_limit times.
 *
 * Starting a process is most of a run's way to its first stage: loading
 * mlpipe's 40-odd shared libraries (Debian builds them BIND_NOW), one
 * libgit2 init (it parses the CA bundle) and opening the database cost
 * 20-60 ms.  So one exec-run is always started ahead, `exec-run
 * --standby`, blocked reading a pipe; a run's start is writing its ID
 * there.  When the server stops or dies the pipe's end of file makes the
 * standby exit having done nothing.  What exec-run does
 * with the run is not this file's business (engine.h); this file only
 * decides when it starts, and tells it to stop.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
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

static void add_child(struct serve *sv, const struct mlp_queued_run *q, pid_t pid, const char *how)
{
	struct serve_child *c;

	xgrow((void **)&sv->children, &sv->cap_children, sv->nchildren + 1, sizeof(*sv->children));
	c = &sv->children[sv->nchildren++];
	c->pid = pid;
	c->run = q->id;
	c->project = xstrdup(q->project ? q->project : "");
	serve_log(sv, "run %lld: started (%s%s, pid %d%s)", (long long)q->id,
	          q->trigger ? q->trigger : "?",
	          q->status == MLP_STATUS_INTERRUPTED ? ", resuming" : "", (int)pid, how);
}

static void forget_standby(struct serve *sv)
{
	if (sv->standby_fd >= 0)
		close(sv->standby_fd);
	sv->standby_fd = -1;
	sv->standby_pid = 0;
}

/* Hands q to the standing-by exec-run; false when there is none, or it
 * is gone (then it is forgotten, and reaped as any child). */
static bool use_standby(struct serve *sv, const struct mlp_queued_run *q)
{
	char line[32];
	int len = snprintf(line, sizeof(line), "%lld\n", (long long)q->id);
	pid_t pid = sv->standby_pid;
	ssize_t n;

	if (pid <= 0)
		return false;
	/* Under PIPE_BUF: written whole or not at all.  SIGPIPE is ignored. */
	do
		n = write(sv->standby_fd, line, (size_t)len);
	while (n < 0 && errno == EINTR);
	forget_standby(sv);
	if (n != len) {
		serve_log(sv, "standby exec-run (pid %d) is gone: %s", (int)pid,
		          n < 0 ? strerror(errno) : "short write");
		return false;
	}
	add_child(sv, q, pid, ", stood by");
	return true;
}

static void standby_start(struct serve *sv, const sigset_t *mask)
{
	int fds[2];
	pid_t pid;

	if (sv->standby_pid > 0 || !sv->cfg.dispatch || atomic_load(&sv->stopping) ||
	    mlp_mono_ms() < sv->standby_retry_at)
		return;
	if (pipe2(fds, O_CLOEXEC) != 0) {
		serve_log(sv, "standby: pipe: %s", strerror(errno));
		sv->standby_retry_at = mlp_mono_ms() + 1000;
		return;
	}
	pid = fork();
	if (pid == 0) {
		setsid();
		sigprocmask(SIG_SETMASK, mask, NULL);
		dup2(fds[0], 0); /* without O_CLOEXEC */
		execl(sv->self, "mlpipe", "exec-run", "--db", sv->db_path, "--standby",
		      (char *)NULL);
		_exit(127);
	}
	close(fds[0]);
	if (pid < 0) {
		serve_log(sv, "standby: cannot fork: %s", strerror(errno));
		close(fds[1]);
		sv->standby_retry_at = mlp_mono_ms() + 1000;
		return;
	}
	sv->standby_pid = pid;
	sv->standby_fd = fds[1];
}

int64_t serve_standby_wait_ms(const struct serve *sv)
{
	int64_t left;

	if (sv->standby_pid > 0 || !sv->cfg.dispatch || atomic_load(&sv->stopping))
		return -1;
	left = sv->standby_retry_at - mlp_mono_ms();
	return left < 0 ? 0 : left;
}

void serve_standby_stop(struct serve *sv)
{
	forget_standby(sv);
}

static void spawn_run(struct serve *sv, const struct mlp_queued_run *q, const sigset_t *mask)
{
	char id[32], *logdir, *logpath;
	pid_t pid;

	if (use_standby(sv, q))
		return;
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
	if (pid < 0)
		serve_log(sv, "run %s: cannot fork: %s", id, strerror(errno));
	else
		add_child(sv, q, pid, "");
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

	bool can_start = sv->cfg.dispatch && !atomic_load(&sv->stopping) &&
	                 sv->nchildren < (size_t)sv->cfg.jobs;

	mlp_store_recover(NULL, sv->ctl);
	if (mlp_store_queue_list_next(&q, &n, sv->ctl, can_start ? sv->cfg.per_project : 0) != 0) {
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
	standby_start(sv, mask);
}

void serve_reap(struct serve *sv)
{
	int st;
	pid_t pid;

	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		if (pid == sv->standby_pid) {
			serve_log(sv, "standby exec-run (pid %d) ended before its run (%s %d)",
			          (int)pid, WIFEXITED(st) ? "exit" : "signal",
			          WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
			forget_standby(sv);
			sv->standby_retry_at = mlp_mono_ms() + 1000;
			continue;
		}
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
	pid_t pid = sv->standby_pid;

	/* End of file tells it to exit; it may still be loading, so wait a
	 * bounded while before making sure. */
	forget_standby(sv);
	for (int i = 0; pid > 0 && i < 200; i++) {
		if (waitpid(pid, NULL, WNOHANG) != 0)
			pid = 0;
		else
			nanosleep(&(struct timespec){0, 10 * 1000000}, NULL);
	}
	if (pid > 0) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
	}
	for (size_t i = 0; i < sv->nchildren; i++)
		free(sv->children[i].project);
	free(sv->children);
	sv->children = NULL;
	sv->nchildren = sv->cap_children = 0;
}
