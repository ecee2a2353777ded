/*
 * exec.h - starting and stopping the processes stages run.
 *
 * Each process starts in a process group of its own, so a timeout or a
 * cancel reaches everything it started (grandchildren too) with one
 * kill(-pgid).  Completion is a readable pidfd: callers poll() it with
 * their other descriptors instead of sleeping or catching SIGCHLD.
 */
#ifndef MLP_EXEC_H
#define MLP_EXEC_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct mlp_proc {
	pid_t pid;  /* also the process group id */
	int pidfd;  /* readable once the process has exited */
	int out_fd; /* read end of its stdout+stderr (non-blocking), or -1 */
};

struct mlp_spawn {
	char *const *argv;
	char *const *envp;
	const char *cwd; /* NULL: inherit */
	bool capture;    /* pipe stdout and stderr to out_fd (else inherit) */
};

/*
 * Starts a process in a new process group with default signal handling and
 * an empty signal mask, stdin from /dev/null.  Returns 0, or MLP_EIO with a
 * message (a missing working directory or program says which).
 */
int mlp_proc_spawn(struct mlp_proc *out, const struct mlp_spawn *spec);

/* Sends sig to the process's whole group; a group already gone is not an
 * error. */
void mlp_proc_kill_group(const struct mlp_proc *p, int sig);

/* True when some process of the group is still alive. */
bool mlp_proc_group_alive(const struct mlp_proc *p);

/*
 * Who a process group is, as recorded when its leader started: enough to
 * find the group again from another process after the one that started it
 * died (kill -9), and to tell it from a later group that got the same id.
 */
struct mlp_proc_identity {
	pid_t pgid;                    /* the leader's pid */
	pid_t session;                 /* the session the group belongs to */
	unsigned long long start_time; /* the leader's start, /proc/PID/stat field 22 */
};

/* Reads pid's group, session and start time from /proc.  Returns 0, or
 * MLP_ENOTFOUND (with a message) when there is no such process. */
int mlp_proc_identity(struct mlp_proc_identity *out, pid_t pid);

/* What mlp_proc_group_stop did. */
enum mlp_group_stop {
	MLP_GROUP_GONE,   /* nothing of the group was left: no signal sent */
	MLP_GROUP_TERMED, /* SIGTERM, and the group was empty within the grace */
	MLP_GROUP_KILLED, /* SIGKILL after the grace */
};

/*
 * Stops what is left of the recorded group id: if its leader still runs
 * with the recorded start time, or (the leader gone) processes of that
 * group remain in the recorded session, the group gets SIGTERM, then
 * SIGKILL after grace_ms, and this waits until no live process is left in
 * it (zombies count as gone).  A leader with another start time is a
 * reused pid: then the recorded group is gone and nothing is sent.
 * Blocks at most grace_ms + 5 s.  Returns 0 with *out set, or MLP_ETIMEOUT
 * with a message when processes remain after SIGKILL (stuck in the kernel).
 */
int mlp_proc_group_stop(enum mlp_group_stop *out, const struct mlp_proc_identity *id,
                        int64_t grace_ms);

struct mlp_exit {
	int code;   /* exit status, or -1 when killed by a signal */
	int signal; /* the signal that killed it, or 0 */
};

/*
 * Reaps the process once its pidfd is readable (or blocks until it exits
 * when wait is true).  Returns 0 and fills out, or MLP_EAGAIN-like
 * MLP_ETIMEOUT when it is still running and wait is false.
 */
int mlp_proc_reap(struct mlp_exit *out, struct mlp_proc *p, bool wait);

/* Closes the descriptors (not the process). */
void mlp_proc_close(struct mlp_proc *p);

/* Finds a program: a name with a '/' as it is, else the first executable
 * in $PATH.  *out is a new string; MLP_ENOTFOUND with a message if none. */
int mlp_exec_find(char **out, const char *name);

/* Describes an exit: "exit code 3", "killed by SIGKILL". */
void mlp_exit_describe(char *buf, size_t size, const struct mlp_exit *e);

#endif
