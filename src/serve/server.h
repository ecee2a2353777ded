/*
 * server.h - HTTP for `mlpipe serve`.  The only module that includes
 * libmicrohttpd.
 *
 * A request reaches the handler once, complete: method, path, query,
 * headers and the raw body (never more than body_max bytes: a larger one
 * is answered 413 before the handler sees it).  The handler fills a
 * response: a status and a body, or a stream (for logs that grow while a
 * stage runs).  A fixed pool of threads serves all connections: a handler
 * may block briefly (on the database), which holds up the other
 * connections of its thread, but a stream must not wait: it says it has
 * nothing yet and names a descriptor to be woken by (server.c parks the
 * connection meanwhile).  Connections are bounded in total and per peer,
 * and a request must arrive whole within request_timeout.
 */
#ifndef MLP_SERVER_H
#define MLP_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct mlp_server;
struct mlp_http_request;

#define MLP_HTTP_MAX_HEADERS 8

/* A request header (case-insensitive name), or NULL. */
const char *mlp_http_header(const struct mlp_http_request *r, const char *name);
/* A query argument, or NULL. */
const char *mlp_http_query(const struct mlp_http_request *r, const char *name);

struct mlp_http_request_view {
	const char *method;
	const char *path;
	const char *remote; /* the peer's address */
	const char *body;   /* raw bytes, NUL-terminated for convenience */
	size_t body_len;
};

/*
 * A stream: called for the next bytes at offset pos; returns how many it
 * wrote into buf (at most max), 0 when it has none yet, or -1 at the end.
 * It must not block: after a 0 it is called again once the descriptor
 * its wait function names is readable (the stream drains it itself), or
 * after a second at the latest; without a wait function, after 100 ms.
 * When the server stops, a stream that has nothing yet is ended.
 */
typedef ssize_t (*mlp_http_stream_fn)(void *payload, uint64_t pos, char *buf, size_t max);

struct mlp_http_response {
	int status;
	char *body; /* owned by the response (freed after sending) */
	size_t body_len;
	const char *content_type; /* a literal; default application/json */
	const char *extra_header; /* e.g. "WWW-Authenticate" (name), or NULL */
	const char *extra_value;
	mlp_http_stream_fn stream; /* instead of body */
	void *stream_payload;
	void (*stream_free)(void *payload);
	/* The descriptor to wait on after the stream returned 0, or -1; NULL:
	 * none. */
	int (*stream_wait_fd)(void *payload);
	/* Instead of body: file_len bytes of the open file file_fd from
	 * file_offset (sent with sendfile where it can be; the fd is the
	 * response's, closed after sending). */
	bool has_file;
	int file_fd;
	uint64_t file_offset, file_len;
	/* More headers (mlp_http_response_header); values are owned. */
	struct {
		const char *name;
		char *value;
	} headers[MLP_HTTP_MAX_HEADERS];
	size_t nheaders;
};

/* Adds a header (name a literal) to r; at most MLP_HTTP_MAX_HEADERS. */
void mlp_http_response_header(struct mlp_http_response *r, const char *name, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

typedef void (*mlp_http_handler)(void *payload, const struct mlp_http_request *req,
                                 const struct mlp_http_request_view *view,
                                 struct mlp_http_response *resp);

struct mlp_server_opts {
	const char *host;     /* numeric IPv4 or IPv6 address */
	int port;             /* 0: any free port */
	const char *tls_cert; /* PEM files; both or neither */
	const char *tls_key;
	size_t body_max; /* larger bodies: 413 */
	/* Slow and many clients (docs/serve.md, "Limits"). */
	unsigned int threads;       /* the polling threads; 0: 4 */
	unsigned int conn_max;      /* connections at once; 0: 2048 */
	unsigned int conn_per_ip;   /* connections from one address; 0: no limit */
	int64_t request_timeout_ms; /* a request must arrive whole this soon; 0: no limit */
	mlp_http_handler handler;
	void *payload;
	/* Called after each request with its line for the log. */
	void (*log)(void *payload, const char *line);
};

/* Starts serving in threads of its own (a pool and a watcher).  MLP_EIO / MLP_EINVAL with a
 * message (address in use, unreadable certificate ...). */
int mlp_server_start(struct mlp_server **out, const struct mlp_server_opts *opts);
/* The port it listens on. */
int mlp_server_port(const struct mlp_server *s);
/* Stops accepting connections (those open are served to the end). */
void mlp_server_quiesce(struct mlp_server *s);
/* Stops and frees; accepts NULL. */
void mlp_server_stop(struct mlp_server *s);

#endif
