/*
 * test-k8s.c - the Kubernetes client's failure paths (retries, backoff,
 * Retry-After, timeouts, Status messages, credential refresh, watches)
 * against a scripted HTTP server that the test runs in a thread on
 * 127.0.0.1:0.  Each step of a script is one canned answer; the server
 * records what every request carried (method, path, Authorization, body)
 * and when it came, so that a case can assert how many requests were sent
 * and that the client really waited between them.
 *
 * Plain http for the kubeconfig cases (k8s.c accepts http:// servers);
 * the in-cluster case needs https (the service address is always https),
 * so the server also speaks TLS with a certificate made here in memory,
 * written as the service account's ca.crt.  A real API server's happy
 * paths are tested by tests/k8s/rollout.sh (make check-k8s).
 *
 * Every socket operation in the server is bounded (poll timeouts,
 * SO_RCVTIMEO/SO_SNDTIMEO) and the client's timeouts are small, so a
 * broken client fails a case instead of hanging the suite.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "base/error.h"
#include "base/json.h"
#include "deploy/k8s.h"
#include "base/util.h"

/* ---- the scripted server ---------------------------------------------- */

#define MAX_SEEN 16
#define MAX_CHUNKS 4
/* No socket operation of the server waits longer than this. */
#define IO_TIMEOUT_MS 5000
/* A step that never answers holds the connection at most this long. */
#define HANG_MAX_MS 15000

/* One canned answer.  status 0: read the request and never answer. */
struct step {
	int status;
	const char *headers;            /* extra header lines, each "...\r\n" */
	const char *body;               /* with Content-Length */
	const char *chunks[MAX_CHUNKS]; /* or a chunked body, sent piecewise */
	int chunk_pause_ms;             /* between chunks */
	bool hang_after_chunks;         /* keep the stream open afterwards */
	void (*before)(void *arg);      /* runs before the answer is sent */
	void *before_arg;
};

/* What one request carried. */
struct seen {
	char method[16];
	char path[256];
	char auth[256];
	char content_type[128];
	char body[1024];
	int64_t at_ms;
};

struct server {
	int fd;
	int port;
	SSL_CTX *tls;              /* NULL: plain http */
	const struct step *script; /* the last step repeats */
	size_t nsteps;
	pthread_t thread;
	bool running;
	atomic_bool stop;

	pthread_mutex_t lock;
	struct seen seen[MAX_SEEN];
	size_t nseen;
	int64_t chunk_sent_ms[MAX_CHUNKS]; /* of the latest chunked answer */
};

struct conn {
	int fd;
	SSL *ssl;
};

static ssize_t conn_read(struct conn *c, char *buf, size_t len)
{
	if (c->ssl) {
		int n = SSL_read(c->ssl, buf, (int)len);

		return n > 0 ? n : SSL_get_error(c->ssl, n) == SSL_ERROR_ZERO_RETURN ? 0 : -1;
	}
	return recv(c->fd, buf, len, 0);
}

static bool conn_write(struct conn *c, const char *data, size_t len)
{
	while (len > 0) {
		ssize_t n = c->ssl ? SSL_write(c->ssl, data, (int)len)
		                   : send(c->fd, data, len, MSG_NOSIGNAL);

		if (n <= 0)
			return false;
		data += n;
		len -= (size_t)n;
	}
	return true;
}

static const char *reason(int status)
{
	switch (status) {
	case 200:
		return "OK";
	case 401:
		return "Unauthorized";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 409:
		return "Conflict";
	case 422:
		return "Unprocessable Entity";
	case 429:
		return "Too Many Requests";
	case 500:
		return "Internal Server Error";
	case 503:
		return "Service Unavailable";
	default:
		return "Status";
	}
}

static void copy_value(char *dst, size_t size, const char *line, size_t skip)
{
	const char *v = line + skip;

	while (*v == ' ')
		v++;
	snprintf(dst, size, "%.*s", (int)strcspn(v, "\r\n"), v);
}

/* Reads one request (head, then a body by Content-Length) into *r;
 * false when the peer went away or was too slow. */
static bool read_request(struct conn *c, struct seen *r)
{
	struct mlp_buf in = {0};
	char chunk[4096], *end, *line;
	long long body_len = 0;
	size_t head_len;
	bool ok = false;

	while ((end = in.len ? strstr(mlp_buf_str(&in), "\r\n\r\n") : NULL) == NULL) {
		ssize_t n = conn_read(c, chunk, sizeof(chunk));

		if (n <= 0 || in.len > (64 << 10))
			goto done;
		mlp_buf_add(&in, chunk, (size_t)n);
	}
	head_len = (size_t)(end - in.data) + 4;
	if (sscanf(in.data, "%15s %255s", r->method, r->path) != 2)
		goto done;
	for (line = strstr(in.data, "\r\n"); line && line < end; line = strstr(line, "\r\n")) {
		line += 2;
		if (strncasecmp(line, "Authorization:", 14) == 0)
			copy_value(r->auth, sizeof(r->auth), line, 14);
		else if (strncasecmp(line, "Content-Type:", 13) == 0)
			copy_value(r->content_type, sizeof(r->content_type), line, 13);
		else if (strncasecmp(line, "Content-Length:", 15) == 0) {
			char v[32];

			copy_value(v, sizeof(v), line, 15);
			if (mlp_parse_int(&body_len, v, 0, 1 << 20) != 0)
				goto done;
		} else if (strncasecmp(line, "Expect: 100-continue", 20) == 0) {
			static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";

			if (!conn_write(c, cont, sizeof(cont) - 1))
				goto done;
		}
	}
	while (in.len < head_len + (size_t)body_len) {
		ssize_t n = conn_read(c, chunk, sizeof(chunk));

		if (n <= 0)
			goto done;
		mlp_buf_add(&in, chunk, (size_t)n);
	}
	snprintf(r->body, sizeof(r->body), "%.*s", (int)body_len, in.data + head_len);
	ok = true;
done:
	mlp_buf_free(&in);
	return ok;
}

