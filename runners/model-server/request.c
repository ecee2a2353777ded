/*
 * request.c - the infer request and answer of the Open Inference Protocol
 * v2 REST API as mlpipe-model-server speaks it: parsing and checking the
 * JSON body into rows of features, and writing the logits and classes
 * back (model-server.h, docs/model-server.md "Infer").
 *
 * Every check that fails says what was wrong in one message; the caller
 * answers it as 400.  cJSON parses the body; numbers that do not fit a
 * float or are not finite are refused.
 */
#include "config.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/util.h"
#include "model-server.h"
#include "request.h"

void ms_json_string(struct mlp_buf *b, const char *s)
{
	static const char hex[] = "0123456789abcdef";

	mlp_buf_putc(b, '"');
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\') {
			mlp_buf_putc(b, '\\');
			mlp_buf_putc(b, (char)*p);
		} else if (*p < 0x20) {
			mlp_buf_puts(b, "\\u00");
			mlp_buf_putc(b, hex[*p >> 4]);
			mlp_buf_putc(b, hex[*p & 15]);
		} else {
			mlp_buf_putc(b, (char)*p);
		}
	}
	mlp_buf_putc(b, '"');
}

/* Copies the numbers of data (flat or nested arrays) into x, at most cap
 * of them; *n counts them, also past cap. */
static int flatten(const cJSON *data, float *x, size_t cap, size_t *n)
{
	const cJSON *v;

	cJSON_ArrayForEach(v, data)
	{
		if (cJSON_IsArray(v)) {
			int rc = flatten(v, x, cap, n);

			if (rc != 0)
				return rc;
			continue;
		}
		if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) ||
		    fabs(v->valuedouble) > 3.4028234663852886e38) {
			mlp_error_set("input data: value %zu is not a finite FP32 number", *n);
			return MLP_EINVAL;
		}
		if (*n < cap)
			x[*n] = (float)v->valuedouble;
		(*n)++;
	}
	return 0;
}

/* An integer dimension of a shape, 0 .. 2^31-1, or -1 when it is not one. */
static long long dimension(const cJSON *d)
{
	if (!cJSON_IsNumber(d) || !(d->valuedouble >= 0 && d->valuedouble < 2147483648.0) ||
	    d->valuedouble != floor(d->valuedouble))
		return -1;
	return (long long)d->valuedouble;
}

/* Reads the shape ([F] or [B, F]) into *rows and checks it. */
static int read_shape(int *rows, const cJSON *shape, int features, int max_batch)
{
	int n = cJSON_GetArraySize(shape);
	long long b = 1, f;

	if (!cJSON_IsArray(shape) || n < 1 || n > 2) {
		mlp_error_set("input shape: want [rows, %d] or [%d]", features, features);
		return MLP_EINVAL;
	}
	if (n == 2 && (b = dimension(cJSON_GetArrayItem(shape, 0))) < 0) {
		mlp_error_set("input shape: the rows are not a count");
		return MLP_EINVAL;
	}
	f = dimension(cJSON_GetArrayItem(shape, n - 1));
	if (f != features) {
		mlp_error_set("input shape: %lld features, but the model takes %d", f, features);
		return MLP_EINVAL;
	}
	if (b < 1 || b > max_batch) {
		mlp_error_set("input shape: %lld rows (this server takes 1 to %d per request)", b,
		              max_batch);
		return MLP_EINVAL;
	}
	*rows = (int)b;
	return 0;
}

/* Reads "outputs" (absent: both) into r->want_*. */
static int read_outputs(struct ms_infer *r, const cJSON *outputs)
{
	const cJSON *o;

	if (outputs == NULL) {
		r->want_logits = r->want_class = true;
		return 0;
	}
	if (!cJSON_IsArray(outputs)) {
		mlp_error_set("outputs: not an array");
		return MLP_EINVAL;
	}
	cJSON_ArrayForEach(o, outputs)
	{
		const char *name =
		        cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "name"));

		if (name && strcmp(name, "logits") == 0) {
			r->want_logits = true;
		} else if (name && strcmp(name, "class") == 0) {
			r->want_class = true;
		} else {
			mlp_error_set("outputs: unknown output %s%s%s (the model has 'logits' and "
			              "'class')",
			              name ? "'" : "", name ? name : "without a name",
			              name ? "'" : "");
			return MLP_EINVAL;
		}
	}
	if (!r->want_logits && !r->want_class)
		r->want_logits = r->want_class = true;
	return 0;
}

