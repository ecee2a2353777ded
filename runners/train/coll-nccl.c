/*
 * coll-nccl.c - the "nccl" collective backend: NCCL over the GPUs of the
 * ranks, for a gradient that lives in device memory (coll.h).
 *
 * Built into mlpipe-train only, when configure finds CUDA and NCCL; coll.c
 * reaches coll_nccl_open through a weak reference, so programs without
 * this file (mlpipe, the tests) need no NCCL.
 *
 * Bootstrap: the rank's GPU is chosen first (mlp_gpu_pick_device, then
 * cudaSetDevice, before any other CUDA call of this process's NCCL).  Rank 0
 * calls ncclGetUniqueId, which starts NCCL's bootstrap listener in rank 0,
 * and hands the 128-byte id to every rank through our rendezvous
 * (rdzv_join's root blob).  With NCCL_COMM_ID=host:port in the environment
 * every rank makes the id itself, as NCCL documents, and the blob is not
 * used.  At world size 1 (MLPIPE_COLL_BACKEND=nccl forces NCCL there) there
 * is no rendezvous at all.
 *
 * Watchdog: the communicator is non-blocking (ncclConfig_t.blocking = 0),
 * so no NCCL call blocks, initialisation included.  Every wait is a loop
 * that polls ncclCommGetAsyncError and cudaStreamQuery, spinning for a
 * few hundred microseconds and then sleeping, until the work is done or
 * the timeout (MLPIPE_COLL_TIMEOUT) passes.  On an error or a timeout it
 * calls ncclCommAbort -- never ncclCommDestroy, which can block on hung
 * work -- and returns MLP_EIO or MLP_ETIMEOUT with NCCL's own words
 * (ncclGetErrorString, ncclGetLastError); coll.c then marks the
 * communicator failed and mlpipe-train exits 1, so the launcher restarts
 * the group.
 *
 * Memory: allreduce of floats takes device memory in place (the cuda
 * backend's gradient); host buffers (counters, the parameter broadcast,
 * the barrier) are staged through a device scratch buffer.  Before NCCL
 * reads a device buffer the device is synchronised, because the buffer was
 * written on the backend's stream, not on ours.
 *
 * Test hook: MLPIPE_NCCL_TEST_DELAY_MS=N puts a kernel that sleeps N ms on
 * NCCL's stream before the first float all-reduce, which then cannot finish
 * in a shorter MLPIPE_COLL_TIMEOUT: how tests/functional/gpu.sh drives the
 * watchdog.
 */
#include "config.h"

#include <cuda_runtime.h>
#include <nccl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "coll-int.h"
#include "base/error.h"
#include "gpu.h"
#include "kernels.h"
#include "base/util.h"

_Static_assert(sizeof(ncclUniqueId) <= RDZV_BLOB_BYTES, "an NCCL id fits the rendezvous blob");

struct nccl_state {
	ncclComm_t comm;
	bool alive;          /* initialised, not aborted or destroyed */
	cudaStream_t stream; /* NCCL's work and the scratch copies */
	void *scratch;       /* device staging for host buffers */
	size_t scratch_bytes;
	int test_delay_ms; /* MLPIPE_NCCL_TEST_DELAY_MS, used once */
};

static void abort_comm(struct nccl_state *s)
{
	if (s->alive) {
		ncclCommAbort(s->comm);
		s->alive = false;
		s->comm = NULL;
	}
}

/* NCCL's own detail for the last error, when it has one. */
static const char *nccl_detail(const struct nccl_state *s)
{
	const char *d = s->comm ? ncclGetLastError(s->comm) : NULL;

	return d && *d ? d : NULL;
}

static int nccl_fail(struct mlp_coll *c, ncclResult_t r, const char *what)
{
	struct nccl_state *s = c->impl;
	const char *detail = nccl_detail(s);

	mlp_error_set("NCCL %s on rank %d: %s%s%s", what, c->rank, ncclGetErrorString(r),
	              detail ? ": " : "", detail ? detail : "");
	abort_comm(s);
	return MLP_EIO;
}

static int cuda_fail(struct mlp_coll *c, cudaError_t err, const char *what)
{
	mlp_error_set("NCCL %s on rank %d: CUDA: %s", what, c->rank, cudaGetErrorString(err));
	abort_comm(c->impl);
	return MLP_EIO;
}

/*
 * The watchdog: waits until NCCL has no operation in progress and the
 * stream is idle, or fails (aborting the communicator) on an NCCL error,
 * a CUDA error or the timeout.
 */
