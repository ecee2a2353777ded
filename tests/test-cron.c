/*
 * test-cron.c - unit tests of cron expression parsing and time zone
 * names (cron.h): the bits each field sets, Vixie's day rule flags, the
 * macros, and the exact message for each kind of mistake.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "pipeline/cron.h"
#include "base/error.h"

/* Bits lo..hi (inclusive) stepping by step. */
static uint64_t bits(int lo, int hi, int step)
{
	uint64_t b = 0;

	for (int i = lo; i <= hi; i += step)
		b |= UINT64_C(1) << i;
	return b;
}

static void expect_error(const char *expr, const char *message)
{
	struct mlp_cron c;

	mlp_error_clear();
	assert_int_equal(mlp_cron_parse(&c, expr), MLP_EINVAL);
	assert_string_equal(mlp_error_last(), message);
}

static void test_cron__stars_set_every_bit(void **state)
{
	struct mlp_cron c;

	(void)state;
	assert_int_equal(mlp_cron_parse(&c, "* * * * *"), 0);
	assert_true(c.minutes == bits(0, 59, 1));
	assert_true(c.hours == bits(0, 23, 1));
	assert_true(c.days == bits(1, 31, 1));
	assert_true(c.months == bits(1, 12, 1));
	assert_true(c.weekdays == bits(0, 6, 1));
	assert_true(c.dom_star);
	assert_true(c.dow_star);
}

static void test_cron__lists_ranges_and_steps(void **state)
{
	struct mlp_cron c;

	(void)state;
	assert_int_equal(mlp_cron_parse(&c, "*/15 1-10/2 1,15,31 6-8 1-5"), 0);
	assert_true(c.minutes == bits(0, 45, 15));
	assert_true(c.hours == bits(1, 9, 2));
	assert_true(c.days == ((1u << 1) | (1u << 15) | (1u << 31)));
	assert_true(c.months == bits(6, 8, 1));
	assert_true(c.weekdays == bits(1, 5, 1));
	assert_false(c.dom_star);
	assert_false(c.dow_star);
}

static void test_cron__single_value_with_step_runs_to_the_end(void **state)
{
	struct mlp_cron c;

	(void)state;
	assert_int_equal(mlp_cron_parse(&c, "5/20 0 * * *"), 0);
	assert_true(c.minutes == ((UINT64_C(1) << 5) | (UINT64_C(1) << 25) | (UINT64_C(1) << 45)));
}

static void test_cron__names_in_any_case(void **state)
{
	struct mlp_cron c;

	(void)state;
	assert_int_equal(mlp_cron_parse(&c, "0 0 * jan,Mar-MAY mon-fri"), 0);
	assert_true(c.months == ((1u << 1) | bits(3, 5, 1)));
	assert_true(c.weekdays == bits(1, 5, 1));
	assert_int_equal(mlp_cron_parse(&c, "0 0 * DEC SUN,SAT"), 0);
	assert_true(c.months == (1u << 12));
	assert_true(c.weekdays == ((1u << 0) | (1u << 6)));
}

static void test_cron__seven_is_sunday(void **state)
{
	struct mlp_cron c;

	(void)state;
	assert_int_equal(mlp_cron_parse(&c, "0 0 * * 7"), 0);
	assert_true(c.weekdays == 1);
	assert_int_equal(mlp_cron_parse(&c, "0 0 * * 5-7"), 0);
	assert_true(c.weekdays == ((1u << 0) | (1u << 5) | (1u << 6)));
}

static void test_cron__day_star_flags_follow_vixie(void **state)
{
	struct mlp_cron c;

	(void)state;
	assert_int_equal(mlp_cron_parse(&c, "0 0 1,15 * MON"), 0);
	assert_false(c.dom_star);
	assert_false(c.dow_star);
	assert_int_equal(mlp_cron_parse(&c, "0 0 */2 * MON"), 0);
	assert_true(c.dom_star); /* a '*' with a step still counts as '*' */
	assert_false(c.dow_star);
	assert_true(c.days == bits(1, 31, 2));
}

static void test_cron__macros(void **state)
{
	static const struct {
		const char *macro;
		const char *same_as;
	} cases[] = {
	        {"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"},
	        {"@weekly", "0 0 * * 0"}, {"@daily", "0 0 * * *"},    {"@midnight", "0 0 * * *"},
	        {"@hourly", "0 * * * *"}, {"@nightly", "0 2 * * *"},  {"  @DAILY  ", "0 0 * * *"},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct mlp_cron a, b;

		assert_int_equal(mlp_cron_parse(&a, cases[i].macro), 0);
		assert_int_equal(mlp_cron_parse(&b, cases[i].same_as), 0);
		assert_true(a.minutes == b.minutes);
		assert_true(a.hours == b.hours);
		assert_true(a.days == b.days);
		assert_true(a.months == b.months);
		assert_true(a.weekdays == b.weekdays);
		assert_true(a.dom_star == b.dom_star);
		assert_true(a.dow_star == b.dow_star);
	}
}