/* Holds the connection without answering until the client gives up. */
static void hang(struct server *s, struct conn *c)
{
	int64_t until = mlp_mono_ms() + HANG_MAX_MS;
	char buf[256];

	while (!atomic_load(&s->stop) && mlp_mono_ms() < until) {
		struct pollfd p = {c->fd, POLLIN, 0};

		if (poll(&p, 1, 50) > 0 && recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT) == 0)
			return; /* the client closed its end */
	}
}

static void answer(struct server *s, struct conn *c, const struct step *st)
{
	struct mlp_buf out = {0};

	if (st->before)
		st->before(st->before_arg);
	if (st->status == 0) {
		hang(s, c);
		return;
	}
	mlp_buf_printf(&out,
	               "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
	               "Connection: close\r\n%s",
	               st->status, reason(st->status), st->headers ? st->headers : "");
	if (st->chunks[0] == NULL) {
		const char *body = st->body ? st->body : "";

		mlp_buf_printf(&out, "Content-Length: %zu\r\n\r\n%s", strlen(body), body);
		conn_write(c, out.data, out.len);
		mlp_buf_free(&out);
		return;
	}
	mlp_buf_puts(&out, "Transfer-Encoding: chunked\r\n\r\n");
	for (size_t i = 0; i < MAX_CHUNKS && st->chunks[i]; i++) {
		if (i > 0)
			usleep((useconds_t)st->chunk_pause_ms * 1000);
		mlp_buf_printf(&out, "%zx\r\n%s\r\n", strlen(st->chunks[i]), st->chunks[i]);
		pthread_mutex_lock(&s->lock);
		s->chunk_sent_ms[i] = mlp_mono_ms();
		pthread_mutex_unlock(&s->lock);
		if (!conn_write(c, out.data, out.len))
			goto done; /* the client stopped reading */
		mlp_buf_clear(&out);
	}
	if (st->hang_after_chunks)
		hang(s, c);
	else
		conn_write(c, "0\r\n\r\n", 5);
done:
	mlp_buf_free(&out);
}

static void serve_connection(struct server *s, int fd)
{
	struct timeval tv = {IO_TIMEOUT_MS / 1000, 0};
	struct conn c = {fd, NULL};
	struct seen r = {0};
	size_t index;

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (s->tls) {
		c.ssl = SSL_new(s->tls);
		SSL_set_fd(c.ssl, fd);
		if (SSL_accept(c.ssl) != 1)
			goto done; /* e.g. the client refused our certificate */
	}
	if (!read_request(&c, &r))
		goto done;
	r.at_ms = mlp_mono_ms();
	pthread_mutex_lock(&s->lock);
	index = s->nseen;
	if (s->nseen < MAX_SEEN)
		s->seen[s->nseen++] = r;
	pthread_mutex_unlock(&s->lock);
	answer(s, &c, &s->script[index < s->nsteps ? index : s->nsteps - 1]);
	if (c.ssl)
		SSL_shutdown(c.ssl);
done:
	if (c.ssl)
		SSL_free(c.ssl);
	ERR_clear_error();
}

static void *server_main(void *arg)
{
	struct server *s = arg;

	while (!atomic_load(&s->stop)) {
		struct pollfd p = {s->fd, POLLIN, 0};
		int fd;

		if (poll(&p, 1, 50) <= 0)
			continue;
		if ((fd = accept(s->fd, NULL, NULL)) < 0)
			continue;
		serve_connection(s, fd);
		close(fd);
	}
	return NULL;
}

/* A socket bound to 127.0.0.1 on a free port; listening when listen_too. */
static int bind_loopback(int *out_port, bool listen_too)
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	socklen_t alen = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	if (listen_too)
		assert_int_equal(listen(fd, 16), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
	*out_port = ntohs(a.sin_port);
	return fd;
}

static void server_start(struct server *s, const struct step *script, size_t nsteps, SSL_CTX *tls)
{
	assert_true(nsteps > 0);
	s->script = script;
	s->nsteps = nsteps;
	s->tls = tls;
	s->fd = bind_loopback(&s->port, true);
	pthread_mutex_init(&s->lock, NULL);
	atomic_store(&s->stop, false);
	assert_int_equal(pthread_create(&s->thread, NULL, server_main, s), 0);
	s->running = true;
}

