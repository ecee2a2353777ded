/*
 * results.c - the rank-0 pod's results server (see results.h).
 *
 * One thread, one poll() loop: the listening socket, a wake pipe from the
 * main thread (the ranks finished, or stop) and every connection.  A
 * connection goes READ (the request, at most 8 KiB, within 10 s) ->
 * [WAIT (a long poll of /status, until the ranks finish or its time is
 * up)] -> WRITE (headers and body, then a file streamed with sendfile(),
 * dropped after 30 s without progress) -> closed.  Every response says
 * "Connection: close": one request per connection keeps this small.
 *
 * Shared with the main thread, under the lock: finished, stopping and the
 * verdict (exit code, reason, the files' sizes and digests), which are
 * written once before finished becomes true and only read afterwards.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/crypto.h"
#include "base/error.h"
#include "base/util.h"
#include "results.h"

#define MAX_CONNS 32
#define WRITE_IDLE_MS 30000
#define STOP_GRACE_MS 1000
#define SENDFILE_CHUNK (1 << 20)

enum conn_state { C_READ, C_WAIT, C_WRITE };

struct conn {
	int fd;
	enum conn_state state;
	char req[POD_RESULTS_MAX_REQUEST + 1];
	size_t len;
	int64_t deadline_ms;
	struct mlp_buf out; /* status line, headers and a small body */
	size_t out_off;
	int file_fd; /* a body streamed after out, or -1 */
	off_t file_off, file_end;
	bool bye; /* the answer to POST /done: tell the main thread once sent */
};

struct served_file {
	bool present;
	long long size;
	char sha256[MLP_SHA256_HEX_LEN + 1];
};

struct pod_results {
	int listen_fd;
	int wake[2]; /* main -> thread */
	int done[2]; /* thread -> main: /done answered */
	pthread_t thread;
	const struct pod_result *files;
	size_t nfiles;
	pthread_mutex_t lock;
	bool finished, stopping;
	int exit_code;
	char *reason;
	struct served_file *served;
	/* The thread's own. */
	struct conn *conns[MAX_CONNS];
	size_t nconns;
};

static void json_string(struct mlp_buf *b, const char *s)
{
	bool utf8 = mlp_utf8_valid(s, strlen(s));

	mlp_buf_putc(b, '"');
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			mlp_buf_printf(b, "\\%c", *p);
		else if (*p < 0x20)
			mlp_buf_printf(b, "\\u%04x", *p);
		else if (*p >= 0x80 && !utf8)
			mlp_buf_putc(b, '?'); /* JSON is UTF-8; a broken reason stays readable */
		else
			mlp_buf_putc(b, (char)*p);
	}
	mlp_buf_putc(b, '"');
}

/* Under the lock, or after finished was seen under it. */
static void status_json(struct mlp_buf *b, const struct pod_results *rs)
{
	if (!rs->finished) {
		mlp_buf_puts(b, "{\"state\":\"running\"}\n");
		return;
	}
	mlp_buf_printf(b, "{\"state\":\"done\",\"exit_code\":%d,\"reason\":", rs->exit_code);
	json_string(b, rs->reason);
	mlp_buf_puts(b, ",\"files\":{");
	for (size_t i = 0, n = 0; i < rs->nfiles; i++) {
		if (!rs->served[i].present)
			continue;
		if (n++)
			mlp_buf_putc(b, ',');
		json_string(b, rs->files[i].name);
		mlp_buf_printf(b, ":{\"size\":%lld,\"sha256\":\"%s\"}", rs->served[i].size,
		               rs->served[i].sha256);
	}
	mlp_buf_puts(b, "}}\n");
}

static void respond(struct conn *c, int status, const char *type, const char *body, size_t len,
                    const char *extra_headers)
{
	const char *phrase = status == 200   ? "OK"
	                     : status == 400 ? "Bad Request"
	                     : status == 404 ? "Not Found"
	                     : status == 405 ? "Method Not Allowed"
	                     : status == 409 ? "Conflict"
	                                     : "Error";

	mlp_buf_clear(&c->out);
	mlp_buf_printf(&c->out,
	               "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
	               "Connection: close\r\n%s\r\n",
	               status, phrase, type, len, extra_headers ? extra_headers : "");
	mlp_buf_add(&c->out, body, len);
	c->out_off = 0;
	c->state = C_WRITE;
	c->deadline_ms = mlp_mono_ms() + WRITE_IDLE_MS;
}

