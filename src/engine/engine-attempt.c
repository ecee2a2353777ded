/*
 * engine-attempt.c - one attempt of a stage, from its record to its end
 * (see engine-int.h): the ${{ }} values and environment it gets, the
 * process its kind prepares, its output into the log and the observer,
 * and on exit its outputs and metrics, or a retry, or the stage's failure.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"
#include "engine/engine-int.h"
#include "engine/stagekind.h"
#include "store/store.h"
#include "store/store-runs.h"

#define LOG_LINE_MAX 65536

/* ---- output ------------------------------------------------------------- */

static void emit_lines(struct engine *e, size_t i, bool flush)
{
	struct stage_rt *s = &e->st[i];
	size_t start = 0;

	for (size_t k = 0; k < s->line.len; k++) {
		if (s->line.data[k] == '\n') {
			size_t end = k;

			if (end > start && s->line.data[end - 1] == '\r')
				end--;
			if (e->obs && e->obs->log)
				e->obs->log(e->obs->payload, i, s->line.data + start, end - start);
			start = k + 1;
		}
	}
	if ((flush || s->line.len - start >= LOG_LINE_MAX) && start < s->line.len) {
		if (e->obs && e->obs->log)
			e->obs->log(e->obs->payload, i, s->line.data + start, s->line.len - start);
		start = s->line.len;
	}
	if (start > 0) {
		memmove(s->line.data, s->line.data + start, s->line.len - start);
		s->line.len -= start;
		s->line.data[s->line.len] = '\0';
	}
}

/* Reads what is available on a stage's pipe; closes it at EOF. */
void engine_drain_output(struct engine *e, size_t i)
{
	struct stage_rt *s = &e->st[i];
	char buf[65536];

	while (s->proc.out_fd >= 0) {
		ssize_t n = read(s->proc.out_fd, buf, sizeof(buf));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
				close(s->proc.out_fd);
				s->proc.out_fd = -1;
			}
			break;
		}
		if (s->log_fd < 0 && !s->log_created) {
			/* Created on the first byte: a stage that prints nothing
			 * costs no file (creating one is most of a short stage's
			 * cost to mlpipe on ext4). */
			s->log_created = true;
			s->log_fd = open(s->log_path,
			                 O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_APPEND, 0644);
			if (s->log_fd < 0)
				fprintf(stderr, "mlpipe: cannot create log %s: %s\n", s->log_path,
				        strerror(errno));
		}
		if (s->log_fd >= 0) {
			const char *p = buf;
			size_t left = (size_t)n;

			while (left > 0) {
				ssize_t w = write(s->log_fd, p, left);

				if (w < 0 && errno == EINTR)
					continue;
				if (w <= 0)
					break;
				p += w;
				left -= (size_t)w;
			}
		}
		mlp_buf_add(&s->line, buf, (size_t)n);
		emit_lines(e, i, false);
	}
}

/* ---- expressions -------------------------------------------------------- */

