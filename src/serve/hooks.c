/*
 * hooks.c - webhook deliveries to `mlpipe serve`: POST /hooks/FORGE and
 * /hooks/FORGE/PROJECT (serve-int.h, docs/serve.md).
 *
 * A delivery is answered in the HTTP thread that received it: find the
 * project whose secret verifies the body, read the push, and record in
 * one transaction either the run it queues or why it queues none.  The
 * forges' formats and signatures are webhook.c's; running the run is the
 * main loop's (this file only wakes it).
 */
#include "config.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/crypto.h"
#include "base/error.h"
#include "base/json.h"
#include "base/util.h"
#include "serve/serve-int.h"
#include "serve/webhook.h"
#include "store/store.h"

/* Reads a project's webhook secret: from its file or its variable. */
static char *project_secret(const struct mlp_project *p)
{
	char *text = NULL;
	size_t len;

	if (p->secret_env) {
		const char *v = getenv(p->secret_env);

		return v && *v ? xstrdup(v) : NULL;
	}
	if (p->secret_file == NULL || mlp_read_file(&text, &len, p->secret_file, 4096) != 0)
		return NULL;
	while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r'))
		text[--len] = '\0';
	return text;
}

void serve_hook_handle(struct serve *sv, const struct mlp_http_request *req,
                       const struct mlp_http_request_view *v, struct mlp_http_response *r,
                       const char *rest)
{
	char forge_name[16];
	const char *slash = strchr(rest, '/');
	const char *only = slash ? slash + 1 : NULL;
	const char *event, *sig, *delivery;
	struct mlp_project *projects = NULL;
	const struct mlp_project *proj = NULL;
	size_t nprojects = 0;
	enum mlp_forge forge;
	struct mlp_push push = {0};
	char body_sha[MLP_SHA256_HEX_LEN + 1];
	int rc;

	snprintf(forge_name, sizeof(forge_name), "%.*s",
	         (int)(slash ? (size_t)(slash - rest) : strlen(rest)), rest);
	if (strcmp(v->method, "POST") != 0) {
		serve_reply_error(r, 405, "webhooks are POSTed");
		return;
	}
	if (mlp_forge_parse(&forge, forge_name) != 0) {
		serve_reply_error(r, 404, "no such forge (github, gitlab, gitea, forgejo)");
		return;
	}
	switch (forge) {
	case MLP_FORGE_GITHUB:
		event = mlp_http_header(req, "X-GitHub-Event");
		sig = mlp_http_header(req, "X-Hub-Signature-256");
		delivery = mlp_http_header(req, "X-GitHub-Delivery");
		break;
	case MLP_FORGE_GITLAB:
		event = mlp_http_header(req, "X-Gitlab-Event");
		sig = mlp_http_header(req, "X-Gitlab-Token");
		delivery = mlp_http_header(req, "Idempotency-Key");
		if (delivery == NULL)
			delivery = mlp_http_header(req, "X-Gitlab-Event-UUID");
		break;
	default:
		event = mlp_http_header(req, "X-Gitea-Event");
		if (event == NULL)
			event = mlp_http_header(req, "X-Forgejo-Event");
		sig = mlp_http_header(req, "X-Gitea-Signature");
		if (sig == NULL)
			sig = mlp_http_header(req, "X-Forgejo-Signature");
		delivery = mlp_http_header(req, "X-Gitea-Delivery");
		if (delivery == NULL)
			delivery = mlp_http_header(req, "X-Forgejo-Delivery");
		break;
	}

	/* Who sent it: the project whose secret verifies the raw body. */
	pthread_mutex_lock(&sv->db_lock);
	rc = mlp_store_projects_list(sv->db, &projects, &nprojects);
	pthread_mutex_unlock(&sv->db_lock);
	if (rc != 0) {
		serve_reply_error(r, 503, "the database is unavailable");
		return;
	}
	for (size_t i = 0; i < nprojects && proj == NULL; i++) {
		char *secret;

		if (only && strcmp(only, projects[i].name) != 0)
			continue;
		secret = project_secret(&projects[i]);
		if (secret && mlp_webhook_verify(forge, secret, sig, v->body, v->body_len))
			proj = &projects[i];
		if (secret)
			explicit_bzero(secret, strlen(secret));
		free(secret);
	}
	if (proj == NULL) {
		atomic_fetch_add(&sv->rejected, 1);
		serve_log(sv, "webhook %s from %s: rejected (%s signature)", forge_name, v->remote,
		          sig ? "bad" : "no");
		serve_reply_error(r, 401, "the signature does not verify");
		goto done;
	}
	if (event == NULL)
		event = "";
	if (strcmp(event, "ping") == 0) {
		struct mlp_json *j = mlp_json_object();

		mlp_json_add_string(j, "pong", proj->name);
		serve_reply_json(r, 200, j);
		goto done;
	}
	if (strcmp(event, "push") != 0 && strcmp(event, "Push Hook") != 0 &&
	    strcmp(event, "Tag Push Hook") != 0) {
		struct mlp_json *j = mlp_json_object();

		atomic_fetch_add(&sv->ignored_events, 1);
		mlp_json_add_string(j, "ignored", "not a push event");
		mlp_json_add_string(j, "event", event);
		serve_reply_json(r, 200, j);
		goto done;
	}
	/* Without an id, the body itself identifies a redelivery. */
	mlp_sha256_hex(body_sha, v->body, v->body_len);
	if (delivery == NULL || *delivery == '\0' || strlen(delivery) > 200)
		delivery = body_sha;
	if (mlp_webhook_parse_push(&push, v->body, v->body_len) != 0) {
		atomic_fetch_add(&sv->invalid, 1);
		serve_reply_error(r, 400, mlp_error_last());
		goto done;
	}
	{
		const char *why = NULL;
		bool is_branch = strncmp(push.ref, "refs/heads/", 11) == 0;

		if (push.deleted)
			why = "the ref was deleted";
		else if (is_branch && !mlp_branch_matches(proj->branches, push.ref + 11))
			why = "the project does not watch this branch";
		else if (!is_branch && strncmp(push.ref, "refs/tags/", 10) != 0)
			why = "neither a branch nor a tag";
		if (why) {
			struct mlp_json *j = mlp_json_object();

			pthread_mutex_lock(&sv->db_lock);
			rc = mlp_store_delivery_ignore(sv->db, mlp_forge_name(forge), delivery,
			                               proj->name, why);
			pthread_mutex_unlock(&sv->db_lock);
			if (rc == MLP_EEXISTS)
				atomic_fetch_add(&sv->duplicate, 1);
			else if (rc != 0) {
				mlp_json_free(j);
				serve_reply_error(r, 503, "the database is unavailable");
				goto done;
			}
			mlp_json_add_string(j, "ignored", why);
			mlp_json_add_string(j, "ref", push.ref);
			serve_reply_json(r, 200, j);
			goto done;
		}
	}
	{
		struct mlp_run_queued q = {
		        .project = proj->name,
		        .trigger = "webhook",
		        .user = forge_name,
		        .git_commit = push.commit,
		        .git_ref = push.ref,
		        .once_per_commit = true,
		};
		struct mlp_json *j = mlp_json_object();
		int64_t id = 0;

		pthread_mutex_lock(&sv->db_lock);
		/* Keyed by the forge, not the path: /hooks/forgejo is /hooks/gitea. */
		rc = mlp_store_run_enqueue(sv->db, &id, &q, mlp_forge_name(forge), delivery);
		pthread_mutex_unlock(&sv->db_lock);
		if (rc != 0 && rc != MLP_EEXISTS) {
			mlp_json_free(j);
			serve_log(sv, "webhook %s: %s", forge_name, mlp_error_last());
			serve_reply_error(r, 503, "the database is unavailable");
			goto done;
		}
		if (id)
			mlp_json_add_int(j, "run", id);
		else
			mlp_json_add_null(j, "run");
		mlp_json_add_string(j, "delivery", delivery);
		if (rc == MLP_EEXISTS) {
			atomic_fetch_add(&sv->duplicate, 1);
			mlp_json_add_bool(j, "duplicate", true);
			serve_reply_json(r, 200, j);
		} else {
			serve_reply_json(r, 202, j);
			serve_wake(sv);
		}
	}
done:
	mlp_push_clear(&push);
	mlp_project_free_all(projects, nprojects);
}