static void respond_text(struct conn *c, int status, const char *text, const char *extra_headers)
{
	respond(c, status, "text/plain; charset=utf-8", text, strlen(text), extra_headers);
}

static void respond_status(struct pod_results *rs, struct conn *c)
{
	struct mlp_buf b = {0};

	pthread_mutex_lock(&rs->lock);
	status_json(&b, rs);
	pthread_mutex_unlock(&rs->lock);
	respond(c, 200, "application/json", mlp_buf_str(&b), b.len, NULL);
	mlp_buf_free(&b);
}

static void respond_file(struct pod_results *rs, struct conn *c, const char *name)
{
	const struct pod_result *f = NULL;
	struct stat st;
	bool finished;
	int fd;

	pthread_mutex_lock(&rs->lock);
	finished = rs->finished;
	pthread_mutex_unlock(&rs->lock);
	for (size_t i = 0; finished && i < rs->nfiles; i++)
		if (strcmp(rs->files[i].name, name) == 0 && rs->served[i].present)
			f = &rs->files[i];
	if (f == NULL) {
		respond_text(c, 404,
		             finished ? "no such result file\n"
		                      : "no result files until the ranks have ended\n",
		             NULL);
		return;
	}
	fd = open(f->path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		if (fd >= 0)
			close(fd);
		respond_text(c, 404, "the result file is gone\n", NULL);
		return;
	}
	/* Headers now, the bytes streamed: a model can be gigabytes. */
	mlp_buf_clear(&c->out);
	mlp_buf_printf(&c->out,
	               "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
	               "Content-Length: %lld\r\nConnection: close\r\n\r\n",
	               (long long)st.st_size);
	c->out_off = 0;
	c->file_fd = fd;
	c->file_off = 0;
	c->file_end = st.st_size;
	c->state = C_WRITE;
	c->deadline_ms = mlp_mono_ms() + WRITE_IDLE_MS;
}

/* The value of ?wait=N, capped; 0 when absent; -1 when not a number. */
static int parse_wait(const char *query)
{
	for (const char *p = query; p && *p;) {
		const char *amp = strchr(p, '&');
		size_t len = amp ? (size_t)(amp - p) : strlen(p);

		if (len > 5 && strncmp(p, "wait=", 5) == 0) {
			char num[24];
			long long n;

			if (len - 5 >= sizeof(num))
				return -1;
			memcpy(num, p + 5, len - 5);
			num[len - 5] = '\0';
			if (mlp_parse_int(&n, num, 0, 1000000000) != 0)
				return -1;
			return n > POD_RESULTS_MAX_WAIT_S ? POD_RESULTS_MAX_WAIT_S : (int)n;
		}
		if (len == 4 && strncmp(p, "wait", 4) == 0)
			return -1;
		p = amp ? amp + 1 : NULL;
	}
	return 0;
}

static void route(struct pod_results *rs, struct conn *c, const char *method, char *target)
{
	static const char get_only[] = "Allow: GET\r\n", post_only[] = "Allow: POST\r\n";
	bool get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0;
	char *query = strchr(target, '?');

	if (query)
		*query++ = '\0';
	if (strcmp(target, "/status") == 0) {
		int wait_s = parse_wait(query);
		bool finished;

		if (!get) {
			respond_text(c, 405, "GET /status\n", get_only);
			return;
		}
		if (wait_s < 0) {
			respond_text(c, 400, "wait= wants a number of seconds\n", NULL);
			return;
		}
		pthread_mutex_lock(&rs->lock);
		finished = rs->finished;
		pthread_mutex_unlock(&rs->lock);
		if (finished || wait_s == 0) {
			respond_status(rs, c);
		} else {
			c->state = C_WAIT;
			c->deadline_ms = mlp_mono_ms() + (int64_t)wait_s * 1000;
		}
	} else if (strncmp(target, "/files/", 7) == 0) {
		if (!get)
			respond_text(c, 405, "GET /files/NAME\n", get_only);
		else
			respond_file(rs, c, target + 7);
	} else if (strcmp(target, "/done") == 0) {
		bool finished;

		pthread_mutex_lock(&rs->lock);
		finished = rs->finished;
		pthread_mutex_unlock(&rs->lock);
		if (!post) {
			respond_text(c, 405, "POST /done\n", post_only);
		} else if (!finished) {
			respond_text(c, 409, "the ranks are still running\n", NULL);
		} else {
			respond_text(c, 200, "bye\n", NULL);
			c->bye = true;
		}
	} else {
		respond_text(c, 404, "not found (GET /status, GET /files/NAME, POST /done)\n",
		             NULL);
	}
}

