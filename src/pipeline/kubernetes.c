/*
 * kubernetes.c - `runs-on: kubernetes` and the `kubernetes:` blocks.
 *
 * A run or train stage that runs on Kubernetes becomes a Job of pods on a
 * cluster (src/deploy/k8s-job*.c).  What it needs is read here: where
 * (context, namespace), what (image, the helper image, a checkout of the
 * run's commit) and how (resources, node selector, tolerations, a Kueue
 * queue, a start timeout).  The pipeline's block gives defaults, a
 * stage's overrides them key by key.  Names are checked the way
 * Kubernetes checks them, so that a typo is caught by `mlpipe validate`.
 */
#include "config.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/pipeline-int.h"
#include "base/util.h"

void mlp_k8s_settings_free(struct mlp_k8s_settings *k)
{
	free(k->context);
	free(k->kubeconfig);
	free(k->namespace_);
	free(k->image);
	free(k->helper_image);
	free(k->service_account);
	free(k->queue);
	free(k->workdir);
	free(k->pull_policy);
	mlp_kvlist_free(&k->resources);
	mlp_kvlist_free(&k->node_selector);
	mlp_kvlist_free(&k->annotations);
	mlp_kvlist_free(&k->labels);
	for (size_t i = 0; i < k->ntolerations; i++) {
		free(k->tolerations[i].key);
		free(k->tolerations[i].operator_);
		free(k->tolerations[i].value);
		free(k->tolerations[i].effect);
	}
	free(k->tolerations);
	free(k->checkout_repo);
	free(k->checkout_secret);
	free(k->checkout_path);
	memset(k, 0, sizeof(*k));
}

/* A resource quantity as Kubernetes writes one: 8, 0.5, 500m, 64Gi, 1e3. */
static bool quantity_valid(const char *s)
{
	static const char *const suffixes[] = {"",  "m",  "k",  "M",  "G",  "T",  "P",
	                                       "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"};
	const char *p = s;
	bool digits = false;

	if (*p == '+')
		p++;
	while (isdigit((unsigned char)*p) || *p == '.') {
		digits = digits || *p != '.';
		p++;
	}
	if (!digits)
		return false;
	if ((*p == 'e' || *p == 'E') && isdigit((unsigned char)p[1])) {
		for (p++; isdigit((unsigned char)*p); p++)
			;
		return *p == '\0';
	}
	for (size_t i = 0; i < MLP_ARRAY_SIZE(suffixes); i++)
		if (strcmp(p, suffixes[i]) == 0)
			return true;
	return false;
}

/* A label or resource key: [prefix/]name, the name 63 characters of
 * alphanumerics, '-', '_' and '.', starting and ending alphanumeric. */
static bool qualified_name_valid(const char *s)
{
	const char *slash = strrchr(s, '/');
	const char *name = slash ? slash + 1 : s;
	size_t len = strlen(name);

	if (slash) {
		char *prefix = xstrndup(s, (size_t)(slash - s));
		bool ok = mlp_pl_k8s_name_valid(prefix, true, 253);

		free(prefix);
		if (!ok)
			return false;
	}
	if (len == 0 || len > 63 || !isalnum((unsigned char)name[0]) ||
	    !isalnum((unsigned char)name[len - 1]))
		return false;
	for (const char *p = name; *p; p++)
		if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_' && *p != '.')
			return false;
	return true;
}

/* A mapping of qualified names to scalars (resources, node_selector,
 * annotations, labels); values checked as quantities with quantities. */
static void parse_string_map(struct mlp_kvlist *out, struct ctx *c, const char *key,
                             const struct node *v, bool quantities, bool label_values)
{
	mlp_kvlist_free(out);
	if (!mlp_pl_want_map(c, key, v, "a mapping of name: value", true) || mlp_pl_is_null(v))
		return;
	for (size_t i = 0; i < v->npairs; i++) {
		const struct pair *pr = &v->pairs[i];
		const char *name = pr->key->value;
		char *value = NULL;

		if (!mlp_pl_pair_usable(pr))
			continue;
		if (!qualified_name_valid(name)) {
			mlp_pl_report(c, pr->key->pos,
			              "'%s' in %s is not a Kubernetes name (such as cpu, "
			              "nvidia.com/gpu or example.com/team)",
			              name, key);
			continue;
		}
		if (strcmp(key, "labels") == 0 &&
		    (strncmp(name, "mlpipe.dev/", 11) == 0 ||
		     strcmp(name, "app.kubernetes.io/managed-by") == 0)) {
			mlp_pl_report(c, pr->key->pos,
			              "label '%s' is mlpipe's own: it names the objects mlpipe "
			              "made and deletes",
			              name);
			continue;
		}
		if (!mlp_pl_get_name(&value, c, name, pr->value))
			continue;
		if (quantities && !quantity_valid(value))
			mlp_pl_report(c, pr->value->pos,
			              "%s '%s' must be a quantity such as 8, 500m or 64Gi, "
			              "not '%s'",
			              key, name, value);
		else if (label_values && *value &&
		         (strchr(value, '/') || !qualified_name_valid(value)))
			mlp_pl_report(c, pr->value->pos,
			              "%s '%s' must be a label value (at most 63 letters, "
			              "digits, '-', '_' and '.'), not '%s'",
			              key, name, value);
		else
			mlp_kvlist_add(out, name, value, pr->key->pos);
		free(value);
	}
}

