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
#include "store/store-queue.h"

/* A delivery being answered. */
struct hook {
	char forge_name[16]; /* as the path says it: "forgejo" is MLP_FORGE_GITEA */
	enum mlp_forge forge;
	const char *event, *sig, *delivery; /* the forge's headers, or NULL */
	bool form;                      /* GitHub's "form" content type: the JSON is payload=... */
	const struct mlp_project *proj; /* who sent it */
	struct mlp_push push;
};

/* The headers that carry the event, the signature and the delivery id. */
static void hook_read_headers(struct hook *h, const struct mlp_http_request *req)
{
	switch (h->forge) {
	case MLP_FORGE_GITHUB:
		h->event = mlp_http_header(req, "X-GitHub-Event");
		h->sig = mlp_http_header(req, "X-Hub-Signature-256");
		h->delivery = mlp_http_header(req, "X-GitHub-Delivery");
		break;
	case MLP_FORGE_GITLAB:
		h->event = mlp_http_header(req, "X-Gitlab-Event");
		h->sig = mlp_http_header(req, "X-Gitlab-Token");
		h->delivery = mlp_http_header(req, "Idempotency-Key");
		if (h->delivery == NULL)
			h->delivery = mlp_http_header(req, "X-Gitlab-Event-UUID");
		break;
	default:
		h->event = mlp_http_header(req, "X-Gitea-Event");
		if (h->event == NULL)
			h->event = mlp_http_header(req, "X-Forgejo-Event");
		h->sig = mlp_http_header(req, "X-Gitea-Signature");
		if (h->sig == NULL)
			h->sig = mlp_http_header(req, "X-Forgejo-Signature");
		h->delivery = mlp_http_header(req, "X-Gitea-Delivery");
		if (h->delivery == NULL)
			h->delivery = mlp_http_header(req, "X-Forgejo-Delivery");
		break;
	}
}

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

/* Who sent it: the project (only the one named, when only is not NULL)
 * whose secret verifies the raw body; NULL when none does. */
static const struct mlp_project *hook_sender(const struct hook *h, const struct mlp_project *ps,
                                             size_t n, const char *only,
                                             const struct mlp_http_request_view *v)
{
	const struct mlp_project *proj = NULL;

	for (size_t i = 0; i < n && proj == NULL; i++) {
		char *secret;

		if (only && strcmp(only, ps[i].name) != 0)
			continue;
		secret = project_secret(&ps[i]);
		if (secret && mlp_webhook_verify(h->forge, secret, h->sig, v->body, v->body_len))
			proj = &ps[i];
		if (secret)
			explicit_bzero(secret, strlen(secret));
		free(secret);
	}
	return proj;
}

/* An event other than a push: a ping is answered with the project's name;
 * any other is answered and counted, never recorded. */
static void hook_other_event(struct serve *sv, const struct hook *h, struct mlp_http_response *r)
{
	struct mlp_json *j = mlp_json_object();

	if (strcmp(h->event, "ping") == 0) {
		mlp_json_add_string(j, "pong", h->proj->name);
		serve_reply_json(r, 200, j);
		return;
	}
	atomic_fetch_add(&sv->ignored_events, 1);
	mlp_json_add_string(j, "ignored", "not a push event");
	mlp_json_add_string(j, "event", h->event);
	serve_reply_json(r, 200, j);
}

/* Why the push queues no run, or NULL when it queues one. */
static const char *hook_skip_reason(const struct hook *h)
{
	bool is_branch = strncmp(h->push.ref, "refs/heads/", 11) == 0;

	if (h->push.deleted)
		return "the ref was deleted";
	if (is_branch && !mlp_branch_matches(h->proj->branches, h->push.ref + 11))
		return "the project does not watch this branch";
	if (!is_branch && strncmp(h->push.ref, "refs/tags/", 10) != 0)
		return "neither a branch nor a tag";
	return NULL;
}

/* Records the delivery as ignored (why) and answers 200. */
static void hook_ignore(struct serve *sv, const struct hook *h, const char *why,
                        struct mlp_http_response *r)
{
	struct mlp_json *j;
	int rc;

	pthread_mutex_lock(&sv->db_lock);
	rc = mlp_store_delivery_ignore(sv->db, mlp_forge_name(h->forge), h->delivery, h->proj->name,
	                               why);
	pthread_mutex_unlock(&sv->db_lock);
	if (rc == MLP_EEXISTS) {
		atomic_fetch_add(&sv->duplicate, 1);
	} else if (rc != 0) {
		serve_reply_error(r, 503, "the database is unavailable");
		return;
	}
	j = mlp_json_object();
	mlp_json_add_string(j, "ignored", why);
	mlp_json_add_string(j, "ref", h->push.ref);
	serve_reply_json(r, 200, j);
}

/* Queues the push's run (once per delivery and commit) and answers 202,
 * or 200 for a delivery seen before. */
