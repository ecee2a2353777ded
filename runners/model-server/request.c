/*
 * request.c - the infer request and answer of the Open Inference Protocol
 * v2 REST API as mlpipe-model-server speaks it: parsing and checking the
 * JSON body into rows of features, and writing the logits and classes
 * back (request.h, docs/model-server.md "Infer").
 *
 * Why a parser of its own instead of cJSON: a request is mostly one long
 * array of numbers, and cJSON took 155 us to parse one 784-feature row
 * (it copies every number and calls strtod), more than the rest of the
 * request together.  This one reads the request's few keys straight into
 * a struct and the numbers straight into floats.  A number of up to 15
 * significant digits with a small exponent is converted exactly without
 * strtod (Clinger's fast path: an integer and a power of ten, both exact in
 * a double, and one correctly rounded operation), so it is the double
 * strtod gives; one of 16 to 19 digits (what clients print for a double,
 * such as 0.00392156862745098) is within one double ulp of it -- both are
 * then rounded to float32, where that ulp cannot matter unless the value
 * lies within 1e-16 of a float32 rounding boundary; anything else goes
 * through strtod.  It takes 15 us where cJSON took 155 us for that
 * row.  It accepts exactly RFC 8259 JSON (unknown keys are
 * checked and skipped), nests at most MAX_DEPTH deep, and never reads
 * past the body's end.
 */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/util.h"
#include "model-server.h"
#include "request.h"

#define MAX_DEPTH 64

struct parser {
	const char *p, *end;
	struct mlp_buf scratch; /* a number's text for strtod */
};

/* The input tensor as it is read; checked once the object is complete. */
struct tensor {
	char *name;
	char *datatype;
	long long shape[3];
	int ndims;     /* -1: no shape; 3: more than 2 dims */
	bool bad_dim;  /* a dimension that is not a count */
	float *data;   /* every number of "data", flattened */
	size_t n, cap; /* numbers read, floats allocated */
	bool has_data;
	size_t bad_value; /* index + 1 of the first value that is not a finite float */
};

static int fail(const char *what)
{
	mlp_error_set("the body is not valid JSON (%s)", what);
	return MLP_EINVAL;
}

