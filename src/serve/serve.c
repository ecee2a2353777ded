/*
 * serve.c - `mlpipe serve` (serve.h): webhooks, schedules, the HTTP API and
 * /metrics, and the dispatcher that executes queued runs.  The command's
 * options are src/cli/cmd-serve.c's; nothing here includes cli/.
 *
 * Threads and who owns what:
 *   - HTTP threads (server.c) verify, parse, write one transaction through
 *     the shared connection `db` (under db_lock) and answer; they never
 *     run anything.  A queued run wakes the main loop through wake_fd.
 *   - The main loop owns `ctl`, a connection of its own: it starts queued
 *     runs as child processes (`mlpipe exec-run`), reaps them (SIGCHLD via
 *     a signalfd), fires schedules, and stops on SIGTERM/SIGINT.  It waits
 *     in poll() until the earliest of: a signal, a wake-up, the next
 *     schedule fire.
 *   - The git poller thread owns `poll_db`: every poll_interval it fetches
 *     each project's branches and queues the heads that have no run yet.
 *
 * Recovery: runs live in SQLite.  A run's child holds its liveness lock,
 * so after `kill -9` of the server a restarted server finds running runs
 * still running (their children survive) and interrupted ones (their
 * child died) resumed by a new child, which keeps the stages that had
 * succeeded (engine.h, resume).
 */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include "pipeline/cron.h"
#include "base/crypto.h"
#include "base/error.h"
#include "base/git.h"
#include "base/json.h"
#include "base/kvlist.h"
#include "pipeline/pipeline.h"
#include "serve/serve.h"
#include "serve/server.h"
#include "engine/stagekind.h"
#include "store/store.h"
#include "base/util.h"
#include "serve/webhook.h"

#define DEFAULT_BODY_MAX (1024 * 1024)

struct serve_config {
	char *host;
	int port;
	char *tls_cert, *tls_key;
	int jobs;                 /* runs at once */
	int per_project;          /* runs of one project at once */
	int64_t poll_interval_ms; /* 0: no periodic poll (one at start) */
	int64_t grace_ms;         /* SIGTERM: wait this long, then cancel */
	size_t body_max;
	int resume_limit; /* an interrupted run is resumed at most ... */
	bool dispatch;    /* false: queue only (benchmarks, maintenance) */
	char *port_file;
};

struct child {
	pid_t pid;
	int64_t run;
	char *project;
};

