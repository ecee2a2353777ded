/*
 * test-train.c - mlpipe-train's pieces without processes: IDX and CSV
 * loading (and every way they refuse bad files), the model file format,
 * seeded initialisation and shuffling, the CPU backend's gradient (against
 * finite differences) and SGD step (against torch.optim.SGD worked by hand),
 * and the data-parallel identity that averaging two half-batch gradients
 * equals one full-batch gradient.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "train/backend.h"
#include "train/data.h"
#include "train/model.h"
#include "train/train.h"
#include "base/crypto.h"
#include "base/error.h"
#include "base/util.h"

struct fixture {
	char dir[64];
};

static int setup(void **state)
{
	struct fixture *f = xcalloc(1, sizeof(*f));

	snprintf(f->dir, sizeof(f->dir), "/tmp/mlpipe-train-XXXXXX");
	if (mkdtemp(f->dir) == NULL)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char *cmd = xasprintf("rm -rf '%s'", f->dir);

	if (system(cmd) != 0)
		return -1;
	free(cmd);
	free(f);
	return 0;
}

static char *path_in(const struct fixture *f, const char *name)
{
	return xasprintf("%s/%s", f->dir, name);
}

static void write_bytes(const char *path, const void *data, size_t len, bool gz)
{
	if (gz) {
		gzFile g = gzopen(path, "wb");

		assert_non_null(g);
		assert_int_equal(gzwrite(g, data, (unsigned)len), (int)len);
		assert_int_equal(gzclose(g), Z_OK);
	} else {
		FILE *fp = fopen(path, "wb");

		assert_non_null(fp);
		assert_int_equal(fwrite(data, 1, len, fp), len);
		assert_int_equal(fclose(fp), 0);
	}
}

static void write_text(const char *path, const char *text)
{
	write_bytes(path, text, strlen(text), false);
}

/* IDX images: n samples of rows x cols bytes, values i*7 % 256. */
static size_t make_idx_images(uint8_t *buf, uint32_t n, uint8_t rows, uint8_t cols)
{
	uint8_t hdr[16] = {0,
	                   0,
	                   0x08,
	                   3,
	                   (uint8_t)(n >> 24),
	                   (uint8_t)(n >> 16),
	                   (uint8_t)(n >> 8),
	                   (uint8_t)n,
	                   0,
	                   0,
	                   0,
	                   rows,
	                   0,
	                   0,
	                   0,
	                   cols};
	size_t len = (size_t)n * rows * cols;

	memcpy(buf, hdr, 16);
	for (size_t i = 0; i < len; i++)
		buf[16 + i] = (uint8_t)(i * 7 % 256);
	return 16 + len;
}

static size_t make_idx_labels(uint8_t *buf, uint32_t n, const uint8_t *labels)
{
	uint8_t hdr[8] = {
	        0,         0, 0x08, 1, (uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8),
	        (uint8_t)n};

	memcpy(buf, hdr, 8);
	memcpy(buf + 8, labels, n);
	return 8 + n;
}

static void test_train__idx_plain_and_gzip(void **state)
{
	struct fixture *f = *state;
	static const uint8_t labels[3] = {2, 0, 1};
	uint8_t img[64], lab[16];
	size_t ilen = make_idx_images(img, 3, 2, 2), llen = make_idx_labels(lab, 3, labels);

	for (int gz = 0; gz < 2; gz++) {
		char *ip = path_in(f, gz ? "i.gz" : "i"), *lp = path_in(f, gz ? "l.gz" : "l");
		struct mlp_dataset *d;

		write_bytes(ip, img, ilen, gz);
		write_bytes(lp, lab, llen, gz);
		assert_int_equal(mlp_dataset_load_idx(&d, ip, lp), 0);
		assert_int_equal(d->n, 3);
		assert_int_equal(d->features, 4);
		for (size_t i = 0; i < 12; i++)
			assert_true(fabsf(d->x[i] - (float)(i * 7 % 256) / 255.0f) < 1e-7f);
		assert_int_equal(d->y[0], 2);
		assert_int_equal(d->y[2], 1);
		assert_int_equal(d->max_label, 2);
		assert_null(d->lines);
		mlp_dataset_free(d);
		free(ip);
		free(lp);
	}
}

static void expect_idx_error(const struct fixture *f, const uint8_t *img, size_t ilen,
                             const uint8_t *lab, size_t llen, bool gz, const char *msg)
{
	char *ip = path_in(f, "bad-i"), *lp = path_in(f, "bad-l");
	struct mlp_dataset *d = NULL;

	write_bytes(ip, img, ilen, gz);
	write_bytes(lp, lab, llen, gz);
	assert_int_equal(mlp_dataset_load_idx(&d, ip, lp), MLP_EINVAL);
	assert_null(d);
	if (strstr(mlp_error_last(), msg) == NULL)
		fail_msg("error '%s' lacks '%s'", mlp_error_last(), msg);
	assert_null(strchr(mlp_error_last(), '\n'));
	free(ip);
	free(lp);
}

