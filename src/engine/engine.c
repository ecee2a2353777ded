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
 *
 * An attempt's own life (its environment, process, output and end) is
 * engine-attempt.c's; the state both share is in engine-int.h.
 */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "base/error.h"
#include "engine/engine-int.h"
#include "engine/stagekind.h"
#include "store/store.h"
#include "store/store-runs.h"

extern char **environ;

/* ---- observers and transactions ---------------------------------------- */

void engine_notify(struct engine *e, size_t i)
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

/*
 * Writes go into one transaction per turn of the loop, committed before
 * any process it records is started: a stage's end, its outputs and
 * metrics, the skips it causes and the starts of its dependants cost one
 * commit, not one each.
 */
int engine_tx_ensure(struct engine *e)
{
	int rc;

	if (e->in_tx)
		return 0;
	if ((rc = mlp_store_begin(e->store)) != 0)
		return rc;
	e->in_tx = true;
	return 0;
}

int engine_tx_commit(struct engine *e)
{
	int rc;

	if (!e->in_tx)
		return 0;
	e->in_tx = false;
	if ((rc = mlp_store_commit(e->store)) != 0)
		mlp_store_rollback(e->store);
	return rc;
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
		engine_set_detail(s, "%s", why);
		if ((rc = engine_tx_ensure(e)) != 0)
			return rc;
		rc = mlp_store_stage_not_run(e->store, e->run_id, s->def->name,
		                             mlp_stage_kind_name(s->def->kind), result, why);
		if (rc != 0)
			return rc;
		engine_notify(e, i);
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
		rc = engine_record_attempt(e, i);
		e->starting[n++] = i;
	}
	/* Recorded before anything runs. */
	if (rc == 0)
		rc = engine_tx_commit(e);
	for (size_t k = 0; k < n && rc == 0; k++)
		rc = engine_spawn_attempt(e, e->starting[k]);
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
		if ((rc = engine_tx_commit(e)) != 0)
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
				engine_drain_output(e, who[k]);
		for (nfds_t k = 1; k < nfd && rc == 0; k++) {
			struct stage_rt *s = &e->st[who[k]];

			if (pfd[k].revents && s->state == RUNNING && pfd[k].fd == s->proc.pidfd)
				rc = engine_handle_exit(e, who[k]);
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
		rc = engine_tx_commit(e);
	if (rc != 0) {
		/* The engine cannot go on: leave nothing running behind. */
		for (size_t i = 0; i < e->n; i++) {
			struct stage_rt *s = &e->st[i];

			if (s->state == RUNNING) {
				struct mlp_exit ex;

				mlp_proc_kill_group(&s->proc, SIGKILL);
				mlp_proc_reap(&ex, &s->proc, true);
				engine_close_attempt(s);
			}
		}
	}
	free(pfd);
	free(who);
	return rc;
}

/* ---- set-up ------------------------------------------------------------- */

/* The run's commit for ${{ run.commit }}: hex digits only, since a
 * commit counts as inert in every shell context (a value from a webhook
 * that is anything else is dropped, never run). */
static int load_commit(struct engine *e)
{
	struct mlp_run_info run = {0};
	int rc = mlp_store_run_get(&run, e->store, e->run_id);
	const char *c;

	if (rc != 0)
		return rc;
	c = run.git_commit ? run.git_commit : "";
	e->commit = xstrdup(strspn(c, "0123456789abcdef") == strlen(c) ? c : "");
	mlp_run_info_clear(&run);
	return 0;
}

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
		if (mlp_expr_expand(&value, kv->value, MLP_EXPR_RAW, engine_resolve, &rc) != 0) {
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

	if ((rc = mlp_store_attempts_list(&a, &na, e->store, e->run_id)) != 0 ||
	    (rc = mlp_store_outputs_list(&outs, &nouts, e->store, e->run_id)) != 0 ||
	    (rc = mlp_store_metrics_list(&mets, &nmets, e->store, e->run_id)) != 0)
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
		engine_set_detail(s, "succeeded before the run was interrupted");
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
		engine_notify(e, i);
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
	if ((rc = mlp_mkdirs(e.run_dir, 0755)) != 0 || (rc = load_commit(&e)) != 0)
		goto done;
	/* What an earlier mlpipe left of this run's attempts stops before any
	 * new attempt starts. */
	if (opts->resume &&
	    ((rc = mlp_engine_stop_leftovers(store, run_id)) != 0 || (rc = load_resumed(&e)) != 0))
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

		engine_close_attempt(s);
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
	free(e.commit);
	mlp_strv_free(&e.base_env);
	return rc;
}
