/*
 * engine.c - the DAG scheduler and stage state machine (see engine.h).
 *
 * A stage moves WAITING -> (skipped | READY) -> RUNNING -> (BACKOFF ->
 * READY ...) -> DONE.  The loop is:
 *
 *   1. decide every WAITING stage whose needs are all DONE (run or skip),
 *   2. start READY stages while fewer than `jobs` run,
 *   3. poll() the signalfd, every running stage's pidfd and output pipe,
 *      with the nearest deadline (timeout, kill grace, back-off) as timeout,
 *   4. handle what poll() reported, then go to 1.
 *
 * Cancel (first SIGINT/SIGTERM): nothing new starts; running groups get
 * SIGTERM and, after their kill grace, SIGKILL.  A second signal sends
 * SIGKILL at once.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/engine.h"
#include "base/error.h"
#include "base/exec.h"
#include "pipeline/expr.h"
#include "base/json.h"
#include "engine/stage-io.h"
#include "engine/stagekind.h"
#include "store/store.h"
#include "base/util.h"

extern char **environ;

#define LOG_LINE_MAX 65536

enum rt_state { WAITING, READY, RUNNING, BACKOFF, DONE };

struct stage_rt {
	const struct mlp_stage *def;
	enum rt_state state;
	enum mlp_status result; /* when DONE */
	bool allowed_failure;   /* failed under continue_on_error */
	bool tainted;           /* it or something it needs failed */
	int attempt;
	int64_t attempt_id;
	struct mlp_proc proc;
	int log_fd;
	bool log_created;       /* the log file exists (made on first output) */
	struct mlp_stage_io io; /* $MLPIPE_OUTPUT, $MLPIPE_METRICS, $MLPIPE_REASON */
	char *log_path;
	int64_t started_ms;
	int64_t ended_ms;
	int64_t deadline_ms; /* timeout; 0: none */
	int64_t kill_at_ms;  /* SIGKILL after grace; 0: not terminating */
	int64_t retry_at_ms;
	bool timed_out;
	char detail[256];
	struct mlp_buf line;
	struct mlp_kvlist outputs;
	struct mlp_metric *metrics;
	size_t nmetrics;
};

struct engine {
	const struct mlp_pipeline *p;
	struct mlp_store *store;
	int64_t run_id;
	const struct mlp_engine_opts *opts;
	const struct mlp_engine_observer *obs;
	struct stage_rt *st;
	size_t *starting; /* scratch: stages started in this turn */
	size_t n;
	bool in_tx;
	int jobs;
	int running;
	int sigfd;
	sigset_t oldmask;
	bool cancelled;
	int cancel_signal;
	char *first_failure;
	char *run_dir;
	struct mlp_strv base_env; /* process env + pipeline env + vars */
};

/* ---- observers ---------------------------------------------------------- */

static void notify(struct engine *e, size_t i)
{
	struct stage_rt *s = &e->st[i];
	struct mlp_stage_view v = {
	        .name = s->def->name,
	        .attempt = s->attempt,
	        .max_attempts = s->def->retry.max + 1,
	        .started_ms = s->started_ms,
	        .ended_ms = s->ended_ms,
	        .retry_at_ms = s->state == BACKOFF ? s->retry_at_ms : 0,
	        .detail = s->detail[0] ? s->detail : NULL,
	        .allowed_failure = s->allowed_failure,
	};

	if (e->obs == NULL || e->obs->stage == NULL)
		return;
	switch (s->state) {
	case WAITING:
	case READY:
	case BACKOFF:
		v.status = MLP_STATUS_QUEUED;
		break;
	case RUNNING:
		v.status = MLP_STATUS_RUNNING;
		break;
	case DONE:
		v.status = s->result;
		break;
	}
	e->obs->stage(e->obs->payload, i, &v);
}

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
static void drain_output(struct engine *e, size_t i)
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

struct resolve_ctx {
	struct engine *e;
	size_t stage;
	const struct mlp_strv *env;
	char scratch[64];
};