static void test_cron__extra_whitespace_is_fine(void **state)
{
	struct mlp_cron c;

	(void)state;
	assert_int_equal(mlp_cron_parse(&c, "  0\t2  *  * *\n"), 0);
	assert_true(c.hours == (1u << 2));
}

static void test_cron__out_of_range_names_the_field(void **state)
{
	(void)state;
	expect_error("0 24 * * *", "cron field 2 (hour): 24 is out of range 0-23");
	expect_error("60 0 * * *", "cron field 1 (minute): 60 is out of range 0-59");
	expect_error("0 0 0 * *", "cron field 3 (day-of-month): 0 is out of range 1-31");
	expect_error("0 0 32 * *", "cron field 3 (day-of-month): 32 is out of range 1-31");
	expect_error("0 0 * 13 *", "cron field 4 (month): 13 is out of range 1-12");
	expect_error("0 0 * * 8", "cron field 5 (day-of-week): 8 is out of range 0-7");
	expect_error("0 0-99999999999 * * *",
	             "cron field 2 (hour): 99999999999 is out of range 0-23");
}

static void test_cron__malformed_fields(void **state)
{
	(void)state;
	expect_error("0 0 * JANUARY *",
	             "cron field 4 (month): unknown name 'JANUARY' (use JAN-DEC or 1-12)");
	expect_error("0 0 * * FUN",
	             "cron field 5 (day-of-week): unknown name 'FUN' (use SUN-SAT or 0-7)");
	expect_error("MON 0 * * *", "cron field 1 (minute): 'MON' is not a number");
	expect_error("5x 0 * * *", "cron field 1 (minute): '5x' is not a number");
	expect_error("0 5-1 * * *", "cron field 2 (hour): range 5-1 goes backwards");
	expect_error("*/0 * * * *", "cron field 1 (minute): step must be at least 1");
	expect_error("*/x * * * *", "cron field 1 (minute): step 'x' is not a number");
	expect_error("1,,2 * * * *", "cron field 1 (minute): empty list item in '1,,2'");
	expect_error("1, * * * *", "cron field 1 (minute): empty list item in '1,'");
	expect_error("0 1- * * *", "cron field 2 (hour): missing number in '1-'");
	expect_error("** * * * *", "cron field 1 (minute): unexpected '*' in '**'");
}

static void test_cron__field_count(void **state)
{
	(void)state;
	expect_error("", "empty cron expression (it needs 5 fields: minute hour "
	                 "day-of-month month day-of-week, or a macro such as @daily)");
	expect_error("0 2 * *",
	             "cron expression '0 2 * *' has 4 fields; it needs 5 "
	             "(minute hour day-of-month month day-of-week) or a macro such as @daily");
	expect_error("0", "cron expression '0' has 1 field; it needs 5 (minute hour "
	                  "day-of-month month day-of-week) or a macro such as @daily");
	expect_error("0 0 2 * * *",
	             "cron expression '0 0 2 * * *' has more than 5 "
	             "fields; it needs 5 (minute hour day-of-month month day-of-week; "
	             "there is no seconds field) or a macro such as @daily");
}

static void test_cron__unknown_macros(void **state)
{
	(void)state;
	expect_error("@dayly", "unknown cron macro '@dayly' (did you mean '@daily'?)");
	expect_error("@fortnightly-ish",
	             "unknown cron macro '@fortnightly-ish' (known: "
	             "@yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly, "
	             "@nightly)");
	expect_error("@reboot", "cron macro @reboot is not supported (schedules fire at "
	                        "times; use @daily, @hourly ... or five fields)");
	expect_error("@daily 5", "cron macro '@daily' takes nothing after it");
}

static void test_cron__timezones(void **state)
{
	(void)state;
	assert_true(mlp_timezone_valid("UTC"));
	assert_true(mlp_timezone_valid("Europe/Berlin"));
	assert_true(mlp_timezone_valid("America/New_York"));
	assert_true(mlp_timezone_valid("Etc/GMT+5"));
	assert_false(mlp_timezone_valid(NULL));
	assert_false(mlp_timezone_valid(""));
	assert_false(mlp_timezone_valid("Mars/Olympus_Mons"));
	assert_false(mlp_timezone_valid("/etc/passwd"));
	assert_false(mlp_timezone_valid("../../../etc/passwd"));
	assert_false(mlp_timezone_valid("Europe/../Europe/Berlin"));
	assert_false(mlp_timezone_valid("Europe"));   /* a directory */
	assert_false(mlp_timezone_valid("zone.tab")); /* not a TZif file */
	assert_false(mlp_timezone_valid("Europe/Berlin\n"));
	assert_false(mlp_timezone_valid("Europe/Berlin "));
}

