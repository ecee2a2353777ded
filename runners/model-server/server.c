/*
 * server.c - mlpipe-model-server's HTTP front end on libmicrohttpd: the
 * routes of the Open Inference Protocol v2 REST API, /metrics, and the
 * graceful shutdown (model-server.h, docs/model-server.md).
 *
 * Threading: a pool of opts.threads threads, each with its own epoll
 * (MHD_OPTION_THREAD_POOL_SIZE), or with --threads 0 one thread per
 * connection.  An infer request blocks its thread in the batcher until its
 * logits are computed; the handler never holds a lock across that wait.
 *
 * Shutdown: readiness false first, then MHD_quiesce_daemon stops the
 * accepting; connections the kernel already completed are taken from the
 * backlog and handed to MHD (MHD_add_connection), so that no connection
 * is reset unanswered, and only then is the listening socket closed.
 * Every answer from then on says "Connection: close"; when no request is
 * in flight and the connections have been quiet for a moment (or the
 * deadline passes) the daemon stops.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/error.h"
#include "base/util.h"
#include "model-server.h"
#include "request.h"

/* How long the connections must be quiet before a stopping server closes
 * the idle ones. */
#define QUIET_US 300000

struct ms_server {
	struct ms_state *st;
	struct MHD_Daemon *d;
	int port;
	atomic_int connections; /* open */
	atomic_int busy;        /* requests between their first byte and their answer */
	atomic_llong last_activity_us;
	atomic_llong cut; /* requests read but not answered (ms_server_shutdown) */
};

struct request {
	struct mlp_buf body;
	int64_t started_us;
	bool too_big;
	bool infer;    /* POST .../infer */
	bool arriving; /* announced to the batcher, not yet run */
};

struct answer {
	int status;
	char *body; /* malloc'd */
	const char *content_type;
	const char *allow; /* for 405 */
};

static void answer_error(struct answer *a, int status, const char *message)
{
	struct mlp_buf b = {0};

	mlp_buf_puts(&b, "{\"error\":");
	ms_json_string(&b, message);
	mlp_buf_puts(&b, "}\n");
	a->status = status;
	a->body = mlp_buf_detach(&b);
}

static void answer_json(struct answer *a, int status, char *body)
{
	a->status = status;
	a->body = body;
}

static void not_ready(struct answer *a, const struct ms_state *st)
{
	char *msg = xasprintf("model %s is not ready", st->opts.name);

	answer_error(a, 503, msg);
	free(msg);
}

static void metadata(struct answer *a, const struct ms_state *st, const struct ms_model *m)
{
	struct mlp_buf b = {0};

	mlp_buf_puts(&b, "{\"name\":");
	ms_json_string(&b, st->opts.name);
	mlp_buf_puts(&b, ",\"versions\":[");
	ms_json_string(&b, st->opts.version);
	mlp_buf_printf(&b,
	               "],\"platform\":\"mlpipe_mlp\",\"inputs\":[{\"name\":\"input\","
	               "\"datatype\":\"FP32\",\"shape\":[-1,%d]}],\"outputs\":[{\"name\":"
	               "\"logits\",\"datatype\":\"FP32\",\"shape\":[-1,%d]},{\"name\":\"class\","
	               "\"datatype\":\"INT64\",\"shape\":[-1]}]}\n",
	               ms_model_features(m), ms_model_classes(m));
	answer_json(a, 200, mlp_buf_detach(&b));
}

static void infer(struct answer *a, struct ms_state *st, struct request *req, const char *body,
                  size_t len)
{
	struct ms_model *m = atomic_load(&st->model);
	struct ms_infer r;

	/* Not st->ready: that goes false first when stopping, and a request
	 * accepted until the listener closes is still answered. */
	if (m == NULL) {
		not_ready(a, st);
		return;
	}
	if (ms_infer_parse(&r, body, len, ms_model_features(m), st->opts.max_batch) != 0) {
		answer_error(a, 400, mlp_error_last());
		ms_infer_free(&r);
		return;
	}
	r.logits = xmalloc((size_t)r.rows * (size_t)ms_model_classes(m) * sizeof(float));
	if (!req->arriving)
		ms_batcher_arriving(st->batcher); /* became ready after the request began */
	req->arriving = false;
	ms_batcher_run(st->batcher, m, r.x, r.rows, r.logits);
	answer_json(a, 200,
	            ms_infer_answer(&r, st->opts.name, st->opts.version, ms_model_classes(m)));
	ms_infer_free(&r);
}

