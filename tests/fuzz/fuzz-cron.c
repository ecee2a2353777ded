/*
 * fuzz-cron.c - fuzz target for cron expressions and time zones
 * (src/pipeline/cron.c, cron-tz.c): mlp_cron_parse, mlp_timezone_valid,
 * mlp_tz_open, mlp_tz_parse (TZif files and the POSIX TZ rule in their
 * footer) and mlp_cron_next, which `mlpipe serve` computes every
 * schedule's next fire time with.
 *
 * The first line of the input is a cron expression; the first byte of
 * the rest says what follows:
 *
 *   'n'  a zone name (one line), opened from the system's tzdata;
 *   'r'  a POSIX TZ rule ("CET-1CEST,M3.5.0,M10.5.0/3"), put into the
 *        footer of a TZif file without transitions;
 *   else the bytes of a TZif file.
 *
 * When both parse, the next fire time after a few instants is computed.
 * What must hold, besides no crash, leak or undefined behaviour: a
 * refusal comes with MLP_EINVAL (MLP_ENOTFOUND for a schedule that never
 * fires) and a message; a fire time is after the instant asked about, at
 * most ten years on (not always a whole UTC minute: zones with offsets in
 * seconds fire on their own whole minutes), and asking again from one
 * second before it gives it again (no fire time is skipped).
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

#include "base/error.h"
#include "base/util.h"
#include "pipeline/cron.h"

static const char *expr_now;

static void fail(const char *what)
{
	fprintf(stderr, "fuzz-cron: %s\ncron: [%s]\n", what, expr_now);
	abort();
}

static void put32(struct mlp_buf *b, uint32_t v)
{
	unsigned char c[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
	                      (unsigned char)(v >> 8), (unsigned char)v};

	mlp_buf_add(b, c, 4);
}

/* A TZif file of one type (UTC+0) and no transitions, with rule as its
 * footer: a version 1 part and a version 2 part, both that small. */
static void tzif_with_rule(struct mlp_buf *b, const char *rule, size_t len)
{
	for (int part = 0; part < 2; part++) {
		mlp_buf_add(b, "TZif2", 5);
		mlp_buf_add(b, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 15);
		for (int k = 0; k < 6; k++)
			put32(b, k == 4 ? 1 : k == 5 ? 4 : 0);
		mlp_buf_add(b, "\0\0\0\0\0\0UTC\0", 10);
	}
	mlp_buf_putc(b, '\n');
	mlp_buf_add(b, rule, len);
	mlp_buf_putc(b, '\n');
}

static void check_refusal(int rc, int want, const char *what)
{
	if (rc != want || *mlp_error_last() == '\0')
		fail(what);
}

static void check_next(const struct mlp_cron *c, const struct mlp_tz *tz)
{
	/* 1970, 2024-03-31 00:59:30 UTC (a spring-forward night), 2100 */
	static const int64_t afters[] = {0, 1711846770, 4102444800};

	for (size_t i = 0; i < MLP_ARRAY_SIZE(afters); i++) {
		int64_t next = 0, again = 0;
		int rc = mlp_cron_next(&next, c, tz, afters[i]);

		if (rc != 0) {
			check_refusal(rc, MLP_ENOTFOUND, "no fire time, without MLP_ENOTFOUND");
			continue;
		}
		if (next <= afters[i] || next - afters[i] > INT64_C(10) * 366 * 86400 + 60)
			fail("a fire time not within ten years after the instant");
		if (mlp_cron_next(&again, c, tz, next - 1) != 0 || again != next)
			fail("asking from one second before a fire time gives another");
		(void)mlp_tz_offset(tz, next);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nl = memchr(data, '\n', size);
	size_t elen = nl ? (size_t)(nl - data) : size;
	const uint8_t *rest = nl ? nl + 1 : data + size;
	size_t rlen = (size_t)(data + size - rest);
	char *expr, *name = NULL;
	struct mlp_cron c;
	struct mlp_tz *tz = NULL;
	struct mlp_buf b = {0};
	int crc, rc;

	if (size > 1 << 16)
		return 0;
	expr = xstrndup((const char *)data, elen);
	expr_now = expr;
	crc = mlp_cron_parse(&c, expr);
	if (crc != 0)
		check_refusal(crc, MLP_EINVAL, "a refused cron expression without a message");
	if (rlen > 0 && rest[0] == 'n') {
		const uint8_t *end = memchr(rest, '\n', rlen);

		name = xstrndup((const char *)rest + 1, end ? (size_t)(end - rest - 1) : rlen - 1);
		rc = mlp_tz_open(&tz, name);
		if (rc == 0 && !mlp_timezone_valid(name))
			fail("opened a zone mlp_timezone_valid refuses");
		if (rc != 0 && rc != MLP_ENOTFOUND && rc != MLP_EINVAL && rc != MLP_EIO)
			fail("a zone refused with an unexpected error");
	} else if (rlen > 0 && rest[0] == 'r') {
		const uint8_t *end = memchr(rest, '\n', rlen);

		tzif_with_rule(&b, (const char *)rest + 1,
		               end ? (size_t)(end - rest - 1) : rlen - 1);
		rc = mlp_tz_parse(&tz, b.data, b.len, "rule");
		if (rc != 0)
			check_refusal(rc, MLP_EINVAL, "a refused rule without a message");
	} else {
		/* exactly the bytes, so that ASan sees a read past them */
		uint8_t *copy = xmalloc(rlen ? rlen : 1);

		memcpy(copy, rest, rlen);
		rc = mlp_tz_parse(&tz, copy, rlen, "tzif");
		free(copy);
		if (rc != 0)
			check_refusal(rc, MLP_EINVAL, "a refused TZif file without a message");
	}
	if (crc == 0 && tz)
		check_next(&c, tz);
	mlp_tz_free(tz);
	mlp_buf_free(&b);
	free(name);
	free(expr);
	return 0;
}