static int resolve(const char **out, const struct mlp_expr_ref *ref, void *payload)
{
	struct resolve_ctx *rc = payload;
	struct engine *e = rc->e;
	ssize_t idx;

	switch (ref->kind) {
	case MLP_EXPR_RUN_ID:
		snprintf(rc->scratch, sizeof(rc->scratch), "%lld", (long long)e->run_id);
		*out = rc->scratch;
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

static void set_detail(struct stage_rt *s, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));

static void set_detail(struct stage_rt *s, const char *fmt, ...)
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
		int r = mlp_expr_expand(&value, s->def->env.items[k].value, MLP_EXPR_RAW, resolve,
		                        &rc);

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

/*
 * Writes go into one transaction per turn of the loop, committed before
 * any process it records is started: a stage's end, its outputs and
 * metrics, the skips it causes and the starts of its dependants cost one
 * commit, not one each.
 */
static int tx_ensure(struct engine *e)
{
	int rc;

	if (e->in_tx)
		return 0;
	if ((rc = mlp_store_begin(e->store)) != 0)
		return rc;
	e->in_tx = true;
	return 0;
}

static int tx_commit(struct engine *e)
{
	int rc;

	if (!e->in_tx)
		return 0;
	e->in_tx = false;
	if ((rc = mlp_store_commit(e->store)) != 0)
		mlp_store_rollback(e->store);
	return rc;
}

/* Records the next attempt of stage i (inside the turn's transaction). */
static int record_attempt(struct engine *e, size_t i)
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
	if ((rc = tx_ensure(e)) != 0)
		return rc;
	rc = mlp_store_attempt_start(e->store, &s->attempt_id, e->run_id, s->def->name,
	                             mlp_stage_kind_name(s->def->kind), s->attempt, s->log_path);
	if (rc != 0)
		return rc;
	s->started_ms = mlp_mono_ms();
	s->ended_ms = 0;
	s->state = RUNNING;
	e->running++;
	return 0;
}

/* Starts the process of a recorded attempt.  A failure to start fails the
 * attempt (and may retry it); only database errors are returned. */
static int spawn_attempt(struct engine *e, size_t i)
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
	        .resolve = resolve,
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
	s->deadline_ms = s->def->timeout_ms > 0 ? s->started_ms + s->def->timeout_ms : 0;
	notify(e, i);
	goto done;

failed_to_start:
	/* The attempt ends before it began: same path as a failure, and the
	 * reason goes to its log too. */
	set_detail(s, "%s", mlp_error_last());
	{
		int fd = open(s->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

		if (fd >= 0) {
			dprintf(fd, "mlpipe: the stage could not start: %s\n", s->detail);
			close(fd);
		}
	}
	s->proc.pid = -1;
	s->ended_ms = mlp_mono_ms();
	notify(e, i);
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

static void close_attempt(struct stage_rt *s)
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
	int rc = tx_ensure(e);

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
		notify(e, i);
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
	notify(e, i);
	return 0;
}