/* A header's value when the line is "name: value" (any case), else NULL. */
static const char *header_value(const char *line, const char *name)
{
	size_t n = strlen(name);

	if (strncasecmp(line, name, n) != 0 || line[n] != ':')
		return NULL;
	line += n + 1;
	while (*line == ' ' || *line == '\t')
		line++;
	return line;
}

/* Parses c->req once complete: answers (or WAITs); leaves it in READ when
 * more bytes are needed. */
static void handle_request(struct pod_results *rs, struct conn *c)
{
	char head[POD_RESULTS_MAX_REQUEST + 1];
	char *end = strstr(c->req, "\r\n\r\n"), *line, *next, *method, *target, *version;
	size_t head_len;
	long long body = 0;

	if (end == NULL) {
		if (c->len >= POD_RESULTS_MAX_REQUEST)
			respond_text(c, 400, "request headers too large (8 KiB at most)\n", NULL);
		return;
	}
	/* Parsed in a copy: c->req stays whole while the body is awaited. */
	head_len = (size_t)(end - c->req);
	memcpy(head, c->req, head_len);
	head[head_len] = '\0';
	/* Request line: METHOD SP TARGET SP HTTP/1.x */
	method = head;
	next = strstr(head, "\r\n");
	if (next)
		*next = '\0';
	target = strchr(method, ' ');
	version = target ? strchr(target + 1, ' ') : NULL;
	if (target == NULL || version == NULL || strncmp(version + 1, "HTTP/1.", 7) != 0 ||
	    target[1] != '/') {
		respond_text(c, 400, "bad request line\n", NULL);
		return;
	}
	*target++ = '\0';
	*version = '\0';
	for (line = next ? next + 2 : NULL; line && *line; line = next ? next + 2 : NULL) {
		const char *v;

		next = strstr(line, "\r\n");
		if (next)
			*next = '\0';
		if ((v = header_value(line, "Content-Length")) != NULL &&
		    mlp_parse_int(&body, v, 0, POD_RESULTS_MAX_REQUEST) != 0) {
			respond_text(c, 400, "bad or too large Content-Length\n", NULL);
			return;
		}
		if (header_value(line, "Transfer-Encoding") != NULL) {
			respond_text(c, 400, "no Transfer-Encoding, please\n", NULL);
			return;
		}
	}
	/* The body (nothing here wants one) is read, so closing sends no RST. */
	if (head_len + 4 + (size_t)body > POD_RESULTS_MAX_REQUEST) {
		respond_text(c, 400, "request too large (8 KiB at most)\n", NULL);
		return;
	}
	if (head_len + 4 + (size_t)body > c->len)
		return; /* not all here yet */
	route(rs, c, method, target);
}

static void conn_close(struct pod_results *rs, size_t i)
{
	struct conn *c = rs->conns[i];

	if (c->bye) {
		/* Said (or tried to say) bye: the main thread may exit now. */
		ssize_t n = write(rs->done[1], "d", 1);

		(void)n;
	}
	if (c->file_fd >= 0)
		close(c->file_fd);
	close(c->fd);
	mlp_buf_free(&c->out);
	free(c);
	rs->conns[i] = rs->conns[--rs->nconns];
}

static void conn_read(struct pod_results *rs, size_t i)
{
	struct conn *c = rs->conns[i];

	for (;;) {
		ssize_t n;

		if (c->state == C_WAIT) {
			char scratch[256];

			/* Nothing more is expected: only notice a client gone. */
			n = recv(c->fd, scratch, sizeof(scratch), MSG_DONTWAIT);
			if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
				conn_close(rs, i);
			return;
		}
		n = recv(c->fd, c->req + c->len, POD_RESULTS_MAX_REQUEST - c->len, MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n <= 0) {
			conn_close(rs, i); /* gone before asking anything whole */
			return;
		}
		c->len += (size_t)n;
		c->req[c->len] = '\0';
		handle_request(rs, c);
		if (c->state != C_READ)
			return;
	}
}

