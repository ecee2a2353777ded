/*
 * gpu-check.c - GPU discovery and the NCCL preflight check (see gpu.h).
 *
 * The sweep runs one process over every visible GPU (ncclCommInitAll), so
 * it needs no launcher.  Each size is all-reduced `iters` times between
 * two CUDA events after warm-up; algbw is bytes / time and busbw is
 * algbw * 2(n-1)/n, as nccl-tests define them.  A collective that does not
 * complete in time is aborted with ncclCommAbort (Destroy could block on
 * the hung work) after polling ncclCommGetAsyncError, and reported.
 */
#include "config.h"

#include <cuda_runtime.h>
#ifdef HAVE_NCCL
#include <nccl.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/error.h"
#include "gpu.h"
#include "base/util.h"

#define MAX_GPUS 64

int mlp_gpu_count(const char **why)
{
	int n = 0;
	cudaError_t err = cudaGetDeviceCount(&n);

	if (err != cudaSuccess) {
		if (why)
			*why = cudaGetErrorString(err);
		/* Clear the sticky error so later calls start clean. */
		cudaGetLastError();
		return 0;
	}
	if (n == 0 && why)
		*why = "no CUDA device is visible";
	return n;
}

#ifdef HAVE_NCCL
static int cuda_fail(cudaError_t err, const char *what)
{
	mlp_error_set("%s: %s", what, cudaGetErrorString(err));
	return MLP_EIO;
}

/* Waits for every stream; on timeout or an NCCL error aborts the comms. */
static int wait_streams(ncclComm_t *comms, cudaStream_t *streams, int n, int timeout_ms)
{
	int64_t deadline = mlp_mono_ms() + timeout_ms;

	for (;;) {
		bool done = true;

		for (int i = 0; i < n; i++) {
			cudaError_t q = cudaStreamQuery(streams[i]);
			ncclResult_t async = ncclSuccess;

			if (q != cudaSuccess && q != cudaErrorNotReady)
				return cuda_fail(q, "a collective failed on the GPU");
			if (q == cudaErrorNotReady)
				done = false;
			if (ncclCommGetAsyncError(comms[i], &async) != ncclSuccess ||
			    async != ncclSuccess) {
				mlp_error_set("NCCL reported an error on GPU %d: %s", i,
				              ncclGetErrorString(async));
				for (int k = 0; k < n; k++)
					ncclCommAbort(comms[k]);
				return MLP_EIO;
			}
		}
		if (done)
			return 0;
		if (mlp_mono_ms() > deadline) {
			mlp_error_set("an all-reduce did not complete in %d ms: aborting NCCL",
			              timeout_ms);
			for (int k = 0; k < n; k++)
				ncclCommAbort(comms[k]);
			return MLP_ETIMEOUT;
		}
		{
			struct timespec ts = {0, 100 * 1000};

			nanosleep(&ts, NULL);
		}
	}
}