static void test_train__idx_errors(void **state)
{
	struct fixture *f = *state;
	static const uint8_t labels[3] = {2, 0, 1};
	uint8_t img[64], lab[16], bad[64];
	size_t ilen = make_idx_images(img, 3, 2, 2), llen = make_idx_labels(lab, 3, labels);

	memcpy(bad, img, ilen);
	bad[0] = 0x12;
	expect_idx_error(f, bad, ilen, lab, llen, false, "not an IDX file (bad magic");
	expect_idx_error(f, img, ilen - 1, lab, llen, false,
	                 "truncated (expected 12 bytes of image data, got 11)");
	expect_idx_error(f, img, ilen - 1, lab, llen, true, "truncated");
	expect_idx_error(f, img, 10, lab, llen, false, "IDX header is cut short");
	expect_idx_error(f, img, ilen, lab, llen - 1, false, "truncated");
	expect_idx_error(f, lab, llen, lab, llen, false, "is it a labels file?");
	expect_idx_error(f, img, ilen, img, ilen, false, "is it an images file?");
	memcpy(bad, img, ilen);
	bad[2] = 0x0d;
	expect_idx_error(f, bad, ilen, lab, llen, false, "element type 0x0d");
	/* Headers claiming 2^31 or 2^28 samples: refused by size, or found
	 * short as the data arrives, never allocated up front. */
	memcpy(bad, img, ilen);
	bad[4] = 0x80;
	expect_idx_error(f, bad, ilen, lab, llen, false, "corrupt header (2147483651 samples");
	bad[4] = 0x10;
	expect_idx_error(f, bad, ilen, lab, llen, false, "truncated");
	{
		uint8_t lab2[16];
		static const uint8_t two[2] = {0, 1};
		size_t l2 = make_idx_labels(lab2, 2, two);

		expect_idx_error(f, img, ilen, lab2, l2, false, "2 labels for 3 images");
	}
	{
		uint8_t extra[80];

		memcpy(extra, img, ilen);
		extra[ilen] = 9;
		expect_idx_error(f, extra, ilen + 1, lab, llen, false, "trailing data");
	}
	/* A gzip stream cut in the middle of its deflate data. */
	{
		char *ip = path_in(f, "big.gz"), *lp = path_in(f, "lab");
		uint8_t *big = xmalloc(16 + 100 * 28 * 28), *gzbytes;
		size_t blen = make_idx_images(big, 100, 28, 28), gzlen;
		struct mlp_dataset *d = NULL;
		uint8_t lab100[108], ys[100] = {0};
		FILE *fp;

		write_bytes(ip, big, blen, true);
		assert_int_equal(mlp_read_file((char **)&gzbytes, &gzlen, ip, 1 << 20), 0);
		fp = fopen(ip, "wb");
		assert_non_null(fp);
		assert_int_equal(fwrite(gzbytes, 1, gzlen / 2, fp), gzlen / 2);
		fclose(fp);
		write_bytes(lp, lab100, make_idx_labels(lab100, 100, ys), false);
		assert_int_equal(mlp_dataset_load_idx(&d, ip, lp), MLP_EINVAL);
		assert_non_null(strstr(mlp_error_last(), "truncated"));
		free(gzbytes);
		free(big);
		free(ip);
		free(lp);
	}
	{
		struct mlp_dataset *d = NULL;
		char *missing = path_in(f, "nope");

		assert_int_equal(mlp_dataset_load_idx(&d, missing, missing), MLP_ENOTFOUND);
		assert_non_null(strstr(mlp_error_last(), "No such file"));
		free(missing);
	}
}

static void test_train__csv(void **state)
{
	struct fixture *f = *state;
	char *p = path_in(f, "d.csv");
	struct mlp_dataset *d;

	write_text(p, "a,b,label\r\n1.5, 2 ,3\r\n\r\n-1e1,0,0\n");
	assert_int_equal(mlp_dataset_load_csv(&d, p, 2), 0);
	assert_int_equal(d->n, 2);
	assert_int_equal(d->features, 2);
	assert_true(d->x[0] == 1.5f && d->x[1] == 2.0f && d->x[2] == -10.0f && d->x[3] == 0.0f);
	assert_int_equal(d->y[0], 3);
	assert_int_equal(d->y[1], 0);
	assert_int_equal(d->lines[1], 4);
	assert_int_equal(d->max_label, 3);
	assert_int_equal(mlp_dataset_check_labels(d, 4), 0);
	assert_int_equal(mlp_dataset_check_labels(d, 3), MLP_EINVAL);
	assert_non_null(
	        strstr(mlp_error_last(),
	               "d.csv:2: label 3 is out of range for a model with 3 classes (0 to 2)"));
	assert_int_equal(mlp_dataset_check_features(d, 2), 0);
	assert_int_equal(mlp_dataset_check_features(d, 784), MLP_EINVAL);
	assert_non_null(strstr(mlp_error_last(), "data has 2 features but the model expects 784"));
	mlp_dataset_free(d);

	/* No header; label first (the default); a label written 2.0 is 2. */
	write_text(p, "2.0,0.5\n1,0.25\n");
	assert_int_equal(mlp_dataset_load_csv(&d, p, 0), 0);
	assert_int_equal(d->n, 2);
	assert_int_equal(d->y[0], 2);
	assert_true(d->x[1] == 0.25f);
	mlp_dataset_free(d);
	free(p);
}