static void server_stop(struct server *s)
{
	if (!s->running)
		return;
	atomic_store(&s->stop, true);
	pthread_join(s->thread, NULL);
	close(s->fd);
	pthread_mutex_destroy(&s->lock);
	s->running = false;
}

static size_t server_count(struct server *s)
{
	size_t n;

	pthread_mutex_lock(&s->lock);
	n = s->nseen;
	pthread_mutex_unlock(&s->lock);
	return n;
}

/* ---- a certificate for 127.0.0.1, made in memory ------------------------ */

struct cert {
	X509 *x509;
	EVP_PKEY *key;
	char *pem;
};

static void cert_make(struct cert *c)
{
	EVP_PKEY_CTX *pctx = EVP_PKEY_CTX_new_id(EVP_PKEY_EC, NULL);
	X509V3_CTX v3;
	X509_NAME *name;
	BIO *bio = BIO_new(BIO_s_mem());
	char *data = NULL;
	long len;
	static const char *const exts[][2] = {
	        {"subjectAltName", "IP:127.0.0.1"},
	        {"basicConstraints", "critical,CA:TRUE"},
	};

	c->key = NULL;
	assert_int_equal(EVP_PKEY_keygen_init(pctx), 1);
	assert_int_equal(EVP_PKEY_CTX_set_ec_paramgen_curve_nid(pctx, NID_X9_62_prime256v1), 1);
	assert_int_equal(EVP_PKEY_keygen(pctx, &c->key), 1);
	EVP_PKEY_CTX_free(pctx);
	c->x509 = X509_new();
	X509_set_version(c->x509, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(c->x509), (long)(mlp_wall_ms() & 0x7fffffff));
	X509_gmtime_adj(X509_getm_notBefore(c->x509), -3600);
	X509_gmtime_adj(X509_getm_notAfter(c->x509), 86400);
	X509_set_pubkey(c->x509, c->key);
	name = X509_get_subject_name(c->x509);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"127.0.0.1", -1,
	                           -1, 0);
	X509_set_issuer_name(c->x509, name);
	X509V3_set_ctx(&v3, c->x509, c->x509, NULL, NULL, 0);
	for (size_t i = 0; i < sizeof(exts) / sizeof(exts[0]); i++) {
		X509_EXTENSION *e = X509V3_EXT_conf(NULL, &v3, exts[i][0], exts[i][1]);

		assert_non_null(e);
		X509_add_ext(c->x509, e, -1);
		X509_EXTENSION_free(e);
	}
	assert_true(X509_sign(c->x509, c->key, EVP_sha256()) > 0);
	assert_int_equal(PEM_write_bio_X509(bio, c->x509), 1);
	len = BIO_get_mem_data(bio, &data);
	c->pem = xstrndup(data, (size_t)len);
	BIO_free(bio);
}

static void cert_free(struct cert *c)
{
	X509_free(c->x509);
	EVP_PKEY_free(c->key);
	free(c->pem);
}

/* ---- fixture ------------------------------------------------------------ */

struct fixture {
	char dir[64];
	struct server server;
	struct mlp_k8s *k;
	SSL_CTX *tls;
	struct cert cert, other;
};

static int fixture_setup(void **state)
{
	struct fixture *f = xcalloc(1, sizeof(*f));

	snprintf(f->dir, sizeof(f->dir), "/tmp/mlpipe-k8s-XXXXXX");
	if (mkdtemp(f->dir) == NULL)
		return -1;
	*state = f;
	return 0;
}

static int fixture_teardown(void **state)
{
	struct fixture *f = *state;
	char *cmd = xasprintf("rm -rf '%s'", f->dir);
	int rc;

	mlp_k8s_close(f->k);
	server_stop(&f->server);
	if (f->tls)
		SSL_CTX_free(f->tls);
	if (f->cert.x509)
		cert_free(&f->cert);
	if (f->other.x509)
		cert_free(&f->other);
	rc = system(cmd);
	free(cmd);
	free(f);
	return rc == 0 ? 0 : -1;
}

static char *write_file(const char *dir, const char *name, const char *text)
{
	char *path = xasprintf("%s/%s", dir, name);

	assert_int_equal(mlp_write_file_atomic(path, text, strlen(text), 0600), 0);
	return path;
}

/* A client for http://127.0.0.1:port; user is a kubeconfig user mapping
 * ("{token: tok-1}"). */
static struct mlp_k8s *client(struct fixture *f, int port, const char *user, int64_t timeout_ms)
{
	char *text = xasprintf("apiVersion: v1\n"
	                       "kind: Config\n"
	                       "current-context: t\n"
	                       "clusters:\n"
	                       "- name: c\n"
	                       "  cluster: {server: \"http://127.0.0.1:%d\"}\n"
	                       "contexts:\n"
	                       "- name: t\n"
	                       "  context: {cluster: c, user: u, namespace: ml}\n"
	                       "users:\n"
	                       "- name: u\n"
	                       "  user: %s\n",
	                       port, user);
	char *path = write_file(f->dir, "config", text);
	struct mlp_k8s_options o = {.kubeconfig = path, .request_timeout_ms = timeout_ms};

	assert_int_equal(mlp_k8s_open(&f->k, &o), 0);
	free(path);
	free(text);
	return f->k;
}