/* Splits "/v2/models/NAME[/versions/V][/what]" into its parts; false
 * when the path is not under /v2/models/. */
static bool model_path(const char *url, char *name, char *version, char *what, size_t size)
{
	char parts[5][256];
	int n = 0;
	const char *p = url + strlen("/v2/models/");

	if (strncmp(url, "/v2/models/", 11) != 0)
		return false;
	while (n < 5) {
		size_t len = strcspn(p, "/");

		if (len == 0 || len >= sizeof(parts[0]))
			return false;
		memcpy(parts[n], p, len);
		parts[n++][len] = '\0';
		p += len;
		if (*p == '\0')
			break;
		p++;
	}
	if (*p != '\0')
		return false;
	snprintf(name, size, "%s", parts[0]);
	version[0] = what[0] = '\0';
	if (n >= 3 && strcmp(parts[1], "versions") == 0) {
		snprintf(version, size, "%s", parts[2]);
		if (n == 4)
			snprintf(what, size, "%s", parts[3]);
		return n <= 4;
	}
	if (n == 2)
		snprintf(what, size, "%s", parts[1]);
	return n <= 2;
}

static bool method_is(struct answer *a, const char *method, const char *want)
{
	if (strcmp(method, want) == 0 || (strcmp(want, "GET") == 0 && strcmp(method, "HEAD") == 0))
		return true;
	answer_error(a, 405, "method not allowed");
	a->allow = strcmp(want, "GET") == 0 ? "GET, HEAD" : want;
	return false;
}

static void route_model(struct answer *a, struct ms_state *st, struct request *req,
                        const char *method, const char *url)
{
	char name[256], version[256], what[256];
	struct ms_model *m = atomic_load(&st->model);
	bool ready = atomic_load(&st->ready) && m;

	if (!model_path(url, name, version, what, sizeof(name)) ||
	    (what[0] && strcmp(what, "ready") != 0 && strcmp(what, "infer") != 0)) {
		answer_error(a, 404, "no such path");
		return;
	}
	if (strcmp(name, st->opts.name) != 0 ||
	    (version[0] && strcmp(version, st->opts.version) != 0)) {
		char *msg = version[0] ? xasprintf("unknown model %s version %s", name, version)
		                       : xasprintf("unknown model %s", name);

		answer_error(a, 404, msg);
		free(msg);
		return;
	}
	if (strcmp(what, "infer") == 0) {
		if (method_is(a, method, "POST"))
			infer(a, st, req, mlp_buf_str(&req->body), req->body.len);
	} else if (!method_is(a, method, "GET")) {
		return;
	} else if (strcmp(what, "ready") == 0) {
		struct mlp_buf b = {0};

		mlp_buf_puts(&b, "{\"name\":");
		ms_json_string(&b, st->opts.name);
		mlp_buf_printf(&b, ",\"ready\":%s}\n", ready ? "true" : "false");
		answer_json(a, ready ? 200 : 503, mlp_buf_detach(&b));
	} else if (m == NULL) {
		not_ready(a, st);
	} else {
		metadata(a, st, m);
	}
}