/* ---- next fire times (cron-tz.c) ---------------------------------------- */

/* Parses "2024-03-31T01:00:00Z" (UTC only) into Unix seconds. */
static int64_t utc(const char *s)
{
	struct tm tm = {0};

	assert_non_null(strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm));
	return (int64_t)timegm(&tm);
}

struct fire_case {
	const char *zone;
	const char *expr;
	const char *after;
	const char *expect[4]; /* the next fire times, in order */
};

/*
 * 2024 changes: Europe/Berlin 03-31 02:00 CET -> 03:00 CEST (01:00Z) and
 * 10-27 03:00 CEST -> 02:00 CET (01:00Z); America/New_York 03-10 02:00 EST
 * -> 03:00 EDT (07:00Z) and 11-03 02:00 EDT -> 01:00 EST (06:00Z).
 */
static const struct fire_case fire_cases[] = {
        /* A skipped wall time fires at the first valid minute after the gap. */
        {"Europe/Berlin",
         "30 2 * * *",
         "2024-03-30T12:00:00Z",
         {"2024-03-31T01:00:00Z", "2024-04-01T00:30:00Z", "2024-04-02T00:30:00Z"}},
        /* ... once, however many skipped minutes match. */
        {"Europe/Berlin",
         "*/15 2 * * *",
         "2024-03-30T23:00:00Z",
         {"2024-03-31T01:00:00Z", "2024-04-01T00:00:00Z", "2024-04-01T00:15:00Z"}},
        /* A repeated wall time fires once, at its first occurrence. */
        {"Europe/Berlin",
         "30 2 * * *",
         "2024-10-26T12:00:00Z",
         {"2024-10-27T00:30:00Z", "2024-10-28T01:30:00Z"}},
        /* Every hour keeps firing in real time through both changes. */
        {"Europe/Berlin",
         "0 * * * *",
         "2024-10-26T23:30:00Z",
         {"2024-10-27T00:00:00Z", "2024-10-27T01:00:00Z", "2024-10-27T02:00:00Z"}},
        {"Europe/Berlin",
         "0 * * * *",
         "2024-03-31T00:30:00Z",
         {"2024-03-31T01:00:00Z", "2024-03-31T02:00:00Z"}},
        /* @nightly is 02:00 local: in the gap in March, normal in October. */
        {"Europe/Berlin",
         "@nightly",
         "2024-03-30T02:00:00Z",
         {"2024-03-31T01:00:00Z", "2024-04-01T00:00:00Z"}},
        {"Europe/Berlin",
         "@nightly",
         "2024-10-26T12:00:00Z",
         {"2024-10-27T00:00:00Z", "2024-10-28T01:00:00Z"}},
        /* Far beyond the table of transitions: the footer rule (2100). */
        {"Europe/Berlin",
         "30 2 * * *",
         "2100-03-27T12:00:00Z",
         {"2100-03-28T01:00:00Z", "2100-03-29T00:30:00Z"}},
        {"America/New_York",
         "30 2 * * *",
         "2024-03-09T12:00:00Z",
         {"2024-03-10T07:00:00Z", "2024-03-11T06:30:00Z"}},
        {"America/New_York",
         "30 1 * * *",
         "2024-11-02T12:00:00Z",
         {"2024-11-03T05:30:00Z", "2024-11-04T06:30:00Z"}},
        {"America/New_York",
         "0 * * * *",
         "2024-11-03T04:30:00Z",
         {"2024-11-03T05:00:00Z", "2024-11-03T06:00:00Z", "2024-11-03T07:00:00Z"}},
        {"America/New_York",
         "0 9 * * MON-FRI",
         "2024-11-01T14:00:00Z",
         {"2024-11-04T14:00:00Z", "2024-11-05T14:00:00Z"}},
        /* Vixie's day rule: the 1st or a Monday. */
        {"UTC",
         "0 0 1 * MON",
         "2024-06-28T00:00:00Z",
         {"2024-07-01T00:00:00Z", "2024-07-08T00:00:00Z", "2024-07-15T00:00:00Z"}},
        {"UTC", "0 0 29 2 *", "2024-03-01T00:00:00Z", {"2028-02-29T00:00:00Z"}},
};

