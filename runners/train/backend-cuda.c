/*
 * backend-cuda.c - the GPU compute backend (backend.h): every matrix
 * product through cuBLAS, the element-wise work in our kernels
 * (kernels.cu), all on one CUDA stream.
 *
 * Everything lives in device memory, allocated once in create(): the
 * parameters, the flat gradient (model.h layout, so that NCCL averages it
 * in place: grad_on_device), the momentum buffer, the activations and the
 * input batch.  Matrices are row-major as in backend-cpu.c; cuBLAS is
 * column-major, and a row-major M is the column-major M^T, so each product
 * C = A B is issued as C^T = B^T A^T with the same buffers:
 *
 *   forward  Z  = A W^T   sgemm(T, N, out, n, in,  W, A)   -> Z^T
 *   weights  dW = dZ^T A  sgemm(N, T, in, out, n,  A, dZ)  -> dW^T
 *   inputs   dA = dZ W    sgemm(N, N, in, n, out,  W, dZ)  -> dA^T
 *   bias     db = dZ^T 1  sgemv(N, out, n, dZ, ones)
 *
 * Math is plain FP32: cuBLAS runs in CUBLAS_DEFAULT_MATH, which never uses
 * TF32 tensor cores, so results agree with the CPU backend to float
 * rounding (docs/gpu.md).
 *
 * A batch arrives in host memory: it is copied into pinned staging memory
 * (or, when the caller trains from one buffer, that buffer is page-locked
 * instead) and from there to the device with an asynchronous copy.  train_batch
 * waits only until the loss is known (an event after the softmax kernel and
 * the copy of its two sums), not for the backward pass: the caller gathers
 * the next batch while the GPU finishes this one.  By then this batch's
 * upload is done, so one staging buffer is enough; the next upload is
 * ordered after the backward pass by the stream.
 */
#include "config.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "base/error.h"
#include "gpu.h"
#include "kernels.h"
#include "base/util.h"

struct cuda_backend {
	struct mlp_train_backend base;
	struct mlp_shape shape;
	int layers;
	int max_batch;
	size_t nparams;
	cudaStream_t stream;
	cublasHandle_t blas;
	cudaEvent_t loss_ready; /* the batch's loss sums have reached the host */
	void *device_block;     /* one allocation, carved below */
	void *host_block;       /* pinned */
	/* device */
	float *params, *grad, *momentum;
	bool have_momentum;
	size_t woff[MLP_MODEL_MAX_SIZES];
	size_t boff[MLP_MODEL_MAX_SIZES];
	float *act[MLP_MODEL_MAX_SIZES]; /* act[l]: n x sizes[l] */
	float *delta[2];                 /* dZ ping-pong, n x widest */
	float *x;                        /* n x sizes[0] */
	int32_t *y, *pred;
	float *ones; /* max_batch ones: the bias gradient's sgemv */
	struct mlp_gpu_stats *stats;
	/* pinned host */
	float *x_host;
	int32_t *y_host, *pred_host;
	struct mlp_gpu_stats *stats_host;
	/* The caller's batch buffer, page-locked (see upload()). */
	const float *seen_x; /* x of the previous train_batch */
	void *registered_x;
	size_t registered_bytes;
};

static int cuda_check(cudaError_t err, const char *what)
{
	if (err == cudaSuccess)
		return 0;
	mlp_error_set("CUDA: %s: %s", what, cudaGetErrorString(err));
	return MLP_EIO;
}

static int blas_check(cublasStatus_t st, const char *what)
{
	if (st == CUBLAS_STATUS_SUCCESS)
		return 0;
	mlp_error_set("cuBLAS: %s: %s", what, cublasGetStatusName(st));
	return MLP_EIO;
}

static bool cuda_available(void)
{
	return mlp_gpu_usable_by_all_local_ranks() != 0;
}