static void route(struct answer *a, struct ms_state *st, struct request *req, const char *method,
                  const char *url)
{
	bool ready = atomic_load(&st->ready);

	a->content_type = "application/json";
	if (strncmp(url, "/v2/models/", 11) == 0) {
		route_model(a, st, req, method, url);
	} else if (strcmp(url, "/v2/health/live") == 0) {
		if (method_is(a, method, "GET"))
			answer_json(a, 200, xstrdup("{\"live\":true}\n"));
	} else if (strcmp(url, "/v2/health/ready") == 0) {
		if (method_is(a, method, "GET"))
			answer_json(a, ready ? 200 : 503,
			            xasprintf("{\"ready\":%s}\n", ready ? "true" : "false"));
	} else if (strcmp(url, "/v2") == 0 || strcmp(url, "/v2/") == 0) {
		if (method_is(a, method, "GET"))
			answer_json(a, 200,
			            xstrdup("{\"name\":\"" MS_PROG
			                    "\",\"version\":\"" PACKAGE_VERSION
			                    "\",\"extensions\":[]}\n"));
	} else if (strcmp(url, "/metrics") == 0) {
		if (method_is(a, method, "GET")) {
			answer_json(a, 200,
			            ms_metrics_render(st->metrics, atomic_load(&st->model),
			                              st->opts.version, ready));
			a->content_type = "text/plain; version=0.0.4; charset=utf-8";
		}
	} else {
		answer_error(a, 404, "no such path");
	}
}

static bool is_infer(const char *method, const char *url)
{
	size_t n = strlen(url);

	return strcmp(method, "POST") == 0 && n > 6 && strcmp(url + n - 6, "/infer") == 0;
}

static enum MHD_Result respond(struct ms_server *s, struct request *req,
                               struct MHD_Connection *conn, struct answer *a)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;

	resp = MHD_create_response_from_buffer(strlen(a->body), a->body, MHD_RESPMEM_MUST_FREE);
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, a->content_type);
	if (a->allow)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, a->allow);
	if (atomic_load(&s->st->stopping))
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
	ret = MHD_queue_response(conn, (unsigned int)a->status, resp);
	MHD_destroy_response(resp);
	if (req->infer) {
		if (a->status >= 400)
			ms_metrics_error(s->st->metrics, a->status);
		ms_metrics_latency(s->st->metrics, (double)(mlp_mono_us() - req->started_us) / 1e6);
	}
	return ret;
}

/* The first call for a request: its state, and whether its declared body
 * is already too large. */
static struct request *request_new(struct ms_server *s, struct MHD_Connection *conn,
                                   const char *method, const char *url)
{
	struct request *req = xcalloc(1, sizeof(*req));
	const char *cl =
	        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
	long long n;

	req->started_us = mlp_mono_us();
	s->busy++;
	s->last_activity_us = req->started_us;
	if (cl && mlp_parse_int(&n, cl, 0, INT64_MAX) == 0 && (size_t)n > s->st->opts.max_body)
		req->too_big = true;
	if (is_infer(method, url)) {
		req->infer = true;
		ms_metrics_request(s->st->metrics);
		if (!req->too_big && atomic_load(&s->st->model)) {
			req->arriving = true;
			ms_batcher_arriving(s->st->batcher);
		}
	}
	return req;
}

static enum MHD_Result access_cb(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls)
{
	struct ms_server *s = cls;
	struct request *req = *con_cls;
	struct answer a = {0};

	(void)version;
	if (req == NULL) {
		*con_cls = req = request_new(s, conn, method, url);
		/* A declared oversized body is refused before any of it is read
		 * (MHD then closes the connection). */
		if (!req->too_big)
			return MHD_YES;
	}
	if (*upload_data_size > 0) {
		if (!req->too_big && req->body.len + *upload_data_size > s->st->opts.max_body) {
			req->too_big = true;
			mlp_buf_free(&req->body);
		}
		if (!req->too_big)
			mlp_buf_add(&req->body, upload_data, *upload_data_size);
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (req->too_big) {
		char *msg = xasprintf("the body is larger than %zu bytes", s->st->opts.max_body);

		a.content_type = "application/json";
		answer_error(&a, 413, msg);
		free(msg);
	} else {
		route(&a, s->st, req, method, url);
	}
	if (req->arriving) {
		req->arriving = false;
		ms_batcher_abandon(s->st->batcher);
	}
	return respond(s, req, conn, &a);
}

static void completed_cb(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
	struct ms_server *s = cls;
	struct request *req = *con_cls;

	(void)conn;
	if (req == NULL)
		return;
	if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK &&
	    toe != MHD_REQUEST_TERMINATED_CLIENT_ABORT)
		s->cut++;
	if (req->arriving)
		ms_batcher_abandon(s->st->batcher);
	mlp_buf_free(&req->body);
	free(req);
	*con_cls = NULL;
	s->last_activity_us = mlp_mono_us();
	s->busy--;
}

