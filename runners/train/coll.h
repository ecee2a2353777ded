/*
 * coll.h - collective operations between the ranks of a data-parallel
 * training job: what mlpipe-train uses to average gradients.
 *
 * A communicator is opened from the torchrun environment contract (RANK,
 * WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK, MASTER_ADDR,
 * MASTER_PORT, TORCHELASTIC_RUN_ID).  Rank 0 hosts a small rendezvous on
 * MASTER_ADDR:MASTER_PORT; the ranks then pick a backend:
 *
 *   "shm"   every rank on one node: a shared-memory segment, reduce-scatter
 *           then all-gather in place, spinning briefly then sleeping on a
 *           futex;
 *   "tcp"   ranks on several nodes: a ring over TCP;
 *   "nccl"  GPUs, one per rank (mlpipe-train built with CUDA and NCCL;
 *           coll-nccl.c): chosen by mlpipe-train when its gradient lives in
 *           device memory, or forced with MLPIPE_COLL_BACKEND=nccl (even at
 *           world size 1).  The float all-reduce takes device memory in
 *           place; host buffers work too, staged through the GPU.  Waits
 *           are watched: an NCCL error or the timeout aborts the
 *           communicator (ncclCommAbort) and fails the operation;
 *   "local" world size 1: every operation is a no-op.
 *
 * Every wait has a timeout (MLPIPE_COLL_TIMEOUT, default 60s), and a dead
 * peer is noticed within about a second: operations then fail with
 * MLP_EIO and a message naming the peer, never hang.  A failed communicator
 * is unusable; the process should exit non-zero so that the launcher
 * restarts the group.
 */
#ifndef MLP_COLL_H
#define MLP_COLL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct mlp_coll;

struct mlp_coll_opts {
	int rank;
	int world_size;
	int local_rank;
	int local_world_size;
	int group_rank; /* node index */
	const char *master_addr;
	int master_port;
	const char *run_id;  /* names the shared-memory segment */
	int timeout_ms;      /* per wait; 0: the default */
	const char *backend; /* NULL or "auto": chosen as above */
};

/* Fills opts from the environment (torchrun's variables); a missing
 * WORLD_SIZE means a single process.  Returns 0 or MLP_EINVAL. */
int mlp_coll_opts_from_env(struct mlp_coll_opts *out);

/* Joins the group: rendezvous, then the backend.  Blocks until every rank
 * has joined or the timeout passes. */
int mlp_coll_open(struct mlp_coll **out, const struct mlp_coll_opts *opts);

int mlp_coll_rank(const struct mlp_coll *c);
int mlp_coll_world_size(const struct mlp_coll *c);
/* "local", "shm", "tcp" or "nccl". */
const char *mlp_coll_backend(const struct mlp_coll *c);
/* Whether mlp_coll_allreduce_avg_f32 takes device (GPU) memory: true for
 * the nccl backend.  The others take host memory only. */
bool mlp_coll_on_device(const struct mlp_coll *c);

/* In place: every rank ends with the element-wise mean (sum / world size)
 * of everyone's buf.  The same n on every rank. */
int mlp_coll_allreduce_avg_f32(struct mlp_coll *c, float *buf, size_t n);
/* In place: the element-wise sum, in double precision (for counters). */
int mlp_coll_allreduce_sum_f64(struct mlp_coll *c, double *buf, size_t n);
/* Every rank ends with root's bytes. */
int mlp_coll_broadcast(struct mlp_coll *c, void *buf, size_t bytes, int root);
int mlp_coll_barrier(struct mlp_coll *c);

/* Leaves the group; accepts NULL. */
void mlp_coll_close(struct mlp_coll *c);

#endif
