/*
 * fuzz-model.c - fuzz target for the model file reader
 * (runners/train/model.c: mlp_model_decode, what mlp_model_load,
 * mlpipe-model-server and the ONNX export read a model.bin with) and the
 * layer-size parser (mlp_shape_parse, "784,256,10").
 *
 * Each input is read three ways:
 *
 *  - as a model file image, exactly as it is;
 *  - the same with its last four bytes replaced by the CRC-32 of the rest,
 *    so that random bytes get past the checksum to the checks after it;
 *  - as the text of a --layers value.
 *
 * A refused image must be refused with MLP_EINVAL and a message.  An
 * accepted one must have a valid shape and must encode back to exactly
 * the bytes read (the format has one spelling of each model).  An
 * accepted shape must format and parse back to itself.  ASan and UBSan
 * check the rest: no read past the image, no leak, no undefined
 * behaviour.
 *
 * Built two ways: with clang's -fsanitize=fuzzer by `make fuzz`, and with
 * tests/fuzz/driver.c into a test of `make check` that runs the seed
 * corpus and a few thousand pseudo-random inputs.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "base/error.h"
#include "base/util.h"
#include "model.h"

static void fail(const char *what, const uint8_t *data, size_t size)
{
	fprintf(stderr, "fuzz-model: %s (%zu bytes)\n", what, size);
	for (size_t k = 0; k < size && k < 256; k++)
		fprintf(stderr, "%02x%s", data[k], k % 32 == 31 ? "\n" : "");
	fputc('\n', stderr);
	abort();
}

static void check_image(const uint8_t *data, size_t size)
{
	struct mlp_shape s;
	float *params = NULL;
	uint8_t *again;
	size_t len;
	int rc;

	rc = mlp_model_decode(&s, &params, data, size, "model.bin");
	if (rc != 0) {
		if (rc != MLP_EINVAL || *mlp_error_last() == '\0')
			fail("refused without MLP_EINVAL and a message", data, size);
		return;
	}
	if (mlp_shape_check(&s) != 0)
		fail("accepted a shape that mlp_shape_check refuses", data, size);
	mlp_model_encode(&again, &len, &s, params);
	if (len != size || memcmp(again, data, size) != 0)
		fail("accepted, but does not encode back to the same bytes", data, size);
	free(again);
	free(params);
}

static void check_shape_text(const uint8_t *data, size_t size)
{
	char *text = xstrndup((const char *)data, size), buf[1024];
	struct mlp_shape s, t;

	if (mlp_shape_parse(&s, text) == 0) {
		char *comma;

		if (mlp_shape_check(&s) != 0)
			fail("parsed a shape that mlp_shape_check refuses", data, size);
		mlp_shape_format(buf, sizeof(buf), &s);
		/* "784-256-10" back to "784,256,10" */
		while ((comma = strchr(buf, '-')) != NULL)
			*comma = ',';
		if (mlp_shape_parse(&t, buf) != 0 || t.nsizes != s.nsizes ||
		    memcmp(t.sizes, s.sizes, sizeof(int) * (size_t)s.nsizes) != 0)
			fail("a parsed shape does not format and parse back to itself", data, size);
	}
	free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *copy;

	if (size > 1 << 16)
		return 0;
	/* exactly the bytes, so that ASan sees a read past them */
	copy = xmalloc(size ? size : 1);
	memcpy(copy, data, size);
	check_image(copy, size);
	if (size >= 4) {
		uint32_t crc = (uint32_t)crc32(0L, copy, (uInt)(size - 4));

		for (int k = 0; k < 4; k++)
			copy[size - 4 + k] = (uint8_t)(crc >> (8 * k));
		check_image(copy, size);
	}
	free(copy);
	check_shape_text(data, size);
	return 0;
}
