/*
 * kind-rollout.c - rollout stages: what the keys under `rollout:` mean.
 *
 * A rollout changes one container of a Kubernetes Deployment (its image,
 * its env, the model it serves, or several), waits up to `timeout` for the new pods, and on
 * failure rolls back unless told to keep the change.  Names are checked
 * the way Kubernetes checks them, so that a typo is caught by
 * `mlpipe validate` rather than by the API server; talking to the API
 * server is src/deploy/'s work.
 */
#include "config.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/pipeline-int.h"
#include "base/util.h"

bool mlp_pl_k8s_name_valid(const char *s, bool dots, size_t max)
{
	size_t len = strlen(s);

	if (len == 0 || len > max || !isalnum((unsigned char)s[0]) ||
	    !isalnum((unsigned char)s[len - 1]))
		return false;
	for (; *s; s++)
		if (!(islower((unsigned char)*s) || isdigit((unsigned char)*s) || *s == '-' ||
		      (dots && *s == '.')))
			return false;
	return true;
}

void mlp_pl_get_k8s_name(struct ctx *c, const char *key, const struct node *v, bool dots,
                         char **out)
{
	if (!mlp_pl_get_name(out, c, key, v) || strstr(v->value, "${{") != NULL)
		return;
	if (!mlp_pl_k8s_name_valid(*out, dots, dots ? 253 : 63))
		mlp_pl_report(c, v->pos,
		              "'%s' must be a Kubernetes name (lowercase letters, digits%s "
		              "and '-', at most %d characters), not '%s'",
		              key, dots ? ", '.'" : "", dots ? 253 : 63, *out);
}

void mlp_pl_parse_rollout(struct ctx *c, size_t si, const struct pair *kp)
{
	static const char *const keys[] = {
	        "deployment", "namespace",  "container", "image",          "env",   "context",
	        "timeout",    "on_failure", "dry_run",   "model_base_url", "model",
	};
	static const char *const on_failure[] = {"rollback", "keep"};
	struct mlp_rollout *r = &c->p->stages[si].rollout;
	const struct node *v = kp->value;
	const struct mlp_pos *base_pos = NULL;
	bool has_env = false;
	int which;

	r->namespace_ = xstrdup("default");
	r->timeout_ms = 10 * 60 * 1000;
	if (!mlp_pl_want_map(c, "rollout", v, "a mapping (deployment, container, image ...)",
	                     false))
		return;
	for (size_t i = 0; i < v->npairs; i++) {
		const struct pair *pr = &v->pairs[i];
		const char *k = pr->key->value;
		const struct node *val = pr->value;

		if (!mlp_pl_pair_usable(pr))
			continue;
		if (strcmp(k, "deployment") == 0) {
			mlp_pl_get_k8s_name(c, k, val, true, &r->deployment);
		} else if (strcmp(k, "namespace") == 0) {
			mlp_pl_get_k8s_name(c, k, val, false, &r->namespace_);
		} else if (strcmp(k, "container") == 0) {
			mlp_pl_get_k8s_name(c, k, val, false, &r->container);
		} else if (strcmp(k, "image") == 0) {
			if (mlp_pl_get_string(&r->image, c, k, val))
				mlp_pl_note_expr(c, si, val);
		} else if (strcmp(k, "env") == 0) {
			has_env = true;
			mlp_pl_parse_env(&r->env, c, val, si);
		} else if (strcmp(k, "context") == 0) {
			mlp_pl_get_name(&r->context, c, k, val);
		} else if (strcmp(k, "timeout") == 0) {
			mlp_pl_get_duration(&r->timeout_ms, c, k, val, true);
		} else if (strcmp(k, "on_failure") == 0) {
			if (mlp_pl_get_enum(&which, c, k, val, on_failure,
			                    MLP_ARRAY_SIZE(on_failure)))
				r->on_failure = (enum mlp_on_failure)which;
		} else if (strcmp(k, "dry_run") == 0) {
			mlp_pl_get_bool(&r->dry_run, c, k, val);
		} else if (strcmp(k, "model") == 0) {
			mlp_pl_get_name(&r->model, c, k, val);
		} else if (strcmp(k, "model_base_url") == 0) {
			if (mlp_pl_get_name(&r->model_base_url, c, k, val) &&
			    strncmp(r->model_base_url, "http://", 7) != 0 &&
			    strncmp(r->model_base_url, "https://", 8) != 0)
				mlp_pl_report(c, val->pos,
				              "'model_base_url' is the http:// or https:// address "
				              "of mlpipe serve, not '%s'",
				              r->model_base_url);
			base_pos = &val->pos;
		} else {
			mlp_pl_unknown_key(c, pr->key, keys, MLP_ARRAY_SIZE(keys), " in rollout");
		}
	}
	if (r->deployment == NULL)
		mlp_pl_report(c, kp->key->pos,
		              "missing 'deployment' in rollout (the Deployment to "
		              "update)");
	if (r->container == NULL)
		mlp_pl_report(c, kp->key->pos,
		              "missing 'container' in rollout (the container to "
		              "update)");
	if (r->image == NULL && !has_env && r->model == NULL)
		mlp_pl_report(c, kp->key->pos,
		              "rollout needs 'image', 'env' or 'model' (what to change in the "
		              "container)");
	if (base_pos && r->model == NULL)
		mlp_pl_report(c, *base_pos,
		              "'model_base_url' needs 'model' (the model whose artifact it "
		              "serves)");
}
