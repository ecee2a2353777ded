/*
 * kind-gate.c - gate stages: what the keys under `gate:` mean, and the
 * check on metrics_from once every stage is known.
 *
 * A gate judges a model by the metrics a stage it needs reported: each
 * `require` entry compares one metric with a threshold (">= 0.85"), and
 * with a baseline (the deployed or the approved version) `max_regression`
 * bounds how much worse the new one may be, absolutely or in percent.
 * metrics_from names the stage whose metrics count, and defaults to the
 * one stage the gate needs.  Here the keys are read and checked; the
 * judging itself is src/deploy/gate.c's (docs/gates.md).
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "pipeline/pipeline-int.h"
#include "base/util.h"

static bool parse_comparison(const char *s, enum mlp_gate_op *op, double *value)
{
	char *num;
	size_t len;
	bool ok;

	while (*s == ' ')
		s++;
	if (strncmp(s, ">=", 2) == 0) {
		*op = MLP_OP_GE;
		s += 2;
	} else if (strncmp(s, "<=", 2) == 0) {
		*op = MLP_OP_LE;
		s += 2;
	} else if (*s == '>') {
		*op = MLP_OP_GT;
		s++;
	} else if (*s == '<') {
		*op = MLP_OP_LT;
		s++;
	} else {
		return false;
	}
	while (*s == ' ')
		s++;
	len = strlen(s);
	while (len > 0 && s[len - 1] == ' ')
		len--;
	num = xstrndup(s, len);
	ok = mlp_pl_number_syntax(num) && mlp_parse_double(value, num) == 0;
	free(num);
	return ok;
}

/* require: metric: "OP VALUE", each a threshold the metric must meet. */
static void gate_require(struct ctx *c, struct mlp_gate *g, const char *k, const struct node *val)
{
	if (!mlp_pl_want_map(c, k, val, "a mapping of metric: \">= VALUE\"", true) ||
	    mlp_pl_is_null(val))
		return;
	for (size_t j = 0; j < val->npairs; j++) {
		const struct pair *rp = &val->pairs[j];
		struct mlp_gate_require r = {0};

		if (!mlp_pl_pair_usable(rp))
			continue;
		if (rp->value->type != NODE_SCALAR ||
		    !parse_comparison(rp->value->value, &r.op, &r.value)) {
			char *d = mlp_pl_describe(rp->value);

			mlp_pl_report(c, rp->value->pos,
			              "require '%s' must be a comparison such "
			              "as \">= 0.85\" (with >=, >, <= or <), not %s",
			              rp->key->value, d);
			free(d);
			continue;
		}
		r.metric = xstrdup(rp->key->value);
		r.pos = rp->value->pos;
		g->require = xrealloc(g->require, (g->nrequire + 1) * sizeof(*g->require));
		g->require[g->nrequire++] = r;
	}
}

/* max_regression: a number (absolute) or "N%" (relative to the baseline). */
static void gate_max_regression(struct ctx *c, struct mlp_gate *g, const char *k,
                                const struct node *val)
{
	double d;

	if (val->type == NODE_SCALAR && val->len > 1 && val->value[val->len - 1] == '%') {
		char *num = xstrndup(val->value, val->len - 1);

		if (mlp_pl_number_syntax(num) && mlp_parse_double(&d, num) == 0 && d >= 0) {
			g->has_max_regression = true;
			g->max_regression = d / 100;
			g->max_regression_relative = true;
		} else {
			mlp_pl_report(c, val->pos,
			              "'max_regression' must be a number (absolute) "
			              "or a percentage such as \"0.5%%\" (relative), not "
			              "'%s'",
			              val->value);
		}
		free(num);
	} else if (val->type == NODE_SCALAR && val->plain && mlp_pl_number_syntax(val->value) &&
	           mlp_parse_double(&d, val->value) == 0) {
		if (d < 0) {
			mlp_pl_report(c, val->pos, "'max_regression' must be at least 0, not %s",
			              val->value);
		} else {
			g->has_max_regression = true;
			g->max_regression = d;
		}
	} else {
		mlp_pl_wrong_type(c, k, val,
		                  "a number (absolute) or a percentage such as "
		                  "\"0.5%\" (relative)");
	}
}

/* directions: metric: higher or lower (which way is better). */
static void gate_directions(struct ctx *c, struct mlp_gate *g, const char *k,
                            const struct node *val)
{
	static const char *const directions[] = {"higher", "lower"};

	if (!mlp_pl_want_map(c, k, val, "a mapping of metric: higher or lower", true) ||
	    mlp_pl_is_null(val))
		return;
	for (size_t j = 0; j < val->npairs; j++) {
		const struct pair *dp = &val->pairs[j];

		if (!mlp_pl_pair_usable(dp))
			continue;
		if (dp->value->type != NODE_SCALAR || (strcmp(dp->value->value, "higher") != 0 &&
		                                       strcmp(dp->value->value, "lower") != 0)) {
			char *d = mlp_pl_describe(dp->value);

			mlp_pl_report(c, dp->value->pos,
			              "direction of '%s' must be higher or "
			              "lower, not %s",
			              dp->key->value, d);
			free(d);
			continue;
		}
		mlp_kvlist_add(&g->directions, dp->key->value,
		               directions[strcmp(dp->value->value, "lower") == 0], dp->value->pos);
	}
}

