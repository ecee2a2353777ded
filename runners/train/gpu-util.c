/*
 * gpu-util.c - which GPU a rank uses, and the cuBLAS FP32 GEMM peak that
 * bench/gpu measures training throughput against (gpu.h).
 *
 * Placement: a launcher that gives each rank its own GPU sets
 * CUDA_VISIBLE_DEVICES to one id per rank, and that GPU is then device 0;
 * otherwise every rank sees every GPU and takes the one at LOCAL_RANK, as
 * torchrun scripts do with torch.cuda.set_device(local_rank).
 */
#include "config.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "gpu.h"
#include "model.h"
#include "base/util.h"

/* CUDA_VISIBLE_DEVICES names exactly one device. */
static int one_visible_device(void)
{
	const char *v = getenv("CUDA_VISIBLE_DEVICES");

	return v != NULL && *v != '\0' && strchr(v, ',') == NULL;
}

static int env_count(long long *out, const char *name, long long dflt)
{
	const char *v = getenv(name);

	*out = dflt;
	if (v == NULL || *v == '\0')
		return 0;
	if (mlp_parse_int(out, v, 0, INT_MAX) != 0) {
		mlp_error_set("%s='%s' is not a number", name, v);
		return MLP_EINVAL;
	}
	return 0;
}

int mlp_gpu_pick_device(int *out)
{
	const char *why = NULL;
	int count = mlp_gpu_count(&why);
	long long local_rank;
	int rc;

	if (count == 0) {
		mlp_error_set("no usable GPU (%s)", why ? why : "none visible");
		return MLP_EIO;
	}
	if (one_visible_device()) {
		*out = 0;
		return 0;
	}
	if ((rc = env_count(&local_rank, "LOCAL_RANK", 0)) != 0)
		return rc;
	if (local_rank >= count) {
		mlp_error_set("LOCAL_RANK %lld but only %d GPU%s visible", local_rank, count,
		              count == 1 ? "" : "s");
		return MLP_EINVAL;
	}
	*out = (int)local_rank;
	return 0;
}

int mlp_gpu_usable_by_all_local_ranks(void)
{
	long long local_world;
	int dev;

	if (mlp_gpu_pick_device(&dev) != 0)
		return 0;
	if (one_visible_device())
		return 1;
	if (env_count(&local_world, "LOCAL_WORLD_SIZE", 1) != 0)
		return 0;
	return local_world <= mlp_gpu_count(NULL);
}

static int cuda_fail(cudaError_t err, const char *what)
{
	mlp_error_set("CUDA: %s: %s", what, cudaGetErrorString(err));
	return MLP_EIO;
}

int mlp_gpu_gemm_peak(double *out_tflops, int size, int iters)
{
	size_t elems = (size_t)size * (size_t)size, chunk = (size_t)1 << 20;
	float *a = NULL, *b = NULL, *c = NULL, *host = NULL;
	const float one = 1.0f, zero = 0.0f;
	cublasHandle_t blas = NULL;
	cublasStatus_t st = CUBLAS_STATUS_SUCCESS;
	cudaEvent_t start = NULL, stop = NULL;
	cudaError_t err;
	struct mlp_rng rng;
	float ms = 0;
	int dev, rc;

	if ((rc = mlp_gpu_pick_device(&dev)) != 0)
		return rc;
	if ((err = cudaSetDevice(dev)) != cudaSuccess)
		return cuda_fail(err, "cudaSetDevice");
	if ((err = cudaMalloc((void **)&a, elems * sizeof(float))) != cudaSuccess ||
	    (err = cudaMalloc((void **)&b, elems * sizeof(float))) != cudaSuccess ||
	    (err = cudaMalloc((void **)&c, elems * sizeof(float))) != cudaSuccess) {
		rc = cuda_fail(err, "allocating the matrices");
		goto done;
	}
	/* Random operands: a GPU multiplying zeros draws less power and may
	 * clock higher than it would on real data. */
	if (chunk > elems)
		chunk = elems;
	host = xmalloc(chunk * sizeof(float));
	mlp_rng_seed(&rng, 42);
	for (size_t i = 0; i < chunk; i++)
		host[i] = 2 * mlp_rng_float(&rng) - 1;
	for (size_t off = 0; off < elems; off += chunk) {
		size_t len = elems - off < chunk ? elems - off : chunk;

		if ((err = cudaMemcpy(a + off, host, len * sizeof(float),
		                      cudaMemcpyHostToDevice)) != cudaSuccess ||
		    (err = cudaMemcpy(b + off, host, len * sizeof(float),
		                      cudaMemcpyHostToDevice)) != cudaSuccess) {
			rc = cuda_fail(err, "filling the matrices");
			goto done;
		}
	}
	if ((st = cublasCreate(&blas)) != CUBLAS_STATUS_SUCCESS ||
	    (st = cublasSetMathMode(blas, CUBLAS_DEFAULT_MATH)) != CUBLAS_STATUS_SUCCESS) {
		mlp_error_set("cuBLAS: %s", cublasGetStatusName(st));
		rc = MLP_EIO;
		goto done;
	}
	if ((err = cudaEventCreate(&start)) != cudaSuccess ||
	    (err = cudaEventCreate(&stop)) != cudaSuccess) {
		rc = cuda_fail(err, "cudaEventCreate");
		goto done;
	}
	for (int it = -2; it < iters && st == CUBLAS_STATUS_SUCCESS; it++) {
		if (it == 0)
			cudaEventRecord(start, NULL);
		st = cublasSgemm(blas, CUBLAS_OP_N, CUBLAS_OP_N, size, size, size, &one, a, size, b,
		                 size, &zero, c, size);
	}
	cudaEventRecord(stop, NULL);
	if (st != CUBLAS_STATUS_SUCCESS) {
		mlp_error_set("cuBLAS: cublasSgemm: %s", cublasGetStatusName(st));
		rc = MLP_EIO;
		goto done;
	}
	if ((err = cudaEventSynchronize(stop)) != cudaSuccess ||
	    (err = cudaEventElapsedTime(&ms, start, stop)) != cudaSuccess) {
		rc = cuda_fail(err, "timing sgemm");
		goto done;
	}
	*out_tflops = 2.0 * size * (double)size * size * iters / (ms / 1e3) / 1e12;
	printf("sgemm %dx%dx%d fp32 (no TF32): %.2f TFLOP/s (%.3f ms per call)\n", size, size, size,
	       *out_tflops, (double)ms / iters);
	rc = 0;
done:
	if (start)
		cudaEventDestroy(start);
	if (stop)
		cudaEventDestroy(stop);
	if (blas)
		cublasDestroy(blas);
	cudaFree(a);
	cudaFree(b);
	cudaFree(c);
	free(host);
	return rc;
}
