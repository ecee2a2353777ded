/*
 * k8s.c - the Kubernetes API client's requests (see k8s.h): one transfer,
 * its retries, and watches.  Where the configuration and credentials come
 * from is k8s-config.c's; the two are the only module that includes
 * libcurl.
 *
 * One easy handle per client, reused for every call so that the TLS
 * connection to the API server is kept alive between the GET, the PATCH
 * and the watch.  Credentials are kept in memory only: certificate, key
 * and CA go to libcurl as blobs, tokens as an Authorization header that
 * is never logged.
 */
#include "config.h"

#include <curl/curl.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "base/error.h"
#include "base/json.h"
#include "deploy/k8s-int.h"
#include "base/util.h"

#define RETRIES 5
/* The longest wait a Retry-After gets (a longer one is cut to this). */
#define RETRY_AFTER_MAX_MS (10 * 1000)

/* ------------------------------------------------------------------ */
/* Requests                                                            */
/* ------------------------------------------------------------------ */

/* What one transfer collects. */
struct transfer {
	struct mlp_buf body;
	long retry_after_s; /* -1: none */
	/* Watches: */
	bool watch;
	struct mlp_buf line;
	mlp_k8s_event_fn fn;
	void *payload;
	int stop; /* nonzero: the value mlp_k8s_watch returns */
	CURL *curl;
	/* Streams (mlp_k8s_stream): */
	const struct mlp_k8s_stream *stream;
};

static size_t on_header(char *data, size_t size, size_t n, void *userdata)
{
	struct transfer *t = userdata;
	size_t len = size * n;

	if (len > 12 && strncasecmp(data, "Retry-After:", 12) == 0) {
		char buf[32];
		size_t vlen = len - 12 < sizeof(buf) - 1 ? len - 12 : sizeof(buf) - 1;
		long long v;
		char *s = buf, *e;

		memcpy(buf, data + 12, vlen);
		buf[vlen] = '\0';
		while (*s == ' ')
			s++;
		e = s + strcspn(s, "\r\n ");
		*e = '\0';
		/* Delta-seconds only; an HTTP-date falls back to the backoff.  A
		 * huge value is still honoured (up to the cap), not ignored. */
		if (mlp_parse_int(&v, s, 0, LLONG_MAX) == 0)
			t->retry_after_s = v > 3600 ? 3600 : (long)v;
	}
	return len;
}

/* One line of a watch stream: {"type": ..., "object": {...}}. */
static int watch_line(struct transfer *t, const char *line, size_t len)
{
	struct mlp_json *ev = NULL;
	const char *type;
	const struct mlp_json *obj;
	int rc;

	if (len == 0)
		return 0;
	if (mlp_json_parse(&ev, line, len) != 0)
		return MLP_EINVAL;
	type = mlp_json_get_string(ev, "type");
	obj = mlp_json_get(ev, "object");
	if (type && strcmp(type, "ERROR") == 0) {
		int64_t code = mlp_json_int(mlp_json_get(obj, "code"), 0);

		if (code == 410) {
			rc = MLP_K8S_EXPIRED;
		} else {
			const char *msg = mlp_json_get_string(obj, "message");

			mlp_error_set("the watch failed: %s (code %lld)", msg ? msg : "no message",
			              (long long)code);
			rc = MLP_ERROR;
		}
	} else {
		rc = t->fn(type ? type : "", obj, t->payload);
	}
	mlp_json_free(ev);
	return rc;
}

/* A stream's bytes, raw or split into lines, to its callback. */
static size_t stream_body(struct transfer *t, const char *data, size_t len)
{
	const struct mlp_k8s_stream *o = t->stream;
	int rc;

	if (!o->lines) {
		if ((rc = o->fn(data, len, o->payload)) != 0) {
			t->stop = rc;
			return 0;
		}
		return len;
	}
	mlp_buf_add(&t->line, data, len);
	for (;;) {
		char *nl = memchr(t->line.data, '\n', t->line.len);
		size_t used;

		if (nl == NULL)
			break;
		used = (size_t)(nl - t->line.data) + 1;
		rc = o->fn(t->line.data, used - 1, o->payload);
		memmove(t->line.data, t->line.data + used, t->line.len - used);
		t->line.len -= used;
		if (rc != 0) {
			t->stop = rc;
			return 0;
		}
	}
	return len;
}

