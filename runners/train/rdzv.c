/*
 * rdzv.c - the rendezvous on MASTER_ADDR:MASTER_PORT (see rdzv.h).
 *
 * Wire format, all integers little-endian on the x86 and Arm machines we
 * run on (the struct is sent as is, both ends run this same code):
 *   hello  (peer -> 0): magic, version, rank, world, group_rank, pid, port
 *   answer (0 -> peer): magic, version, world, token, blob, then world
 *                       entries
 * Every read and write has a deadline; a peer that connects and says
 * nothing, or says something else, is an error, not a hang.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/error.h"
#include "rdzv.h"
#include "base/util.h"

#define RDZV_MAGIC 0x4d4c5052u /* "MLPR" */
#define RDZV_VERSION 1

struct hello {
	uint32_t magic;
	uint32_t version;
	int32_t rank;
	int32_t world;
	int32_t group_rank;
	int32_t pid;
	uint32_t port;
};

struct answer_hdr {
	uint32_t magic;
	uint32_t version;
	int32_t world;
	uint32_t pad;
	uint64_t token;
	unsigned char blob[RDZV_BLOB_BYTES];
};

struct wire_peer {
	int32_t rank;
	int32_t group_rank;
	int32_t pid;
	uint32_t port;
	uint32_t addr; /* network order */
};

static int wait_fd(int fd, short events, int64_t deadline_ms)
{
	for (;;) {
		int64_t left = deadline_ms - mlp_mono_ms();
		struct pollfd p = {.fd = fd, .events = events};
		int n;

		if (left <= 0) {
			mlp_error_set("timed out");
			return MLP_ETIMEOUT;
		}
		n = poll(&p, 1, (int)(left > 1000 ? 1000 : left));
		if (n > 0)
			return 0;
		if (n < 0 && errno != EINTR) {
			mlp_error_set_errno(errno, "poll");
			return MLP_EIO;
		}
	}
}

int rdzv_write_all(int fd, const void *buf, size_t len, int64_t deadline_ms)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n > 0) {
			p += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			int rc = wait_fd(fd, POLLOUT, deadline_ms);

			if (rc != 0)
				return rc;
			continue;
		}
		mlp_error_set_errno(errno, "send");
		return MLP_EIO;
	}
	return 0;
}

int rdzv_read_all(int fd, void *buf, size_t len, int64_t deadline_ms)
{
	char *p = buf;

	while (len > 0) {
		ssize_t n = recv(fd, p, len, MSG_DONTWAIT);

		if (n > 0) {
			p += n;
			len -= (size_t)n;
			continue;
		}
		if (n == 0) {
			mlp_error_set("connection closed by the peer");
			return MLP_EIO;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			int rc = wait_fd(fd, POLLIN, deadline_ms);

			if (rc != 0)
				return rc;
			continue;
		}
		mlp_error_set_errno(errno, "recv");
		return MLP_EIO;
	}
	return 0;
}

int rdzv_resolve(struct in_addr *out, const char *host)
{
	struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM};
	struct addrinfo *res = NULL;
	int rc;

	if (inet_pton(AF_INET, host, out) == 1)
		return 0;
	rc = getaddrinfo(host, NULL, &hints, &res);
	if (rc != 0 || res == NULL) {
		mlp_error_set("cannot resolve MASTER_ADDR '%s': %s", host, gai_strerror(rc));
		return MLP_EINVAL;
	}
	*out = ((struct sockaddr_in *)res->ai_addr)->sin_addr;
	freeaddrinfo(res);
	return 0;
}

int rdzv_resolve_wait(struct in_addr *out, const char *host, int64_t deadline_ms,
                      int64_t timeout_ms, int cancel_fd)
{
	int64_t backoff_ms = 100;

	while (rdzv_resolve(out, host) != 0) {
		int64_t left = deadline_ms - mlp_mono_ms();
		struct pollfd p = {.fd = cancel_fd, .events = POLLIN};
		char d[32];

		if (left <= 0) {
			/* The last lookup's reason, without the repeated name. */
			const char *why = strstr(mlp_error_last(), "': ");
			char *msg;

			mlp_format_duration(d, sizeof(d), timeout_ms);
			msg = xasprintf("MASTER_ADDR '%s' did not resolve within %s (%s)", host, d,
			                why ? why + 3 : mlp_error_last());
			mlp_error_set("%s", msg);
			free(msg);
			return MLP_ETIMEOUT;
		}
		/* A wait, not a timer: nothing else happens until the name
		 * resolves; cancel_fd lets a caller's signalfd cut it short. */
		if (poll(&p, 1, (int)(left < backoff_ms ? left : backoff_ms)) > 0) {
			mlp_error_set("waiting for MASTER_ADDR '%s' was cancelled", host);
			return MLP_ECANCELLED;
		}
		backoff_ms = backoff_ms * 2 > 1000 ? 1000 : backoff_ms * 2;
	}
	return 0;
}

