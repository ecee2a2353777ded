/*
 * kernels.cu - the GPU backend's own kernels (kernels.h): the element-wise
 * work around cuBLAS's matrix products, softmax cross-entropy with its
 * gradient, and the SGD step.
 *
 * The boundary: only kernels and their launch wrappers live here (nvcc
 * compiles this file as C++); memory, streams, cuBLAS and NCCL are driven
 * from plain C in backend-cuda.c and coll-nccl.c.
 *
 * Rounding: where backend-cpu.c's result depends on the order of float
 * operations (the SGD update, the softmax gradient), the same operations
 * are written with __fmul_rn/__fadd_rn so that nvcc does not contract them
 * into fused multiply-adds, which round once instead of twice.  The SGD
 * step is then bit-for-bit the CPU's for the same gradient.
 */
#include <math.h>
#include <stdint.h>

#include "kernels.h"

#define THREADS 256
#define WARPS_PER_BLOCK (THREADS / 32)
/* Grid-stride loops: enough blocks to fill any current GPU, no more. */
#define MAX_BLOCKS 4096

static unsigned int blocks_for(size_t count)
{
	size_t b = (count + THREADS - 1) / THREADS;

	if (b < 1)
		b = 1;
	return (unsigned int)(b > MAX_BLOCKS ? MAX_BLOCKS : b);
}

__global__ void bias_act_kernel(float *z, const float *bias, size_t count, int width, int relu)
{
	size_t stride = (size_t)gridDim.x * blockDim.x;

	for (size_t k = (size_t)blockIdx.x * blockDim.x + threadIdx.x; k < count; k += stride) {
		float v = z[k] + bias[k % (size_t)width];

		z[k] = relu && !(v > 0.0f) ? 0.0f : v;
	}
}

extern "C" cudaError_t mlp_k_bias_act(float *z, const float *bias, int n, int width, int relu,
                                      cudaStream_t s)
{
	size_t count = (size_t)n * (size_t)width;

	bias_act_kernel<<<blocks_for(count), THREADS, 0, s>>>(z, bias, count, width, relu);
	return cudaGetLastError();
}

/* The larger of two (value, index) pairs, the smaller index on ties: the
 * first arg-max, as backend-cpu.c's strict ">" scan finds it. */
__device__ static void argmax_merge(float *m, int *arg, float m2, int arg2)
{
	if (m2 > *m || (m2 == *m && arg2 < *arg)) {
		*m = m2;
		*arg = arg2;
	}
}

__global__ void softmax_xent_kernel(const float *logits, const int32_t *y, int n, int classes,
                                    float scale, float *dz, int32_t *pred,
                                    struct mlp_gpu_stats *stats)
{
	__shared__ double block_loss[WARPS_PER_BLOCK];
	__shared__ double block_correct[WARPS_PER_BLOCK];
	int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
	int row = blockIdx.x * WARPS_PER_BLOCK + warp;
	double loss = 0.0, correct = 0.0;

	if (row < n) {
		const float *lg = logits + (size_t)row * classes;
		int label = y[row];
		float m = -INFINITY;
		int arg = INT32_MAX;
		double sum = 0.0;

		for (int j = lane; j < classes; j += 32)
			argmax_merge(&m, &arg, lg[j], j);
		for (int off = 16; off > 0; off /= 2) {
			float m2 = __shfl_xor_sync(0xffffffffu, m, off);
			int arg2 = __shfl_xor_sync(0xffffffffu, arg, off);

			argmax_merge(&m, &arg, m2, arg2);
		}
		for (int j = lane; j < classes; j += 32)
			sum += exp((double)(lg[j] - m));
		for (int off = 16; off > 0; off /= 2)
			sum += __shfl_xor_sync(0xffffffffu, sum, off);
		if (dz) {
			float inv = (float)(1.0 / sum);
			float *d = dz + (size_t)row * classes;

			for (int j = lane; j < classes; j += 32) {
				float v = __fmul_rn(__fmul_rn(expf(lg[j] - m), inv), scale);

				d[j] = j == label ? __fsub_rn(v, scale) : v;
			}
		}
		if (lane == 0) {
			if (label >= 0 && label < classes) {
				loss = log(sum) - (double)(lg[label] - m);
				correct = arg == label ? 1.0 : 0.0;
			} else {
				loss = nan("");
			}
			if (pred)
				pred[row] = arg;
		}
	}
	if (lane == 0) {
		block_loss[warp] = loss;
		block_correct[warp] = correct;
	}
	__syncthreads();
	if (threadIdx.x == 0) {
		double l = 0.0, c = 0.0;

		for (int w = 0; w < WARPS_PER_BLOCK; w++) {
			l += block_loss[w];
			c += block_correct[w];
		}
		atomicAdd(&stats->loss_sum, l);
		atomicAdd(&stats->correct, c);
	}
}

