/*
 * api.c - the JSON API of `mlpipe serve`: /api/v1/runs and the runs under
 * it (serve-int.h, docs/api.md); /api/v1/models/ is artifacts.c's.
 *
 * Every request carries a bearer token (`mlpipe token create`) whose
 * scopes allow what it asks (runs:read, runs:write, models:read); answers
 * are read from and written to the database in the HTTP thread, under
 * db_lock.  A run created here is only queued: the main loop starts it
 * (dispatch.c).  A cancel is recorded here and the run's exec-run told
 * with SIGTERM.  A stage's log is streamed while the stage runs.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/inotify.h>
#include <time.h>
#include <unistd.h>

#include "base/crypto.h"
#include "base/error.h"
#include "base/git.h"
#include "base/json.h"
#include "base/util.h"
#include "pipeline/pipeline.h"
#include "serve/api-int.h"
#include "serve/serve-int.h"
#include "serve/serve.h"
#include "store/store.h"
#include "store/store-queue.h"
#include "store/store-runs.h"

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

/* The token's name (the caller frees) and its scopes in *out_scopes, or
 * NULL when the request has no valid token. */
static char *authenticate(char **out_scopes, struct serve *sv, const struct mlp_http_request *req)
{
	const char *h = mlp_http_header(req, "Authorization");
	char sha[MLP_SHA256_HEX_LEN + 1], *name = NULL;

	*out_scopes = NULL;
	if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0)
		return NULL;
	mlp_sha256_hex(sha, h + 7, strlen(h + 7));
	pthread_mutex_lock(&sv->db_lock);
	if (mlp_store_token_check(&name, out_scopes, sv->db, sha) != 0)
		name = NULL;
	pthread_mutex_unlock(&sv->db_lock);
	return name;
}

static const char *const scope_names[] = {"all", "runs:read", "runs:write", "models:read"};

bool mlp_serve_scope_known(const char *text)
{
	for (size_t i = 0; i < MLP_ARRAY_SIZE(scope_names); i++)
		if (strcmp(text, scope_names[i]) == 0)
			return true;
	return false;
}

bool mlp_serve_scope_allows(const char *scopes, const char *need)
{
	size_t nlen = strlen(need);

	for (const char *p = scopes; p && *p;) {
		size_t len = strcspn(p, ",");

		if ((len == 3 && strncmp(p, "all", 3) == 0) ||
		    (len == nlen && strncmp(p, need, len) == 0))
			return true;
		p += len;
		if (*p == ',')
			p++;
	}
	return false;
}