static void expect_csv_error(const struct fixture *f, const char *text, int label_column,
                             const char *msg)
{
	char *p = path_in(f, "bad.csv");
	struct mlp_dataset *d = NULL;

	write_text(p, text);
	assert_int_equal(mlp_dataset_load_csv(&d, p, label_column), MLP_EINVAL);
	assert_null(d);
	if (strstr(mlp_error_last(), msg) == NULL)
		fail_msg("error '%s' lacks '%s'", mlp_error_last(), msg);
	assert_null(strchr(mlp_error_last(), '\n'));
	free(p);
}

static void test_train__csv_errors(void **state)
{
	struct fixture *f = *state;

	expect_csv_error(f, "1,2\n2.5,3\n", 0, "bad.csv:2: label '2.5' is not an integer");
	expect_csv_error(f, "1,2\n-1,3\n", 0, "bad.csv:2: label -1 is out of range");
	expect_csv_error(f, "1,2\n1,x\n", 0, "bad.csv:2: column 1: 'x' is not a number");
	expect_csv_error(f, "1,2\n1,2,3\n", 0, "bad.csv:2: 3 columns, but the first row has 2");
	expect_csv_error(f, "1,2\n", 5, "--label-column 5, but the file has 2 columns");
	expect_csv_error(f, "a,b\n", 0, "no data rows");
	expect_csv_error(f, "", 0, "empty file");
	{
		char *p = path_in(f, "nul.csv");
		struct mlp_dataset *d = NULL;

		write_bytes(p, "1,2\n1,2\0x\n", 10, false);
		assert_int_equal(mlp_dataset_load_csv(&d, p, 0), MLP_EINVAL);
		assert_non_null(strstr(mlp_error_last(), "holds NUL bytes"));
		free(p);
	}
	expect_csv_error(f, "1\n", 0, "needs a label and at least one feature");
	expect_csv_error(f, "1,2\n1,\n", 0, "bad.csv:2: column 1: '' is not a number");
	expect_csv_error(f, "a,b\nc,d\n", 0, "bad.csv:2: label 'c' is not an integer");
	expect_csv_error(f, "1,2\n1,nan\n", 0, "bad.csv:2: column 1: 'nan' is not a number");
	expect_csv_error(f, "1,2\n1,1e39\n", 0, "'1e39' is not a number");
}

static void test_train__sources(void **state)
{
	struct fixture *f = *state;
	static const uint8_t labels[3] = {2, 0, 1};
	uint8_t img[64], lab[16];
	size_t ilen = make_idx_images(img, 3, 2, 2), llen = make_idx_labels(lab, 3, labels);
	char *ti = path_in(f, "train-images-idx3-ubyte.gz");
	char *tl = path_in(f, "train-labels-idx1-ubyte");
	char *csv = path_in(f, "x.csv");
	struct mlp_data_source src = {.path = f->dir};
	struct mlp_dataset *d;

	assert_int_equal(mlp_dataset_load(&d, &src, MLP_DATA_TRAIN), MLP_EINVAL);
	assert_non_null(strstr(mlp_error_last(), "no train-images-idx3-ubyte[.gz]"));
	write_bytes(ti, img, ilen, true);
	write_bytes(tl, lab, llen, false);
	assert_false(mlp_data_dir_has_test(f->dir));
	assert_int_equal(mlp_dataset_load(&d, &src, MLP_DATA_TRAIN), 0);
	assert_int_equal(d->n, 3);
	mlp_dataset_free(d);
	/* Without t10k-*, the test role falls back to train-*. */
	assert_int_equal(mlp_dataset_load(&d, &src, MLP_DATA_TEST), 0);
	mlp_dataset_free(d);

	write_text(csv, "0,1\n1,0\n");
	src.path = csv;
	assert_int_equal(mlp_dataset_load(&d, &src, MLP_DATA_TRAIN), 0);
	assert_int_equal(d->features, 1);
	mlp_dataset_free(d);

	src.path = ti;
	assert_int_equal(mlp_dataset_load(&d, &src, MLP_DATA_TRAIN), MLP_EINVAL);
	assert_non_null(strstr(mlp_error_last(), "needs its labels file"));
	src.labels = tl;
	assert_int_equal(mlp_dataset_load(&d, &src, MLP_DATA_TRAIN), 0);
	mlp_dataset_free(d);
	free(ti);
	free(tl);
	free(csv);
}

