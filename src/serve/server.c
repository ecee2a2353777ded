/*
 * server.c - the libmicrohttpd wrapper (see server.h).
 *
 * Threading: one thread per connection (MHD_USE_THREAD_PER_CONNECTION),
 * so a handler that waits on the database's write lock or a log stream
 * that waits for the next line holds up only its own client.  The body is
 * collected here, capped at body_max, and handed over whole: webhooks are
 * verified over the exact bytes received.
 */
#include "config.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/error.h"
#include "serve/server.h"
#include "base/util.h"

struct mlp_server {
	struct MHD_Daemon *d;
	struct mlp_server_opts opts;
	char *cert, *key;
	int port;
};

struct mlp_http_request {
	struct MHD_Connection *conn;
	struct mlp_buf body;
	bool too_big;
	bool begun;   /* the access handler has seen the request */
	bool nul_uri; /* the target has a %00 (uri_cb) */
	int64_t started_us;
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

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct mlp_http_response *r = cls;
	ssize_t n = r->stream(r->stream_payload, pos, buf, max);

	return n < 0 ? MHD_CONTENT_READER_END_OF_STREAM : n;
}

static void stream_done(void *cls)
{
	struct mlp_http_response *r = cls;

	if (r->stream_free)
		r->stream_free(r->stream_payload);
	free(r);
}

static enum MHD_Result respond(struct mlp_server *s, struct mlp_http_request *req,
                               const char *method, const char *url, struct mlp_http_response *r)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;
	size_t len = r->body_len;
	int status = r->status ? r->status : 200;

	if (r->stream) {
		struct mlp_http_response *copy = xmalloc(sizeof(*copy));

		*copy = *r;
		resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_reader,
		                                         copy, stream_done);
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

	(void)cls;
	(void)conn;
	(void)toe;
	if (req) {
		mlp_buf_free(&req->body);
		free(req);
		*con_cls = NULL;
	}
}

int mlp_server_start(struct mlp_server **out, const struct mlp_server_opts *opts)
{
	struct mlp_server *s = xcalloc(1, sizeof(*s));
	struct sockaddr_storage ss;
	unsigned int flags =
	        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC;
	const union MHD_DaemonInfo *info;
	size_t len;
	int rc = MLP_EINVAL;

	*out = NULL;
	s->opts = *opts;
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
	if (opts->tls_cert)
		s->d = MHD_start_daemon(flags, 0, NULL, NULL, access_cb, s, MHD_OPTION_SOCK_ADDR,
		                        (struct sockaddr *)&ss, MHD_OPTION_NOTIFY_COMPLETED,
		                        completed_cb, s, MHD_OPTION_URI_LOG_CALLBACK, uri_cb, s,
		                        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)60,
		                        MHD_OPTION_HTTPS_MEM_CERT, s->cert,
		                        MHD_OPTION_HTTPS_MEM_KEY, s->key, MHD_OPTION_END);
	else
		s->d = MHD_start_daemon(flags, 0, NULL, NULL, access_cb, s, MHD_OPTION_SOCK_ADDR,
		                        (struct sockaddr *)&ss, MHD_OPTION_NOTIFY_COMPLETED,
		                        completed_cb, s, MHD_OPTION_URI_LOG_CALLBACK, uri_cb, s,
		                        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)60,
		                        MHD_OPTION_END);
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
	if (s->d)
		MHD_stop_daemon(s->d);
	free(s->cert);
	free(s->key);
	free(s);
}
