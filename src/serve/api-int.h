/*
 * api-int.h - what the JSON API reads from a request, as pure functions
 * (api-parse.c): the body of POST /api/v1/runs, the query of GET
 * /api/v1/runs, and the Range and If-None-Match headers of a model
 * artifact.  No database and no HTTP here, so that they can be tested
 * and fuzzed alone (tests/fuzz/fuzz-api.c).  Private to src/serve/.
 */
#ifndef MLP_SERVE_API_INT_H
#define MLP_SERVE_API_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/store-runs.h"

/* What POST /api/v1/runs asks for. */
struct serve_run_request {
	char *project;
	char *ref;    /* "ref", else refs/heads/ + "branch" (default main) */
	char *commit; /* 40 lower-case hex digits, or NULL: the ref's head */
};

/*
 * Parses the body of POST /api/v1/runs ({"project": ..., "branch" or
 * "ref": ..., "commit": ...}).  Returns 0, or MLP_EINVAL with the message
 * the API answers 400 with (a body that is not a JSON object, no project,
 * a ref or branch that is not a valid git reference name, a commit that is
 * not 40 lower-case hex digits).  Clear *out with serve_run_request_clear
 * either way.
 */
int serve_run_request_parse(struct serve_run_request *out, const char *body, size_t len);
void serve_run_request_clear(struct serve_run_request *r);

/*
 * The limit= and status= arguments of GET /api/v1/runs (NULL when absent)
 * into f: limit 1 to 1000 (absent: 50), status a run status name.
 * Returns 0, or MLP_EINVAL with the message the API answers 400 with.
 */
int serve_runs_query_parse(struct mlp_run_filter *f, const char *limit, const char *status);

enum serve_range { SERVE_RANGE_NONE, SERVE_RANGE_OK, SERVE_RANGE_UNSATISFIABLE };

/*
 * Parses one "bytes=A-B" range (A-B, A-, -N) of a Range header over a file
 * of size bytes into [*first, *last], both inside the file.  Anything it
 * does not understand (another unit, several ranges, junk) is
 * SERVE_RANGE_NONE: the whole file is sent.
 */
enum serve_range serve_range_parse(uint64_t *first, uint64_t *last, const char *h, uint64_t size);

/* Whether an If-None-Match list (comma-separated entity tags, W/ prefixes
 * compared weakly, or "*") names etag. */
bool serve_etag_listed(const char *list, const char *etag);

#endif
