/*
 * server.c - the libmicrohttpd wrapper (see server.h).
 *
 * Threading: a fixed pool of threads (http_threads), each polling its
 * share of the connections with epoll, so a client that holds a
 * connection open costs a descriptor and a little memory, not a thread.
 * A handler may still block briefly (on the database): that holds up the
 * other connections of its thread for as long.  A stream with nothing to
 * send yet (a log being followed) does not wait in its thread: its
 * connection is suspended and parked with the watcher, which resumes it
 * when the stream's descriptor becomes readable (or after a backstop
 * delay).
 *
 * Slow clients: connections are bounded in total and per peer address,
 * and a request that has not arrived complete (headers and body) within
 * request_timeout of its connection being opened (or of the previous
 * answer on it) is cut by the watcher's sweep.  libmicrohttpd's own
 * timeout is an idle one that each trickled byte restarts; this one is
 * absolute.  The body is collected here, capped at body_max, and handed
 * over whole: webhooks are verified over the exact bytes received.
 */
#include "config.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/error.h"
#include "serve/server.h"
#include "base/util.h"

#define DEFAULT_THREADS 4
#define DEFAULT_CONN_MAX 2048
/* Descriptors kept for what is not a connection: the database, git,
 * children's pipes, the log. */
#define FD_RESERVE 256
/* A parked stream is tried again this long after it parked at the
 * latest: with a descriptor to wait on (a backstop), without one. */
#define STREAM_BACKSTOP_MS 1000
#define STREAM_RETRY_MS 100
/* How often the watcher looks for requests past request_timeout. */
#define SWEEP_MS 250

/* A connection from its accept to its close (MHD_OPTION_NOTIFY_CONNECTION);
 * its fields are under the server's lock. */
struct conn {
	struct conn *prev, *next;
	int fd;
	int64_t since_ms; /* its current request began: the accept or the last answer */
	bool answering;   /* the request has arrived whole */
	bool cut;         /* shut down by the sweep */
};

/* A stream's connection, suspended until fd is readable or wake_ms. */
struct parked {
	struct MHD_Connection *conn;
	int fd; /* -1: wake_ms only */
	int64_t wake_ms;
};

struct mlp_server {
	struct MHD_Daemon *d;
	struct mlp_server_opts opts;
	char *cert, *key;
	int port;
	pthread_mutex_t lock; /* the fields below */
	struct conn *conns;
	struct parked *parked;
	size_t nparked, cap_parked;
	bool stopping; /* streams end instead of parking; the watcher ends */
	int wake_fd;   /* eventfd: news for the watcher */
	pthread_t watcher;
	bool watcher_started;
};

struct mlp_http_request {
	struct MHD_Connection *conn;
	struct mlp_buf body;
	bool too_big;
	bool begun;   /* the access handler has seen the request */
	bool nul_uri; /* the target has a %00 (uri_cb) */
	int64_t started_us;
};

/* A streamed response and the connection it goes to. */
struct stream {
	struct mlp_server *s;
	struct MHD_Connection *conn;
	struct mlp_http_response r;
};

const char *mlp_http_header(const struct mlp_http_request *r, const char *name)
{
	return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

const char *mlp_http_query(const struct mlp_http_request *r, const char *name)
{
	return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}

static void remote_of(struct MHD_Connection *conn, char *buf, size_t size)
{
	const union MHD_ConnectionInfo *ci =
	        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	const struct sockaddr *sa = ci ? ci->client_addr : NULL;

	snprintf(buf, size, "-");
	if (sa && sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, buf,
		          (socklen_t)size);
	else if (sa && sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr,
		          buf, (socklen_t)size);
}

void mlp_http_response_header(struct mlp_http_response *r, const char *name, const char *fmt, ...)
{
	va_list ap;

	assert(r->nheaders < MLP_HTTP_MAX_HEADERS);
	va_start(ap, fmt);
	r->headers[r->nheaders].name = name;
	r->headers[r->nheaders].value = xvasprintf(fmt, ap);
	r->nheaders++;
	va_end(ap);
}

/* The connection's record (NULL only if the notification was missed). */
static struct conn *conn_of(struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *ci =
	        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

	return ci ? ci->socket_context : NULL;
}

/* The request on conn has arrived whole (true) or has been answered and
 * the next one's time starts (false). */
static void conn_mark(struct mlp_server *s, struct MHD_Connection *conn, bool answering)
{
	struct conn *c = conn_of(conn);

	if (c == NULL)
		return;
	pthread_mutex_lock(&s->lock);
	c->answering = answering;
	if (!answering)
		c->since_ms = mlp_mono_ms();
	pthread_mutex_unlock(&s->lock);
}

/*
 * Opened and closed connections, for the sweep.  libmicrohttpd notifies
 * the close before it closes the descriptor, and the sweep shuts a
 * descriptor down only under the lock and only while its record is
 * listed: it never reaches a descriptor that was closed and reused.
 */
static void notify_cb(void *cls, struct MHD_Connection *conn, void **socket_context,
                      enum MHD_ConnectionNotificationCode toe)
{
	struct mlp_server *s = cls;
	struct conn *c = *socket_context;

	if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
		const union MHD_ConnectionInfo *ci =
		        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);

		c = xcalloc(1, sizeof(*c));
		c->fd = ci ? ci->connect_fd : -1;
		c->since_ms = mlp_mono_ms();
		pthread_mutex_lock(&s->lock);
		c->next = s->conns;
		if (s->conns)
			s->conns->prev = c;
		s->conns = c;
		pthread_mutex_unlock(&s->lock);
		*socket_context = c;
	} else if (c) {
		pthread_mutex_lock(&s->lock);
		if (c->prev)
			c->prev->next = c->next;
		else
			s->conns = c->next;
		if (c->next)
			c->next->prev = c->prev;
		pthread_mutex_unlock(&s->lock);
		free(c);
		*socket_context = NULL;
	}
}