/* Starts the server on script and opens a token client against it. */
static struct mlp_k8s *scripted(struct fixture *f, const struct step *script, size_t n)
{
	server_start(&f->server, script, n, NULL);
	return client(f, f->server.port, "{token: tok-1}", 2000);
}

#define SCRIPT(s) (s), (sizeof(s) / sizeof((s)[0]))

static int64_t gap_ms(struct server *s, size_t i)
{
	return s->seen[i].at_ms - s->seen[i - 1].at_ms;
}

/* A Kubernetes Status object, as the API server sends with an error. */
#define STATUS(code, reason_, msg)                                                           \
	"{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\"," \
	"\"message\":\"" msg "\",\"reason\":\"" reason_ "\",\"code\":" #code "}"

#define DEPLOYMENT "{\"kind\":\"Deployment\",\"metadata\":{\"name\":\"model-service\"}}"
#define DEPLOY_PATH "/apis/apps/v1/namespaces/ml/deployments/model-service"

/* ---- retries -------------------------------------------------------------- */

/* 429 with Retry-After: 1 waits the second the server asked for, not the
 * 0.2 s backoff. */
static void test_k8s__retry_after_is_honoured(void **state)
{
	struct fixture *f = *state;
	static const struct step script[] = {
	        {.status = 429,
	         .headers = "Retry-After: 1\r\n",
	         .body = STATUS(429, "TooManyRequests", "slow down")},
	        {.status = 200, .body = DEPLOYMENT},
	};
	struct mlp_k8s *k = scripted(f, SCRIPT(script));
	struct mlp_json *out = NULL;
	long http = 0;

	assert_int_equal(mlp_k8s_request(&out, &http, k, "GET", DEPLOY_PATH, NULL, NULL), 0);
	assert_int_equal(http, 200);
	assert_string_equal(mlp_json_get_string(mlp_json_get(out, "metadata"), "name"),
	                    "model-service");
	mlp_json_free(out);
	assert_int_equal(server_count(&f->server), 2);
	assert_true(gap_ms(&f->server, 1) >= 950);
	assert_true(gap_ms(&f->server, 1) < 5000);
}

/* Retry-After: 0 means "again now", not "give up". */
static void test_k8s__retry_after_zero_retries(void **state)
{
	struct fixture *f = *state;
	static const struct step script[] = {
	        {.status = 429,
	         .headers = "Retry-After: 0\r\n",
	         .body = STATUS(429, "TooManyRequests", "slow down")},
	        {.status = 200, .body = DEPLOYMENT},
	};
	struct mlp_k8s *k = scripted(f, SCRIPT(script));

	assert_int_equal(mlp_k8s_request(NULL, NULL, k, "GET", DEPLOY_PATH, NULL, NULL), 0);
	assert_int_equal(server_count(&f->server), 2);
	assert_true(gap_ms(&f->server, 1) < 1000);
}

/* A Retry-After longer than the cap (10 s, docs/rollout.md) is cut to it:
 * neither ignored (the 0.2 s backoff) nor obeyed for a day. */
static void test_k8s__retry_after_is_capped(void **state)
{
	struct fixture *f = *state;
	static const struct step script[] = {
	        {.status = 429,
	         .headers = "Retry-After: 86400\r\n",
	         .body = STATUS(429, "TooManyRequests", "slow down")},
	        {.status = 200, .body = DEPLOYMENT},
	};
	struct mlp_k8s *k = scripted(f, SCRIPT(script));

	assert_int_equal(mlp_k8s_request(NULL, NULL, k, "GET", DEPLOY_PATH, NULL, NULL), 0);
	assert_int_equal(server_count(&f->server), 2);
	assert_true(gap_ms(&f->server, 1) >= 9950);
	assert_true(gap_ms(&f->server, 1) < 15000);
}

/* 503 twice: retried after 0.2 s, then 0.4 s (exponential backoff). */
static void test_k8s__5xx_retried_with_backoff(void **state)
{
	struct fixture *f = *state;
	static const struct step script[] = {
	        {.status = 503,
	         .body = STATUS(503, "ServiceUnavailable", "the server is shutting down")},
	        {.status = 503,
	         .body = STATUS(503, "ServiceUnavailable", "the server is shutting down")},
	        {.status = 200, .body = DEPLOYMENT},
	};
	struct mlp_k8s *k = scripted(f, SCRIPT(script));
	long http = 0;

	assert_int_equal(mlp_k8s_request(NULL, &http, k, "GET", DEPLOY_PATH, NULL, NULL), 0);
	assert_int_equal(http, 200);
	assert_int_equal(server_count(&f->server), 3);
	assert_true(gap_ms(&f->server, 1) >= 190);
	assert_true(gap_ms(&f->server, 2) >= 390);
	assert_true(f->server.seen[2].at_ms - f->server.seen[0].at_ms < 3000);
}

/* 500 forever: five attempts (0.2 + 0.4 + 0.8 + 1.6 s between them), then
 * the API's own message. */
