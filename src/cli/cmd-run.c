/*
 * cmd-run.c - `mlpipe run FILE`: execute a pipeline here and now.
 *
 * Everything that can be refused is refused before the run is recorded: an
 * invalid file, a stage kind this build cannot execute, a missing working
 * directory, a database that cannot be written.  Those exit 2 and leave no
 * row behind.
 */
#include "config.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cmd.h"
#include "base/crypto.h"
#include "engine/engine.h"
#include "base/error.h"
#include "base/git.h"
#include "pipeline/pipeline.h"
#include "engine/stagekind.h"
#include "store/store.h"
#include "engine/live.h"
#include "base/util.h"

static bool valid_var_name(const char *s, size_t len)
{
	if (len == 0 || (s[0] >= '0' && s[0] <= '9'))
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];

		if (!(c == '_' || (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') ||
		      (c >= 'a' && c <= 'z')))
			return false;
	}
	return true;
}

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

/* Shared with exec-run (cmd.h). */
int mlp_cmd_execute_run(struct mlp_engine_result *result, const struct mlp_pipeline *p,
                        struct mlp_store *store, int64_t run_id, const struct mlp_engine_opts *eo)
{
	int status, rc;

	rc = mlp_engine_run(result, p, store, run_id, eo);
	if (rc != 0) {
		/* The engine could not go on (the database failed under it). */
		result->status = MLP_STATUS_FAILED;
		free(result->message);
		result->message = xasprintf("mlpipe stopped: %s", mlp_error_last());
	}
	switch (result->status) {
	case MLP_STATUS_SUCCEEDED:
		status = MLP_EXIT_OK;
		break;
	case MLP_STATUS_CANCELLED:
		status = 128 + (result->signal ? result->signal : SIGINT);
		break;
	default:
		status = MLP_EXIT_FAILED;
		break;
	}
	if (mlp_store_run_finish(store, run_id, result->status, status, result->message) != 0)
		mlp_cmd_error("%s", mlp_error_last());
	return status;
}

