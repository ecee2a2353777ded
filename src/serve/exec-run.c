/*
 * exec-run.c - executing one queued run for `mlpipe serve` (see
 * exec-run.h): the serve layer's part of a run's lifecycle, where webhook
 * payloads and git meet the engine.  The engine's part (executing and
 * recording the end) is engine/run.c's.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/crypto.h"
#include "base/error.h"
#include "base/git.h"
#include "engine/run.h"
#include "pipeline/pipeline.h"
#include "serve/exec-run.h"
#include "serve/webhook.h"
#include "store/store.h"
#include "store/store-queue.h"
#include "store/store-runs.h"
#include "base/util.h"

/* Everything one execution reads and makes. */
struct exec_run {
	const struct mlp_exec_run_opts *o;
	struct mlp_store *store;
	struct mlp_queued_run q;
	struct mlp_project *projects;
	size_t nprojects;
	const struct mlp_project *proj;
	bool resumed;
	char *mirror;
	const char *ref;
	char *commit, *author, *message;
	char *text; /* the pipeline file at commit */
	size_t len;
	char *workspace;
	char *path;
	struct mlp_pipeline *p;
	struct mlp_diags diags;
	/* When the run cannot start: how it ends, and why. */
	enum mlp_status why_status;
	char *why;
};

static void exec_run_clear(struct exec_run *x)
{
	mlp_pipeline_free(x->p);
	mlp_diags_free(&x->diags);
	mlp_project_free_all(x->projects, x->nprojects);
	mlp_queued_run_clear(&x->q);
	mlp_store_close(x->store);
	free(x->mirror);
	free(x->workspace);
	free(x->commit);
	free(x->author);
	free(x->message);
	free(x->text);
	free(x->path);
	free(x->why);
}

/* The run cannot start: it ends with status, for why (owned by x now). */
static int cannot_start(struct exec_run *x, enum mlp_status status, char *why)
{
	x->why_status = status;
	x->why = why;
	return MLP_ERROR;
}

/* Records the end of a run that could not start; returns the exit code. */
static int give_up(struct exec_run *x)
{
	bool cancelled = x->why_status == MLP_STATUS_CANCELLED;

	mlp_error_warn("run %lld: %s", (long long)x->q.id, x->why);
	if (mlp_store_run_finish(x->store, x->q.id, x->why_status, cancelled ? 0 : MLP_EXIT_FAILED,
	                         x->why) != 0)
		mlp_error_warn("%s", mlp_error_last());
	return cancelled ? MLP_EXIT_OK : MLP_EXIT_FAILED;
}

static int claim(struct exec_run *x)
{
	int rc;

	if ((x->store == NULL && (rc = mlp_store_open(&x->store, x->o->db, 0)) != 0) ||
	    (rc = mlp_store_run_claim(&x->resumed, x->store, x->o->run_id)) != 0 ||
	    (rc = mlp_store_queued_run_get(&x->q, x->store, x->o->run_id)) != 0 ||
	    (rc = mlp_store_projects_list(&x->projects, &x->nprojects, x->store)) != 0)
		return rc;
	for (size_t i = 0; x->q.project && x->proj == NULL && i < x->nprojects; i++)
		if (strcmp(x->projects[i].name, x->q.project) == 0)
			x->proj = &x->projects[i];
	if (x->proj == NULL)
		return cannot_start(x, MLP_STATUS_FAILED,
		                    xasprintf("project '%s' is not configured",
		                              x->q.project ? x->q.project : "(none)"));
	return 0;
}

/* The commit and its pipeline file: fetch the ref unless the commit is in
 * the mirror already. */
static int read_source(struct exec_run *x)
{
	const struct mlp_project *proj = x->proj;

	x->mirror = xasprintf("%s/mirrors/%s.git", mlp_store_data_dir(x->store), proj->name);
	x->ref = x->q.git_ref ? x->q.git_ref : "refs/heads/main";
	if (x->q.git_commit == NULL ||
	    mlp_git_commit_info(&x->author, &x->message, x->mirror, x->q.git_commit) != 0) {
		const char *refs[] = {x->ref, NULL};
		struct mlp_git_creds creds = {proj->token_file, proj->ssh_key_file};

		if (mlp_git_mirror_fetch(x->mirror, proj->remote, refs, &creds) != 0)
			goto cannot;
	}
	x->commit = x->q.git_commit ? xstrdup(x->q.git_commit) : NULL;
	if (x->commit == NULL && mlp_git_resolve(&x->commit, x->mirror, x->ref) != 0)
		goto cannot;
	free(x->author);
	free(x->message);
	x->author = x->message = NULL;
	if (mlp_git_commit_info(&x->author, &x->message, x->mirror, x->commit) != 0 ||
	    mlp_git_read_file(&x->text, &x->len, x->mirror, x->commit, proj->pipeline_path,
	                      MLP_PIPELINE_MAX_BYTES) != 0)
		goto cannot;
	return 0;
cannot:
	return cannot_start(x, MLP_STATUS_FAILED, xstrdup(mlp_error_last()));
}

