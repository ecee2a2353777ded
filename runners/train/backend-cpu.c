/*
 * backend-cpu.c - the CPU compute backend: every matrix product through
 * BLAS (cblas_sgemm), the element-wise work in plain loops (backend.h).
 *
 * All buffers are allocated once in create(), sized for max_batch, so a
 * training step allocates nothing.  Matrices are row-major and products
 * use sgemm's transpose flags instead of transposed copies:
 *
 *   forward    Z_l  = A_{l-1} W_l^T          (n x out) = (n x in)(in x out)
 *   weights    dW_l = dZ_l^T A_{l-1}         (out x in) = (out x n)(n x in)
 *   inputs     dA_{l-1} = dZ_l W_l           (n x in) = (n x out)(out x in)
 *
 * The bias add is fused with ReLU in one pass over Z, the ReLU derivative
 * with the dA product's output, and softmax with the loss and its
 * gradient.  The input layer's dA is never computed.  Threads are BLAS's
 * own: OpenBLAS follows OPENBLAS_NUM_THREADS / OMP_NUM_THREADS, which the
 * launcher sets to 1 per rank.
 */
#include "config.h"

/* GCC's -O2 (12 and later) vectorizes only loops whose trip count is a
 * known multiple of the vector width; the element-wise kernels here run
 * over layer widths and parameter counts, and vectorized they make the
 * step ~1.4x faster.  Ask for the usual cost model in this file. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("tree-vectorize", "vect-cost-model=dynamic")
#endif

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "base/error.h"
#include "base/util.h"

struct cpu_backend {
	struct mlp_train_backend base;
	struct mlp_shape shape;
	int layers; /* nsizes - 1 */
	int max_batch;
	size_t nparams;
	float *params;   /* flat, model.h layout */
	float *grad;     /* same layout */
	float *momentum; /* same layout; valid once have_momentum */
	bool have_momentum;
	size_t woff[MLP_MODEL_MAX_SIZES]; /* per layer l (1-based) */
	size_t boff[MLP_MODEL_MAX_SIZES];
	float *act[MLP_MODEL_MAX_SIZES]; /* act[l]: n x sizes[l], ReLU'd except the last */
	float *delta[2];                 /* dZ ping-pong, n x max width */
};

static bool cpu_available(void)
{
	return true;
}

static void cpu_destroy(struct mlp_train_backend *base)
{
	struct cpu_backend *b = (struct cpu_backend *)base;

	if (b == NULL)
		return;
	free(b->params);
	free(b->grad);
	free(b->momentum);
	for (int l = 1; l <= b->layers; l++)
		free(b->act[l]);
	free(b->delta[0]);
	free(b->delta[1]);
	free(b);
}

static int cpu_create(struct mlp_train_backend **out, const struct mlp_shape *shape, int max_batch)
{
	struct cpu_backend *b;
	size_t widest = 0;
	int rc = mlp_shape_check(shape);

	if (rc != 0)
		return rc;
	if (max_batch < 1) {
		mlp_error_set("batch size must be at least 1");
		return MLP_EINVAL;
	}
	b = xcalloc(1, sizeof(*b));
	b->base.ops = &mlp_train_backend_cpu;
	b->shape = *shape;
	b->layers = shape->nsizes - 1;
	b->max_batch = max_batch;
	b->nparams = mlp_shape_nparams(shape);
	b->params = xcalloc(b->nparams, sizeof(float));
	b->grad = xcalloc(b->nparams, sizeof(float));
	b->momentum = xcalloc(b->nparams, sizeof(float));
	for (int l = 1; l <= b->layers; l++) {
		size_t w = (size_t)shape->sizes[l];

		b->woff[l] = mlp_shape_weight_offset(shape, l);
		b->boff[l] = mlp_shape_bias_offset(shape, l);
		b->act[l] = xmalloc((size_t)max_batch * w * sizeof(float));
		if (w > widest)
			widest = w;
	}
	b->delta[0] = xmalloc((size_t)max_batch * widest * sizeof(float));
	b->delta[1] = xmalloc((size_t)max_batch * widest * sizeof(float));
	*out = &b->base;
	return 0;
}

static int cpu_set_params(struct mlp_train_backend *base, const float *params)
{
	struct cpu_backend *b = (struct cpu_backend *)base;

	memcpy(b->params, params, b->nparams * sizeof(float));
	b->have_momentum = false;
	return 0;
}