static void connection_cb(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
	struct ms_server *s = cls;

	(void)conn;
	(void)socket_context;
	if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
		s->connections++;
		s->last_activity_us = mlp_mono_us();
	} else {
		s->connections--;
	}
}

/* The listen address as a sockaddr; false with a message when the host is
 * not a numeric address. */
static bool listen_addr(struct sockaddr_storage *ss, bool *ipv6, const struct ms_opts *o)
{
	struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof(*ss));
	*ipv6 = false;
	if (inet_pton(AF_INET, o->host, &in4->sin_addr) == 1) {
		in4->sin_family = AF_INET;
		in4->sin_port = htons((uint16_t)o->port);
		return true;
	}
	if (inet_pton(AF_INET6, o->host, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)o->port);
		*ipv6 = true;
		return true;
	}
	mlp_error_set("--listen wants a numeric address such as 0.0.0.0, 127.0.0.1 or [::1], not "
	              "'%s'",
	              o->host);
	return false;
}

int ms_server_start(struct ms_server **out, struct ms_state *st)
{
	struct ms_server *s = xcalloc(1, sizeof(*s));
	struct sockaddr_storage ss;
	const union MHD_DaemonInfo *info;
	unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC;
	bool ipv6;

	*out = NULL;
	s->st = st;
	if (!listen_addr(&ss, &ipv6, &st->opts)) {
		free(s);
		return MLP_EINVAL;
	}
	if (ipv6)
		flags |= MHD_USE_IPv6;
	if (st->opts.threads == 0)
		flags |= MHD_USE_THREAD_PER_CONNECTION;
	else
		flags |= MHD_USE_EPOLL;
	s->d = MHD_start_daemon(
	        flags, 0, NULL, NULL, access_cb, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
	        MHD_OPTION_NOTIFY_COMPLETED, completed_cb, s, MHD_OPTION_NOTIFY_CONNECTION,
	        connection_cb, s, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)120,
	        MHD_OPTION_CONNECTION_LIMIT, (unsigned int)4096, MHD_OPTION_LISTEN_BACKLOG_SIZE,
	        (unsigned int)1024, MHD_OPTION_THREAD_POOL_SIZE,
	        (unsigned int)(st->opts.threads > 0 ? st->opts.threads : 0), MHD_OPTION_END);
	if (s->d == NULL) {
		mlp_error_set("cannot listen on %s port %d (in use?)", st->opts.host,
		              st->opts.port);
		free(s);
		return MLP_EIO;
	}
	info = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
	s->port = info ? info->port : st->opts.port;
	*out = s;
	return 0;
}

int ms_server_port(const struct ms_server *s)
{
	return s->port;
}

/* Takes the connections the kernel completed before the listening socket
 * was quiesced and gives them to MHD, then closes the socket. */
static void drain_backlog(struct ms_server *s, MHD_socket fd)
{
	int flags = fcntl(fd, F_GETFL);

	if (flags >= 0)
		fcntl(fd, F_SETFL, flags | O_NONBLOCK);
	for (;;) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		int c = accept4(fd, (struct sockaddr *)&ss, &len, SOCK_CLOEXEC);

		if (c < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (MHD_add_connection(s->d, c, (struct sockaddr *)&ss, len) != MHD_YES)
			close(c);
	}
	close(fd);
}

long long ms_server_shutdown(struct ms_server *s, int64_t deadline_us)
{
	MHD_socket fd;
	long long cut;

	if (s == NULL)
		return 0;
	fd = MHD_quiesce_daemon(s->d);
	if (fd != MHD_INVALID_SOCKET)
		drain_backlog(s, fd);
	for (;;) {
		int64_t now = mlp_mono_us();

		if (s->connections == 0 || now >= deadline_us ||
		    (s->busy == 0 && now - s->last_activity_us >= QUIET_US))
			break;
		usleep(10000);
	}
	MHD_stop_daemon(s->d);
	cut = s->cut;
	free(s);
	return cut;
}