static void parse_toleration(struct mlp_k8s_toleration *t, struct ctx *c, const struct node *v)
{
	static const char *const keys[] = {"key", "operator", "value", "effect", "seconds"};
	static const char *const ops[] = {"Equal", "Exists"};
	static const char *const effects[] = {"NoSchedule", "PreferNoSchedule", "NoExecute"};
	long long seconds;
	int which;

	t->seconds = -1;
	if (!mlp_pl_want_map(c, "tolerations", v,
	                     "a list of {key, operator, value, effect} mappings", false))
		return;
	for (size_t i = 0; i < v->npairs; i++) {
		const struct pair *pr = &v->pairs[i];
		const char *k = pr->key->value;

		if (!mlp_pl_pair_usable(pr))
			continue;
		if (strcmp(k, "key") == 0) {
			if (mlp_pl_get_name(&t->key, c, k, pr->value) &&
			    !qualified_name_valid(t->key))
				mlp_pl_report(c, pr->value->pos, "toleration key '%s' is not valid",
				              t->key);
		} else if (strcmp(k, "operator") == 0) {
			if (mlp_pl_get_enum(&which, c, k, pr->value, ops, MLP_ARRAY_SIZE(ops))) {
				free(t->operator_);
				t->operator_ = xstrdup(ops[which]);
			}
		} else if (strcmp(k, "value") == 0) {
			mlp_pl_get_name(&t->value, c, k, pr->value);
		} else if (strcmp(k, "effect") == 0) {
			if (mlp_pl_get_enum(&which, c, k, pr->value, effects,
			                    MLP_ARRAY_SIZE(effects))) {
				free(t->effect);
				t->effect = xstrdup(effects[which]);
			}
		} else if (strcmp(k, "seconds") == 0) {
			if (mlp_pl_get_int(&seconds, c, k, pr->value, 0, INT32_MAX))
				t->seconds = seconds;
		} else {
			mlp_pl_unknown_key(c, pr->key, keys, MLP_ARRAY_SIZE(keys),
			                   " in a toleration");
		}
	}
	if (t->key == NULL && (t->operator_ == NULL || strcmp(t->operator_, "Exists") != 0))
		mlp_pl_report(c, v->pos,
		              "a toleration without 'key' must have operator: Exists "
		              "(it tolerates every taint)");
	if (t->operator_ && strcmp(t->operator_, "Exists") == 0 && t->value)
		mlp_pl_report(c, v->pos, "a toleration with operator: Exists takes no 'value'");
	/* The API server refuses tolerationSeconds with any other effect. */
	if (t->seconds >= 0 && (t->effect == NULL || strcmp(t->effect, "NoExecute") != 0))
		mlp_pl_report(c, v->pos,
		              "a toleration with 'seconds' must have effect: NoExecute (how "
		              "long a pod stays on a node after such a taint appears)");
}

static void parse_tolerations(struct mlp_k8s_settings *k, struct ctx *c, const struct node *v)
{
	k->has_tolerations = true;
	if (mlp_pl_is_null(v))
		return;
	if (v->type != NODE_SEQ) {
		mlp_pl_wrong_type(c, "tolerations", v,
		                  "a list such as [{key: nvidia.com/gpu, operator: Exists}]");
		return;
	}
	k->tolerations = xcalloc(v->nitems ? v->nitems : 1, sizeof(*k->tolerations));
	for (size_t i = 0; i < v->nitems; i++)
		parse_toleration(&k->tolerations[k->ntolerations++], c, v->items[i]);
}

