/*
 * cmd-exec-run.c - `mlpipe exec-run --db PATH --run ID`: how `mlpipe serve`
 * executes one queued run, in a process of its own.
 *
 * The child claims the run (queued -> running, taking its liveness lock,
 * or interrupted -> running for a resume), brings the project's bare
 * mirror up to date with the pushed ref, checks that the commit is there,
 * reads the pipeline file at that commit without a work tree, checks out a
 * workspace, and runs the engine exactly as `mlpipe run` does
 * (mlp_cmd_execute_run).  The trigger's commit, ref, branch, author and
 * message reach stages only as environment variables.
 *
 * A process per run keeps a crash of one run from taking the server or
 * other runs with it, and a server killed with -9 leaves its runs going:
 * their locks say they are alive.
 */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cmd.h"
#include "base/crypto.h"
#include "engine/engine.h"
#include "base/error.h"
#include "base/git.h"
#include "pipeline/pipeline.h"
#include "store/store.h"
#include "base/util.h"
#include "serve/webhook.h"

static const struct mlp_project *find_project(const struct mlp_project *p, size_t n,
                                              const char *name)
{
	for (size_t i = 0; name && i < n; i++)
		if (strcmp(p[i].name, name) == 0)
			return &p[i];
	return NULL;
}

/* A run that cannot start ends here, with why. */
static int give_up(struct mlp_store *store, int64_t run_id, enum mlp_status status, const char *why)
{
	mlp_cmd_error("run %lld: %s", (long long)run_id, why);
	if (mlp_store_run_finish(store, run_id, status,
	                         status == MLP_STATUS_CANCELLED ? 0 : MLP_EXIT_FAILED, why) != 0)
		mlp_cmd_error("%s", mlp_error_last());
	return status == MLP_STATUS_CANCELLED ? MLP_EXIT_OK : MLP_EXIT_FAILED;
}

