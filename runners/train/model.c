/*
 * model.c - MLP shapes, the flat parameter layout, seeded initialisation
 * and the model file format (model.h, docs/model-format.md).
 *
 * The file is written and read byte by byte in little-endian order, so a
 * model moves between machines of any endianness; a reader validates every
 * header field against the limits in model.h and the file's length before
 * it allocates anything sized by the file.
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "base/crypto.h"
#include "base/error.h"
#include "model.h"
#include "base/util.h"

int mlp_shape_check(const struct mlp_shape *s)
{
	size_t total = 0;

	if (s->nsizes < 2 || s->nsizes > MLP_MODEL_MAX_SIZES) {
		mlp_error_set(
		        "a model needs 2 to %d layer sizes (input, hidden..., classes), not %d",
		        MLP_MODEL_MAX_SIZES, s->nsizes);
		return MLP_EINVAL;
	}
	for (int i = 0; i < s->nsizes; i++) {
		if (s->sizes[i] < 1 || (unsigned)s->sizes[i] > MLP_MODEL_MAX_WIDTH) {
			mlp_error_set("layer size %d is out of range (1 to %u)", s->sizes[i],
			              MLP_MODEL_MAX_WIDTH);
			return MLP_EINVAL;
		}
	}
	if (s->sizes[s->nsizes - 1] < 2) {
		mlp_error_set("a classifier needs at least 2 classes (the last layer size)");
		return MLP_EINVAL;
	}
	for (int l = 1; l < s->nsizes; l++) {
		/* Each term is below 2^40 + 2^20, so the sum cannot wrap first. */
		total += (size_t)s->sizes[l] * (size_t)s->sizes[l - 1] + (size_t)s->sizes[l];
		if (total > MLP_MODEL_MAX_PARAMS) {
			mlp_error_set("the model has more than %llu parameters",
			              (unsigned long long)MLP_MODEL_MAX_PARAMS);
			return MLP_EINVAL;
		}
	}
	return 0;
}

int mlp_shape_parse(struct mlp_shape *out, const char *text)
{
	struct mlp_shape s = {0};
	const char *p = text;

	for (;;) {
		const char *comma = strchr(p, ',');
		size_t len = comma ? (size_t)(comma - p) : strlen(p);
		char *item = xstrndup(p, len);
		long long v;
		int rc = mlp_parse_int(&v, item, 1, MLP_MODEL_MAX_WIDTH);

		if (rc != 0 || s.nsizes == MLP_MODEL_MAX_SIZES) {
			if (rc != 0)
				mlp_error_set("--layers: '%s' is not a layer size (1 to %u)", item,
				              MLP_MODEL_MAX_WIDTH);
			else
				mlp_error_set("--layers: more than %d sizes", MLP_MODEL_MAX_SIZES);
			free(item);
			return MLP_EINVAL;
		}
		free(item);
		s.sizes[s.nsizes++] = (int)v;
		if (comma == NULL)
			break;
		p = comma + 1;
	}
	if (mlp_shape_check(&s) != 0) {
		char *msg = xasprintf("--layers %s: %s", text, mlp_error_last());

		mlp_error_set("%s", msg);
		free(msg);
		return MLP_EINVAL;
	}
	*out = s;
	return 0;
}

void mlp_shape_format(char *buf, size_t size, const struct mlp_shape *s)
{
	size_t used = 0;

	if (size == 0)
		return;
	buf[0] = '\0';
	for (int i = 0; i < s->nsizes && used < size; i++) {
		int n = snprintf(buf + used, size - used, "%s%d", i ? "-" : "", s->sizes[i]);

		if (n < 0)
			break;
		used += (size_t)n;
	}
}

size_t mlp_shape_nparams(const struct mlp_shape *s)
{
	return mlp_shape_weight_offset(s, s->nsizes);
}

size_t mlp_shape_weight_offset(const struct mlp_shape *s, int l)
{
	size_t off = 0;

	for (int i = 1; i < l; i++)
		off += (size_t)s->sizes[i] * (size_t)s->sizes[i - 1] + (size_t)s->sizes[i];
	return off;
}

size_t mlp_shape_bias_offset(const struct mlp_shape *s, int l)
{
	return mlp_shape_weight_offset(s, l) + (size_t)s->sizes[l] * (size_t)s->sizes[l - 1];
}