static int cpu_get_params(struct mlp_train_backend *base, float *params)
{
	struct cpu_backend *b = (struct cpu_backend *)base;

	memcpy(params, b->params, b->nparams * sizeof(float));
	return 0;
}

static float *cpu_grad(struct mlp_train_backend *base)
{
	return ((struct cpu_backend *)base)->grad;
}

/*
 * The element-wise kernels: plain loops over restrict pointers with no
 * branches inside, so that the compiler vectorizes them.
 */
static void bias_relu(float *restrict z, const float *restrict bias, int n, int width)
{
	for (int i = 0; i < n; i++) {
		float *restrict row = z + (size_t)i * width;

		for (int j = 0; j < width; j++) {
			float v = row[j] + bias[j];

			row[j] = v > 0.0f ? v : 0.0f;
		}
	}
}

static void bias_add(float *restrict z, const float *restrict bias, int n, int width)
{
	for (int i = 0; i < n; i++) {
		float *restrict row = z + (size_t)i * width;

		for (int j = 0; j < width; j++)
			row[j] += bias[j];
	}
}

/* sum[j] = sum over rows of m[i][j]: the bias gradient. */
static void column_sums(float *restrict sum, const float *restrict m, int n, int width)
{
	memcpy(sum, m, (size_t)width * sizeof(float));
	for (int i = 1; i < n; i++) {
		const float *restrict row = m + (size_t)i * width;

		for (int j = 0; j < width; j++)
			sum[j] += row[j];
	}
}

/* ReLU's derivative: zero the gradient where the forward output was not
 * positive. */
static void relu_mask(float *restrict d, const float *restrict out, size_t n)
{
	for (size_t k = 0; k < n; k++)
		d[k] = out[k] > 0.0f ? d[k] : 0.0f;
}

/* Z = A W^T + b into act[l], ReLU'd unless l is the last layer. */
static void forward(struct cpu_backend *b, const float *x, int n)
{
	const float *in = x;

	for (int l = 1; l <= b->layers; l++) {
		int fan_in = b->shape.sizes[l - 1], width = b->shape.sizes[l];
		const float *w = b->params + b->woff[l];
		const float *bias = b->params + b->boff[l];
		float *z = b->act[l];

		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, width, fan_in, 1.0f, in,
		            fan_in, w, fan_in, 0.0f, z, width);
		if (l < b->layers)
			bias_relu(z, bias, n, width);
		else
			bias_add(z, bias, n, width);
		in = z;
	}
}

/*
 * Softmax cross-entropy of the logits row against label y: returns the
 * loss, sets *pred to the arg-max (the first on ties) and, when dz is not
 * NULL, writes (softmax - onehot) * scale.  Computed with the maximum
 * subtracted, so that no exp overflows.
 */
static double softmax_xent(const float *logits, int classes, int32_t y, float scale, float *dz,
                           int32_t *pred)
{
	float m = logits[0];
	int arg = 0;
	double sum = 0.0;

	for (int j = 1; j < classes; j++) {
		if (logits[j] > m) {
			m = logits[j];
			arg = j;
		}
	}
	for (int j = 0; j < classes; j++)
		sum += exp((double)(logits[j] - m));
	*pred = arg;
	if (dz) {
		float inv = (float)(1.0 / sum);

		for (int j = 0; j < classes; j++)
			dz[j] = expf(logits[j] - m) * inv * scale;
		dz[y] -= scale;
	}
	return log(sum) - (double)(logits[y] - m);
}

static int cpu_train_batch(struct mlp_train_backend *base, const float *x, const int32_t *y, int n,
                           struct mlp_batch_stats *stats)
{
	struct cpu_backend *b = (struct cpu_backend *)base;
	int classes = b->shape.sizes[b->layers];
	float scale = 1.0f / (float)n;
	float *dz = b->delta[0], *da = b->delta[1];
	double loss = 0.0, correct = 0.0;

