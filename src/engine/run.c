/*
 * run.c - a run's lifecycle around the engine (see run.h): checking and
 * recording a run of a pipeline file, executing it, and recording its end
 * with the exit code the commands use.  No option parsing and no
 * knowledge of where a run came from beyond what its caller passes.
 */
#include "config.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/crypto.h"
#include "base/error.h"
#include "base/git.h"
#include "engine/live.h"
#include "engine/run.h"
#include "pipeline/pipeline.h"
#include "store/store.h"
#include "store/store-runs.h"
#include "base/util.h"

/* The exit code of a run that ended as result says. */
static int exit_code(const struct mlp_engine_result *result)
{
	switch (result->status) {
	case MLP_STATUS_SUCCEEDED:
		return MLP_EXIT_OK;
	case MLP_STATUS_CANCELLED:
		return 128 + (result->signal ? result->signal : SIGINT);
	default:
		return MLP_EXIT_FAILED;
	}
}

int mlp_run_execute(int *out_exit, struct mlp_engine_result *result, const struct mlp_pipeline *p,
                    struct mlp_store *store, int64_t run_id, const struct mlp_engine_opts *eo)
{
	int rc = mlp_engine_run(result, p, store, run_id, eo);

	if (rc != 0) {
		/* The engine could not go on (the database failed under it). */
		result->status = MLP_STATUS_FAILED;
		free(result->message);
		result->message = xasprintf("mlpipe stopped: %s", mlp_error_last());
	}
	*out_exit = exit_code(result);
	return mlp_store_run_finish(store, run_id, result->status, *out_exit, result->message);
}

/* --workdir, else the file's workdir:, else the file's directory; it must
 * exist.  *out is absolute. */
static int resolve_workspace(char **out, const struct mlp_pipeline *p, const char *opt)
{
	char *dir;
	struct stat st;
	int rc;

	if (opt)
		dir = xstrdup(opt);
	else if (p->workdir && p->workdir[0] == '/')
		dir = xstrdup(p->workdir);
	else if (p->workdir)
		dir = xasprintf("%s/%s", p->dir, p->workdir);
	else
		dir = xstrdup(p->dir);
	if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
		mlp_error_set("working directory %s does not exist", dir);
		free(dir);
		return MLP_EINVAL;
	}
	rc = mlp_realpath(out, dir);
	free(dir);
	return rc;
}

/* Records the run of p (trigger cli) with its text, commit and workspace. */
static int record_run(int64_t *out, struct mlp_store *store, const struct mlp_pipeline *p,
                      const char *workspace, const char *user)
{
	char sha[MLP_SHA256_HEX_LEN + 1];
	char *commit = NULL, *abs_path = NULL;
	int rc;

	mlp_sha256_hex(sha, p->text, p->text_len);
	mlp_git_head_commit(&commit, p->dir);
	{
		struct mlp_run_new r = {
		        .pipeline = p->name,
		        .pipeline_text = p->text,
		        .pipeline_sha256 = sha,
		        .trigger = "cli",
		        .user = user,
		        .git_commit = commit,
		        .workspace = workspace,
		};

		if (mlp_realpath(&abs_path, p->path) == 0)
			r.pipeline_path = abs_path;
		rc = mlp_store_run_create(out, store, &r);
	}
	free(abs_path);
	free(commit);
	return rc;
}

/* Executes the recorded run with the live view on stdout. */
static void execute_live(int *out_exit, const struct mlp_pipeline *p, struct mlp_store *store,
                         int64_t run_id, const char *workspace, const struct mlp_run_local_opts *o)
{
	struct mlp_live *term = mlp_live_new(p, stdout, o->live);
	struct mlp_engine_result result = {0};
	struct mlp_engine_opts eo = {
	        .jobs = o->jobs,
	        .workspace = workspace,
	        .vars = o->vars,
	        .self_exe = o->self_exe,
	        .observer = mlp_live_observer(term),
	};
	int64_t t0;

	printf("run %lld: %s (%zu stage%s)\n", (long long)run_id, p->name, p->nstages,
	       p->nstages == 1 ? "" : "s");
	fflush(stdout);
	t0 = mlp_mono_ms();
	if (mlp_run_execute(out_exit, &result, p, store, run_id, &eo) != 0)
		mlp_error_warn("%s", mlp_error_last());
	mlp_live_finish(term, run_id, &result, mlp_mono_ms() - t0);
	free(result.message);
	mlp_live_free(term);
}

int mlp_run_local(int *out_exit, struct mlp_diags *diags, const struct mlp_run_local_opts *o)
{
	struct mlp_pipeline *p = NULL;
	struct mlp_store *store = NULL;
	char *workspace = NULL;
	int64_t run_id = 0;
	int rc;

	*out_exit = MLP_EXIT_USAGE;
	rc = mlp_pipeline_load(&p, diags, o->file);
	if (rc == 0)
		rc = mlp_engine_check(p, diags);
	if (rc != 0)
		goto done;
	if ((rc = resolve_workspace(&workspace, p, o->workdir)) != 0 ||
	    (rc = mlp_store_open(&store, o->db, 0)) != 0)
		goto done;
	/* Opening the store marked the runs of mlpipes that died interrupted;
	 * what their stages left running stops before this run starts (a
	 * run is not resumed by `mlpipe run`, but it may share the workspace,
	 * the GPUs ...).  One that cannot be stopped is reported, not fatal. */
	if (mlp_engine_stop_leftovers(store, 0) != 0)
		mlp_error_warn("%s", mlp_error_last());
	if ((rc = record_run(&run_id, store, p, workspace, o->user)) != 0)
		goto done;
	execute_live(out_exit, p, store, run_id, workspace, o);
done:
	mlp_store_close(store);
	mlp_pipeline_free(p);
	free(workspace);
	return rc;
}