struct schedule {
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
	const char *self;     /* opts->self_exe */
	struct mlp_store *db; /* HTTP threads, under db_lock */
	pthread_mutex_t db_lock;
	struct mlp_store *ctl; /* the main loop */
	int wake_fd;
	atomic_bool stopping;
	struct child *children;
	size_t nchildren, cap_children;
	struct schedule *scheds;
	size_t nscheds;
	/* Webhook results that leave no row (since start). */
	atomic_ullong rejected, duplicate, invalid, ignored_events;
	/* The poller. */
	pthread_t poller;
	bool poller_started;
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

static void logf_line(struct serve *sv, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void logf_line(struct serve *sv, const char *fmt, ...)
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

/*
 * The schedules' clock, in Unix seconds: the wall clock, or under the test
 * hook the time in the clock file (kept when the file cannot be read, as
 * while a test replaces it).
 */
static int64_t sched_now(struct serve *sv)
{
	char *text = NULL;
	size_t len;
	long long t;

	if (sv->clock_file == NULL)
		return mlp_wall_ms() / 1000;
	if (mlp_read_file(&text, &len, sv->clock_file, 64) == 0) {
		while (len > 0 && strchr(" \t\r\n", text[len - 1]))
			text[--len] = '\0';
		if (mlp_parse_int(&t, text, 0, INT64_MAX / 1000) == 0)
			sv->clock_now = t;
	}
	free(text);
	return sv->clock_now;
}

static void wake(struct serve *sv)
{
	uint64_t one = 1;

	if (write(sv->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		logf_line(sv, "cannot wake the dispatcher: %s", strerror(errno));
}

/* ---- configuration ------------------------------------------------------- */

static int parse_listen(struct serve_config *c, const char *v)
{
	const char *colon = strrchr(v, ':');
	long long port;

	if (colon == NULL || mlp_parse_int(&port, colon + 1, 0, 65535) != 0) {
		mlp_error_set("--listen wants HOST:PORT, not '%s'", v);
		return MLP_EINVAL;
	}
	free(c->host);
	if (v[0] == '[' && colon > v + 1 && colon[-1] == ']')
		c->host = xstrndup(v + 1, (size_t)(colon - v - 2));
	else
		c->host = xstrndup(v, (size_t)(colon - v));
	c->port = (int)port;
	return 0;
}

/* Sets one setting (from the file or an option). */
static int config_set(struct serve_config *c, const char *key, const char *v)
{
	long long n;

	if (strcmp(key, "listen") == 0)
		return parse_listen(c, v);
	if (strcmp(key, "tls_cert") == 0 || strcmp(key, "tls_key") == 0) {
		char **slot = key[4] == 'c' ? &c->tls_cert : &c->tls_key;

		free(*slot);
		*slot = xstrdup(v);
		return 0;
	}
	if (strcmp(key, "port_file") == 0) {
		free(c->port_file);
		c->port_file = xstrdup(v);
		return 0;
	}
	if (strcmp(key, "jobs") == 0 || strcmp(key, "per_project") == 0 ||
	    strcmp(key, "resume_limit") == 0) {
		if (mlp_parse_int(&n, v, 1, 4096) != 0) {
			mlp_error_set("%s wants a number from 1 to 4096, not '%s'", key, v);
			return MLP_EINVAL;
		}
		if (key[0] == 'j')
			c->jobs = (int)n;
		else if (key[0] == 'p')
			c->per_project = (int)n;
		else
			c->resume_limit = (int)n;
		return 0;
	}
	if (strcmp(key, "body_max") == 0) {
		if (mlp_parse_int(&n, v, 1024, 64 << 20) != 0) {
			mlp_error_set("body_max wants bytes from 1024 to 67108864, not '%s'", v);
			return MLP_EINVAL;
		}
		c->body_max = (size_t)n;
		return 0;
	}
	if (strcmp(key, "poll_interval") == 0 || strcmp(key, "grace") == 0) {
		int64_t ms;

		if (strcmp(v, "0") == 0)
			ms = 0;
		else if (mlp_parse_duration(&ms, v) != 0)
			return MLP_EINVAL;
		if (key[0] == 'p')
			c->poll_interval_ms = ms;
		else
			c->grace_ms = ms;
		return 0;
	}
	if (strcmp(key, "dispatch") == 0) {
		if (strcmp(v, "true") != 0 && strcmp(v, "false") != 0) {
			mlp_error_set("dispatch wants true or false, not '%s'", v);
			return MLP_EINVAL;
		}
		c->dispatch = v[0] == 't';
		return 0;
	}
	mlp_error_set("unknown setting '%s'", key);
	return MLP_EINVAL;
}

/* KEY = VALUE lines; '#' starts a comment. */
static int config_load(struct serve_config *c, const char *path)
{
	char *text = NULL, *save = NULL;
	size_t len;
	int lineno = 0, rc;

	if ((rc = mlp_read_file(&text, &len, path, 1 << 20)) != 0)
		return rc;
	for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *eq, *k, *v, *end;

		lineno++;
		if ((end = strchr(line, '#')) != NULL)
			*end = '\0';
		while (*line == ' ' || *line == '\t')
			line++;
		if (*line == '\0')
			continue;
		if ((eq = strchr(line, '=')) == NULL) {
			mlp_error_set("%s: '%s' is not KEY = VALUE", path, line);
			rc = MLP_EINVAL;
			break;
		}
		k = line;
		v = eq + 1;
		for (end = eq; end > k && (end[-1] == ' ' || end[-1] == '\t'); end--)
			;
		*end = '\0';
		while (*v == ' ' || *v == '\t')
			v++;
		for (end = v + strlen(v); end > v && strchr(" \t\r", end[-1]); end--)
			;
		*end = '\0';
		if ((rc = config_set(c, k, v)) != 0) {
			char *msg = xasprintf("%s: %s", path, mlp_error_last());

			mlp_error_set("%s", msg);
			free(msg);
			break;
		}
	}
	free(text);
	return rc;
}

/* ---- HTTP: helpers ------------------------------------------------------- */

/* A wall-clock time in ms as RFC 3339 UTC, or null when 0. */
static void json_time(struct mlp_json *o, const char *key, int64_t ms)
{
	char t[32];

	if (ms <= 0) {
		mlp_json_add_null(o, key);
		return;
	}
	mlp_format_time(t, sizeof(t), ms);
	mlp_json_add_string(o, key, t);
}

static void reply_json(struct mlp_http_response *r, int status, struct mlp_json *j)
{
	char *text = mlp_json_print(j, false);

	mlp_json_free(j);
	r->status = status;
	r->body = xasprintf("%s\n", text);
	r->body_len = strlen(r->body);
	free(text);
}

static void reply_error(struct mlp_http_response *r, int status, const char *msg)
{
	struct mlp_json *j = mlp_json_object();

	mlp_json_add_string(j, "error", msg);
	reply_json(r, status, j);
}

/* Reads a project's webhook secret: from its file or its variable. */
static char *project_secret(const struct mlp_project *p)
{
	char *text = NULL;
	size_t len;

	if (p->secret_env) {
		const char *v = getenv(p->secret_env);

		return v && *v ? xstrdup(v) : NULL;
	}
	if (p->secret_file == NULL || mlp_read_file(&text, &len, p->secret_file, 4096) != 0)
		return NULL;
	while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r'))
		text[--len] = '\0';
	return text;
}

/* ---- webhooks ------------------------------------------------------------ */

static void handle_hook(struct serve *sv, const struct mlp_http_request *req,
                        const struct mlp_http_request_view *v, struct mlp_http_response *r,
                        const char *rest)
{
	char forge_name[16];
	const char *slash = strchr(rest, '/');
	const char *only = slash ? slash + 1 : NULL;
	const char *event, *sig, *delivery;
	struct mlp_project *projects = NULL;
	const struct mlp_project *proj = NULL;
	size_t nprojects = 0;
	enum mlp_forge forge;
	struct mlp_push push = {0};
	char body_sha[MLP_SHA256_HEX_LEN + 1];
	int rc;

	snprintf(forge_name, sizeof(forge_name), "%.*s",
	         (int)(slash ? (size_t)(slash - rest) : strlen(rest)), rest);
	if (strcmp(v->method, "POST") != 0) {
		reply_error(r, 405, "webhooks are POSTed");
		return;
	}
	if (mlp_forge_parse(&forge, forge_name) != 0) {
		reply_error(r, 404, "no such forge (github, gitlab, gitea, forgejo)");
		return;
	}
	switch (forge) {
	case MLP_FORGE_GITHUB:
		event = mlp_http_header(req, "X-GitHub-Event");
		sig = mlp_http_header(req, "X-Hub-Signature-256");
		delivery = mlp_http_header(req, "X-GitHub-Delivery");
		break;
	case MLP_FORGE_GITLAB:
		event = mlp_http_header(req, "X-Gitlab-Event");
		sig = mlp_http_header(req, "X-Gitlab-Token");
		delivery = mlp_http_header(req, "Idempotency-Key");
		if (delivery == NULL)
			delivery = mlp_http_header(req, "X-Gitlab-Event-UUID");
		break;
	default:
		event = mlp_http_header(req, "X-Gitea-Event");
		if (event == NULL)
			event = mlp_http_header(req, "X-Forgejo-Event");
		sig = mlp_http_header(req, "X-Gitea-Signature");
		if (sig == NULL)
			sig = mlp_http_header(req, "X-Forgejo-Signature");
		delivery = mlp_http_header(req, "X-Gitea-Delivery");
		if (delivery == NULL)
			delivery = mlp_http_header(req, "X-Forgejo-Delivery");
		break;
	}

	/* Who sent it: the project whose secret verifies the raw body. */
	pthread_mutex_lock(&sv->db_lock);
	rc = mlp_store_projects_list(sv->db, &projects, &nprojects);
	pthread_mutex_unlock(&sv->db_lock);
	if (rc != 0) {
		reply_error(r, 503, "the database is unavailable");
		return;
	}
	for (size_t i = 0; i < nprojects && proj == NULL; i++) {
		char *secret;

		if (only && strcmp(only, projects[i].name) != 0)
			continue;
		secret = project_secret(&projects[i]);
		if (secret && mlp_webhook_verify(forge, secret, sig, v->body, v->body_len))
			proj = &projects[i];
		if (secret)
			explicit_bzero(secret, strlen(secret));
		free(secret);
	}
	if (proj == NULL) {
		atomic_fetch_add(&sv->rejected, 1);
		logf_line(sv, "webhook %s from %s: rejected (%s signature)", forge_name, v->remote,
		          sig ? "bad" : "no");
		reply_error(r, 401, "the signature does not verify");
		goto done;
	}
	if (event == NULL)
		event = "";
	if (strcmp(event, "ping") == 0) {
		struct mlp_json *j = mlp_json_object();

		mlp_json_add_string(j, "pong", proj->name);
		reply_json(r, 200, j);
		goto done;
	}
	if (strcmp(event, "push") != 0 && strcmp(event, "Push Hook") != 0 &&
	    strcmp(event, "Tag Push Hook") != 0) {
		struct mlp_json *j = mlp_json_object();

		atomic_fetch_add(&sv->ignored_events, 1);
		mlp_json_add_string(j, "ignored", "not a push event");
		mlp_json_add_string(j, "event", event);
		reply_json(r, 200, j);
		goto done;
	}
	/* Without an id, the body itself identifies a redelivery. */
	mlp_sha256_hex(body_sha, v->body, v->body_len);
	if (delivery == NULL || *delivery == '\0' || strlen(delivery) > 200)
		delivery = body_sha;
	if (mlp_webhook_parse_push(&push, v->body, v->body_len) != 0) {
		atomic_fetch_add(&sv->invalid, 1);
		reply_error(r, 400, mlp_error_last());
		goto done;
	}
	{
		const char *why = NULL;
		bool is_branch = strncmp(push.ref, "refs/heads/", 11) == 0;

		if (push.deleted)
			why = "the ref was deleted";
		else if (is_branch && !mlp_branch_matches(proj->branches, push.ref + 11))
			why = "the project does not watch this branch";
		else if (!is_branch && strncmp(push.ref, "refs/tags/", 10) != 0)
			why = "neither a branch nor a tag";
		if (why) {
			struct mlp_json *j = mlp_json_object();

			pthread_mutex_lock(&sv->db_lock);
			rc = mlp_store_delivery_ignore(sv->db, mlp_forge_name(forge), delivery,
			                               proj->name, why);
			pthread_mutex_unlock(&sv->db_lock);
			if (rc == MLP_EEXISTS)
				atomic_fetch_add(&sv->duplicate, 1);
			else if (rc != 0) {
				mlp_json_free(j);
				reply_error(r, 503, "the database is unavailable");
				goto done;
			}
			mlp_json_add_string(j, "ignored", why);
			mlp_json_add_string(j, "ref", push.ref);
			reply_json(r, 200, j);
			goto done;
		}
	}
	{
		struct mlp_run_queued q = {
		        .project = proj->name,
		        .trigger = "webhook",
		        .user = forge_name,
		        .git_commit = push.commit,
		        .git_ref = push.ref,
		        .once_per_commit = true,
		};
		struct mlp_json *j = mlp_json_object();
		int64_t id = 0;

		pthread_mutex_lock(&sv->db_lock);
		/* Keyed by the forge, not the path: /hooks/forgejo is /hooks/gitea. */
		rc = mlp_store_run_enqueue(sv->db, &id, &q, mlp_forge_name(forge), delivery);
		pthread_mutex_unlock(&sv->db_lock);
		if (rc != 0 && rc != MLP_EEXISTS) {
			mlp_json_free(j);
			logf_line(sv, "webhook %s: %s", forge_name, mlp_error_last());
			reply_error(r, 503, "the database is unavailable");
			goto done;
		}
		if (id)
			mlp_json_add_int(j, "run", id);
		else
			mlp_json_add_null(j, "run");
		mlp_json_add_string(j, "delivery", delivery);
		if (rc == MLP_EEXISTS) {
			atomic_fetch_add(&sv->duplicate, 1);
			mlp_json_add_bool(j, "duplicate", true);
			reply_json(r, 200, j);
		} else {
			reply_json(r, 202, j);
			wake(sv);
		}
	}
done:
	mlp_push_clear(&push);
	mlp_project_free_all(projects, nprojects);
}

/* ---- API ------------------------------------------------------------------ */

static char *authenticate(struct serve *sv, const struct mlp_http_request *req)
{
	const char *h = mlp_http_header(req, "Authorization");
	char sha[MLP_SHA256_HEX_LEN + 1], *name = NULL;

	if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0)
		return NULL;
	mlp_sha256_hex(sha, h + 7, strlen(h + 7));
	pthread_mutex_lock(&sv->db_lock);
	if (mlp_store_token_check(sv->db, &name, sha) != 0)
		name = NULL;
	pthread_mutex_unlock(&sv->db_lock);
	return name;
}

static struct mlp_json *run_json(const struct mlp_run_info *ri, const struct mlp_queued_run *q)
{
	struct mlp_json *o = mlp_json_object();

	mlp_json_add_int(o, "id", ri->id);
	mlp_json_add_string(o, "pipeline", ri->pipeline);
	mlp_json_add_string(o, "status", mlp_status_name(ri->status));
	mlp_json_add_string(o, "trigger", ri->trigger);
	mlp_json_add_string(o, "user", ri->user);
	mlp_json_add_string(o, "commit", ri->git_commit);
	if (q) {
		mlp_json_add_string(o, "project", q->project);
		mlp_json_add_string(o, "ref", q->git_ref);
		mlp_json_add_string(o, "author", q->git_author);
		mlp_json_add_string(o, "commit_message", q->git_message);
		mlp_json_add_int(o, "exec_attempts", q->exec_attempts);
		mlp_json_add_string(o, "schedule", q->schedule);
	}
	json_time(o, "created_at", ri->created_at);
	json_time(o, "started_at", ri->started_at);
	json_time(o, "ended_at", ri->ended_at);
	if (ri->exit_code >= 0)
		mlp_json_add_int(o, "exit_code", ri->exit_code);
	else
		mlp_json_add_null(o, "exit_code");
	mlp_json_add_string(o, "message", ri->message);
	return o;
}

static void api_runs_list(struct serve *sv, const struct mlp_http_request *req,
                          struct mlp_http_response *r)
{
	struct mlp_run_filter f = {.limit = 50};
	struct mlp_run_info *runs = NULL;
	const char *v;
	long long n;
	size_t len = 0;
	int rc;

	if ((v = mlp_http_query(req, "limit")) && mlp_parse_int(&n, v, 1, 1000) == 0)
		f.limit = (int)n;
	if ((v = mlp_http_query(req, "status"))) {
		if (mlp_status_parse(&f.status, v) != 0) {
			reply_error(r, 400, "unknown status");
			return;
		}
		f.has_status = true;
	}
	f.pipeline = mlp_http_query(req, "pipeline");
	pthread_mutex_lock(&sv->db_lock);
	rc = mlp_store_runs_list(sv->db, &runs, &len, &f);
	pthread_mutex_unlock(&sv->db_lock);
	if (rc != 0) {
		reply_error(r, 503, mlp_error_last());
		return;
	}
	{
		struct mlp_json *o = mlp_json_object(), *a = mlp_json_array();

		for (size_t i = 0; i < len; i++)
			mlp_json_append(a, run_json(&runs[i], NULL));
		mlp_json_add(o, "runs", a);
		reply_json(r, 200, o);
	}
	mlp_run_info_free_all(runs, len);
}

static void api_run_get(struct serve *sv, int64_t id, struct mlp_http_response *r)
{
	struct mlp_run_info ri;
	struct mlp_queued_run q;
	struct mlp_attempt_info *a = NULL;
	struct mlp_stage_value *mets = NULL;
	size_t na = 0, nm = 0;
	int rc;

	pthread_mutex_lock(&sv->db_lock);
	rc = mlp_store_run_get(sv->db, &ri, id);
	if (rc == 0 && (rc = mlp_store_queued_run_get(sv->db, &q, id)) != 0)
		mlp_run_info_clear(&ri);
	if (rc == 0 && ((rc = mlp_store_attempts_list(sv->db, &a, &na, id)) != 0 ||
	                (rc = mlp_store_metrics_list(sv->db, &mets, &nm, id)) != 0)) {
		mlp_run_info_clear(&ri);
		mlp_queued_run_clear(&q);
	}
	pthread_mutex_unlock(&sv->db_lock);
	if (rc != 0) {
		reply_error(r, rc == MLP_ENOTFOUND ? 404 : 503, mlp_error_last());
		mlp_attempt_info_free_all(a, na);
		return;
	}
	{
		struct mlp_json *o = run_json(&ri, &q), *st = mlp_json_array(),
		                *m = mlp_json_object();

		for (size_t i = 0; i < na; i++) {
			struct mlp_json *x = mlp_json_object();

			mlp_json_add_string(x, "stage", a[i].stage);
			mlp_json_add_int(x, "attempt", a[i].attempt);
			mlp_json_add_string(x, "kind", a[i].kind);
			mlp_json_add_string(x, "status", mlp_status_name(a[i].status));
			if (a[i].exit_code >= 0)
				mlp_json_add_int(x, "exit_code", a[i].exit_code);
			else
				mlp_json_add_null(x, "exit_code");
			json_time(x, "started_at", a[i].started_at);
			json_time(x, "ended_at", a[i].ended_at);
			mlp_json_add_string(x, "message", a[i].message);
			mlp_json_append(st, x);
		}
		mlp_json_add(o, "stages", st);
		for (size_t i = 0; i < nm; i++) {
			char *k = xasprintf("%s.%s", mets[i].stage, mets[i].name);

			mlp_json_add_number(m, k, mets[i].number);
			free(k);
		}
		mlp_json_add(o, "metrics", m);
		reply_json(r, 200, o);
	}
	mlp_run_info_clear(&ri);
	mlp_queued_run_clear(&q);
	mlp_attempt_info_free_all(a, na);
	mlp_stage_value_free_all(mets, nm);
}

/* A log being followed: its file, and how to tell that it is complete. */
struct log_stream {
	struct serve *sv;
	int64_t run;
	char *stage;
	char *path;
	int64_t deadline_ms;
	int ino; /* inotify: the run's log directory and the database's */
};

/* Whether the stage's latest attempt is still running, and its log. */
static bool stage_log(struct serve *sv, int64_t run, const char *stage, char **path, bool *running)
{
	struct mlp_attempt_info *a = NULL;
	size_t na = 0;
	bool found = false;

	*running = false;
	pthread_mutex_lock(&sv->db_lock);
	if (mlp_store_attempts_list(sv->db, &a, &na, run) == 0) {
		for (size_t i = 0; i < na; i++) {
			if (strcmp(a[i].stage, stage) != 0 || a[i].attempt == 0)
				continue;
			found = true;
			free(*path);
			*path = a[i].log_path ? xstrdup(a[i].log_path) : NULL;
			*running = a[i].status == MLP_STATUS_RUNNING;
		}
	}
	pthread_mutex_unlock(&sv->db_lock);
	mlp_attempt_info_free_all(a, na);
	return found;
}

static ssize_t log_read(void *payload, uint64_t pos, char *buf, size_t max)
{
	struct log_stream *ls = payload;
	bool running = false;

	for (int pass = 0; pass < 2; pass++) {
		int fd = ls->path ? open(ls->path, O_RDONLY | O_CLOEXEC) : -1;
		ssize_t n = 0;

		if (fd >= 0) {
			n = pread(fd, buf, max, (off_t)pos);
			close(fd);
		}
		if (n > 0)
			return n;
		if (pass == 1)
			break;
		/* Nothing new: finished, or wait for more. */
		stage_log(ls->sv, ls->run, ls->stage, &ls->path, &running);
		if (!running || atomic_load(&ls->sv->stopping) || mlp_mono_ms() > ls->deadline_ms)
			continue; /* read once more: the last lines, then the end */
		/*
		 * Wake on a write to a log of the run or to the database (the
		 * attempt's end is a commit to its WAL); the timeout is a backstop
		 * for a graceful stop.  Returning 0 makes libmicrohttpd call again
		 * at once, so this wait is what keeps the thread from spinning.
		 */
		if (ls->ino >= 0) {
			struct pollfd pfd = {.fd = ls->ino, .events = POLLIN};
			char ev[4096];

			if (poll(&pfd, 1, 1000) > 0)
				while (read(ls->ino, ev, sizeof(ev)) > 0)
					;
		} else {
			struct timespec ts = {0, 100 * 1000 * 1000};

			nanosleep(&ts, NULL);
		}
		return 0;
	}
	return -1;
}

static void log_free(void *payload)
{
	struct log_stream *ls = payload;

	if (ls->ino >= 0)
		close(ls->ino);
	free(ls->stage);
	free(ls->path);
	free(ls);
}

static void api_run_logs(struct serve *sv, int64_t id, const char *stage,
                         struct mlp_http_response *r)
{
	struct log_stream *ls = xcalloc(1, sizeof(*ls));
	bool running;

	ls->sv = sv;
	ls->run = id;
	ls->stage = xstrdup(stage);
	ls->deadline_ms = mlp_mono_ms() + 6 * 3600 * 1000;
	ls->ino = -1;
	if (!stage_log(sv, id, stage, &ls->path, &running)) {
		log_free(ls);
		reply_error(r, 404, "no such stage attempt in this run");
		return;
	}
	if (running && (ls->ino = inotify_init1(IN_CLOEXEC | IN_NONBLOCK)) >= 0) {
		const char *data = mlp_store_data_dir(sv->db);
		char *dir = xasprintf("%s/runs/%lld", data, (long long)id);

		mlp_mkdirs(dir, 0755);
		inotify_add_watch(ls->ino, dir, IN_MODIFY | IN_CREATE | IN_CLOSE_WRITE);
		inotify_add_watch(ls->ino, data, IN_MODIFY);
		free(dir);
	}
	r->status = 200;
	r->content_type = "text/plain; charset=utf-8";
	r->stream = log_read;
	r->stream_payload = ls;
	r->stream_free = log_free;
}

static void api_run_create(struct serve *sv, const char *user,
                           const struct mlp_http_request_view *v, struct mlp_http_response *r)
{
	struct mlp_json *j = NULL;
	const char *project, *branch, *ref, *commit;
	char *refbuf = NULL;
	int64_t id = 0;
	int rc;

	if (mlp_json_parse(&j, v->body, v->body_len) != 0 || !mlp_json_is_object(j)) {
		mlp_json_free(j);
		reply_error(r, 400, "the body must be a JSON object");
		return;
	}
	project = mlp_json_get_string(j, "project");
	branch = mlp_json_get_string(j, "branch");
	ref = mlp_json_get_string(j, "ref");
	commit = mlp_json_get_string(j, "commit");
	if (project == NULL) {
		reply_error(r, 400, "\"project\" is required");
		goto done;
	}
	if (ref == NULL)
		ref = refbuf = xasprintf("refs/heads/%s", branch ? branch : "main");
	if (commit && (strlen(commit) != 40 || strspn(commit, "0123456789abcdef") != 40)) {
		reply_error(r, 400, "\"commit\" must be 40 lower-case hex digits");
		goto done;
	}
	{
		struct mlp_project *ps = NULL;
		size_t n = 0;
		bool known = false;
		struct mlp_run_queued q = {
		        .project = project,
		        .trigger = "api",
		        .user = user,
		        .git_ref = ref,
		        .git_commit = commit,
		};

		pthread_mutex_lock(&sv->db_lock);
		rc = mlp_store_projects_list(sv->db, &ps, &n);
		for (size_t i = 0; rc == 0 && i < n; i++)
			known = known || strcmp(ps[i].name, project) == 0;
		if (rc == 0 && known)
			rc = mlp_store_run_enqueue(sv->db, &id, &q, NULL, NULL);
		pthread_mutex_unlock(&sv->db_lock);
		mlp_project_free_all(ps, n);
		if (rc != 0) {
			reply_error(r, 503, mlp_error_last());
			goto done;
		}
		if (!known) {
			reply_error(r, 404, "no such project");
			goto done;
		}
	}
	{
		struct mlp_json *o = mlp_json_object();

		mlp_json_add_int(o, "run", id);
		reply_json(r, 202, o);
		wake(sv);
	}
done:
	free(refbuf);
	mlp_json_free(j);
}

static void api_run_cancel(struct serve *sv, int64_t id, struct mlp_http_response *r)
{
	int64_t pid = 0;
	int rc;

	pthread_mutex_lock(&sv->db_lock);
	rc = mlp_store_run_cancel(sv->db, id, &pid);
	pthread_mutex_unlock(&sv->db_lock);
	if (rc != 0) {
		reply_error(r,
		            rc == MLP_ENOTFOUND ? 404
		            : rc == MLP_EINVAL  ? 409
		                                : 503,
		            mlp_error_last());
		return;
	}
	/* The engine in exec-run turns SIGTERM into a graceful cancel. */
	if (pid > 0)
		kill((pid_t)pid, SIGTERM);
	{
		struct mlp_json *o = mlp_json_object();

		mlp_json_add_int(o, "run", id);
		mlp_json_add_string(o, "status", pid > 0 ? "cancelling" : "cancelled");
		reply_json(r, 202, o);
	}
}

static void handle_api(struct serve *sv, const struct mlp_http_request *req,
                       const struct mlp_http_request_view *v, struct mlp_http_response *r,
                       const char *rest)
{
	char *user = authenticate(sv, req);
	long long id = 0;
	char *end = NULL;

	if (user == NULL) {
		r->extra_header = "WWW-Authenticate";
		r->extra_value = "Bearer realm=\"mlpipe\"";
		reply_error(r, 401, "a bearer token is required (mlpipe token create)");
		return;
	}
	if (strcmp(rest, "runs") == 0) {
		if (strcmp(v->method, "GET") == 0)
			api_runs_list(sv, req, r);
		else if (strcmp(v->method, "POST") == 0)
			api_run_create(sv, user, v, r);
		else
			reply_error(r, 405, "GET or POST");
		goto done;
	}
	if (strncmp(rest, "runs/", 5) == 0) {
		errno = 0;
		id = strtoll(rest + 5, &end, 10);
		if (errno || end == rest + 5 || id <= 0) {
			reply_error(r, 404, "no such run");
			goto done;
		}
		if (*end == '\0' && strcmp(v->method, "GET") == 0)
			api_run_get(sv, id, r);
		else if (strcmp(end, "/cancel") == 0 && strcmp(v->method, "POST") == 0)
			api_run_cancel(sv, id, r);
		else if (strncmp(end, "/logs/", 6) == 0 && end[6] && strcmp(v->method, "GET") == 0)
			api_run_logs(sv, id, end + 6, r);
		else
			reply_error(r, 404, "no such endpoint");
		goto done;
	}
	reply_error(r, 404, "no such endpoint");
done:
	free(user);
}

/* ---- /metrics ------------------------------------------------------------ */

static void prom_label(struct mlp_buf *b, const char *v)
{
	for (; v && *v; v++) {
		if (*v == '\\' || *v == '"')
			mlp_buf_putc(b, '\\');
		if (*v == '\n')
			mlp_buf_puts(b, "\\n");
		else
			mlp_buf_putc(b, *v);
	}
}

static void prom_counts(struct mlp_buf *b, struct serve *sv, enum mlp_count_kind kind,
                        const char *name, const char *label)
{
	struct mlp_count *c = NULL;
	size_t n = 0;

	if (mlp_store_counts(sv->db, &c, &n, kind) != 0)
		return;
	for (size_t i = 0; i < n; i++) {
		mlp_buf_printf(b, "%s{%s=\"", name, label);
		prom_label(b, c[i].label);
		mlp_buf_printf(b, "\"} %.17g\n", c[i].value);
	}
	mlp_count_free_all(c, n);
}

static void handle_metrics(struct serve *sv, struct mlp_http_response *r)
{
	static const double bounds[] = {0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 14400};
	uint64_t counts[MLP_ARRAY_SIZE(bounds) + 1];
	struct mlp_buf b = {0};
	struct mlp_count *c = NULL;
	size_t n = 0;
	int64_t queued = 0;
	double sum = 0;

	pthread_mutex_lock(&sv->db_lock);
	mlp_buf_puts(&b, "# HELP mlpipe_runs Runs recorded, by status.\n"
	                 "# TYPE mlpipe_runs gauge\n");
	prom_counts(&b, sv, MLP_COUNT_RUNS_BY_STATUS, "mlpipe_runs", "status");
	mlp_store_runs_count(sv->db, &queued, NULL, MLP_STATUS_QUEUED);
	mlp_buf_printf(&b,
	               "# HELP mlpipe_queue_depth Runs waiting to start.\n"
	               "# TYPE mlpipe_queue_depth gauge\nmlpipe_queue_depth %lld\n",
	               (long long)queued);
	mlp_buf_puts(&b, "# HELP mlpipe_stage_duration_seconds Duration of finished stage "
	                 "attempts.\n# TYPE mlpipe_stage_duration_seconds histogram\n");
	if (mlp_store_stage_durations(sv->db, bounds, MLP_ARRAY_SIZE(bounds), counts, &sum) == 0) {
		for (size_t i = 0; i < MLP_ARRAY_SIZE(bounds); i++)
			mlp_buf_printf(&b, "mlpipe_stage_duration_seconds_bucket{le=\"%g\"} %llu\n",
			               bounds[i], (unsigned long long)counts[i]);
		mlp_buf_printf(&b,
		               "mlpipe_stage_duration_seconds_bucket{le=\"+Inf\"} %llu\n"
		               "mlpipe_stage_duration_seconds_sum %.6f\n"
		               "mlpipe_stage_duration_seconds_count %llu\n",
		               (unsigned long long)counts[MLP_ARRAY_SIZE(bounds)], sum,
		               (unsigned long long)counts[MLP_ARRAY_SIZE(bounds)]);
	}
	mlp_buf_puts(&b, "# HELP mlpipe_webhook_deliveries_total Webhook deliveries, by "
	                 "result (queued and ignored are kept in the database; the others "
	                 "count since the server started).\n"
	                 "# TYPE mlpipe_webhook_deliveries_total counter\n");
	prom_counts(&b, sv, MLP_COUNT_DELIVERIES_BY_RESULT, "mlpipe_webhook_deliveries_total",
	            "result");
	mlp_buf_printf(&b,
	               "mlpipe_webhook_deliveries_total{result=\"rejected\"} %llu\n"
	               "mlpipe_webhook_deliveries_total{result=\"duplicate\"} %llu\n"
	               "mlpipe_webhook_deliveries_total{result=\"invalid\"} %llu\n"
	               "mlpipe_webhook_deliveries_total{result=\"other_event\"} %llu\n",
	               (unsigned long long)atomic_load(&sv->rejected),
	               (unsigned long long)atomic_load(&sv->duplicate),
	               (unsigned long long)atomic_load(&sv->invalid),
	               (unsigned long long)atomic_load(&sv->ignored_events));
	mlp_buf_puts(&b, "# HELP mlpipe_gate_decisions_total Gate decisions, by result.\n"
	                 "# TYPE mlpipe_gate_decisions_total counter\n");
	prom_counts(&b, sv, MLP_COUNT_GATE_DECISIONS, "mlpipe_gate_decisions_total", "result");
	mlp_buf_puts(&b, "# HELP mlpipe_rollouts_total Rollouts, by result.\n"
	                 "# TYPE mlpipe_rollouts_total counter\n");
	prom_counts(&b, sv, MLP_COUNT_ROLLOUTS_BY_RESULT, "mlpipe_rollouts_total", "result");
	mlp_buf_puts(&b, "# HELP mlpipe_deployed_model_metric The metrics of the deployed "
	                 "version of each model.\n# TYPE mlpipe_deployed_model_metric gauge\n");
	if (mlp_store_counts(sv->db, &c, &n, MLP_COUNT_DEPLOYED_METRICS) == 0) {
		for (size_t i = 0; i < n; i++) {
			mlp_buf_puts(&b, "mlpipe_deployed_model_metric{model=\"");
			prom_label(&b, c[i].label);
			mlp_buf_puts(&b, "\",metric=\"");
			prom_label(&b, c[i].label2);
			mlp_buf_puts(&b, "\",version=\"");
			prom_label(&b, c[i].label3);
			mlp_buf_printf(&b, "\"} %.17g\n", c[i].value);
		}
		mlp_count_free_all(c, n);
	}
	pthread_mutex_unlock(&sv->db_lock);
	r->status = 200;
	r->content_type = "text/plain; version=0.0.4; charset=utf-8";
	r->body_len = b.len;
	r->body = mlp_buf_detach(&b);
}

static void handler(void *payload, const struct mlp_http_request *req,
                    const struct mlp_http_request_view *v, struct mlp_http_response *r)
{
	struct serve *sv = payload;

	if (strncmp(v->path, "/hooks/", 7) == 0)
		handle_hook(sv, req, v, r, v->path + 7);
	else if (strncmp(v->path, "/api/v1/", 8) == 0)
		handle_api(sv, req, v, r, v->path + 8);
	else if (strcmp(v->path, "/healthz") == 0) {
		struct mlp_json *j = mlp_json_object();
		bool stopping = atomic_load(&sv->stopping);

		mlp_json_add_string(j, "status", stopping ? "stopping" : "ok");
		reply_json(r, stopping ? 503 : 200, j);
	} else if (strcmp(v->path, "/metrics") == 0)
		handle_metrics(sv, r);
	else
		reply_error(r, 404, "no such endpoint");
}

static void http_log(void *payload, const char *line)
{
	logf_line(payload, "%s", line);
}

/* ---- the git poller -------------------------------------------------------- */

static void poll_project(struct serve *sv, struct mlp_store *db, const struct mlp_project *p)
{
	char *mirror = mlp_project_mirror(db, p->name);
	struct mlp_git_creds creds = {p->token_file, p->ssh_key_file};
	char **refs = NULL, **commits = NULL;
	size_t n = 0;

	if (mlp_git_mirror_fetch(mirror, p->remote, NULL, &creds) != 0) {
		logf_line(sv, "poll %s: %s", p->name, mlp_error_last());
		goto done;
	}
	if (mlp_git_branches(&refs, &commits, &n, mirror) != 0)
		goto done;
	for (size_t i = 0; i < n; i++) {
		char *last = NULL;
		int64_t id;

		if (!mlp_branch_matches(p->branches, refs[i] + 11))
			continue;
		/* A branch never run before is where we start from, not a push. */
		if (mlp_store_latest_commit(db, &last, p->name, refs[i]) != 0 || last == NULL ||
		    strcmp(last, commits[i]) == 0) {
			free(last);
			continue;
		}
		free(last);
		{
			struct mlp_run_queued q = {
			        .project = p->name,
			        .trigger = "poll",
			        .user = "poll",
			        .git_commit = commits[i],
			        .git_ref = refs[i],
			        .once_per_commit = true,
			};

			if (mlp_store_run_enqueue(db, &id, &q, NULL, NULL) == 0) {
				logf_line(sv, "poll %s: %s moved to %.12s: run %lld queued",
				          p->name, refs[i], commits[i], (long long)id);
				wake(sv);
			}
		}
	}
done:
	mlp_git_refs_free(refs, commits, n);
	free(mirror);
}

static void *poller_main(void *arg)
{
	struct serve *sv = arg;
	struct mlp_store *db = NULL;

	if (mlp_store_open(&db, sv->db_path, 0) != 0) {
		logf_line(sv, "poller: %s", mlp_error_last());
		return NULL;
	}
	while (!atomic_load(&sv->stopping)) {
		struct mlp_project *ps = NULL;
		size_t n = 0;
		struct timespec until;

		if (mlp_store_projects_list(db, &ps, &n) == 0)
			for (size_t i = 0; i < n && !atomic_load(&sv->stopping); i++)
				poll_project(sv, db, &ps[i]);
		mlp_project_free_all(ps, n);
		wake(sv); /* mirrors changed: schedules are read again */
		if (sv->cfg.poll_interval_ms <= 0)
			break;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += sv->cfg.poll_interval_ms / 1000;
		until.tv_nsec += (sv->cfg.poll_interval_ms % 1000) * 1000000;
		if (until.tv_nsec >= 1000000000) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000;
		}
		pthread_mutex_lock(&sv->poll_lock);
		while (!atomic_load(&sv->stopping) &&
		       pthread_cond_timedwait(&sv->poll_cond, &sv->poll_lock, &until) == 0)
			;
		pthread_mutex_unlock(&sv->poll_lock);
	}
	mlp_store_close(db);
	return NULL;
}

/* ---- schedules ------------------------------------------------------------- */

static void scheds_free(struct serve *sv)
{
	for (size_t i = 0; i < sv->nscheds; i++) {
		struct schedule *s = &sv->scheds[i];

		free(s->key);
		free(s->project);
		free(s->branch);
		free(s->expr);
		free(s->zone);
		free(s->concurrency);
		mlp_tz_free(s->tz);
	}
	free(sv->scheds);
	sv->scheds = NULL;
	sv->nscheds = 0;
}

/*
 * The schedules of every project: the pipeline file at the head of its
 * default branch (the first branch it watches that is not a pattern) in
 * the mirror.  A schedule is known by project, position, expression and
 * zone, so a changed one starts afresh (no catch-up for it).
 */
static int load_schedules(struct serve *sv, struct schedule **out, size_t *nout)
{
	struct mlp_project *ps = NULL;
	struct schedule *sc = NULL;
	size_t n = 0, len = 0, cap = 0;
	int64_t now = sched_now(sv);

	*out = NULL;
	*nout = 0;
	if (mlp_store_projects_list(sv->ctl, &ps, &n) != 0)
		return MLP_EDB;
	for (size_t i = 0; i < n; i++) {
		char branch[256], *ref, *mirror, *commit = NULL, *text = NULL;
		const char *b = mlp_project_default_branch(&ps[i], branch, sizeof(branch));
		struct mlp_pipeline *p = NULL;
		struct mlp_diags diags = {0};
		size_t tlen;

		mirror = mlp_project_mirror(sv->ctl, ps[i].name);
		ref = xasprintf("refs/heads/%s", b);
		if (access(mirror, F_OK) == 0 && mlp_git_resolve(&commit, mirror, ref) == 0 &&
		    mlp_git_read_file(&text, &tlen, mirror, commit, ps[i].pipeline_path,
		                      MLP_PIPELINE_MAX_BYTES) == 0 &&
		    mlp_pipeline_parse(&p, &diags, ps[i].pipeline_path, text, tlen) == 0) {
			for (size_t k = 0; k < p->nschedules; k++) {
				const struct mlp_schedule *ms = &p->schedules[k];
				struct schedule *s;
				int64_t last = 0;
				bool fresh = false;

				xgrow((void **)&sc, &cap, len + 1, sizeof(*sc));
				s = &sc[len];
				memset(s, 0, sizeof(*s));
				s->zone = xstrdup(ms->timezone ? ms->timezone : "UTC");
				if (mlp_cron_parse(&s->cron, ms->cron) != 0 ||
				    mlp_tz_open(&s->tz, s->zone) != 0) {
					logf_line(sv, "schedule %s #%zu: %s", ps[i].name, k + 1,
					          mlp_error_last());
					free(s->zone);
					continue;
				}
				s->key = xasprintf("%s#%zu %s %s", ps[i].name, k + 1, ms->cron,
				                   s->zone);
				s->project = xstrdup(ps[i].name);
				s->branch = xstrdup(b);
				s->expr = xstrdup(ms->cron);
				s->concurrency =
				        xstrdup(ms->concurrency ? ms->concurrency : "forbid");
				s->deadline_ms = ms->starting_deadline_ms;
				if (mlp_store_schedule_last(sv->ctl, &last, s->key) != 0 ||
				    last == 0) {
					/* New: it starts counting now, nothing to catch up. */
					int64_t none;

					last = now;
					fresh = true;
					mlp_store_schedule_fire(sv->ctl, &none, s->key, now, NULL);
				}
				if (mlp_cron_next(&s->next, &s->cron, s->tz, last) != 0)
					s->next = INT64_MAX;
				if (fresh && s->next != INT64_MAX) {
					char when[40];

					mlp_format_time(when, sizeof(when), s->next * 1000);
					logf_line(sv, "schedule %s: new; first fire at %s", s->key,
					          when);
				}
				len++;
			}
		}
		mlp_pipeline_free(p);
		mlp_diags_free(&diags);
		free(text);
		free(commit);
		free(ref);
		free(mirror);
	}
	mlp_project_free_all(ps, n);
	*out = sc;
	*nout = len;
	return 0;
}

static void kill_run(struct serve *sv, int64_t run)
{
	int64_t pid = 0;

	if (mlp_store_run_cancel(sv->ctl, run, &pid) == 0 && pid > 0)
		kill((pid_t)pid, SIGTERM);
}

/* Fires a due schedule once (however many fire times were missed). */
static void fire_schedule(struct serve *sv, struct schedule *s, int64_t now)
{
	int64_t fire = s->next, t = s->next, active = 0, id = 0;
	bool run = true;
	char why[160] = "";

	/* The latest fire time that has passed: catch up once, not N times. */
	for (int i = 0; i < 100000; i++) {
		int64_t nx;

		if (mlp_cron_next(&nx, &s->cron, s->tz, t) != 0 || nx > now)
			break;
		fire = t = nx;
	}
	if (s->deadline_ms > 0 && (now - fire) * 1000 > s->deadline_ms) {
		run = false;
		snprintf(why, sizeof(why), "missed by more than its starting_deadline");
	}
	if (run && mlp_store_schedule_active(sv->ctl, &active, s->key) == 0 && active) {
		if (strcmp(s->concurrency, "forbid") == 0) {
			run = false;
			snprintf(why, sizeof(why), "run %lld is still going (concurrency: forbid)",
			         (long long)active);
		} else if (strcmp(s->concurrency, "replace") == 0) {
			kill_run(sv, active);
		}
	}
	{
		char *ref = xasprintf("refs/heads/%s", s->branch);
		struct mlp_run_queued q = {
		        .project = s->project,
		        .trigger = "schedule",
		        .user = "schedule",
		        .git_ref = ref,
		        .schedule = s->key,
		};

		if (mlp_store_schedule_fire(sv->ctl, &id, s->key, now, run ? &q : NULL) != 0)
			logf_line(sv, "schedule %s: %s", s->key, mlp_error_last());
		else if (run)
			logf_line(sv, "schedule %s: run %lld queued", s->key, (long long)id);
		else
			logf_line(sv, "schedule %s: not run: %s", s->key, why);
		free(ref);
	}
	if (mlp_cron_next(&s->next, &s->cron, s->tz, now) != 0)
		s->next = INT64_MAX;
}

/* ---- the dispatcher -------------------------------------------------------- */

static struct child *find_child(struct serve *sv, int64_t run)
{
	for (size_t i = 0; i < sv->nchildren; i++)
		if (sv->children[i].run == run)
			return &sv->children[i];
	return NULL;
}

static void spawn_run(struct serve *sv, const struct mlp_queued_run *q, const sigset_t *mask)
{
	char id[32], *logdir, *logpath;
	pid_t pid;

	snprintf(id, sizeof(id), "%lld", (long long)q->id);
	logdir = xasprintf("%s/runs", mlp_store_data_dir(sv->ctl));
	mlp_mkdirs(logdir, 0755);
	logpath = xasprintf("%s/%lld.exec.log", logdir, (long long)q->id);
	pid = fork();
	if (pid == 0) {
		int fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
		int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);

		/* Its own session: a Ctrl-C meant for the server is not the run's. */
		setsid();
		sigprocmask(SIG_SETMASK, mask, NULL);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		if (devnull >= 0)
			dup2(devnull, 0);
		execl(sv->self, "mlpipe", "exec-run", "--db", sv->db_path, "--run", id,
		      (char *)NULL);
		_exit(127);
	}
	if (pid < 0) {
		logf_line(sv, "run %s: cannot fork: %s", id, strerror(errno));
	} else {
		struct child *c;

		xgrow((void **)&sv->children, &sv->cap_children, sv->nchildren + 1,
		      sizeof(*sv->children));
		c = &sv->children[sv->nchildren++];
		c->pid = pid;
		c->run = q->id;
		c->project = xstrdup(q->project ? q->project : "");
		logf_line(sv, "run %s: started (%s%s, pid %d)", id, q->trigger ? q->trigger : "?",
		          q->status == MLP_STATUS_INTERRUPTED ? ", resuming" : "", (int)pid);
	}
	free(logdir);
	free(logpath);
}

