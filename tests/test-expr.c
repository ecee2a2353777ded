/*
 * test-expr.c - ${{ }} expressions: scanning, errors, expansion, quoting.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "pipeline/expr.h"

static int resolve(const char **out, const struct mlp_expr_ref *ref, void *payload)
{
	switch (ref->kind) {
	case MLP_EXPR_RUN_ID:
		*out = "7";
		return 0;
	case MLP_EXPR_RUN_COMMIT:
		*out = "0123abcd";
		return 0;
	case MLP_EXPR_ENV:
		if (strcmp(ref->name, "DATA") == 0) {
			*out = "/data/it's here";
			return 0;
		}
		break;
	case MLP_EXPR_OUTPUT:
		if (strcmp(ref->stage, "train") == 0 && strcmp(ref->name, "path") == 0) {
			*out = "$(touch /tmp/pwned)";
			return 0;
		}
		break;
	case MLP_EXPR_METRIC:
		*out = "0.91";
		return 0;
	}
	mlp_error_set("no value");
	return MLP_EINVAL;
}

static void test_expr__expands_raw(void **state)
{
	char *s;

	assert_int_equal(
	        mlp_expr_expand(&s, "img:${{ run.id }}-${{run.id}}", MLP_EXPR_RAW, resolve, NULL),
	        0);
	assert_string_equal(s, "img:7-7");
	free(s);
	assert_int_equal(mlp_expr_expand(&s, "registry/trainer:${{ run.commit }}", MLP_EXPR_RAW,
	                                 resolve, NULL),
	                 0);
	assert_string_equal(s, "registry/trainer:0123abcd");
	free(s);
}

static void test_expr__shell_quotes_values_in_commands(void **state)
{
	char *s;

	assert_int_equal(mlp_expr_expand(&s, "cat ${{ env.DATA }} ${{ stages.train.outputs.path }}",
	                                 MLP_EXPR_SHELL, resolve, NULL),
	                 0);
	assert_string_equal(s, "cat '/data/it'\\''s here' '$(touch /tmp/pwned)'");
	free(s);
}

static void test_expr__text_without_expressions_is_unchanged(void **state)
{
	char *s;

	assert_int_equal(
	        mlp_expr_expand(&s, "echo ${HOME} $((1+2))", MLP_EXPR_SHELL, resolve, NULL), 0);
	assert_string_equal(s, "echo ${HOME} $((1+2))");
	free(s);
}

/* fuzz-expr's first finding: a non-ASCII byte after the start of the
 * here-document's delimiter, before the value, is the command's own, not
 * the value's (validate passes it, so a run must not refuse it). */
static void test_expr__heredoc_dash_byte_before_the_value_is_not_its(void **state)
{
	char *s;

	(void)state;
	assert_int_equal(mlp_expr_expand(&s, "cat <<EOF\nE\xb2 ${{ run.id }}\nEOF\n",
	                                 MLP_EXPR_SHELL, resolve, NULL),
	                 0);
	assert_string_equal(s, "cat <<EOF\nE\xb2 7\nEOF\n");
	free(s);
	/* ... but a value that makes such a line ("E7\xb2" under <<E7) is
	 * still refused */
	assert_int_equal(mlp_expr_expand(&s, "cat <<E7\nE${{ run.id }}\xb2\nE7\n", MLP_EXPR_SHELL,
	                                 resolve, NULL),
	                 MLP_EINVAL);
}

static int count_cb(const struct mlp_expr_ref *ref, void *payload)
{
	(*(int *)payload)++;
	return 0;
}

static void test_expr__malformed_expressions_are_errors(void **state)
{
	static const struct {
		const char *text;
		const char *msg;
		size_t offset;
	} cases[] = {
	        {"x ${{ run.id", "unterminated", 2},
	        {"${{ stages.a.outputs }}", "takes the form", 0},
	        {"${{ stage.a.outputs.b }}", "did you mean 'stages'", 0},
	        {"${{ run.name }}", "only 'run.id' and 'run.commit'", 0},
	        {"ok ${{ env }}", "needs a variable name", 3},
	        {"${{ env.A B }}", "malformed", 0},
	        {"${{ }}", "malformed", 0},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t off = 99;
		int n = 0;

		assert_int_equal(mlp_expr_scan(cases[i].text, &off, count_cb, &n), MLP_EINVAL);
		if (strstr(mlp_error_last(), cases[i].msg) == NULL)
			fail_msg("'%s': message '%s' lacks '%s'", cases[i].text, mlp_error_last(),
			         cases[i].msg);
		assert_int_equal(off, cases[i].offset);
	}
}

static void test_expr__unresolvable_reference_fails_expansion(void **state)
{
	char *s = NULL;

	assert_int_equal(mlp_expr_expand(&s, "${{ env.NOPE }}", MLP_EXPR_RAW, resolve, NULL),
	                 MLP_EINVAL);
	assert_null(s);
}

static void test_expr__scan_reports_each_reference(void **state)
{
	int n = 0;

	assert_int_equal(mlp_expr_scan("${{ run.id }} ${{ env.A }} ${{ stages.s.metrics.m }}", NULL,
	                               count_cb, &n),
	                 0);
	assert_int_equal(n, 3);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_expr__expands_raw),
	        cmocka_unit_test(test_expr__shell_quotes_values_in_commands),
	        cmocka_unit_test(test_expr__text_without_expressions_is_unchanged),
	        cmocka_unit_test(test_expr__heredoc_dash_byte_before_the_value_is_not_its),
	        cmocka_unit_test(test_expr__malformed_expressions_are_errors),
	        cmocka_unit_test(test_expr__unresolvable_reference_fails_expansion),
	        cmocka_unit_test(test_expr__scan_reports_each_reference),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