static void test_cron__next_fire_across_dst(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(fire_cases) / sizeof(fire_cases[0]); i++) {
		const struct fire_case *fc = &fire_cases[i];
		struct mlp_tz *tz;
		struct mlp_cron c;
		int64_t t = utc(fc->after);

		assert_int_equal(mlp_tz_open(&tz, fc->zone), 0);
		assert_int_equal(mlp_cron_parse(&c, fc->expr), 0);
		for (size_t k = 0; k < 4 && fc->expect[k]; k++) {
			int64_t next;

			assert_int_equal(mlp_cron_next(&next, &c, tz, t), 0);
			if (next != utc(fc->expect[k]))
				fail_msg("%s %s after %s: fire %zu at %lld, expected %s (%lld)",
				         fc->zone, fc->expr, fc->after, k + 1, (long long)next,
				         fc->expect[k], (long long)utc(fc->expect[k]));
			t = next;
		}
		mlp_tz_free(tz);
	}
}

static void test_cron__offsets_follow_the_zone(void **state)
{
	struct mlp_tz *tz;

	(void)state;
	assert_int_equal(mlp_tz_open(&tz, "Europe/Berlin"), 0);
	assert_int_equal(mlp_tz_offset(tz, utc("2024-01-15T12:00:00Z")), 3600);
	assert_int_equal(mlp_tz_offset(tz, utc("2024-07-15T12:00:00Z")), 7200);
	assert_int_equal(mlp_tz_offset(tz, utc("2024-03-31T00:59:59Z")), 3600);
	assert_int_equal(mlp_tz_offset(tz, utc("2024-03-31T01:00:00Z")), 7200);
	assert_int_equal(mlp_tz_offset(tz, utc("2150-07-01T00:00:00Z")), 7200);
	mlp_tz_free(tz);
	assert_int_equal(mlp_tz_open(&tz, "Nowhere/Atlantis"), MLP_EINVAL);
	assert_null(tz);
}

static void test_cron__never_firing_is_an_error(void **state)
{
	struct mlp_tz *tz;
	struct mlp_cron c;
	int64_t t;

	(void)state;
	assert_int_equal(mlp_tz_open(&tz, "UTC"), 0);
	assert_int_equal(mlp_cron_parse(&c, "0 0 30 2 *"), 0);
	assert_int_equal(mlp_cron_next(&t, &c, tz, 0), MLP_ENOTFOUND);
	mlp_tz_free(tz);
}

/* fuzz-cron's first finding: in a zone whose offset has seconds, the
 * wall clock's whole minutes fall between UTC's, and none is skipped. */
static void test_cron__offset_with_seconds_skips_no_minute(void **state)
{
	static const char rule[] = "\n<+0330>-3:3:3\n";
	unsigned char tzif[2 * 54 + sizeof(rule) - 1] = {0};
	struct mlp_tz *tz;
	struct mlp_cron c;
	int64_t t, again;

	(void)state;
	for (int part = 0; part < 2; part++) {
		unsigned char *h = tzif + 54 * part;

		memcpy(h, "TZif2", 5);
		h[20 + 4 * 4 + 3] = 1; /* typecnt */
		h[20 + 4 * 5 + 3] = 4; /* charcnt */
		memcpy(h + 50, "UTC", 4);
	}
	memcpy(tzif + 108, rule, sizeof(rule) - 1);
	assert_int_equal(mlp_tz_parse(&tz, tzif, sizeof(tzif), "test"), 0);
	assert_int_equal(mlp_cron_parse(&c, "0 12 * * *"), 0);
	assert_int_equal(mlp_cron_next(&t, &c, tz, 0), 0);
	/* 12:00:00 at +03:03:03 is 08:56:57 UTC */
	assert_int_equal(t, 8 * 3600 + 56 * 60 + 57);
	assert_int_equal(mlp_cron_next(&again, &c, tz, t - 1), 0);
	assert_int_equal(again, t);
	mlp_tz_free(tz);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_cron__stars_set_every_bit),
	        cmocka_unit_test(test_cron__lists_ranges_and_steps),
	        cmocka_unit_test(test_cron__single_value_with_step_runs_to_the_end),
	        cmocka_unit_test(test_cron__names_in_any_case),
	        cmocka_unit_test(test_cron__seven_is_sunday),
	        cmocka_unit_test(test_cron__day_star_flags_follow_vixie),
	        cmocka_unit_test(test_cron__macros),
	        cmocka_unit_test(test_cron__extra_whitespace_is_fine),
	        cmocka_unit_test(test_cron__out_of_range_names_the_field),
	        cmocka_unit_test(test_cron__malformed_fields),
	        cmocka_unit_test(test_cron__field_count),
	        cmocka_unit_test(test_cron__unknown_macros),
	        cmocka_unit_test(test_cron__timezones),
	        cmocka_unit_test(test_cron__next_fire_across_dst),
	        cmocka_unit_test(test_cron__offsets_follow_the_zone),
	        cmocka_unit_test(test_cron__never_firing_is_an_error),
	        cmocka_unit_test(test_cron__offset_with_seconds_skips_no_minute),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