static size_t on_body(char *data, size_t size, size_t n, void *userdata)
{
	struct transfer *t = userdata;
	size_t len = size * n;
	long http = 0;

	if (t->stream) {
		curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &http);
		if (http != 200) {
			if (t->body.len < (1 << 20))
				mlp_buf_add(&t->body, data, len);
			return len;
		}
		return stream_body(t, data, len);
	}
	if (!t->watch) {
		if (t->body.len + len > (64u << 20))
			return 0;
		mlp_buf_add(&t->body, data, len);
		return len;
	}
	curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &http);
	if (http != 200) {
		if (t->body.len < (1 << 20))
			mlp_buf_add(&t->body, data, len);
		return len;
	}
	mlp_buf_add(&t->line, data, len);
	for (;;) {
		char *nl = memchr(t->line.data, '\n', t->line.len);
		size_t used;
		int rc;

		if (nl == NULL)
			break;
		used = (size_t)(nl - t->line.data) + 1;
		*nl = '\0';
		rc = watch_line(t, t->line.data, used - 1);
		memmove(t->line.data, t->line.data + used, t->line.len - used);
		t->line.len -= used;
		t->line.data[t->line.len] = '\0';
		if (rc != 0) {
			t->stop = rc;
			return 0; /* aborts the transfer */
		}
	}
	return len;
}

/* Sets up the handle for one transfer (TLS, credentials, timeouts). */
static struct curl_slist *setup(struct mlp_k8s *k, struct transfer *t, const char *method,
                                const char *url, const char *content_type, const char *body,
                                int64_t timeout_ms, char *errbuf)
{
	struct curl_slist *h = NULL;
	CURL *c = k->curl;

	curl_easy_reset(c);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https,http");
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
	                 (long)(timeout_ms < 10000 ? timeout_ms : 10000));
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, t);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, t);
	curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(c, CURLOPT_USERAGENT, "mlpipe/" PACKAGE_VERSION);
	if (strcmp(method, "GET") != 0)
		curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	if (body) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	}
	if (k->insecure) {
		curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
	} else if (k->ca.len) {
		struct curl_blob ca = {k->ca.data, k->ca.len, CURL_BLOB_COPY};

		curl_easy_setopt(c, CURLOPT_CAINFO_BLOB, &ca);
	}
	if (k->cert.len && k->key.len) {
		struct curl_blob cert = {k->cert.data, k->cert.len, CURL_BLOB_COPY};
		struct curl_blob key = {k->key.data, k->key.len, CURL_BLOB_COPY};

		curl_easy_setopt(c, CURLOPT_SSLCERT_BLOB, &cert);
		curl_easy_setopt(c, CURLOPT_SSLCERTTYPE, "PEM");
		curl_easy_setopt(c, CURLOPT_SSLKEY_BLOB, &key);
		curl_easy_setopt(c, CURLOPT_SSLKEYTYPE, "PEM");
	}
	h = curl_slist_append(h, "Accept: application/json");
	if (content_type) {
		char *ct = xasprintf("Content-Type: %s", content_type);

		h = curl_slist_append(h, ct);
		free(ct);
	}
	if (k->token) {
		char *auth = xasprintf("Authorization: Bearer %s", k->token);

		h = curl_slist_append(h, auth);
		memset(auth, 0, strlen(auth));
		free(auth);
	}
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	return h;
}

/* The API's own words for a failed call: a Status object's message. */
static void http_error(const char *method, const char *path, long http, const char *body)
{
	struct mlp_json *st = NULL;
	const char *msg = NULL;

	if (body && *body && mlp_json_parse(&st, body, strlen(body)) == 0)
		msg = mlp_json_get_string(st, "message");
	if (msg && *msg)
		mlp_error_set("%s (HTTP %ld)", msg, http);
	else
		mlp_error_set("%s %s: HTTP %ld%s%.200s", method, path, http,
		              body && *body ? ": " : "", body ? body : "");
	mlp_json_free(st);
}

static int http_code(long http)
{
	if (http == 404)
		return MLP_ENOTFOUND;
	if (http == 409)
		return MLP_EEXISTS;
	return MLP_ERROR;
}

