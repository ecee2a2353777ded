/*
 * serve-int.h - what the files of `mlpipe serve` share; never included
 * outside src/serve/.  The public side is serve.h (one entry point).
 *
 * Threads and who owns what:
 *   - HTTP threads (server.c, routed by routes.c to hooks.c, api.c and
 *     metrics.c) verify, parse, write one transaction through the shared
 *     connection `db` (under db_lock) and answer; they never run anything.
 *     A queued run wakes the main loop through wake_fd (serve_wake()).
 *   - The main loop (loop.c) owns `ctl`, a connection of its own: it starts
 *     queued runs as child processes (`mlpipe exec-run`, dispatch.c), reaps
 *     them (SIGCHLD via a signalfd), fires schedules (schedules.c), and
 *     stops on SIGTERM/SIGINT.  It waits in poll() until the earliest of: a
 *     signal, a wake-up, the next schedule fire, the end of the grace
 *     period.
 *   - The git poller thread (poller.c) owns a connection it opens itself:
 *     every poll_interval it fetches each project's branches and queues
 *     the heads that have no run yet.
 *   - The checkpointer thread (checkpoint.c) owns a connection too: it
 *     copies the write-ahead log into the database, which `db` never does,
 *     so no HTTP thread pays for it under db_lock.
 *
 * Recovery: runs live in SQLite.  A run's child holds its liveness lock,
 * so after `kill -9` of the server a restarted server finds running runs
 * still running (their children survive) and interrupted ones (their
 * child died) resumed by a new child, which keeps the stages that had
 * succeeded (engine.h, resume).
 */
#ifndef MLP_SERVE_INT_H
#define MLP_SERVE_INT_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "pipeline/cron.h"
#include "serve/server.h"

struct mlp_json;
struct mlp_kvlist;
struct mlp_store;

/* ---- config.c ------------------------------------------------------------- */

/* The settings: a --config file's KEY = VALUE lines, and the options over
 * them.  Strings are owned (serve_config_clear() frees them). */
struct serve_config {
	char *host;
	int port;
	char *tls_cert, *tls_key;
	int jobs;                 /* runs at once */
	int per_project;          /* runs of one project at once */
	int64_t poll_interval_ms; /* 0: no periodic poll (one at start) */
	int64_t grace_ms;         /* SIGTERM: wait this long, then cancel */
	size_t body_max;
	/* HTTP limits (server.h): threads, connections, a request's deadline. */
	int http_threads;
	int max_connections;
	int max_connections_per_ip; /* 0: no limit */
	int64_t request_timeout_ms;
	int resume_limit; /* an interrupted run is resumed at most ... */
	bool dispatch;    /* false: queue only (benchmarks, maintenance) */
	char *port_file;
};

/*
 * Fills c with the defaults, then the file (when not NULL), then settings
 * (when not NULL) over it.  MLP_EINVAL or MLP_EIO with the message set
 * ("FILE: ..." for a line of the file); c is filled either way and is
 * freed with serve_config_clear().
 */
int serve_config_load(struct serve_config *c, const char *file, const struct mlp_kvlist *settings);
/* Frees what c owns; c may be zeroed or partly filled. */
void serve_config_clear(struct serve_config *c);

/* ---- the server's state ---------------------------------------------------- */

/* An `mlpipe exec-run` child of the main loop (dispatch.c). */
struct serve_child {
	pid_t pid;
	int64_t run;
	char *project;
};

/* A schedule of a project's pipeline file (schedules.c). */
struct serve_schedule {
	char *key;
	char *project;
	char *branch;
	struct mlp_cron cron;
	struct mlp_tz *tz;
	char *expr, *zone;
	char *concurrency;
	int64_t deadline_ms;
	int64_t next; /* Unix seconds */
};

struct serve {
	struct serve_config cfg;
	char *db_path;
	const char *self;     /* the mlpipe binary that runs exec-run (opts's) */
	struct mlp_store *db; /* HTTP threads, under db_lock */
	pthread_mutex_t db_lock;
	struct mlp_store *ctl; /* the main loop */
	int wake_fd;
	atomic_bool stopping;
	struct serve_child *children;
	size_t nchildren, cap_children;
	/* The exec-run started ahead of the next run (dispatch.c): its pid
	 * (0: none) and the pipe it reads the run's ID from; after it died,
	 * none is started again before standby_retry_at (mlp_mono_ms). */
	pid_t standby_pid;
	int standby_fd;
	int64_t standby_retry_at;
	struct serve_schedule *scheds;
	size_t nscheds;
	/* Webhook results that leave no row (since start). */
	atomic_ullong rejected, duplicate, invalid, ignored_events;
	/* The poller. */
	pthread_t poller;
	bool poller_started;
	/* The checkpointer (checkpoint.c); it waits on poll_cond too. */
	pthread_t checkpointer;
	bool checkpointer_started;
	pthread_mutex_t poll_lock;
	pthread_cond_t poll_cond;
	struct mlp_server *http;
	FILE *log;
	/* The test hook MLPIPE_SERVE_TEST_CLOCK (docs/serve.md, "Testing"):
	 * schedules follow the Unix time written in clock_file, frozen between
	 * writes, which clock_fd (inotify on its directory) reports. */
	char *clock_file;
	int clock_fd;
	int64_t clock_now;
};

