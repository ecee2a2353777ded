/*
 * coll-tcp.c - collectives over a TCP ring, for ranks on several nodes.
 *
 * Each rank connects to the next one (rank + 1, modulo the world) and is
 * connected to by the previous one.  Allreduce is the classic ring: the
 * buffer is cut into one segment per rank; world - 1 steps of
 * reduce-scatter (send a segment on, receive one, add it) leave each rank
 * with one fully reduced segment, and world - 1 steps of all-gather pass
 * the reduced segments round.  Every element is summed in the same order
 * on every rank, so all ranks end bit-identical.  Sends and receives of a
 * step run at once through poll(), so two ranks sending large segments to
 * each other never deadlock on full socket buffers.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "coll-int.h"
#include "base/error.h"
#include "base/util.h"

struct tcp {
	int next_fd;
	int prev_fd;
	char *tmp;
	size_t tmp_bytes;
};

static int peer_gone(struct mlp_coll *c, int rank, const char *what)
{
	mlp_error_set("rank %d %s during a collective", rank, what);
	return MLP_EIO;
}

/* Sends slen bytes to the next rank while receiving rlen from the previous. */
static int sendrecv(struct mlp_coll *c, const void *sbuf, size_t slen, void *rbuf, size_t rlen)
{
	struct tcp *t = c->impl;
	const char *sp = sbuf;
	char *rp = rbuf;
	int next = (c->rank + 1) % c->world, prev = (c->rank + c->world - 1) % c->world;
	int64_t deadline = mlp_mono_ms() + c->timeout_ms;

	while (slen > 0 || rlen > 0) {
		struct pollfd p[2];
		nfds_t np = 0;
		int64_t left = deadline - mlp_mono_ms();
		int n;

		if (left <= 0) {
			mlp_error_set("timed out after %d s in a collective (waiting for rank %d)",
			              c->timeout_ms / 1000, rlen > 0 ? prev : next);
			return MLP_ETIMEOUT;
		}
		if (slen > 0)
			p[np++] = (struct pollfd){.fd = t->next_fd, .events = POLLOUT};
		if (rlen > 0)
			p[np++] = (struct pollfd){.fd = t->prev_fd, .events = POLLIN};
		n = poll(p, np, (int)(left > 1000 ? 1000 : left));
		if (n < 0 && errno != EINTR) {
			mlp_error_set_errno(errno, "poll");
			return MLP_EIO;
		}
		if (n <= 0)
			continue;
		for (nfds_t k = 0; k < np; k++) {
			if (p[k].revents == 0)
				continue;
			if (p[k].fd == t->next_fd && slen > 0) {
				ssize_t w = send(t->next_fd, sp, slen, MSG_DONTWAIT | MSG_NOSIGNAL);

				if (w > 0) {
					sp += w;
					slen -= (size_t)w;
				} else if (w < 0 && errno != EAGAIN && errno != EINTR) {
					return peer_gone(c, next, "closed its connection");
				}
			} else if (p[k].fd == t->prev_fd && rlen > 0) {
				ssize_t r = recv(t->prev_fd, rp, rlen, MSG_DONTWAIT);

				if (r > 0) {
					rp += r;
					rlen -= (size_t)r;
				} else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
					return peer_gone(c, prev, "closed its connection (died?)");
				}
			}
		}
	}
	return 0;
}

static void seg(size_t n, int world, int k, size_t *lo, size_t *hi)
{
	*lo = n * (size_t)k / (size_t)world;
	*hi = n * (size_t)(k + 1) / (size_t)world;
}

