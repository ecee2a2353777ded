/*
 * api-parse.c - what the JSON API reads from a request (api-int.h): the
 * body of POST /api/v1/runs and the query of GET /api/v1/runs (api.c),
 * and the Range and If-None-Match headers of a model artifact
 * (artifacts.c).  Pure functions: no database, no HTTP.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/git.h"
#include "base/json.h"
#include "base/status.h"
#include "base/util.h"
#include "serve/api-int.h"

int serve_run_request_parse(struct serve_run_request *out, const char *body, size_t len)
{
	struct mlp_json *j = NULL;
	const char *project, *branch, *ref, *commit;
	int rc = MLP_EINVAL;

	memset(out, 0, sizeof(*out));
	if (mlp_json_parse(&j, body, len) != 0 || !mlp_json_is_object(j)) {
		mlp_error_set("the body must be a JSON object");
		goto done;
	}
	project = mlp_json_get_string(j, "project");
	branch = mlp_json_get_string(j, "branch");
	ref = mlp_json_get_string(j, "ref");
	commit = mlp_json_get_string(j, "commit");
	if (project == NULL) {
		mlp_error_set("\"project\" is required");
		goto done;
	}
	out->ref = ref ? xstrdup(ref) : xasprintf("refs/heads/%s", branch ? branch : "main");
	/* git's own rules, here rather than at the fetch: a bad name is the
	 * caller's mistake, answered now, not a run that fails later. */
	if (!mlp_git_ref_name_valid(out->ref)) {
		mlp_error_set("%s", branch && ref == NULL
		                            ? "\"branch\" is not a valid git branch name"
		                            : "\"ref\" must be refs/heads/NAME or refs/tags/NAME, "
		                              "a valid git reference name");
		goto done;
	}
	if (commit && (strlen(commit) != 40 || strspn(commit, "0123456789abcdef") != 40)) {
		mlp_error_set("\"commit\" must be 40 lower-case hex digits");
		goto done;
	}
	out->project = xstrdup(project);
	out->commit = commit ? xstrdup(commit) : NULL;
	rc = 0;
done:
	mlp_json_free(j);
	return rc;
}

void serve_run_request_clear(struct serve_run_request *r)
{
	free(r->project);
	free(r->ref);
	free(r->commit);
	memset(r, 0, sizeof(*r));
}

int serve_runs_query_parse(struct mlp_run_filter *f, const char *limit, const char *status)
{
	long long n;

	f->limit = 50;
	if (limit) {
		if (mlp_parse_int(&n, limit, 1, 1000) != 0) {
			mlp_error_set("\"limit\" must be a whole number from 1 to 1000");
			return MLP_EINVAL;
		}
		f->limit = (int)n;
	}
	if (status) {
		if (mlp_status_parse(&f->status, status) != 0) {
			mlp_error_set("unknown status");
			return MLP_EINVAL;
		}
		f->has_status = true;
	}
	return 0;
}

enum serve_range serve_range_parse(uint64_t *first, uint64_t *last, const char *h, uint64_t size)
{
	long long a = -1, b = -1;
	const char *dash, *spec;
	char *num;

	if (strncmp(h, "bytes=", 6) != 0 || strchr(h, ','))
		return SERVE_RANGE_NONE;
	spec = h + 6;
	if ((dash = strchr(spec, '-')) == NULL)
		return SERVE_RANGE_NONE;
	if (dash > spec) {
		num = xstrndup(spec, (size_t)(dash - spec));
		if (mlp_parse_int(&a, num, 0, INT64_MAX) != 0)
			a = -2;
		free(num);
	}
	if (dash[1] && mlp_parse_int(&b, dash + 1, 0, INT64_MAX) != 0)
		b = -2;
	if (a == -2 || b == -2 || (a < 0 && b < 0) || (a >= 0 && b >= 0 && b < a))
		return SERVE_RANGE_NONE;
	if (a < 0) { /* the last b bytes */
		if (b == 0 || size == 0)
			return SERVE_RANGE_UNSATISFIABLE;
		*first = (uint64_t)b >= size ? 0 : size - (uint64_t)b;
		*last = size - 1;
		return SERVE_RANGE_OK;
	}
	if ((uint64_t)a >= size)
		return SERVE_RANGE_UNSATISFIABLE;
	*first = (uint64_t)a;
	*last = b < 0 || (uint64_t)b >= size ? size - 1 : (uint64_t)b;
	return SERVE_RANGE_OK;
}

bool serve_etag_listed(const char *list, const char *etag)
{
	size_t elen = strlen(etag);

	for (const char *p = list; *p;) {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (*p == '*')
			return true;
		if (strncmp(p, "W/", 2) == 0)
			p += 2;
		if (strncmp(p, etag, elen) == 0 &&
		    (p[elen] == '\0' || p[elen] == ',' || p[elen] == ' ' || p[elen] == '\t'))
			return true;
		while (*p && *p != ',')
			p++;
	}
	return false;
}
