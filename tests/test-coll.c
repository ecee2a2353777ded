/*
 * test-coll.c - the collectives with real processes: W ranks are forked,
 * rendezvous on a loopback port, and run allreduce, broadcast and barrier
 * through the shared-memory and the TCP ring backends.  Also: a rank that
 * dies makes its peers fail within seconds instead of hanging, and a rank
 * that never comes makes the rendezvous time out.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "coll.h"
#include "base/error.h"
#include "base/util.h"

/* What each rank reports to the parent. */
struct report {
	int rc;
	double max_err;
	uint64_t digest; /* of the result, to prove all ranks agree bitwise */
	int64_t elapsed_ms;
	char msg[200];
};

static int free_port(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr = {htonl(INADDR_LOOPBACK)}};
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	port = ntohs(sa.sin_port);
	close(fd);
	return port;
}

static uint64_t digest(const void *p, size_t len)
{
	const unsigned char *b = p;
	uint64_t h = 1469598103934665603ull;

	for (size_t i = 0; i < len; i++)
		h = (h ^ b[i]) * 1099511628211ull;
	return h;
}

enum job { JOB_ALLREDUCE, JOB_BROADCAST, JOB_DIE_EARLY };

struct plan {
	const char *backend;
	int world;
	size_t n;
	enum job job;
	int port;
	int timeout_ms;
	int absent_rank; /* a rank that never starts, or -1 */
};

static void rank_main(const struct plan *pl, int rank, int fd)
{
	struct report rep = {0};
	struct mlp_coll_opts o = {
	        .rank = rank,
	        .world_size = pl->world,
	        .local_rank = rank,
	        .local_world_size = pl->world,
	        .master_addr = "127.0.0.1",
	        .master_port = pl->port,
	        .timeout_ms = pl->timeout_ms,
	        .backend = pl->backend,
	};
	struct mlp_coll *c = NULL;
	int64_t t0 = mlp_mono_ms();

	rep.rc = mlp_coll_open(&c, &o);
	if (rep.rc == 0 && pl->job == JOB_DIE_EARLY && rank == pl->world - 1)
		_exit(3); /* dies after joining, before the first collective */
	if (rep.rc == 0 && pl->job != JOB_BROADCAST) {
		float *f = xmalloc(pl->n * sizeof(*f));
		double d[3] = {rank, 1, rank * 0.5};

		for (size_t i = 0; i < pl->n; i++)
			f[i] = (float)rank + (float)(i % 1000) * 0.25f;
		rep.rc = mlp_coll_allreduce_avg_f32(c, f, pl->n);
		for (size_t i = 0; rep.rc == 0 && i < pl->n; i++) {
			double want = (pl->world - 1) / 2.0 + (double)(i % 1000) * 0.25;
			double err = fabs(f[i] - want);

			if (err > rep.max_err)
				rep.max_err = err;
		}
		rep.digest = digest(f, pl->n * sizeof(*f));
		if (rep.rc == 0)
			rep.rc = mlp_coll_allreduce_sum_f64(c, d, 3);
		if (rep.rc == 0) {
			double w = pl->world;

			if (d[0] != w * (w - 1) / 2 || d[1] != w || d[2] != w * (w - 1) / 4)
				rep.max_err = 1e9;
			rep.rc = mlp_coll_barrier(c);
		}
		free(f);
	} else if (rep.rc == 0) {
		size_t bytes = pl->n;
		unsigned char *b = xcalloc(bytes, 1);

		if (rank == 1)
			for (size_t i = 0; i < bytes; i++)
				b[i] = (unsigned char)(i * 7 + 3);
		rep.rc = mlp_coll_broadcast(c, b, bytes, 1);
		for (size_t i = 0; i < bytes; i++)
			if (b[i] != (unsigned char)(i * 7 + 3))
				rep.max_err = 1;
		rep.digest = digest(b, bytes);
		free(b);
	}
	if (rep.rc != 0)
		snprintf(rep.msg, sizeof(rep.msg), "%s", mlp_error_last());
	rep.elapsed_ms = mlp_mono_ms() - t0;
	mlp_coll_close(c);
	if (write(fd, &rep, sizeof(rep)) != (ssize_t)sizeof(rep))
		_exit(4);
	_exit(0);
}

/* Runs the plan; fills reps[rank] (rc -100 for ranks that sent nothing). */
static void run_plan(struct plan *pl, struct report *reps)
{
	pid_t pids[16];
	int fds[16][2];

	pl->port = free_port();
	for (int r = 0; r < pl->world; r++) {
		reps[r].rc = -100;
		if (r == pl->absent_rank) {
			pids[r] = -1;
			continue;
		}
		assert_int_equal(pipe(fds[r]), 0);
		pids[r] = fork();
		assert_true(pids[r] >= 0);
		if (pids[r] == 0) {
			close(fds[r][0]);
			rank_main(pl, r, fds[r][1]);
		}
		close(fds[r][1]);
	}
	for (int r = 0; r < pl->world; r++) {
		if (pids[r] < 0)
			continue;
		if (read(fds[r][0], &reps[r], sizeof(reps[r])) != (ssize_t)sizeof(reps[r]))
			reps[r].rc = -100;
		close(fds[r][0]);
		waitpid(pids[r], NULL, 0);
	}
}

static void check_allreduce(const char *backend, int world, size_t n)
{
	struct plan pl = {backend, world, n, JOB_ALLREDUCE, 0, 20000, -1};
	struct report reps[16];

	run_plan(&pl, reps);
	for (int r = 0; r < world; r++) {
		if (reps[r].rc != 0)
			fail_msg("%s world %d n %zu: rank %d failed: %s", backend, world, n, r,
			         reps[r].msg);
		assert_true(reps[r].max_err < 1e-4);
		assert_true(reps[r].digest == reps[0].digest);
	}
}