static int record_failure(struct engine *e, size_t i)
{
	struct stage_rt *s = &e->st[i];

	close_attempt(s);
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
	        .resolve = resolve,
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
static int handle_exit(struct engine *e, size_t i)
{
	struct stage_rt *s = &e->st[i];
	struct mlp_exit ex;
	int rc;

	/* Background processes the stage left behind die with it: the leader
	 * is still a zombie here, so its group id cannot have been reused. */
	mlp_proc_kill_group(&s->proc, SIGKILL);
	if ((rc = mlp_proc_reap(&s->proc, &ex, true)) != 0)
		return rc;
	drain_output(e, i);
	emit_lines(e, i, true);
	close_attempt(s);
	e->running--;
	s->ended_ms = mlp_mono_ms();

	if (s->timed_out) {
		char d[32];

		mlp_format_duration(d, sizeof(d), s->def->timeout_ms);
		set_detail(s, "timed out after %s", d);
		return finish_failed(e, i, &ex);
	}
	if (ex.code != 0) {
		/* A stage that still exits 0 after a cancel's SIGTERM succeeded. */
		if (e->cancelled)
			set_detail(s, "cancelled");
		/* A stage may explain its failure in $MLPIPE_REASON (the
		 * launcher names the rank that failed first and how): its
		 * first line is the detail instead of a bare exit code. */
		else if (!mlp_stage_io_reason(s->detail, sizeof(s->detail), &s->io))
			mlp_exit_describe(s->detail, sizeof(s->detail), &ex);
		return finish_failed(e, i, &ex);
	}
	/* A model's finish hook copies the file into the artifact store: no
	 * copy is made with this turn's write lock held. */
	if (s->def->model.set && (rc = tx_commit(e)) != 0)
		return rc;
	if (mlp_stage_io_collect(&s->outputs, &s->metrics, &s->nmetrics, &s->io) != 0 ||
	    run_finish_hook(e, i) != 0) {
		set_detail(s, "%s", mlp_error_last());
		return finish_failed(e, i, &ex);
	}

	/* The attempt's end, its outputs and its metrics: one transaction. */
	if ((rc = tx_ensure(e)) != 0)
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
	notify(e, i);
	return 0;
}

/* ---- scheduling --------------------------------------------------------- */

/* Decides stages whose needs have all ended: run them or skip them. */
static int decide_waiting(struct engine *e)
{
	for (size_t o = 0; o < e->n; o++) {
		size_t i = e->p->order[o];
		struct stage_rt *s = &e->st[i];
		bool all_ok = true, any_tainted = false;
		const char *why = NULL;
		enum mlp_status result = MLP_STATUS_SKIPPED;
		int rc;

		if (s->state != WAITING)
			continue;
		for (size_t k = 0; k < s->def->nneeds; k++) {
			struct stage_rt *need = &e->st[s->def->need_index[k]];

			if (need->state != DONE)
				goto next;
			if (need->tainted)
				any_tainted = true;
			if (need->result != MLP_STATUS_SUCCEEDED && !need->allowed_failure)
				all_ok = false;
		}
		if (e->cancelled) {
			result = MLP_STATUS_CANCELLED;
			why = "the run was cancelled";
		} else {
			switch (s->def->cond) {
			case MLP_IF_SUCCESS:
				if (all_ok) {
					s->state = READY;
					continue;
				}
				why = "a stage it needs did not succeed";
				break;
			case MLP_IF_FAILURE:
				if (any_tainted) {
					s->state = READY;
					continue;
				}
				why = "if: failure() and nothing failed";
				break;
			case MLP_IF_ALWAYS:
				s->state = READY;
				continue;
			}
		}
		s->state = DONE;
		s->result = result;
		s->tainted = any_tainted;
		set_detail(s, "%s", why);
		if ((rc = tx_ensure(e)) != 0)
			return rc;
		rc = mlp_store_stage_not_run(e->store, e->run_id, s->def->name,
		                             mlp_stage_kind_name(s->def->kind), result, why);
		if (rc != 0)
			return rc;
		notify(e, i);
		/* A skip may complete the needs of a later stage in the order. */
		o = (size_t)-1;
next:;
	}
	return 0;
}

static int start_ready(struct engine *e)
{
	size_t n = 0;
	int rc = 0;

	for (size_t o = 0; o < e->n && e->running < e->jobs && rc == 0; o++) {
		size_t i = e->p->order[o];

		if (e->st[i].state != READY)
			continue;
		rc = record_attempt(e, i);
		e->starting[n++] = i;
	}
	/* Recorded before anything runs. */
	if (rc == 0)
		rc = tx_commit(e);
	for (size_t k = 0; k < n && rc == 0; k++)
		rc = spawn_attempt(e, e->starting[k]);
	return rc;
}

static void cancel_all(struct engine *e, int sig, bool hard)
{
	int64_t now = mlp_mono_ms();

	if (!e->cancelled) {
		e->cancelled = true;
		e->cancel_signal = sig;
	}
	for (size_t i = 0; i < e->n; i++) {
		struct stage_rt *s = &e->st[i];

		if (s->state == RUNNING) {
			mlp_proc_kill_group(&s->proc, hard ? SIGKILL : SIGTERM);
			if (!hard && s->kill_at_ms == 0)
				s->kill_at_ms = now + s->def->kill_grace_ms;
		} else if (s->state == BACKOFF || s->state == READY) {
			/* Never started this time: it ends here. */
			s->state = WAITING;
		}
	}
}

/* Handles deadlines that have passed; returns the next one (or -1). */
static int64_t handle_timers(struct engine *e)
{
	int64_t now = mlp_mono_ms(), next = -1;

	for (size_t i = 0; i < e->n; i++) {
		struct stage_rt *s = &e->st[i];
		int64_t t = 0;

		if (s->state == RUNNING) {
			if (s->deadline_ms && !s->timed_out && now >= s->deadline_ms) {
				s->timed_out = true;
				mlp_proc_kill_group(&s->proc, SIGTERM);
				s->kill_at_ms = now + s->def->kill_grace_ms;
			}
			if (s->kill_at_ms && now >= s->kill_at_ms) {
				mlp_proc_kill_group(&s->proc, SIGKILL);
				s->kill_at_ms = 0;
			}
			if (s->deadline_ms && !s->timed_out)
				t = s->deadline_ms;
			if (s->kill_at_ms && (t == 0 || s->kill_at_ms < t))
				t = s->kill_at_ms;
		} else if (s->state == BACKOFF) {
			if (now >= s->retry_at_ms)
				s->state = READY;
			else
				t = s->retry_at_ms;
		}
		if (t && (next < 0 || t < next))
			next = t;
	}
	return next;
}

static bool all_done(const struct engine *e)
{
	for (size_t i = 0; i < e->n; i++)
		if (e->st[i].state != DONE)
			return false;
	return true;
}

static int engine_loop(struct engine *e)
{
	struct pollfd *pfd = xcalloc(1 + 2 * e->n, sizeof(*pfd));
	size_t *who = xcalloc(1 + 2 * e->n, sizeof(*who));
	int64_t next_tick = e->obs && e->obs->tick_ms > 0 ? mlp_mono_ms() + e->obs->tick_ms : -1;
	int rc = 0;

	for (;;) {
		int64_t next, now;
		nfds_t nfd = 0;
		int timeout, n;

		if ((rc = decide_waiting(e)) != 0)
			break;
		if (!e->cancelled && (rc = start_ready(e)) != 0)
			break;
		if (e->running == 0) {
			if (all_done(e))
				break;
			if (e->cancelled) {
				/* Nothing runs; whatever waits is cancelled. */
				if ((rc = decide_waiting(e)) != 0)
					break;
				if (all_done(e))
					break;
			}
		}
		next = handle_timers(e);
		if (e->running == 0 && !e->cancelled) {
			bool ready = false;

			for (size_t i = 0; i < e->n; i++)
				ready = ready || e->st[i].state == READY;
			if (ready)
				continue;
		}

		pfd[nfd].fd = e->sigfd;
		pfd[nfd].events = POLLIN;
		who[nfd++] = (size_t)-1;
		for (size_t i = 0; i < e->n; i++) {
			struct stage_rt *s = &e->st[i];

			if (s->state != RUNNING)
				continue;
			pfd[nfd].fd = s->proc.pidfd;
			pfd[nfd].events = POLLIN;
			who[nfd++] = i;
			if (s->proc.out_fd >= 0) {
				pfd[nfd].fd = s->proc.out_fd;
				pfd[nfd].events = POLLIN;
				who[nfd++] = i;
			}
		}
		/* Nothing waits on poll() with the write lock held. */
		if ((rc = tx_commit(e)) != 0)
			break;
		now = mlp_mono_ms();
		if (next_tick >= 0 && (next < 0 || next_tick < next))
			next = next_tick;
		timeout = next < 0 ? -1 : next <= now ? 0 : (int)(next - now);
		n = poll(pfd, nfd, timeout);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			mlp_error_set_errno(errno, "poll");
			rc = MLP_EIO;
			break;
		}
		if (next_tick >= 0 && mlp_mono_ms() >= next_tick) {
			e->obs->tick(e->obs->payload);
			next_tick = mlp_mono_ms() + e->obs->tick_ms;
		}
		/* Output first, so a stage's last lines come before its end. */
		for (nfds_t k = 1; k < nfd; k++)
			if (pfd[k].revents && pfd[k].fd == e->st[who[k]].proc.out_fd)
				drain_output(e, who[k]);
		for (nfds_t k = 1; k < nfd && rc == 0; k++) {
			struct stage_rt *s = &e->st[who[k]];

			if (pfd[k].revents && s->state == RUNNING && pfd[k].fd == s->proc.pidfd)
				rc = handle_exit(e, who[k]);
		}
		if (rc != 0)
			break;
		if (pfd[0].revents & POLLIN) {
			struct signalfd_siginfo si;

			while (read(e->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
				cancel_all(e, (int)si.ssi_signo, e->cancelled);
		}
	}
	if (rc == 0)
		rc = tx_commit(e);
	if (rc != 0) {
		/* The engine cannot go on: leave nothing running behind. */
		for (size_t i = 0; i < e->n; i++) {
			struct stage_rt *s = &e->st[i];

			if (s->state == RUNNING) {
				struct mlp_exit ex;

				mlp_proc_kill_group(&s->proc, SIGKILL);
				mlp_proc_reap(&s->proc, &ex, true);
				close_attempt(s);
			}
		}
	}
	free(pfd);
	free(who);
	return rc;
}

/* ---- set-up ------------------------------------------------------------- */

int mlp_engine_check(const struct mlp_pipeline *p, struct mlp_diags *diags)
{
	int rc = 0;

	for (size_t i = 0; i < p->nstages; i++) {
		const struct mlp_stage *s = &p->stages[i];
		const struct mlp_stage_kind_ops *ops = mlp_stage_kind_ops(s->kind);

		if (ops->check && ops->check(diags, p, s) != 0)
			rc = MLP_EINVAL;
		if (ops->prepare == NULL) {
			mlp_diags_add(diags, p->path, s->kind_pos,
			              "stage '%s': '%s' stages are not executed by this version "
			              "of mlpipe (%s)",
			              s->name, mlp_stage_kind_name(s->kind), PACKAGE_VERSION);
			rc = MLP_EINVAL;
		}
	}
	return rc;
}

static int build_base_env(struct engine *e)
{
	struct resolve_ctx rc = {.e = e, .stage = (size_t)-1, .env = &e->base_env};

	for (char **v = environ; *v; v++)
		mlp_strv_push(&e->base_env, *v);
	/* mlpipe's own directory first on PATH: `mlpipe` and the programs
	 * installed beside it resolve to the build that runs the pipeline,
	 * installed or not. */
	if (e->opts->self_exe && e->opts->self_exe[0] == '/') {
		const char *path = mlp_strv_getenv(&e->base_env, "PATH");
		char *dir = mlp_dirname(e->opts->self_exe);
		char *newpath =
		        xasprintf("%s:%s", dir, path ? path : "/usr/local/bin:/usr/bin:/bin");

		mlp_strv_setenv(&e->base_env, "PATH", newpath);
		free(newpath);
		free(dir);
	}
	/* In file order, so a value can use the ones before it; --var values
	 * take the place of the file's, and later values see them. */
	for (size_t k = 0; k < e->p->env.len; k++) {
		const struct mlp_kv *kv = &e->p->env.items[k];
		const char *var = e->opts->vars ? mlp_kvlist_get(e->opts->vars, kv->key) : NULL;
		char *value;

		if (var) {
			mlp_strv_setenv(&e->base_env, kv->key, var);
			continue;
		}
		if (mlp_expr_expand(&value, kv->value, MLP_EXPR_RAW, resolve, &rc) != 0) {
			char *msg = xasprintf("env %s: %s", kv->key, mlp_error_last());

			mlp_error_set("%s", msg);
			free(msg);
			return MLP_EINVAL;
		}
		mlp_strv_setenv(&e->base_env, kv->key, value);
		free(value);
	}
	if (e->opts->vars)
		for (size_t k = 0; k < e->opts->vars->len; k++)
			mlp_strv_setenv(&e->base_env, e->opts->vars->items[k].key,
			                e->opts->vars->items[k].value);
	/* The trigger's values (serve): last, so a pipeline cannot fake them. */
	for (const char *const *kv = e->opts->extra_env; kv && *kv; kv++) {
		const char *eq = strchr(*kv, '=');

		if (eq) {
			char *name = xstrndup(*kv, (size_t)(eq - *kv));

			mlp_strv_setenv(&e->base_env, name, eq + 1);
			free(name);
		}
	}
	return 0;
}

/* ---- resuming an interrupted run (serve) ---------------------------------
 *
 * A stage whose latest attempt in the store succeeded is DONE before the
 * loop starts, with the outputs and metrics it recorded (later stages'
 * ${{ stages.X... }} see them); every other stage starts again, its
 * attempt numbers continuing from the stored ones so no record or file of
 * the earlier attempts is overwritten.
 */
static int load_resumed(struct engine *e)
{
	struct mlp_attempt_info *a = NULL;
	struct mlp_stage_value *outs = NULL, *mets = NULL;
	size_t na = 0, nouts = 0, nmets = 0;
	int rc;

	if ((rc = mlp_store_attempts_list(e->store, &a, &na, e->run_id)) != 0 ||
	    (rc = mlp_store_outputs_list(e->store, &outs, &nouts, e->run_id)) != 0 ||
	    (rc = mlp_store_metrics_list(e->store, &mets, &nmets, e->run_id)) != 0)
		goto done;
	for (size_t i = 0; i < e->n; i++) {
		struct stage_rt *s = &e->st[i];
		bool succeeded = false;

		for (size_t k = 0; k < na; k++) {
			if (strcmp(a[k].stage, s->def->name) != 0 || a[k].attempt < s->attempt)
				continue;
			s->attempt = a[k].attempt;
			succeeded = a[k].status == MLP_STATUS_SUCCEEDED;
		}
		if (!succeeded)
			continue;
		s->state = DONE;
		s->result = MLP_STATUS_SUCCEEDED;
		set_detail(s, "succeeded before the run was interrupted");
		for (size_t k = 0; k < nouts; k++)
			if (strcmp(outs[k].stage, s->def->name) == 0)
				mlp_kvlist_set(&s->outputs, outs[k].name, outs[k].text);
		for (size_t k = 0; k < nmets; k++) {
			if (strcmp(mets[k].stage, s->def->name) != 0)
				continue;
			s->metrics = xrealloc(s->metrics, (s->nmetrics + 1) * sizeof(*s->metrics));
			s->metrics[s->nmetrics].name = xstrdup(mets[k].name);
			s->metrics[s->nmetrics++].value = mets[k].number;
		}
		notify(e, i);
	}
done:
	mlp_attempt_info_free_all(a, na);
	mlp_stage_value_free_all(outs, nouts);
	mlp_stage_value_free_all(mets, nmets);
	return rc;
}

int mlp_engine_run(struct mlp_engine_result *out, const struct mlp_pipeline *p,
                   struct mlp_store *store, int64_t run_id, const struct mlp_engine_opts *opts)
{
	struct engine e = {
	        .p = p,
	        .store = store,
	        .run_id = run_id,
	        .opts = opts,
	        .obs = opts->observer,
	        .n = p->nstages,
	        .sigfd = -1,
	};
	sigset_t mask;
	int rc;
	bool any_failed = false;

	memset(out, 0, sizeof(*out));
	e.jobs = opts->jobs > 0 ? opts->jobs : (int)sysconf(_SC_NPROCESSORS_ONLN);
	if (e.jobs < 1)
		e.jobs = 1;
	e.st = xcalloc(e.n, sizeof(*e.st));
	e.starting = xcalloc(e.n, sizeof(*e.starting));
	for (size_t i = 0; i < e.n; i++) {
		e.st[i].def = &p->stages[i];
		e.st[i].log_fd = -1;
		e.st[i].proc.pid = -1;
		e.st[i].proc.pidfd = -1;
		e.st[i].proc.out_fd = -1;
	}
	e.run_dir = xasprintf("%s/runs/%lld", mlp_store_data_dir(store), (long long)run_id);
	if ((rc = mlp_mkdirs(e.run_dir, 0755)) != 0)
		goto done;
	if (opts->resume && (rc = load_resumed(&e)) != 0)
		goto done;
	if ((rc = build_base_env(&e)) != 0) {
		/* A pipeline env that cannot be expanded fails the run. */
		out->status = MLP_STATUS_FAILED;
		out->message = xstrdup(mlp_error_last());
		rc = 0;
		goto done;
	}

	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, &e.oldmask);
	e.sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (e.sigfd < 0) {
		mlp_error_set_errno(errno, "signalfd");
		rc = MLP_EIO;
		goto done;
	}

	rc = engine_loop(&e);
	if (rc != 0)
		goto done;
	for (size_t i = 0; i < e.n; i++)
		if (e.st[i].result == MLP_STATUS_FAILED && !e.st[i].allowed_failure)
			any_failed = true;
	if (e.cancelled) {
		out->status = MLP_STATUS_CANCELLED;
		out->signal = e.cancel_signal;
		out->message = xasprintf("cancelled by SIG%s", sigabbrev_np(e.cancel_signal));
	} else if (any_failed) {
		out->status = MLP_STATUS_FAILED;
		out->message = e.first_failure;
		e.first_failure = NULL;
	} else {
		out->status = MLP_STATUS_SUCCEEDED;
	}
done:
	if (e.sigfd >= 0) {
		close(e.sigfd);
		sigprocmask(SIG_SETMASK, &e.oldmask, NULL);
	}
	for (size_t i = 0; i < e.n; i++) {
		struct stage_rt *s = &e.st[i];

		close_attempt(s);
		mlp_stage_io_clear(&s->io);
		free(s->log_path);
		mlp_buf_free(&s->line);
		mlp_kvlist_free(&s->outputs);
		mlp_metrics_free(s->metrics, s->nmetrics);
	}
	if (e.in_tx)
		mlp_store_rollback(store);
	free(e.st);
	free(e.starting);
	free(e.first_failure);
	free(e.run_dir);
	mlp_strv_free(&e.base_env);
	return rc;
}