static int exec_run_exec(int argc, char **argv)
{
	static const struct option opts[] = {
	        {"db", required_argument, NULL, 'd'},
	        {"run", required_argument, NULL, 'r'},
	        {"jobs", required_argument, NULL, 'j'},
	        {"help", no_argument, NULL, 'h'},
	        {NULL, 0, NULL, 0},
	};
	struct mlp_store *store = NULL;
	struct mlp_queued_run q = {0};
	struct mlp_project *projects = NULL;
	const struct mlp_project *proj;
	struct mlp_pipeline *p = NULL;
	struct mlp_diags diags = {0};
	struct mlp_engine_result result = {0};
	struct mlp_strv env = {0};
	char *mirror = NULL, *workspace = NULL, *commit = NULL, *author = NULL;
	char *message = NULL, *text = NULL, *path = NULL, *self = NULL, *stage_dir = NULL;
	const char *db = NULL, *ref;
	char sha[MLP_SHA256_HEX_LEN + 1];
	long long run = 0, jobs = 0;
	size_t nprojects = 0, len;
	bool resumed = false;
	int c, rc, status = MLP_EXIT_USAGE;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'd':
			db = optarg;
			break;
		case 'r':
			if (mlp_parse_int(&run, optarg, 1, INT64_MAX) != 0) {
				status = mlp_cmd_usage_error(&mlp_cmd_exec_run, "bad --run '%s'",
				                             optarg);
				goto done;
			}
			break;
		case 'j':
			if (mlp_parse_int(&jobs, optarg, 1, 4096) != 0) {
				status = mlp_cmd_usage_error(&mlp_cmd_exec_run, "bad --jobs '%s'",
				                             optarg);
				goto done;
			}
			break;
		case 'h':
			mlp_cmd_print_help(&mlp_cmd_exec_run, stdout);
			status = MLP_EXIT_OK;
			goto done;
		default:
			status = mlp_cmd_usage_error(&mlp_cmd_exec_run, "unknown option");
			goto done;
		}
	}
	if (run == 0) {
		status = mlp_cmd_usage_error(&mlp_cmd_exec_run, "--run ID is required");
		goto done;
	}
	status = MLP_EXIT_FAILED;
	if (mlp_store_open(&store, db, 0) != 0 ||
	    mlp_store_run_claim(store, (int64_t)run, &resumed) != 0 ||
	    mlp_store_queued_run_get(store, &q, (int64_t)run) != 0 ||
	    mlp_store_projects_list(store, &projects, &nprojects) != 0) {
		mlp_cmd_error("%s", mlp_error_last());
		goto done;
	}
	proj = find_project(projects, nprojects, q.project);
	if (proj == NULL) {
		char *why = xasprintf("project '%s' is not configured",
		                      q.project ? q.project : "(none)");

		status = give_up(store, q.id, MLP_STATUS_FAILED, why);
		free(why);
		goto done;
	}

	/* The repository: fetch the ref unless the commit is here already. */
	mirror = xasprintf("%s/mirrors/%s.git", mlp_store_data_dir(store), proj->name);
	ref = q.git_ref ? q.git_ref : "refs/heads/main";
	if (q.git_commit == NULL ||
	    mlp_git_commit_info(&author, &message, mirror, q.git_commit) != 0) {
		const char *refs[] = {ref, NULL};
		struct mlp_git_creds creds = {proj->token_file, proj->ssh_key_file};

		if (mlp_git_mirror_fetch(mirror, proj->remote, refs, &creds) != 0) {
			status = give_up(store, q.id, MLP_STATUS_FAILED, mlp_error_last());
			goto done;
		}
	}
	commit = q.git_commit ? xstrdup(q.git_commit) : NULL;
	if (commit == NULL && mlp_git_resolve(&commit, mirror, ref) != 0) {
		status = give_up(store, q.id, MLP_STATUS_FAILED, mlp_error_last());
		goto done;
	}
	free(author);
	free(message);
	author = message = NULL;
	if (mlp_git_commit_info(&author, &message, mirror, commit) != 0) {
		status = give_up(store, q.id, MLP_STATUS_FAILED, mlp_error_last());
		goto done;
	}
	if (mlp_git_read_file(&text, &len, mirror, commit, proj->pipeline_path,
	                      MLP_PIPELINE_MAX_BYTES) != 0) {
		status = give_up(store, q.id, MLP_STATUS_FAILED, mlp_error_last());
		goto done;
	}

	/* The workspace; a resumed run keeps what its finished stages left. */
	workspace = xasprintf("%s/workspaces/%lld", mlp_store_data_dir(store), run);
	{
		struct stat st;

		if (!(resumed && stat(workspace, &st) == 0) &&
		    mlp_git_checkout(mirror, commit, workspace) != 0) {
			status = give_up(store, q.id, MLP_STATUS_FAILED, mlp_error_last());
			goto done;
		}
	}
	path = xasprintf("%s/%s", workspace, proj->pipeline_path);
	if (mlp_pipeline_parse(&p, &diags, path, text, len) != 0 ||
	    mlp_engine_check(p, &diags) != 0) {
		struct mlp_buf why = {0};

		mlp_buf_printf(&why, "the pipeline file at %.12s is invalid", commit);
		for (size_t i = 0; i < diags.len; i++)
			mlp_buf_printf(&why, "; %s:%d:%d: %s", proj->pipeline_path,
			               diags.items[i].pos.line, diags.items[i].pos.col,
			               diags.items[i].message);
		status = give_up(store, q.id, MLP_STATUS_FAILED, mlp_buf_str(&why));
		mlp_buf_free(&why);
		goto done;
	}
	mlp_sha256_hex(sha, text, len);
	{
		struct mlp_run_source src = {
		        .pipeline = p->name,
		        .text = text,
		        .sha256 = sha,
		        .workspace = workspace,
		        .git_commit = commit,
		        .git_author = author,
		        .git_message = message,
		};

		rc = mlp_store_run_set_pipeline(store, q.id, &src);
	}
	if (rc != 0) {
		mlp_cmd_error("%s", mlp_error_last());
		goto done;
	}
	/* The pipeline at the pushed commit decides whether it wants the push. */
	if (q.trigger && strcmp(q.trigger, "webhook") == 0 && !mlp_pipeline_wants_push(p, ref)) {
		char *why = xasprintf("not started: the pipeline at %.12s does not run on a "
		                      "push to %s (on.push)",
		                      commit, ref);

		status = give_up(store, q.id, MLP_STATUS_CANCELLED, why);
		free(why);
		goto done;
	}

	/* Stages run where `mlpipe run` would run them: the file's directory
	 * in the checkout, or its workdir. */
	if (p->workdir && p->workdir[0] == '/')
		stage_dir = xstrdup(p->workdir);
	else if (p->workdir)
		stage_dir = xasprintf("%s/%s", p->dir, p->workdir);
	else
		stage_dir = xstrdup(p->dir);
	mlp_strv_setenv(&env, "MLPIPE_COMMIT", commit);
	mlp_strv_setenv(&env, "MLPIPE_REF", ref);
	if (strncmp(ref, "refs/heads/", 11) == 0)
		mlp_strv_setenv(&env, "MLPIPE_BRANCH", ref + 11);
	else if (strncmp(ref, "refs/tags/", 10) == 0)
		mlp_strv_setenv(&env, "MLPIPE_TAG", ref + 10);
	mlp_strv_setenv(&env, "MLPIPE_AUTHOR", author);
	mlp_strv_setenv(&env, "MLPIPE_COMMIT_MESSAGE", message);
	mlp_strv_setenv(&env, "MLPIPE_PROJECT", proj->name);
	mlp_strv_setenv(&env, "MLPIPE_TRIGGER", q.trigger ? q.trigger : "api");
	self = mlp_cmd_self_exe();
	printf("run %lld: %s at %.12s (%s)%s\n", run, p->name, commit, ref,
	       resumed ? ", resumed" : "");
	fflush(stdout);
	{
		struct mlp_engine_opts eo = {
		        .jobs = (int)jobs,
		        .workspace = stage_dir,
		        .self_exe = self,
		        .extra_env = (const char *const *)env.v,
		        .resume = resumed,
		};

		status = mlp_cmd_execute_run(&result, p, store, q.id, &eo);
	}
	printf("run %lld %s%s%s\n", run, mlp_status_name(result.status), result.message ? ": " : "",
	       result.message ? result.message : "");
done:
	free(result.message);
	mlp_pipeline_free(p);
	mlp_diags_free(&diags);
	mlp_project_free_all(projects, nprojects);
	mlp_queued_run_clear(&q);
	mlp_store_close(store);
	mlp_strv_free(&env);
	free(mirror);
	free(workspace);
	free(commit);
	free(author);
	free(message);
	free(text);
	free(path);
	free(self);
	free(stage_dir);
	return status;
}

const struct mlp_cmd mlp_cmd_exec_run = {
        .name = "exec-run",
        .args = "--db PATH --run ID [--jobs N]",
        .summary = "(internal) Execute a run queued by `mlpipe serve`, in this process.",
        .help = "Started by `mlpipe serve` once per queued run.  Claims the run, fetches\n"
                "its commit into the project's mirror, checks out a workspace under the\n"
                "data directory and runs the pipeline file found at that commit.  A run\n"
                "that was interrupted is resumed: stages that succeeded are not run again.\n",
        .exec = exec_run_exec,
};