static void test_train__split(void **state)
{
	struct fixture *f = *state;
	char *p = path_in(f, "s.csv");
	struct mlp_buf b = {0};
	struct mlp_dataset *d, *hold, *d2, *hold2;
	int seen[100] = {0};

	for (int i = 0; i < 100; i++)
		mlp_buf_printf(&b, "%d,%d\n", i % 3, i);
	write_text(p, mlp_buf_str(&b));
	assert_int_equal(mlp_dataset_load_csv(&d, p, 0), 0);
	assert_int_equal(mlp_dataset_load_csv(&d2, p, 0), 0);
	assert_int_equal(mlp_dataset_split(&hold, d, 0.2, 42), 0);
	assert_int_equal(mlp_dataset_split(&hold2, d2, 0.2, 42), 0);
	assert_int_equal(hold->n, 20);
	assert_int_equal(d->n, 80);
	/* The same seed splits the same way; together the parts are the whole. */
	assert_memory_equal(hold->x, hold2->x, 20 * sizeof(float));
	for (size_t i = 0; i < hold->n; i++)
		seen[(int)hold->x[i]]++;
	for (size_t i = 0; i < d->n; i++) {
		seen[(int)d->x[i]]++;
		assert_int_equal(d->y[i], (int)d->x[i] % 3);
	}
	for (int i = 0; i < 100; i++)
		assert_int_equal(seen[i], 1);
	assert_int_equal(mlp_dataset_split(&hold, d2, 0.001, 1), MLP_EINVAL);
	mlp_dataset_free(d);
	mlp_dataset_free(d2);
	mlp_dataset_free(hold);
	mlp_dataset_free(hold2);
	mlp_buf_free(&b);
	free(p);
}

static void test_train__shape(void **state)
{
	struct mlp_shape s;
	char buf[64];

	(void)state;
	assert_int_equal(mlp_shape_parse(&s, "784,256,10"), 0);
	assert_int_equal(s.nsizes, 3);
	assert_int_equal(mlp_shape_nparams(&s), 784 * 256 + 256 + 256 * 10 + 10);
	assert_int_equal(mlp_shape_weight_offset(&s, 2), 784 * 256 + 256);
	assert_int_equal(mlp_shape_bias_offset(&s, 1), 784 * 256);
	mlp_shape_format(buf, sizeof(buf), &s);
	assert_string_equal(buf, "784-256-10");
	assert_int_equal(mlp_shape_parse(&s, "784"), MLP_EINVAL);
	assert_int_equal(mlp_shape_parse(&s, "784,x,10"), MLP_EINVAL);
	assert_non_null(strstr(mlp_error_last(), "'x' is not a layer size"));
	assert_int_equal(mlp_shape_parse(&s, "784,,10"), MLP_EINVAL);
	assert_int_equal(mlp_shape_parse(&s, "784,0,10"), MLP_EINVAL);
	assert_int_equal(mlp_shape_parse(&s, "10,1"), MLP_EINVAL);
	assert_int_equal(mlp_shape_parse(&s, "1000000,1000000,10"), MLP_EINVAL);
	assert_non_null(strstr(mlp_error_last(), "parameters"));
}

static void test_train__model_file_round_trip(void **state)
{
	struct fixture *f = *state;
	struct mlp_shape s = {3, {5, 4, 3}}, s2;
	size_t np = mlp_shape_nparams(&s);
	float *params = xmalloc(np * sizeof(float)), *back = NULL;
	char *p = path_in(f, "m.bin");
	char sha[MLP_SHA256_HEX_LEN + 1], sha2[MLP_SHA256_HEX_LEN + 1];
	uint8_t *img;
	size_t len;

	mlp_model_init(params, &s, 9);
	params[0] = -0.0f;
	params[1] = 1e-38f;
	assert_int_equal(mlp_model_save(p, &s, params, sha), 0);
	assert_int_equal(mlp_sha256_file_hex(sha2, p), 0);
	assert_string_equal(sha, sha2);
	assert_int_equal(mlp_model_load(&s2, &back, p), 0);
	assert_int_equal(s2.nsizes, 3);
	assert_int_equal(s2.sizes[2], 3);
	assert_memory_equal(params, back, np * sizeof(float));
	free(back);

	/* The documented layout: magic, version, sizes, count, LE floats, CRC. */
	mlp_model_encode(&img, &len, &s, params);
	assert_int_equal(len, 12 + 4 * 3 + 8 + 4 * np + 4);
	assert_memory_equal(img, "MLPM\1\0\0\0\3\0\0\0\5\0\0\0\4\0\0\0\3\0\0\0", 24);
	assert_int_equal(img[24], np);
	assert_int_equal(img[32 + 3] & 0x80, 0x80); /* -0.0f, little-endian */
	assert_int_equal(crc32(0, img, (uInt)(len - 4)), img[len - 4] | img[len - 3] << 8 |
	                                                         img[len - 2] << 16 |
	                                                         (uint32_t)img[len - 1] << 24);
	free(img);
	free(params);
	free(p);
}