static void test_k8s__5xx_gives_up_after_five_attempts(void **state)
{
	struct fixture *f = *state;
	static const struct step script[] = {
	        {.status = 500,
	         .body = STATUS(500, "InternalError", "etcdserver: request timed out")},
	};
	struct mlp_k8s *k = scripted(f, SCRIPT(script));
	int64_t start = mlp_mono_ms(), elapsed;
	long http = 0;

	assert_int_equal(mlp_k8s_request(NULL, &http, k, "GET", DEPLOY_PATH, NULL, NULL),
	                 MLP_ERROR);
	elapsed = mlp_mono_ms() - start;
	assert_int_equal(http, 500);
	assert_string_equal(mlp_error_last(), "etcdserver: request timed out (HTTP 500)");
	assert_int_equal(server_count(&f->server), 5);
	for (size_t i = 1; i < 5; i++)
		assert_true(gap_ms(&f->server, i) >= (int64_t)(200 << (i - 1)) - 10);
	assert_true(elapsed >= 2950);
	assert_true(elapsed < 10000);
}

/* Nothing listens: five connection attempts with backoff, then MLP_EIO
 * naming the server. */
static void test_k8s__connection_refused(void **state)
{
	struct fixture *f = *state;
	int port, fd = bind_loopback(&port, false); /* bound: nobody else takes it */
	struct mlp_k8s *k = client(f, port, "{token: tok-1}", 2000);
	char *prefix = xasprintf("http://127.0.0.1:%d: ", port);
	int64_t start = mlp_mono_ms(), elapsed;
	long http = -1;

	assert_int_equal(mlp_k8s_request(NULL, &http, k, "GET", DEPLOY_PATH, NULL, NULL), MLP_EIO);
	elapsed = mlp_mono_ms() - start;
	close(fd);
	assert_int_equal(http, 0);
	assert_int_equal(strncmp(mlp_error_last(), prefix, strlen(prefix)), 0);
	assert_non_null(strstr(mlp_error_last(), "onnect"));
	assert_true(elapsed >= 2950); /* 0.2 + 0.4 + 0.8 + 1.6 s of backoff */
	assert_true(elapsed < 10000);
	free(prefix);
}

/* A server that accepts and never answers: the PATCH fails after
 * request_timeout_ms and is not repeated (it may have been applied); a
 * GET is retried, each attempt bounded by the same timeout. */
static void test_k8s__silent_server_times_out(void **state)
{
	struct fixture *f = *state;
	static const struct step script[] = {{.status = 0}};
	struct mlp_k8s *k;
	int64_t start, elapsed;

	server_start(&f->server, SCRIPT(script), NULL);
	k = client(f, f->server.port, "{token: tok-1}", 500);
	start = mlp_mono_ms();
	assert_int_equal(mlp_k8s_request(NULL, NULL, k, "PATCH", DEPLOY_PATH,
	                                 "application/strategic-merge-patch+json", "{}"),
	                 MLP_EIO);
	elapsed = mlp_mono_ms() - start;
	assert_non_null(strstr(mlp_error_last(), "timed out"));
	assert_int_equal(server_count(&f->server), 1);
	assert_true(elapsed >= 450);
	assert_true(elapsed < 2000);

	start = mlp_mono_ms();
	assert_int_equal(mlp_k8s_request(NULL, NULL, k, "GET", DEPLOY_PATH, NULL, NULL), MLP_EIO);
	elapsed = mlp_mono_ms() - start;
	assert_non_null(strstr(mlp_error_last(), "timed out"));
	assert_int_equal(server_count(&f->server), 1 + 5);
	assert_true(elapsed >= 5 * 500 + 3000 - 100);
	assert_true(elapsed < 12000);
}

/* ---- errors the API explains ---------------------------------------------- */

/* Each answered once (not retried), with the Status message and the code. */
static void test_k8s__status_errors_are_not_retried(void **state)
{
	struct fixture *f = *state;
	static const struct step script[] = {
	        {.status = 401, .body = STATUS(401, "Unauthorized", "Unauthorized")},
	        {.status = 403,
	         .body = STATUS(403, "Forbidden",
	                        "deployments.apps \\\"model-service\\\" is forbidden: "
	                        "User \\\"viewer\\\" cannot patch resource \\\"deployments\\\" "
	                        "in API group \\\"apps\\\" in the namespace \\\"ml\\\"")},
	        {.status = 404,
	         .body = STATUS(404, "NotFound", "deployments.apps \\\"nope\\\" not found")},
	        {.status = 409,
	         .body = STATUS(409, "Conflict",
	                        "Operation cannot be fulfilled on deployments.apps "
	                        "\\\"model-service\\\": the object has been modified")},
	        {.status = 422,
	         .body = STATUS(422, "Invalid",
	                        "Deployment.apps \\\"model-service\\\" is invalid: "
	                        "spec.template.spec.containers[0].image: Required value")},
	        {.status = 400, .body = "<html>bad request</html>"},
	};
	static const struct {
		const char *method;
		int rc;
		long http;
		const char *message;
	} want[] = {
	        {"GET", MLP_ERROR, 401, "Unauthorized (HTTP 401)"},
	        {"PATCH", MLP_ERROR, 403,
	         "deployments.apps \"model-service\" is forbidden: User \"viewer\" cannot patch "
	         "resource \"deployments\" in API group \"apps\" in the namespace \"ml\" "
	         "(HTTP 403)"},
	        {"GET", MLP_ENOTFOUND, 404, "deployments.apps \"nope\" not found (HTTP 404)"},
	        {"PATCH", MLP_EEXISTS, 409,
	         "Operation cannot be fulfilled on deployments.apps \"model-service\": the object "
	         "has been modified (HTTP 409)"},
	        {"PATCH", MLP_ERROR, 422,
	         "Deployment.apps \"model-service\" is invalid: "
	         "spec.template.spec.containers[0].image: Required value (HTTP 422)"},
	        /* No Status: the request and the start of the body. */
	        {"GET", MLP_ERROR, 400, "GET " DEPLOY_PATH ": HTTP 400: <html>bad request</html>"},
	};
	struct mlp_k8s *k = scripted(f, SCRIPT(script));

	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		struct mlp_json *out = NULL;
		long http = 0;
		bool patch = strcmp(want[i].method, "PATCH") == 0;
		int rc = mlp_k8s_request(&out, &http, k, want[i].method, DEPLOY_PATH,
		                         patch ? "application/merge-patch+json" : NULL,
		                         patch ? "{\"spec\":{}}" : NULL);

		if (rc != want[i].rc)
			fail_msg("HTTP %ld: rc %d, want %d", want[i].http, rc, want[i].rc);
		assert_int_equal(http, want[i].http);
		assert_null(out);
		assert_string_equal(mlp_error_last(), want[i].message);
		assert_int_equal(server_count(&f->server), i + 1);
	}
}