int engine_resolve(const char **out, const struct mlp_expr_ref *ref, void *payload)
{
	struct resolve_ctx *rc = payload;
	struct engine *e = rc->e;
	ssize_t idx;

	switch (ref->kind) {
	case MLP_EXPR_RUN_ID:
		snprintf(rc->scratch, sizeof(rc->scratch), "%lld", (long long)e->run_id);
		*out = rc->scratch;
		return 0;
	case MLP_EXPR_RUN_COMMIT:
		*out = e->commit ? e->commit : "";
		return 0;
	case MLP_EXPR_ENV:
		*out = mlp_strv_getenv(rc->env, ref->name);
		if (*out == NULL) {
			mlp_error_set("${{ env.%s }}: the variable is not set", ref->name);
			return MLP_EINVAL;
		}
		return 0;
	case MLP_EXPR_OUTPUT:
	case MLP_EXPR_METRIC:
		break;
	}
	idx = mlp_pipeline_find_stage(e->p, ref->stage);
	if (idx < 0) {
		mlp_error_set("unknown stage '%s' in expression", ref->stage);
		return MLP_EINVAL;
	}
	if (ref->kind == MLP_EXPR_OUTPUT) {
		*out = mlp_kvlist_get(&e->st[idx].outputs, ref->name);
		if (*out == NULL) {
			mlp_error_set(
			        "${{ stages.%s.outputs.%s }}: stage '%s' wrote no output '%s'",
			        ref->stage, ref->name, ref->stage, ref->name);
			return MLP_EINVAL;
		}
		return 0;
	}
	for (size_t k = 0; k < e->st[idx].nmetrics; k++) {
		if (strcmp(e->st[idx].metrics[k].name, ref->name) == 0) {
			double v = e->st[idx].metrics[k].value;

			snprintf(rc->scratch, sizeof(rc->scratch), "%.15g", v);
			if (strtod(rc->scratch, NULL) != v)
				snprintf(rc->scratch, sizeof(rc->scratch), "%.17g", v);
			*out = rc->scratch;
			return 0;
		}
	}
	mlp_error_set("${{ stages.%s.metrics.%s }}: stage '%s' reported no metric '%s'", ref->stage,
	              ref->name, ref->stage, ref->name);
	return MLP_EINVAL;
}

/* ---- starting and ending attempts --------------------------------------- */

void engine_set_detail(struct stage_rt *s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(s->detail, sizeof(s->detail), fmt, ap);
	va_end(ap);
}

static char *stage_workdir(struct engine *e, const struct mlp_stage *def)
{
	if (def->workdir == NULL)
		return xstrdup(e->opts->workspace);
	if (def->workdir[0] == '/')
		return xstrdup(def->workdir);
	return xasprintf("%s/%s", e->opts->workspace, def->workdir);
}

static int build_env(struct engine *e, size_t i, struct mlp_strv *env, const char *workdir)
{
	struct stage_rt *s = &e->st[i];
	struct resolve_ctx rc = {.e = e, .stage = i, .env = &e->base_env};
	char num[32];

	for (size_t k = 0; k < e->base_env.len; k++)
		mlp_strv_push(env, e->base_env.v[k]);
	for (size_t k = 0; k < s->def->env.len; k++) {
		char *value;
		int r = mlp_expr_expand(&value, s->def->env.items[k].value, MLP_EXPR_RAW,
		                        engine_resolve, &rc);

		if (r != 0)
			return r;
		mlp_strv_setenv(env, s->def->env.items[k].key, value);
		free(value);
	}
	/* The trigger's values win over a stage's env: as for the pipeline's,
	 * a file cannot fake the commit it was pushed in. */
	for (const char *const *kv = e->opts->extra_env; kv && *kv; kv++) {
		const char *eq = strchr(*kv, '=');

		if (eq) {
			char *name = xstrndup(*kv, (size_t)(eq - *kv));

			mlp_strv_setenv(env, name, eq + 1);
			free(name);
		}
	}
	snprintf(num, sizeof(num), "%lld", (long long)e->run_id);
	mlp_strv_setenv(env, "MLPIPE_RUN_ID", num);
	mlp_strv_setenv(env, "MLPIPE_PIPELINE", e->p->name);
	mlp_strv_setenv(env, "MLPIPE_STAGE", s->def->name);
	snprintf(num, sizeof(num), "%d", s->attempt);
	mlp_strv_setenv(env, "MLPIPE_ATTEMPT", num);
	mlp_strv_setenv(env, "MLPIPE_WORKSPACE", e->opts->workspace);
	mlp_strv_setenv(env, "MLPIPE_WORKDIR", workdir);
	mlp_stage_io_setenv(env, &s->io);
	return 0;
}

static int record_failure(struct engine *e, size_t i);

