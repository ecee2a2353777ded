/*
 * k8s-job-pods.c - the threads of one attempt on Kubernetes: a follower
 * per pod that streams its log into the stage log, and the results
 * thread that waits for rank 0 to finish; then the download of rank 0's
 * result files.  Each thread has a client of its own (libcurl handles are
 * not shared between threads); the main loop (k8s-job.c) tells them when
 * to stop through volatile flags and joins them.
 *
 * Logs are read with timestamps=true, so that a stream that breaks
 * (the API server restarts, a proxy times out) resumes with sinceTime
 * from the last line's second and skips the lines it already wrote.
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/crypto.h"
#include "base/error.h"
#include "base/json.h"
#include "base/util.h"
#include "deploy/k8s-job-int.h"

void gang_print(struct gang *g, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&g->out_lock);
	va_start(ap, fmt);
	vfprintf(g->io->log, fmt, ap);
	va_end(ap);
	fputc('\n', g->io->log);
	fflush(g->io->log);
	pthread_mutex_unlock(&g->out_lock);
}

static void nap_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* "2026-12-04T17:00:00.123456789Z" -> seconds and nanoseconds (UTC). */
static bool parse_stamp(const char *s, size_t len, int64_t *sec, long *nsec)
{
	struct tm tm = {0};
	char buf[64];
	const char *frac;
	long ns = 0, scale = 100000000;

	if (len >= sizeof(buf) || len < 20)
		return false;
	memcpy(buf, s, len);
	buf[len] = '\0';
	frac = strptime(buf, "%Y-%m-%dT%H:%M:%S", &tm);
	if (frac == NULL)
		return false;
	if (*frac == '.')
		for (frac++; *frac >= '0' && *frac <= '9'; frac++, scale /= 10)
			ns += (*frac - '0') * scale;
	*sec = (int64_t)timegm(&tm);
	*nsec = ns;
	return true;
}

static int log_line(const char *line, size_t len, void *payload)
{
	struct follower *f = payload;
	const char *sp = memchr(line, ' ', len);
	int64_t sec;
	long nsec;

	if (sp && parse_stamp(line, (size_t)(sp - line), &sec, &nsec)) {
		bool same = sec == f->last_s && nsec == f->last_ns;

		/* Lines written before the stream was resumed: older ones, and
		 * as many of the last timestamp's as were written (several
		 * lines read in one go share a timestamp). */
		if (sec < f->last_s || (sec == f->last_s && nsec < f->last_ns))
			return 0;
		if (same && f->skip_same > 0) {
			f->skip_same--;
			return 0;
		}
		if (same) {
			f->same++;
		} else {
			f->last_s = sec;
			f->last_ns = nsec;
			f->same = 1;
			f->skip_same = 0;
		}
		len -= (size_t)(sp - line) + 1;
		line = sp + 1;
	}
	f->lines++;
	gang_print(f->g, "%.*s", (int)len, line);
	return 0;
}

static void *follow_thread(void *arg)
{
	struct follower *f = arg;
	struct gang *g = f->g;
	struct mlp_k8s *k = NULL;
	bool said = false;

	if (mlp_k8s_open(&k, g->kopt) != 0) {
		gang_print(g, "[mlpipe] cannot follow the log of pod %s: %s", f->pod,
		           mlp_error_last());
		f->done = 1;
		return NULL;
	}
	while (!f->stop) {
		struct mlp_k8s_stream opt = {
		        .deadline_ms = mlp_mono_ms() + 3600 * 1000,
		        .lines = true,
		        .fn = log_line,
		        .payload = f,
		        .cancel = &f->stop,
		};
		bool ended = f->terminated; /* read before: the stream then has it all */
		char *path, since[48] = "";
		int rc;

		f->skip_same = f->same;
		if (f->last_s > 0) {
			time_t t = (time_t)f->last_s;
			struct tm tm;

			gmtime_r(&t, &tm);
			strftime(since, sizeof(since), "&sinceTime=%Y-%m-%dT%H:%M:%SZ", &tm);
		}
		path = xasprintf("/api/v1/namespaces/%s/pods/%s/log?container=train&follow=true"
		                 "&timestamps=true%s",
		                 g->ns, f->pod, since);
		rc = mlp_k8s_stream(k, path, &opt);
		free(path);
		if (rc == 0 && ended)
			break;
		if (rc == MLP_ENOTFOUND && f->lines > 0)
			break; /* the pod is gone */
		if (rc == MLP_ERROR && !said && strstr(mlp_error_last(), "(HTTP 403)")) {
			said = true; /* RBAC: say it once, keep trying (it may be fixed) */
			gang_print(g, "[mlpipe] cannot read the log of pod %s: %s", f->pod,
			           mlp_error_last());
		}
		nap_ms(rc == 0 ? 100 : 250);
	}
	mlp_k8s_close(k);
	f->done = 1;
	return NULL;
}

