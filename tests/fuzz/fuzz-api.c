/*
 * fuzz-api.c - fuzz target for what the JSON API of `mlpipe serve` reads
 * from a request (src/serve/api-parse.c, api-int.h): the JSON body of
 * POST /api/v1/runs, the query string of GET /api/v1/runs, and the Range
 * and If-None-Match headers of GET /api/v1/models/.../artifact.
 *
 * The input is three lines and a body: a query string ("limit=5&status=
 * failed"; split at '&' and '=' and percent-decoded as libmicrohttpd
 * does), a Range header, an If-None-Match header, then the body.  What
 * must hold, besides no crash, leak or undefined behaviour:
 *
 *  - a refusal comes with MLP_EINVAL and a message;
 *  - an accepted query has a limit of 1 to 1000;
 *  - an accepted body has a project, a ref that git accepts as a name, and
 *    no commit or one of 40 lower-case hex digits;
 *  - a satisfiable range lies inside the file (first <= last < size), for
 *    files of 0, 1, 1000 and 2^63 bytes; the list "*" and the entity tag
 *    itself always match.
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
#include "base/git.h"
#include "base/util.h"
#include "serve/api-int.h"

static void fail(const char *what, const uint8_t *data, size_t size)
{
	fprintf(stderr, "fuzz-api: %s\ninput (%zu bytes): %.*s\n", what, size,
	        (int)(size < 4096 ? size : 4096), (const char *)data);
	abort();
}

/* Cuts the next line off *p (of *n bytes) as a new string. */
static char *line(const uint8_t **p, size_t *n)
{
	const uint8_t *nl = memchr(*p, '\n', *n);
	size_t len = nl ? (size_t)(nl - *p) : *n;
	char *s = xstrndup((const char *)*p, len);

	*p += nl ? len + 1 : len;
	*n -= nl ? len + 1 : len;
	return s;
}

/* Percent-decodes s in place (a '+' is a space), as a query value. */
static void unescape(char *s)
{
	char *o = s;

	for (; *s; s++) {
		if (*s == '%' && isxdigit((unsigned char)s[1]) && isxdigit((unsigned char)s[2])) {
			char hex[3] = {s[1], s[2], '\0'};

			*o++ = (char)strtol(hex, NULL, 16);
			s += 2;
		} else {
			*o++ = *s == '+' ? ' ' : *s;
		}
	}
	*o = '\0';
}

static void check_query(char *query, const uint8_t *data, size_t size)
{
	const char *limit = NULL, *status = NULL;
	struct mlp_run_filter f = {0};
	char *save = NULL;
	int rc;

	for (char *arg = strtok_r(query, "&", &save); arg; arg = strtok_r(NULL, "&", &save)) {
		char *eq = strchr(arg, '=');

		if (eq == NULL)
			continue;
		*eq = '\0';
		unescape(arg);
		unescape(eq + 1);
		if (strcmp(arg, "limit") == 0)
			limit = eq + 1;
		else if (strcmp(arg, "status") == 0)
			status = eq + 1;
	}
	rc = serve_runs_query_parse(&f, limit, status);
	if (rc != 0 && (rc != MLP_EINVAL || *mlp_error_last() == '\0'))
		fail("a query refused without MLP_EINVAL and a message", data, size);
	if (rc == 0 && (f.limit < 1 || f.limit > 1000 || f.has_status != (status != NULL)))
		fail("a query accepted with a limit outside 1-1000", data, size);
}

static void check_range(const char *range, const uint8_t *data, size_t size)
{
	static const uint64_t sizes[] = {0, 1, 1000, UINT64_C(1) << 63};

	for (size_t i = 0; i < MLP_ARRAY_SIZE(sizes); i++) {
		uint64_t first = UINT64_MAX, last = UINT64_MAX;

		if (serve_range_parse(&first, &last, range, sizes[i]) == SERVE_RANGE_OK &&
		    (first > last || last >= sizes[i]))
			fail("a satisfiable range outside the file", data, size);
	}
}

static void check_body(const uint8_t *p, size_t n, const uint8_t *data, size_t size)
{
	struct serve_run_request rq;
	/* exactly the bytes, without a terminating '\0' to lean on */
	char *body = xmalloc(n ? n : 1);
	int rc;

	memcpy(body, p, n);
	rc = serve_run_request_parse(&rq, body, n);
	if (rc != 0) {
		if (rc != MLP_EINVAL || *mlp_error_last() == '\0')
			fail("a body refused without MLP_EINVAL and a message", data, size);
	} else if (rq.project == NULL || rq.ref == NULL || !mlp_git_ref_name_valid(rq.ref) ||
	           (rq.commit &&
	            (strlen(rq.commit) != 40 || strspn(rq.commit, "0123456789abcdef") != 40))) {
		fail("a body accepted without a project, a valid ref or a valid commit", data,
		     size);
	}
	serve_run_request_clear(&rq);
	free(body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *p = data;
	size_t n = size;
	char *query, *range, *inm;

	if (size > 1 << 16)
		return 0;
	query = line(&p, &n);
	range = line(&p, &n);
	inm = line(&p, &n);
	check_query(query, data, size);
	check_range(range, data, size);
	if (!serve_etag_listed("*", inm) ||
	    (*inm && !serve_etag_listed(inm, inm) && !strchr(inm, ',') && !strchr(inm, ' ') &&
	     !strchr(inm, '\t') && strncmp(inm, "W/", 2) != 0 && *inm != '*'))
		fail("\"*\" or the entity tag itself does not match", data, size);
	(void)serve_etag_listed(inm, "\"0123abcd\"");
	check_body(p, n, data, size);
	free(query);
	free(range);
	free(inm);
	return 0;
}
