/*
 * test-model-server.c - mlpipe-model-server's infer request parser
 * (runners/model-server/request.c): what it reads, what it refuses with
 * which message, numbers converted as strtod would, and no input --
 * truncated or mutated -- that makes it misbehave.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/util.h"
#include "model-server/request.h"

static int parse(struct ms_infer *r, const char *body)
{
	return ms_infer_parse(r, body, strlen(body), 3, 4);
}

static void test_model_server__reads_flat_and_nested_data(void **state)
{
	struct ms_infer r;

	(void)state;
	assert_int_equal(parse(&r,
	                       " {\"id\":\"a\\u00e9\\n\",\"inputs\":[{\"name\":\"input\",\"shape\":"
	                       "[2,3],\"datatype\":\"FP32\",\"parameters\":{\"x\":[null,true]},"
	                       "\"data\":[[1,-2.5,0.1],[1e-3,-0,12345678901234567890]]}],"
	                       "\"outputs\":[{\"name\":\"class\"}]} "),
	                 0);
	assert_string_equal(r.id, "a\xc3\xa9\n");
	assert_int_equal(r.rows, 2);
	assert_true(r.x[0] == 1.0f && r.x[1] == -2.5f && r.x[2] == (float)0.1);
	assert_true(r.x[3] == (float)1e-3 && r.x[4] == 0.0f &&
	            r.x[5] == (float)1.2345678901234567e19);
	assert_true(r.want_class && !r.want_logits);
	ms_infer_free(&r);
	/* [F] is one row, and without "outputs" both come back. */
	assert_int_equal(parse(&r, "{\"inputs\":[{\"data\":[1,2,3],\"datatype\":\"FP32\",\"name\":"
	                           "\"input\",\"shape\":[3]}]}"),
	                 0);
	assert_int_equal(r.rows, 1);
	assert_true(r.want_class && r.want_logits);
	ms_infer_free(&r);
}

static void test_model_server__numbers_are_what_strtod_gives(void **state)
{
	static const char *const numbers[] = {"0.1",   "0.00392156862745098",  "3.4e38", "-7.25e-5",
	                                      "1e22",  "123456789012345",      "0.5e1",  "1E+2",
	                                      "1e-45", "2.5000000000000001e-3"};
	char body[256];

	(void)state;
	for (size_t i = 0; i < MLP_ARRAY_SIZE(numbers); i++) {
		struct ms_infer r;

		snprintf(body, sizeof(body),
		         "{\"inputs\":[{\"name\":\"input\",\"datatype\":\"FP32\",\"shape\":[1,3],"
		         "\"data\":[%s,0,0]}]}",
		         numbers[i]);
		assert_int_equal(parse(&r, body), 0);
		assert_true(r.x[0] == (float)strtod(numbers[i], NULL));
		ms_infer_free(&r);
	}
}