int mlp_gpu_check(const struct mlp_gpu_check_opts *o)
{
	int n, driver = 0, runtime = 0, nccl = 0, rc = 0;
	const char *why = NULL;
	int devs[MAX_GPUS];
	ncclComm_t comms[MAX_GPUS];
	cudaStream_t streams[MAX_GPUS];
	float *sendbuf[MAX_GPUS], *recvbuf[MAX_GPUS];
	cudaEvent_t start, stop;
	bool comms_alive = false;
	ncclResult_t nr;

	memset(sendbuf, 0, sizeof(sendbuf));
	memset(recvbuf, 0, sizeof(recvbuf));
	n = mlp_gpu_count(&why);
	if (n == 0) {
		mlp_error_set("no GPU: %s", why ? why : "none visible");
		return MLP_EIO;
	}
	if (o->expect_gpus > 0 && n < o->expect_gpus) {
		mlp_error_set("%d GPU%s visible, %d expected", n, n == 1 ? "" : "s",
		              o->expect_gpus);
		return MLP_EIO;
	}
	if (n > MAX_GPUS)
		n = MAX_GPUS;
	cudaDriverGetVersion(&driver);
	cudaRuntimeGetVersion(&runtime);
	ncclGetVersion(&nccl);
	printf("driver %d.%d, runtime %d.%d, NCCL %d.%d.%d\n", driver / 1000, driver % 1000 / 10,
	       runtime / 1000, runtime % 1000 / 10, nccl / 10000, nccl % 10000 / 100, nccl % 100);
	for (int i = 0; i < n; i++) {
		struct cudaDeviceProp p;
		cudaError_t err = cudaGetDeviceProperties(&p, i);

		if (err != cudaSuccess)
			return cuda_fail(err, "reading device properties");
		printf("GPU %d: %s, %.1f GiB, compute capability %d.%d, PCI %04x:%02x:%02x\n", i,
		       p.name, (double)p.totalGlobalMem / (1 << 30), p.major, p.minor,
		       p.pciDomainID, p.pciBusID, p.pciDeviceID);
		devs[i] = i;
	}
	if ((nr = ncclCommInitAll(comms, n, devs)) != ncclSuccess) {
		mlp_error_set("ncclCommInitAll over %d GPU%s: %s", n, n == 1 ? "" : "s",
		              ncclGetErrorString(nr));
		return MLP_EIO;
	}
	comms_alive = true;
	for (int i = 0; i < n; i++) {
		cudaError_t err;

		cudaSetDevice(i);
		if ((err = cudaStreamCreateWithFlags(&streams[i], cudaStreamNonBlocking)) !=
		            cudaSuccess ||
		    (err = cudaMalloc((void **)&sendbuf[i], (size_t)o->max_bytes)) != cudaSuccess ||
		    (err = cudaMalloc((void **)&recvbuf[i], (size_t)o->max_bytes)) != cudaSuccess ||
		    (err = cudaMemset(sendbuf[i], 0, (size_t)o->max_bytes)) != cudaSuccess) {
			rc = cuda_fail(err, "allocating the sweep's buffers");
			goto done;
		}
	}
	cudaSetDevice(0);
	cudaEventCreate(&start);
	cudaEventCreate(&stop);
	printf("%14s %12s %10s %10s\n", "size (B)", "time (us)", "algbw GB/s", "busbw GB/s");
	for (long long bytes = 8; bytes <= o->max_bytes; bytes *= 4) {
		size_t count = (size_t)bytes / sizeof(float);
		float ms = 0;
		double us, algbw;

		for (int it = -2; it < o->iters; it++) {
			if (it == 0)
				cudaEventRecord(start, streams[0]);
			ncclGroupStart();
			for (int i = 0; i < n; i++)
				ncclAllReduce(sendbuf[i], recvbuf[i], count, ncclFloat, ncclSum,
				              comms[i], streams[i]);
			if ((nr = ncclGroupEnd()) != ncclSuccess) {
				mlp_error_set("ncclAllReduce of %lld bytes: %s", bytes,
				              ncclGetErrorString(nr));
				rc = MLP_EIO;
				goto done;
			}
		}
		cudaEventRecord(stop, streams[0]);
		if ((rc = wait_streams(comms, streams, n, o->timeout_ms)) != 0) {
			comms_alive = false; /* aborted */
			goto done;
		}
		cudaEventElapsedTime(&ms, start, stop);
		us = (double)ms * 1000.0 / o->iters;
		algbw = (double)bytes / us / 1000.0;
		printf("%14lld %12.2f %10.2f %10.2f\n", bytes, us, algbw,
		       algbw * 2.0 * (n - 1) / n);
	}
	cudaEventDestroy(start);
	cudaEventDestroy(stop);
	printf("all-reduce over %d GPU%s: ok\n", n, n == 1 ? "" : "s");
done:
	for (int i = 0; i < n; i++) {
		cudaSetDevice(i);
		cudaFree(sendbuf[i]);
		cudaFree(recvbuf[i]);
		if (comms_alive)
			ncclCommDestroy(comms[i]);
	}
	fflush(stdout);
	return rc;
}
#else
int mlp_gpu_check(const struct mlp_gpu_check_opts *o)
{
	mlp_error_set("mlpipe-train was built without NCCL: no all-reduce check");
	return MLP_EIO;
}
#endif