/* The kubeconfig's token goes in the Authorization header; the method,
 * path, content type and body arrive as given. */
static void test_k8s__bearer_token_and_request(void **state)
{
	struct fixture *f = *state;
	static const struct step script[] = {{.status = 200, .body = DEPLOYMENT}};
	struct mlp_k8s *k = scripted(f, SCRIPT(script));
	struct seen *r = &f->server.seen[0];

	assert_string_equal(mlp_k8s_auth_kind(k), "token");
	assert_int_equal(mlp_k8s_request(NULL, NULL, k, "PATCH", DEPLOY_PATH,
	                                 "application/strategic-merge-patch+json",
	                                 "{\"spec\":{\"replicas\":2}}"),
	                 0);
	assert_int_equal(server_count(&f->server), 1);
	assert_string_equal(r->method, "PATCH");
	assert_string_equal(r->path, DEPLOY_PATH);
	assert_string_equal(r->auth, "Bearer tok-1");
	assert_string_equal(r->content_type, "application/strategic-merge-patch+json");
	assert_string_equal(r->body, "{\"spec\":{\"replicas\":2}}");
}

/* ---- credentials that rotate ---------------------------------------------- */

struct rotation {
	const char *path;
	const char *token;
};

static void rotate_token(void *arg)
{
	const struct rotation *r = arg;

	assert_int_equal(mlp_write_file_atomic(r->path, r->token, strlen(r->token), 0600), 0);
}

/* A kubeconfig tokenFile: after a 401 the file is read again and the
 * request repeated once with the new token. */
static void test_k8s__token_file_reread_after_401(void **state)
{
	struct fixture *f = *state;
	char *path = write_file(f->dir, "token", "old-token\n");
	static struct rotation rot;
	static const struct step script[] = {
	        {.status = 401,
	         .body = STATUS(401, "Unauthorized", "Unauthorized"),
	         .before = rotate_token,
	         .before_arg = &rot},
	        {.status = 200, .body = DEPLOYMENT},
	};
	struct mlp_k8s *k;

	rot = (struct rotation){path, "new-token\n"};
	server_start(&f->server, SCRIPT(script), NULL);
	k = client(f, f->server.port, "{tokenFile: token}", 2000);
	assert_string_equal(mlp_k8s_auth_kind(k), "token file");
	assert_int_equal(mlp_k8s_request(NULL, NULL, k, "GET", DEPLOY_PATH, NULL, NULL), 0);
	assert_int_equal(server_count(&f->server), 2);
	assert_string_equal(f->server.seen[0].auth, "Bearer old-token");
	assert_string_equal(f->server.seen[1].auth, "Bearer new-token");
	assert_true(gap_ms(&f->server, 1) < 1000); /* at once, no backoff */
	free(path);
}

/* A second 401 with the fresh token is final: one re-read, no loop. */
static void test_k8s__second_401_is_final(void **state)
{
	struct fixture *f = *state;
	char *path = write_file(f->dir, "token", "revoked\n");
	static const struct step script[] = {
	        {.status = 401, .body = STATUS(401, "Unauthorized", "Unauthorized")},
	};
	struct mlp_k8s *k;

	server_start(&f->server, SCRIPT(script), NULL);
	k = client(f, f->server.port, "{tokenFile: token}", 2000);
	assert_int_equal(mlp_k8s_request(NULL, NULL, k, "GET", DEPLOY_PATH, NULL, NULL), MLP_ERROR);
	assert_string_equal(mlp_error_last(), "Unauthorized (HTTP 401)");
	assert_int_equal(server_count(&f->server), 2);
	free(path);
}

static SSL_CTX *tls_server(struct cert *c)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	assert_non_null(ctx);
	assert_int_equal(SSL_CTX_use_certificate(ctx, c->x509), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey(ctx, c->key), 1);
	return ctx;
}