static int watch(struct mlp_coll *c, const char *what)
{
	struct nccl_state *s = c->impl;
	int64_t start = mlp_mono_ms(), deadline = start + c->timeout_ms;
	unsigned polls = 0;

	for (;;) {
		ncclResult_t state = ncclSuccess;
		ncclResult_t r = ncclCommGetAsyncError(s->comm, &state);

		if (r != ncclSuccess)
			state = r;
		if (state != ncclSuccess && state != ncclInProgress)
			return nccl_fail(c, state, what);
		if (state == ncclSuccess) {
			cudaError_t q = cudaStreamQuery(s->stream);

			if (q == cudaSuccess)
				return 0;
			if (q != cudaErrorNotReady)
				return cuda_fail(c, q, what);
		}
		if (mlp_mono_ms() >= deadline) {
			mlp_error_set("NCCL %s did not complete within %d ms on rank %d "
			              "(MLPIPE_COLL_TIMEOUT): timeout, aborted the communicator",
			              what, c->timeout_ms, c->rank);
			abort_comm(s);
			return MLP_ETIMEOUT;
		}
		/* A step's all-reduce takes microseconds: spin first, then sleep
		 * longer the longer it takes. */
		if (++polls > 200) {
			struct timespec ts = {0, mlp_mono_ms() - start < 100 ? 50000 : 1000000};

			nanosleep(&ts, NULL);
		}
	}
}

/* NCCL calls on a non-blocking communicator return ncclInProgress while
 * they are still being enqueued; watch() waits that out. */
static int issued(struct mlp_coll *c, ncclResult_t r, const char *what)
{
	if (r != ncclSuccess && r != ncclInProgress)
		return nccl_fail(c, r, what);
	return watch(c, what);
}

static int ensure_scratch(struct mlp_coll *c, size_t bytes)
{
	struct nccl_state *s = c->impl;
	cudaError_t err;

	if (bytes <= s->scratch_bytes)
		return 0;
	if (bytes < 4096)
		bytes = 4096;
	cudaFree(s->scratch); /* the stream is idle: every operation waits */
	s->scratch = NULL;
	s->scratch_bytes = 0;
	if ((err = cudaMalloc(&s->scratch, bytes)) != cudaSuccess)
		return cuda_fail(c, err, "scratch buffer");
	s->scratch_bytes = bytes;
	return 0;
}

static bool is_device_memory(const void *p)
{
	struct cudaPointerAttributes a;

	if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
		cudaGetLastError(); /* not sticky, but clear it anyway */
		return false;
	}
	return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
}

static int copy(struct mlp_coll *c, void *dst, const void *src, size_t bytes,
                enum cudaMemcpyKind kind)
{
	struct nccl_state *s = c->impl;
	cudaError_t err = cudaMemcpyAsync(dst, src, bytes, kind, s->stream);

	return err == cudaSuccess ? 0 : cuda_fail(c, err, "staging copy");
}

static int nccl_allreduce(struct mlp_coll *c, void *buf, size_t n, enum coll_dtype t)
{
	struct nccl_state *s = c->impl;
	size_t bytes = n * coll_elem_size(t);
	bool on_device = is_device_memory(buf);
	void *dbuf = buf;
	cudaError_t err;
	int rc;

	if (n == 0)
		return 0;
	if (on_device) {
		if ((err = cudaDeviceSynchronize()) != cudaSuccess)
			return cuda_fail(c, err, "all-reduce (the gradient's computation)");
	} else {
		if ((rc = ensure_scratch(c, bytes)) != 0 ||
		    (rc = copy(c, s->scratch, buf, bytes, cudaMemcpyHostToDevice)) != 0)
			return rc;
		dbuf = s->scratch;
	}
	if (t == COLL_F32_AVG && s->test_delay_ms > 0) {
		if ((err = mlp_k_sleep(s->test_delay_ms, s->stream)) != cudaSuccess)
			return cuda_fail(c, err, "test delay");
		s->test_delay_ms = 0;
	}
	rc = issued(c,
	            ncclAllReduce(dbuf, dbuf, n, t == COLL_F32_AVG ? ncclFloat : ncclDouble,
	                          t == COLL_F32_AVG ? ncclAvg : ncclSum, s->comm, s->stream),
	            "all-reduce");
	if (rc != 0 || on_device)
		return rc;
	if ((rc = copy(c, buf, s->scratch, bytes, cudaMemcpyDeviceToHost)) != 0)
		return rc;
	return watch(c, "all-reduce");
}