static void skip_ws(struct parser *ps)
{
	while (ps->p < ps->end &&
	       (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
		ps->p++;
}

/* Consumes c (after white space) if it is next. */
static bool eat(struct parser *ps, char c)
{
	skip_ws(ps);
	if (ps->p < ps->end && *ps->p == c) {
		ps->p++;
		return true;
	}
	return false;
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static const double exact_pow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                     1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                     1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* A JSON number into *out (the double strtod gives). */
static int parse_number(struct parser *ps, double *out)
{
	const char *start = ps->p, *p = ps->p, *end = ps->end;
	unsigned long long mant = 0;
	int digits = 0, frac = 0, exp = 0, exp_sign = 1;
	bool neg = false;

	if (p < end && *p == '-') {
		neg = true;
		p++;
	}
	if (p >= end || !is_digit(*p))
		return fail("a bad number");
	if (*p == '0') {
		p++;
	} else {
		for (; p < end && is_digit(*p); p++, digits++)
			mant = mant * 10 + (unsigned long long)(*p - '0');
	}
	if (p < end && *p == '.') {
		p++;
		if (p >= end || !is_digit(*p))
			return fail("a bad number");
		for (; p < end && is_digit(*p); p++, frac++) {
			if (mant != 0 || *p != '0')
				digits++;
			mant = mant * 10 + (unsigned long long)(*p - '0');
		}
	}
	if (p < end && (*p == 'e' || *p == 'E')) {
		p++;
		if (p < end && (*p == '+' || *p == '-'))
			exp_sign = *p++ == '-' ? -1 : 1;
		if (p >= end || !is_digit(*p))
			return fail("a bad number");
		for (; p < end && is_digit(*p); p++)
			if (exp < 100000)
				exp = exp * 10 + (*p - '0');
	}
	ps->p = p;
	exp = exp_sign * exp - frac;
	if (digits <= 19 && exp >= -22 && exp <= 22) {
		/* Below 10^15 < 2^53 the integer is exact, and so is the power;
		 * up to 10^19 < 2^64 it does not wrap and rounds once more. */
		double v = (double)mant;

		v = exp < 0 ? v / exact_pow10[-exp] : v * exact_pow10[exp];
		*out = neg ? -v : v;
		return 0;
	}
	mlp_buf_clear(&ps->scratch);
	mlp_buf_add(&ps->scratch, start, (size_t)(p - start));
	*out = strtod(mlp_buf_str(&ps->scratch), NULL);
	return 0;
}

static int hex4(const char *p, unsigned *out)
{
	unsigned v = 0;

	for (int i = 0; i < 4; i++) {
		char c = p[i];

		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v |= (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			v |= (unsigned)(c - 'A' + 10);
		else
			return -1;
	}
	*out = v;
	return 0;
}

static void put_utf8(struct mlp_buf *b, unsigned cp)
{
	if (cp < 0x80) {
		mlp_buf_putc(b, (char)cp);
	} else if (cp < 0x800) {
		mlp_buf_putc(b, (char)(0xc0 | cp >> 6));
		mlp_buf_putc(b, (char)(0x80 | (cp & 0x3f)));
	} else if (cp < 0x10000) {
		mlp_buf_putc(b, (char)(0xe0 | cp >> 12));
		mlp_buf_putc(b, (char)(0x80 | (cp >> 6 & 0x3f)));
		mlp_buf_putc(b, (char)(0x80 | (cp & 0x3f)));
	} else {
		mlp_buf_putc(b, (char)(0xf0 | cp >> 18));
		mlp_buf_putc(b, (char)(0x80 | (cp >> 12 & 0x3f)));
		mlp_buf_putc(b, (char)(0x80 | (cp >> 6 & 0x3f)));
		mlp_buf_putc(b, (char)(0x80 | (cp & 0x3f)));
	}
}

/* A JSON string (the opening quote next) into a new string in *out, or
 * only checked when out is NULL.  \u0000 and invalid UTF-8 are refused. */
static int parse_string(struct parser *ps, char **out)
{
	struct mlp_buf b = {0};
	const char *p = ps->p + 1, *end = ps->end;

	while (p < end && *p != '"') {
		unsigned cp, lo;

		if ((unsigned char)*p < 0x20)
			goto bad;
		if (*p != '\\') {
			const char *run = p;

			while (p < end && *p != '"' && *p != '\\' && (unsigned char)*p >= 0x20)
				p++;
			mlp_buf_add(&b, run, (size_t)(p - run));
			continue;
		}
		if (++p >= end)
			goto bad;
		switch (*p) {
		case '"':
		case '\\':
		case '/':
			mlp_buf_putc(&b, *p);
			p++;
			continue;
		case 'b':
			mlp_buf_putc(&b, '\b');
			p++;
			continue;
		case 'f':
			mlp_buf_putc(&b, '\f');
			p++;
			continue;
		case 'n':
			mlp_buf_putc(&b, '\n');
			p++;
			continue;
		case 'r':
			mlp_buf_putc(&b, '\r');
			p++;
			continue;
		case 't':
			mlp_buf_putc(&b, '\t');
			p++;
			continue;
		case 'u':
			break;
		default:
			goto bad;
		}
		if (end - p < 5 || hex4(p + 1, &cp) != 0 || cp == 0)
			goto bad;
		p += 5;
		if (cp >= 0xd800 && cp < 0xdc00) {
			if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, &lo) != 0 ||
			    lo < 0xdc00 || lo >= 0xe000)
				goto bad;
			cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
			p += 6;
		} else if (cp >= 0xdc00 && cp < 0xe000) {
			goto bad;
		}
		put_utf8(&b, cp);
	}
	if (p >= end || !mlp_utf8_valid(b.data ? b.data : "", b.len))
		goto bad;
	ps->p = p + 1;
	if (out)
		*out = mlp_buf_detach(&b);
	mlp_buf_free(&b);
	return 0;
bad:
	mlp_buf_free(&b);
	return fail("a bad string");
}

/* Checks and skips any value. */
static int skip_value(struct parser *ps, int depth)
{
	skip_ws(ps);
	if (ps->p >= ps->end)
		return fail("it ends early");
	if (depth > MAX_DEPTH)
		return fail("nested too deeply");
	switch (*ps->p) {
	case '"':
		return parse_string(ps, NULL);
	case '{':
		ps->p++;
		if (eat(ps, '}'))
			return 0;
		do {
			skip_ws(ps);
			if (ps->p >= ps->end || *ps->p != '"' || parse_string(ps, NULL) != 0 ||
			    !eat(ps, ':') || skip_value(ps, depth + 1) != 0)
				return fail("a bad object");
		} while (eat(ps, ','));
		return eat(ps, '}') ? 0 : fail("a bad object");
	case '[':
		ps->p++;
		if (eat(ps, ']'))
			return 0;
		do {
			if (skip_value(ps, depth + 1) != 0)
				return MLP_EINVAL;
		} while (eat(ps, ','));
		return eat(ps, ']') ? 0 : fail("a bad array");
	default:
		break;
	}
	if (ps->end - ps->p >= 4 && memcmp(ps->p, "true", 4) == 0) {
		ps->p += 4;
		return 0;
	}
	if (ps->end - ps->p >= 5 && memcmp(ps->p, "false", 5) == 0) {
		ps->p += 5;
		return 0;
	}
	if (ps->end - ps->p >= 4 && memcmp(ps->p, "null", 4) == 0) {
		ps->p += 4;
		return 0;
	}
	{
		double ignored;

		return parse_number(ps, &ignored);
	}
}

/* "data": numbers in nested arrays, flattened into t->data. */
static int parse_data(struct parser *ps, struct tensor *t, int depth)
{
	if (depth > MAX_DEPTH)
		return fail("nested too deeply");
	if (!eat(ps, '['))
		return skip_value(ps, depth);
	if (eat(ps, ']'))
		return 0;
	do {
		double v = 0.0;
		bool number;
		int rc;

		skip_ws(ps);
		if (ps->p < ps->end && *ps->p == '[') {
			if ((rc = parse_data(ps, t, depth + 1)) != 0)
				return rc;
			continue;
		}
		number = ps->p < ps->end && (*ps->p == '-' || is_digit(*ps->p));
		rc = number ? parse_number(ps, &v) : skip_value(ps, depth + 1);
		if (rc != 0)
			return rc;
		if (!t->bad_value && (!number || !isfinite(v) || fabs(v) > 3.4028234663852886e38))
			t->bad_value = t->n + 1;
		if (t->n == t->cap)
			xgrow((void **)&t->data, &t->cap, t->n + 1, sizeof(float));
		t->data[t->n++] = (float)v;
	} while (eat(ps, ','));
	return eat(ps, ']') ? 0 : fail("a bad array");
}

/* "shape": up to 2 counts; anything else is noted for the check. */
static int parse_shape(struct parser *ps, struct tensor *t, int depth)
{
	t->ndims = 0;
	if (!eat(ps, '[')) {
		t->bad_dim = true;
		return skip_value(ps, depth);
	}
	if (eat(ps, ']'))
		return 0;
	do {
		double v;
		int rc;

		skip_ws(ps);
		if (ps->p < ps->end && (*ps->p == '-' || is_digit(*ps->p))) {
			if ((rc = parse_number(ps, &v)) != 0)
				return rc;
			if (!(v >= 0 && v < 2147483648.0) || v != floor(v))
				t->bad_dim = true;
			else if (t->ndims < 2)
				t->shape[t->ndims] = (long long)v;
		} else {
			t->bad_dim = true;
			rc = skip_value(ps, depth + 1);
		}
		if (rc != 0)
			return rc;
		if (t->ndims < 3)
			t->ndims++;
	} while (eat(ps, ','));
	return eat(ps, ']') ? 0 : fail("a bad array");
}

/* A string value of key, or NULL (and the value skipped) when it is
 * another type; *out is replaced. */
static int string_value(struct parser *ps, char **out, int depth)
{
	free(*out);
	*out = NULL;
	skip_ws(ps);
	if (ps->p < ps->end && *ps->p == '"')
		return parse_string(ps, out);
	return skip_value(ps, depth);
}

/* Calls member(key) for each key of an object (the '{' next). */
static int parse_object(struct parser *ps, int depth,
                        int (*member)(struct parser *ps, const char *key, void *payload, int depth),
                        void *payload)
{
	if (depth > MAX_DEPTH)
		return fail("nested too deeply");
	if (!eat(ps, '{'))
		return fail("an object was expected");
	if (eat(ps, '}'))
		return 0;
	do {
		char *key = NULL;
		int rc;

		skip_ws(ps);
		if (ps->p >= ps->end || *ps->p != '"' || parse_string(ps, &key) != 0)
			return fail("a bad object");
		rc = eat(ps, ':') ? member(ps, key, payload, depth + 1) : fail("a bad object");
		free(key);
		if (rc != 0)
			return rc;
	} while (eat(ps, ','));
	return eat(ps, '}') ? 0 : fail("a bad object");
}

static int tensor_member(struct parser *ps, const char *key, void *payload, int depth)
{
	struct tensor *t = payload;

	if (strcmp(key, "name") == 0)
		return string_value(ps, &t->name, depth);
	if (strcmp(key, "datatype") == 0)
		return string_value(ps, &t->datatype, depth);
	if (strcmp(key, "shape") == 0)
		return parse_shape(ps, t, depth);
	if (strcmp(key, "data") == 0) {
		skip_ws(ps);
		t->has_data = ps->p < ps->end && *ps->p == '[';
		t->n = 0;
		t->bad_value = 0;
		return parse_data(ps, t, depth);
	}
	return skip_value(ps, depth);
}

/* The parts of a request while it is read. */
struct reading {
	struct ms_infer *r;
	struct tensor input;
	int ninputs;          /* -1: "inputs" is not an array */
	bool inputs_objects;  /* every element of "inputs" is an object */
	bool outputs_array;   /* "outputs" absent or an array */
	char *unknown_output; /* the first unknown output's name ("" for none) */
	bool id_not_string;
};

static int output_member(struct parser *ps, const char *key, void *payload, int depth)
{
	char **name = payload;

	if (strcmp(key, "name") == 0)
		return string_value(ps, name, depth);
	return skip_value(ps, depth);
}

static int parse_outputs(struct parser *ps, struct reading *rd, int depth)
{
	if (!eat(ps, '[')) {
		rd->outputs_array = false;
		return skip_value(ps, depth);
	}
	if (eat(ps, ']'))
		return 0;
	do {
		char *name = NULL;
		int rc;

		skip_ws(ps);
		if (ps->p < ps->end && *ps->p == '{')
			rc = parse_object(ps, depth + 1, output_member, &name);
		else
			rc = skip_value(ps, depth + 1);
		if (name && strcmp(name, "logits") == 0)
			rd->r->want_logits = true;
		else if (name && strcmp(name, "class") == 0)
			rd->r->want_class = true;
		else if (rd->unknown_output == NULL)
			rd->unknown_output = name ? xstrdup(name) : xstrdup("");
		free(name);
		if (rc != 0)
			return rc;
	} while (eat(ps, ','));
	return eat(ps, ']') ? 0 : fail("a bad array");
}

static int parse_inputs(struct parser *ps, struct reading *rd, int depth)
{
	if (!eat(ps, '[')) {
		rd->ninputs = -1;
		return skip_value(ps, depth);
	}
	rd->ninputs = 0;
	if (eat(ps, ']'))
		return 0;
	do {
		int rc;

		skip_ws(ps);
		if (ps->p < ps->end && *ps->p == '{' && rd->ninputs == 0) {
			rc = parse_object(ps, depth + 1, tensor_member, &rd->input);
		} else {
			if (ps->p >= ps->end || *ps->p != '{')
				rd->inputs_objects = false;
			rc = skip_value(ps, depth + 1);
		}
		rd->ninputs++;
		if (rc != 0)
			return rc;
	} while (eat(ps, ','));
	return eat(ps, ']') ? 0 : fail("a bad array");
}

static int request_member(struct parser *ps, const char *key, void *payload, int depth)
{
	struct reading *rd = payload;

	if (strcmp(key, "id") == 0) {
		skip_ws(ps);
		rd->id_not_string = ps->p >= ps->end || *ps->p != '"';
		return string_value(ps, &rd->r->id, depth);
	}
	if (strcmp(key, "inputs") == 0)
		return parse_inputs(ps, rd, depth);
	if (strcmp(key, "outputs") == 0)
		return parse_outputs(ps, rd, depth);
	return skip_value(ps, depth);
}

/* Checks what was read, in the order a client fixes things. */
static int check(struct reading *rd, int features, int max_batch)
{
	struct tensor *t = &rd->input;
	struct ms_infer *r = rd->r;
	long long b, f;
	size_t want;

	if (rd->id_not_string)
		return mlp_error_set("id: not a string"), MLP_EINVAL;
	if (rd->ninputs != 1 || !rd->inputs_objects)
		return mlp_error_set("inputs: want an array of one tensor named 'input'"),
		       MLP_EINVAL;
	if (t->name == NULL || strcmp(t->name, "input") != 0) {
		mlp_error_set("inputs: unknown input %s%s%s (the model's input is 'input')",
		              t->name ? "'" : "", t->name ? t->name : "without a name",
		              t->name ? "'" : "");
		return MLP_EINVAL;
	}
	if (t->datatype == NULL || strcmp(t->datatype, "FP32") != 0) {
		mlp_error_set("input datatype: %s (the model takes FP32)",
		              t->datatype ? t->datatype : "missing");
		return MLP_EINVAL;
	}
	if (t->ndims < 1 || t->ndims > 2 || t->bad_dim) {
		mlp_error_set("input shape: want [rows, %d] or [%d]", features, features);
		return MLP_EINVAL;
	}
	b = t->ndims == 2 ? t->shape[0] : 1;
	f = t->shape[t->ndims - 1];
	if (f != features) {
		mlp_error_set("input shape: %lld features, but the model takes %d", f, features);
		return MLP_EINVAL;
	}
	if (b < 1 || b > max_batch) {
		mlp_error_set("input shape: %lld rows (this server takes 1 to %d per request)", b,
		              max_batch);
		return MLP_EINVAL;
	}
	if (!t->has_data) {
		mlp_error_set("input data: missing or not an array");
		return MLP_EINVAL;
	}
	if (t->bad_value) {
		mlp_error_set("input data: value %zu is not a finite FP32 number",
		              t->bad_value - 1);
		return MLP_EINVAL;
	}
	want = (size_t)b * (size_t)features;
	if (t->n != want) {
		mlp_error_set("input data: %zu values, but shape [%lld, %d] needs %zu", t->n, b,
		              features, want);
		return MLP_EINVAL;
	}
	if (!rd->outputs_array) {
		mlp_error_set("outputs: not an array");
		return MLP_EINVAL;
	}
	if (rd->unknown_output) {
		mlp_error_set("outputs: unknown output %s%s%s (the model has 'logits' and 'class')",
		              *rd->unknown_output ? "'" : "",
		              *rd->unknown_output ? rd->unknown_output : "without a name",
		              *rd->unknown_output ? "'" : "");
		return MLP_EINVAL;
	}
	if (!r->want_logits && !r->want_class)
		r->want_logits = r->want_class = true;
	r->rows = (int)b;
	r->x = t->data;
	t->data = NULL;
	return 0;
}

int ms_infer_parse(struct ms_infer *r, const char *body, size_t len, int features, int max_batch)
{
	struct parser ps = {.p = body, .end = body + len};
	struct reading rd = {.r = r, .ninputs = -2, .inputs_objects = true, .outputs_array = true};
	int rc;

	memset(r, 0, sizeof(*r));
	skip_ws(&ps);
	if (ps.p >= ps.end || *ps.p != '{') {
		mlp_error_set("the body is not a JSON object");
		rc = MLP_EINVAL;
		goto done;
	}
	if ((rc = parse_object(&ps, 0, request_member, &rd)) != 0)
		goto done;
	skip_ws(&ps);
	if (ps.p != ps.end) {
		rc = fail("data after the object");
		goto done;
	}
	rc = check(&rd, features, max_batch);
done:
	free(rd.input.name);
	free(rd.input.datatype);
	free(rd.input.data);
	free(rd.unknown_output);
	mlp_buf_free(&ps.scratch);
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
		/* A logit that overflowed (inf or NaN, from inputs near the
		 * float32 limit) has no JSON number: it is written as null. */
		for (size_t i = 0; i < n; i++) {
			if (isfinite(r->logits[i]))
				mlp_buf_printf(&b, "%s%.9g", i ? "," : "", (double)r->logits[i]);
			else
				mlp_buf_puts(&b, i ? ",null" : "null");
		}
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