void mlp_pl_parse_gate(struct ctx *c, size_t si, const struct pair *kp)
{
	static const char *const keys[] = {
	        "name",     "model",          "metrics_from", "require",
	        "baseline", "max_regression", "directions",   "allow_empty",
	};
	static const char *const baselines[] = {"none", "deployed", "approved"};
	struct mlp_gate *g = &c->p->stages[si].gate;
	struct stage_extra *x = &c->extra[si];
	const struct node *v = kp->value;
	const struct node *max_regression_key = NULL;
	bool baseline_bad = false;
	int which;

	x->gate_key = kp->key;
	if (!mlp_pl_want_map(c, "gate", v, "a mapping (model, metrics_from, require ...)", false))
		return;
	x->gate_ok = true;
	for (size_t i = 0; i < v->npairs; i++) {
		const struct pair *pr = &v->pairs[i];
		const char *k = pr->key->value;
		const struct node *val = pr->value;

		if (!mlp_pl_pair_usable(pr))
			continue;
		if (strcmp(k, "name") == 0) {
			mlp_pl_get_name(&g->name, c, k, val);
		} else if (strcmp(k, "model") == 0) {
			mlp_pl_get_name(&g->model, c, k, val);
		} else if (strcmp(k, "metrics_from") == 0) {
			x->metrics_from = val;
			mlp_pl_get_name(&g->metrics_from, c, k, val);
		} else if (strcmp(k, "require") == 0) {
			gate_require(c, g, k, val);
		} else if (strcmp(k, "baseline") == 0) {
			if (mlp_pl_get_enum(&which, c, k, val, baselines,
			                    MLP_ARRAY_SIZE(baselines)))
				g->baseline = (enum mlp_baseline)which;
			else
				baseline_bad = true;
		} else if (strcmp(k, "max_regression") == 0) {
			max_regression_key = pr->key;
			gate_max_regression(c, g, k, val);
		} else if (strcmp(k, "directions") == 0) {
			gate_directions(c, g, k, val);
		} else if (strcmp(k, "allow_empty") == 0) {
			mlp_pl_get_bool(&g->allow_empty, c, k, val);
		} else {
			mlp_pl_unknown_key(c, pr->key, keys, MLP_ARRAY_SIZE(keys), " in gate");
		}
	}
	if (g->model == NULL)
		mlp_pl_report(c, kp->key->pos, "missing 'model' in gate (the model it judges)");
	else if (g->name == NULL)
		g->name = xstrdup(g->model);
	if (g->has_max_regression && g->baseline == MLP_BASELINE_NONE && !baseline_bad)
		mlp_pl_report(c, max_regression_key->pos,
		              "'max_regression' needs a baseline to "
		              "compare with (baseline: deployed or approved)");
}

void mlp_pl_check_metrics_from(struct ctx *c)
{
	struct mlp_pipeline *p = c->p;

	for (size_t i = 0; i < p->nstages; i++) {
		struct mlp_stage *st = &p->stages[i];
		const struct stage_extra *x = &c->extra[i];
		ssize_t k;

		if (!x->has_kind || st->kind != MLP_STAGE_GATE || !x->gate_ok)
			continue;
		if (x->metrics_from != NULL && st->gate.metrics_from == NULL)
			continue; /* given, but not a string: reported */
		if (x->metrics_from == NULL) {
			if (st->nneeds == 1 && st->need_index[0] != SIZE_MAX) {
				st->gate.metrics_from = xstrdup(st->needs[0]);
				continue;
			}
			mlp_pl_report(
			        c, x->gate_key->pos,
			        "missing 'metrics_from' in gate (the stage "
			        "whose metrics it judges; needed unless the stage needs exactly "
			        "one)");
			continue;
		}
		k = mlp_pl_find_stage(c, st->gate.metrics_from);
		if (k < 0) {
			const char **names = mlp_pl_stage_names(p);
			const char *near = mlp_suggest(st->gate.metrics_from, names, p->nstages);

			if (near)
				mlp_pl_report(
				        c, x->metrics_from->pos,
				        "metrics_from '%s' is not a stage this "
				        "one needs (there is no stage '%s'; did you mean '%s'?)",
				        st->gate.metrics_from, st->gate.metrics_from, near);
			else
				mlp_pl_report(c, x->metrics_from->pos,
				              "metrics_from '%s' is not a stage this "
				              "one needs (there is no stage '%s')",
				              st->gate.metrics_from, st->gate.metrics_from);
			free(names);
		} else if (!mlp_pipeline_depends_on(p, i, (size_t)k)) {
			mlp_pl_report(c, x->metrics_from->pos,
			              "metrics_from '%s' is not a stage this one "
			              "needs",
			              st->gate.metrics_from);
		}
	}
}