static void dispatch(struct serve *sv, const sigset_t *mask)
{
	struct mlp_queued_run *q = NULL;
	size_t n = 0;
	int running = 0;

	mlp_store_recover(sv->ctl, NULL);
	if (mlp_store_queue_list(sv->ctl, &q, &n) != 0) {
		logf_line(sv, "dispatch: %s", mlp_error_last());
		return;
	}
	for (size_t i = 0; i < n; i++)
		if (q[i].status == MLP_STATUS_RUNNING || find_child(sv, q[i].id))
			running++;
	for (size_t i = 0; i < n; i++) {
		int same = 0;

		if (q[i].status == MLP_STATUS_RUNNING || find_child(sv, q[i].id))
			continue;
		if (q[i].status == MLP_STATUS_INTERRUPTED) {
			if (q[i].cancel_requested) {
				int64_t pid;

				mlp_store_run_cancel(sv->ctl, q[i].id, &pid);
				continue;
			}
			if (q[i].exec_attempts >= sv->cfg.resume_limit) {
				char *why = xasprintf("interrupted %d times; not resumed again",
				                      q[i].exec_attempts);

				mlp_store_run_abandon(sv->ctl, q[i].id, why);
				logf_line(sv, "run %lld: %s", (long long)q[i].id, why);
				free(why);
				continue;
			}
		}
		if (!sv->cfg.dispatch || atomic_load(&sv->stopping) || running >= sv->cfg.jobs)
			break;
		for (size_t k = 0; k < n; k++)
			if ((q[k].status == MLP_STATUS_RUNNING || find_child(sv, q[k].id)) &&
			    q[k].project && q[i].project && strcmp(q[k].project, q[i].project) == 0)
				same++;
		if (same >= sv->cfg.per_project)
			continue;
		spawn_run(sv, &q[i], mask);
		running++;
	}
	mlp_queued_run_free_all(q, n);
}