/* Sends what it can; true when the connection is finished with. */
static bool conn_write(struct conn *c)
{
	while (c->out_off < c->out.len) {
		ssize_t n = send(c->fd, c->out.data + c->out_off, c->out.len - c->out_off,
		                 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return false;
		if (n <= 0)
			return true;
		c->out_off += (size_t)n;
		c->deadline_ms = mlp_mono_ms() + WRITE_IDLE_MS;
	}
	while (c->file_fd >= 0 && c->file_off < c->file_end) {
		off_t left = c->file_end - c->file_off;
		ssize_t n = sendfile(c->fd, c->file_fd, &c->file_off,
		                     (size_t)(left < SENDFILE_CHUNK ? left : SENDFILE_CHUNK));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return false;
		if (n <= 0)
			return true; /* the file shrank, or the client left: cut short */
		c->deadline_ms = mlp_mono_ms() + WRITE_IDLE_MS;
	}
	shutdown(c->fd, SHUT_WR);
	return true;
}

static void accept_all(struct pod_results *rs)
{
	while (rs->nconns < MAX_CONNS) {
		int fd = accept4(rs->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		struct conn *c;

		if (fd < 0)
			return;
		c = xcalloc(1, sizeof(*c));
		c->fd = fd;
		c->file_fd = -1;
		c->state = C_READ;
		c->deadline_ms = mlp_mono_ms() + POD_RESULTS_READ_TIMEOUT_MS;
		rs->conns[rs->nconns++] = c;
	}
}

/* Deadlines, and long polls the verdict has answered. */
static void tend(struct pod_results *rs, bool finished, int64_t now)
{
	for (size_t i = rs->nconns; i-- > 0;) {
		struct conn *c = rs->conns[i];

		if (c->state == C_WAIT && (finished || now >= c->deadline_ms))
			respond_status(rs, c); /* done, or still running when time is up */
		else if (now >= c->deadline_ms)
			conn_close(rs, i);
	}
}

static void *serve(void *arg)
{
	struct pod_results *rs = arg;
	struct pollfd pfd[2 + MAX_CONNS];
	struct conn *who[2 + MAX_CONNS];
	int64_t stop_by = 0;

	for (;;) {
		int64_t now = mlp_mono_ms(), next = -1;
		bool finished, stopping;
		nfds_t n = 0;

		pthread_mutex_lock(&rs->lock);
		finished = rs->finished;
		stopping = rs->stopping;
		pthread_mutex_unlock(&rs->lock);
		if (stopping && stop_by == 0)
			stop_by = now + STOP_GRACE_MS;
		tend(rs, finished, now);
		if (stopping && (rs->nconns == 0 || now >= stop_by))
			break;
		pfd[n] = (struct pollfd){.fd = rs->wake[0], .events = POLLIN};
		who[n++] = NULL;
		if (!stopping && rs->nconns < MAX_CONNS) {
			pfd[n] = (struct pollfd){.fd = rs->listen_fd, .events = POLLIN};
			who[n++] = NULL;
		}
		for (size_t i = 0; i < rs->nconns; i++) {
			struct conn *c = rs->conns[i];

			pfd[n] = (struct pollfd){.fd = c->fd,
			                         .events = c->state == C_WRITE ? POLLOUT : POLLIN};
			who[n++] = c;
			if (next < 0 || c->deadline_ms < next)
				next = c->deadline_ms;
		}
		if (stop_by && (next < 0 || stop_by < next))
			next = stop_by;
		if (poll(pfd, n, next < 0 ? -1 : next <= now ? 0 : (int)(next - now)) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pfd[0].revents & POLLIN) {
			char buf[64];

			while (read(rs->wake[0], buf, sizeof(buf)) > 0)
				;
		}
		for (nfds_t k = 1; k < n; k++) {
			size_t i;

			if (pfd[k].revents == 0)
				continue;
			if (who[k] == NULL) {
				accept_all(rs);
				continue;
			}
			for (i = 0; i < rs->nconns && rs->conns[i] != who[k]; i++)
				;
			if (i == rs->nconns)
				continue; /* closed meanwhile */
			if (who[k]->state != C_WRITE)
				conn_read(rs, i);
			/* A request just answered is written at once. */
			if (i < rs->nconns && rs->conns[i] == who[k] && who[k]->state == C_WRITE &&
			    conn_write(who[k]))
				conn_close(rs, i);
		}
	}
	while (rs->nconns > 0)
		conn_close(rs, rs->nconns - 1);
	return NULL;
}

int pod_results_open(struct pod_results **out, int port, const struct pod_result *files,
                     size_t nfiles)
{
	struct pod_results *rs = xcalloc(1, sizeof(*rs));
	struct sockaddr_in sa = {.sin_family = AF_INET,
	                         .sin_port = htons((uint16_t)port),
	                         .sin_addr = {htonl(INADDR_ANY)}};
	int one = 1, err;

	*out = NULL;
	rs->files = files;
	rs->nfiles = nfiles;
	rs->wake[0] = rs->wake[1] = rs->done[0] = rs->done[1] = -1;
	rs->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (rs->listen_fd < 0) {
		mlp_error_set_errno(errno, "socket");
		goto fail;
	}
	setsockopt(rs->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(rs->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
	    listen(rs->listen_fd, 16) != 0) {
		mlp_error_set_errno(errno, "cannot listen on port %d for the results server", port);
		goto fail;
	}
	if (pipe2(rs->wake, O_CLOEXEC | O_NONBLOCK) != 0 ||
	    pipe2(rs->done, O_CLOEXEC | O_NONBLOCK) != 0) {
		mlp_error_set_errno(errno, "pipe");
		goto fail;
	}
	pthread_mutex_init(&rs->lock, NULL);
	if ((err = pthread_create(&rs->thread, NULL, serve, rs)) != 0) {
		mlp_error_set_errno(err, "cannot start the results server's thread");
		pthread_mutex_destroy(&rs->lock);
		goto fail;
	}
	*out = rs;
	return 0;
fail:
	for (int i = 0; i < 2; i++) {
		if (rs->wake[i] >= 0)
			close(rs->wake[i]);
		if (rs->done[i] >= 0)
			close(rs->done[i]);
	}
	if (rs->listen_fd >= 0)
		close(rs->listen_fd);
	free(rs);
	return MLP_EIO;
}

static void wake(struct pod_results *rs)
{
	ssize_t n = write(rs->wake[1], "w", 1);

	(void)n; /* a full pipe already means "look again" */
}

void pod_results_finish(struct pod_results *rs, int exit_code, const char *reason)
{
	struct served_file *served = xcalloc(rs->nfiles ? rs->nfiles : 1, sizeof(*served));

	/* Outside the lock: hashing a large model takes seconds, and /status
	 * keeps answering "running" meanwhile. */
	for (size_t i = 0; i < rs->nfiles; i++) {
		struct stat st;

		if (stat(rs->files[i].path, &st) != 0 || !S_ISREG(st.st_mode))
			continue;
		if (mlp_sha256_file_hex(served[i].sha256, rs->files[i].path) != 0)
			continue;
		served[i].present = true;
		served[i].size = (long long)st.st_size;
	}
	pthread_mutex_lock(&rs->lock);
	rs->served = served;
	rs->exit_code = exit_code;
	rs->reason = xstrdup(reason ? reason : "");
	rs->finished = true;
	pthread_mutex_unlock(&rs->lock);
	wake(rs);
}

int pod_results_done_fd(const struct pod_results *rs)
{
	return rs->done[0];
}

void pod_results_close(struct pod_results *rs)
{
	if (rs == NULL)
		return;
	pthread_mutex_lock(&rs->lock);
	rs->stopping = true;
	pthread_mutex_unlock(&rs->lock);
	wake(rs);
	pthread_join(rs->thread, NULL);
	pthread_mutex_destroy(&rs->lock);
	close(rs->listen_fd);
	for (int i = 0; i < 2; i++) {
		close(rs->wake[i]);
		close(rs->done[i]);
	}
	free(rs->served);
	free(rs->reason);
	free(rs);
}
