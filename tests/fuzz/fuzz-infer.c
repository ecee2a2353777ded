/*
 * fuzz-infer.c - fuzz target for mlpipe-model-server's infer request parser
 * and answer writer (runners/model-server/request.c).
 *
 * Each input is used twice, for a model of 4 features and 3 classes on a
 * server that takes at most 8 rows:
 *
 *  - as a whole request body, and
 *  - as the text of "data" inside a valid request whose shape is [R, 4],
 *    R taken from the first byte, so that random bytes reach the number
 *    parser too.
 *
 * A body that is refused must be refused with MLP_EINVAL and a message.
 * A body that is accepted must hold 1 to 8 rows of finite floats, and must
 * agree with cJSON (an independent parser, strtod for the numbers): cJSON
 * parses it too (unless a number is longer than cJSON 1.7's 63-character
 * limit), and where the keys that matter are not repeated, the id, the
 * rows, the outputs asked for and every value are those cJSON reads (a
 * value within one float ulp of strtod's, the precision request.c
 * promises for 16 to 19 digits).  The answer is then written for logits
 * computed from the row the way a linear model would (so that large
 * inputs overflow them to inf or NaN), and must be JSON that cJSON reads
 * back to the same id, shapes, logits (null where one is not finite) and
 * classes.  ASan and UBSan check
 * the rest: no read past the body, no leak, no undefined behaviour.
 *
 * Built two ways: with clang's -fsanitize=fuzzer by `make fuzz`, and with
 * tests/fuzz/driver.c into a test of `make check` that runs the seed
 * corpus and a few thousand pseudo-random inputs.
 */
#include "config.h"

#include <cjson/cJSON.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/util.h"
#include "model-server/model-server.h"
#include "model-server/request.h"

#define FEATURES 4
#define CLASSES 3
#define MAX_BATCH 8

static void fail(const char *what, const char *body, size_t len)
{
	fprintf(stderr, "fuzz-infer: %s\nbody (%zu bytes): %.*s\n", what, len,
	        (int)(len < 4096 ? len : 4096), body);
	abort();
}

/* The member key of obj if it is there exactly once (request.c takes the
 * last of repeated keys, cJSON the first: those are not compared). */
static const cJSON *only(const cJSON *obj, const char *key)
{
	const cJSON *found = NULL, *c;

	if (!cJSON_IsObject(obj))
		return NULL;
	for (c = obj->child; c; c = c->next) {
		if (c->string && strcmp(c->string, key) == 0) {
			if (found)
				return NULL;
			found = c;
		}
	}
	return found;
}

/* Whether a run of number characters is longer than cJSON 1.7 reads. */
static bool long_number(const char *body, size_t len)
{
	size_t run = 0;

	for (size_t k = 0; k < len; k++) {
		run = strchr("0123456789+-.eE", body[k]) && body[k] ? run + 1 : 0;
		if (run >= 63)
			return true;
	}
	return false;
}

/* Whether got is strtod's value ref rounded to float, or one float ulp
 * from it. */
static bool close_float(float got, double ref)
{
	float want;

	if (ref > FLT_MAX || ref < -FLT_MAX)
		return got == (ref > 0 ? FLT_MAX : -FLT_MAX);
	want = (float)ref;
	return got == want || got == nextafterf(want, INFINITY) ||
	       got == nextafterf(want, -INFINITY);
}

/* Appends every number of nested arrays v to vals; false on another type. */
static bool flatten(const cJSON *v, double *vals, size_t *n, size_t max)
{
	const cJSON *c;

	if (cJSON_IsNumber(v)) {
		if (*n < max)
			vals[*n] = v->valuedouble;
		++*n;
		return true;
	}
	if (!cJSON_IsArray(v))
		return false;
	cJSON_ArrayForEach(c, v)
	{
		if (!flatten(c, vals, n, max))
			return false;
	}
	return true;
}

/* Compares an accepted request with what cJSON reads in it. */
static void compare_cjson(const struct ms_infer *r, const char *body, size_t len)
{
	const cJSON *inputs, *t, *data, *shape, *id, *outputs, *o;
	double vals[MAX_BATCH * FEATURES];
	size_t n = 0;
	char *text = xstrndup(body, len); /* accepted: it has no '\0' */
	cJSON *root = cJSON_ParseWithOpts(text, NULL, 1);

	free(text);
	if (root == NULL) {
		if (!long_number(body, len))
			fail("accepted, but cJSON refuses it", body, len);
		return;
	}
	if ((id = only(root, "id")) != NULL && strcmp(r->id ? r->id : "", id->valuestring) != 0)
		fail("the id differs from cJSON's", body, len);
	outputs = only(root, "outputs");
	if (outputs && cJSON_GetArraySize(outputs) > 0) {
		bool logits = false, class = false;

		cJSON_ArrayForEach(o, outputs)
		{
			const cJSON *name = only(o, "name");

			if (name == NULL)
				goto done; /* a repeated "name": not compared */
			logits |= strcmp(name->valuestring, "logits") == 0;
			class |= strcmp(name->valuestring, "class") == 0;
		}
		if (logits != r->want_logits || class != r->want_class)
			fail("the outputs differ from cJSON's", body, len);
	}
	inputs = only(root, "inputs");
	if (!inputs || cJSON_GetArraySize(inputs) != 1)
		goto done;
	t = cJSON_GetArrayItem(inputs, 0);
	if ((shape = only(t, "shape")) != NULL && cJSON_GetArraySize(shape) == 2 &&
	    cJSON_GetArrayItem(shape, 0)->valuedouble != r->rows)
		fail("the rows differ from cJSON's shape", body, len);
	if ((data = only(t, "data")) == NULL)
		goto done;
	if (!flatten(data, vals, &n, MLP_ARRAY_SIZE(vals)) || n != (size_t)r->rows * FEATURES)
		fail("the data differ from cJSON's in number", body, len);
	for (size_t k = 0; k < n; k++)
		if (!close_float(r->x[k], vals[k]))
			fail("a value differs from strtod's by more than a float ulp", body, len);
done:
	cJSON_Delete(root);
}