/* Records the next attempt of stage i (inside the turn's transaction). */
int engine_record_attempt(struct engine *e, size_t i)
{
	struct stage_rt *s = &e->st[i];
	int rc;

	s->attempt++;
	s->timed_out = false;
	s->kill_at_ms = 0;
	s->retry_at_ms = 0;
	s->detail[0] = '\0';
	mlp_kvlist_free(&s->outputs);
	mlp_metrics_free(s->metrics, s->nmetrics);
	s->metrics = NULL;
	s->nmetrics = 0;
	free(s->log_path);
	/* The run's directory is new and attempts are numbered: these paths
	 * never exist yet. */
	mlp_stage_io_init(&s->io, e->run_dir, s->def->name, s->attempt);
	s->log_path = xasprintf("%s/%s.%d.log", e->run_dir, s->def->name, s->attempt);
	if ((rc = engine_tx_ensure(e)) != 0)
		return rc;
	rc = mlp_store_attempt_start(&s->attempt_id, e->store, e->run_id, s->def->name,
	                             mlp_stage_kind_name(s->def->kind), s->attempt, s->log_path);
	if (rc != 0)
		return rc;
	s->started_ms = mlp_mono_ms();
	s->ended_ms = 0;
	s->state = RUNNING;
	e->running++;
	return 0;
}

/*
 * Records the group of the attempt's new process, so that what it leaves
 * running when this mlpipe is killed -9 can be stopped before the next
 * attempt (engine-leftovers.c).  It goes into the turn's transaction,
 * committed before the loop waits.  The process is our unreaped child, so
 * /proc has it even if it has exited already.
 */
static int record_group(struct engine *e, size_t i)
{
	struct stage_rt *s = &e->st[i];
	struct mlp_proc_identity id;
	struct mlp_attempt_group g = {.attempt_id = s->attempt_id};
	int rc;

	if (mlp_proc_identity(&id, s->proc.pid) != 0)
		return 0;
	g.pgid = id.pgid;
	g.session = id.session;
	g.start_time = (int64_t)id.start_time;
	g.kill_grace_ms = s->def->kill_grace_ms;
	if ((rc = engine_tx_ensure(e)) != 0)
		return rc;
	return mlp_store_attempt_set_group(e->store, &g);
}

/* Starts the process of a recorded attempt.  A failure to start fails the
 * attempt (and may retry it); only database errors are returned. */