static void parse_checkout(struct mlp_k8s_settings *k, struct ctx *c, const struct node *v)
{
	static const char *const keys[] = {"repository", "secret", "path"};

	if (!mlp_pl_want_map(c, "checkout", v, "a mapping (repository, secret, path)", false))
		return;
	for (size_t i = 0; i < v->npairs; i++) {
		const struct pair *pr = &v->pairs[i];
		const char *key = pr->key->value;

		if (!mlp_pl_pair_usable(pr))
			continue;
		if (strcmp(key, "repository") == 0)
			mlp_pl_get_name(&k->checkout_repo, c, key, pr->value);
		else if (strcmp(key, "secret") == 0)
			mlp_pl_get_k8s_name(c, key, pr->value, true, &k->checkout_secret);
		else if (strcmp(key, "path") == 0) {
			if (mlp_pl_get_name(&k->checkout_path, c, key, pr->value) &&
			    k->checkout_path[0] != '/')
				mlp_pl_report(
				        c, pr->value->pos,
				        "checkout 'path' must be absolute (a path in the pod), "
				        "not '%s'",
				        k->checkout_path);
		} else
			mlp_pl_unknown_key(c, pr->key, keys, MLP_ARRAY_SIZE(keys), " in checkout");
	}
	if (k->checkout_repo == NULL)
		mlp_pl_report(c, v->pos,
		              "missing 'repository' in checkout (the git URL the pods clone)");
}

void mlp_pl_parse_k8s(struct mlp_k8s_settings *k, struct ctx *c, const struct pair *kp, size_t si)
{
	static const char *const keys[] = {
	        "context",      "kubeconfig",      "namespace",   "image",
	        "helper_image", "service_account", "queue",       "workdir",
	        "pull_policy",  "start_timeout",   "resources",   "node_selector",
	        "annotations",  "labels",          "tolerations", "checkout",
	};
	static const char *const policies[] = {"Always", "IfNotPresent", "Never"};
	const struct node *v = kp->value;
	int which;

	k->set = true;
	k->pos = kp->key->pos;
	if (!mlp_pl_want_map(c, "kubernetes", v,
	                     "a mapping (context, namespace, image, resources ...)", true) ||
	    mlp_pl_is_null(v))
		return;
	for (size_t i = 0; i < v->npairs; i++) {
		const struct pair *pr = &v->pairs[i];
		const char *key = pr->key->value;
		const struct node *val = pr->value;

		if (!mlp_pl_pair_usable(pr))
			continue;
		if (strcmp(key, "context") == 0) {
			mlp_pl_get_name(&k->context, c, key, val);
		} else if (strcmp(key, "kubeconfig") == 0) {
			mlp_pl_get_name(&k->kubeconfig, c, key, val);
		} else if (strcmp(key, "namespace") == 0) {
			mlp_pl_get_k8s_name(c, key, val, false, &k->namespace_);
		} else if (strcmp(key, "image") == 0) {
			if (mlp_pl_get_string(&k->image, c, key, val))
				mlp_pl_note_expr(c, si, val);
		} else if (strcmp(key, "helper_image") == 0) {
			mlp_pl_get_name(&k->helper_image, c, key, val);
		} else if (strcmp(key, "service_account") == 0) {
			mlp_pl_get_k8s_name(c, key, val, true, &k->service_account);
		} else if (strcmp(key, "queue") == 0) {
			mlp_pl_get_k8s_name(c, key, val, true, &k->queue);
		} else if (strcmp(key, "workdir") == 0) {
			if (mlp_pl_get_name(&k->workdir, c, key, val) && k->workdir[0] != '/')
				mlp_pl_report(c, val->pos,
				              "kubernetes 'workdir' must be an absolute path in "
				              "the container, not '%s'",
				              k->workdir);
		} else if (strcmp(key, "pull_policy") == 0) {
			if (mlp_pl_get_enum(&which, c, key, val, policies,
			                    MLP_ARRAY_SIZE(policies))) {
				free(k->pull_policy);
				k->pull_policy = xstrdup(policies[which]);
			}
		} else if (strcmp(key, "start_timeout") == 0) {
			mlp_pl_get_duration(&k->start_timeout_ms, c, key, val, true);
		} else if (strcmp(key, "resources") == 0) {
			parse_string_map(&k->resources, c, key, val, true, false);
		} else if (strcmp(key, "node_selector") == 0) {
			parse_string_map(&k->node_selector, c, key, val, false, true);
		} else if (strcmp(key, "annotations") == 0) {
			parse_string_map(&k->annotations, c, key, val, false, false);
		} else if (strcmp(key, "labels") == 0) {
			parse_string_map(&k->labels, c, key, val, false, true);
		} else if (strcmp(key, "tolerations") == 0) {
			parse_tolerations(k, c, val);
		} else if (strcmp(key, "checkout") == 0) {
			parse_checkout(k, c, val);
		} else {
			mlp_pl_unknown_key(c, pr->key, keys, MLP_ARRAY_SIZE(keys),
			                   " in kubernetes");
		}
	}
}