static void expect_model_error(const uint8_t *img, size_t len, const char *msg)
{
	struct mlp_shape s;
	float *params = NULL;

	assert_int_equal(mlp_model_decode(&s, &params, img, len, "model.bin"), MLP_EINVAL);
	assert_null(params);
	if (strstr(mlp_error_last(), msg) == NULL)
		fail_msg("error '%s' lacks '%s'", mlp_error_last(), msg);
	assert_null(strchr(mlp_error_last(), '\n'));
}

static void test_train__model_file_corrupt(void **state)
{
	struct mlp_shape s = {3, {784, 256, 10}};
	size_t np = mlp_shape_nparams(&s);
	float *params = xcalloc(np, sizeof(float));
	uint8_t *img, *copy;
	size_t len;

	(void)state;
	mlp_model_encode(&img, &len, &s, params);
	assert_int_equal(len, 814156);
	copy = xmalloc(len + 1);
	expect_model_error(img, 1000, "model.bin: truncated (expected 814156 bytes, got 1000)");
	expect_model_error(img, 6, "model.bin: truncated");
	expect_model_error(img, 0, "model.bin: truncated");
	memcpy(copy, img, len);
	copy[len] = 0;
	expect_model_error(copy, len + 1, "1 bytes of trailing data");
	copy[1000] ^= 1;
	expect_model_error(copy, len, "model.bin: checksum mismatch (file is corrupt)");
	memcpy(copy, img, len);
	copy[0] = 'X';
	expect_model_error(copy, len, "model.bin: not an mlpipe model file (bad magic)");
	memcpy(copy, img, len);
	copy[4] = 2;
	expect_model_error(copy, len, "unsupported model format version 2");
	memcpy(copy, img, len);
	copy[8] = 200;
	expect_model_error(copy, len, "corrupt header (200 layer sizes");
	memcpy(copy, img, len);
	copy[16] = 0;
	copy[17] = 0;
	expect_model_error(copy, len, "corrupt header (layer size 0");
	memcpy(copy, img, len);
	copy[24] ^= 1;
	expect_model_error(copy, len, "corrupt header (203531 parameters, but layers 784-256-10");
	memcpy(copy, img, len);
	copy[23] = 0x7f; /* a width of 2^30 + 10 */
	expect_model_error(copy, len, "corrupt header");
	free(copy);
	free(img);
	free(params);
}

static void test_train__model_load_errors(void **state)
{
	struct fixture *f = *state;
	struct mlp_shape s;
	float *params = NULL;
	char *p = path_in(f, "none.bin");

	assert_int_equal(mlp_model_load(&s, &params, p), MLP_ENOTFOUND);
	write_text(p, "MLPM\1\0");
	assert_int_equal(mlp_model_load(&s, &params, p), MLP_EINVAL);
	assert_non_null(strstr(mlp_error_last(), "none.bin: truncated"));
	assert_int_equal(mlp_model_load(&s, &params, f->dir), MLP_EINVAL);
	assert_null(params);
	free(p);
}

static void test_train__init_is_seeded_and_bounded(void **state)
{
	struct mlp_shape s = {3, {100, 16, 4}};
	size_t np = mlp_shape_nparams(&s);
	float *a = xmalloc(np * sizeof(float)), *b = xmalloc(np * sizeof(float));
	double sum = 0;

	(void)state;
	mlp_model_init(a, &s, 5);
	mlp_model_init(b, &s, 5);
	assert_memory_equal(a, b, np * sizeof(float));
	mlp_model_init(b, &s, 6);
	assert_memory_not_equal(a, b, np * sizeof(float));
	/* Layer 1: U(-1/10, 1/10); layer 2: U(-1/4, 1/4), bias included. */
	for (size_t i = 0; i < mlp_shape_weight_offset(&s, 2); i++) {
		assert_true(fabsf(a[i]) <= 0.1f);
		sum += a[i];
	}
	assert_true(fabs(sum / (double)mlp_shape_weight_offset(&s, 2)) < 0.01);
	for (size_t i = mlp_shape_weight_offset(&s, 2); i < np; i++)
		assert_true(fabsf(a[i]) <= 0.25f);
	{
		float hi = 0;

		for (size_t i = mlp_shape_weight_offset(&s, 2); i < np; i++)
			hi = fmaxf(hi, fabsf(a[i]));
		assert_true(hi > 0.2f); /* the bound is 1/sqrt(16), not 1/sqrt(100) */
	}
	free(a);
	free(b);
}

