/*
 * test-rdzv.c - the rendezvous on Kubernetes terms: rank 0 listens on every
 * address of its host (so a peer reaching it by any of them, or by a name
 * of the host that rank 0 itself cannot resolve yet, gets in), and the
 * other ranks retry a MASTER_ADDR that does not resolve until the
 * rendezvous deadline.
 *
 * Real sockets, real processes (rank 0 is forked).  The one thing faked is
 * a DNS record that appears late: getaddrinfo() is wrapped at link time
 * (-Wl,--wrap=getaddrinfo), and the name "late.test" resolves to 127.0.0.1
 * only from LATE_MS after its first lookup in a process; every other name
 * goes to the real resolver.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rdzv.h"
#include "base/error.h"
#include "base/util.h"

#define LATE_MS 700

int __real_getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                       struct addrinfo **res);
int __wrap_getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                       struct addrinfo **res);

static int lookups;           /* of names other than dotted quads, this process */
static int64_t late_first_ms; /* the first lookup of "late.test" */

int __wrap_getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                       struct addrinfo **res)
{
	lookups++;
	if (node && strcmp(node, "late.test") == 0) {
		if (late_first_ms == 0)
			late_first_ms = mlp_mono_ms();
		if (mlp_mono_ms() - late_first_ms < LATE_MS)
			return EAI_NONAME;
		return __real_getaddrinfo("127.0.0.1", service, hints, res);
	}
	return __real_getaddrinfo(node, service, hints, res);
}

static int free_port(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr = {htonl(INADDR_ANY)}};
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	port = ntohs(sa.sin_port);
	close(fd);
	return port;
}

/* Forks rank 0 of a group of 2 hosting with root_addr as its MASTER_ADDR;
 * returns its pid.  It exits 0 when the rendezvous succeeded. */
static pid_t fork_rank0(const char *root_addr, int port)
{
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		struct rdzv_table t;
		int rc = rdzv_join(&t, root_addr, port, 0, 2, 0, 0, NULL, 10000);

		if (rc != 0)
			fprintf(stderr, "rank 0: %s\n", mlp_error_last());
		else
			rdzv_table_free(&t);
		_exit(rc == 0 ? 0 : 1);
	}
	return pid;
}

static int wait_exit(pid_t pid)
{
	int st = 0;

	assert_int_equal(waitpid(pid, &st, 0), pid);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Rank 1 joins through join_addr while rank 0 was told root_addr. */
static void join_through(const char *root_addr, const char *join_addr)
{
	int port = free_port();
	pid_t root = fork_rank0(root_addr, port);
	struct rdzv_table t;
	int rc = rdzv_join(&t, join_addr, port, 1, 2, 1, 0, NULL, 10000);

	if (rc != 0)
		fail_msg("rank 1 through %s (rank 0 told %s): %s", join_addr, root_addr,
		         mlp_error_last());
	assert_int_equal(t.world, 2);
	assert_int_equal(t.peers[1].group_rank, 1);
	rdzv_table_free(&t);
	assert_int_equal(wait_exit(root), 0);
}

/* The first IPv4 address of an interface that is up and not loopback, or
 * NULL (a machine with none). */
static const char *non_loopback_address(char *buf, size_t size)
{
	struct ifaddrs *ifs, *i;
	const char *found = NULL;

	if (getifaddrs(&ifs) != 0)
		return NULL;
	for (i = ifs; i && !found; i = i->ifa_next) {
		if (i->ifa_addr == NULL || i->ifa_addr->sa_family != AF_INET ||
		    (i->ifa_flags & IFF_LOOPBACK) || !(i->ifa_flags & IFF_UP))
			continue;
		found = inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, buf,
		                  (socklen_t)size);
	}
	freeifaddrs(ifs);
	return found;
}

static void test_rdzv__rank0_listens_on_every_address(void **state)
{
	char buf[INET_ADDRSTRLEN];
	const char *mine = non_loopback_address(buf, sizeof(buf));

	/* Bound to MASTER_ADDR 127.0.0.1 alone, rank 0 would refuse these. */
	join_through("127.0.0.1", "127.0.0.2");
	if (mine)
		join_through("127.0.0.1", mine);
	else
		print_message("no non-loopback IPv4 address here: 127.0.0.2 stands for one\n");
}

static void test_rdzv__rank0_needs_no_lookup_of_its_own_name(void **state)
{
	/* On Kubernetes rank 0's own DNS name may not resolve yet: rank 0
	 * (forked) fails if it looks its MASTER_ADDR up. */
	join_through("nonexistent.invalid", "127.0.0.1");
}

static void test_rdzv__an_unresolvable_name_is_retried_until_the_deadline(void **state)
{
	struct rdzv_table t;
	int64_t t0 = mlp_mono_ms(), took;
	int rc;

	lookups = 0;
	rc = rdzv_join(&t, "nonexistent.invalid", free_port(), 1, 2, 1, 0, NULL, 1500);
	took = mlp_mono_ms() - t0;
	assert_int_equal(rc, MLP_ETIMEOUT);
	if (strstr(mlp_error_last(),
	           "rendezvous: MASTER_ADDR 'nonexistent.invalid' did not resolve within 1.5s (") ==
	    NULL)
		fail_msg("message: %s", mlp_error_last());
	/* Retried with a backoff (100, 200, 400, 800 ms), not failed at once,
	 * nor given up early. */
	assert_true(took >= 1400);
	assert_true(took < 10000);
	assert_true(lookups >= 4);
	assert_true(lookups <= 8);
}

static void test_rdzv__a_name_that_resolves_late_joins(void **state)
{
	int port = free_port();
	pid_t root = fork_rank0("late.test", port);
	struct rdzv_table t;
	int64_t t0 = mlp_mono_ms();
	int rc;

	late_first_ms = 0;
	lookups = 0;
	rc = rdzv_join(&t, "late.test", port, 1, 2, 1, 0, NULL, 10000);
	if (rc != 0)
		fail_msg("rank 1: %s", mlp_error_last());
	assert_true(mlp_mono_ms() - t0 >= LATE_MS);
	assert_true(lookups >= 2);
	rdzv_table_free(&t);
	assert_int_equal(wait_exit(root), 0);
}

static void test_rdzv__resolve_wait_can_be_cancelled(void **state)
{
	struct in_addr addr;
	int fds[2];
	int64_t t0 = mlp_mono_ms();

	assert_int_equal(pipe(fds), 0);
	assert_int_equal(write(fds[1], "x", 1), 1);
	assert_int_equal(rdzv_resolve_wait(&addr, "nonexistent.invalid", t0 + 10000, 10000, fds[0]),
	                 MLP_ECANCELLED);
	assert_true(mlp_mono_ms() - t0 < 5000);
	assert_int_equal(rdzv_resolve_wait(&addr, "10.1.2.3", t0 + 10000, 10000, fds[0]), 0);
	assert_int_equal(addr.s_addr, inet_addr("10.1.2.3"));
	close(fds[0]);
	close(fds[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_rdzv__rank0_listens_on_every_address),
	        cmocka_unit_test(test_rdzv__rank0_needs_no_lookup_of_its_own_name),
	        cmocka_unit_test(test_rdzv__an_unresolvable_name_is_retried_until_the_deadline),
	        cmocka_unit_test(test_rdzv__a_name_that_resolves_late_joins),
	        cmocka_unit_test(test_rdzv__resolve_wait_can_be_cancelled),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