void mlp_pl_parse_runs_on(struct ctx *c, size_t si, const struct pair *kp)
{
	static const char *const where[] = {"local", "kubernetes"};
	struct mlp_stage *st = &c->p->stages[si];
	int which;

	st->runs_on_pos = kp->key->pos;
	if (mlp_pl_get_enum(&which, c, "runs-on", kp->value, where, MLP_ARRAY_SIZE(where)))
		st->runs_on = (enum mlp_runs_on)which;
}

static void inherit_string(char **dst, const char *src)
{
	if (*dst == NULL && src)
		*dst = xstrdup(src);
}

static void inherit_map(struct mlp_kvlist *dst, const struct mlp_kvlist *src)
{
	if (dst->len)
		return;
	for (size_t i = 0; i < src->len; i++)
		mlp_kvlist_add(dst, src->items[i].key, src->items[i].value, src->items[i].pos);
}

static void inherit(struct mlp_k8s_settings *k, const struct mlp_k8s_settings *d)
{
	inherit_string(&k->context, d->context);
	inherit_string(&k->kubeconfig, d->kubeconfig);
	inherit_string(&k->namespace_, d->namespace_);
	inherit_string(&k->image, d->image);
	inherit_string(&k->helper_image, d->helper_image);
	inherit_string(&k->service_account, d->service_account);
	inherit_string(&k->queue, d->queue);
	inherit_string(&k->workdir, d->workdir);
	inherit_string(&k->pull_policy, d->pull_policy);
	if (k->start_timeout_ms == 0)
		k->start_timeout_ms = d->start_timeout_ms;
	inherit_map(&k->resources, &d->resources);
	inherit_map(&k->node_selector, &d->node_selector);
	inherit_map(&k->annotations, &d->annotations);
	inherit_map(&k->labels, &d->labels);
	if (!k->has_tolerations && d->has_tolerations) {
		k->has_tolerations = true;
		k->tolerations =
		        xcalloc(d->ntolerations ? d->ntolerations : 1, sizeof(*k->tolerations));
		for (size_t i = 0; i < d->ntolerations; i++) {
			const struct mlp_k8s_toleration *t = &d->tolerations[i];
			struct mlp_k8s_toleration *n = &k->tolerations[k->ntolerations++];

			n->key = t->key ? xstrdup(t->key) : NULL;
			n->operator_ = t->operator_ ? xstrdup(t->operator_) : NULL;
			n->value = t->value ? xstrdup(t->value) : NULL;
			n->effect = t->effect ? xstrdup(t->effect) : NULL;
			n->seconds = t->seconds;
		}
	}
	if (k->checkout_repo == NULL && d->checkout_repo) {
		k->checkout_repo = xstrdup(d->checkout_repo);
		inherit_string(&k->checkout_secret, d->checkout_secret);
		inherit_string(&k->checkout_path, d->checkout_path);
	}
}

/* What a stage that runs on Kubernetes can be. */
static void check_k8s_stage(struct ctx *c, struct mlp_stage *st)
{
	if (st->kind != MLP_STAGE_RUN && st->kind != MLP_STAGE_TRAIN) {
		mlp_pl_report(c, st->runs_on_pos,
		              "stage '%s' is a %s stage, which runs inside mlpipe: only run "
		              "and train stages can run on kubernetes",
		              st->name, mlp_stage_kind_name(st->kind));
		return;
	}
	inherit(&st->k8s, &c->p->k8s);
	if (st->k8s.image == NULL)
		mlp_pl_report(c, st->runs_on_pos,
		              "stage '%s' runs on kubernetes but has no image: set "
		              "kubernetes.image (on the stage or the pipeline)",
		              st->name);
	if (st->kind == MLP_STAGE_TRAIN && st->train.max_restarts > 0)
		mlp_pl_report(c, st->runs_on_pos,
		              "stage '%s': max_restarts restarts ranks on one machine; on "
		              "kubernetes a failed gang is retried whole with 'retry:'",
		              st->name);
}

void mlp_pl_check_k8s_stages(struct ctx *c)
{
	struct mlp_pipeline *p = c->p;

	for (size_t i = 0; i < p->nstages; i++) {
		struct mlp_stage *st = &p->stages[i];

		if (st->runs_on == MLP_RUNS_ON_KUBERNETES) {
			check_k8s_stage(c, st);
			continue;
		}
		if (st->k8s.set)
			mlp_pl_report(c, st->k8s.pos,
			              "stage '%s' has kubernetes: settings but runs locally: "
			              "add runs-on: kubernetes",
			              st->name);
		if (st->kind == MLP_STAGE_TRAIN && st->train.nodes > 1)
			mlp_pl_report(c, st->kind_pos,
			              "stage '%s' asks for %d nodes: a train stage on more than "
			              "one node needs runs-on: kubernetes (or run `mlpipe launch "
			              "--nnodes` on each node yourself)",
			              st->name, st->train.nodes);
	}
}
