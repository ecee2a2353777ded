/*
 * test-util.c - durations, number parsing, suggestions, quoting, buffers,
 * UTF-8 and atomic file writes.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/error.h"
#include "base/util.h"

static void test_util__durations_parse_with_units(void **state)
{
	int64_t ms;

	assert_int_equal(mlp_parse_duration(&ms, "90s"), 0);
	assert_int_equal(ms, 90000);
	assert_int_equal(mlp_parse_duration(&ms, "1h30m"), 0);
	assert_int_equal(ms, 5400000);
	assert_int_equal(mlp_parse_duration(&ms, "250ms"), 0);
	assert_int_equal(ms, 250);
	assert_int_equal(mlp_parse_duration(&ms, "1.5s"), 0);
	assert_int_equal(ms, 1500);
	assert_int_equal(mlp_parse_duration(&ms, "2d"), 0);
	assert_int_equal(ms, 172800000);
}

static void test_util__durations_without_unit_are_refused(void **state)
{
	int64_t ms;

	assert_int_equal(mlp_parse_duration(&ms, "30"), MLP_EINVAL);
	assert_non_null(strstr(mlp_error_last(), "has no unit"));
	assert_int_equal(mlp_parse_duration(&ms, "5 minutes"), MLP_EINVAL);
	assert_non_null(strstr(mlp_error_last(), "bad duration"));
	assert_int_equal(mlp_parse_duration(&ms, "-1s"), MLP_EINVAL);
	assert_int_equal(mlp_parse_duration(&ms, ""), MLP_EINVAL);
	assert_int_equal(mlp_parse_duration(&ms, "1x"), MLP_EINVAL);
}

static void test_util__durations_format_compactly(void **state)
{
	char b[32];

	mlp_format_duration(b, sizeof(b), 250);
	assert_string_equal(b, "250ms");
	mlp_format_duration(b, sizeof(b), 1234);
	assert_string_equal(b, "1.2s");
	mlp_format_duration(b, sizeof(b), 184000);
	assert_string_equal(b, "3m04s");
	mlp_format_duration(b, sizeof(b), 7500000);
	assert_string_equal(b, "2h05m");
}

static void test_util__ints_are_range_checked(void **state)
{
	long long v;

	assert_int_equal(mlp_parse_int(&v, "42", 0, 100), 0);
	assert_int_equal(v, 42);
	assert_int_equal(mlp_parse_int(&v, "101", 0, 100), MLP_EINVAL);
	assert_int_equal(mlp_parse_int(&v, "4x", 0, 100), MLP_EINVAL);
	assert_int_equal(mlp_parse_int(&v, " 4", 0, 100), MLP_EINVAL);
	assert_int_equal(mlp_parse_int(&v, "", 0, 100), MLP_EINVAL);
	assert_int_equal(mlp_parse_int(&v, "99999999999999999999", 0, INT64_MAX), MLP_EINVAL);
}

static void test_util__suggest_finds_near_typos_only(void **state)
{
	static const char *const words[] = {"needs", "timeout", "retry", "env"};

	assert_string_equal(mlp_suggest("neds", words, 4), "needs");
	assert_string_equal(mlp_suggest("timeot", words, 4), "timeout");
	assert_string_equal(mlp_suggest("need", words, 4), "needs");
	assert_null(mlp_suggest("banana", words, 4));
}

static void test_util__shell_quote_keeps_one_word(void **state)
{
	struct mlp_buf b = {0};

	mlp_shell_quote(&b, "it's $(rm -rf /); `x`");
	assert_string_equal(mlp_buf_str(&b), "'it'\\''s $(rm -rf /); `x`'");
	mlp_buf_free(&b);
}

static void test_util__buffer_grows_and_detaches(void **state)
{
	struct mlp_buf b = {0};
	char *s;

	for (int i = 0; i < 1000; i++)
		mlp_buf_printf(&b, "%d,", i);
	assert_int_equal(b.len, strlen(b.data));
	s = mlp_buf_detach(&b);
	assert_null(b.data);
	assert_memory_equal(s, "0,1,2,", 6);
	free(s);
	assert_string_equal(mlp_buf_str(&b), "");
}

static void test_util__utf8_validation(void **state)
{
	assert_true(mlp_utf8_valid("h\xc3\xa9llo", 6));
	assert_false(mlp_utf8_valid("\xff", 1));
	assert_false(mlp_utf8_valid("\xc3", 1));         /* truncated */
	assert_false(mlp_utf8_valid("\xc0\xaf", 2));     /* overlong */
	assert_false(mlp_utf8_valid("\xed\xa0\x80", 3)); /* surrogate */
}

static void test_util__atomic_write_replaces_whole_file(void **state)
{
	char dir[] = "/tmp/mlpipe-util-XXXXXX";
	char *path, *text = NULL;
	size_t len;

	assert_non_null(mkdtemp(dir));
	path = xasprintf("%s/f", dir);
	assert_int_equal(mlp_write_file_atomic(path, "first", 5, 0644), 0);
	assert_int_equal(mlp_write_file_atomic(path, "second", 6, 0644), 0);
	assert_int_equal(mlp_read_file(&text, &len, path, 100), 0);
	assert_string_equal(text, "second");
	free(text);
	assert_int_equal(mlp_read_file(&text, &len, path, 3), MLP_EINVAL);
	unlink(path);
	assert_int_equal(mlp_read_file(&text, &len, path, 100), MLP_ENOTFOUND);
	rmdir(dir);
	free(path);
}

static void test_util__env_vectors_replace_names(void **state)
{
	struct mlp_strv env = {0};

	mlp_strv_push(&env, "A=1");
	mlp_strv_push(&env, "AB=2");
	mlp_strv_setenv(&env, "A", "3");
	assert_int_equal(env.len, 2);
	assert_string_equal(mlp_strv_getenv(&env, "A"), "3");
	assert_string_equal(mlp_strv_getenv(&env, "AB"), "2");
	assert_null(mlp_strv_getenv(&env, "B"));
	assert_null(env.v[env.len]);
	mlp_strv_free(&env);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_util__durations_parse_with_units),
	        cmocka_unit_test(test_util__durations_without_unit_are_refused),
	        cmocka_unit_test(test_util__durations_format_compactly),
	        cmocka_unit_test(test_util__ints_are_range_checked),
	        cmocka_unit_test(test_util__suggest_finds_near_typos_only),
	        cmocka_unit_test(test_util__shell_quote_keeps_one_word),
	        cmocka_unit_test(test_util__buffer_grows_and_detaches),
	        cmocka_unit_test(test_util__utf8_validation),
	        cmocka_unit_test(test_util__atomic_write_replaces_whole_file),
	        cmocka_unit_test(test_util__env_vectors_replace_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