static int tcp_allreduce(struct mlp_coll *c, void *buf, size_t n, enum coll_dtype t)
{
	struct tcp *tc = c->impl;
	size_t elem = coll_elem_size(t);
	char *b = buf;
	int w = c->world, r = c->rank, rc;
	size_t max_seg = (n + (size_t)w - 1) / (size_t)w * elem;

	if (tc->tmp_bytes < max_seg) {
		free(tc->tmp);
		tc->tmp = xmalloc(max_seg);
		tc->tmp_bytes = max_seg;
	}
	for (int s = 0; s < w - 1; s++) {
		int send_k = ((r - s) % w + w) % w, recv_k = ((r - s - 1) % w + w) % w;
		size_t slo, shi, rlo, rhi;

		seg(n, w, send_k, &slo, &shi);
		seg(n, w, recv_k, &rlo, &rhi);
		rc = sendrecv(c, b + slo * elem, (shi - slo) * elem, tc->tmp, (rhi - rlo) * elem);
		if (rc != 0)
			return rc;
		if (t == COLL_F32_AVG) {
			float *dst = (float *)b + rlo;
			const float *src = (const float *)tc->tmp;

			for (size_t i = 0; i < rhi - rlo; i++)
				dst[i] += src[i];
		} else {
			double *dst = (double *)b + rlo;
			const double *src = (const double *)tc->tmp;

			for (size_t i = 0; i < rhi - rlo; i++)
				dst[i] += src[i];
		}
	}
	if (t == COLL_F32_AVG) {
		size_t lo, hi;
		float scale = 1.0f / (float)w;

		seg(n, w, (r + 1) % w, &lo, &hi);
		for (size_t i = lo; i < hi; i++)
			((float *)b)[i] *= scale;
	}
	for (int s = 0; s < w - 1; s++) {
		int send_k = ((r + 1 - s) % w + w) % w, recv_k = ((r - s) % w + w) % w;
		size_t slo, shi, rlo, rhi;

		seg(n, w, send_k, &slo, &shi);
		seg(n, w, recv_k, &rlo, &rhi);
		rc = sendrecv(c, b + slo * elem, (shi - slo) * elem, b + rlo * elem,
		              (rhi - rlo) * elem);
		if (rc != 0)
			return rc;
	}
	return 0;
}

static int tcp_broadcast(struct mlp_coll *c, void *buf, size_t bytes, int root)
{
	int next = (c->rank + 1) % c->world;
	int rc = 0;

	/* Down the ring from root: receive from the previous rank, pass on. */
	if (c->rank != root)
		rc = sendrecv(c, NULL, 0, buf, bytes);
	if (rc == 0 && next != root)
		rc = sendrecv(c, buf, bytes, NULL, 0);
	return rc;
}

static int tcp_barrier(struct mlp_coll *c)
{
	double one = 1;

	return tcp_allreduce(c, &one, 1, COLL_F64_SUM);
}

static void tcp_close(struct mlp_coll *c)
{
	struct tcp *t = c->impl;

	if (t == NULL)
		return;
	if (t->next_fd >= 0)
		close(t->next_fd);
	if (t->prev_fd >= 0)
		close(t->prev_fd);
	free(t->tmp);
	free(t);
	c->impl = NULL;
}

static const struct coll_ops tcp_ops = {
        "tcp", tcp_allreduce, tcp_broadcast, tcp_barrier, tcp_close,
};

int coll_tcp_open(struct mlp_coll *c, const struct mlp_coll_opts *o, int listen_fd)
{
	struct tcp *t = xcalloc(1, sizeof(*t));
	int next = (c->rank + 1) % c->world, prev = (c->rank + c->world - 1) % c->world;
	int64_t deadline = mlp_mono_ms() + c->timeout_ms;
	int32_t who = c->rank, said;
	int rc;

	t->next_fd = t->prev_fd = -1;
	c->impl = t;
	c->ops = &tcp_ops;
	/* Connecting first is safe: the kernel completes connections to a
	 * listening socket before anyone calls accept(). */
	t->next_fd = rdzv_connect(&c->table.peers[next].addr, c->table.peers[next].port, deadline);
	if (t->next_fd < 0) {
		rc = t->next_fd;
		t->next_fd = -1;
		goto fail;
	}
	if ((rc = rdzv_write_all(t->next_fd, &who, sizeof(who), deadline)) != 0)
		goto fail;
	mlp_fd_nonblock(listen_fd);
	for (;;) {
		struct pollfd p = {.fd = listen_fd, .events = POLLIN};
		int64_t left = deadline - mlp_mono_ms();

		if (left <= 0) {
			mlp_error_set("timed out waiting for rank %d to connect to the ring", prev);
			rc = MLP_ETIMEOUT;
			goto fail;
		}
		if (poll(&p, 1, (int)(left > 1000 ? 1000 : left)) <= 0)
			continue;
		t->prev_fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (t->prev_fd < 0)
			continue;
		mlp_fd_nonblock(t->prev_fd);
		if (rdzv_read_all(t->prev_fd, &said, sizeof(said), deadline) == 0 && said == prev)
			break;
		close(t->prev_fd); /* a stranger: keep listening */
		t->prev_fd = -1;
	}
	return 0;
fail:
	tcp_close(c);
	return rc;
}