static int run_exec(int argc, char **argv)
{
	static const struct option opts[] = {
	        {"jobs", required_argument, NULL, 'j'},
	        {"var", required_argument, NULL, 'v'},
	        {"workdir", required_argument, NULL, 'C'},
	        {"db", required_argument, NULL, 'd'},
	        {"plain", no_argument, NULL, 'p'},
	        {"help", no_argument, NULL, 'h'},
	        {NULL, 0, NULL, 0},
	};
	struct mlp_kvlist vars = {0};
	struct mlp_pipeline *p = NULL;
	struct mlp_diags diags = {0};
	struct mlp_store *store = NULL;
	struct mlp_live *term = NULL;
	struct mlp_engine_result result = {0};
	char *workspace = NULL, *commit = NULL, *user = NULL, *self = NULL;
	const char *workdir_opt = NULL, *db = NULL;
	char sha[MLP_SHA256_HEX_LEN + 1];
	long long jobs = 0;
	int live = -1, c, status = MLP_EXIT_USAGE, rc;
	int64_t run_id = 0, t0;

	while ((c = getopt_long(argc, argv, "j:C:h", opts, NULL)) != -1) {
		switch (c) {
		case 'j':
			if (mlp_parse_int(&jobs, optarg, 1, 4096) != 0) {
				status = mlp_cmd_usage_error(
				        &mlp_cmd_run, "-j wants a number from 1 to 4096, not '%s'",
				        optarg);
				goto done;
			}
			break;
		case 'v': {
			const char *eq = strchr(optarg, '=');

			if (eq == NULL || !valid_var_name(optarg, (size_t)(eq - optarg))) {
				status = mlp_cmd_usage_error(
				        &mlp_cmd_run, "--var wants NAME=VALUE, not '%s'", optarg);
				goto done;
			}
			{
				char *k = xstrndup(optarg, (size_t)(eq - optarg));

				mlp_kvlist_set(&vars, k, eq + 1);
				free(k);
			}
			break;
		}
		case 'C':
			workdir_opt = optarg;
			break;
		case 'd':
			db = optarg;
			break;
		case 'p':
			live = 0;
			break;
		case 'h':
			mlp_cmd_print_help(&mlp_cmd_run, stdout);
			status = MLP_EXIT_OK;
			goto done;
		default:
			status = mlp_cmd_usage_error(&mlp_cmd_run, "unknown option");
			goto done;
		}
	}
	if (optind >= argc) {
		status = mlp_cmd_usage_error(&mlp_cmd_run, "no pipeline file given");
		goto done;
	}
	if (optind + 1 < argc) {
		status = mlp_cmd_usage_error(&mlp_cmd_run, "one pipeline file at a time");
		goto done;
	}

	rc = mlp_pipeline_load(&p, &diags, argv[optind]);
	if (rc == 0)
		rc = mlp_engine_check(p, &diags);
	if (rc != 0) {
		if (diags.len)
			mlp_diags_print(&diags, stderr);
		else
			mlp_cmd_error("%s", mlp_error_last());
		goto done;
	}
	if (resolve_workspace(&workspace, p, workdir_opt) != 0 ||
	    mlp_store_open(&store, db, 0) != 0) {
		mlp_cmd_error("%s", mlp_error_last());
		goto done;
	}

	mlp_sha256_hex(sha, p->text, p->text_len);
	mlp_git_head_commit(&commit, p->dir);
	user = mlp_cmd_current_user();
	{
		char *abs_path = NULL;
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
		rc = mlp_store_run_create(store, &run_id, &r);
		free(abs_path);
		if (rc != 0) {
			mlp_cmd_error("%s", mlp_error_last());
			goto done;
		}
	}

	self = mlp_cmd_self_exe();
	term = mlp_live_new(p, stdout, live);
	printf("run %lld: %s (%zu stage%s)\n", (long long)run_id, p->name, p->nstages,
	       p->nstages == 1 ? "" : "s");
	fflush(stdout);
	t0 = mlp_mono_ms();
	{
		struct mlp_engine_opts eo = {
		        .jobs = (int)jobs,
		        .workspace = workspace,
		        .vars = &vars,
		        .self_exe = self,
		        .observer = mlp_live_observer(term),
		};

		status = mlp_cmd_execute_run(&result, p, store, run_id, &eo);
	}
	mlp_live_finish(term, run_id, &result, mlp_mono_ms() - t0);
done:
	free(result.message);
	mlp_live_free(term);
	mlp_store_close(store);
	mlp_pipeline_free(p);
	mlp_diags_free(&diags);
	mlp_kvlist_free(&vars);
	free(workspace);
	free(commit);
	free(user);
	free(self);
	return status;
}

const struct mlp_cmd mlp_cmd_run = {
        .name = "run",
        .args = "FILE [-j N] [--var NAME=VALUE]... [--workdir DIR] [--db PATH] [--plain]",
        .summary = "Run a pipeline file here and now, recording it in the database.",
        .help = "Stages start as soon as the stages they need have succeeded, up to -j at\n"
                "a time.  Each `run:` stage is a /bin/sh -c command in its own process\n"
                "group, in the workspace (the pipeline file's directory unless the file\n"
                "or --workdir says otherwise).  On a terminal a live view shows every\n"
                "stage; elsewhere each event and log line is one plain line.\n\n"
                "Options:\n"
                "  -j, --jobs N           stages at once (default: the number of cores)\n"
                "  --var NAME=VALUE       set NAME in the pipeline's env, overriding env:\n"
                "  -C, --workdir DIR      the workspace the stages run in\n"
                "  --db PATH              the database (default: $MLPIPE_DB, else\n"
                "                         $XDG_DATA_HOME/mlpipe/mlpipe.db)\n"
                "  --plain                plain lines even on a terminal\n\n"
                "Ctrl-C or SIGTERM cancels the run: every stage's process group gets\n"
                "SIGTERM, then SIGKILL after its kill_grace, and the run is recorded as\n"
                "cancelled.\n\n"
                "Exit code: 0 the run succeeded, 1 it failed, 2 the file or the options\n"
                "are invalid (nothing was run), 130/143 cancelled by SIGINT/SIGTERM.\n",
        .exec = run_exec,
};
