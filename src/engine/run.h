/*
 * run.h - a run's lifecycle around the engine: from a pipeline that passed
 * its checks to a recorded end with the exit code mlpipe's commands use.
 *
 * mlp_run_execute is the part every way of running shares (`mlpipe run`
 * here, and serve's exec-run for a queued run, serve/exec-run.c);
 * mlp_run_local is the whole of `mlpipe run FILE`.  The engine itself
 * (engine.h) only runs stages; what a run's row says at its end is
 * decided here.
 */
#ifndef MLP_RUN_H
#define MLP_RUN_H

#include <stdint.h>

#include "base/kvlist.h"
#include "engine/engine.h"

struct mlp_diags;
struct mlp_pipeline;
struct mlp_store;

/*
 * Executes pipeline p as run run_id (recorded and locked by this process)
 * with the engine and records how it ended.  *out_exit is the exit code
 * `mlpipe run` uses (0 succeeded, 1 failed, 128+signal cancelled), which
 * the run's row records too; result is filled (the caller frees its
 * message), a failed one with "mlpipe stopped: ..." when the engine could
 * not go on.  Returns 0, or a negative code with a message when the end
 * could not be recorded (*out_exit and result are set all the same).
 */
int mlp_run_execute(int *out_exit, struct mlp_engine_result *result, const struct mlp_pipeline *p,
                    struct mlp_store *store, int64_t run_id, const struct mlp_engine_opts *eo);

struct mlp_run_local_opts {
	const char *file;              /* the pipeline file */
	const char *workdir;           /* the workspace; NULL: the file's own */
	const char *db;                /* NULL: the default database */
	const struct mlp_kvlist *vars; /* --var NAME=VALUE; may be NULL */
	int jobs;                      /* <= 0: the number of cores */
	int live;                      /* the live view: -1 on a terminal, 0 never */
	const char *self_exe;          /* the running mlpipe binary */
	const char *user;              /* who runs it, as recorded */
};

/*
 * `mlpipe run FILE`: loads the file and checks that this build can execute
 * every stage (mlp_engine_check), resolves the workspace, opens the
 * database and records the run (trigger cli, the file's git commit), then
 * prints "run N: NAME (K stages)" and executes it with the live view on
 * stdout.  Everything that can be refused is refused before the run is
 * recorded, and then nothing is.
 *
 * Returns 0 when the run was executed (*out_exit as mlp_run_execute's).
 * Otherwise nothing was recorded and the code is negative: the file's
 * problems are in diags, one each, or, when diags is empty, the message
 * says what failed (the file cannot be read, the workspace does not
 * exist, the database cannot be written).
 */
int mlp_run_local(int *out_exit, struct mlp_diags *diags, const struct mlp_run_local_opts *opts);

#endif
