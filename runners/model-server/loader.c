/*
 * loader.c - fetching, verifying and decoding the served model in the
 * background, while the server already answers /v2/health/live
 * (model-server.h, docs/model-server.md "Loading").
 *
 * file:// (or a bare absolute path) is read once; http:// and https:// are
 * fetched with libcurl, TLS always verified, with the token file's bearer
 * token.  A network error or a 5xx is retried with backoff (1 s doubling
 * to 30 s); a 4xx, a digest mismatch or an invalid model file is final.
 * Every failure is one line on stderr and counts in
 * mlpipe_model_load_failures_total; the server stays live and not ready.
 */
#include "config.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "base/crypto.h"
#include "base/error.h"
#include "base/util.h"
#include "model-server.h"

/* The largest valid model file: 32 sizes and 2^28 parameters. */
#define MAX_MODEL_BYTES ((size_t)24 + 4 * MLP_MODEL_MAX_SIZES + 4 * (size_t)MLP_MODEL_MAX_PARAMS)
#define BACKOFF_FIRST_S 1
#define BACKOFF_MAX_S 30

enum { FETCH_OK = 0, FETCH_RETRY = 1, FETCH_FINAL = 2 };

struct ms_loader {
	struct ms_state *st;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	atomic_bool stop;
};

struct transfer {
	struct ms_loader *l;
	struct mlp_buf body;
	bool too_big;
};

static void log_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void log_line(const char *fmt, ...)
{
	va_list ap;

	flockfile(stderr);
	fputs(MS_PROG ": ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	funlockfile(stderr);
}

static size_t on_data(char *p, size_t size, size_t n, void *payload)
{
	struct transfer *t = payload;

	if (t->body.len + n > MAX_MODEL_BYTES) {
		t->too_big = true;
		return 0;
	}
	mlp_buf_add(&t->body, p, n * size);
	return n * size;
}

static int on_progress(void *payload, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
	struct transfer *t = payload;

	(void)dltotal;
	(void)dlnow;
	(void)ultotal;
	(void)ulnow;
	return t->l->stop ? 1 : 0;
}

/* Reads the token file into a new "Authorization: Bearer ..." header. */
static int bearer_header(char **out, const char *path)
{
	char *token;
	size_t len;
	int rc = mlp_read_file(&token, &len, path, 64 * 1024);

	if (rc != 0) {
		mlp_error_set("--token-file: %s", mlp_error_last());
		return rc;
	}
	while (len > 0 && (token[len - 1] == '\n' || token[len - 1] == '\r' ||
	                   token[len - 1] == ' ' || token[len - 1] == '\t'))
		token[--len] = '\0';
	if (len == 0 || strpbrk(token, "\r\n") != NULL) {
		mlp_error_set("--token-file %s: not one line with a token", path);
		free(token);
		return MLP_EINVAL;
	}
	*out = xasprintf("Authorization: Bearer %s", token);
	explicit_bzero(token, len);
	free(token);
	return 0;
}

/* One HTTP(S) GET of the model: FETCH_OK with the bytes in t->body, or
 * FETCH_RETRY / FETCH_FINAL with the message set. */
static int fetch_http(struct transfer *t, const char *uri)
{
	const struct ms_opts *o = &t->l->st->opts;
	struct curl_slist *headers = NULL;
	char errbuf[CURL_ERROR_SIZE] = "";
	char *auth = NULL;
	CURL *c = curl_easy_init();
	CURLcode cc;
	long status = 0;
	int rc = FETCH_FINAL;

	if (c == NULL) {
		mlp_error_set("cannot start a transfer (curl_easy_init)");
		return FETCH_RETRY;
	}
	if (o->token_file) {
		if (bearer_header(&auth, o->token_file) != 0)
			goto done;
		headers = curl_slist_append(headers, auth);
	}
	curl_easy_setopt(c, CURLOPT_URL, uri);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
	if (o->ca_file)
		curl_easy_setopt(c, CURLOPT_CAINFO, o->ca_file);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 30L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, t);
	curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(c, CURLOPT_XFERINFODATA, t);
	curl_easy_setopt(c, CURLOPT_USERAGENT, MS_PROG "/" PACKAGE_VERSION);
	cc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	if (t->too_big) {
		mlp_error_set("larger than any model (%zu bytes)", MAX_MODEL_BYTES);
	} else if (cc != CURLE_OK) {
		mlp_error_set("%s", errbuf[0] ? errbuf : curl_easy_strerror(cc));
		rc = FETCH_RETRY;
	} else if (status >= 500) {
		mlp_error_set("HTTP status %ld", status);
		rc = FETCH_RETRY;
	} else if (status != 200) {
		mlp_error_set("HTTP status %ld%s", status,
		              status == 401 || status == 403 ? " (check --token-file)" : "");
	} else {
		rc = FETCH_OK;
	}
done:
	curl_slist_free_all(headers);
	if (auth) {
		explicit_bzero(auth, strlen(auth));
		free(auth);
	}
	curl_easy_cleanup(c);
	return rc;
}