static void hook_enqueue(struct serve *sv, const struct hook *h, struct mlp_http_response *r)
{
	struct mlp_run_queued q = {
	        .project = h->proj->name,
	        .trigger = "webhook",
	        .user = h->forge_name,
	        .git_commit = h->push.commit,
	        .git_ref = h->push.ref,
	        .once_per_commit = true,
	};
	struct mlp_json *j;
	int64_t id = 0;
	int rc;

	pthread_mutex_lock(&sv->db_lock);
	/* Keyed by the forge, not the path: /hooks/forgejo is /hooks/gitea. */
	rc = mlp_store_run_enqueue(&id, sv->db, &q, mlp_forge_name(h->forge), h->delivery);
	pthread_mutex_unlock(&sv->db_lock);
	if (rc != 0 && rc != MLP_EEXISTS) {
		serve_log(sv, "webhook %s: %s", h->forge_name, mlp_error_last());
		serve_reply_error(r, 503, "the database is unavailable");
		return;
	}
	j = mlp_json_object();
	if (id)
		mlp_json_add_int(j, "run", id);
	else
		mlp_json_add_null(j, "run");
	mlp_json_add_string(j, "delivery", h->delivery);
	if (rc == MLP_EEXISTS) {
		atomic_fetch_add(&sv->duplicate, 1);
		mlp_json_add_bool(j, "duplicate", true);
		serve_reply_json(r, 200, j);
	} else {
		serve_reply_json(r, 202, j);
		serve_wake(sv);
	}
}

void serve_hook_handle(struct serve *sv, const struct mlp_http_request *req,
                       const struct mlp_http_request_view *v, struct mlp_http_response *r,
                       const char *rest)
{
	const char *slash = strchr(rest, '/');
	struct hook h = {.proj = NULL};
	struct mlp_project *projects = NULL;
	size_t nprojects = 0;
	char body_sha[MLP_SHA256_HEX_LEN + 1], *json = NULL;
	size_t json_len = 0;
	const char *why;
	int rc;

	snprintf(h.forge_name, sizeof(h.forge_name), "%.*s",
	         (int)(slash ? (size_t)(slash - rest) : strlen(rest)), rest);
	if (strcmp(v->method, "POST") != 0) {
		serve_reply_error(r, 405, "webhooks are POSTed");
		return;
	}
	if (mlp_forge_parse(&h.forge, h.forge_name) != 0) {
		serve_reply_error(r, 404, "no such forge (github, gitlab, gitea, forgejo)");
		return;
	}
	if (!mlp_webhook_content_type_ok(&h.form, h.forge, mlp_http_header(req, "Content-Type"))) {
		atomic_fetch_add(&sv->invalid, 1);
		serve_reply_error(r, 415,
		                  h.forge == MLP_FORGE_GITHUB
		                          ? "Content-Type must be application/json or "
		                            "application/x-www-form-urlencoded (the webhook's "
		                            "content type: json or form)"
		                          : "Content-Type must be application/json (set the "
		                            "webhook's content type to JSON)");
		return;
	}
	hook_read_headers(&h, req);
	pthread_mutex_lock(&sv->db_lock);
	rc = mlp_store_projects_list(&projects, &nprojects, sv->db);
	pthread_mutex_unlock(&sv->db_lock);
	if (rc != 0) {
		serve_reply_error(r, 503, "the database is unavailable");
		return;
	}
	h.proj = hook_sender(&h, projects, nprojects, slash ? slash + 1 : NULL, v);
	if (h.proj == NULL) {
		atomic_fetch_add(&sv->rejected, 1);
		serve_log(sv, "webhook %s from %s: rejected (%s signature)", h.forge_name,
		          v->remote, h.sig ? "bad" : "no");
		serve_reply_error(r, 401, "the signature does not verify");
		goto done;
	}
	if (h.event == NULL)
		h.event = "";
	if (strcmp(h.event, "push") != 0 && strcmp(h.event, "Push Hook") != 0 &&
	    strcmp(h.event, "Tag Push Hook") != 0) {
		hook_other_event(sv, &h, r);
		goto done;
	}
	/* Without an id, the body itself identifies a redelivery. */
	mlp_sha256_hex(body_sha, v->body, v->body_len);
	if (h.delivery == NULL || *h.delivery == '\0' || strlen(h.delivery) > 200)
		h.delivery = body_sha;
	/* The signature was over the raw body; the form only wraps the JSON. */
	if (h.form && mlp_webhook_form_payload(&json, &json_len, v->body, v->body_len) != 0) {
		atomic_fetch_add(&sv->invalid, 1);
		serve_reply_error(r, 400, mlp_error_last());
		goto done;
	}
	if (mlp_webhook_parse_push(&h.push, json ? json : v->body, json ? json_len : v->body_len) !=
	    0) {
		atomic_fetch_add(&sv->invalid, 1);
		serve_reply_error(r, 400, mlp_error_last());
		goto done;
	}
	if ((why = hook_skip_reason(&h)) != NULL)
		hook_ignore(sv, &h, why, r);
	else
		hook_enqueue(sv, &h, r);
done:
	free(json);
	mlp_push_clear(&h.push);
	mlp_project_free_all(projects, nprojects);
}
