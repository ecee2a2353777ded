/*
 * webhook.h - push events from GitHub, GitLab and Gitea/Forgejo: checking
 * who sent them, reading what was pushed, and deciding whether a pipeline
 * wants it.  No HTTP here (server.c) and no git (git.c).
 */
#ifndef MLP_WEBHOOK_H
#define MLP_WEBHOOK_H

#include <stdbool.h>
#include <stddef.h>

struct mlp_pipeline;

enum mlp_forge {
	MLP_FORGE_GITHUB,
	MLP_FORGE_GITLAB,
	MLP_FORGE_GITEA, /* Forgejo too */
};

const char *mlp_forge_name(enum mlp_forge f);
/* 0 or MLP_EINVAL (no message): "github", "gitlab", "gitea", "forgejo". */
int mlp_forge_parse(enum mlp_forge *out, const char *name);

/*
 * Whether signature (the forge's header: GitHub's "sha256=HEX", Gitea's bare
 * HEX, GitLab's token itself) proves that body was sent by someone who
 * knows secret.  HMAC-SHA256 over the raw body, compared in constant time;
 * a NULL or malformed signature is false.
 */
bool mlp_webhook_verify(enum mlp_forge f, const char *secret, const char *signature,
                        const void *body, size_t len);

/*
 * Whether content_type (the request's Content-Type header, or NULL) is one
 * that forge f sends: GitHub's application/json or, for a webhook whose
 * content type is "form", application/x-www-form-urlencoded (*form is then
 * set); GitLab's and Gitea/Forgejo's application/json.  Parameters
 * ("; charset=utf-8") and case are ignored.
 */
bool mlp_webhook_content_type_ok(bool *form, enum mlp_forge f, const char *content_type);

/*
 * The JSON of a form-encoded delivery (GitHub: the body is
 * "payload=URL-ENCODED-JSON"), decoded into *out (the caller frees; NUL-
 * terminated, *out_len bytes without it).  MLP_EINVAL with a message when
 * the body has no payload field.  The signature is over the raw body: check
 * it before calling this.
 */
int mlp_webhook_form_payload(char **out, size_t *out_len, const char *body, size_t len);

/* What a push event says. */
struct mlp_push {
	char *ref;    /* "refs/heads/main" */
	char *commit; /* the pushed commit, 40 hex (GitLab: checkout_sha) */
	char *clone_url;
	bool deleted; /* the ref was deleted: nothing to run */
};

/* Parses a push payload.  MLP_EINVAL with a message when it is not JSON or
 * lacks ref or a valid commit. */
int mlp_webhook_parse_push(struct mlp_push *out, const char *body, size_t len);
void mlp_push_clear(struct mlp_push *p);

/* Whether branch matches one of the comma-separated globs ('*' stops at
 * '/', '**' does not).  An empty list matches every branch. */
bool mlp_branch_matches(const char *globs, const char *branch);

/*
 * Whether a push of ref starts pipeline p, with GitHub's semantics: only
 * with `on: push`; branches: filters branch pushes, tags: tag pushes; when
 * only tags are given, branch pushes do not match (and the other way
 * round); with neither, every push matches.
 */
bool mlp_pipeline_wants_push(const struct mlp_pipeline *p, const char *ref);

/*
 * Why pipeline p (read at the run's commit) does not want a run started by
 * trigger on ref, or NULL when it wants it: the same `on:` rules for every
 * trigger.  A push seen by a webhook or by the poller ("webhook", "poll")
 * needs `on.push` to match ref (mlp_pipeline_wants_push); "schedule" needs
 * an `on.schedule` entry; a run started by hand ("api", "cli", NULL) always
 * runs, with or without `on:`.  Any other trigger never runs.  The reason
 * (the caller frees) completes "the pipeline at COMMIT ...".
 */
char *mlp_pipeline_trigger_refusal(const struct mlp_pipeline *p, const char *trigger,
                                   const char *ref);

#endif