static int fetch(struct transfer *t, const char *uri)
{
	const char *path = uri;
	char *data = NULL;
	size_t len = 0;

	if (strncasecmp(uri, "http://", 7) == 0 || strncasecmp(uri, "https://", 8) == 0)
		return fetch_http(t, uri);
	if (strncmp(uri, "file://", 7) == 0)
		path = uri + 7;
	if (mlp_read_file(&data, &len, path, MAX_MODEL_BYTES) != 0)
		return FETCH_FINAL;
	mlp_buf_add(&t->body, data, len);
	free(data);
	return FETCH_OK;
}

/* Waits s seconds or until stopped; false when stopped. */
static bool backoff(struct ms_loader *l, int s)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += s;
	pthread_mutex_lock(&l->mu);
	while (!l->stop && pthread_cond_timedwait(&l->cv, &l->mu, &ts) != ETIMEDOUT)
		;
	pthread_mutex_unlock(&l->mu);
	return !l->stop;
}

/* One attempt: FETCH_OK with the model published, or a failure logged. */
static int attempt(struct ms_loader *l)
{
	struct ms_state *st = l->st;
	const char *uri = st->opts.model_uri;
	struct transfer t = {.l = l};
	struct ms_model *m = NULL;
	char got[MLP_SHA256_HEX_LEN + 1];
	int rc = fetch(&t, uri);

	if (rc != FETCH_OK) {
		if (!l->stop)
			log_line("model %s: %s%s", uri, mlp_error_last(),
			         rc == FETCH_RETRY ? " (will retry)" : "");
		goto done;
	}
	rc = FETCH_FINAL;
	mlp_sha256_hex(got, t.body.data ? t.body.data : "", t.body.len);
	if (st->opts.sha256 && strcasecmp(got, st->opts.sha256) != 0) {
		log_line("model %s: sha256 mismatch (expected %s, got %s)", uri, st->opts.sha256,
		         got);
		goto done;
	}
	if (ms_model_open(&m, (const uint8_t *)t.body.data, t.body.len, uri) != 0) {
		log_line("model %s", mlp_error_last());
		goto done;
	}
	atomic_store(&st->model, m);
	atomic_store(&st->ready, !st->stopping);
	log_line("model %s version %s ready (sha256 %s, %s)", st->opts.name, st->opts.version,
	         m->sha256, m->shape_text);
	rc = FETCH_OK;
done:
	if (rc != FETCH_OK && !l->stop)
		ms_metrics_load_failure(st->metrics);
	mlp_buf_free(&t.body);
	return rc;
}

static void *loader_main(void *arg)
{
	struct ms_loader *l = arg;
	int wait_s = BACKOFF_FIRST_S;

	while (attempt(l) == FETCH_RETRY && backoff(l, wait_s))
		wait_s = wait_s * 2 > BACKOFF_MAX_S ? BACKOFF_MAX_S : wait_s * 2;
	return NULL;
}

int ms_loader_start(struct ms_loader **out, struct ms_state *st)
{
	struct ms_loader *l = xcalloc(1, sizeof(*l));
	pthread_condattr_t ca;
	int err;

	*out = NULL;
	l->st = st;
	pthread_mutex_init(&l->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&l->cv, &ca);
	pthread_condattr_destroy(&ca);
	if ((err = pthread_create(&l->thread, NULL, loader_main, l)) != 0) {
		mlp_error_set_errno(err, "cannot start the loader thread");
		pthread_cond_destroy(&l->cv);
		pthread_mutex_destroy(&l->mu);
		free(l);
		return MLP_ERROR;
	}
	*out = l;
	return 0;
}

void ms_loader_stop(struct ms_loader *l)
{
	if (l == NULL)
		return;
	pthread_mutex_lock(&l->mu);
	l->stop = true;
	pthread_cond_signal(&l->cv);
	pthread_mutex_unlock(&l->mu);
	pthread_join(l->thread, NULL);
	pthread_cond_destroy(&l->cv);
	pthread_mutex_destroy(&l->mu);
	free(l);
}