int engine_spawn_attempt(struct engine *e, size_t i)
{
	struct stage_rt *s = &e->st[i];
	const struct mlp_stage_kind_ops *ops = mlp_stage_kind_ops(s->def->kind);
	struct mlp_strv env = {0}, argv = {0};
	char *workdir = stage_workdir(e, s->def);
	struct resolve_ctx rctx = {.e = e, .stage = i, .env = &env};
	struct mlp_stage_ctx ctx = {
	        .pipeline = e->p,
	        .stage = s->def,
	        .run_id = e->run_id,
	        .attempt = s->attempt,
	        .workdir = workdir,
	        .run_dir = e->run_dir,
	        .self_exe = e->opts->self_exe,
	        .store = e->store,
	        .env = &env,
	        .resolve = engine_resolve,
	        .resolve_payload = &rctx,
	};
	int rc = 0;

	s->log_created = false;
	if (build_env(e, i, &env, workdir) != 0 || ops->prepare(&argv, &ctx) != 0)
		goto failed_to_start;
	{
		struct mlp_spawn spec = {
		        .argv = argv.v,
		        .envp = env.v,
		        .cwd = workdir,
		        .capture = true,
		};

		if (mlp_proc_spawn(&s->proc, &spec) != 0)
			goto failed_to_start;
	}
	if ((rc = record_group(e, i)) != 0)
		goto done;
	s->deadline_ms = s->def->timeout_ms > 0 ? s->started_ms + s->def->timeout_ms : 0;
	engine_notify(e, i);
	goto done;

failed_to_start:
	/* The attempt ends before it began: same path as a failure, and the
	 * reason goes to its log too. */
	engine_set_detail(s, "%s", mlp_error_last());
	{
		int fd = open(s->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

		if (fd >= 0) {
			dprintf(fd, "mlpipe: the stage could not start: %s\n", s->detail);
			close(fd);
		}
	}
	s->proc.pid = -1;
	s->ended_ms = mlp_mono_ms();
	engine_notify(e, i);
	rc = record_failure(e, i);
done:
	mlp_strv_free(&env);
	mlp_strv_free(&argv);
	free(workdir);
	return rc;
}

static bool retry_matches(const struct mlp_retry *r, const struct stage_rt *s,
                          const struct mlp_exit *ex)
{
	if (r->non == 0)
		return true;
	for (size_t k = 0; k < r->non; k++) {
		const struct mlp_retry_rule *rule = &r->on[k];

		switch (rule->match) {
		case MLP_RETRY_ANY:
			return true;
		case MLP_RETRY_TIMEOUT:
			if (s->timed_out)
				return true;
			break;
		case MLP_RETRY_SIGNAL:
			if (!s->timed_out && ex && ex->signal &&
			    (rule->value < 0 || rule->value == ex->signal))
				return true;
			break;
		case MLP_RETRY_EXIT:
			if (!s->timed_out && ex && ex->signal == 0 && ex->code > 0 &&
			    (rule->value < 0 || rule->value == ex->code))
				return true;
			break;
		}
	}
	return false;
}

void engine_close_attempt(struct stage_rt *s)
{
	mlp_proc_close(&s->proc);
	s->proc.pid = -1;
	if (s->log_fd >= 0) {
		close(s->log_fd);
		s->log_fd = -1;
	}
}

/*
 * The current attempt of stage i failed (s->detail says why): retry it,
 * or mark the stage failed.  ex is NULL when no process ran.
 */
static int finish_failed(struct engine *e, size_t i, const struct mlp_exit *ex)
{
	struct stage_rt *s = &e->st[i];
	const struct mlp_retry *r = &s->def->retry;
	struct mlp_attempt_end end = {
	        .status = e->cancelled ? MLP_STATUS_CANCELLED : MLP_STATUS_FAILED,
	        .exit_code = ex ? ex->code : -1,
	        .signal = ex ? ex->signal : 0,
	        .timed_out = s->timed_out,
	        .message = s->detail,
	};
	int rc = engine_tx_ensure(e);

	if (rc == 0)
		rc = mlp_store_attempt_finish(e->store, s->attempt_id, &end);
	if (rc != 0)
		return rc;
	if (!e->cancelled && s->attempt <= r->max && retry_matches(r, s, ex)) {
		double delay = (double)r->backoff_ms;

		for (int k = 1; k < s->attempt; k++)
			delay *= r->backoff_factor > 0 ? r->backoff_factor : 1;
		if (r->backoff_max_ms > 0 && delay > (double)r->backoff_max_ms)
			delay = (double)r->backoff_max_ms;
		s->state = BACKOFF;
		s->retry_at_ms = mlp_mono_ms() + (int64_t)delay;
		engine_notify(e, i);
		return 0;
	}
	s->state = DONE;
	if (e->cancelled) {
		s->result = MLP_STATUS_CANCELLED;
	} else {
		s->result = MLP_STATUS_FAILED;
		if (s->def->continue_on_error) {
			s->allowed_failure = true;
		} else {
			s->tainted = true;
			if (e->first_failure == NULL)
				e->first_failure =
				        xasprintf("stage '%s' failed: %s", s->def->name, s->detail);
		}
	}
	engine_notify(e, i);
	return 0;
}

static int record_failure(struct engine *e, size_t i)
{
	struct stage_rt *s = &e->st[i];

	engine_close_attempt(s);
	e->running--;
	return finish_failed(e, i, NULL);
}

/* Runs the kind's finish hook (model files ...) after a success. */
static int run_finish_hook(struct engine *e, size_t i)
{
	struct stage_rt *s = &e->st[i];
	const struct mlp_stage_kind_ops *ops = mlp_stage_kind_ops(s->def->kind);
	struct resolve_ctx rctx = {.e = e, .stage = i, .env = &e->base_env};
	struct mlp_stage_ctx ctx = {
	        .pipeline = e->p,
	        .stage = s->def,
	        .run_id = e->run_id,
	        .attempt = s->attempt,
	        .self_exe = e->opts->self_exe,
	        .store = e->store,
	        .resolve = engine_resolve,
	        .resolve_payload = &rctx,
	        .metrics = s->metrics,
	        .nmetrics = s->nmetrics,
	};
	char *workdir;
	int rc;

	if (ops->finish == NULL)
		return 0;
	workdir = stage_workdir(e, s->def);
	ctx.workdir = workdir;
	rc = ops->finish(&s->outputs, &ctx);
	free(workdir);
	return rc;
}

/* The process of stage i has exited (its pidfd is readable). */
int engine_handle_exit(struct engine *e, size_t i)
{
	struct stage_rt *s = &e->st[i];
	struct mlp_exit ex;
	int rc;

	/* Background processes the stage left behind die with it: the leader
	 * is still a zombie here, so its group id cannot have been reused. */
	mlp_proc_kill_group(&s->proc, SIGKILL);
	if ((rc = mlp_proc_reap(&ex, &s->proc, true)) != 0)
		return rc;
	engine_drain_output(e, i);
	emit_lines(e, i, true);
	engine_close_attempt(s);
	e->running--;
	s->ended_ms = mlp_mono_ms();

	if (s->timed_out) {
		char d[32];

		mlp_format_duration(d, sizeof(d), s->def->timeout_ms);
		engine_set_detail(s, "timed out after %s", d);
		return finish_failed(e, i, &ex);
	}
	if (ex.code != 0) {
		/* A stage that still exits 0 after a cancel's SIGTERM succeeded. */
		if (e->cancelled)
			engine_set_detail(s, "cancelled");
		/* A stage may explain its failure in $MLPIPE_REASON (the
		 * launcher names the rank that failed first and how): its
		 * first line is the detail instead of a bare exit code. */
		else if (!mlp_stage_io_reason(s->detail, sizeof(s->detail), &s->io))
			mlp_exit_describe(s->detail, sizeof(s->detail), &ex);
		return finish_failed(e, i, &ex);
	}
	/* A model's finish hook copies the file into the artifact store: no
	 * copy is made with this turn's write lock held. */
	if (s->def->model.set && (rc = engine_tx_commit(e)) != 0)
		return rc;
	if (mlp_stage_io_collect(&s->outputs, &s->metrics, &s->nmetrics, &s->io) != 0 ||
	    run_finish_hook(e, i) != 0) {
		engine_set_detail(s, "%s", mlp_error_last());
		return finish_failed(e, i, &ex);
	}

	/* The attempt's end, its outputs and its metrics: one transaction. */
	if ((rc = engine_tx_ensure(e)) != 0)
		return rc;
	{
		struct mlp_attempt_end end = {
		        .status = MLP_STATUS_SUCCEEDED,
		        .exit_code = 0,
		};

		rc = mlp_store_attempt_finish(e->store, s->attempt_id, &end);
	}
	for (size_t k = 0; rc == 0 && k < s->outputs.len; k++)
		rc = mlp_store_output_put(e->store, e->run_id, s->def->name,
		                          s->outputs.items[k].key, s->outputs.items[k].value);
	for (size_t k = 0; rc == 0 && k < s->nmetrics; k++)
		rc = mlp_store_metric_put(e->store, e->run_id, s->def->name, s->metrics[k].name,
		                          s->metrics[k].value);
	if (rc != 0)
		return rc;
	s->state = DONE;
	s->result = MLP_STATUS_SUCCEEDED;
	engine_notify(e, i);
	return 0;
}
