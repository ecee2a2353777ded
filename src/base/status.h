/*
 * status.h - how a run or a stage attempt ends, in the words every layer
 * shares: the status the store records (runs.status, stages.status), the
 * engine reports, and the CLI, the API and the live view show; and the
 * exit codes of mlpipe's commands, which a run's row records too.
 *
 * Base layer (includes nothing of mlpipe's): the store, the engine, serve
 * and cli all include it, so the enum and its names have this one home.
 */
#ifndef MLP_STATUS_H
#define MLP_STATUS_H

enum mlp_status {
	MLP_STATUS_QUEUED,
	MLP_STATUS_RUNNING,
	MLP_STATUS_SUCCEEDED,
	MLP_STATUS_FAILED,
	MLP_STATUS_SKIPPED,
	MLP_STATUS_CANCELLED,
	MLP_STATUS_INTERRUPTED,
};

/* "queued", "running", ... (the database's words); "unknown" out of range. */
const char *mlp_status_name(enum mlp_status s);
/* 0 or MLP_EINVAL (no message). */
int mlp_status_parse(enum mlp_status *out, const char *name);

/* Exit codes every command uses, and a run records (runs.exit_code); a
 * cancelled run exits 128 + the signal. */
enum {
	MLP_EXIT_OK = 0,
	MLP_EXIT_FAILED = 1, /* the run (or what the command checked) failed */
	MLP_EXIT_USAGE = 2,  /* bad usage or invalid input */
};

#endif