/* The scope a request needs: by the first part of the path and the method. */
static const char *scope_needed(const char *rest, const char *method)
{
	if (strncmp(rest, "models/", 7) == 0)
		return "models:read";
	if (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0)
		return "runs:read";
	return "runs:write";
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
	struct mlp_run_filter f = {0};
	struct mlp_run_info *runs = NULL;
	size_t len = 0;
	int rc;

	if (serve_runs_query_parse(&f, mlp_http_query(req, "limit"),
	                           mlp_http_query(req, "status")) != 0) {
		serve_reply_error(r, 400, mlp_error_last());
		return;
	}
	f.pipeline = mlp_http_query(req, "pipeline");
	pthread_mutex_lock(&sv->db_lock);
	rc = mlp_store_runs_list(&runs, &len, sv->db, &f);
	pthread_mutex_unlock(&sv->db_lock);
	if (rc != 0) {
		serve_reply_error(r, 503, mlp_error_last());
		return;
	}
	{
		struct mlp_json *o = mlp_json_object(), *a = mlp_json_array();

		for (size_t i = 0; i < len; i++)
			mlp_json_append(a, run_json(&runs[i], NULL));
		mlp_json_add(o, "runs", a);
		serve_reply_json(r, 200, o);
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
	rc = mlp_store_run_get(&ri, sv->db, id);
	if (rc == 0 && (rc = mlp_store_queued_run_get(&q, sv->db, id)) != 0)
		mlp_run_info_clear(&ri);
	if (rc == 0 && ((rc = mlp_store_attempts_list(&a, &na, sv->db, id)) != 0 ||
	                (rc = mlp_store_metrics_list(&mets, &nm, sv->db, id)) != 0)) {
		mlp_run_info_clear(&ri);
		mlp_queued_run_clear(&q);
	}
	pthread_mutex_unlock(&sv->db_lock);
	if (rc != 0) {
		serve_reply_error(r, rc == MLP_ENOTFOUND ? 404 : 503, mlp_error_last());
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
		serve_reply_json(r, 200, o);
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
	if (mlp_store_attempts_list(&a, &na, sv->db, run) == 0) {
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

/*
 * The next bytes of the log.  It never waits: with nothing new while the
 * stage runs it returns 0, and server.c calls again once ls->ino reports
 * a write to a log of the run or to the database (the attempt's end is a
 * commit to its WAL), or after a backstop delay (100 ms without inotify).
 * The inotify queue is drained before the log is read, so a write after
 * the read still wakes the stream.
 */
static ssize_t log_read(void *payload, uint64_t pos, char *buf, size_t max)
{
	struct log_stream *ls = payload;
	bool running = false;

	if (ls->ino >= 0) {
		char ev[4096];

		while (read(ls->ino, ev, sizeof(ev)) > 0)
			;
	}
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
		/* Nothing new: finished, or more to come. */
		stage_log(ls->sv, ls->run, ls->stage, &ls->path, &running);
		if (!running || atomic_load(&ls->sv->stopping) || mlp_mono_ms() > ls->deadline_ms)
			continue; /* read once more: the last lines, then the end */
		return 0;
	}
	return -1;
}

static int log_wait_fd(void *payload)
{
	const struct log_stream *ls = payload;

	return ls->ino;
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

	/* A name no pipeline file can give a stage is no stage's. */
	if (!mlp_pipeline_stage_name_valid(stage)) {
		log_free(ls);
		serve_reply_error(r, 400,
		                  "not a stage name (letters, digits, '_' and '-', starting "
		                  "with a letter or '_')");
		return;
	}
	ls->sv = sv;
	ls->run = id;
	ls->stage = xstrdup(stage);
	ls->deadline_ms = mlp_mono_ms() + 6 * 3600 * 1000;
	ls->ino = -1;
	if (!stage_log(sv, id, stage, &ls->path, &running)) {
		log_free(ls);
		serve_reply_error(r, 404, "no such stage attempt in this run");
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
	r->stream_wait_fd = log_wait_fd;
}

static void api_run_create(struct serve *sv, const char *user,
                           const struct mlp_http_request_view *v, struct mlp_http_response *r)
{
	struct serve_run_request rq;
	int64_t id = 0;
	int rc;

	if (serve_run_request_parse(&rq, v->body, v->body_len) != 0) {
		serve_reply_error(r, 400, mlp_error_last());
		goto done;
	}
	{
		struct mlp_project *ps = NULL;
		size_t n = 0;
		bool known = false;
		struct mlp_run_queued q = {
		        .project = rq.project,
		        .trigger = "api",
		        .user = user,
		        .git_ref = rq.ref,
		        .git_commit = rq.commit,
		};

		pthread_mutex_lock(&sv->db_lock);
		rc = mlp_store_projects_list(&ps, &n, sv->db);
		for (size_t i = 0; rc == 0 && i < n; i++)
			known = known || strcmp(ps[i].name, rq.project) == 0;
		if (rc == 0 && known)
			rc = mlp_store_run_enqueue(&id, sv->db, &q, NULL, NULL);
		pthread_mutex_unlock(&sv->db_lock);
		mlp_project_free_all(ps, n);
		if (rc != 0) {
			serve_reply_error(r, 503, mlp_error_last());
			goto done;
		}
		if (!known) {
			serve_reply_error(r, 404, "no such project");
			goto done;
		}
	}
	{
		struct mlp_json *o = mlp_json_object();

		mlp_json_add_int(o, "run", id);
		serve_reply_json(r, 202, o);
		serve_wake(sv);
	}
done:
	serve_run_request_clear(&rq);
}

static void api_run_cancel(struct serve *sv, int64_t id, struct mlp_http_response *r)
{
	int64_t pid = 0;
	int rc;

	pthread_mutex_lock(&sv->db_lock);
	rc = mlp_store_run_cancel(&pid, sv->db, id);
	pthread_mutex_unlock(&sv->db_lock);
	if (rc != 0) {
		serve_reply_error(r,
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
		serve_reply_json(r, 202, o);
	}
}

void serve_api_handle(struct serve *sv, const struct mlp_http_request *req,
                      const struct mlp_http_request_view *v, struct mlp_http_response *r,
                      const char *rest)
{
	char *scopes = NULL, *user = authenticate(&scopes, sv, req);
	const char *need = scope_needed(rest, v->method);
	long long id = 0;
	char *end = NULL;

	if (user == NULL) {
		r->extra_header = "WWW-Authenticate";
		r->extra_value = "Bearer realm=\"mlpipe\"";
		serve_reply_error(r, 401, "a bearer token is required (mlpipe token create)");
		return;
	}
	if (!mlp_serve_scope_allows(scopes, need)) {
		char *msg = xasprintf("the token '%s' lacks the scope %s", user, need);

		serve_reply_error(r, 403, msg);
		free(msg);
		goto done;
	}
	if (strncmp(rest, "models/", 7) == 0) {
		serve_models_handle(sv, req, v, r, rest + 7);
		goto done;
	}
	if (strcmp(rest, "runs") == 0) {
		if (strcmp(v->method, "GET") == 0)
			api_runs_list(sv, req, r);
		else if (strcmp(v->method, "POST") == 0)
			api_run_create(sv, user, v, r);
		else
			serve_reply_error(r, 405, "GET or POST");
		goto done;
	}
	if (strncmp(rest, "runs/", 5) == 0) {
		errno = 0;
		id = strtoll(rest + 5, &end, 10);
		if (errno || end == rest + 5 || id <= 0) {
			serve_reply_error(r, 404, "no such run");
			goto done;
		}
		if (*end == '\0' && strcmp(v->method, "GET") == 0)
			api_run_get(sv, id, r);
		else if (strcmp(end, "/cancel") == 0 && strcmp(v->method, "POST") == 0)
			api_run_cancel(sv, id, r);
		else if (strncmp(end, "/logs/", 6) == 0 && end[6] && strcmp(v->method, "GET") == 0)
			api_run_logs(sv, id, end + 6, r);
		else
			serve_reply_error(r, 404, "no such endpoint");
		goto done;
	}
	serve_reply_error(r, 404, "no such endpoint");
done:
	free(scopes);
	free(user);
}
