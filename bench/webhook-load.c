/*
 * bench/webhook-load.c - a load generator for `mlpipe serve`'s webhooks, on
 * loopback only.
 *
 *   bench/webhook-load PORT SECRET COUNT CONCURRENCY RATE [MAX_SECONDS]
 *
 * Posts COUNT signed GitHub push deliveries (each a distinct delivery id
 * and commit) to 127.0.0.1:PORT/hooks/github from CONCURRENCY threads,
 * paced to RATE deliveries per second in total (0: as fast as answers
 * come), stopping after MAX_SECONDS (default 60) whatever is left.  Each
 * delivery is its own connection, as forges send them.  Prints one line:
 * sent, accepted (202), other answers, throughput, and p50/p99/max of the
 * time from connect to the complete answer.
 *
 *   bench/webhook-load --push PORT SECRET COMMIT DELIVERY
 *
 * Posts one push of COMMIT and prints the run it queued and the wall
 * clock (ms) just before connecting: the start of webhook -> first stage.
 */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/crypto.h"
#include "base/util.h"

static int port;
static const char *secret;
static long count, concurrency;
static double rate;
static int64_t start_us, stop_us;
static atomic_long next_index, accepted, other;
static int64_t *latency_us;

static int64_t now_us(void)
{
	return mlp_mono_us();
}

static void sleep_until(int64_t t)
{
	int64_t d = t - now_us();

	if (d > 0) {
		struct timespec ts = {d / 1000000, (d % 1000000) * 1000};

		nanosleep(&ts, NULL);
	}
}

/* Posts body as delivery id; the answer's code (0: none), its text in resp. */
static int post(const char *body, const char *delivery, char *resp, size_t cap)
{
	char req[2048], sig[MLP_SHA256_HEX_LEN + 1];
	struct sockaddr_in sa = {0};
	int fd, n, one = 1, code = 0;
	size_t got = 0, len = strlen(body);

	mlp_hmac_sha256_hex(sig, secret, strlen(secret), body, len);
	n = snprintf(req, sizeof(req),
	             "POST /hooks/github HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
	             "X-GitHub-Event: push\r\nX-GitHub-Delivery: %s\r\n"
	             "X-Hub-Signature-256: sha256=%s\r\nContent-Type: application/json\r\n"
	             "Content-Length: %zu\r\n\r\n%s",
	             delivery, sig, len, body);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
	    write(fd, req, (size_t)n) != n) {
		close(fd);
		return 0;
	}
	while (got < cap - 1 && (n = (int)read(fd, resp + got, cap - 1 - got)) > 0)
		got += (size_t)n;
	resp[got] = '\0';
	close(fd);
	if (sscanf(resp, "HTTP/1.%*d %d", &code) != 1)
		code = 0;
	return code;
}

static int post_one(long i)
{
	char body[512], delivery[64], resp[1024];

	snprintf(body, sizeof(body),
	         "{\"ref\":\"refs/heads/main\",\"before\":\"%040d\",\"after\":\"%024llx%016lx\","
	         "\"repository\":{\"clone_url\":\"file:///bench\"}}",
	         0, (unsigned long long)start_us, (unsigned long)i + 1);
	snprintf(delivery, sizeof(delivery), "bench-%ld-%lld", i, (long long)start_us);
	return post(body, delivery, resp, sizeof(resp));
}

static void *worker(void *arg)
{
	(void)arg;
	for (;;) {
		long i = atomic_fetch_add(&next_index, 1);
		int64_t t0;
		int code;

		if (i >= count || now_us() >= stop_us)
			break;
		if (rate > 0)
			sleep_until(start_us + (int64_t)((double)i * 1e6 / rate));
		t0 = now_us();
		code = post_one(i);
		latency_us[i] = now_us() - t0;
		if (code == 202)
			atomic_fetch_add(&accepted, 1);
		else
			atomic_fetch_add(&other, 1);
	}
	return NULL;
}

static int cmp64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

/* --push PORT SECRET COMMIT DELIVERY: one push of COMMIT to main; prints
 * "RUN WALL_MS", the run it queued and the wall clock (ms) just before
 * connecting, which a run's records can be compared with. */
static int push(char **argv)
{
	char body[512], resp[1024];
	long long v;
	int64_t t0;
	const char *run;

	if (mlp_parse_int(&v, argv[2], 1, 65535) != 0)
		return 2;
	port = (int)v;
	secret = argv[3];
	snprintf(body, sizeof(body),
	         "{\"ref\":\"refs/heads/main\",\"after\":\"%s\","
	         "\"repository\":{\"clone_url\":\"x\"}}",
	         argv[4]);
	t0 = mlp_wall_ms();
	if (post(body, argv[5], resp, sizeof(resp)) != 202 ||
	    (run = strstr(resp, "\"run\":")) == NULL) {
		fprintf(stderr, "webhook-load: not accepted: %s\n", resp);
		return 1;
	}
	printf("%lld %lld\n", strtoll(run + 6, NULL, 10), (long long)t0);
	return 0;
}

int main(int argc, char **argv)
{
	long long v;
	double max_s = 60, elapsed;
	pthread_t *th;
	long done = 0;

	if (argc == 6 && strcmp(argv[1], "--push") == 0)
		return push(argv);
	if (argc < 6 || mlp_parse_int(&v, argv[1], 1, 65535) != 0) {
		fprintf(stderr,
		        "usage: webhook-load PORT SECRET COUNT CONCURRENCY RATE [MAX_SECONDS]\n"
		        "       webhook-load --push PORT SECRET COMMIT DELIVERY\n");
		return 2;
	}
	port = (int)v;
	secret = argv[2];
	if (mlp_parse_int(&v, argv[3], 1, 1000000) != 0)
		return 2;
	count = (long)v;
	if (mlp_parse_int(&v, argv[4], 1, 1024) != 0)
		return 2;
	concurrency = (long)v;
	if (mlp_parse_double(&rate, argv[5]) != 0 || rate < 0)
		return 2;
	if (argc > 6 && (mlp_parse_double(&max_s, argv[6]) != 0 || max_s <= 0))
		return 2;
	latency_us = xcalloc((size_t)count, sizeof(*latency_us));
	th = xcalloc((size_t)concurrency, sizeof(*th));
	start_us = now_us();
	stop_us = start_us + (int64_t)(max_s * 1e6);
	for (long i = 0; i < concurrency; i++)
		pthread_create(&th[i], NULL, worker, NULL);
	for (long i = 0; i < concurrency; i++)
		pthread_join(th[i], NULL);
	elapsed = (double)(now_us() - start_us) / 1e6;
	done = atomic_load(&accepted) + atomic_load(&other);
	qsort(latency_us, (size_t)done, sizeof(*latency_us), cmp64);
	printf("concurrency %3ld  rate %5.0f/s  sent %5ld  accepted %5ld  other %3ld  "
	       "throughput %7.1f/s  p50 %6.2f ms  p99 %6.2f ms  max %6.2f ms\n",
	       concurrency, rate, done, atomic_load(&accepted), atomic_load(&other),
	       (double)done / elapsed, done ? (double)latency_us[done / 2] / 1000 : 0,
	       done ? (double)latency_us[(size_t)((double)done * 0.99)] / 1000 : 0,
	       done ? (double)latency_us[done - 1] / 1000 : 0);
	free(latency_us);
	free(th);
	return 0;
}
