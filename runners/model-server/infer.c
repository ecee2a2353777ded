/*
 * infer.c - a served model: decoding the model file into the layout the
 * forward pass reads, and the forward pass itself (model-server.h).
 *
 * Why not cblas_sgemm: OpenBLAS computes a row's dot products in an order
 * that depends on how many rows the call has (its kernels tile the rows),
 * so the same row gave different last bits alone and in a batch (measured:
 * rows of an M >= 4 call differ from M = 1).  Here every output element is
 * one dot product summed in a fixed order -- LANES partial sums over k,
 * then a fixed pairwise reduction -- whatever the batch, so batching never
 * changes an answer.  It is cheap enough: for 784x256 about 25 us a row
 * against sgemm's 8-13 us a row at 64 rows, and faster than sgemm for a
 * lone row (sgemm packs the whole weight matrix per call: ~150 us).  A
 * batch still pays off: four outputs' weight rows stay in cache while all
 * the batch's rows stream past them.
 *
 * The bias and ReLU follow in the order mlpipe-train's CPU backend uses
 * (runners/train/backend-cpu.c); its logits and ours agree to float
 * rounding, and the classes on the test set are the same
 * (tests/functional/model-server.sh).
 */
#include "config.h"

/* GCC's -O2 (12) vectorizes only with the very cheap cost model; the
 * partial sums below are independent lanes, vectorized without changing
 * a single rounding (no -ffast-math, and no FMA in either clone). */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("tree-vectorize", "vect-cost-model=dynamic")
#endif

#include <stdlib.h>
#include <string.h>

#include "base/crypto.h"
#include "base/error.h"
#include "base/util.h"
#include "model-server.h"

int ms_model_open(struct ms_model **out, const uint8_t *data, size_t len, const char *name)
{
	struct ms_model *m = xcalloc(1, sizeof(*m));
	size_t off = 0;
	int rc;

	*out = NULL;
	if ((rc = mlp_model_decode(&m->shape, &m->params, data, len, name)) != 0) {
		free(m);
		return rc;
	}
	m->layers = m->shape.nsizes - 1;
	for (int l = 1; l <= m->layers; l++) {
		int fan_in = m->shape.sizes[l - 1], width = m->shape.sizes[l];

		m->woff[l] = off;
		off += (size_t)width * (size_t)fan_in;
		m->boff[l] = off;
		off += (size_t)width;
		if (width > m->widest)
			m->widest = width;
	}
	mlp_sha256_hex(m->sha256, data, len);
	mlp_shape_format(m->shape_text, sizeof(m->shape_text), &m->shape);
	*out = m;
	return 0;
}

void ms_model_free(struct ms_model *m)
{
	if (m == NULL)
		return;
	free(m->params);
	free(m);
}

int ms_model_features(const struct ms_model *m)
{
	return m->shape.sizes[0];
}

int ms_model_classes(const struct ms_model *m)
{
	return m->shape.sizes[m->layers];
}

size_t ms_model_scratch(const struct ms_model *m, int n)
{
	return 2 * (size_t)n * (size_t)m->widest;
}

#define LANES 16

/* The fixed-order sum of the partial sums a[0..LANES). */
static inline float reduce(float *a)
{
	for (int h = LANES / 2; h > 0; h /= 2)
		for (int u = 0; u < h; u++)
			a[u] += a[u + h];
	return a[0];
}

/* z (n x width) = x (n x fan_in) times w^T (w: width x fan_in), each
 * element summed in the same order whatever n is. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && \
        !defined(__SANITIZE_ADDRESS__)
__attribute__((target_clones("avx2", "default")))
#endif
static void
matmul_t(const float *restrict x, int n, int fan_in, const float *restrict w, int width,
         float *restrict z)
{
	int j = 0;

	for (; j + 4 <= width; j += 4) {
		const float *w0 = w + (size_t)j * fan_in, *w1 = w0 + fan_in, *w2 = w1 + fan_in,
		            *w3 = w2 + fan_in;

		for (int i = 0; i < n; i++) {
			const float *xi = x + (size_t)i * fan_in;
			float a0[LANES] = {0}, a1[LANES] = {0}, a2[LANES] = {0}, a3[LANES] = {0};
			float *zi = z + (size_t)i * width + j;
			int k = 0;

			for (; k + LANES <= fan_in; k += LANES) {
				for (int u = 0; u < LANES; u++) {
					float v = xi[k + u];

					a0[u] += v * w0[k + u];
					a1[u] += v * w1[k + u];
					a2[u] += v * w2[k + u];
					a3[u] += v * w3[k + u];
				}
			}
			for (int u = 0; k < fan_in; k++, u++) {
				a0[u] += xi[k] * w0[k];
				a1[u] += xi[k] * w1[k];
				a2[u] += xi[k] * w2[k];
				a3[u] += xi[k] * w3[k];
			}
			zi[0] = reduce(a0);
			zi[1] = reduce(a1);
			zi[2] = reduce(a2);
			zi[3] = reduce(a3);
		}
	}
	for (; j < width; j++) {
		const float *wj = w + (size_t)j * fan_in;

		for (int i = 0; i < n; i++) {
			const float *xi = x + (size_t)i * fan_in;
			float a[LANES] = {0};
			int k = 0;

			for (; k + LANES <= fan_in; k += LANES)
				for (int u = 0; u < LANES; u++)
					a[u] += xi[k + u] * wj[k + u];
			for (int u = 0; k < fan_in; k++, u++)
				a[u] += xi[k] * wj[k];
			z[(size_t)i * width + j] = reduce(a);
		}
	}
}

void ms_model_forward(const struct ms_model *m, const float *x, int n, float *logits,
                      float *scratch)
{
	const float *in = x;
	float *ping = scratch, *pong = scratch + (size_t)n * (size_t)m->widest;

	for (int l = 1; l <= m->layers; l++) {
		int fan_in = m->shape.sizes[l - 1], width = m->shape.sizes[l];
		const float *w = m->params + m->woff[l];
		const float *bias = m->params + m->boff[l];
		float *z = l == m->layers ? logits : ping;

		matmul_t(in, n, fan_in, w, width, z);
		for (int i = 0; i < n; i++) {
			float *row = z + (size_t)i * (size_t)width;

			for (int j = 0; j < width; j++) {
				float v = row[j] + bias[j];

				row[j] = l < m->layers && !(v > 0.0f) ? 0.0f : v;
			}
		}
		in = z;
		ping = pong;
		pong = z;
	}
}

int ms_argmax(const float *logits, int classes)
{
	int best = 0;

	for (int j = 1; j < classes; j++)
		if (logits[j] > logits[best])
			best = j;
	return best;
}
