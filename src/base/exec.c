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

#include <errno.h>
#include <fcntl.h>
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