/* In a pod: https to KUBERNETES_SERVICE_HOST:PORT verified with the
 * service account's ca.crt, its token, re-read after a 401. */
static void in_cluster(struct fixture *f, const char *ca_pem)
{
	char *home = xasprintf("%s/home", f->dir), *port = xasprintf("%d", f->server.port);
	char *files[3] = {
	        write_file(f->dir, "token", "old-token\n"),
	        write_file(f->dir, "ca.crt", ca_pem),
	        write_file(f->dir, "namespace", "ml\n"),
	};

	mlp_mkdirs(home, 0700);
	unsetenv("KUBECONFIG");
	setenv("HOME", home, 1);
	setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1", 1);
	setenv("KUBERNETES_SERVICE_PORT", port, 1);
	setenv("MLPIPE_K8S_SA_DIR", f->dir, 1);
	assert_int_equal(mlp_k8s_open(&f->k, NULL), 0);
	unsetenv("KUBERNETES_SERVICE_HOST");
	assert_string_equal(mlp_k8s_auth_kind(f->k), "service account");
	assert_string_equal(mlp_k8s_namespace(f->k), "ml");
	for (size_t i = 0; i < 3; i++)
		free(files[i]);
	free(home);
	free(port);
}

static void test_k8s__in_cluster_token_reread_after_401(void **state)
{
	struct fixture *f = *state;
	char *token = xasprintf("%s/token", f->dir);
	static struct rotation rot;
	static const struct step script[] = {
	        {.status = 401,
	         .body = STATUS(401, "Unauthorized", "Unauthorized"),
	         .before = rotate_token,
	         .before_arg = &rot},
	        {.status = 200, .body = DEPLOYMENT},
	};
	struct mlp_json *out = NULL;
	char *server;

	rot = (struct rotation){token, "new-token\n"};
	cert_make(&f->cert);
	f->tls = tls_server(&f->cert);
	server_start(&f->server, SCRIPT(script), f->tls);
	in_cluster(f, f->cert.pem);
	server = xasprintf("https://127.0.0.1:%d", f->server.port);
	assert_string_equal(mlp_k8s_server(f->k), server);
	assert_int_equal(mlp_k8s_request(&out, NULL, f->k, "GET", DEPLOY_PATH, NULL, NULL), 0);
	assert_non_null(mlp_json_get(out, "metadata"));
	mlp_json_free(out);
	assert_int_equal(server_count(&f->server), 2);
	assert_string_equal(f->server.seen[0].auth, "Bearer old-token");
	assert_string_equal(f->server.seen[1].auth, "Bearer new-token");
	server_stop(&f->server); /* before token is freed */
	free(server);
	free(token);
}

/* TLS is verified: a server whose certificate the CA did not sign is
 * refused before any request is sent, and that is not retried. */
static void test_k8s__in_cluster_wrong_ca_refused(void **state)
{
	struct fixture *f = *state;
	static const struct step script[] = {{.status = 200, .body = DEPLOYMENT}};

	cert_make(&f->cert);
	cert_make(&f->other);
	f->tls = tls_server(&f->cert);
	server_start(&f->server, SCRIPT(script), f->tls);
	in_cluster(f, f->other.pem);
	assert_int_equal(mlp_k8s_request(NULL, NULL, f->k, "GET", DEPLOY_PATH, NULL, NULL),
	                 MLP_EIO);
	assert_non_null(strstr(mlp_error_last(), "certificate"));
	assert_int_equal(server_count(&f->server), 0);
}

/* ---- watches ------------------------------------------------------------- */

struct events {
	size_t n;
	char type[8][16];
	char rv[8][16];
	int64_t at_ms[8];
	int stop_after; /* return 7 after this many events; 0: never */
};

static int on_event(const char *type, const struct mlp_json *object, void *payload)
{
	struct events *ev = payload;
	const char *rv = mlp_json_get_string(mlp_json_get(object, "metadata"), "resourceVersion");

	if (ev->n < 8) {
		snprintf(ev->type[ev->n], sizeof(ev->type[0]), "%s", type);
		snprintf(ev->rv[ev->n], sizeof(ev->rv[0]), "%s", rv ? rv : "");
		ev->at_ms[ev->n] = mlp_mono_ms();
	}
	ev->n++;
	return ev->stop_after && ev->n == (size_t)ev->stop_after ? 7 : 0;
}

#define OBJECT(rv)                                                                      \
	"\"object\":{\"kind\":\"Deployment\",\"metadata\":{\"name\":\"model-service\"," \
	"\"resourceVersion\":\"" rv "\"}}}\n"
#define EVENT(type, rv) "{\"type\":\"" type "\"," OBJECT(rv)
#define WATCH_PATH "/apis/apps/v1/namespaces/ml/deployments?watch=true&resourceVersion=1"

/* Events are delivered as they arrive (the first before the second chunk
 * was even sent), a line split across chunks is put back together, and an
 * ERROR event with code 410 ends the watch with MLP_K8S_EXPIRED; nothing
 * after it is delivered. */
