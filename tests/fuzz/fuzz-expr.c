/*
 * fuzz-expr.c - fuzz target for the ${{ }} expression scanner
 * (src/pipeline/expr.c): mlp_expr_scan, mlp_expr_expand (raw and shell
 * quoting) and mlp_expr_check_shell, which `mlpipe validate` runs on
 * every run: command.
 *
 * The input (a NUL ends it early, as in a YAML scalar) is a text with
 * expressions in it.  What must hold:
 *
 *  - every reference the scanner reports lies inside the text, starts
 *    with "${{" and ends with "}}", after the one before it, and names
 *    only identifiers (letters, digits, '_', '-');
 *  - raw expansion succeeds exactly when the scan does, and gives the
 *    text with each reference replaced by its value;
 *  - a command that validation passes (the scan succeeds and
 *    mlp_expr_check_shell reports nothing) expands with shell quoting
 *    for a value without newlines: what validate accepts, a run does not
 *    refuse later;
 *  - every offset check_shell reports is inside the command.
 *
 * Built two ways: with clang's -fsanitize=fuzzer by `make fuzz`, and with
 * tests/fuzz/driver.c into a test of `make check` that runs the seed
 * corpus and a few thousand pseudo-random inputs.
 */
#include "config.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/util.h"
#include "pipeline/expr.h"

static const char *text_now;

static void fail(const char *what)
{
	fprintf(stderr, "fuzz-expr: %s\ntext: [%s]\n", what, text_now);
	abort();
}

static bool ident(const char *s)
{
	if (s == NULL || *s == '\0')
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '_' && *s != '-')
			return false;
	return true;
}

struct scan_state {
	size_t len;
	size_t end; /* of the reference before */
	struct mlp_buf expect;
};

static const char *value_of(const struct mlp_expr_ref *ref)
{
	switch (ref->kind) {
	case MLP_EXPR_RUN_ID:
		return "42";
	case MLP_EXPR_RUN_COMMIT:
		return "0123456789abcdef0123456789abcdef01234567";
	case MLP_EXPR_METRIC:
		return "0.5";
	default:
		return "v a'l\"u$e`";
	}
}

static int on_ref(const struct mlp_expr_ref *ref, void *payload)
{
	struct scan_state *st = payload;

	if (ref->offset < st->end || ref->length < 5 || ref->offset + ref->length > st->len ||
	    memcmp(text_now + ref->offset, "${{", 3) != 0 ||
	    memcmp(text_now + ref->offset + ref->length - 2, "}}", 2) != 0)
		fail("a reference outside the text or not around ${{ }}");
	switch (ref->kind) {
	case MLP_EXPR_RUN_ID:
	case MLP_EXPR_RUN_COMMIT:
		break;
	case MLP_EXPR_ENV:
		if (!ident(ref->name))
			fail("an env reference whose name is not an identifier");
		break;
	case MLP_EXPR_OUTPUT:
	case MLP_EXPR_METRIC:
		if (!ident(ref->stage) || !ident(ref->name))
			fail("a stage reference whose parts are not identifiers");
		break;
	default:
		fail("a reference of no known kind");
	}
	mlp_buf_add(&st->expect, text_now + st->end, ref->offset - st->end);
	mlp_buf_puts(&st->expect, value_of(ref));
	st->end = ref->offset + ref->length;
	return 0;
}

static int resolve(const char **out, const struct mlp_expr_ref *ref, void *payload)
{
	const char *plain = payload;

	*out = plain && ref->kind != MLP_EXPR_RUN_ID && ref->kind != MLP_EXPR_RUN_COMMIT &&
	                       ref->kind != MLP_EXPR_METRIC
	               ? plain
	               : value_of(ref);
	return 0;
}

struct reports {
	size_t len;
	size_t n;
};

static void on_report(size_t offset, const char *message, void *payload)
{
	struct reports *r = payload;

	if (offset > r->len || message == NULL || *message == '\0')
		fail("check_shell reported outside the command or without a message");
	r->n++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text, *out = NULL;
	struct scan_state st = {0};
	struct reports rep = {0};
	size_t err = (size_t)-1;
	int scan_rc, rc;

	if (size > 1 << 16)
		return 0;
	text = xstrndup((const char *)data, size);
	text_now = text;
	st.len = rep.len = strlen(text);
	scan_rc = mlp_expr_scan(text, &err, on_ref, &st);
	if (scan_rc != 0 && (scan_rc != MLP_EINVAL || err > st.len || *mlp_error_last() == '\0'))
		fail("a refused scan without MLP_EINVAL, an offset in the text and a message");
	if (scan_rc == 0)
		mlp_buf_puts(&st.expect, text + st.end);

	rc = mlp_expr_expand(&out, text, MLP_EXPR_RAW, resolve, NULL);
	if ((rc == 0) != (scan_rc == 0))
		fail("raw expansion and the scan disagree");
	if (rc == 0 && strcmp(out, mlp_buf_str(&st.expect)) != 0)
		fail("raw expansion is not the text with each reference replaced");
	free(out);
	out = NULL;

	mlp_expr_check_shell(text, on_report, &rep);
	rc = mlp_expr_expand(&out, text, MLP_EXPR_SHELL, resolve, "v a'l\"u$e`\\");
	if (rc != 0 && scan_rc == 0 && rep.n == 0) {
		fprintf(stderr, "refused: %s\n", mlp_error_last());
		fail("validation passes a command that shell expansion refuses");
	}
	free(out);
	mlp_buf_free(&st.expect);
	free(text);
	return 0;
}