void gang_follow(struct gang *g, struct pod *p)
{
	if (p->log.started)
		return;
	p->log.g = g;
	p->log.pod = p->name;
	if (pthread_create(&p->log.thread, NULL, follow_thread, &p->log) == 0)
		p->log.started = true;
}

void gang_join_followers(struct gang *g, int64_t deadline_ms)
{
	for (;;) {
		bool all = true;

		for (size_t i = 0; i < g->npods; i++)
			if (g->pods[i]->log.started && !g->pods[i]->log.done)
				all = false;
		if (all || mlp_mono_ms() >= deadline_ms)
			break;
		nap_ms(50);
	}
	for (size_t i = 0; i < g->npods; i++) {
		struct follower *f = &g->pods[i]->log;

		if (!f->started)
			continue;
		f->stop = 1;
		pthread_join(f->thread, NULL);
		f->started = false;
	}
}

/* ---- rank 0's results ---------------------------------------------------- */

static char *proxy_path(const struct gang *g, const char *pod, const char *what)
{
	return xasprintf("/api/v1/namespaces/%s/pods/%s:%d/proxy/%s", g->ns, pod,
	                 MLP_K8S_RESULTS_PORT, what);
}

static void *results_thread(void *arg)
{
	struct results *r = arg;
	struct gang *g = r->g;
	struct mlp_k8s_options o = *g->kopt;
	struct mlp_k8s *k = NULL;
	/* Short polls with a short timeout: under load a proxied request now
	 * and then never reaches the pod (measured: 4 in 25 runs waited out a
	 * 30 s timeout); abandoned after 5 s, its retry goes through. */
	char *path = proxy_path(g, r->pod, "status?wait=3");

	o.request_timeout_ms = 5000;
	if (mlp_k8s_open(&k, &o) != 0) {
		snprintf(r->error, sizeof(r->error), "%s", mlp_error_last());
		goto out;
	}
	while (!r->stop) {
		struct mlp_json *st = NULL;
		const char *state;
		long http = 0;

		if (mlp_k8s_request(&st, &http, k, "GET", path, NULL, NULL) != 0) {
			snprintf(r->error, sizeof(r->error), "%s", mlp_error_last());
			/* RBAC without pods/proxy: asking again will not help. */
			if (http == 401 || http == 403)
				break;
			/* Not listening yet, or the pod is going: the main loop
			 * decides; here we only ask again. */
			nap_ms(200);
			continue;
		}
		state = mlp_json_get_string(st, "state");
		if (state && strcmp(state, "done") == 0) {
			r->status = st;
			break;
		}
		mlp_json_free(st);
	}
out:
	free(path);
	mlp_k8s_close(k);
	r->done = 1;
	return NULL;
}

void gang_results_start(struct gang *g, const char *pod)
{
	struct results *r = &g->results;

	if (r->started)
		return;
	r->g = g;
	r->pod = xstrdup(pod);
	if (pthread_create(&r->thread, NULL, results_thread, r) == 0)
		r->started = true;
}

void gang_results_join(struct gang *g)
{
	struct results *r = &g->results;

	if (r->started) {
		r->stop = 1;
		pthread_join(r->thread, NULL);
		r->started = false;
	}
}

struct download {
	FILE *f;
	int64_t size;
};

static int download_chunk(const char *data, size_t len, void *payload)
{
	struct download *d = payload;

	if (fwrite(data, 1, len, d->f) != len)
		return MLP_EIO;
	d->size += (int64_t)len;
	return 0;
}