/* Writes the answer for logits computed from the rows, and reads it back. */
static void check_answer(struct ms_infer *r, const char *body, size_t len)
{
	const cJSON *o, *data;
	cJSON *root;
	char *answer;
	int outputs = 0;

	r->logits = xmalloc((size_t)r->rows * CLASSES * sizeof(float));
	for (int i = 0; i < r->rows; i++)
		for (int j = 0; j < CLASSES; j++)
			r->logits[i * CLASSES + j] =
			        2.0f * r->x[i * FEATURES + j] - r->x[i * FEATURES + FEATURES - 1];
	answer = ms_infer_answer(r, "m\"odel\n", "1", CLASSES);
	if ((root = cJSON_Parse(answer)) == NULL)
		fail(xasprintf("the answer is not JSON: %s", answer), body, len);
	o = cJSON_GetObjectItemCaseSensitive(root, "id");
	if ((r->id == NULL) != (o == NULL) ||
	    (r->id && (!cJSON_IsString(o) || strcmp(o->valuestring, r->id) != 0)))
		fail("the answer's id is not the request's", body, len);
	cJSON_ArrayForEach(o, cJSON_GetObjectItemCaseSensitive(root, "outputs"))
	{
		const char *name =
		        cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "name"));
		bool logits = name && strcmp(name, "logits") == 0;
		int k = 0;

		outputs++;
		data = cJSON_GetObjectItemCaseSensitive(o, "data");
		if (cJSON_GetArraySize(data) != r->rows * (logits ? CLASSES : 1))
			fail("an output has the wrong number of values", body, len);
		for (const cJSON *v = data->child; v; v = v->next, k++) {
			bool same;

			if (!logits)
				same = v->valuedouble ==
				       ms_argmax(r->logits + k * CLASSES, CLASSES);
			else if (!isfinite(r->logits[k]))
				same = cJSON_IsNull(v); /* docs/model-server.md: no JSON number */
			else
				same = cJSON_IsNumber(v) && (float)v->valuedouble == r->logits[k];
			if (!same)
				fail(xasprintf("the answer's values are not the logits': %s",
				               answer),
				     body, len);
		}
	}
	if (outputs != (int)r->want_logits + (int)r->want_class)
		fail("the answer has the wrong outputs", body, len);
	cJSON_Delete(root);
	free(answer);
}

static void check_body(const char *body, size_t len)
{
	struct ms_infer r;
	int rc = ms_infer_parse(&r, body, len, FEATURES, MAX_BATCH);

	if (rc != 0) {
		if (rc != MLP_EINVAL || *mlp_error_last() == '\0')
			fail("refused without MLP_EINVAL and a message", body, len);
		ms_infer_free(&r);
		return;
	}
	if (r.rows < 1 || r.rows > MAX_BATCH || r.x == NULL || !(r.want_logits || r.want_class))
		fail("accepted with bad rows or outputs", body, len);
	for (size_t k = 0; k < (size_t)r.rows * FEATURES; k++)
		if (!isfinite(r.x[k]))
			fail("accepted a value that is not a finite float", body, len);
	if (r.id && !mlp_utf8_valid(r.id, strlen(r.id)))
		fail("accepted an id that is not UTF-8", body, len);
	compare_cjson(&r, body, len);
	check_answer(&r, body, len);
	ms_infer_free(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mlp_buf b = {0};
	char *body;

	if (size > 1 << 16)
		return 0;
	/* exactly the bytes, without a terminating '\0' to lean on */
	body = xmalloc(size ? size : 1);
	memcpy(body, data, size);
	check_body(body, size);
	free(body);
	mlp_buf_printf(&b,
	               "{\"id\":\"f\",\"inputs\":[{\"name\":\"input\",\"datatype\":\"FP32\","
	               "\"shape\":[%d,%d],\"data\":[",
	               size ? data[0] % MAX_BATCH + 1 : 1, FEATURES);
	if (size > 1)
		mlp_buf_add(&b, data + 1, size - 1);
	mlp_buf_puts(&b, "]}]}");
	check_body(b.data, b.len);
	mlp_buf_free(&b);
	return 0;
}