static void tune(int fd)
{
	int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	mlp_fd_nonblock(fd);
}

int rdzv_connect(const struct in_addr *addr, uint16_t port, int64_t deadline_ms)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr = *addr};
	char where[INET_ADDRSTRLEN];
	int last = 0;

	inet_ntop(AF_INET, addr, where, sizeof(where));
	/* The listener may not be up yet: retry until the deadline. */
	while (mlp_mono_ms() < deadline_ms) {
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

		if (fd < 0) {
			mlp_error_set_errno(errno, "socket");
			return MLP_EIO;
		}
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			tune(fd);
			return fd;
		}
		last = errno;
		close(fd);
		{
			struct timespec ts = {0, 20 * 1000 * 1000};

			nanosleep(&ts, NULL);
		}
	}
	mlp_error_set("cannot connect to %s:%u: %s", where, port,
	              last ? strerror(last) : "timed out");
	return MLP_ETIMEOUT;
}

/* Every address: rank 0's own name may not resolve yet (see rdzv.h), and
 * peers may reach it through any of its addresses. */
static int listen_on(int port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET,
	                         .sin_port = htons((uint16_t)port),
	                         .sin_addr = {htonl(INADDR_ANY)}};
	int one = 1;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0) {
		mlp_error_set_errno(errno, "socket");
		return MLP_EIO;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/* Another rank's ring listener may hold the port for a moment before
	 * it lets go of it (coll.c): retry briefly rather than fail the job. */
	for (int tries = 0; bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0; tries++) {
		struct timespec ts = {0, 10 * 1000 * 1000};

		if (errno != EADDRINUSE || tries >= 200) {
			mlp_error_set_errno(errno, "rank 0 cannot listen on MASTER_PORT %d", port);
			close(fd);
			return MLP_EIO;
		}
		nanosleep(&ts, NULL);
	}
	if (listen(fd, 128) != 0) {
		mlp_error_set_errno(errno, "rank 0 cannot listen on MASTER_PORT %d", port);
		close(fd);
		return MLP_EIO;
	}
	mlp_fd_nonblock(fd);
	return fd;
}

