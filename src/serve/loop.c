/*
 * loop.c - the main loop of `mlpipe serve` and its entry point,
 * mlp_serve_run() (serve.h): starting up, signals, the poll loop, and the
 * graceful stop.
 *
 * One thread, one poll(): a signalfd (SIGCHLD reaps, SIGTERM/SIGINT/SIGHUP
 * stop), the wake-up eventfd the HTTP threads and the poller write when
 * they queue, and the test clock's inotify descriptor.  Its timeout is the
 * only timer: the next schedule fire while serving, the end of the grace
 * period (then of the cancel) while stopping.  What happens on each wake
 * is the other files' (schedules.c, dispatch.c); who owns which thread and
 * which connection is in serve-int.h.
 */
#include "config.h"

#include <assert.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "base/error.h"
#include "base/git.h"
#include "base/util.h"
#include "serve/serve-int.h"
#include "serve/serve.h"
#include "store/store.h"

/* The main loop's own state. */
struct loop {
	struct serve *sv;
	int sigfd;
	/* The caller's signal mask, which the runs' children get back. */
	sigset_t child_mask;
	int64_t stop_at; /* stopping: the end of the grace period (mlp_mono_ms) */
	int64_t term_at; /* after it: when to SIGKILL what still runs; 0: not yet */
	bool reload;     /* read the schedules again */
	/* Not before then (mlp_mono_ms): a burst of deliveries reads them
	 * once, not once each. */
	int64_t reload_after;
};

/* Schedules are read again at most this often (ms). */
#define RELOAD_MIN_MS 1000

void serve_log(struct serve *sv, const char *fmt, ...)
{
	char when[40];
	va_list ap;
	char *msg;

	va_start(ap, fmt);
	msg = xvasprintf(fmt, ap);
	va_end(ap);
	mlp_format_time(when, sizeof(when), mlp_wall_ms());
	fprintf(sv->log, "%s %s\n", when, msg);
	fflush(sv->log);
	free(msg);
}