static int nccl_broadcast(struct mlp_coll *c, void *buf, size_t bytes, int root)
{
	struct nccl_state *s = c->impl;
	int rc;

	if (bytes == 0)
		return 0;
	if ((rc = ensure_scratch(c, bytes)) != 0 ||
	    (rc = copy(c, s->scratch, buf, bytes, cudaMemcpyHostToDevice)) != 0 ||
	    (rc = issued(c,
	                 ncclBroadcast(s->scratch, s->scratch, bytes, ncclUint8, root, s->comm,
	                               s->stream),
	                 "broadcast")) != 0 ||
	    (rc = copy(c, buf, s->scratch, bytes, cudaMemcpyDeviceToHost)) != 0)
		return rc;
	return watch(c, "broadcast");
}

static int nccl_barrier(struct mlp_coll *c)
{
	struct nccl_state *s = c->impl;
	int rc = ensure_scratch(c, sizeof(float));

	if (rc != 0)
		return rc;
	return issued(
	        c, ncclAllReduce(s->scratch, s->scratch, 1, ncclFloat, ncclSum, s->comm, s->stream),
	        "barrier");
}

/* Frees everything; a communicator that failed is aborted, a healthy one
 * finalized (flushing its work) and destroyed, within the timeout. */
static void release(struct mlp_coll *c)
{
	struct nccl_state *s = c->impl;

	if (s == NULL)
		return;
	if (s->alive && !c->failed) {
		ncclResult_t r = ncclCommFinalize(s->comm);

		if ((r == ncclSuccess || r == ncclInProgress) && watch(c, "finalize") == 0) {
			ncclCommDestroy(s->comm);
			s->alive = false;
			s->comm = NULL;
		}
	}
	abort_comm(s);
	if (s->scratch)
		cudaFree(s->scratch);
	if (s->stream)
		cudaStreamDestroy(s->stream);
	free(s);
	c->impl = NULL;
}

static void nccl_close(struct mlp_coll *c)
{
	release(c);
}

static const struct coll_ops nccl_ops = {
        "nccl", nccl_allreduce, nccl_broadcast, nccl_barrier, nccl_close,
};

static int env_ms(int *out, const char *name)
{
	const char *v = getenv(name);
	long long n;

	*out = 0;
	if (v == NULL || *v == '\0')
		return 0;
	if (mlp_parse_int(&n, v, 0, 86400000) != 0) {
		mlp_error_set("%s='%s' is not a number of milliseconds", name, v);
		return MLP_EINVAL;
	}
	*out = (int)n;
	return 0;
}

int coll_nccl_open(struct mlp_coll *c, const struct mlp_coll_opts *o)
{
	struct nccl_state *s = xcalloc(1, sizeof(*s));
	const char *comm_id = getenv("NCCL_COMM_ID");
	bool id_from_env = comm_id != NULL && *comm_id != '\0';
	ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
	ncclUniqueId id;
	ncclResult_t r;
	cudaError_t err;
	int device, rc;

	c->ops = &nccl_ops;
	c->impl = s;
	memset(&id, 0, sizeof(id));
	if ((rc = env_ms(&s->test_delay_ms, "MLPIPE_NCCL_TEST_DELAY_MS")) != 0 ||
	    (rc = mlp_gpu_pick_device(&device)) != 0)
		goto fail;
	if ((err = cudaSetDevice(device)) != cudaSuccess) {
		rc = cuda_fail(c, err, "cudaSetDevice");
		goto fail;
	}
	if ((o->rank == 0 || id_from_env) && (r = ncclGetUniqueId(&id)) != ncclSuccess) {
		rc = nccl_fail(c, r, "ncclGetUniqueId");
		goto fail;
	}
	if (c->world > 1) {
		rc = rdzv_join(&c->table, o->master_addr, o->master_port, o->rank, o->world_size,
		               o->group_rank, 0, o->rank == 0 && !id_from_env ? &id : NULL,
		               c->timeout_ms);
		if (rc != 0)
			goto fail;
		if (!id_from_env)
			memcpy(&id, c->table.blob, sizeof(id));
	}
	if ((err = cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking)) != cudaSuccess) {
		rc = cuda_fail(c, err, "cudaStreamCreate");
		goto fail;
	}
	config.blocking = 0;
	r = ncclCommInitRankConfig(&s->comm, c->world, id, c->rank, &config);
	if (r != ncclSuccess && r != ncclInProgress) {
		if (s->comm)
			s->alive = true; /* so that nccl_fail aborts it */
		rc = nccl_fail(c, r, "ncclCommInitRank");
		goto fail;
	}
	s->alive = true;
	if ((rc = watch(c, "initialisation")) != 0)
		goto fail;
	return 0;
fail:
	c->failed = true;
	release(c);
	c->ops = NULL;
	return rc;
}
