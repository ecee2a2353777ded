/*
 * engine-leftovers.c - stopping what an mlpipe that died left running (see
 * engine.h, mlp_engine_stop_leftovers).
 *
 * A stage runs in a process group of its own.  When the mlpipe running it
 * is killed -9, the group is reparented to init and runs on; the store
 * then says the attempt was interrupted.  Before anything starts the
 * next attempt (a resume) or a new run in the same place (`mlpipe run`),
 * the group recorded for the attempt is stopped, with the stage's own
 * kill grace.  The recorded pgid, session and leader start time are what
 * make this safe after pid reuse (base/exec.c).
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>

#include "base/error.h"
#include "base/exec.h"
#include "base/util.h"
#include "engine/engine.h"
#include "store/store.h"
#include "store/store-runs.h"

static void log_stopped(const struct mlp_attempt_group *g, enum mlp_group_stop how)
{
	char grace[32] = "";

	if (how == MLP_GROUP_KILLED)
		mlp_format_duration(grace, sizeof(grace), g->kill_grace_ms);
	fprintf(stderr,
	        "mlpipe: run %lld: stage '%s' attempt %d was still running after its mlpipe "
	        "died: process group %lld stopped (SIG%s%s%s)\n",
	        (long long)g->run_id, g->stage, g->attempt, (long long)g->pgid,
	        how == MLP_GROUP_TERMED ? "TERM" : "KILL", grace[0] ? " after " : "", grace);
	fflush(stderr);
}

int mlp_engine_stop_leftovers(struct mlp_store *store, int64_t run_id)
{
	struct mlp_attempt_group *g = NULL;
	size_t n = 0;
	int rc;

	if ((rc = mlp_store_leftover_groups(&g, &n, store, run_id)) != 0)
		return rc;
	for (size_t i = 0; i < n && rc == 0; i++) {
		struct mlp_proc_identity id = {
		        .pgid = (pid_t)g[i].pgid,
		        .session = (pid_t)g[i].session,
		        .start_time = (unsigned long long)g[i].start_time,
		};
		enum mlp_group_stop how;

		if ((rc = mlp_proc_group_stop(&how, &id, g[i].kill_grace_ms)) != 0) {
			char *msg = xasprintf("run %lld: stage '%s' attempt %d: %s",
			                      (long long)g[i].run_id, g[i].stage, g[i].attempt,
			                      mlp_error_last());

			mlp_error_set("%s", msg);
			free(msg);
			break;
		}
		if (how != MLP_GROUP_GONE)
			log_stopped(&g[i], how);
		rc = mlp_store_attempt_clear_group(store, g[i].attempt_id);
	}
	mlp_attempt_group_free_all(g, n);
	return rc;
}
