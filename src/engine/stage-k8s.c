/*
 * stage-k8s.c - run and train stages on Kubernetes (see stage-k8s.h).
 *
 * The engine's half builds `mlpipe stage-k8s` the way the local kinds
 * build their commands: ${{ }} values are resolved here (the image, the
 * model path, the shell text, shell-quoted as locally), and the stage's
 * env values reach the process through its environment, never its
 * command line.  The stage's half reads the rest from the run's pipeline,
 * sweeps what dead attempts of this store left, and hands the attempt to
 * deploy/k8s-job.c.
 */
#include "config.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/crypto.h"
#include "base/error.h"
#include "deploy/k8s-job.h"
#include "deploy/k8s.h"
#include "engine/stage-io.h"
#include "engine/stage-k8s.h"
#include "store/store.h"
#include "store/store-runs.h"

/* ---- the engine's half -------------------------------------------------- */

/* The shell text, expanded, in a file of the run for the stage process. */
static int write_script(struct mlp_strv *argv, const struct mlp_stage_ctx *ctx, const char *text)
{
	char *cmd = NULL, *path;
	int rc = mlp_expr_expand(&cmd, text, MLP_EXPR_SHELL, ctx->resolve, ctx->resolve_payload);

	if (rc != 0)
		return rc;
	path = xasprintf("%s/%s.%d.k8s.sh", ctx->run_dir ? ctx->run_dir : ctx->workdir,
	                 ctx->stage->name, ctx->attempt);
	rc = mlp_write_file_atomic(path, cmd, strlen(cmd), 0600);
	if (rc == 0) {
		mlp_strv_push(argv, "--script-file");
		mlp_strv_push_owned(argv, path);
	} else {
		free(path);
	}
	free(cmd);
	return rc;
}

/* A command that is itself torchrun starts the node's ranks itself. */
static bool is_torchrun(const char *cmd)
{
	while (*cmd == ' ' || *cmd == '\t' || *cmd == '\n')
		cmd++;
	if (strncmp(cmd, "exec ", 5) == 0)
		cmd += 5;
	return strncmp(cmd, "torchrun ", 9) == 0 ||
	       strstr(cmd, "-m torch.distributed.run ") != NULL ||
	       strstr(cmd, "-m torch.distributed.launch ") != NULL;
}

static void push_env_names(struct mlp_strv *argv, const struct mlp_kvlist *env)
{
	for (size_t i = 0; i < env->len; i++) {
		mlp_strv_push(argv, "--pod-env");
		mlp_strv_push(argv, env->items[i].key);
	}
}

int mlp_stage_k8s_prepare(struct mlp_strv *argv, const struct mlp_stage_ctx *ctx)
{
	const struct mlp_stage *st = ctx->stage;
	char *value = NULL;
	int rc;

	if ((rc = mlp_stage_reenter_argv(argv, ctx, "stage-k8s")) != 0)
		return rc;
	mlp_strv_push(argv, "--attempt");
	mlp_strv_push_owned(argv, xasprintf("%d", ctx->attempt));
	if ((rc = mlp_expr_expand(&value, st->k8s.image, MLP_EXPR_RAW, ctx->resolve,
	                          ctx->resolve_payload)) != 0)
		return rc;
	mlp_strv_push(argv, "--image");
	mlp_strv_push_owned(argv, value);
	if (st->model.set) {
		if ((rc = mlp_expr_expand(&value, st->model.path, MLP_EXPR_RAW, ctx->resolve,
		                          ctx->resolve_payload)) != 0)
			return rc;
		mlp_strv_push(argv, "--model-path");
		mlp_strv_push_owned(argv, value);
	}
	push_env_names(argv, &ctx->pipeline->env);
	push_env_names(argv, &st->env);
	if (st->kind == MLP_STAGE_RUN)
		return write_script(argv, ctx, st->run);
	if (!st->train.has_builtin) {
		if (is_torchrun(st->train.command))
			mlp_strv_push(argv, "--once");
		return write_script(argv, ctx, st->train.command);
	}
	mlp_strv_push(argv, "--");
	return mlp_stage_train_builtin_argv(argv, ctx, "mlpipe-train");
}

/* ---- the stage's half --------------------------------------------------- */

/* Which store owns an object: this machine and the database's path. */
static void store_id(char out[17], const char *db)
{
	char host[256] = "", hex[MLP_SHA256_HEX_LEN + 1];
	char *key;

	gethostname(host, sizeof(host) - 1);
	key = xasprintf("%s:%s", host, db);
	mlp_sha256_hex(hex, key, strlen(key));
	snprintf(out, 17, "%.16s", hex);
	free(key);
}

static bool run_is_over(int64_t run_id, void *payload)
{
	struct mlp_run_info run = {0};
	bool over;
	int rc = mlp_store_run_get(&run, payload, run_id);

	if (rc != 0)
		return rc == MLP_ENOTFOUND; /* a run this store never had */
	over = run.status != MLP_STATUS_RUNNING;
	mlp_run_info_clear(&run);
	return over;
}

struct k8s_stage {
	struct mlp_store *s;
	struct mlp_run_info run;
	struct mlp_pipeline *p;
	struct mlp_diags diags;
	const struct mlp_stage *st;
	struct mlp_k8s *k;
	struct mlp_kvlist env;
	char *script;
};