static void test_train__permutation(void **state)
{
	uint32_t a[1000], b[1000];
	int seen[1000] = {0};

	(void)state;
	mlp_train_permutation(a, 1000, 3, 0);
	mlp_train_permutation(b, 1000, 3, 0);
	assert_memory_equal(a, b, sizeof(a));
	for (int i = 0; i < 1000; i++)
		seen[a[i]]++;
	for (int i = 0; i < 1000; i++)
		assert_int_equal(seen[i], 1);
	mlp_train_permutation(b, 1000, 3, 1);
	assert_memory_not_equal(a, b, sizeof(a));
	mlp_train_permutation(b, 1000, 4, 0);
	assert_memory_not_equal(a, b, sizeof(a));
	mlp_train_permutation(b, 1, 4, 0);
	assert_int_equal(b[0], 0);
}

static void test_train__backend_select(void **state)
{
	const struct mlp_train_backend_ops *ops = NULL;

	(void)state;
	assert_int_equal(mlp_train_backend_select(&ops, "cpu"), 0);
	assert_string_equal(ops->name, "cpu");
	assert_int_equal(mlp_train_backend_select(&ops, "auto"), 0);
	assert_int_equal(mlp_train_backend_select(&ops, "tpu"), MLP_EINVAL);
	assert_non_null(strstr(mlp_error_last(), "cpu, cuda or auto"));
#ifndef MLP_TRAIN_CUDA
	assert_int_equal(mlp_train_backend_select(&ops, "cuda"), MLP_EINVAL);
	assert_non_null(strstr(mlp_error_last(), "without its CUDA backend"));
#endif
}

/* Random inputs in [-1, 1) and labels for a tiny net. */
static void random_batch(float *x, int32_t *y, int n, int features, int classes, uint64_t seed)
{
	struct mlp_rng r;

	mlp_rng_seed(&r, seed);
	for (int i = 0; i < n * features; i++)
		x[i] = 2 * mlp_rng_float(&r) - 1;
	for (int i = 0; i < n; i++)
		y[i] = (int32_t)mlp_rng_below(&r, (uint64_t)classes);
}

static double mean_loss(struct mlp_train_backend *be, const float *params, const float *x,
                        const int32_t *y, int n)
{
	struct mlp_batch_stats st = {0};

	assert_int_equal(be->ops->set_params(be, params), 0);
	assert_int_equal(be->ops->predict(be, x, y, n, NULL, &st), 0);
	return st.loss_sum / n;
}

static void test_train__gradient_matches_finite_differences(void **state)
{
	const struct mlp_train_backend_ops *ops = &mlp_train_backend_cpu;
	struct mlp_shape s = {4, {6, 5, 4, 3}};
	size_t np = mlp_shape_nparams(&s);
	struct mlp_train_backend *be;
	struct mlp_batch_stats st = {0};
	float *params = xmalloc(np * sizeof(float)), *grad = xmalloc(np * sizeof(float));
	float x[7 * 6];
	int32_t y[7];
	double loss;

	(void)state;
	mlp_model_init(params, &s, 11);
	random_batch(x, y, 7, 6, 3, 12);
	assert_int_equal(ops->create(&be, &s, 8), 0);
	assert_int_equal(ops->set_params(be, params), 0);
	assert_int_equal(ops->train_batch(be, x, y, 7, &st), 0);
	memcpy(grad, ops->grad(be), np * sizeof(float));
	loss = mean_loss(be, params, x, y, 7);
	assert_true(fabs(st.loss_sum / 7 - loss) < 1e-6);
	for (size_t i = 0; i < np; i++) {
		const float h = 1e-2f;
		float keep = params[i];
		double up, down, numeric;

		params[i] = keep + h;
		up = mean_loss(be, params, x, y, 7);
		params[i] = keep - h;
		down = mean_loss(be, params, x, y, 7);
		params[i] = keep;
		numeric = (up - down) / (2.0 * h);
		if (fabs(numeric - grad[i]) > 2e-3 + 1e-2 * fabs(numeric))
			fail_msg("parameter %zu: analytic %g, numeric %g", i, grad[i], numeric);
	}
	ops->destroy(be);
	free(params);
	free(grad);
}

