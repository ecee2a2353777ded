/*
 * exec.c - process groups, pidfds and spawning (see exec.h).
 *
 * posix_spawn() rather than fork(): glibc implements it with
 * clone(CLONE_VM|CLONE_VFORK), so starting a stage costs the same whether
 * mlpipe's heap is small or large.  The pidfd is taken right after the
 * spawn; the child cannot be reaped behind our back because nobody but
 * mlp_proc_reap() waits for it.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/error.h"
#include "base/exec.h"
#include "base/util.h"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

static int pidfd_open_(pid_t pid)
{
	return (int)syscall(SYS_pidfd_open, pid, 0);
}

int mlp_proc_spawn(struct mlp_proc *out, const struct mlp_spawn *spec)
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	sigset_t none, defaults;
	int pipefd[2] = {-1, -1};
	pid_t pid;
	int err;

	out->pid = -1;
	out->pidfd = -1;
	out->out_fd = -1;
	if (spec->cwd && access(spec->cwd, X_OK) != 0) {
		mlp_error_set_errno(errno, "working directory %s", spec->cwd);
		return MLP_EIO;
	}
	if (spec->capture && pipe2(pipefd, O_CLOEXEC) != 0) {
		mlp_error_set_errno(errno, "pipe");
		return MLP_EIO;
	}
	posix_spawn_file_actions_init(&fa);
	posix_spawnattr_init(&attr);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	if (spec->capture) {
		posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
		posix_spawn_file_actions_adddup2(&fa, pipefd[1], 2);
	}
	if (spec->cwd)
		posix_spawn_file_actions_addchdir_np(&fa, spec->cwd);
	sigemptyset(&none);
	sigemptyset(&defaults);
	/*
	 * The stage gets default dispositions for the signals a shell or a job
	 * control parent may have ignored (mlpipe itself ignores SIGPIPE).
	 * Handlers never survive exec, so these are all that can leak; naming
	 * each costs one sigaction in the child, all 64 cost a measurable
	 * share of a short stage's start.
	 */
	{
		static const int reset[] = {
		        SIGPIPE, SIGINT,  SIGTERM, SIGHUP,  SIGQUIT, SIGCHLD, SIGALRM,
		        SIGUSR1, SIGUSR2, SIGTSTP, SIGTTIN, SIGTTOU, SIGXFSZ,
		};

		for (size_t k = 0; k < MLP_ARRAY_SIZE(reset); k++)
			sigaddset(&defaults, reset[k]);
	}
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setsigdefault(&attr, &defaults);
	posix_spawnattr_setpgroup(&attr, 0);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
	                                        POSIX_SPAWN_SETSIGDEF);
	err = posix_spawn(&pid, spec->argv[0], &fa, &attr, spec->argv, spec->envp);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	if (pipefd[1] >= 0)
		close(pipefd[1]);
	if (err != 0) {
		mlp_error_set_errno(err, "cannot start %s", spec->argv[0]);
		if (pipefd[0] >= 0)
			close(pipefd[0]);
		return MLP_EIO;
	}
	out->pid = pid;
	out->pidfd = pidfd_open_(pid);
	if (out->pidfd < 0) {
		mlp_error_set_errno(errno, "pidfd_open (Linux 5.3 or newer is required)");
		kill(-pid, SIGKILL);
		waitpid(pid, NULL, 0);
		if (pipefd[0] >= 0)
			close(pipefd[0]);
		out->pid = -1;
		return MLP_EIO;
	}
	mlp_fd_cloexec(out->pidfd);
	if (pipefd[0] >= 0) {
		mlp_fd_nonblock(pipefd[0]);
		out->out_fd = pipefd[0];
	}
	return 0;
}

void mlp_proc_kill_group(const struct mlp_proc *p, int sig)
{
	if (p->pid > 0)
		kill(-p->pid, sig);
}

bool mlp_proc_group_alive(const struct mlp_proc *p)
{
	return p->pid > 0 && kill(-p->pid, 0) == 0;
}

/* ---- groups left behind by a process that died --------------------------- */

struct proc_stat {
	char state;
	pid_t pgrp;
	pid_t session;
	unsigned long long start_time;
};

/* Reads /proc/PID/stat: fields 3 (state), 5, 6 and 22.  The name (field
 * 2) may hold spaces and ')': the fields start after the last ')'. */
static bool read_proc_stat(struct proc_stat *out, pid_t pid)
{
	char path[64], buf[1024], *p, *save = NULL;
	int fd, field = 3;
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	p = strrchr(buf, ')');
	if (p == NULL)
		return false;
	memset(out, 0, sizeof(*out));
	for (char *tok = strtok_r(p + 1, " ", &save); tok && field <= 22;
	     tok = strtok_r(NULL, " ", &save), field++) {
		if (field == 3)
			out->state = tok[0];
		else if (field == 5)
			out->pgrp = (pid_t)strtol(tok, NULL, 10);
		else if (field == 6)
			out->session = (pid_t)strtol(tok, NULL, 10);
		else if (field == 22)
			out->start_time = strtoull(tok, NULL, 10);
	}
	return field > 22;
}

