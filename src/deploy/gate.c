/*
 * gate.c - threshold and baseline decisions (see gate.h).
 *
 * Why a tolerance in the regression check: "at most 0.005 worse than 0.91"
 * is 0.905, but 0.91 - 0.005 in binary floating point is a hair above it,
 * and a user who sees "0.905 >= 0.905" fail would be right to file a bug.
 * Comparisons against a limit mlpipe computed allow 1e-12 of the
 * baseline's magnitude; thresholds a person typed are compared exactly.
 */
#include "config.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "deploy/gate.h"
#include "base/util.h"

static const char *const op_texts[] = {
        [MLP_OP_GE] = ">=",
        [MLP_OP_GT] = ">",
        [MLP_OP_LE] = "<=",
        [MLP_OP_LT] = "<",
};

const char *mlp_gate_op_text(enum mlp_gate_op op)
{
	return (size_t)op < MLP_ARRAY_SIZE(op_texts) ? op_texts[op] : "?";
}

int mlp_gate_op_parse(enum mlp_gate_op *out, const char *text)
{
	for (size_t i = 0; i < MLP_ARRAY_SIZE(op_texts); i++) {
		if (strcmp(op_texts[i], text) == 0) {
			*out = (enum mlp_gate_op)i;
			return 0;
		}
	}
	return MLP_EINVAL;
}

bool mlp_gate_op_holds(enum mlp_gate_op op, double value, double limit)
{
	switch (op) {
	case MLP_OP_GE:
		return value >= limit;
	case MLP_OP_GT:
		return value > limit;
	case MLP_OP_LE:
		return value <= limit;
	case MLP_OP_LT:
		return value < limit;
	}
	return false;
}

const char *mlp_direction_name(enum mlp_direction d)
{
	switch (d) {
	case MLP_DIRECTION_HIGHER:
		return "higher";
	case MLP_DIRECTION_LOWER:
		return "lower";
	case MLP_DIRECTION_UNKNOWN:
		break;
	}
	return "unknown";
}

static const char *const higher_words[] = {
        "accuracy", "acc", "precision", "recall", "f1", "auc", "map", "r2", "score",
};
static const char *const lower_words[] = {
        "loss", "error", "err", "mse", "rmse", "mae", "perplexity", "latency",
};

static bool word_in(const char *w, size_t len, const char *const *words, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (strlen(words[i]) == len && strncasecmp(words[i], w, len) == 0)
			return true;
	return false;
}

enum mlp_direction mlp_gate_direction(const struct mlp_kvlist *declared, const char *metric)
{
	bool higher = false, lower = false;
	const char *p = metric;

	if (declared) {
		for (size_t i = 0; i < declared->len; i++) {
			if (strcmp(declared->items[i].key, metric) != 0)
				continue;
			if (strcmp(declared->items[i].value, "higher") == 0)
				return MLP_DIRECTION_HIGHER;
			if (strcmp(declared->items[i].value, "lower") == 0)
				return MLP_DIRECTION_LOWER;
		}
	}
	while (*p) {
		size_t len = 0;

		while (*p && !isalnum((unsigned char)*p))
			p++;
		while (isalnum((unsigned char)p[len]))
			len++;
		if (len == 0)
			break;
		higher = higher || word_in(p, len, higher_words, MLP_ARRAY_SIZE(higher_words));
		lower = lower || word_in(p, len, lower_words, MLP_ARRAY_SIZE(lower_words));
		p += len;
	}
	if (higher == lower)
		return MLP_DIRECTION_UNKNOWN;
	return higher ? MLP_DIRECTION_HIGHER : MLP_DIRECTION_LOWER;
}

void mlp_gate_format_number(char *buf, size_t size, double v)
{
	snprintf(buf, size, "%.15g", v);
}

static const struct mlp_metric *find_metric(const struct mlp_metric *m, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(m[i].name, name) == 0)
			return &m[i];
	return NULL;
}

static struct mlp_gate_check *add_check(struct mlp_gate_result *r, size_t *cap,
                                        enum mlp_gate_check_kind kind, const char *metric)
{
	struct mlp_gate_check *c;

	xgrow((void **)&r->checks, cap, r->nchecks + 1, sizeof(*r->checks));
	c = &r->checks[r->nchecks++];
	memset(c, 0, sizeof(*c));
	c->kind = kind;
	c->metric = xstrdup(metric);
	c->passed = true;
	return c;
}

static void fail_check(struct mlp_gate_result *r, struct mlp_gate_check *c, char *why)
{
	c->passed = false;
	c->failure = why;
	r->passed = false;
	if (r->reason == NULL)
		r->reason = xstrdup(why);
}