static void test_train__sgd_step_is_torch_sgd(void **state)
{
	const struct mlp_train_backend_ops *ops = &mlp_train_backend_cpu;
	struct mlp_shape s = {2, {1, 2}};
	struct mlp_train_backend *be;
	const float p0[4] = {1.0f, -2.0f, 0.5f, 0.0f};
	float p[4], want[4], buf[4];
	const struct mlp_sgd opt = {.lr = 0.1f, .momentum = 0.9f, .weight_decay = 0.01f};
	const float g1[4] = {0.5f, -1.0f, 0.25f, 2.0f}, g2[4] = {-0.5f, 0.0f, 1.0f, 1.0f};

	(void)state;
	assert_int_equal(ops->create(&be, &s, 1), 0);
	assert_int_equal(ops->set_params(be, p0), 0);
	/* Step 1: d = g + wd p; buf = d; p -= lr buf.
	 * Step 2: d = g + wd p; buf = m buf + d; p -= lr buf. */
	for (int i = 0; i < 4; i++) {
		float d = g1[i] + opt.weight_decay * p0[i];

		buf[i] = d;
		want[i] = p0[i] - opt.lr * buf[i];
	}
	memcpy(ops->grad(be), g1, sizeof(g1));
	assert_int_equal(ops->sgd_step(be, &opt), 0);
	assert_int_equal(ops->get_params(be, p), 0);
	for (int i = 0; i < 4; i++)
		assert_true(fabsf(p[i] - want[i]) < 1e-7f);
	/* By hand for element 0: d = 0.5 + 0.01 * 1 = 0.51; p = 1 - 0.051. */
	assert_true(fabsf(p[0] - 0.949f) < 1e-6f);
	for (int i = 0; i < 4; i++) {
		float d = g2[i] + opt.weight_decay * want[i];

		buf[i] = opt.momentum * buf[i] + d;
		want[i] = want[i] - opt.lr * buf[i];
	}
	memcpy(ops->grad(be), g2, sizeof(g2));
	assert_int_equal(ops->sgd_step(be, &opt), 0);
	assert_int_equal(ops->get_params(be, p), 0);
	for (int i = 0; i < 4; i++)
		assert_true(fabsf(p[i] - want[i]) < 1e-6f);
	/* Element 0 by hand: d = -0.5 + 0.00949 = -0.49051; buf = 0.459 - 0.49051
	 * = -0.03151; p = 0.949 + 0.003151 = 0.952151. */
	assert_true(fabsf(p[0] - 0.952151f) < 1e-6f);

	/* set_params forgets the momentum: the next step starts buf afresh. */
	assert_int_equal(ops->set_params(be, p0), 0);
	memcpy(ops->grad(be), g1, sizeof(g1));
	assert_int_equal(ops->sgd_step(be, &opt), 0);
	assert_int_equal(ops->get_params(be, p), 0);
	assert_true(fabsf(p[0] - 0.949f) < 1e-6f);
	ops->destroy(be);
}

/* What DDP relies on: two ranks' half-batch mean gradients, averaged, are
 * the whole batch's mean gradient, so training follows the same path. */
static void test_train__two_half_batches_equal_one_batch(void **state)
{
	const struct mlp_train_backend_ops *ops = &mlp_train_backend_cpu;
	struct mlp_shape s = {3, {20, 16, 5}};
	size_t np = mlp_shape_nparams(&s);
	struct mlp_train_backend *one, *r0, *r1;
	const struct mlp_sgd opt = {.lr = 0.1f, .momentum = 0.9f, .weight_decay = 1e-3f};
	float *params = xmalloc(np * sizeof(float)), *pa = xmalloc(np * sizeof(float));
	float *pb = xmalloc(np * sizeof(float)), *pc = xmalloc(np * sizeof(float));
	float x[64 * 20], xr[32 * 20];
	int32_t y[64], yr[32];

	(void)state;
	mlp_model_init(params, &s, 21);
	assert_int_equal(ops->create(&one, &s, 64), 0);
	assert_int_equal(ops->create(&r0, &s, 32), 0);
	assert_int_equal(ops->create(&r1, &s, 32), 0);
	ops->set_params(one, params);
	ops->set_params(r0, params);
	ops->set_params(r1, params);
	for (int step = 0; step < 20; step++) {
		struct mlp_batch_stats st = {0};
		float *g0, *g1;

		random_batch(x, y, 64, 20, 5, 100 + (uint64_t)step);
		assert_int_equal(ops->train_batch(one, x, y, 64, &st), 0);
		ops->sgd_step(one, &opt);
		/* Rank r takes samples r, r+2, ... as DistributedSampler does. */
		for (int r = 0; r < 2; r++) {
			for (int i = 0; i < 32; i++) {
				memcpy(xr + i * 20, x + (2 * i + r) * 20, 20 * sizeof(float));
				yr[i] = y[2 * i + r];
			}
			assert_int_equal(ops->train_batch(r ? r1 : r0, xr, yr, 32, &st), 0);
		}
		g0 = ops->grad(r0);
		g1 = ops->grad(r1);
		for (size_t i = 0; i < np; i++)
			g0[i] = g1[i] = (g0[i] + g1[i]) / 2;
		ops->sgd_step(r0, &opt);
		ops->sgd_step(r1, &opt);
	}
	ops->get_params(one, pa);
	ops->get_params(r0, pb);
	ops->get_params(r1, pc);
	assert_memory_equal(pb, pc, np * sizeof(float));
	for (size_t i = 0; i < np; i++)
		if (fabsf(pa[i] - pb[i]) > 1e-5f)
			fail_msg("parameter %zu: %g vs %g", i, pa[i], pb[i]);
	assert_memory_not_equal(pa, params, np * sizeof(float));
	ops->destroy(one);
	ops->destroy(r0);
	ops->destroy(r1);
	free(params);
	free(pa);
	free(pb);
	free(pc);
}