static int host(struct rdzv_table *t, int port, int world, int group_rank, uint16_t listen_port,
                int64_t deadline)
{
	int lfd = listen_on(port);
	int *fds = NULL;
	int joined = 1, rc = 0;

	if (lfd < 0)
		return lfd;
	fds = xcalloc((size_t)world, sizeof(*fds));
	for (int i = 0; i < world; i++)
		fds[i] = -1;
	t->peers[0] = (struct rdzv_peer){
	        0, group_rank, (int32_t)getpid(), listen_port, {htonl(INADDR_LOOPBACK)}};
	while (joined < world) {
		struct sockaddr_in from;
		socklen_t flen = sizeof(from);
		struct hello h;
		int fd;

		if ((rc = wait_fd(lfd, POLLIN, deadline)) != 0) {
			mlp_error_set("rendezvous: %d of %d ranks joined before the timeout",
			              joined, world);
			goto done;
		}
		fd = accept4(lfd, (struct sockaddr *)&from, &flen, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		tune(fd);
		if (rdzv_read_all(fd, &h, sizeof(h), deadline) != 0 || h.magic != RDZV_MAGIC ||
		    h.version != RDZV_VERSION) {
			close(fd); /* not one of ours: ignore it */
			continue;
		}
		if (h.world != world || h.rank <= 0 || h.rank >= world || fds[h.rank] >= 0) {
			mlp_error_set("rendezvous: a rank says rank %d of %d, but this group has "
			              "world size %d%s",
			              h.rank, h.world, world,
			              h.rank > 0 && h.rank < world && fds[h.rank] >= 0
			                      ? " and that rank already joined"
			                      : "");
			close(fd);
			rc = MLP_EINVAL;
			goto done;
		}
		fds[h.rank] = fd;
		t->peers[h.rank] = (struct rdzv_peer){h.rank, h.group_rank, h.pid, (uint16_t)h.port,
		                                      from.sin_addr};
		/* A peer on this host reached us through loopback or our own
		 * address: both work for its listener too. */
		joined++;
	}
	{
		size_t len = sizeof(struct answer_hdr) + (size_t)world * sizeof(struct wire_peer);
		char *msg = xmalloc(len);
		struct answer_hdr *a = (struct answer_hdr *)msg;
		struct wire_peer *wp = (struct wire_peer *)(msg + sizeof(*a));

		*a = (struct answer_hdr){RDZV_MAGIC, RDZV_VERSION, world, 0, t->token, {0}};
		memcpy(a->blob, t->blob, sizeof(a->blob));
		for (int i = 0; i < world; i++)
			wp[i] = (struct wire_peer){t->peers[i].rank, t->peers[i].group_rank,
			                           t->peers[i].pid, t->peers[i].port,
			                           t->peers[i].addr.s_addr};
		for (int i = 1; i < world && rc == 0; i++)
			rc = rdzv_write_all(fds[i], msg, len, deadline);
		free(msg);
	}
done:
	for (int i = 0; i < world; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	free(fds);
	close(lfd);
	return rc;
}

static int join(struct rdzv_table *t, struct in_addr *addr, int port, int rank, int world,
                int group_rank, uint16_t listen_port, int64_t deadline)
{
	struct hello h = {RDZV_MAGIC, RDZV_VERSION,      rank,       world,
	                  group_rank, (int32_t)getpid(), listen_port};
	struct answer_hdr a;
	struct wire_peer *wp = NULL;
	int fd = rdzv_connect(addr, (uint16_t)port, deadline);
	int rc;

	if (fd < 0) {
		char *m = xasprintf("rendezvous with rank 0: %s", mlp_error_last());

		mlp_error_set("%s", m);
		free(m);
		return fd;
	}
	rc = rdzv_write_all(fd, &h, sizeof(h), deadline);
	if (rc == 0)
		rc = rdzv_read_all(fd, &a, sizeof(a), deadline);
	if (rc == 0 && (a.magic != RDZV_MAGIC || a.version != RDZV_VERSION || a.world != world)) {
		mlp_error_set("rendezvous: rank 0 answered for a group of %d ranks, not %d",
		              a.world, world);
		rc = MLP_EINVAL;
	}
	if (rc == 0) {
		wp = xcalloc((size_t)world, sizeof(*wp));
		rc = rdzv_read_all(fd, wp, (size_t)world * sizeof(*wp), deadline);
	}
	if (rc == 0) {
		t->token = a.token;
		memcpy(t->blob, a.blob, sizeof(t->blob));
		for (int i = 0; i < world; i++) {
			t->peers[i] = (struct rdzv_peer){wp[i].rank,
			                                 wp[i].group_rank,
			                                 wp[i].pid,
			                                 (uint16_t)wp[i].port,
			                                 {wp[i].addr}};
			/* Rank 0's own entry says loopback: reach it where we did. */
			if (i == 0)
				t->peers[i].addr = *addr;
		}
	} else if (rc == MLP_EIO || rc == MLP_ETIMEOUT) {
		char *m = xasprintf("rendezvous with rank 0: %s", mlp_error_last());

		mlp_error_set("%s", m);
		free(m);
	}
	free(wp);
	close(fd);
	return rc;
}

int rdzv_join(struct rdzv_table *out, const char *master_addr, int master_port, int rank, int world,
              int group_rank, uint16_t listen_port, const void *root_blob, int timeout_ms)
{
	struct in_addr addr = {0};
	int64_t deadline = mlp_mono_ms() + timeout_ms;
	int rc;

	memset(out, 0, sizeof(*out));
	if (world < 1 || world > RDZV_MAX_RANKS || rank < 0 || rank >= world) {
		mlp_error_set("rank %d of world size %d is out of range (1 to %d ranks)", rank,
		              world, RDZV_MAX_RANKS);
		return MLP_EINVAL;
	}
	if (master_port <= 0 || master_port > 65535) {
		mlp_error_set("MASTER_PORT %d is not a port", master_port);
		return MLP_EINVAL;
	}
	/* Rank 0 needs no lookup: it listens on every address. */
	if (rank != 0 &&
	    (rc = rdzv_resolve_wait(&addr, master_addr, deadline, timeout_ms, -1)) != 0) {
		char *m = xasprintf("rendezvous: %s", mlp_error_last());

		mlp_error_set("%s", m);
		free(m);
		return rc;
	}
	out->world = world;
	out->peers = xcalloc((size_t)world, sizeof(*out->peers));
	if (rank == 0) {
		if (root_blob)
			memcpy(out->blob, root_blob, sizeof(out->blob));
		if (getrandom(&out->token, sizeof(out->token), 0) != sizeof(out->token))
			out->token = (uint64_t)mlp_mono_us() ^ ((uint64_t)getpid() << 32);
		rc = host(out, master_port, world, group_rank, listen_port, deadline);
	} else {
		rc = join(out, &addr, master_port, rank, world, group_rank, listen_port, deadline);
	}
	if (rc != 0)
		rdzv_table_free(out);
	return rc;
}

void rdzv_table_free(struct rdzv_table *t)
{
	free(t->peers);
	t->peers = NULL;
	t->world = 0;
}