int mlp_proc_identity(struct mlp_proc_identity *out, pid_t pid)
{
	struct proc_stat ps;

	if (!read_proc_stat(&ps, pid)) {
		mlp_error_set("process %d: no such process in /proc", (int)pid);
		return MLP_ENOTFOUND;
	}
	out->pgid = ps.pgrp;
	out->session = ps.session;
	out->start_time = ps.start_time;
	return 0;
}

/* How many live (not zombie) processes are in the recorded group and
 * session. */
static size_t group_members(const struct mlp_proc_identity *id)
{
	DIR *d = opendir("/proc");
	struct dirent *de;
	size_t n = 0;

	if (d == NULL)
		return kill(-id->pgid, 0) == 0 ? 1 : 0;
	while ((de = readdir(d)) != NULL) {
		struct proc_stat ps;
		char *end;
		long pid = strtol(de->d_name, &end, 10);

		if (*end != '\0' || pid <= 0 || !read_proc_stat(&ps, (pid_t)pid))
			continue;
		if (ps.pgrp == id->pgid && ps.session == id->session && ps.state != 'Z' &&
		    ps.state != 'X')
			n++;
	}
	closedir(d);
	return n;
}

/*
 * Waits until the group has no live member or deadline_ms passes.  A
 * sleep, not a timer in a poll(): no descriptor says that a group whose
 * processes are not our children has emptied.
 */
static bool wait_group_empty(const struct mlp_proc_identity *id, int64_t deadline_ms)
{
	for (;;) {
		if (group_members(id) == 0)
			return true;
		if (mlp_mono_ms() >= deadline_ms)
			return false;
		poll(NULL, 0, 20);
	}
}

int mlp_proc_group_stop(enum mlp_group_stop *out, const struct mlp_proc_identity *id,
                        int64_t grace_ms)
{
	struct proc_stat leader;

	*out = MLP_GROUP_GONE;
	if (id->pgid <= 1)
		return 0;
	/* A leader with another start time is a new process with a reused
	 * pid: the kernel reuses no pid while a group of that id exists, so
	 * the recorded group is gone. */
	if (read_proc_stat(&leader, id->pgid) && leader.start_time != id->start_time)
		return 0;
	if (group_members(id) == 0)
		return 0;
	kill(-id->pgid, SIGTERM);
	*out = MLP_GROUP_TERMED;
	if (wait_group_empty(id, mlp_mono_ms() + (grace_ms > 0 ? grace_ms : 0)))
		return 0;
	kill(-id->pgid, SIGKILL);
	*out = MLP_GROUP_KILLED;
	if (wait_group_empty(id, mlp_mono_ms() + 5000))
		return 0;
	mlp_error_set("process group %d is still there 5s after SIGKILL", (int)id->pgid);
	return MLP_ETIMEOUT;
}

int mlp_proc_reap(struct mlp_exit *out, struct mlp_proc *p, bool wait)
{
	siginfo_t info;
	int rc;

	memset(&info, 0, sizeof(info));
	do {
		rc = waitid(P_PIDFD, (id_t)p->pidfd, &info, WEXITED | (wait ? 0 : WNOHANG));
	} while (rc < 0 && errno == EINTR);
	if (rc < 0) {
		mlp_error_set_errno(errno, "waiting for process %d", (int)p->pid);
		return MLP_EIO;
	}
	if (info.si_pid == 0)
		return MLP_ETIMEOUT;
	if (info.si_code == CLD_EXITED) {
		out->code = info.si_status;
		out->signal = 0;
	} else {
		out->code = -1;
		out->signal = info.si_status;
	}
	return 0;
}

void mlp_proc_close(struct mlp_proc *p)
{
	if (p->pidfd >= 0)
		close(p->pidfd);
	if (p->out_fd >= 0)
		close(p->out_fd);
	p->pidfd = -1;
	p->out_fd = -1;
}

void mlp_exit_describe(char *buf, size_t size, const struct mlp_exit *e)
{
	if (e->signal) {
		const char *name = sigabbrev_np(e->signal);

		if (name)
			snprintf(buf, size, "killed by SIG%s", name);
		else
			snprintf(buf, size, "killed by signal %d", e->signal);
	} else {
		snprintf(buf, size, "exit code %d", e->code);
	}
}

int mlp_exec_find(char **out, const char *name)
{
	const char *path = getenv("PATH");
	char *copy, *save = NULL;

	if (strchr(name, '/')) {
		if (access(name, X_OK) != 0) {
			mlp_error_set_errno(errno, "%s", name);
			return MLP_ENOTFOUND;
		}
		*out = xstrdup(name);
		return 0;
	}
	copy = xstrdup(path && *path ? path : "/usr/local/bin:/usr/bin:/bin");
	for (char *dir = strtok_r(copy, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
		char *candidate = xasprintf("%s/%s", *dir ? dir : ".", name);

		if (access(candidate, X_OK) == 0) {
			free(copy);
			*out = candidate;
			return 0;
		}
		free(candidate);
	}
	free(copy);
	mlp_error_set("%s: command not found in PATH", name);
	return MLP_ENOTFOUND;
}