static void test_coll__shm_allreduce_is_the_mean_everywhere(void **state)
{
	check_allreduce("shm", 2, 1);
	check_allreduce("shm", 2, 1000);
	check_allreduce("shm", 3, 7);
	/* Larger than one slot (2 MiB): several chunks, both slot sets. */
	check_allreduce("shm", 2, 3 * 1024 * 1024 + 5);
	check_allreduce("shm", 4, 1500000);
}

static void test_coll__tcp_ring_allreduce_is_the_mean_everywhere(void **state)
{
	check_allreduce("tcp", 2, 1);
	check_allreduce("tcp", 3, 1001);
	check_allreduce("tcp", 4, 2 * 1024 * 1024 + 3);
}

static void test_coll__broadcast_from_a_non_zero_root(void **state)
{
	static const char *const backends[] = {"shm", "tcp"};

	for (size_t b = 0; b < 2; b++) {
		struct plan pl = {backends[b], 3, 5 * 1024 * 1024 + 11, JOB_BROADCAST, 0,
		                  20000,       -1};
		struct report reps[16];

		run_plan(&pl, reps);
		for (int r = 0; r < 3; r++) {
			if (reps[r].rc != 0)
				fail_msg("%s rank %d: %s", backends[b], r, reps[r].msg);
			assert_true(reps[r].max_err == 0);
		}
	}
}

static void test_coll__a_dead_peer_fails_fast(void **state)
{
	static const char *const backends[] = {"shm", "tcp"};

	for (size_t b = 0; b < 2; b++) {
		/* A 30 s timeout: failing in under 5 s proves death is noticed. */
		struct plan pl = {backends[b], 2, 1000, JOB_DIE_EARLY, 0, 30000, -1};
		struct report reps[16];

		run_plan(&pl, reps);
		assert_int_not_equal(reps[0].rc, 0);
		assert_true(reps[0].elapsed_ms < 5000);
		if (strstr(reps[0].msg, "rank 1") == NULL)
			fail_msg("%s: message does not name the dead rank: %s", backends[b],
			         reps[0].msg);
	}
}

static void test_coll__missing_rank_times_out_the_rendezvous(void **state)
{
	struct plan pl = {"shm", 3, 10, JOB_ALLREDUCE, 0, 700, 2};
	struct report reps[16];

	run_plan(&pl, reps);
	assert_int_equal(reps[0].rc, MLP_ETIMEOUT);
	assert_non_null(strstr(reps[0].msg, "2 of 3 ranks joined"));
	assert_int_not_equal(reps[1].rc, 0);
}

static void test_coll__single_rank_needs_no_peers(void **state)
{
	struct mlp_coll_opts o = {.rank = 0, .world_size = 1};
	struct mlp_coll *c;
	float f[3] = {1, 2, 3};

	assert_int_equal(mlp_coll_open(&c, &o), 0);
	assert_string_equal(mlp_coll_backend(c), "local");
	assert_int_equal(mlp_coll_allreduce_avg_f32(c, f, 3), 0);
	assert_true(f[2] == 3);
	mlp_coll_close(c);
}

static void test_coll__options_come_from_the_torchrun_environment(void **state)
{
	struct mlp_coll_opts o;

	setenv("WORLD_SIZE", "4", 1);
	setenv("RANK", "3", 1);
	setenv("LOCAL_RANK", "1", 1);
	setenv("LOCAL_WORLD_SIZE", "2", 1);
	setenv("GROUP_RANK", "1", 1);
	setenv("MASTER_ADDR", "10.1.2.3", 1);
	setenv("MASTER_PORT", "29500", 1);
	assert_int_equal(mlp_coll_opts_from_env(&o), 0);
	assert_int_equal(o.world_size, 4);
	assert_int_equal(o.rank, 3);
	assert_int_equal(o.local_rank, 1);
	assert_int_equal(o.group_rank, 1);
	assert_string_equal(o.master_addr, "10.1.2.3");
	assert_int_equal(o.master_port, 29500);
	setenv("RANK", "4", 1);
	assert_int_equal(mlp_coll_opts_from_env(&o), MLP_EINVAL);
	assert_non_null(strstr(mlp_error_last(), "RANK='4'"));
	unsetenv("MASTER_PORT");
	setenv("RANK", "0", 1);
	assert_int_equal(mlp_coll_opts_from_env(&o), MLP_EINVAL);
	assert_non_null(strstr(mlp_error_last(), "MASTER_PORT is not set"));
	unsetenv("WORLD_SIZE");
	unsetenv("RANK");
	unsetenv("LOCAL_RANK");
	unsetenv("LOCAL_WORLD_SIZE");
	unsetenv("GROUP_RANK");
	unsetenv("MASTER_ADDR");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_coll__single_rank_needs_no_peers),
	        cmocka_unit_test(test_coll__options_come_from_the_torchrun_environment),
	        cmocka_unit_test(test_coll__shm_allreduce_is_the_mean_everywhere),
	        cmocka_unit_test(test_coll__tcp_ring_allreduce_is_the_mean_everywhere),
	        cmocka_unit_test(test_coll__broadcast_from_a_non_zero_root),
	        cmocka_unit_test(test_coll__a_dead_peer_fails_fast),
	        cmocka_unit_test(test_coll__missing_rank_times_out_the_rendezvous),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