static void reap(struct serve *sv)
{
	int st;
	pid_t pid;

	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		for (size_t i = 0; i < sv->nchildren; i++) {
			if (sv->children[i].pid != pid)
				continue;
			logf_line(sv, "run %lld: exec-run ended (%s %d)",
			          (long long)sv->children[i].run, WIFEXITED(st) ? "exit" : "signal",
			          WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
			free(sv->children[i].project);
			sv->children[i] = sv->children[--sv->nchildren];
			break;
		}
	}
}

/* ---- the main loop ---------------------------------------------------------- */

static int serve_loop(struct serve *sv, int sigfd, const sigset_t *oldmask)
{
	int64_t stop_at = 0, term_at = 0;
	bool reload = true;

	for (;;) {
		struct pollfd pfd[3] = {
		        {sigfd, POLLIN, 0},
		        {sv->wake_fd, POLLIN, 0},
		        {sv->clock_fd, POLLIN, 0},
		};
		int64_t now = sched_now(sv), next = INT64_MAX, timeout_ms;

		if (reload && !atomic_load(&sv->stopping)) {
			struct schedule *sc;
			size_t nsc;

			if (load_schedules(sv, &sc, &nsc) == 0) {
				scheds_free(sv);
				sv->scheds = sc;
				sv->nscheds = nsc;
			}
			reload = false;
		}
		for (size_t i = 0; i < sv->nscheds && !atomic_load(&sv->stopping); i++)
			if (sv->scheds[i].next <= now)
				fire_schedule(sv, &sv->scheds[i], now);
		dispatch(sv, oldmask);
		if (atomic_load(&sv->stopping)) {
			int64_t mono = mlp_mono_ms();

			if (sv->nchildren == 0)
				return 0;
			if (term_at == 0 && mono >= stop_at) {
				/* The grace period is over: cancel what still runs. */
				logf_line(sv, "grace period over: cancelling %zu run(s)",
				          sv->nchildren);
				for (size_t i = 0; i < sv->nchildren; i++)
					kill_run(sv, sv->children[i].run);
				term_at = mono + 30000;
			} else if (term_at && mono >= term_at) {
				for (size_t i = 0; i < sv->nchildren; i++)
					kill(sv->children[i].pid, SIGKILL);
				term_at = mono + 60000;
			}
			timeout_ms = (term_at ? term_at : stop_at) - mono;
			if (timeout_ms < 0)
				timeout_ms = 0;
		} else {
			for (size_t i = 0; i < sv->nscheds; i++)
				if (sv->scheds[i].next < next)
					next = sv->scheds[i].next;
			/* Wait for the earliest schedule; look again at least every
			 * five minutes in case the wall clock was set. */
			timeout_ms = next == INT64_MAX ? 300000
			                               : (next - now) * 1000 - mlp_wall_ms() % 1000;
			/* The test clock stands still: only its file moves it. */
			if (sv->clock_file)
				timeout_ms = 300000;
			if (timeout_ms > 300000)
				timeout_ms = 300000;
			if (timeout_ms < 0)
				timeout_ms = 0;
		}
		if (poll(pfd, 3, (int)timeout_ms) < 0 && errno != EINTR) {
			mlp_error_set_errno(errno, "poll");
			return MLP_EIO;
		}
		if (pfd[2].revents & POLLIN) {
			char ev[4096];

			while (read(sv->clock_fd, ev, sizeof(ev)) > 0)
				;
		}
		if (pfd[1].revents & POLLIN) {
			uint64_t v;

			if (read(sv->wake_fd, &v, sizeof(v)) > 0)
				reload = true;
		}
		if (pfd[0].revents & POLLIN) {
			struct signalfd_siginfo si;

			while (read(sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
				if (si.ssi_signo == SIGCHLD) {
					reap(sv);
				} else if (!atomic_load(&sv->stopping)) {
					logf_line(sv,
					          "SIG%s: no new work; waiting up to %lld ms for "
					          "%zu run(s)",
					          sigabbrev_np((int)si.ssi_signo),
					          (long long)sv->cfg.grace_ms, sv->nchildren);
					atomic_store(&sv->stopping, true);
					mlp_server_quiesce(sv->http);
					pthread_mutex_lock(&sv->poll_lock);
					pthread_cond_broadcast(&sv->poll_cond);
					pthread_mutex_unlock(&sv->poll_lock);
					stop_at = mlp_mono_ms() + sv->cfg.grace_ms;
				} else {
					/* A second signal: stop waiting. */
					stop_at = 0;
				}
			}
		}
	}
}

int mlp_serve_run(bool *out_bad_settings, const struct mlp_serve_opts *opts)
{
	struct serve sv = {0};
	sigset_t mask, oldmask;
	int sigfd = -1, rc = 0;
	bool git_held = false;

	sv.cfg.host = xstrdup("127.0.0.1");
	sv.cfg.port = 8080;
	sv.cfg.jobs = 2;
	sv.cfg.per_project = 1;
	sv.cfg.poll_interval_ms = 60000;
	sv.cfg.grace_ms = 30000;
	sv.cfg.body_max = DEFAULT_BODY_MAX;
	sv.cfg.resume_limit = 3;
	sv.cfg.dispatch = true;
	sv.wake_fd = -1;
	sv.clock_fd = -1;
	sv.log = stderr;
	*out_bad_settings = true;
	/* The file first, then the options over it. */
	if (opts->config_file && (rc = config_load(&sv.cfg, opts->config_file)) != 0)
		goto done;
	for (size_t i = 0; opts->settings && i < opts->settings->len; i++)
		if ((rc = config_set(&sv.cfg, opts->settings->items[i].key,
		                     opts->settings->items[i].value)) != 0)
			goto done;
	*out_bad_settings = false;
	pthread_mutex_init(&sv.db_lock, NULL);
	pthread_mutex_init(&sv.poll_lock, NULL);
	pthread_cond_init(&sv.poll_cond, NULL);
	if ((rc = mlp_store_open(&sv.ctl, opts->db_path, 0)) != 0 ||
	    (rc = mlp_store_open(&sv.db, mlp_store_path(sv.ctl), 0)) != 0)
		goto done;
	sv.db_path = xstrdup(mlp_store_path(sv.ctl));
	sv.self = opts->self_exe;
	sv.wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (getenv("MLPIPE_SERVE_TEST_CLOCK") && *getenv("MLPIPE_SERVE_TEST_CLOCK")) {
		char *dir;

		sv.clock_file = xstrdup(getenv("MLPIPE_SERVE_TEST_CLOCK"));
		dir = mlp_dirname(sv.clock_file);
		sv.clock_fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
		if (sv.clock_fd < 0 ||
		    inotify_add_watch(sv.clock_fd, dir, IN_CLOSE_WRITE | IN_MOVED_TO) < 0 ||
		    sched_now(&sv) == 0) {
			mlp_error_set("MLPIPE_SERVE_TEST_CLOCK=%s: not a file holding a Unix time",
			              sv.clock_file);
			free(dir);
			rc = MLP_EINVAL;
			goto done;
		}
		free(dir);
	}

	/* Signals go to the main loop's signalfd, in every thread. */
	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, &oldmask);
	signal(SIGPIPE, SIG_IGN);
	sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sigfd < 0 || sv.wake_fd < 0) {
		mlp_error_set("signalfd/eventfd: %s", strerror(errno));
		rc = MLP_EIO;
		goto done;
	}
	{
		struct mlp_server_opts so = {
		        .host = sv.cfg.host,
		        .port = sv.cfg.port,
		        .tls_cert = sv.cfg.tls_cert,
		        .tls_key = sv.cfg.tls_key,
		        .body_max = sv.cfg.body_max,
		        .handler = handler,
		        .payload = &sv,
		        .log = http_log,
		};

		if ((rc = mlp_server_start(&sv.http, &so)) != 0)
			goto done;
	}
	if (sv.clock_file)
		logf_line(&sv,
		          "TEST HOOK: schedules follow the clock in %s (MLPIPE_SERVE_TEST_CLOCK), "
		          "not the wall clock",
		          sv.clock_file);
	logf_line(&sv,
	          "mlpipe serve: listening on %s%s:%d (%s), database %s, %d run(s) at "
	          "once",
	          sv.cfg.tls_cert ? "https://" : "http://", sv.cfg.host, mlp_server_port(sv.http),
	          sv.cfg.tls_cert ? "TLS" : "no TLS", sv.db_path, sv.cfg.jobs);
	if (sv.cfg.port_file) {
		char *text = xasprintf("%d\n", mlp_server_port(sv.http));

		mlp_write_file_atomic(sv.cfg.port_file, text, strlen(text), 0644);
		free(text);
	}
	mlp_git_hold();
	git_held = true;
	if (pthread_create(&sv.poller, NULL, poller_main, &sv) == 0)
		sv.poller_started = true;
	rc = serve_loop(&sv, sigfd, &oldmask);
	logf_line(&sv, "mlpipe serve: stopped");
done:
	atomic_store(&sv.stopping, true);
	if (sv.poller_started) {
		pthread_mutex_lock(&sv.poll_lock);
		pthread_cond_broadcast(&sv.poll_cond);
		pthread_mutex_unlock(&sv.poll_lock);
		pthread_join(sv.poller, NULL);
	}
	if (git_held)
		mlp_git_release();
	mlp_server_stop(sv.http);
	if (sigfd >= 0)
		close(sigfd);
	if (sv.wake_fd >= 0)
		close(sv.wake_fd);
	if (sv.clock_fd >= 0)
		close(sv.clock_fd);
	free(sv.clock_file);
	scheds_free(&sv);
	for (size_t i = 0; i < sv.nchildren; i++)
		free(sv.children[i].project);
	free(sv.children);
	mlp_store_close(sv.db);
	mlp_store_close(sv.ctl);
	free(sv.db_path);
	free(sv.cfg.host);
	free(sv.cfg.tls_cert);
	free(sv.cfg.tls_key);
	free(sv.cfg.port_file);
	return rc;
}