/* --- PRNG ----------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

void mlp_rng_seed(struct mlp_rng *r, uint64_t seed)
{
	uint64_t x = seed;

	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix64(&x);
}

uint64_t mlp_rng_next(struct mlp_rng *r)
{
	uint64_t *s = r->s;
	uint64_t result = rotl(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;

	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return result;
}

float mlp_rng_float(struct mlp_rng *r)
{
	return (float)(mlp_rng_next(r) >> 40) * (1.0f / 16777216.0f);
}

uint64_t mlp_rng_below(struct mlp_rng *r, uint64_t bound)
{
	/* Rejection from the top of the range: unbiased and branch-cheap. */
	uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
	uint64_t v;

	do
		v = mlp_rng_next(r);
	while (v >= limit);
	return v % bound;
}

void mlp_model_init(float *params, const struct mlp_shape *s, uint64_t seed)
{
	struct mlp_rng rng;
	float *p = params;

	mlp_rng_seed(&rng, seed);
	for (int l = 1; l < s->nsizes; l++) {
		float bound = 1.0f / sqrtf((float)s->sizes[l - 1]);
		size_t n = (size_t)s->sizes[l] * (size_t)s->sizes[l - 1] + (size_t)s->sizes[l];

		for (size_t i = 0; i < n; i++)
			*p++ = (2.0f * mlp_rng_float(&rng) - 1.0f) * bound;
	}
}

/* --- file format ----------------------------------------------------------- */

static const uint8_t model_magic[4] = {'M', 'L', 'P', 'M'};

static void put_u32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static uint32_t get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_f32s(uint8_t *p, const float *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		uint32_t u;

		memcpy(&u, &v[i], 4);
		put_u32(p + 4 * i, u);
	}
}

static void get_f32s(float *v, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		uint32_t u = get_u32(p + 4 * i);

		memcpy(&v[i], &u, 4);
	}
}

/* Header bytes before the parameters for nsizes sizes. */
static size_t header_len(uint32_t nsizes)
{
	return 12 + 4 * (size_t)nsizes + 8;
}

static uint32_t crc_of(const uint8_t *p, size_t len)
{
	uLong crc = crc32(0L, Z_NULL, 0);

	/* zlib takes uInt lengths: feed large images in slices. */
	while (len > 0) {
		uInt n = len > (1u << 30) ? (1u << 30) : (uInt)len;

		crc = crc32(crc, p, n);
		p += n;
		len -= n;
	}
	return (uint32_t)crc;
}

void mlp_model_encode(uint8_t **out, size_t *out_len, const struct mlp_shape *s,
                      const float *params)
{
	size_t np = mlp_shape_nparams(s);
	size_t hl = header_len((uint32_t)s->nsizes);
	size_t len = hl + 4 * np + 4;
	uint8_t *b = xmalloc(len);
	uint8_t *p = b;

	memcpy(p, model_magic, 4);
	put_u32(p + 4, MLP_MODEL_VERSION);
	put_u32(p + 8, (uint32_t)s->nsizes);
	p += 12;
	for (int i = 0; i < s->nsizes; i++, p += 4)
		put_u32(p, (uint32_t)s->sizes[i]);
	put_u32(p, (uint32_t)np);
	put_u32(p + 4, (uint32_t)((uint64_t)np >> 32));
	p += 8;
	put_f32s(p, params, np);
	p += 4 * np;
	put_u32(p, crc_of(b, len - 4));
	*out = b;
	*out_len = len;
}

