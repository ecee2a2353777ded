/*
 * kernels.h - the CUDA kernels of mlpipe-train's GPU backend and their
 * launch wrappers (kernels.cu, compiled by nvcc; everything else calling
 * the CUDA runtime is plain C).
 *
 * Matrices are row-major, n rows (samples) by width columns, as in
 * backend-cpu.c; the matrix products themselves go through cuBLAS in
 * backend-cuda.c.  Every wrapper enqueues on the given stream and returns
 * the launch's cudaError_t (cudaSuccess, or why the launch failed); it
 * never synchronises.  Arithmetic is float32 and mirrors backend-cpu.c
 * operation for operation where that decides the rounding (the SGD step).
 */
#ifndef MLP_TRAIN_KERNELS_H
#define MLP_TRAIN_KERNELS_H

#include <cuda_runtime.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* What the softmax cross-entropy kernel adds up over its rows. */
struct mlp_gpu_stats {
	double loss_sum; /* sum of per-sample losses */
	double correct;  /* rows whose arg-max is the label */
};

/* z[i][j] = max(z[i][j] + bias[j], 0), or without the max when relu is 0. */
cudaError_t mlp_k_bias_act(float *z, const float *bias, int n, int width, int relu, cudaStream_t s);

/*
 * Softmax cross-entropy over n rows of classes logits, one warp per row:
 * adds each row's loss -log softmax(logits)[y] and whether its arg-max
 * (the first on ties) equals y to *stats; writes the arg-max to pred[i]
 * when pred is not NULL; and, when dz is not NULL, writes
 * dz = (softmax - onehot(y)) * scale.  A label outside 0..classes-1 makes
 * that row's loss NaN (train.c checks labels before this).
 */
cudaError_t mlp_k_softmax_xent(const float *logits, const int32_t *y, int n, int classes,
                               float scale, float *dz, int32_t *pred, struct mlp_gpu_stats *stats,
                               cudaStream_t s);

/* ReLU's derivative: d[k] = 0 where out[k] <= 0, for k < count. */
cudaError_t mlp_k_relu_mask(float *d, const float *out, size_t count, cudaStream_t s);

/*
 * One torch.optim.SGD step over count parameters (backend.h): g' = g +
 * wd * p; without momentum p -= lr * g'; with it buf = g' on the first
 * step (first != 0), else buf = momentum * buf + g', then p -= lr * buf.
 * buf may be NULL when momentum is 0.
 */
cudaError_t mlp_k_sgd(float *p, const float *g, float *buf, size_t count, float lr, float momentum,
                      float wd, int first, cudaStream_t s);

/* Fills count floats with value (the ones vector of the bias gradient). */
cudaError_t mlp_k_fill(float *x, size_t count, float value, cudaStream_t s);

/* Occupies the stream for about ms milliseconds (one thread sleeping on
 * the GPU's global timer): only for testing the NCCL watchdog. */
cudaError_t mlp_k_sleep(int ms, cudaStream_t s);

#ifdef __cplusplus
}
#endif

#endif