/* "metric 'x' is missing from stage 'evaluate' (did you mean 'y'?)". */
static char *missing_message(const struct mlp_gate_input *in, const char *metric)
{
	const char **names = xcalloc(in->nmetrics + 1, sizeof(*names));
	const char *near;
	struct mlp_buf b = {0};

	for (size_t i = 0; i < in->nmetrics; i++)
		names[i] = in->metrics[i].name;
	near = mlp_suggest(metric, names, in->nmetrics);
	mlp_buf_printf(&b, "metric '%s' is missing from stage '%s'", metric,
	               in->metrics_from ? in->metrics_from : "?");
	if (near) {
		mlp_buf_printf(&b, " (did you mean '%s'?)", near);
	} else if (in->nmetrics == 0) {
		mlp_buf_puts(&b, " (it reported no metrics)");
	} else {
		mlp_buf_puts(&b, " (it reported ");
		for (size_t i = 0; i < in->nmetrics; i++)
			mlp_buf_printf(&b, "%s%s", i ? ", " : "", in->metrics[i].name);
		mlp_buf_puts(&b, ")");
	}
	free(names);
	return mlp_buf_detach(&b);
}

/* Checks one threshold; returns whether the metric is usable for a
 * baseline comparison (present and finite). */
static bool check_threshold(struct mlp_gate_result *r, size_t *cap, const struct mlp_gate_input *in,
                            const struct mlp_gate_rule *rule)
{
	struct mlp_gate_check *c = add_check(r, cap, MLP_CHECK_THRESHOLD, rule->metric);
	const struct mlp_metric *m = find_metric(in->metrics, in->nmetrics, rule->metric);
	char v[32], t[32];

	c->op = rule->op;
	c->threshold = rule->value;
	mlp_gate_format_number(t, sizeof(t), rule->value);
	c->text = xasprintf("%s %s", mlp_gate_op_text(rule->op), t);
	if (m == NULL) {
		fail_check(r, c, missing_message(in, rule->metric));
		return false;
	}
	c->present = true;
	c->value = m->value;
	if (!isfinite(m->value)) {
		fail_check(r, c,
		           xasprintf("metric '%s' is %s, not a finite number", rule->metric,
		                     isnan(m->value) ? "NaN" : "infinite"));
		return false;
	}
	if (!mlp_gate_op_holds(rule->op, m->value, rule->value)) {
		mlp_gate_format_number(v, sizeof(v), m->value);
		fail_check(r, c,
		           xasprintf("%s = %s does not meet %s %s", rule->metric, v,
		                     mlp_gate_op_text(rule->op), t));
	}
	return true;
}

static const char *baseline_name(enum mlp_baseline b)
{
	return b == MLP_BASELINE_APPROVED ? "approved" : "deployed";
}

static void check_regression(struct mlp_gate_result *r, size_t *cap,
                             const struct mlp_gate_input *in, const char *metric,
                             enum mlp_direction dir)
{
	const struct mlp_metric *cand = find_metric(in->metrics, in->nmetrics, metric);
	const struct mlp_metric *base =
	        find_metric(in->baseline_metrics, in->nbaseline_metrics, metric);
	struct mlp_gate_check *c = add_check(r, cap, MLP_CHECK_REGRESSION, metric);
	double max = in->has_max_regression ? in->max_regression : 0;
	double eps, worse;
	char v[32], b[32], l[32], a[32];
	bool higher = dir == MLP_DIRECTION_HIGHER;

	c->direction = dir;
	c->present = true;
	c->value = cand->value;
	if (base == NULL) {
		c->text = xasprintf("not compared: %s version %d has no '%s'",
		                    baseline_name(in->baseline), in->baseline_version, metric);
		return;
	}
	c->compared = true;
	c->baseline = base->value;
	c->allowed = in->max_regression_relative ? max * fabs(base->value) : max;
	c->limit = higher ? base->value - c->allowed : base->value + c->allowed;
	mlp_gate_format_number(b, sizeof(b), base->value);
	mlp_gate_format_number(l, sizeof(l), c->limit);
	if (in->max_regression_relative)
		snprintf(a, sizeof(a), "%.15g%%", max * 100);
	else
		mlp_gate_format_number(a, sizeof(a), max);
	c->text = xasprintf("%s %s (%s v%d %s %s %s)", higher ? ">=" : "<=", l,
	                    baseline_name(in->baseline), in->baseline_version, b,
	                    higher ? "-" : "+", a);
	eps = 1e-12 * fmax(1.0, fabs(base->value));
	worse = higher ? base->value - cand->value : cand->value - base->value;
	if (worse > c->allowed + eps) {
		char w[48];

		if (in->max_regression_relative && base->value != 0)
			snprintf(w, sizeof(w), "%.3g%%", worse / fabs(base->value) * 100);
		else
			mlp_gate_format_number(w, sizeof(w), worse);
		mlp_gate_format_number(v, sizeof(v), cand->value);
		fail_check(r, c,
		           xasprintf("%s = %s is worse than %s version %d (%s) by %s; "
		                     "max_regression is %s",
		                     metric, v, baseline_name(in->baseline), in->baseline_version,
		                     b, w, a));
	}
}

