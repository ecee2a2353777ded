/*
 * routes.c - which owner answers which path of `mlpipe serve`, and the
 * JSON answers they share (serve-int.h).
 *
 *   /hooks/FORGE[/PROJECT]  hooks.c      /api/v1/...  api.c
 *   /metrics                metrics.c    /healthz     here
 *
 * Runs in the HTTP threads of server.c; nothing here touches the
 * database.  No libmicrohttpd here (server.c is its only user).
 */
#include "config.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "base/json.h"
#include "base/util.h"
#include "serve/serve-int.h"

void serve_reply_json(struct mlp_http_response *r, int status, struct mlp_json *j)
{
	char *text = mlp_json_print(j, false);

	mlp_json_free(j);
	r->status = status;
	r->body = xasprintf("%s\n", text);
	r->body_len = strlen(r->body);
	free(text);
}

void serve_reply_error(struct mlp_http_response *r, int status, const char *msg)
{
	struct mlp_json *j = mlp_json_object();

	mlp_json_add_string(j, "error", msg);
	serve_reply_json(r, status, j);
}

void serve_http_handler(void *payload, const struct mlp_http_request *req,
                        const struct mlp_http_request_view *v, struct mlp_http_response *r)
{
	struct serve *sv = payload;

	if (strncmp(v->path, "/hooks/", 7) == 0)
		serve_hook_handle(sv, req, v, r, v->path + 7);
	else if (strncmp(v->path, "/api/v1/", 8) == 0)
		serve_api_handle(sv, req, v, r, v->path + 8);
	else if (strcmp(v->path, "/healthz") == 0) {
		struct mlp_json *j = mlp_json_object();
		bool stopping = atomic_load(&sv->stopping);

		mlp_json_add_string(j, "status", stopping ? "stopping" : "ok");
		serve_reply_json(r, stopping ? 503 : 200, j);
	} else if (strcmp(v->path, "/metrics") == 0)
		serve_metrics_handle(sv, r);
	else
		serve_reply_error(r, 404, "no such endpoint");
}

void serve_http_log(void *payload, const char *line)
{
	serve_log(payload, "%s", line);
}