static int load(struct k8s_stage *j, const struct mlp_stage_k8s_args *a)
{
	ssize_t idx;
	int rc;

	if ((rc = mlp_store_open(&j->s, a->db, 0)) != 0 ||
	    (rc = mlp_store_run_get(&j->run, j->s, a->run_id)) != 0)
		return rc;
	if (mlp_pipeline_parse(&j->p, &j->diags,
	                       j->run.pipeline_path ? j->run.pipeline_path : "pipeline.yml",
	                       j->run.pipeline_text, strlen(j->run.pipeline_text)) != 0) {
		mlp_error_set("the pipeline of run %lld no longer parses", (long long)a->run_id);
		return MLP_EINVAL;
	}
	idx = mlp_pipeline_find_stage(j->p, a->stage);
	if (idx < 0 || j->p->stages[idx].runs_on != MLP_RUNS_ON_KUBERNETES) {
		mlp_error_set("run %lld has no stage '%s' that runs on kubernetes",
		              (long long)a->run_id, a->stage);
		return MLP_ENOTFOUND;
	}
	j->st = &j->p->stages[idx];
	for (size_t i = 0; a->pod_env && i < a->pod_env->len; i++) {
		const char *v = getenv(a->pod_env->v[i]);

		mlp_kvlist_set(&j->env, a->pod_env->v[i], v ? v : "");
	}
	if (a->script_file &&
	    (rc = mlp_read_file(&j->script, NULL, a->script_file, 1024 * 1024)) != 0)
		return rc;
	return 0;
}

static int run_gang(struct k8s_stage *j, const struct mlp_stage_k8s_args *a,
                    struct mlp_k8s_job_result *res)
{
	const struct mlp_k8s_settings *ks = &j->st->k8s;
	struct mlp_k8s_options ko = {.kubeconfig = ks->kubeconfig, .context = ks->context};
	const struct mlp_train *t = &j->st->train;
	bool train = j->st->kind == MLP_STAGE_TRAIN;
	char id[17], *helper;
	int rc;

	store_id(id, mlp_store_path(j->s));
	if ((rc = mlp_k8s_open(&j->k, &ko)) != 0)
		return rc;
	struct mlp_k8s_job_spec spec = {
	        .k8s = ks,
	        .namespace_ = ks->namespace_ ? ks->namespace_ : mlp_k8s_namespace(j->k),
	        .image = a->image,
	        .store_id = id,
	        .run_id = a->run_id,
	        .stage = a->stage,
	        .attempt = a->attempt,
	        .commit = j->run.git_commit,
	        .nodes = train ? t->nodes : 1,
	        .ranks = train && t->ranks > 0 ? t->ranks : 1,
	        .gpus_per_node = train ? t->gpus_per_node : 0,
	        .once = !train || a->once > 0,
	        .stall_timeout_ms = train ? t->stall_timeout_ms : 0,
	        .grace_ms = j->st->kill_grace_ms / 2,
	        .deadline_ms = j->st->timeout_ms > 0 ? j->st->timeout_ms + j->st->kill_grace_ms : 0,
	        .argv = a->argv,
	        .script = j->script,
	        .env = &j->env,
	        .model_path = a->model_path,
	};
	struct mlp_k8s_job_io io = {
	        .output_path = getenv(MLP_STAGE_ENV_OUTPUT),
	        .metrics_path = getenv(MLP_STAGE_ENV_METRICS),
	        .model_dest = a->model_path,
	        .log = stdout,
	        .stop = a->stop,
	};

	helper = ks->helper_image ? xstrdup(ks->helper_image)
	                          : xasprintf("mlpipe/mlpipe:%s", PACKAGE_VERSION);
	spec.helper_image = helper;
	if (mlp_k8s_job_sweep(j->k, spec.namespace_, id, run_is_over, j->s, stdout) < 0)
		printf("[mlpipe] could not look for objects left by dead runs: %s\n",
		       mlp_error_last());
	rc = mlp_k8s_job_run(res, j->k, &ko, &spec, &io);
	free(helper);
	return rc;
}

int mlp_stage_k8s_exec(const struct mlp_stage_k8s_args *a)
{
	struct k8s_stage j = {0};
	struct mlp_k8s_job_result res = {0};
	const char *why = NULL;
	int rc, status;

	if ((rc = load(&j, a)) == 0)
		rc = run_gang(&j, a, &res);
	if (rc != 0) {
		why = mlp_error_last();
		status = 2;
	} else if (res.ok) {
		status = 0;
	} else {
		why = res.reason;
		status = res.exit_code > 0 && res.exit_code < 256 ? res.exit_code : 1;
	}
	if (why) {
		fprintf(stderr, "mlpipe: stage %s: %s\n", a->stage, why);
		mlp_stage_io_write(MLP_STAGE_ENV_REASON, why, strlen(why));
	}
	mlp_k8s_close(j.k);
	free(j.script);
	mlp_kvlist_free(&j.env);
	mlp_pipeline_free(j.p);
	mlp_diags_free(&j.diags);
	mlp_run_info_clear(&j.run);
	mlp_store_close(j.s);
	return status;
}