static void watcher_wake(struct mlp_server *s)
{
	uint64_t one = 1;

	if (write(s->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		fprintf(stderr, "mlpipe: cannot wake the HTTP watcher: %s\n", strerror(errno));
}

/*
 * The next bytes of a stream.  When the stream has none yet, its
 * connection is suspended and parked with the watcher instead of waiting
 * here: this thread polls other connections.  (Returning 0 alone would
 * have libmicrohttpd call again at once, a spin.)  Suspending from a
 * content reader is allowed by libmicrohttpd; the check of stopping and
 * the parking are under one lock, so mlp_server_stop() resumes every
 * parked connection before it stops the daemon, which refuses to stop
 * with one still suspended.
 */
static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct stream *st = cls;
	struct mlp_server *s = st->s;
	ssize_t n = st->r.stream(st->r.stream_payload, pos, buf, max);
	int fd;

	if (n != 0)
		return n < 0 ? MHD_CONTENT_READER_END_OF_STREAM : n;
	fd = st->r.stream_wait_fd ? st->r.stream_wait_fd(st->r.stream_payload) : -1;
	pthread_mutex_lock(&s->lock);
	if (s->stopping) {
		pthread_mutex_unlock(&s->lock);
		return MHD_CONTENT_READER_END_OF_STREAM;
	}
	MHD_suspend_connection(st->conn);
	if (s->nparked == s->cap_parked) {
		s->cap_parked = s->cap_parked ? 2 * s->cap_parked : 16;
		s->parked = xrealloc(s->parked, s->cap_parked * sizeof(*s->parked));
	}
	s->parked[s->nparked++] = (struct parked){
	        .conn = st->conn,
	        .fd = fd,
	        .wake_ms = mlp_mono_ms() + (fd >= 0 ? STREAM_BACKSTOP_MS : STREAM_RETRY_MS),
	};
	pthread_mutex_unlock(&s->lock);
	watcher_wake(s);
	return 0;
}

static void stream_done(void *cls)
{
	struct stream *st = cls;

	if (st->r.stream_free)
		st->r.stream_free(st->r.stream_payload);
	free(st);
}

static enum MHD_Result respond(struct mlp_server *s, struct mlp_http_request *req,
                               const char *method, const char *url, struct mlp_http_response *r)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;
	size_t len = r->body_len;
	int status = r->status ? r->status : 200;

	if (r->stream) {
		struct stream *st = xmalloc(sizeof(*st));

		st->s = s;
		st->conn = req->conn;
		st->r = *r;
		resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_reader, st,
		                                         stream_done);
		len = 0;
	} else if (r->has_file) {
		/* MHD owns the descriptor from here (it closes it when done). */
		resp = MHD_create_response_from_fd_at_offset64(r->file_len, r->file_fd,
		                                               r->file_offset);
		len = (size_t)r->file_len;
	} else {
		if (r->body == NULL) {
			r->body = xstrdup("");
			len = 0;
		}
		resp = MHD_create_response_from_buffer(len, r->body, MHD_RESPMEM_MUST_FREE);
		r->body = NULL;
	}
	if (resp == NULL) {
		fprintf(stderr, "mlpipe: out of memory (http response)\n");
		abort();
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
	                        r->content_type ? r->content_type : "application/json");
	if (r->extra_header && r->extra_value)
		MHD_add_response_header(resp, r->extra_header, r->extra_value);
	for (size_t i = 0; i < r->nheaders; i++) {
		MHD_add_response_header(resp, r->headers[i].name, r->headers[i].value);
		free(r->headers[i].value);
		r->headers[i].value = NULL;
	}
	ret = MHD_queue_response(req->conn, (unsigned int)status, resp);
	MHD_destroy_response(resp);
	if (s->opts.log) {
		char remote[64], *line;

		remote_of(req->conn, remote, sizeof(remote));
		line = xasprintf("%s %s %s %d %zu %.3fms", remote, method, url, status, len,
		                 (double)(mlp_mono_us() - req->started_us) / 1000.0);
		s->opts.log(s->opts.payload, line);
		free(line);
	}
	return ret;
}