/* The workspace (a resumed run keeps its own) and the pipeline in it. */
static int check_out(struct exec_run *x)
{
	struct stat st;
	struct mlp_buf why = {0};
	int rc;

	x->workspace = xasprintf("%s/workspaces/%lld", mlp_store_data_dir(x->store),
	                         (long long)x->o->run_id);
	if (!(x->resumed && stat(x->workspace, &st) == 0) &&
	    mlp_git_checkout(x->mirror, x->commit, x->workspace) != 0)
		return cannot_start(x, MLP_STATUS_FAILED, xstrdup(mlp_error_last()));
	x->path = xasprintf("%s/%s", x->workspace, x->proj->pipeline_path);
	if (mlp_pipeline_parse(&x->p, &x->diags, x->path, x->text, x->len) == 0 &&
	    mlp_engine_check(x->p, &x->diags) == 0)
		return 0;
	mlp_buf_printf(&why, "the pipeline file at %.12s is invalid", x->commit);
	for (size_t i = 0; i < x->diags.len; i++)
		mlp_buf_printf(&why, "; %s:%d:%d: %s", x->proj->pipeline_path,
		               x->diags.items[i].pos.line, x->diags.items[i].pos.col,
		               x->diags.items[i].message);
	rc = cannot_start(x, MLP_STATUS_FAILED, xstrdup(mlp_buf_str(&why)));
	mlp_buf_free(&why);
	return rc;
}

/* What the run executes, in its row; then whether it is wanted at all. */
static int record_source(struct exec_run *x)
{
	char sha[MLP_SHA256_HEX_LEN + 1];
	struct mlp_run_source src = {
	        .pipeline = x->p->name,
	        .text = x->text,
	        .sha256 = sha,
	        .workspace = x->workspace,
	        .git_commit = x->commit,
	        .git_author = x->author,
	        .git_message = x->message,
	};
	char *refusal;
	int rc;

	mlp_sha256_hex(sha, x->text, x->len);
	if ((rc = mlp_store_run_set_pipeline(x->store, x->q.id, &src)) != 0)
		return rc;
	/* The pipeline at the run's commit decides whether it wants the run:
	 * the same rules whoever started it. */
	if ((refusal = mlp_pipeline_trigger_refusal(x->p, x->q.trigger, x->ref)) != NULL) {
		rc = cannot_start(
		        x, MLP_STATUS_CANCELLED,
		        xasprintf("not started: the pipeline at %.12s %s", x->commit, refusal));
		free(refusal);
		return rc;
	}
	return 0;
}

/* The trigger's values, for stages' environment only. */
static void trigger_env(struct mlp_strv *env, const struct exec_run *x)
{
	mlp_strv_setenv(env, "MLPIPE_COMMIT", x->commit);
	mlp_strv_setenv(env, "MLPIPE_REF", x->ref);
	if (strncmp(x->ref, "refs/heads/", 11) == 0)
		mlp_strv_setenv(env, "MLPIPE_BRANCH", x->ref + 11);
	else if (strncmp(x->ref, "refs/tags/", 10) == 0)
		mlp_strv_setenv(env, "MLPIPE_TAG", x->ref + 10);
	mlp_strv_setenv(env, "MLPIPE_AUTHOR", x->author);
	mlp_strv_setenv(env, "MLPIPE_COMMIT_MESSAGE", x->message);
	mlp_strv_setenv(env, "MLPIPE_PROJECT", x->proj->name);
	mlp_strv_setenv(env, "MLPIPE_TRIGGER", x->q.trigger ? x->q.trigger : "api");
}

