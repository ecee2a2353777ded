/*
 * exec-run.h - how `mlpipe serve` executes one queued run, in a process of
 * its own (`mlpipe exec-run`, cmd-exec-run.c, started by serve.c).
 *
 * A process per run keeps a crash of one run from taking the server or
 * other runs with it, and a server killed with -9 leaves its runs going:
 * their locks say they are alive.
 */
#ifndef MLP_EXEC_RUN_H
#define MLP_EXEC_RUN_H

#include <stdint.h>

struct mlp_exec_run_opts {
	const char *db; /* NULL: the default database */
	int64_t run_id; /* a run queued by serve */
	int jobs;       /* stages at once; <= 0: the number of cores */
	const char *self_exe;
};

/*
 * Claims the run (queued -> running, taking its liveness lock, or
 * interrupted -> running for a resume), brings the project's bare mirror
 * up to date with the pushed ref, checks that the commit is there, reads
 * the pipeline file at that commit without a work tree, checks out a
 * workspace (a resumed run keeps what its finished stages left), records
 * the pipeline the run executes, and runs it as `mlpipe run` does
 * (mlp_run_execute), printing "run N: ..." before and "run N STATUS" after
 * on stdout.  The trigger's commit, ref, branch, author and message reach
 * stages only as environment variables.
 *
 * Returns 0 once the run has an end recorded, with *out_exit the code to
 * exit with: mlp_run_execute's; or, for a run that could not start (its
 * project is not configured, the fetch failed, the file at that commit is
 * invalid: "mlpipe: run N: why" on stderr), 1 with the run recorded
 * failed, and 0 for a push the pipeline at that commit does not want,
 * recorded cancelled.  Returns a negative code with a message when the run
 * could not be claimed or what it executes could not be recorded.
 */
int mlp_exec_run(int *out_exit, const struct mlp_exec_run_opts *opts);

/*
 * A run started ahead of its run (`mlpipe exec-run --standby`, see
 * dispatch.c): loads, initialises libgit2 and opens the database, then
 * waits for "ID\n" on fd.  With it: points stdout and stderr at the run's
 * exec log (runs/ID.exec.log, as serve does for a child it starts itself)
 * and does what mlp_exec_run does for run ID (opts->run_id is ignored).
 * End of file before an ID (serve stopped or died): returns 0 with
 * *out_exit 0, having touched no run.
 */
int mlp_exec_run_standby(int *out_exit, const struct mlp_exec_run_opts *opts, int fd);

#endif