void mlp_gate_decide(struct mlp_gate_result *out, const struct mlp_gate_input *in)
{
	bool *usable = xcalloc(in->nrules + 1, sizeof(*usable));
	size_t cap = 0;

	memset(out, 0, sizeof(*out));
	out->passed = true;
	if (in->nrules == 0 && !in->allow_empty) {
		out->passed = false;
		out->reason = xasprintf("gate '%s' has no thresholds: add one with 'mlpipe gate "
		                        "set %s METRIC OP VALUE' (or require: in the pipeline), "
		                        "or say allow_empty: true",
		                        in->gate, in->gate);
		free(usable);
		return;
	}
	for (size_t i = 0; i < in->nrules; i++)
		usable[i] = check_threshold(out, &cap, in, &in->rules[i]);

	if (in->baseline != MLP_BASELINE_NONE) {
		/* Directions are checked whether or not a baseline exists yet, so a
		 * pipeline that lacks one fails on its first run, not on the day a
		 * version is first deployed. */
		for (size_t i = 0; i < in->nrules; i++) {
			const char *metric = in->rules[i].metric;
			enum mlp_direction dir = mlp_gate_direction(in->directions, metric);

			if (dir == MLP_DIRECTION_UNKNOWN) {
				struct mlp_gate_check *c =
				        add_check(out, &cap, MLP_CHECK_REGRESSION, metric);
				const struct mlp_metric *m =
				        find_metric(in->metrics, in->nmetrics, metric);

				if (m) {
					c->present = true;
					c->value = m->value;
				}
				c->text = xstrdup("baseline comparison");
				fail_check(out, c,
				           xasprintf("direction of metric '%s' is unknown: "
				                     "declare it under directions",
				                     metric));
				continue;
			}
			if (in->has_baseline && usable[i])
				check_regression(out, &cap, in, metric, dir);
		}
		if (!in->has_baseline)
			out->note = xasprintf("no baseline yet: passes on thresholds alone (no %s "
			                      "version)",
			                      baseline_name(in->baseline));
	}
	if (in->nrules == 0 && out->note == NULL)
		out->note = xstrdup("no thresholds (allow_empty: true)");
	free(usable);
}

void mlp_gate_result_clear(struct mlp_gate_result *r)
{
	for (size_t i = 0; i < r->nchecks; i++) {
		free(r->checks[i].metric);
		free(r->checks[i].text);
		free(r->checks[i].failure);
	}
	free(r->checks);
	free(r->reason);
	free(r->note);
	memset(r, 0, sizeof(*r));
}

struct mlp_json *mlp_gate_checks_json(const struct mlp_gate_result *r)
{
	struct mlp_json *arr = mlp_json_array();

	for (size_t i = 0; i < r->nchecks; i++) {
		const struct mlp_gate_check *c = &r->checks[i];
		struct mlp_json *o = mlp_json_object();

		mlp_json_add_string(o, "kind",
		                    c->kind == MLP_CHECK_THRESHOLD ? "threshold" : "regression");
		mlp_json_add_string(o, "metric", c->metric);
		if (c->present)
			mlp_json_add_number(o, "value", c->value);
		else
			mlp_json_add_null(o, "value");
		if (c->kind == MLP_CHECK_THRESHOLD) {
			mlp_json_add_string(o, "op", mlp_gate_op_text(c->op));
			mlp_json_add_number(o, "threshold", c->threshold);
		} else {
			mlp_json_add_string(o, "direction", mlp_direction_name(c->direction));
			if (c->compared) {
				mlp_json_add_number(o, "baseline", c->baseline);
				mlp_json_add_number(o, "max_regression", c->allowed);
				mlp_json_add_number(o, "limit", c->limit);
			}
		}
		mlp_json_add_string(o, "rule", c->text);
		mlp_json_add_bool(o, "passed", c->passed);
		mlp_json_add_string(o, "failure", c->failure);
		mlp_json_append(arr, o);
	}
	return arr;
}

void mlp_gate_print_table(FILE *f, const struct mlp_gate_result *r)
{
	int wm = 6, wv = 5, wr = 4;
	char v[32];

	if (r->nchecks == 0)
		return;
	for (size_t i = 0; i < r->nchecks; i++) {
		const struct mlp_gate_check *c = &r->checks[i];
		int len;

		if ((len = (int)strlen(c->metric)) > wm)
			wm = len;
		if (c->present)
			mlp_gate_format_number(v, sizeof(v), c->value);
		else
			snprintf(v, sizeof(v), "missing");
		if ((len = (int)strlen(v)) > wv)
			wv = len;
		if (c->text && (len = (int)strlen(c->text)) > wr)
			wr = len;
	}
	fprintf(f, "  %-*s  %*s  %-*s  %s\n", wm, "METRIC", wv, "VALUE", wr, "RULE", "RESULT");
	for (size_t i = 0; i < r->nchecks; i++) {
		const struct mlp_gate_check *c = &r->checks[i];

		if (c->present)
			mlp_gate_format_number(v, sizeof(v), c->value);
		else
			snprintf(v, sizeof(v), "missing");
		fprintf(f, "  %-*s  %*s  %-*s  %s\n", wm, c->metric, wv, v, wr,
		        c->text ? c->text : "", c->passed ? "pass" : "FAIL");
	}
	for (size_t i = 0; i < r->nchecks; i++)
		if (r->checks[i].failure)
			fprintf(f, "  - %s\n", r->checks[i].failure);
}