extern "C" cudaError_t mlp_k_softmax_xent(const float *logits, const int32_t *y, int n,
                                          int classes, float scale, float *dz, int32_t *pred,
                                          struct mlp_gpu_stats *stats, cudaStream_t s)
{
	unsigned int blocks = (unsigned int)((n + WARPS_PER_BLOCK - 1) / WARPS_PER_BLOCK);

	softmax_xent_kernel<<<blocks, THREADS, 0, s>>>(logits, y, n, classes, scale, dz, pred,
	                                               stats);
	return cudaGetLastError();
}

__global__ void relu_mask_kernel(float *d, const float *out, size_t count)
{
	size_t stride = (size_t)gridDim.x * blockDim.x;

	for (size_t k = (size_t)blockIdx.x * blockDim.x + threadIdx.x; k < count; k += stride)
		if (!(out[k] > 0.0f))
			d[k] = 0.0f;
}

extern "C" cudaError_t mlp_k_relu_mask(float *d, const float *out, size_t count,
                                       cudaStream_t s)
{
	relu_mask_kernel<<<blocks_for(count), THREADS, 0, s>>>(d, out, count);
	return cudaGetLastError();
}

/* backend-cpu.c's sgd_plain and sgd_momentum, one element per thread: the
 * branches depend only on the arguments, so every warp takes the same. */
__global__ void sgd_kernel(float *p, const float *g, float *buf, size_t count, float lr,
                           float momentum, float wd, int first)
{
	size_t stride = (size_t)gridDim.x * blockDim.x;
	float neg_lr = -lr;

	for (size_t k = (size_t)blockIdx.x * blockDim.x + threadIdx.x; k < count; k += stride) {
		float pk = p[k];
		float d = wd == 0.0f ? g[k] : __fadd_rn(g[k], __fmul_rn(wd, pk));

		if (momentum != 0.0f) {
			float b = first ? d : __fadd_rn(__fmul_rn(buf[k], momentum), d);

			buf[k] = b;
			d = b;
		}
		p[k] = __fadd_rn(pk, __fmul_rn(neg_lr, d));
	}
}

extern "C" cudaError_t mlp_k_sgd(float *p, const float *g, float *buf, size_t count, float lr,
                                 float momentum, float wd, int first, cudaStream_t s)
{
	sgd_kernel<<<blocks_for(count), THREADS, 0, s>>>(p, g, buf, count, lr, momentum, wd,
	                                                 first);
	return cudaGetLastError();
}

__global__ void fill_kernel(float *x, size_t count, float value)
{
	size_t stride = (size_t)gridDim.x * blockDim.x;

	for (size_t k = (size_t)blockIdx.x * blockDim.x + threadIdx.x; k < count; k += stride)
		x[k] = value;
}

extern "C" cudaError_t mlp_k_fill(float *x, size_t count, float value, cudaStream_t s)
{
	fill_kernel<<<blocks_for(count), THREADS, 0, s>>>(x, count, value);
	return cudaGetLastError();
}

__device__ static unsigned long long global_ns(void)
{
	unsigned long long t;

	asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
	return t;
}

__global__ void sleep_kernel(unsigned long long ns)
{
	unsigned long long start = global_ns();

	while (global_ns() - start < ns)
		__nanosleep(100000);
}

extern "C" cudaError_t mlp_k_sleep(int ms, cudaStream_t s)
{
	sleep_kernel<<<1, 1, 0, s>>>((unsigned long long)ms * 1000000ull);
	return cudaGetLastError();
}