static bool retryable_curl(CURLcode cc, bool idempotent)
{
	switch (cc) {
	case CURLE_COULDNT_CONNECT:
	case CURLE_SEND_ERROR:
	case CURLE_GOT_NOTHING:
		return true;
	case CURLE_RECV_ERROR:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_PARTIAL_FILE:
		return idempotent;
	default:
		return false;
	}
}

/*
 * The wait between retries of one request.  A sleep, not a timer: every
 * caller of the client is a blocking call on the thread that wants the
 * answer (mlpipe rollout, a rollout stage's process, exec-run), with no
 * other work to do meanwhile; a Retry-After is capped at 10 s and the
 * retries at 5, so the wait is bounded.
 */
static void sleep_ms(int64_t ms)
{
	struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

int mlp_k8s_request(struct mlp_json **out, long *out_http, struct mlp_k8s *k, const char *method,
                    const char *path, const char *content_type, const char *body)
{
	char *url = xasprintf("%s%s", k->server, path);
	bool idempotent = strcmp(method, "GET") == 0, refreshed = false;
	int64_t backoff = 200;
	int rc = MLP_ERROR;

	if (out)
		*out = NULL;
	if (out_http)
		*out_http = 0;
	for (int attempt = 1;; attempt++) {
		struct transfer t = {.retry_after_s = -1, .curl = k->curl};
		char errbuf[CURL_ERROR_SIZE] = "";
		struct curl_slist *h;
		CURLcode cc;
		long http = 0;
		int64_t wait = 0;

		if ((rc = k8s_refresh_credentials(k, false, NULL)) != 0)
			break;
		h = setup(k, &t, method, url, content_type, body, k->timeout_ms, errbuf);
		cc = curl_easy_perform(k->curl);
		curl_slist_free_all(h);
		curl_easy_getinfo(k->curl, CURLINFO_RESPONSE_CODE, &http);
		if (out_http)
			*out_http = http;
		if (cc != CURLE_OK) {
			mlp_error_set("%s: %s", k->server,
			              errbuf[0] ? errbuf : curl_easy_strerror(cc));
			rc = MLP_EIO;
			if (attempt < RETRIES && retryable_curl(cc, idempotent))
				wait = backoff;
		} else if (http >= 200 && http < 300) {
			rc = 0;
			if (out && t.body.len &&
			    mlp_json_parse(out, t.body.data, t.body.len) != 0) {
				mlp_error_set("%s %s: the API server's answer is not JSON", method,
				              path);
				rc = MLP_EINVAL;
			}
		} else {
			http_error(method, path, http, mlp_buf_str(&t.body));
			rc = http_code(http);
			if (http == 401 && !refreshed) {
				bool changed = false;

				refreshed = true;
				if (k8s_refresh_credentials(k, true, &changed) == 0 && changed)
					wait = 1; /* at once, with the new credential */
			} else if (attempt < RETRIES && (http == 429 || http >= 500)) {
				wait = t.retry_after_s >= 0 ? t.retry_after_s * 1000 : backoff;
				if (wait > RETRY_AFTER_MAX_MS)
					wait = RETRY_AFTER_MAX_MS;
				if (wait < 1)
					wait = 1; /* "Retry-After: 0": again at once; 0 ends the loop */
			}
		}
		mlp_buf_free(&t.body);
		if (rc == 0 || wait == 0)
			break;
		sleep_ms(wait);
		backoff = backoff * 2 > 3200 ? 3200 : backoff * 2;
	}
	free(url);
	return rc;
}

int mlp_k8s_watch(struct mlp_k8s *k, const char *path, int64_t deadline_ms, mlp_k8s_event_fn fn,
                  void *payload)
{
	char *url = xasprintf("%s%s", k->server, path);
	bool refreshed = false;
	int rc;

	for (;;) {
		struct transfer t = {.retry_after_s = -1,
		                     .watch = true,
		                     .fn = fn,
		                     .payload = payload,
		                     .curl = k->curl};
		char errbuf[CURL_ERROR_SIZE] = "";
		struct curl_slist *h;
		int64_t left = deadline_ms - mlp_mono_ms();
		CURLcode cc;
		long http = 0;

		if (left <= 0) {
			rc = MLP_ETIMEOUT;
			break;
		}
		if ((rc = k8s_refresh_credentials(k, false, NULL)) != 0)
			break;
		h = setup(k, &t, "GET", url, NULL, NULL, left, errbuf);
		cc = curl_easy_perform(k->curl);
		curl_slist_free_all(h);
		curl_easy_getinfo(k->curl, CURLINFO_RESPONSE_CODE, &http);
		if (t.stop != 0) {
			rc = t.stop;
		} else if (cc == CURLE_OPERATION_TIMEDOUT && mlp_mono_ms() >= deadline_ms) {
			rc = MLP_ETIMEOUT;
		} else if (cc != CURLE_OK) {
			mlp_error_set("%s: watch: %s", k->server,
			              errbuf[0] ? errbuf : curl_easy_strerror(cc));
			rc = MLP_EIO;
		} else if (http != 200) {
			http_error("GET", path, http, mlp_buf_str(&t.body));
			rc = http_code(http);
		} else {
			rc = 0; /* the server ended the stream */
		}
		mlp_buf_free(&t.body);
		mlp_buf_free(&t.line);
		if (http == 401 && !refreshed) {
			bool changed = false;

			refreshed = true;
			if (k8s_refresh_credentials(k, true, &changed) == 0 && changed)
				continue;
		}
		break;
	}
	free(url);
	return rc;
}

/* Aborts a stream whose caller asked it to stop. */
static int on_progress(void *userdata, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
	const struct transfer *t = userdata;

	(void)dltotal;
	(void)dlnow;
	(void)ultotal;
	(void)ulnow;
	return t->stream->cancel && *t->stream->cancel ? 1 : 0;
}

int mlp_k8s_stream(struct mlp_k8s *k, const char *path, const struct mlp_k8s_stream *opt)
{
	char *url = xasprintf("%s%s", k->server, path);
	bool refreshed = false;
	int rc;

	for (;;) {
		struct transfer t = {.retry_after_s = -1, .curl = k->curl, .stream = opt};
		char errbuf[CURL_ERROR_SIZE] = "";
		struct curl_slist *h;
		int64_t left = opt->deadline_ms - mlp_mono_ms();
		CURLcode cc;
		long http = 0;

		if (left <= 0) {
			rc = MLP_ETIMEOUT;
			break;
		}
		if ((rc = k8s_refresh_credentials(k, false, NULL)) != 0)
			break;
		h = setup(k, &t, "GET", url, NULL, NULL, left, errbuf);
		curl_easy_setopt(k->curl, CURLOPT_XFERINFOFUNCTION, on_progress);
		curl_easy_setopt(k->curl, CURLOPT_XFERINFODATA, &t);
		curl_easy_setopt(k->curl, CURLOPT_NOPROGRESS, 0L);
		if (opt->idle_timeout_ms > 0) {
			curl_easy_setopt(k->curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
			curl_easy_setopt(k->curl, CURLOPT_LOW_SPEED_TIME,
			                 (long)((opt->idle_timeout_ms + 999) / 1000));
		}
		cc = curl_easy_perform(k->curl);
		curl_slist_free_all(h);
		curl_easy_getinfo(k->curl, CURLINFO_RESPONSE_CODE, &http);
		if (t.stop != 0) {
			rc = t.stop;
		} else if (cc == CURLE_ABORTED_BY_CALLBACK) {
			rc = MLP_ECANCELLED;
		} else if (cc == CURLE_OPERATION_TIMEDOUT && mlp_mono_ms() >= opt->deadline_ms) {
			rc = MLP_ETIMEOUT;
		} else if (cc != CURLE_OK) {
			mlp_error_set("%s: %s: %s", k->server, path,
			              errbuf[0] ? errbuf : curl_easy_strerror(cc));
			rc = MLP_EIO;
		} else if (http != 200) {
			http_error("GET", path, http, mlp_buf_str(&t.body));
			rc = http_code(http);
		} else {
			if (opt->lines && t.line.len)
				rc = opt->fn(t.line.data, t.line.len, opt->payload);
			else
				rc = 0;
		}
		mlp_buf_free(&t.body);
		mlp_buf_free(&t.line);
		if (http == 401 && !refreshed) {
			bool changed = false;

			refreshed = true;
			if (k8s_refresh_credentials(k, true, &changed) == 0 && changed)
				continue;
		}
		break;
	}
	free(url);
	return rc;
}
