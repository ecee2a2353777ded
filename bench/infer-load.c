/*
 * bench/infer-load.c - a closed-loop load generator for inference servers
 * that speak the Open Inference Protocol's REST API, on loopback only.
 *
 *   bench/infer-load PORT PATH BODY_FILE CONCURRENCY SECONDS
 *
 * CONCURRENCY client threads each hold one keep-alive connection to
 * 127.0.0.1:PORT and POST the JSON in BODY_FILE to PATH again and again
 * for SECONDS (a new connection when the server closes one).  Prints one
 * line: requests answered 200, other answers, throughput, and p50/p99/max
 * of the time from the first byte sent to the last byte of the answer.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/util.h"

#define MAX_SAMPLES 4000000

static int port;
static char *request;
static size_t request_len;
static int64_t stop_us;
static atomic_long ok, other, nsamples;
static int64_t *latency_us;

static int dial(void)
{
	struct sockaddr_in sa = {0};
	int fd, one = 1;

	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static int send_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Reads one answer: the status code, and whether the server keeps the
 * connection.  -1 on a closed or broken connection. */
static int read_answer(int fd, char *buf, size_t size, int *keep)
{
	size_t have = 0, head, need;
	char *end, *cl, *conn;
	long body;
	int code;

	for (;;) {
		ssize_t r = recv(fd, buf + have, size - 1 - have, 0);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		have += (size_t)r;
		buf[have] = '\0';
		if ((end = strstr(buf, "\r\n\r\n")) != NULL)
			break;
		if (have == size - 1)
			return -1;
	}
	head = (size_t)(end - buf) + 4;
	if (sscanf(buf, "HTTP/1.%*d %d", &code) != 1)
		return -1;
	*end = '\0';
	cl = strcasestr(buf, "\r\ncontent-length:");
	body = cl ? strtol(cl + 17, NULL, 10) : 0;
	conn = strcasestr(buf, "\r\nconnection:");
	*keep = strncmp(buf, "HTTP/1.1", 8) == 0 && !(conn && strcasestr(conn, "close"));
	if (!cl)
		*keep = 0;
	need = head + (size_t)body;
	while (have < need) {
		ssize_t r = recv(fd, buf, size - 1 < need - have ? size - 1 : need - have, 0);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return cl ? -1 : code;
		have += (size_t)r;
	}
	return code;
}

static void *client(void *arg)
{
	char *buf = malloc(1 << 20);
	int fd = -1, keep = 0;

	(void)arg;
	while (buf && mlp_mono_us() < stop_us) {
		int64_t t0;
		int code;

		if (fd < 0 && (fd = dial()) < 0) {
			atomic_fetch_add(&other, 1);
			continue;
		}
		t0 = mlp_mono_us();
		code = send_all(fd, request, request_len) == 0
		               ? read_answer(fd, buf, 1 << 20, &keep)
		               : -1;
		if (code == 200) {
			long i = atomic_fetch_add(&nsamples, 1);

			atomic_fetch_add(&ok, 1);
			if (i < MAX_SAMPLES)
				latency_us[i] = mlp_mono_us() - t0;
		} else {
			atomic_fetch_add(&other, 1);
		}
		if (code < 0 || !keep) {
			close(fd);
			fd = -1;
		}
	}
	if (fd >= 0)
		close(fd);
	free(buf);
	return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

static char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *p = NULL;
	long n;

	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
	    (p = malloc((size_t)n + 1)) != NULL && fread(p, 1, (size_t)n, f) == (size_t)n) {
		*len = (size_t)n;
	} else {
		free(p);
		p = NULL;
	}
	fclose(f);
	return p;
}

int main(int argc, char **argv)
{
	pthread_t *threads;
	size_t body_len, head_len;
	char *body, head[512];
	long concurrency, seconds, n;
	int64_t t0;
	double elapsed;

	if (argc != 6) {
		fprintf(stderr, "usage: infer-load PORT PATH BODY_FILE CONCURRENCY SECONDS\n");
		return 2;
	}
	port = atoi(argv[1]);
	concurrency = atol(argv[4]);
	seconds = atol(argv[5]);
	if (port <= 0 || concurrency <= 0 || concurrency > 4096 || seconds <= 0 || seconds > 600) {
		fprintf(stderr, "infer-load: bad PORT, CONCURRENCY or SECONDS\n");
		return 2;
	}
	if (!(body = read_file(argv[3], &body_len))) {
		fprintf(stderr, "infer-load: cannot read %s\n", argv[3]);
		return 2;
	}
	head_len = (size_t)snprintf(head, sizeof(head),
	                            "POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
	                            "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
	                            argv[2], port, body_len);
	request_len = head_len + body_len;
	request = malloc(request_len);
	latency_us = calloc(MAX_SAMPLES, sizeof(*latency_us));
	threads = calloc((size_t)concurrency, sizeof(*threads));
	if (!request || !latency_us || !threads)
		return 1;
	memcpy(request, head, head_len);
	memcpy(request + head_len, body, body_len);
	t0 = mlp_mono_us();
	stop_us = t0 + seconds * 1000000;
	for (long i = 0; i < concurrency; i++)
		pthread_create(&threads[i], NULL, client, NULL);
	for (long i = 0; i < concurrency; i++)
		pthread_join(threads[i], NULL);
	elapsed = (double)(mlp_mono_us() - t0) / 1e6;
	n = atomic_load(&nsamples);
	if (n > MAX_SAMPLES)
		n = MAX_SAMPLES;
	qsort(latency_us, (size_t)n, sizeof(*latency_us), cmp_i64);
	printf("clients %ld ok %ld other %ld rps %.0f p50_us %lld p99_us %lld max_us %lld\n",
	       concurrency, atomic_load(&ok), atomic_load(&other),
	       (double)atomic_load(&ok) / elapsed, n ? (long long)latency_us[n / 2] : 0LL,
	       n ? (long long)latency_us[(long)((double)n * 0.99)] : 0LL,
	       n ? (long long)latency_us[n - 1] : 0LL);
	free(threads);
	free(latency_us);
	free(request);
	free(body);
	return atomic_load(&ok) > 0 ? 0 : 1;
}