static void test_k8s__watch_streams_until_expired(void **state)
{
	struct fixture *f = *state;
	static const struct step script[] = {{
	        .status = 200,
	        .chunks = {EVENT("ADDED", "2") "{\"type\":\"MODI", "FIED\"," OBJECT("3"),
	                   "{\"type\":\"ERROR\",\"object\":" STATUS(
	                           410, "Expired",
	                           "too old resource version: 1 (3)") "}\n" EVENT("DELETED", "4")},
	        .chunk_pause_ms = 300,
	}};
	struct events ev = {0};
	struct mlp_k8s *k = scripted(f, SCRIPT(script));
	int64_t start = mlp_mono_ms();

	assert_int_equal(mlp_k8s_watch(k, WATCH_PATH, start + 5000, on_event, &ev),
	                 MLP_K8S_EXPIRED);
	assert_true(mlp_mono_ms() - start >= 2 * 300 - 10);
	assert_int_equal(ev.n, 2);
	assert_string_equal(ev.type[0], "ADDED");
	assert_string_equal(ev.rv[0], "2");
	assert_string_equal(ev.type[1], "MODIFIED");
	assert_string_equal(ev.rv[1], "3");
	pthread_mutex_lock(&f->server.lock);
	assert_true(ev.at_ms[0] < f->server.chunk_sent_ms[1]);
	assert_true(ev.at_ms[1] >= f->server.chunk_sent_ms[1]);
	pthread_mutex_unlock(&f->server.lock);
	assert_int_equal(server_count(&f->server), 1);
	assert_string_equal(f->server.seen[0].path, WATCH_PATH);
	assert_string_equal(f->server.seen[0].auth, "Bearer tok-1");
}

/* The callback's positive answer stops the watch and is returned. */
static void test_k8s__watch_callback_stops(void **state)
{
	struct fixture *f = *state;
	static const struct step script[] = {{
	        .status = 200,
	        .chunks = {EVENT("ADDED", "2") EVENT("MODIFIED", "3") EVENT("MODIFIED", "4")},
	        .hang_after_chunks = true,
	}};
	struct events ev = {.stop_after = 2};
	struct mlp_k8s *k = scripted(f, SCRIPT(script));

	assert_int_equal(mlp_k8s_watch(k, WATCH_PATH, mlp_mono_ms() + 5000, on_event, &ev), 7);
	assert_int_equal(ev.n, 2);
}

/* A quiet stream ends at the deadline with MLP_ETIMEOUT, not an error. */
static void test_k8s__watch_deadline(void **state)
{
	struct fixture *f = *state;
	static const struct step script[] = {{
	        .status = 200,
	        .chunks = {EVENT("ADDED", "2")},
	        .hang_after_chunks = true,
	}};
	struct events ev = {0};
	struct mlp_k8s *k = scripted(f, SCRIPT(script));
	int64_t start = mlp_mono_ms(), elapsed;

	assert_int_equal(mlp_k8s_watch(k, WATCH_PATH, start + 700, on_event, &ev), MLP_ETIMEOUT);
	elapsed = mlp_mono_ms() - start;
	assert_int_equal(ev.n, 1);
	assert_true(elapsed >= 650);
	assert_true(elapsed < 3000);
}

/* A refused watch carries the Status message like any request. */
static void test_k8s__watch_forbidden(void **state)
{
	struct fixture *f = *state;
	static const struct step script[] = {
	        {.status = 403,
	         .body = STATUS(403, "Forbidden",
	                        "deployments.apps is forbidden: User \\\"viewer\\\" "
	                        "cannot watch resource \\\"deployments\\\"")},
	};
	struct events ev = {0};
	struct mlp_k8s *k = scripted(f, SCRIPT(script));

	assert_int_equal(mlp_k8s_watch(k, WATCH_PATH, mlp_mono_ms() + 5000, on_event, &ev),
	                 MLP_ERROR);
	assert_string_equal(mlp_error_last(), "deployments.apps is forbidden: User \"viewer\" "
	                                      "cannot watch resource \"deployments\" (HTTP 403)");
	assert_int_equal(ev.n, 0);
	assert_int_equal(server_count(&f->server), 1);
}

#define CASE(name) cmocka_unit_test_setup_teardown(name, fixture_setup, fixture_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	        CASE(test_k8s__retry_after_is_honoured),
	        CASE(test_k8s__retry_after_zero_retries),
	        CASE(test_k8s__retry_after_is_capped),
	        CASE(test_k8s__5xx_retried_with_backoff),
	        CASE(test_k8s__5xx_gives_up_after_five_attempts),
	        CASE(test_k8s__connection_refused),
	        CASE(test_k8s__silent_server_times_out),
	        CASE(test_k8s__status_errors_are_not_retried),
	        CASE(test_k8s__bearer_token_and_request),
	        CASE(test_k8s__token_file_reread_after_401),
	        CASE(test_k8s__second_401_is_final),
	        CASE(test_k8s__in_cluster_token_reread_after_401),
	        CASE(test_k8s__in_cluster_wrong_ca_refused),
	        CASE(test_k8s__watch_streams_until_expired),
	        CASE(test_k8s__watch_callback_stops),
	        CASE(test_k8s__watch_deadline),
	        CASE(test_k8s__watch_forbidden),
	};

	/* A client that hangs up mid-answer must not kill the server thread. */
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