/* A net that can learn: a separable problem is learned to high accuracy. */
static void test_train__learns_a_separable_problem(void **state)
{
	const struct mlp_train_backend_ops *ops = &mlp_train_backend_cpu;
	struct mlp_shape s = {3, {2, 16, 3}};
	size_t np = mlp_shape_nparams(&s);
	struct mlp_train_backend *be;
	const struct mlp_sgd opt = {.lr = 0.2f, .momentum = 0.9f};
	float *params = xmalloc(np * sizeof(float)), x[300 * 2];
	int32_t y[300];
	struct mlp_rng r;
	struct mlp_batch_stats st = {0};

	(void)state;
	mlp_rng_seed(&r, 4);
	for (int i = 0; i < 300; i++) {
		y[i] = i % 3;
		x[2 * i] = (float)y[i] + 0.3f * (mlp_rng_float(&r) - 0.5f);
		x[2 * i + 1] = (float)((y[i] * 2) % 3) + 0.3f * (mlp_rng_float(&r) - 0.5f);
	}
	mlp_model_init(params, &s, 1);
	assert_int_equal(ops->create(&be, &s, 300), 0);
	ops->set_params(be, params);
	for (int epoch = 0; epoch < 30; epoch++) {
		for (int b = 0; b < 300; b += 30) {
			struct mlp_batch_stats junk = {0};

			assert_int_equal(ops->train_batch(be, x + 2 * b, y + b, 30, &junk), 0);
			ops->sgd_step(be, &opt);
		}
	}
	assert_int_equal(ops->predict(be, x, y, 300, NULL, &st), 0);
	assert_true(st.correct >= 297);
	assert_true(st.loss_sum / 300 < 0.1);
	/* And it refuses batches larger than it was made for. */
	assert_int_equal(ops->train_batch(be, x, y, 301, &st), MLP_EINVAL);
	ops->destroy(be);
	free(params);
}

static void test_train__metrics_json(void **state)
{
	struct fixture *f = *state;
	struct mlp_metrics m = {0};
	char *p = path_in(f, "m.json"), *text;

	mlp_metrics_add(&m, "accuracy", 0.875);
	mlp_metrics_add(&m, "loss", NAN);
	mlp_metrics_add(&m, "world_size", 2);
	assert_int_equal(mlp_metrics_write(&m, p), 0);
	assert_int_equal(mlp_read_file(&text, NULL, p, 4096), 0);
	assert_string_equal(text, "{\"accuracy\": 0.875, \"world_size\": 2}\n");
	free(text);
	mlp_metrics_free(&m);
	free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test_setup_teardown(test_train__idx_plain_and_gzip, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_train__idx_errors, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_train__csv, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_train__csv_errors, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_train__sources, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_train__split, setup, teardown),
	        cmocka_unit_test(test_train__shape),
	        cmocka_unit_test_setup_teardown(test_train__model_file_round_trip, setup, teardown),
	        cmocka_unit_test(test_train__model_file_corrupt),
	        cmocka_unit_test_setup_teardown(test_train__model_load_errors, setup, teardown),
	        cmocka_unit_test(test_train__init_is_seeded_and_bounded),
	        cmocka_unit_test(test_train__permutation),
	        cmocka_unit_test(test_train__backend_select),
	        cmocka_unit_test(test_train__gradient_matches_finite_differences),
	        cmocka_unit_test(test_train__sgd_step_is_torch_sgd),
	        cmocka_unit_test(test_train__two_half_batches_equal_one_batch),
	        cmocka_unit_test(test_train__learns_a_separable_problem),
	        cmocka_unit_test_setup_teardown(test_train__metrics_json, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