/*
 * The request's target as sent, before libmicrohttpd decodes it: its state
 * starts here.  A %00 decodes to a NUL, which would cut the path or a query
 * value short (".../logs/a%00b" read as ".../logs/a"): such a request is
 * answered 400 without reaching the handler.
 */
static void *uri_cb(void *cls, const char *uri, struct MHD_Connection *conn)
{
	struct mlp_http_request *req = xcalloc(1, sizeof(*req));

	(void)cls;
	req->conn = conn;
	req->started_us = mlp_mono_us();
	req->nul_uri = strstr(uri, "%00") != NULL;
	return req;
}

static enum MHD_Result access_cb(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls)
{
	struct mlp_server *s = cls;
	struct mlp_http_request *req = *con_cls;

	(void)version;
	if (req == NULL)
		*con_cls = req = uri_cb(s, "", conn);
	if (!req->begun) {
		const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
		                                             MHD_HTTP_HEADER_CONTENT_LENGTH);
		long long n;

		req->begun = true;
		/* Refuse a declared oversized body before reading any of it. */
		if (cl && mlp_parse_int(&n, cl, 0, INT64_MAX) == 0 && (size_t)n > s->opts.body_max)
			req->too_big = true;
		if (!req->too_big)
			return MHD_YES;
	}
	if (*upload_data_size > 0 && !req->too_big) {
		if (req->body.len + *upload_data_size > s->opts.body_max) {
			req->too_big = true;
			mlp_buf_free(&req->body);
		} else {
			mlp_buf_add(&req->body, upload_data, *upload_data_size);
		}
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (*upload_data_size > 0 && req->too_big) {
		*upload_data_size = 0;
		return MHD_YES;
	}
	{
		struct mlp_http_response r = {0};
		struct mlp_http_request_view v = {
		        .method = method,
		        .path = url,
		        .body = mlp_buf_str(&req->body),
		        .body_len = req->body.len,
		};
		char remote[64];

		conn_mark(s, conn, true);
		remote_of(conn, remote, sizeof(remote));
		v.remote = remote;
		if (req->too_big) {
			r.status = 413;
			r.body = xasprintf("{\"error\":\"the body is larger than %zu bytes\"}\n",
			                   s->opts.body_max);
			r.body_len = strlen(r.body);
		} else if (req->nul_uri) {
			r.status = 400;
			r.body = xstrdup("{\"error\":\"the URL has a NUL (%00)\"}\n");
			r.body_len = strlen(r.body);
		} else {
			s->opts.handler(s->opts.payload, req, &v, &r);
		}
		return respond(s, req, method, url, &r);
	}
}

static void completed_cb(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
	struct mlp_http_request *req = *con_cls;

	(void)toe;
	conn_mark(cls, conn, false);
	if (req) {
		mlp_buf_free(&req->body);
		free(req);
		*con_cls = NULL;
	}
}

/* Cuts the connections whose request has not arrived whole within
 * request_timeout: shutdown() makes libmicrohttpd see the end of the
 * stream and close the connection itself. */
static void sweep(struct mlp_server *s, int64_t now)
{
	unsigned int cut = 0;

	if (s->opts.request_timeout_ms <= 0)
		return;
	pthread_mutex_lock(&s->lock);
	for (struct conn *c = s->conns; c; c = c->next) {
		if (c->answering || c->cut || c->fd < 0 ||
		    now - c->since_ms < s->opts.request_timeout_ms)
			continue;
		shutdown(c->fd, SHUT_RDWR);
		c->cut = true;
		cut++;
	}
	pthread_mutex_unlock(&s->lock);
	if (cut > 0 && s->opts.log) {
		char *line = xasprintf("closed %u connection(s) whose request had not arrived "
		                       "whole within request_timeout (%lld ms)",
		                       cut, (long long)s->opts.request_timeout_ms);

		s->opts.log(s->opts.payload, line);
		free(line);
	}
}

