/*
 * infer.c - a served model: decoding the model file into the layout the
 * forward pass reads, and the forward pass itself (model-server.h).
 *
 * The forward pass is the one mlpipe-train's CPU backend runs
 * (runners/train/backend-cpu.c): per layer one cblas_sgemm over all rows,
 * Z = A W^T, then the bias (and ReLU but after the last layer) in a plain
 * loop in the same order, so the server's logits are the trainer's.  Each
 * element of an sgemm's output is a dot product whose summation order
 * OpenBLAS fixes by K alone, not by the number of rows, so a row gives the
 * same bits alone or in a batch (tests/functional/model-server.sh checks it).
 */
#include "config.h"

#include <cblas.h>
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

		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, width, fan_in, 1.0f, in,
		            fan_in, w, fan_in, 0.0f, z, width);
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