static void cuda_destroy(struct mlp_train_backend *base)
{
	struct cuda_backend *b = (struct cuda_backend *)base;

	if (b == NULL)
		return;
	if (b->stream)
		cudaStreamSynchronize(b->stream);
	if (b->registered_x)
		cudaHostUnregister(b->registered_x);
	if (b->blas)
		cublasDestroy(b->blas);
	if (b->loss_ready)
		cudaEventDestroy(b->loss_ready);
	if (b->stream)
		cudaStreamDestroy(b->stream);
	cudaFree(b->device_block);
	cudaFreeHost(b->host_block);
	free(b);
}

/* Hands out aligned pieces of one allocation (or, with base NULL, only
 * counts how big it must be). */
struct carver {
	char *base;
	size_t used;
};

static void *carve(struct carver *c, size_t bytes)
{
	void *p = c->base ? c->base + c->used : NULL;

	c->used += (bytes + 255) & ~(size_t)255;
	return p;
}

static void carve_device(struct cuda_backend *b, struct carver *c, size_t widest)
{
	size_t mb = (size_t)b->max_batch;

	b->params = carve(c, b->nparams * sizeof(float));
	b->grad = carve(c, b->nparams * sizeof(float));
	b->momentum = carve(c, b->nparams * sizeof(float));
	for (int l = 1; l <= b->layers; l++)
		b->act[l] = carve(c, mb * (size_t)b->shape.sizes[l] * sizeof(float));
	b->delta[0] = carve(c, mb * widest * sizeof(float));
	b->delta[1] = carve(c, mb * widest * sizeof(float));
	b->x = carve(c, mb * (size_t)b->shape.sizes[0] * sizeof(float));
	b->y = carve(c, mb * sizeof(int32_t));
	b->pred = carve(c, mb * sizeof(int32_t));
	b->ones = carve(c, mb * sizeof(float));
	b->stats = carve(c, sizeof(struct mlp_gpu_stats));
}

static void carve_host(struct cuda_backend *b, struct carver *c)
{
	size_t mb = (size_t)b->max_batch;

	b->x_host = carve(c, mb * (size_t)b->shape.sizes[0] * sizeof(float));
	b->y_host = carve(c, mb * sizeof(int32_t));
	b->pred_host = carve(c, mb * sizeof(int32_t));
	b->stats_host = carve(c, sizeof(struct mlp_gpu_stats));
}

static int cuda_create(struct mlp_train_backend **out, const struct mlp_shape *shape, int max_batch)
{
	struct cuda_backend *b;
	struct carver dev = {0}, host = {0};
	size_t widest = 0;
	int device, rc = mlp_shape_check(shape);

	if (rc != 0)
		return rc;
	if (max_batch < 1) {
		mlp_error_set("batch size must be at least 1");
		return MLP_EINVAL;
	}
	if ((rc = mlp_gpu_pick_device(&device)) != 0)
		return rc;
	b = xcalloc(1, sizeof(*b));
	b->base.ops = &mlp_train_backend_cuda;
	b->shape = *shape;
	b->layers = shape->nsizes - 1;
	b->max_batch = max_batch;
	b->nparams = mlp_shape_nparams(shape);
	for (int l = 1; l <= b->layers; l++) {
		b->woff[l] = mlp_shape_weight_offset(shape, l);
		b->boff[l] = mlp_shape_bias_offset(shape, l);
		if ((size_t)shape->sizes[l] > widest)
			widest = (size_t)shape->sizes[l];
	}
	carve_device(b, &dev, widest);
	carve_host(b, &host);
	if ((rc = cuda_check(cudaSetDevice(device), "cudaSetDevice")) != 0 ||
	    (rc = cuda_check(cudaStreamCreateWithFlags(&b->stream, cudaStreamNonBlocking),
	                     "cudaStreamCreate")) != 0 ||
	    (rc = cuda_check(cudaEventCreateWithFlags(&b->loss_ready, cudaEventDisableTiming),
	                     "cudaEventCreate")) != 0 ||
	    (rc = cuda_check(cudaMalloc(&b->device_block, dev.used),
	                     "allocating the model's device memory")) != 0 ||
	    (rc = cuda_check(cudaMallocHost(&b->host_block, host.used),
	                     "allocating pinned staging memory")) != 0 ||
	    (rc = blas_check(cublasCreate(&b->blas), "cublasCreate")) != 0 ||
	    (rc = blas_check(cublasSetStream(b->blas, b->stream), "cublasSetStream")) != 0 ||
	    (rc = blas_check(cublasSetMathMode(b->blas, CUBLAS_DEFAULT_MATH),
	                     "cublasSetMathMode")) != 0)
		goto fail;
	dev = (struct carver){.base = b->device_block};
	host = (struct carver){.base = b->host_block};
	carve_device(b, &dev, widest);
	carve_host(b, &host);
	if ((rc = cuda_check(cudaMemsetAsync(b->device_block, 0, dev.used, b->stream),
	                     "cudaMemset")) != 0 ||
	    (rc = cuda_check(mlp_k_fill(b->ones, (size_t)max_batch, 1.0f, b->stream),
	                     "fill kernel")) != 0 ||
	    (rc = cuda_check(cudaStreamSynchronize(b->stream), "initialising the model")) != 0)
		goto fail;
	*out = &b->base;
	return 0;
fail:
	cuda_destroy(&b->base);
	return rc;
}

