/*
 * bench/allreduce.c - shared-memory allreduce bandwidth against memcpy.
 *
 * Forks W ranks (default 2) that rendezvous on loopback and all-reduce
 * (average) a float buffer of 4 KiB, 1 MiB and 64 MiB, many times; rank 0
 * reports the median time per operation as bandwidth (buffer bytes /
 * time, nccl-tests' algbw).  The peer is memcpy of a buffer of the same
 * size in the same process, measured the same way.  Goal: >= 50% of
 * memcpy's bandwidth at 64 MiB.
 *
 * usage: allreduce [WORLD] [BACKEND]      (BACKEND shm or tcp)
 */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "coll.h"
#include "base/error.h"
#include "base/util.h"

static const size_t sizes[] = {4096, 1 << 20, 64 << 20};

static int iterations(size_t bytes)
{
	return bytes <= 4096 ? 20000 : bytes <= (1 << 20) ? 500 : 15;
}

static int cmp(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

static double median_us(int64_t *t, int n)
{
	qsort(t, (size_t)n, sizeof(*t), cmp);
	return (double)t[n / 2] / 1000.0;
}

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void rank_main(int rank, int world, int port, const char *backend)
{
	struct mlp_coll_opts o = {
	        .rank = rank,
	        .world_size = world,
	        .local_rank = rank,
	        .local_world_size = world,
	        .master_addr = "127.0.0.1",
	        .master_port = port,
	        .timeout_ms = 60000,
	        .backend = backend,
	};
	struct mlp_coll *c;

	if (mlp_coll_open(&c, &o) != 0) {
		fprintf(stderr, "rank %d: %s\n", rank, mlp_error_last());
		_exit(1);
	}
	if (rank == 0)
		printf("allreduce (%s, %d ranks) vs memcpy, median of many runs\n"
		       "%10s %12s %12s %12s %12s %7s\n",
		       mlp_coll_backend(c), world, "size", "allreduce", "GB/s", "memcpy", "GB/s",
		       "ratio");
	for (size_t s = 0; s < MLP_ARRAY_SIZE(sizes); s++) {
		size_t n = sizes[s] / sizeof(float);
		int iters = iterations(sizes[s]);
		float *buf = xmalloc(sizes[s]), *dst = xmalloc(sizes[s]);
		int64_t *t = xcalloc((size_t)iters, sizeof(*t));
		double ar, mc;

		for (size_t i = 0; i < n; i++)
			buf[i] = (float)(i % 97);
		memcpy(dst, buf, sizes[s]);
		mlp_coll_barrier(c);
		for (int i = 0; i < iters; i++) {
			int64_t t0 = now_ns();

			if (mlp_coll_allreduce_avg_f32(c, buf, n) != 0) {
				fprintf(stderr, "rank %d: %s\n", rank, mlp_error_last());
				_exit(1);
			}
			t[i] = now_ns() - t0;
		}
		ar = median_us(t, iters);
		mlp_coll_barrier(c);
		/* memcpy alone, one rank at a time, on a warm buffer. */
		for (int i = 0; i < iters; i++) {
			int64_t t0 = now_ns();

			memcpy(dst, buf, sizes[s]);
			__asm__ __volatile__("" : : "r"(dst) : "memory");
			t[i] = now_ns() - t0;
		}
		mc = median_us(t, iters);
		if (rank == 0)
			printf("%10zu %10.1fus %12.2f %10.1fus %12.2f %6.0f%%\n", sizes[s], ar,
			       (double)sizes[s] / ar / 1000.0, mc, (double)sizes[s] / mc / 1000.0,
			       100.0 * mc / ar);
		mlp_coll_barrier(c);
		free(buf);
		free(dst);
		free(t);
	}
	mlp_coll_close(c);
	fflush(stdout);
	_exit(0);
}

int main(int argc, char **argv)
{
	int world = argc > 1 ? (int)strtol(argv[1], NULL, 10) : 2;
	const char *backend = argc > 2 ? argv[2] : "shm";
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr = {htonl(INADDR_LOOPBACK)}};
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port, status = 0;
	pid_t pids[64];

	if (world < 2 || world > 64) {
		fprintf(stderr, "usage: allreduce [WORLD 2-64] [shm|tcp]\n");
		return 2;
	}
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &len) != 0)
		return 1;
	port = ntohs(sa.sin_port);
	close(fd);
	fflush(stdout);
	for (int r = 0; r < world; r++) {
		pids[r] = fork();
		if (pids[r] == 0)
			rank_main(r, world, port, backend);
	}
	for (int r = 0; r < world; r++) {
		int st;

		waitpid(pids[r], &st, 0);
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			status = 1;
	}
	return status;
}