	if (n < 1 || n > b->max_batch) {
		mlp_error_set("batch of %d samples (this backend takes 1 to %d)", n, b->max_batch);
		return MLP_EINVAL;
	}
	forward(b, x, n);
	for (int i = 0; i < n; i++) {
		int32_t pred;

		loss += softmax_xent(b->act[b->layers] + (size_t)i * classes, classes, y[i], scale,
		                     dz + (size_t)i * classes, &pred);
		correct += pred == y[i];
	}
	for (int l = b->layers; l >= 1; l--) {
		int fan_in = b->shape.sizes[l - 1], width = b->shape.sizes[l];
		const float *ain = l == 1 ? x : b->act[l - 1];
		float *gw = b->grad + b->woff[l];
		float *gb = b->grad + b->boff[l];

		cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, width, fan_in, n, 1.0f, dz,
		            width, ain, fan_in, 0.0f, gw, fan_in);
		column_sums(gb, dz, n, width);
		if (l > 1) {
			const float *w = b->params + b->woff[l];
			float *tmp;

			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, fan_in, width,
			            1.0f, dz, width, w, fan_in, 0.0f, da, fan_in);
			relu_mask(da, ain, (size_t)n * (size_t)fan_in);
			tmp = dz;
			dz = da;
			da = tmp;
		}
	}
	stats->loss_sum += loss;
	stats->correct += correct;
	return 0;
}

/*
 * torch.optim.SGD's single-tensor path, operation for operation, so that
 * float rounding matches too: d = g + wd * p; buf = d (first step) or
 * buf = m * buf + d; p = p + (-lr) * buf.  One loop per case keeps the
 * loops branch-free.
 */
static void sgd_plain(float *restrict p, const float *restrict g, size_t n, float lr, float wd)
{
	if (wd == 0.0f) {
		for (size_t i = 0; i < n; i++)
			p[i] = p[i] + -lr * g[i];
	} else {
		for (size_t i = 0; i < n; i++)
			p[i] = p[i] + -lr * (g[i] + wd * p[i]);
	}
}

static void sgd_momentum(float *restrict p, const float *restrict g, float *restrict buf, size_t n,
                         float lr, float m, float wd, bool first)
{
	if (first && wd == 0.0f) {
		for (size_t i = 0; i < n; i++) {
			buf[i] = g[i];
			p[i] = p[i] + -lr * g[i];
		}
	} else if (first) {
		for (size_t i = 0; i < n; i++) {
			buf[i] = g[i] + wd * p[i];
			p[i] = p[i] + -lr * buf[i];
		}
	} else if (wd == 0.0f) {
		for (size_t i = 0; i < n; i++) {
			buf[i] = buf[i] * m + g[i];
			p[i] = p[i] + -lr * buf[i];
		}
	} else {
		for (size_t i = 0; i < n; i++) {
			buf[i] = buf[i] * m + (g[i] + wd * p[i]);
			p[i] = p[i] + -lr * buf[i];
		}
	}
}

static int cpu_sgd_step(struct mlp_train_backend *base, const struct mlp_sgd *opt)
{
	struct cpu_backend *b = (struct cpu_backend *)base;

	if (opt->momentum == 0.0f) {
		sgd_plain(b->params, b->grad, b->nparams, opt->lr, opt->weight_decay);
	} else {
		sgd_momentum(b->params, b->grad, b->momentum, b->nparams, opt->lr, opt->momentum,
		             opt->weight_decay, !b->have_momentum);
		b->have_momentum = true;
	}
	return 0;
}

static int cpu_predict(struct mlp_train_backend *base, const float *x, const int32_t *y, int n,
                       int32_t *pred, struct mlp_batch_stats *stats)
{
	struct cpu_backend *b = (struct cpu_backend *)base;
	int classes = b->shape.sizes[b->layers];
	double loss = 0.0, correct = 0.0;

	if (n < 1 || n > b->max_batch) {
		mlp_error_set("batch of %d samples (this backend takes 1 to %d)", n, b->max_batch);
		return MLP_EINVAL;
	}
	forward(b, x, n);
	for (int i = 0; i < n; i++) {
		int32_t p;

		loss += softmax_xent(b->act[b->layers] + (size_t)i * classes, classes, y[i], 1.0f,
		                     NULL, &p);
		correct += p == y[i];
		if (pred)
			pred[i] = p;
	}
	stats->loss_sum += loss;
	stats->correct += correct;
	return 0;
}

const struct mlp_train_backend_ops mlp_train_backend_cpu = {
        .name = "cpu",
        .grad_on_device = false,
        .available = cpu_available,
        .create = cpu_create,
        .destroy = cpu_destroy,
        .set_params = cpu_set_params,
        .get_params = cpu_get_params,
        .train_batch = cpu_train_batch,
        .grad = cpu_grad,
        .sgd_step = cpu_sgd_step,
        .predict = cpu_predict,
};