/* One result file: to a temporary name beside dest, checked, renamed. */
static int fetch_file(struct gang *g, const char *name, const struct mlp_json *want,
                      const char *dest)
{
	char *tmp = xasprintf("%s.mlpipe-part", dest), *what = xasprintf("files/%s", name);
	char *path = proxy_path(g, g->results.pod, what);
	struct download d = {.f = fopen(tmp, "wb")};
	struct mlp_k8s_stream opt = {
	        .deadline_ms = mlp_mono_ms() + 3600 * 1000,
	        .idle_timeout_ms = 10000,
	        .fn = download_chunk,
	        .payload = &d,
	};
	const char *sha = mlp_json_get_string(want, "sha256");
	int64_t size = mlp_json_int(mlp_json_get(want, "size"), -1);
	char got[MLP_SHA256_HEX_LEN + 1];
	int rc;

	if (d.f == NULL) {
		mlp_error_set_errno(errno, "cannot write %s", tmp);
		rc = MLP_EIO;
		goto done;
	}
	/* A download that stalls (see results_thread) is tried again. */
	for (int tries = 0;; tries++) {
		opt.deadline_ms = mlp_mono_ms() + 3600 * 1000;
		rc = mlp_k8s_stream(g->k, path, &opt);
		if (rc != MLP_EIO || tries == 2 || d.size > 0)
			break;
		rewind(d.f);
	}
	if (fclose(d.f) != 0 && rc == 0) {
		mlp_error_set_errno(errno, "cannot write %s", tmp);
		rc = MLP_EIO;
	}
	if (rc == MLP_EIO && errno == 0)
		mlp_error_set("cannot write %s", tmp);
	if (rc != 0)
		goto done;
	if ((rc = mlp_sha256_file_hex(got, tmp)) != 0)
		goto done;
	if (d.size != size || sha == NULL || strcmp(sha, got) != 0) {
		mlp_error_set("rank 0's %s came back damaged: %lld bytes with sha256 %s, "
		              "expected %lld bytes with sha256 %s",
		              name, (long long)d.size, got, (long long)size, sha ? sha : "(none)");
		rc = MLP_EIO;
		goto done;
	}
	if (rename(tmp, dest) != 0) {
		mlp_error_set_errno(errno, "cannot rename %s to %s", tmp, dest);
		rc = MLP_EIO;
	}
done:
	if (rc != 0)
		unlink(tmp);
	free(path);
	free(what);
	free(tmp);
	return rc;
}

int gang_fetch_results(struct gang *g)
{
	const struct mlp_json *files = mlp_json_get(g->results.status, "files");
	const struct {
		const char *name, *dest;
	} want[] = {
	        {"output", g->io->output_path},
	        {"metrics", g->io->metrics_path},
	        {"model", g->io->model_dest},
	};
	char *done;
	int rc = 0;

	for (size_t i = 0; i < MLP_ARRAY_SIZE(want) && rc == 0; i++) {
		const struct mlp_json *f = mlp_json_get(files, want[i].name);

		if (f == NULL && want[i].dest && strcmp(want[i].name, "model") == 0) {
			/* Never register a stale local file as this run's model. */
			mlp_error_set("rank 0 wrote no model file at %s (in the pod's working "
			              "directory)",
			              g->spec->model_path ? g->spec->model_path : want[i].dest);
			rc = MLP_ENOTFOUND;
			break;
		}
		if (f == NULL || want[i].dest == NULL)
			continue;
		if ((rc = fetch_file(g, want[i].name, f, want[i].dest)) == 0 &&
		    strcmp(want[i].name, "model") == 0)
			gang_print(g, "[mlpipe] fetched the model from %s (%lld bytes, sha256 %s)",
			           g->results.pod,
			           (long long)mlp_json_int(mlp_json_get(f, "size"), 0),
			           mlp_json_get_string(f, "sha256"));
	}
	done = proxy_path(g, g->results.pod, "done");
	/* Rank 0 waits for this (or its serve timeout) before it exits. */
	if (mlp_k8s_request(NULL, NULL, g->k, "POST", done, "text/plain", "") != 0 && rc == 0)
		gang_print(g, "[mlpipe] could not release %s: %s", g->results.pod,
		           mlp_error_last());
	free(done);
	return rc;
}