/*
 * The watcher: resumes parked streams when their descriptor is readable
 * or their time has come, and sweeps slow requests every SWEEP_MS.  Only
 * it (and mlp_server_stop, which sets stopping first) removes parked
 * entries, so the first n of them are still those it polled.
 */
static void *watcher_main(void *arg)
{
	struct mlp_server *s = arg;
	struct pollfd *pfds = NULL;
	size_t cap = 0;
	int64_t next_sweep = mlp_mono_ms() + SWEEP_MS;

	for (;;) {
		int64_t now = mlp_mono_ms(), until = next_sweep;
		uint64_t count;
		size_t n;

		pthread_mutex_lock(&s->lock);
		if (s->stopping) {
			pthread_mutex_unlock(&s->lock);
			break;
		}
		n = s->nparked;
		if (n + 1 > cap) {
			cap = 2 * (n + 1);
			pfds = xrealloc(pfds, cap * sizeof(*pfds));
		}
		pfds[0] = (struct pollfd){.fd = s->wake_fd, .events = POLLIN};
		for (size_t i = 0; i < n; i++) {
			pfds[i + 1] = (struct pollfd){.fd = s->parked[i].fd, .events = POLLIN};
			if (s->parked[i].wake_ms < until)
				until = s->parked[i].wake_ms;
		}
		pthread_mutex_unlock(&s->lock);
		if (poll(pfds, n + 1, until > now ? (int)(until - now) : 0) < 0 && errno != EINTR)
			break;
		if (pfds[0].revents) {
			ssize_t got = read(s->wake_fd, &count, sizeof(count));

			(void)got; /* EAGAIN is fine: the count is not needed */
		}
		now = mlp_mono_ms();
		pthread_mutex_lock(&s->lock);
		if (!s->stopping) {
			size_t kept = 0;

			for (size_t i = 0; i < s->nparked; i++) {
				if ((i < n && pfds[i + 1].revents) || s->parked[i].wake_ms <= now)
					MHD_resume_connection(s->parked[i].conn);
				else
					s->parked[kept++] = s->parked[i];
			}
			s->nparked = kept;
		}
		pthread_mutex_unlock(&s->lock);
		if (now >= next_sweep) {
			sweep(s, now);
			next_sweep = now + SWEEP_MS;
		}
	}
	free(pfds);
	return NULL;
}

/*
 * The connection limit the descriptors allow: the soft limit is raised
 * towards the hard one to fit conn_max and FD_RESERVE; where the hard
 * limit is lower, fewer connections are accepted (and the log says so).
 */
static unsigned int fit_fd_limit(const struct mlp_server *s, unsigned int conn_max)
{
	struct rlimit rl;
	rlim_t want = (rlim_t)conn_max + FD_RESERVE;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= want)
		return conn_max;
	rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0 && getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return conn_max;
	if (rl.rlim_cur >= want)
		return conn_max;
	conn_max = rl.rlim_cur > 2 * FD_RESERVE ? (unsigned int)(rl.rlim_cur - FD_RESERVE)
	                                        : (unsigned int)(rl.rlim_cur / 2);
	if (s->opts.log) {
		char *line =
		        xasprintf("the descriptor limit (ulimit -n %llu) allows %u connections "
		                  "at once, not the %u configured",
		                  (unsigned long long)rl.rlim_cur, conn_max,
		                  s->opts.conn_max ? s->opts.conn_max : DEFAULT_CONN_MAX);

		s->opts.log(s->opts.payload, line);
		free(line);
	}
	return conn_max;
}

/* The daemon, with the options built from s->opts. */
static struct MHD_Daemon *start_daemon(struct mlp_server *s, unsigned int flags,
                                       const struct sockaddr *addr)
{
	struct MHD_OptionItem tls[] = {
	        {MHD_OPTION_HTTPS_MEM_CERT, 0, s->cert},
	        {MHD_OPTION_HTTPS_MEM_KEY, 0, s->key},
	        {MHD_OPTION_END, 0, NULL},
	};
	unsigned int threads = s->opts.threads ? s->opts.threads : DEFAULT_THREADS;
	unsigned int conn_max =
	        fit_fd_limit(s, s->opts.conn_max ? s->opts.conn_max : DEFAULT_CONN_MAX);

	/* Each thread of the pool gets an equal share of the connections. */
	if (conn_max < threads)
		conn_max = threads;
	return MHD_start_daemon(
	        flags, 0, NULL, NULL, access_cb, s, MHD_OPTION_SOCK_ADDR, addr,
	        MHD_OPTION_NOTIFY_COMPLETED, completed_cb, s, MHD_OPTION_URI_LOG_CALLBACK, uri_cb,
	        s, MHD_OPTION_NOTIFY_CONNECTION, notify_cb, s, MHD_OPTION_CONNECTION_TIMEOUT,
	        (unsigned int)60, MHD_OPTION_THREAD_POOL_SIZE, threads, MHD_OPTION_CONNECTION_LIMIT,
	        conn_max, MHD_OPTION_PER_IP_CONNECTION_LIMIT, s->opts.conn_per_ip, MHD_OPTION_ARRAY,
	        s->cert ? tls : tls + 2, MHD_OPTION_END);
}