static int cuda_set_params(struct mlp_train_backend *base, const float *params)
{
	struct cuda_backend *b = (struct cuda_backend *)base;
	int rc;

	if ((rc = cuda_check(cudaMemcpyAsync(b->params, params, b->nparams * sizeof(float),
	                                     cudaMemcpyHostToDevice, b->stream),
	                     "copying parameters to the GPU")) != 0 ||
	    (rc = cuda_check(cudaStreamSynchronize(b->stream), "copying parameters to the GPU")) !=
	            0)
		return rc;
	b->have_momentum = false;
	return 0;
}

static int cuda_get_params(struct mlp_train_backend *base, float *params)
{
	struct cuda_backend *b = (struct cuda_backend *)base;
	int rc;

	if ((rc = cuda_check(cudaMemcpyAsync(params, b->params, b->nparams * sizeof(float),
	                                     cudaMemcpyDeviceToHost, b->stream),
	                     "copying parameters from the GPU")) != 0)
		return rc;
	return cuda_check(cudaStreamSynchronize(b->stream), "copying parameters from the GPU");
}

static float *cuda_grad(struct mlp_train_backend *base)
{
	return ((struct cuda_backend *)base)->grad;
}

static int check_batch(const struct cuda_backend *b, int n)
{
	if (n < 1 || n > b->max_batch) {
		mlp_error_set("batch of %d samples (this backend takes 1 to %d)", n, b->max_batch);
		return MLP_EINVAL;
	}
	return 0;
}

/*
 * Page-locks the caller's batch buffer when it hands the same one twice in
 * a row (train.c gathers every step into one buffer), so that the upload is
 * one DMA from it instead of a copy into our staging memory first: at batch
 * 1024 of 784 features that copy is 3 MB of host memory traffic per step.
 * Returns whether x is page-locked for xbytes; any failure just means no.
 */
static bool pin_caller_batch(struct cuda_backend *b, const float *x, size_t xbytes)
{
	bool again = x == b->seen_x;

	b->seen_x = x;
	if (x == b->registered_x && xbytes <= b->registered_bytes)
		return true;
	if (!again)
		return false;
	if (b->registered_x) {
		cudaHostUnregister(b->registered_x);
		b->registered_x = NULL;
	}
	if (cudaHostRegister((void *)x, xbytes, cudaHostRegisterDefault) != cudaSuccess) {
		cudaGetLastError();
		return false;
	}
	b->registered_x = (void *)x;
	b->registered_bytes = xbytes;
	return true;
}

/* Uploads x and y (through pinned memory) and clears the loss sums.  The
 * caller's x may be read by the GPU until the loss is ready, which is
 * before train_batch and predict return. */