/* Reads the one input tensor into r->x and r->rows. */
static int read_input(struct ms_infer *r, const cJSON *inputs, int features, int max_batch)
{
	const cJSON *in = cJSON_GetArrayItem(inputs, 0), *data;
	const char *name, *datatype;
	size_t want, n = 0;
	int rc;

	if (!cJSON_IsArray(inputs) || cJSON_GetArraySize(inputs) != 1 || !cJSON_IsObject(in)) {
		mlp_error_set("inputs: want an array of one tensor named 'input'");
		return MLP_EINVAL;
	}
	name = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(in, "name"));
	if (name == NULL || strcmp(name, "input") != 0) {
		mlp_error_set("inputs: unknown input %s%s%s (the model's input is 'input')",
		              name ? "'" : "", name ? name : "without a name", name ? "'" : "");
		return MLP_EINVAL;
	}
	datatype = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(in, "datatype"));
	if (datatype == NULL || strcmp(datatype, "FP32") != 0) {
		mlp_error_set("input datatype: %s (the model takes FP32)",
		              datatype ? datatype : "missing");
		return MLP_EINVAL;
	}
	if ((rc = read_shape(&r->rows, cJSON_GetObjectItemCaseSensitive(in, "shape"), features,
	                     max_batch)) != 0)
		return rc;
	data = cJSON_GetObjectItemCaseSensitive(in, "data");
	if (!cJSON_IsArray(data)) {
		mlp_error_set("input data: missing or not an array");
		return MLP_EINVAL;
	}
	want = (size_t)r->rows * (size_t)features;
	r->x = xmalloc(want * sizeof(float));
	if ((rc = flatten(data, r->x, want, &n)) != 0)
		return rc;
	if (n != want) {
		mlp_error_set("input data: %zu values, but shape [%d, %d] needs %zu", n, r->rows,
		              features, want);
		return MLP_EINVAL;
	}
	return 0;
}

int ms_infer_parse(struct ms_infer *r, const char *body, size_t len, int features, int max_batch)
{
	cJSON *root = cJSON_ParseWithLength(body, len);
	const cJSON *id;
	int rc = MLP_EINVAL;

	memset(r, 0, sizeof(*r));
	if (root == NULL || !cJSON_IsObject(root)) {
		mlp_error_set("the body is not a JSON object");
		goto done;
	}
	id = cJSON_GetObjectItemCaseSensitive(root, "id");
	if (id && !cJSON_IsString(id)) {
		mlp_error_set("id: not a string");
		goto done;
	}
	if (id)
		r->id = xstrdup(id->valuestring);
	if ((rc = read_input(r, cJSON_GetObjectItemCaseSensitive(root, "inputs"), features,
	                     max_batch)) != 0 ||
	    (rc = read_outputs(r, cJSON_GetObjectItemCaseSensitive(root, "outputs"))) != 0)
		goto done;
	rc = 0;
done:
	cJSON_Delete(root);
	return rc;
}

void ms_infer_free(struct ms_infer *r)
{
	free(r->id);
	free(r->x);
	free(r->logits);
	memset(r, 0, sizeof(*r));
}

char *ms_infer_answer(const struct ms_infer *r, const char *name, const char *version, int classes)
{
	struct mlp_buf b = {0};
	size_t n = (size_t)r->rows * (size_t)classes;

	mlp_buf_putc(&b, '{');
	if (r->id) {
		mlp_buf_puts(&b, "\"id\":");
		ms_json_string(&b, r->id);
		mlp_buf_putc(&b, ',');
	}
	mlp_buf_puts(&b, "\"model_name\":");
	ms_json_string(&b, name);
	mlp_buf_puts(&b, ",\"model_version\":");
	ms_json_string(&b, version);
	mlp_buf_puts(&b, ",\"outputs\":[");
	if (r->want_logits) {
		mlp_buf_printf(&b,
		               "{\"name\":\"logits\",\"datatype\":\"FP32\",\"shape\":[%d,%d],"
		               "\"data\":[",
		               r->rows, classes);
		for (size_t i = 0; i < n; i++)
			mlp_buf_printf(&b, "%s%.9g", i ? "," : "", (double)r->logits[i]);
		mlp_buf_puts(&b, "]}");
	}
	if (r->want_class) {
		mlp_buf_printf(
		        &b,
		        "%s{\"name\":\"class\",\"datatype\":\"INT64\",\"shape\":[%d],\"data\":[",
		        r->want_logits ? "," : "", r->rows);
		for (int i = 0; i < r->rows; i++)
			mlp_buf_printf(&b, "%s%d", i ? "," : "",
			               ms_argmax(r->logits + (size_t)i * (size_t)classes, classes));
		mlp_buf_puts(&b, "]}");
	}
	mlp_buf_puts(&b, "]}\n");
	return mlp_buf_detach(&b);
}