int mlp_model_decode(struct mlp_shape *out_shape, float **out_params, const uint8_t *data,
                     size_t len, const char *name)
{
	struct mlp_shape s = {0};
	uint32_t version, nsizes, stored_crc;
	uint64_t nparams;
	size_t hl, expected;
	const uint8_t *p;
	float *params;

	if (len >= 4 && memcmp(data, model_magic, 4) != 0) {
		mlp_error_set("%s: not an mlpipe model file (bad magic)", name);
		return MLP_EINVAL;
	}
	if (len < 12) {
		mlp_error_set("%s: truncated (expected at least 12 bytes, got %zu)", name, len);
		return MLP_EINVAL;
	}
	version = get_u32(data + 4);
	if (version != MLP_MODEL_VERSION) {
		mlp_error_set("%s: unsupported model format version %u (this build reads %d)", name,
		              version, MLP_MODEL_VERSION);
		return MLP_EINVAL;
	}
	nsizes = get_u32(data + 8);
	if (nsizes < 2 || nsizes > MLP_MODEL_MAX_SIZES) {
		mlp_error_set("%s: corrupt header (%u layer sizes; expected 2 to %d)", name, nsizes,
		              MLP_MODEL_MAX_SIZES);
		return MLP_EINVAL;
	}
	hl = header_len(nsizes);
	if (len < hl) {
		mlp_error_set("%s: truncated (expected at least %zu bytes, got %zu)", name, hl,
		              len);
		return MLP_EINVAL;
	}
	s.nsizes = (int)nsizes;
	for (uint32_t i = 0; i < nsizes; i++) {
		uint32_t v = get_u32(data + 12 + 4 * i);

		if (v < 1 || v > MLP_MODEL_MAX_WIDTH) {
			mlp_error_set("%s: corrupt header (layer size %u; expected 1 to %u)", name,
			              v, MLP_MODEL_MAX_WIDTH);
			return MLP_EINVAL;
		}
		s.sizes[i] = (int)v;
	}
	if (mlp_shape_check(&s) != 0) {
		char *msg = xasprintf("%s: corrupt header (%s)", name, mlp_error_last());

		mlp_error_set("%s", msg);
		free(msg);
		return MLP_EINVAL;
	}
	p = data + 12 + 4 * (size_t)nsizes;
	nparams = (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
	if (nparams != mlp_shape_nparams(&s)) {
		char shape[256];

		mlp_shape_format(shape, sizeof(shape), &s);
		mlp_error_set("%s: corrupt header (%llu parameters, but layers %s have %zu)", name,
		              (unsigned long long)nparams, shape, mlp_shape_nparams(&s));
		return MLP_EINVAL;
	}
	expected = hl + 4 * (size_t)nparams + 4;
	if (len < expected) {
		mlp_error_set("%s: truncated (expected %zu bytes, got %zu)", name, expected, len);
		return MLP_EINVAL;
	}
	if (len > expected) {
		mlp_error_set("%s: %zu bytes of trailing data (expected %zu bytes, got %zu)", name,
		              len - expected, expected, len);
		return MLP_EINVAL;
	}
	stored_crc = get_u32(data + expected - 4);
	if (stored_crc != crc_of(data, expected - 4)) {
		mlp_error_set("%s: checksum mismatch (file is corrupt)", name);
		return MLP_EINVAL;
	}
	params = xmalloc(4 * (size_t)nparams);
	get_f32s(params, data + hl, (size_t)nparams);
	*out_shape = s;
	*out_params = params;
	return 0;
}

int mlp_model_save(const char *path, const struct mlp_shape *s, const float *params,
                   char *sha256_hex)
{
	uint8_t *img;
	size_t len;
	int rc;

	mlp_model_encode(&img, &len, s, params);
	rc = mlp_write_file_atomic(path, img, len, 0644);
	if (rc == 0 && sha256_hex)
		mlp_sha256_hex(sha256_hex, img, len);
	free(img);
	return rc;
}

int mlp_model_load(struct mlp_shape *out_shape, float **out_params, const char *path)
{
	size_t max = header_len(MLP_MODEL_MAX_SIZES) + 4 * MLP_MODEL_MAX_PARAMS + 4;
	char *img;
	size_t len;
	int rc = mlp_read_file(&img, &len, path, max);

	if (rc != 0)
		return rc == MLP_ENOTFOUND ? rc : MLP_EINVAL; /* unreadable: bad input */
	rc = mlp_model_decode(out_shape, out_params, (const uint8_t *)img, len, path);
	free(img);
	return rc;
}

uint32_t mlp_params_crc32(const float *params, size_t n)
{
	return crc_of((const uint8_t *)params, n * sizeof(float));
}

int mlp_params_dump(const char *path, const float *params, size_t n)
{
	uint8_t *b = xmalloc(4 * n);
	int rc;

	put_f32s(b, params, n);
	rc = mlp_write_file_atomic(path, b, 4 * n, 0644);
	free(b);
	return rc;
}