static int upload(struct cuda_backend *b, const float *x, const int32_t *y, int n, bool may_pin)
{
	size_t xbytes = (size_t)n * (size_t)b->shape.sizes[0] * sizeof(float);
	size_t ybytes = (size_t)n * sizeof(int32_t);
	const float *src = x;
	int rc;

	if (!may_pin || !pin_caller_batch(b, x, xbytes)) {
		memcpy(b->x_host, x, xbytes);
		src = b->x_host;
	}
	memcpy(b->y_host, y, ybytes);
	if ((rc = cuda_check(cudaMemcpyAsync(b->x, src, xbytes, cudaMemcpyHostToDevice, b->stream),
	                     "copying a batch to the GPU")) != 0 ||
	    (rc = cuda_check(
	             cudaMemcpyAsync(b->y, b->y_host, ybytes, cudaMemcpyHostToDevice, b->stream),
	             "copying a batch to the GPU")) != 0)
		return rc;
	return cuda_check(cudaMemsetAsync(b->stats, 0, sizeof(*b->stats), b->stream), "cudaMemset");
}

/* Z = A W^T + b into act[l], ReLU'd unless l is the last layer. */
static int forward(struct cuda_backend *b, int n)
{
	const float one = 1.0f, zero = 0.0f;
	const float *in = b->x;
	int rc;

	for (int l = 1; l <= b->layers; l++) {
		int fan_in = b->shape.sizes[l - 1], width = b->shape.sizes[l];

		if ((rc = blas_check(cublasSgemm(b->blas, CUBLAS_OP_T, CUBLAS_OP_N, width, n,
		                                 fan_in, &one, b->params + b->woff[l], fan_in, in,
		                                 fan_in, &zero, b->act[l], width),
		                     "forward sgemm")) != 0 ||
		    (rc = cuda_check(mlp_k_bias_act(b->act[l], b->params + b->boff[l], n, width,
		                                    l < b->layers, b->stream),
		                     "bias kernel")) != 0)
			return rc;
		in = b->act[l];
	}
	return 0;
}

/* Brings the loss sums (and, with pred, the predictions) to the host:
 * enqueued; loss_ready fires when they are there. */
static int download_stats(struct cuda_backend *b, int n, bool with_pred)
{
	int rc;

	if (with_pred &&
	    (rc = cuda_check(cudaMemcpyAsync(b->pred_host, b->pred, (size_t)n * sizeof(int32_t),
	                                     cudaMemcpyDeviceToHost, b->stream),
	                     "copying predictions from the GPU")) != 0)
		return rc;
	if ((rc = cuda_check(cudaMemcpyAsync(b->stats_host, b->stats, sizeof(*b->stats),
	                                     cudaMemcpyDeviceToHost, b->stream),
	                     "copying the loss from the GPU")) != 0)
		return rc;
	return cuda_check(cudaEventRecord(b->loss_ready, b->stream), "cudaEventRecord");
}

static int backward(struct cuda_backend *b, int n)
{
	const float one = 1.0f, zero = 0.0f;
	float *dz = b->delta[0], *da = b->delta[1];
	int rc;

	for (int l = b->layers; l >= 1; l--) {
		int fan_in = b->shape.sizes[l - 1], width = b->shape.sizes[l];
		const float *ain = l == 1 ? b->x : b->act[l - 1];

		if ((rc = blas_check(cublasSgemm(b->blas, CUBLAS_OP_N, CUBLAS_OP_T, fan_in, width,
		                                 n, &one, ain, fan_in, dz, width, &zero,
		                                 b->grad + b->woff[l], fan_in),
		                     "weight-gradient sgemm")) != 0 ||
		    (rc = blas_check(cublasSgemv(b->blas, CUBLAS_OP_N, width, n, &one, dz, width,
		                                 b->ones, 1, &zero, b->grad + b->boff[l], 1),
		                     "bias-gradient sgemv")) != 0)
			return rc;
		if (l > 1) {
			float *tmp;

			if ((rc = blas_check(cublasSgemm(b->blas, CUBLAS_OP_N, CUBLAS_OP_N, fan_in,
			                                 n, width, &one, b->params + b->woff[l],
			                                 fan_in, dz, width, &zero, da, fan_in),
			                     "input-gradient sgemm")) != 0 ||
			    (rc = cuda_check(mlp_k_relu_mask(da, ain, (size_t)n * (size_t)fan_in,
			                                     b->stream),
			                     "ReLU-gradient kernel")) != 0)
				return rc;
			tmp = dz;
			dz = da;
			da = tmp;
		}
	}
	return 0;
}