int mlp_server_start(struct mlp_server **out, const struct mlp_server_opts *opts)
{
	struct mlp_server *s = xcalloc(1, sizeof(*s));
	struct sockaddr_storage ss;
	unsigned int flags =
	        MHD_USE_INTERNAL_POLLING_THREAD | MHD_ALLOW_SUSPEND_RESUME |
	        (MHD_is_feature_supported(MHD_FEATURE_EPOLL) == MHD_YES ? MHD_USE_EPOLL
	                                                                : MHD_USE_POLL);
	const union MHD_DaemonInfo *info;
	size_t len;
	int rc = MLP_EINVAL;

	*out = NULL;
	s->opts = *opts;
	pthread_mutex_init(&s->lock, NULL);
	s->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	memset(&ss, 0, sizeof(ss));
	if (inet_pton(AF_INET, opts->host, &((struct sockaddr_in *)&ss)->sin_addr) == 1) {
		((struct sockaddr_in *)&ss)->sin_family = AF_INET;
		((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)opts->port);
	} else if (inet_pton(AF_INET6, opts->host, &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1) {
		((struct sockaddr_in6 *)&ss)->sin6_family = AF_INET6;
		((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)opts->port);
		flags |= MHD_USE_IPv6;
	} else {
		mlp_error_set("--listen wants a numeric address such as 127.0.0.1, not '%s'",
		              opts->host);
		goto fail;
	}
	if ((opts->tls_cert == NULL) != (opts->tls_key == NULL)) {
		mlp_error_set("TLS needs both a certificate and a key");
		goto fail;
	}
	if (opts->tls_cert) {
		if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
			mlp_error_set("this libmicrohttpd was built without TLS");
			goto fail;
		}
		if (mlp_read_file(&s->cert, &len, opts->tls_cert, 1 << 20) != 0 ||
		    mlp_read_file(&s->key, &len, opts->tls_key, 1 << 20) != 0) {
			rc = MLP_EIO;
			goto fail;
		}
		flags |= MHD_USE_TLS;
	}
	if (s->wake_fd < 0 || pthread_create(&s->watcher, NULL, watcher_main, s) != 0) {
		mlp_error_set("cannot start the HTTP watcher: %s", strerror(errno));
		rc = MLP_EIO;
		goto fail;
	}
	s->watcher_started = true;
	s->d = start_daemon(s, flags, (struct sockaddr *)&ss);
	if (s->d == NULL) {
		mlp_error_set("cannot listen on %s port %d (in use, or a bad TLS "
		              "certificate or key)",
		              opts->host, opts->port);
		rc = MLP_EIO;
		goto fail;
	}
	info = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
	s->port = info ? info->port : opts->port;
	*out = s;
	return 0;
fail:
	mlp_server_stop(s);
	return rc;
}

int mlp_server_port(const struct mlp_server *s)
{
	return s->port;
}

void mlp_server_quiesce(struct mlp_server *s)
{
	MHD_socket fd;

	if (s == NULL || s->d == NULL)
		return;
	fd = MHD_quiesce_daemon(s->d);
	if (fd != MHD_INVALID_SOCKET)
		close(fd);
}

void mlp_server_stop(struct mlp_server *s)
{
	if (s == NULL)
		return;
	/* No stream parks from here on, and those parked are resumed (to
	 * their end): libmicrohttpd does not stop with one suspended. */
	pthread_mutex_lock(&s->lock);
	s->stopping = true;
	for (size_t i = 0; i < s->nparked; i++)
		MHD_resume_connection(s->parked[i].conn);
	s->nparked = 0;
	pthread_mutex_unlock(&s->lock);
	if (s->watcher_started) {
		watcher_wake(s);
		pthread_join(s->watcher, NULL);
	}
	if (s->d)
		MHD_stop_daemon(s->d);
	if (s->wake_fd >= 0)
		close(s->wake_fd);
	pthread_mutex_destroy(&s->lock);
	free(s->parked);
	free(s->cert);
	free(s->key);
	free(s);
}
