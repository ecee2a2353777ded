/*
 * artifacts.c - /api/v1/models/...: a registered model version as JSON
 * and its artifact, the bytes of the model file (serve-int.h, docs/api.md).
 *
 *   GET       /api/v1/models/NAME/versions/V           the version (JSON)
 *   GET, HEAD /api/v1/models/NAME/versions/V/artifact  the file
 *
 * The artifact is what mlpipe-model-server fetches when a rollout names a
 * model (docs/model-server.md): its ETag is the quoted SHA-256 of the
 * bytes, which never change for a version, so If-None-Match answers 304
 * and a single byte range (Range: bytes=A-B, A-, -N; If-Range) answers
 * 206 — enough for a client to resume a large model.  Several ranges are
 * answered with the whole file (RFC 9110 lets a server ignore Range).
 * The file is sent from its descriptor, not read into memory.
 *
 * Runs in an HTTP thread; the database is read under db_lock, the file
 * opened outside it.  The caller (api.c) has checked the token's scope.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/error.h"
#include "base/json.h"
#include "base/util.h"
#include "serve/api-int.h"
#include "serve/serve-int.h"
#include "store/store.h"
#include "store/store-models.h"

/* The version row of NAME/V; answers 404 or 503 itself when there is none. */
static int version_get(struct serve *sv, struct mlp_model_version *mv, const char *name,
                       const char *vtext, struct mlp_http_response *r)
{
	long long v;
	int rc;

	if (mlp_parse_int(&v, vtext, 1, 1000000000) != 0) {
		serve_reply_error(r, 404, "no such model version");
		return MLP_ENOTFOUND;
	}
	pthread_mutex_lock(&sv->db_lock);
	rc = mlp_store_model_version_get(mv, sv->db, name, (int)v);
	pthread_mutex_unlock(&sv->db_lock);
	if (rc != 0)
		serve_reply_error(r, rc == MLP_ENOTFOUND ? 404 : 503, mlp_error_last());
	return rc;
}

static void version_json(const struct mlp_model_version *mv, struct mlp_http_response *r)
{
	struct mlp_json *o = mlp_json_object(), *m = mlp_json_object();

	mlp_json_add_string(o, "model", mv->model);
	mlp_json_add_int(o, "version", mv->version);
	mlp_json_add_string(o, "status", mlp_model_status_name(mv->status));
	mlp_json_add_string(o, "sha256", mv->sha256);
	mlp_json_add_int(o, "size", mv->size);
	if (mv->run_id > 0)
		mlp_json_add_int(o, "run", mv->run_id);
	else
		mlp_json_add_null(o, "run");
	mlp_json_add_string(o, "stage", mv->stage);
	mlp_json_add_string(o, "commit", mv->git_commit);
	for (size_t i = 0; i < mv->nmetrics; i++)
		mlp_json_add_number(m, mv->metrics[i].name, mv->metrics[i].value);
	mlp_json_add(o, "metrics", m);
	{
		char *path =
		        xasprintf("/api/v1/models/%s/versions/%d/artifact", mv->model, mv->version);

		mlp_json_add_string(o, "artifact", path);
		free(path);
	}
	serve_reply_json(r, 200, o);
}

/* Answers the artifact of mv: 200, 206, 304 or 416. */
static void artifact_send(const struct mlp_model_version *mv, const struct mlp_http_request *req,
                          struct mlp_http_response *r)
{
	const char *inm = mlp_http_header(req, "If-None-Match");
	const char *range = mlp_http_header(req, "Range");
	const char *if_range = mlp_http_header(req, "If-Range");
	char *etag = xasprintf("\"%s\"", mv->sha256);
	uint64_t size, first = 0, last = 0;
	enum serve_range rr = SERVE_RANGE_NONE;
	struct stat st;
	int fd = -1;

	if (inm && serve_etag_listed(inm, etag)) {
		r->status = 304;
		mlp_http_response_header(r, "ETag", "%s", etag);
		goto done;
	}
	fd = open(mv->artifact_path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		char *msg = xasprintf("the artifact of %s version %d is missing from the store",
		                      mv->model, mv->version);

		serve_reply_error(r, 500, msg);
		free(msg);
		goto done;
	}
	size = (uint64_t)st.st_size;
	if (mv->size >= 0 && size != (uint64_t)mv->size) {
		char *msg = xasprintf("the artifact of %s version %d changed in the store "
		                      "(%llu bytes, recorded %lld)",
		                      mv->model, mv->version, (unsigned long long)size,
		                      (long long)mv->size);

		serve_reply_error(r, 500, msg);
		free(msg);
		goto done;
	}
	if (range && (if_range == NULL || strcmp(if_range, etag) == 0))
		rr = serve_range_parse(&first, &last, range, size);
	mlp_http_response_header(r, "ETag", "%s", etag);
	mlp_http_response_header(r, "Accept-Ranges", "bytes");
	if (rr == SERVE_RANGE_UNSATISFIABLE) {
		mlp_http_response_header(r, "Content-Range", "bytes */%llu",
		                         (unsigned long long)size);
		serve_reply_error(r, 416, "the range is outside the artifact");
		goto done;
	}
	r->content_type = "application/octet-stream";
	r->has_file = true;
	r->file_fd = fd;
	fd = -1;
	if (rr == SERVE_RANGE_OK) {
		r->status = 206;
		r->file_offset = first;
		r->file_len = last - first + 1;
		mlp_http_response_header(r, "Content-Range", "bytes %llu-%llu/%llu",
		                         (unsigned long long)first, (unsigned long long)last,
		                         (unsigned long long)size);
	} else {
		r->status = 200;
		r->file_len = size;
	}
done:
	if (fd >= 0)
		close(fd);
	free(etag);
}

void serve_models_handle(struct serve *sv, const struct mlp_http_request *req,
                         const struct mlp_http_request_view *v, struct mlp_http_response *r,
                         const char *rest)
{
	struct mlp_model_version mv = {0};
	const char *slash = strchr(rest, '/');
	char *name = NULL, *vtext = NULL;
	const char *after;
	bool artifact;

	if (slash == NULL || slash == rest || strncmp(slash, "/versions/", 10) != 0) {
		serve_reply_error(r, 404, "no such endpoint");
		return;
	}
	name = xstrndup(rest, (size_t)(slash - rest));
	after = slash + 10;
	slash = strchr(after, '/');
	artifact = slash && strcmp(slash, "/artifact") == 0;
	if (slash && !artifact) {
		serve_reply_error(r, 404, "no such endpoint");
		goto done;
	}
	vtext = slash ? xstrndup(after, (size_t)(slash - after)) : xstrdup(after);
	if (strcmp(v->method, "GET") != 0 && !(artifact && strcmp(v->method, "HEAD") == 0)) {
		r->extra_header = "Allow";
		r->extra_value = artifact ? "GET, HEAD" : "GET";
		serve_reply_error(r, 405, artifact ? "GET or HEAD" : "GET");
		goto done;
	}
	if (version_get(sv, &mv, name, vtext, r) != 0)
		goto done;
	if (artifact)
		artifact_send(&mv, req, r);
	else
		version_json(&mv, r);
done:
	mlp_model_version_clear(&mv);
	free(name);
	free(vtext);
}