static void execute(int *out_exit, struct exec_run *x)
{
	const struct mlp_pipeline *p = x->p;
	struct mlp_engine_result result = {0};
	struct mlp_strv env = {0};
	char *stage_dir;

	/* Stages run where `mlpipe run` would run them: the file's directory
	 * in the checkout, or its workdir. */
	if (p->workdir && p->workdir[0] == '/')
		stage_dir = xstrdup(p->workdir);
	else if (p->workdir)
		stage_dir = xasprintf("%s/%s", p->dir, p->workdir);
	else
		stage_dir = xstrdup(p->dir);
	trigger_env(&env, x);
	printf("run %lld: %s at %.12s (%s)%s\n", (long long)x->o->run_id, p->name, x->commit,
	       x->ref, x->resumed ? ", resumed" : "");
	fflush(stdout);
	{
		struct mlp_engine_opts eo = {
		        .jobs = x->o->jobs,
		        .workspace = stage_dir,
		        .self_exe = x->o->self_exe,
		        .extra_env = (const char *const *)env.v,
		        .resume = x->resumed,
		};

		if (mlp_run_execute(out_exit, &result, p, x->store, x->q.id, &eo) != 0)
			mlp_error_warn("%s", mlp_error_last());
	}
	printf("run %lld %s%s%s\n", (long long)x->o->run_id, mlp_status_name(result.status),
	       result.message ? ": " : "", result.message ? result.message : "");
	free(result.message);
	mlp_strv_free(&env);
	free(stage_dir);
}

/* The run, from its claim to its end; x->store may be open already. */
static int exec_run(int *out_exit, struct exec_run *x)
{
	int rc;

	*out_exit = MLP_EXIT_FAILED;
	if ((rc = claim(x)) == 0 && (rc = read_source(x)) == 0 && (rc = check_out(x)) == 0 &&
	    (rc = record_source(x)) == 0) {
		execute(out_exit, x);
	} else if (x->why) {
		*out_exit = give_up(x);
		rc = 0;
	}
	exec_run_clear(x);
	return rc;
}

int mlp_exec_run(int *out_exit, const struct mlp_exec_run_opts *o)
{
	struct exec_run x = {.o = o};
	int rc;

	/* Initialised once for the whole run: each init of libgit2 parses the
	 * system's CA bundle again (about 5 ms), and a run makes half a dozen
	 * calls into it before its first stage. */
	mlp_git_hold();
	rc = exec_run(out_exit, &x);
	mlp_git_release();
	return rc;
}

/* Reads "ID\n" from fd; 0, or MLP_ENOTFOUND at end of file (nothing to
 * do), MLP_EINVAL for anything else. */
static int read_run_id(int64_t *out, int fd)
{
	char line[32];
	size_t len = 0;
	long long id;

	while (len < sizeof(line) - 1) {
		ssize_t n = read(fd, line + len, sizeof(line) - 1 - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
		if (memchr(line, '\n', len))
			break;
	}
	if (len == 0)
		return MLP_ENOTFOUND;
	line[len] = '\0';
	line[strcspn(line, "\n")] = '\0';
	if (mlp_parse_int(&id, line, 1, INT64_MAX) != 0) {
		mlp_error_set("standby: bad run id '%s'", line);
		return MLP_EINVAL;
	}
	*out = (int64_t)id;
	return 0;
}

/* Points stdout and stderr at the run's exec log, as serve would have. */
static void redirect_to_log(const struct mlp_store *store, int64_t run)
{
	char *dir = xasprintf("%s/runs", mlp_store_data_dir(store));
	char *path = xasprintf("%s/%lld.exec.log", dir, (long long)run);
	int fd;

	mlp_mkdirs(dir, 0755);
	fflush(stdout);
	fflush(stderr);
	fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (fd >= 0) {
		dup2(fd, STDOUT_FILENO);
		dup2(fd, STDERR_FILENO);
		close(fd);
	}
	free(dir);
	free(path);
}

int mlp_exec_run_standby(int *out_exit, const struct mlp_exec_run_opts *o, int fd)
{
	struct mlp_exec_run_opts mine = *o;
	struct exec_run x = {.o = &mine};
	int devnull, rc;

	*out_exit = MLP_EXIT_OK;
	mlp_git_hold();
	if ((rc = mlp_store_open(&x.store, o->db, 0)) != 0)
		goto done;
	if ((rc = read_run_id(&mine.run_id, fd)) != 0) {
		if (rc == MLP_ENOTFOUND)
			rc = 0; /* serve stopped, or died: nothing was asked */
		goto done;
	}
	if ((devnull = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0) {
		dup2(devnull, fd);
		close(devnull);
	}
	redirect_to_log(x.store, mine.run_id);
	rc = exec_run(out_exit, &x);
	x.store = NULL; /* closed by exec_run */
done:
	mlp_store_close(x.store);
	mlp_git_release();
	return rc;
}