static void test_model_server__refuses_with_a_message(void **state)
{
	static const struct {
		const char *body, *message;
	} cases[] = {
	        {"", "not a JSON object"},
	        {"[1]", "not a JSON object"},
	        {"{\"inputs\":", "not valid JSON"},
	        {"{\"inputs\":[]} x", "not valid JSON"},
	        {"{\"a\":01}", "not valid JSON"},
	        {"{\"a\":\"\\u0000\"}", "not valid JSON"},
	        {"{\"a\":\"\xff\"}", "not valid JSON"},
	        {"{}", "one tensor named 'input'"},
	        {"{\"inputs\":[{\"name\":\"input\"},{\"name\":\"input\"}]}", "one tensor"},
	        {"{\"inputs\":[{\"name\":\"x\"}]}", "unknown input 'x'"},
	        {"{\"inputs\":[{\"name\":\"input\",\"datatype\":\"FP64\"}]}", "FP64 (the model"},
	        {"{\"inputs\":[{\"name\":\"input\",\"datatype\":\"FP32\",\"shape\":[1,2]}]}",
	         "2 features, but the model takes 3"},
	        {"{\"inputs\":[{\"name\":\"input\",\"datatype\":\"FP32\",\"shape\":[1.5,3]}]}",
	         "want [rows, 3]"},
	        {"{\"inputs\":[{\"name\":\"input\",\"datatype\":\"FP32\",\"shape\":[5,3]}]}",
	         "5 rows (this server takes 1 to 4"},
	        {"{\"inputs\":[{\"name\":\"input\",\"datatype\":\"FP32\",\"shape\":[0,3]}]}",
	         "0 rows"},
	        {"{\"inputs\":[{\"name\":\"input\",\"datatype\":\"FP32\",\"shape\":[3]}]}",
	         "missing or not an array"},
	        {"{\"inputs\":[{\"name\":\"input\",\"datatype\":\"FP32\",\"shape\":[3],\"data\":[1,"
	         "\"NaN\",3]}]}",
	         "value 1 is not a finite"},
	        {"{\"inputs\":[{\"name\":\"input\",\"datatype\":\"FP32\",\"shape\":[3],\"data\":[1,"
	         "2,"
	         "1e39]}]}",
	         "value 2 is not a finite"},
	        {"{\"inputs\":[{\"name\":\"input\",\"datatype\":\"FP32\",\"shape\":[2,3],\"data\":["
	         "1,"
	         "2,3]}]}",
	         "3 values, but shape [2, 3] needs 6"},
	        {"{\"id\":1,\"inputs\":[]}", "id: not a string"},
	        {"{\"outputs\":[{\"name\":\"p\"}],\"inputs\":[{\"name\":\"input\",\"datatype\":"
	         "\"FP32\",\"shape\":[3],\"data\":[1,2,3]}]}",
	         "unknown output 'p'"},
	};

	(void)state;
	for (size_t i = 0; i < MLP_ARRAY_SIZE(cases); i++) {
		struct ms_infer r;

		assert_int_equal(parse(&r, cases[i].body), MLP_EINVAL);
		if (strstr(mlp_error_last(), cases[i].message) == NULL)
			fail_msg("%s: '%s' does not say '%s'", cases[i].body, mlp_error_last(),
			         cases[i].message);
		ms_infer_free(&r);
	}
}

/* Every prefix and thousands of byte mutations of a valid body parse or
 * fail cleanly (ASan and UBSan watch in CI); deep nesting is refused. */
static void test_model_server__survives_any_input(void **state)
{
	const char *good =
	        "{\"id\":\"x\\ud83d\\ude00\",\"inputs\":[{\"name\":\"input\",\"datatype\":"
	        "\"FP32\",\"shape\":[1,3],\"data\":[[0.5,-1e2,3]]}],\"outputs\":[{\"name\":"
	        "\"logits\"}]}";
	size_t len = strlen(good);
	char *buf = xmalloc(len + 1);
	struct mlp_buf deep = {0};
	uint32_t seed = 12345;
	struct ms_infer r;

	(void)state;
	for (size_t n = 0; n <= len; n++) {
		memcpy(buf, good, n);
		assert_true(ms_infer_parse(&r, buf, n, 3, 4) == (n == len ? 0 : MLP_EINVAL));
		ms_infer_free(&r);
	}
	for (int i = 0; i < 20000; i++) {
		memcpy(buf, good, len);
		for (int k = 0; k < 3; k++) {
			seed = seed * 1103515245u + 12345u;
			buf[(seed >> 8) % len] = (char)(seed >> 20);
		}
		assert_true(ms_infer_parse(&r, buf, len, 3, 4) <= 0);
		ms_infer_free(&r);
	}
	for (int i = 0; i < 100000; i++)
		mlp_buf_putc(&deep, '[');
	assert_int_equal(ms_infer_parse(&r, deep.data, deep.len, 3, 4), MLP_EINVAL);
	ms_infer_free(&r);
	mlp_buf_free(&deep);
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_model_server__reads_flat_and_nested_data),
	        cmocka_unit_test(test_model_server__numbers_are_what_strtod_gives),
	        cmocka_unit_test(test_model_server__refuses_with_a_message),
	        cmocka_unit_test(test_model_server__survives_any_input),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
