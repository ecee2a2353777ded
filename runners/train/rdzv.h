/*
 * rdzv.h - the rendezvous: how the ranks of a job find each other.
 *
 * Rank 0 listens on MASTER_PORT on every address of its host (its own
 * MASTER_ADDR may be a DNS name that does not resolve yet: on Kubernetes a
 * pod's record appears seconds after the pod starts); every other rank
 * resolves MASTER_ADDR and connects, retrying both until rank 0 is up or
 * the timeout passes, and says who it is:
 * its rank, world size, node, pid and the port of its own listener.  Rank 0
 * checks that the group is consistent (same world size, each rank once)
 * and answers everyone with the whole table, then the connections close.
 */
#ifndef MLP_RDZV_H
#define MLP_RDZV_H

#include <netinet/in.h>
#include <stdint.h>
#include <sys/types.h>

#define RDZV_MAX_RANKS 1024
/* Rank 0 can hand every rank this many bytes (an NCCL unique id). */
#define RDZV_BLOB_BYTES 128

struct rdzv_peer {
	int32_t rank;
	int32_t group_rank; /* node */
	int32_t pid;
	uint16_t port;       /* the peer's data listener (TCP backend), 0: none */
	struct in_addr addr; /* as rank 0 saw it (127.0.0.1 for itself) */
};

struct rdzv_table {
	int world;
	struct rdzv_peer *peers;             /* indexed by rank */
	uint64_t token;                      /* random per rendezvous, names shared memory */
	unsigned char blob[RDZV_BLOB_BYTES]; /* rank 0's blob, on every rank */
};

/*
 * Joins: listen_port is this rank's data listener (0: none); root_blob
 * (rank 0 only, may be NULL) is RDZV_BLOB_BYTES that every rank finds in
 * table->blob.  On success
 * fills table (free with rdzv_table_free).  Errors: MLP_EIO / MLP_ETIMEOUT
 * with a message naming what went wrong.
 */
int rdzv_join(struct rdzv_table *out, const char *master_addr, int master_port, int rank, int world,
              int group_rank, uint16_t listen_port, const void *root_blob, int timeout_ms);

void rdzv_table_free(struct rdzv_table *t);

/* Helpers for the TCP paths, shared with the ring. */
int rdzv_write_all(int fd, const void *buf, size_t len, int64_t deadline_ms);
int rdzv_read_all(int fd, void *buf, size_t len, int64_t deadline_ms);
int rdzv_connect(const struct in_addr *addr, uint16_t port, int64_t deadline_ms);
/* One lookup of host (a dotted quad or a name, IPv4); 0 or MLP_EINVAL with
 * "cannot resolve MASTER_ADDR 'host': why". */
int rdzv_resolve(struct in_addr *out, const char *host);
/*
 * Looks host up until it resolves or deadline_ms (monotonic) passes,
 * waiting 100 ms after the first failure, doubling up to 1 s between
 * tries.  Returns 0; MLP_ETIMEOUT with "MASTER_ADDR 'host' did not resolve
 * within DUR (why)", DUR being timeout_ms as text; or MLP_ECANCELLED when
 * cancel_fd (-1: none) became readable while waiting.  A lookup in
 * progress is not interrupted: the deadline can be overrun by one
 * resolver timeout (resolv.conf's "timeout", 5 s by default).
 */
int rdzv_resolve_wait(struct in_addr *out, const char *host, int64_t deadline_ms,
                      int64_t timeout_ms, int cancel_fd);

#endif