void serve_wake(struct serve *sv)
{
	uint64_t one = 1;

	if (write(sv->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		serve_log(sv, "cannot wake the dispatcher: %s", strerror(errno));
}

/* ---- the loop -------------------------------------------------------------- */

/* The first signal to stop: no new work, and the grace period starts. */
static void loop_begin_stop(struct loop *l, int signo)
{
	struct serve *sv = l->sv;

	serve_log(sv, "SIG%s: no new work; waiting up to %lld ms for %zu run(s)",
	          sigabbrev_np(signo), (long long)sv->cfg.grace_ms, sv->nchildren);
	atomic_store(&sv->stopping, true);
	serve_standby_stop(sv);
	mlp_server_quiesce(sv->http);
	serve_poller_wake(sv);
	l->stop_at = mlp_mono_ms() + sv->cfg.grace_ms;
}

static void loop_read_signals(struct loop *l)
{
	struct signalfd_siginfo si;

	while (read(l->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		if (si.ssi_signo == SIGCHLD)
			serve_reap(l->sv);
		else if (!atomic_load(&l->sv->stopping))
			loop_begin_stop(l, (int)si.ssi_signo);
		else
			l->stop_at = 0; /* A second signal: stop waiting. */
	}
}

/*
 * While stopping, with runs still going: once the grace period is over
 * they are cancelled (exec-run stops gracefully on SIGTERM), and 30 s later
 * killed.  Returns how long the loop may wait, in ms.
 */
static int64_t loop_wind_down(struct loop *l)
{
	struct serve *sv = l->sv;
	int64_t mono = mlp_mono_ms(), timeout_ms;

	if (l->term_at == 0 && mono >= l->stop_at) {
		/* The grace period is over: cancel what still runs. */
		serve_log(sv, "grace period over: cancelling %zu run(s)", sv->nchildren);
		serve_children_cancel(sv);
		l->term_at = mono + 30000;
	} else if (l->term_at && mono >= l->term_at) {
		serve_children_kill(sv);
		l->term_at = mono + 60000;
	}
	timeout_ms = (l->term_at ? l->term_at : l->stop_at) - mono;
	return timeout_ms < 0 ? 0 : timeout_ms;
}

/* Until stopped with no run left (0), or poll() fails (MLP_EIO). */
static int loop_run(struct loop *l)
{
	struct serve *sv = l->sv;

	l->reload = true;
	for (;;) {
		struct pollfd pfd[3] = {
		        {l->sigfd, POLLIN, 0},
		        {sv->wake_fd, POLLIN, 0},
		        {sv->clock_fd, POLLIN, 0},
		};
		int64_t now = serve_clock_now(sv), timeout_ms;

		/* The queue first: a webhook's run does not wait for the
		 * schedules to be read again from every project's mirror. */
		serve_dispatch(sv, &l->child_mask);
		if (l->reload && !atomic_load(&sv->stopping) && mlp_mono_ms() >= l->reload_after) {
			serve_schedules_reload(sv);
			l->reload = false;
			l->reload_after = mlp_mono_ms() + RELOAD_MIN_MS;
		}
		if (serve_schedules_fire_due(sv, now))
			serve_dispatch(sv, &l->child_mask);
		if (atomic_load(&sv->stopping)) {
			if (sv->nchildren == 0)
				return 0;
			timeout_ms = loop_wind_down(l);
		} else {
			timeout_ms = serve_schedules_timeout_ms(sv, now);
			if (l->reload && l->reload_after - mlp_mono_ms() < timeout_ms)
				timeout_ms = l->reload_after - mlp_mono_ms();
			if (serve_standby_wait_ms(sv) >= 0 &&
			    serve_standby_wait_ms(sv) < timeout_ms)
				timeout_ms = serve_standby_wait_ms(sv);
			if (timeout_ms < 0)
				timeout_ms = 0;
		}
		if (poll(pfd, 3, (int)timeout_ms) < 0 && errno != EINTR) {
			mlp_error_set_errno(errno, "poll");
			return MLP_EIO;
		}
		if (pfd[2].revents & POLLIN)
			serve_clock_drain(sv);
		if (pfd[1].revents & POLLIN) {
			uint64_t v;

			if (read(sv->wake_fd, &v, sizeof(v)) > 0)
				l->reload = true;
		}
		if (pfd[0].revents & POLLIN)
			loop_read_signals(l);
	}
}

/* ---- starting and stopping ------------------------------------------------- */

/* The two database connections, the wake-up eventfd and the test clock. */
static int serve_open(struct serve *sv, const struct mlp_serve_opts *opts)
{
	int rc;

	pthread_mutex_init(&sv->db_lock, NULL);
	pthread_mutex_init(&sv->poll_lock, NULL);
	pthread_cond_init(&sv->poll_cond, NULL);
	if ((rc = mlp_store_open(&sv->ctl, opts->db_path, 0)) != 0 ||
	    (rc = mlp_store_open(&sv->db, mlp_store_path(sv->ctl), 0)) != 0)
		return rc;
	sv->db_path = xstrdup(mlp_store_path(sv->ctl));
	sv->self = opts->self_exe;
	/* Checked with the signalfd, below. */
	sv->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	return serve_clock_open(sv);
}

/* Signals go to the main loop's signalfd, in every thread. */
static int loop_open_signals(struct loop *l)
{
	sigset_t mask;

	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, &l->child_mask);
	signal(SIGPIPE, SIG_IGN);
	l->sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (l->sigfd < 0 || l->sv->wake_fd < 0) {
		mlp_error_set("signalfd/eventfd: %s", strerror(errno));
		return MLP_EIO;
	}
	return 0;
}

static int serve_start_http(struct serve *sv)
{
	struct mlp_server_opts so = {
	        .host = sv->cfg.host,
	        .port = sv->cfg.port,
	        .tls_cert = sv->cfg.tls_cert,
	        .tls_key = sv->cfg.tls_key,
	        .body_max = sv->cfg.body_max,
	        .threads = (unsigned int)sv->cfg.http_threads,
	        .conn_max = (unsigned int)sv->cfg.max_connections,
	        .conn_per_ip = (unsigned int)sv->cfg.max_connections_per_ip,
	        .request_timeout_ms = sv->cfg.request_timeout_ms,
	        .handler = serve_http_handler,
	        .payload = sv,
	        .log = serve_http_log,
	};

	return mlp_server_start(&sv->http, &so);
}

/* The log's first lines, and the port file. */
static void serve_announce(struct serve *sv)
{
	if (sv->clock_file)
		serve_log(sv,
		          "TEST HOOK: schedules follow the clock in %s (MLPIPE_SERVE_TEST_CLOCK), "
		          "not the wall clock",
		          sv->clock_file);
	serve_log(sv,
	          "mlpipe serve: listening on %s%s:%d (%s), database %s, %d run(s) at "
	          "once",
	          sv->cfg.tls_cert ? "https://" : "http://", sv->cfg.host,
	          mlp_server_port(sv->http), sv->cfg.tls_cert ? "TLS" : "no TLS", sv->db_path,
	          sv->cfg.jobs);
	if (sv->cfg.port_file) {
		char *text = xasprintf("%d\n", mlp_server_port(sv->http));

		mlp_write_file_atomic(sv->cfg.port_file, text, strlen(text), 0644);
		free(text);
	}
}

/* Stops HTTP and frees the rest (the poller has ended); the runs' children
 * are left running (a restarted server finds them). */
static void serve_close(struct serve *sv)
{
	mlp_server_stop(sv->http);
	if (sv->wake_fd >= 0)
		close(sv->wake_fd);
	if (sv->clock_fd >= 0)
		close(sv->clock_fd);
	free(sv->clock_file);
	serve_schedules_free(sv);
	serve_children_free(sv);
	mlp_store_close(sv->db);
	mlp_store_close(sv->ctl);
	free(sv->db_path);
	serve_config_clear(&sv->cfg);
}

int mlp_serve_run(bool *out_bad_settings, const struct mlp_serve_opts *opts)
{
	struct serve sv = {.wake_fd = -1, .clock_fd = -1, .standby_fd = -1, .log = stderr};
	struct loop l = {.sv = &sv, .sigfd = -1};
	bool git_held = false;
	int rc;

	assert(opts->self_exe != NULL);
	*out_bad_settings = false;
	if ((rc = serve_config_load(&sv.cfg, opts->config_file, opts->settings)) != 0) {
		*out_bad_settings = true;
		serve_config_clear(&sv.cfg);
		return rc;
	}
	if ((rc = serve_open(&sv, opts)) != 0 || (rc = loop_open_signals(&l)) != 0 ||
	    (rc = serve_start_http(&sv)) != 0)
		goto done;
	serve_announce(&sv);
	mlp_git_hold();
	git_held = true;
	serve_poller_start(&sv);
	serve_checkpointer_start(&sv);
	rc = loop_run(&l);
	serve_log(&sv, "mlpipe serve: stopped");
done:
	/* The poller first: it may be in libgit2 until it sees stopping. */
	atomic_store(&sv.stopping, true);
	serve_poller_join(&sv);
	serve_checkpointer_join(&sv);
	if (git_held)
		mlp_git_release();
	serve_close(&sv);
	if (l.sigfd >= 0)
		close(l.sigfd);
	return rc;
}