/* ---- loop.c ---------------------------------------------------------------- */

/* Writes "TIME message" as one line of the server's log; any thread. */
void serve_log(struct serve *sv, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Wakes the main loop: schedules are read again and the queue looked at;
 * any thread. */
void serve_wake(struct serve *sv);

/* ---- routes.c: the HTTP side ----------------------------------------------- */

/* The handler server.c calls for each request (payload: the serve). */
void serve_http_handler(void *payload, const struct mlp_http_request *req,
                        const struct mlp_http_request_view *v, struct mlp_http_response *r);
/* The request log server.c calls (payload: the serve). */
void serve_http_log(void *payload, const char *line);

/* Answers status with j printed and a newline; frees j. */
void serve_reply_json(struct mlp_http_response *r, int status, struct mlp_json *j);
/* Answers status with {"error": msg}. */
void serve_reply_error(struct mlp_http_response *r, int status, const char *msg);

/* hooks.c: POST /hooks/FORGE[/PROJECT]; rest is the path after /hooks/. */
void serve_hook_handle(struct serve *sv, const struct mlp_http_request *req,
                       const struct mlp_http_request_view *v, struct mlp_http_response *r,
                       const char *rest);

/* api.c: /api/v1/...; rest is the path after /api/v1/. */
void serve_api_handle(struct serve *sv, const struct mlp_http_request *req,
                      const struct mlp_http_request_view *v, struct mlp_http_response *r,
                      const char *rest);

/* artifacts.c: /api/v1/models/...; rest is the path after /api/v1/models/.
 * The token's scope has been checked. */
void serve_models_handle(struct serve *sv, const struct mlp_http_request *req,
                         const struct mlp_http_request_view *v, struct mlp_http_response *r,
                         const char *rest);

/* metrics.c: GET /metrics, the Prometheus text format. */
void serve_metrics_handle(struct serve *sv, struct mlp_http_response *r);

/* ---- poller.c -------------------------------------------------------------- */

/* Starts the git poller thread (sv->poller_started says whether it runs). */
void serve_poller_start(struct serve *sv);
/* Cuts the poller's wait short: it sees sv->stopping at once. */
void serve_poller_wake(struct serve *sv);
/* Wakes the poller and waits for it to end; nothing when it never started.
 * sv->stopping must be set. */
void serve_poller_join(struct serve *sv);

/* ---- checkpoint.c ---------------------------------------------------------- */

/* Starts the checkpointer thread; once it runs, `db` no longer checkpoints. */
void serve_checkpointer_start(struct serve *sv);
/* Waits for it to end (sv->stopping must be set); nothing when it never
 * started. */
void serve_checkpointer_join(struct serve *sv);

/* ---- schedules.c ----------------------------------------------------------- */

/* Sets up the test clock when MLPIPE_SERVE_TEST_CLOCK names one.  MLP_EINVAL
 * with the message set when it is not a file holding a Unix time. */
int serve_clock_open(struct serve *sv);
/* The schedules' clock, in Unix seconds. */
int64_t serve_clock_now(struct serve *sv);
/* Reads what clock_fd reported (the clock file moved). */
void serve_clock_drain(struct serve *sv);

/* Reads every project's schedules again (kept as they were when the
 * projects cannot be listed). */
void serve_schedules_reload(struct serve *sv);
/* Fires the schedules that are due at now; whether any was. */
bool serve_schedules_fire_due(struct serve *sv, int64_t now);
/* How long the main loop may wait for the next fire, in ms. */
int64_t serve_schedules_timeout_ms(struct serve *sv, int64_t now);
/* Frees the schedules. */
void serve_schedules_free(struct serve *sv);

/* ---- dispatch.c ------------------------------------------------------------ */

/* Starts what the queue allows (children get mask as their signal mask),
 * cancels or abandons interrupted runs that are not to be resumed; then
 * has an exec-run stand by for the next run. */
void serve_dispatch(struct serve *sv, const sigset_t *mask);
/* How long until a standby is to be started again (ms), -1: none is. */
int64_t serve_standby_wait_ms(const struct serve *sv);
/* Tells the standing-by exec-run there will be no run (it exits). */
void serve_standby_stop(struct serve *sv);
/* Reaps the children that ended (after SIGCHLD). */
void serve_reap(struct serve *sv);
/* Cancels run: recorded, and SIGTERM to its exec-run when it runs. */
void serve_run_cancel(struct serve *sv, int64_t run);
/* Cancels the run of every child (the grace period is over). */
void serve_children_cancel(struct serve *sv);
/* SIGKILL to every child. */
void serve_children_kill(struct serve *sv);
/* Frees the table of children (they are not waited for); stops and waits
 * for the standing-by exec-run, which has no run yet. */
void serve_children_free(struct serve *sv);

#endif