static int wait_loss(struct cuda_backend *b, struct mlp_batch_stats *stats)
{
	int rc = cuda_check(cudaEventSynchronize(b->loss_ready), "a training step on the GPU");

	if (rc != 0)
		return rc;
	stats->loss_sum += b->stats_host->loss_sum;
	stats->correct += b->stats_host->correct;
	return 0;
}

static int cuda_train_batch(struct mlp_train_backend *base, const float *x, const int32_t *y, int n,
                            struct mlp_batch_stats *stats)
{
	struct cuda_backend *b = (struct cuda_backend *)base;
	int classes = b->shape.sizes[b->layers];
	int rc;

	if ((rc = check_batch(b, n)) != 0 || (rc = upload(b, x, y, n, true)) != 0 ||
	    (rc = forward(b, n)) != 0 ||
	    (rc = cuda_check(mlp_k_softmax_xent(b->act[b->layers], b->y, n, classes,
	                                        1.0f / (float)n, b->delta[0], NULL, b->stats,
	                                        b->stream),
	                     "softmax kernel")) != 0 ||
	    (rc = download_stats(b, n, false)) != 0 || (rc = backward(b, n)) != 0)
		return rc;
	return wait_loss(b, stats);
}

static int cuda_sgd_step(struct mlp_train_backend *base, const struct mlp_sgd *opt)
{
	struct cuda_backend *b = (struct cuda_backend *)base;
	int rc = cuda_check(mlp_k_sgd(b->params, b->grad, b->momentum, b->nparams, opt->lr,
	                              opt->momentum, opt->weight_decay, !b->have_momentum,
	                              b->stream),
	                    "SGD kernel");

	if (rc == 0 && opt->momentum != 0.0f)
		b->have_momentum = true;
	return rc;
}

static int cuda_predict(struct mlp_train_backend *base, const float *x, const int32_t *y, int n,
                        int32_t *pred, struct mlp_batch_stats *stats)
{
	struct cuda_backend *b = (struct cuda_backend *)base;
	int classes = b->shape.sizes[b->layers];
	int rc;

	if ((rc = check_batch(b, n)) != 0 || (rc = upload(b, x, y, n, false)) != 0 ||
	    (rc = forward(b, n)) != 0 ||
	    (rc = cuda_check(mlp_k_softmax_xent(b->act[b->layers], b->y, n, classes, 1.0f, NULL,
	                                        pred ? b->pred : NULL, b->stats, b->stream),
	                     "softmax kernel")) != 0 ||
	    (rc = download_stats(b, n, pred != NULL)) != 0 || (rc = wait_loss(b, stats)) != 0)
		return rc;
	if (pred)
		memcpy(pred, b->pred_host, (size_t)n * sizeof(int32_t));
	return 0;
}

const struct mlp_train_backend_ops mlp_train_backend_cuda = {
        .name = "cuda",
        .grad_on_device = true,
        .available = cuda_available,
        .create = cuda_create,
        .destroy = cuda_destroy,
        .set_params = cuda_set_params,
        .get_params = cuda_get_params,
        .train_batch = cuda_train_batch,
        .grad = cuda_grad,
        .sgd_step = cuda_sgd_step,
        .predict = cuda_predict,
};
