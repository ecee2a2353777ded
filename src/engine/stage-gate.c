/*
 * stage-gate.c - `gate:` stages (see stage-gate.h).
 *
 * The engine's half: the attempt re-enters mlpipe (`mlpipe stage-gate`,
 * cmd-stage-gate.c, which calls mlp_stage_gate_exec).  The stage's half:
 * the decision against the database, in one write transaction, and its
 * report like any stage's: the decision table on stdout (the stage's log
 * and the live view), passed=, model_version= and decision= in
 * $MLPIPE_OUTPUT, the compared metrics in $MLPIPE_METRICS, the reason of a
 * fail in $MLPIPE_REASON.  How a gate judges numbers is deploy/gate.c's.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/json.h"
#include "deploy/gate.h"
#include "engine/stage-gate.h"
#include "engine/stage-io.h"
#include "engine/stagekind.h"
#include "store/store.h"
#include "store/store-models.h"
#include "store/store-runs.h"

/* Everything one decision reads and makes. */
struct mlp_stage_gate {
	struct mlp_run_info run;
	struct mlp_pipeline *pipeline;
	const struct mlp_stage *stage;
	const struct mlp_gate *gate;
	struct mlp_gate_threshold *thresholds;
	size_t nthresholds;
	struct mlp_gate_rule *rules;
	struct mlp_metric *metrics; /* of metrics_from */
	size_t nmetrics;
	bool has_version;
	struct mlp_model_version version;
	bool has_baseline;
	struct mlp_model_version baseline;
	struct mlp_gate_result result;
	char *stage_failure; /* metrics_from did not succeed */
	int64_t decision_id;
};

/* ---- the engine's half -------------------------------------------------- */

static int gate_prepare(struct mlp_strv *argv, const struct mlp_stage_ctx *ctx)
{
	return mlp_stage_reenter_argv(argv, ctx, "stage-gate");
}

const struct mlp_stage_kind_ops mlp_stage_kind_gate = {
        .kind = MLP_STAGE_GATE,
        .prepare = gate_prepare,
};

/* ---- reading what a decision needs -------------------------------------- */

void mlp_stage_gate_free(struct mlp_stage_gate *d)
{
	if (d == NULL)
		return;
	mlp_run_info_clear(&d->run);
	mlp_pipeline_free(d->pipeline);
	mlp_gate_threshold_free_all(d->thresholds, d->nthresholds);
	free(d->rules);
	mlp_metrics_free(d->metrics, d->nmetrics);
	mlp_model_version_clear(&d->version);
	mlp_model_version_clear(&d->baseline);
	mlp_gate_result_clear(&d->result);
	free(d->stage_failure);
	free(d);
}

bool mlp_stage_gate_passed(const struct mlp_stage_gate *d)
{
	return d->result.passed;
}

const char *mlp_stage_gate_reason(const struct mlp_stage_gate *d)
{
	return d->result.passed ? NULL : d->result.reason;
}

/* Reads the run and re-parses its pipeline; finds the gate stage. */
static int load_stage(struct mlp_store *s, struct mlp_stage_gate *d, int64_t run_id,
                      const char *stage)
{
	struct mlp_diags diags = {0};
	const char *path;
	ssize_t idx;
	int rc;

	if ((rc = mlp_store_run_get(&d->run, s, run_id)) != 0)
		return rc;
	path = d->run.pipeline_path ? d->run.pipeline_path : "pipeline.yml";
	rc = mlp_pipeline_parse(&d->pipeline, &diags, path, d->run.pipeline_text,
	                        strlen(d->run.pipeline_text));
	if (rc != 0) {
		if (diags.len)
			mlp_error_set("the pipeline of run %lld no longer parses: %s:%d:%d: %s",
			              (long long)run_id, diags.items[0].file,
			              diags.items[0].pos.line, diags.items[0].pos.col,
			              diags.items[0].message);
		mlp_diags_free(&diags);
		return MLP_EINVAL;
	}
	idx = mlp_pipeline_find_stage(d->pipeline, stage);
	if (idx < 0 || d->pipeline->stages[idx].kind != MLP_STAGE_GATE) {
		mlp_error_set("run %lld has no gate stage '%s'", (long long)run_id, stage);
		return MLP_ENOTFOUND;
	}
	d->stage = &d->pipeline->stages[idx];
	d->gate = &d->stage->gate;
	return 0;
}

/* Whether stage has a succeeded attempt in the run. */
static int stage_succeeded(struct mlp_store *s, bool *out, int64_t run_id, const char *stage)
{
	struct mlp_attempt_info *a = NULL;
	size_t n = 0;
	int rc;

	*out = false;
	if ((rc = mlp_store_attempts_list(&a, &n, s, run_id)) != 0)
		return rc;
	for (size_t i = 0; i < n; i++)
		if (strcmp(a[i].stage, stage) == 0 && a[i].status == MLP_STATUS_SUCCEEDED)
			*out = true;
	mlp_attempt_info_free_all(a, n);
	return 0;
}

/* The metrics the stage reported in the run, as mlp_metric. */
static int stage_metrics(struct mlp_store *s, struct mlp_stage_gate *d, const char *stage)
{
	struct mlp_stage_value *v = NULL;
	size_t n = 0, cap = 0;
	int rc;

	if ((rc = mlp_store_metrics_list(&v, &n, s, d->run.id)) != 0)
		return rc;
	for (size_t i = 0; i < n; i++) {
		if (strcmp(v[i].stage, stage) != 0)
			continue;
		xgrow((void **)&d->metrics, &cap, d->nmetrics + 1, sizeof(*d->metrics));
		d->metrics[d->nmetrics].name = xstrdup(v[i].name);
		d->metrics[d->nmetrics].value = v[i].number;
		d->nmetrics++;
	}
	mlp_stage_value_free_all(v, n);
	return 0;
}

/* ---- the decision, step by step (inside its transaction) ---------------- */

/* Seeds the thresholds require: names, then reads them all as rules. */
static int read_thresholds(struct mlp_store *s, struct mlp_stage_gate *d)
{
	const struct mlp_gate *g = d->gate;
	char *why = xasprintf("require: of pipeline '%s' (run %lld)", d->pipeline->name,
	                      (long long)d->run.id);
	int rc = 0;

	for (size_t i = 0; i < g->nrequire && rc == 0; i++)
		rc = mlp_store_gate_threshold_seed(NULL, s, g->name, g->require[i].metric,
		                                   mlp_gate_op_text(g->require[i].op),
		                                   g->require[i].value, d->run.user, why);
	free(why);
	if (rc != 0)
		return rc;
	if ((rc = mlp_store_gate_thresholds_list(&d->thresholds, &d->nthresholds, s, g->name)) != 0)
		return rc;
	d->rules = xcalloc(d->nthresholds + 1, sizeof(*d->rules));
	for (size_t i = 0; i < d->nthresholds; i++) {
		d->rules[i].metric = d->thresholds[i].metric;
		d->rules[i].value = d->thresholds[i].value;
		if (mlp_gate_op_parse(&d->rules[i].op, d->thresholds[i].op) != 0) {
			mlp_error_set("threshold %s of gate '%s' has an unknown operator '%s'",
			              d->thresholds[i].metric, g->name, d->thresholds[i].op);
			return MLP_EDB;
		}
	}
	return 0;
}

/* The version the run registered, and the baseline to compare it with. */
static int read_versions(struct mlp_store *s, struct mlp_stage_gate *d)
{
	const struct mlp_gate *g = d->gate;
	int rc;

	rc = mlp_store_model_version_of_run(&d->version, s, g->model, d->run.id);
	if (rc == 0)
		d->has_version = true;
	else if (rc != MLP_ENOTFOUND)
		return rc;
	if (g->baseline != MLP_BASELINE_NONE) {
		rc = mlp_store_model_version_with_status(&d->baseline, s, g->model,
		                                         g->baseline == MLP_BASELINE_DEPLOYED
		                                                 ? MLP_MODEL_DEPLOYED
		                                                 : MLP_MODEL_APPROVED,
		                                         d->has_version ? d->version.id : 0);
		if (rc == 0)
			d->has_baseline = true;
		else if (rc != MLP_ENOTFOUND)
			return rc;
	}
	return 0;
}

/* Compares (mlp_gate_decide); no metrics to judge is a fail. */
static int judge(struct mlp_store *s, struct mlp_stage_gate *d)
{
	const struct mlp_gate *g = d->gate;
	bool ok;
	int rc;

	if ((rc = stage_succeeded(s, &ok, d->run.id, g->metrics_from)) != 0)
		return rc;
	if (!ok) {
		d->stage_failure = xasprintf("stage '%s' (metrics_from) did not succeed in run "
		                             "%lld: there are no metrics to judge",
		                             g->metrics_from, (long long)d->run.id);
		memset(&d->result, 0, sizeof(d->result));
		d->result.passed = false;
		d->result.reason = xstrdup(d->stage_failure);
		return 0;
	}
	{
		struct mlp_gate_input in = {
		        .gate = g->name,
		        .metrics_from = g->metrics_from,
		        .rules = d->rules,
		        .nrules = d->nthresholds,
		        .allow_empty = g->allow_empty,
		        .directions = &g->directions,
		        .baseline = g->baseline,
		        .has_baseline = d->has_baseline,
		        .baseline_version = d->baseline.version,
		        .baseline_metrics = d->baseline.metrics,
		        .nbaseline_metrics = d->baseline.nmetrics,
		        .has_max_regression = g->has_max_regression,
		        .max_regression = g->max_regression,
		        .max_regression_relative = g->max_regression_relative,
		};

		if ((rc = stage_metrics(s, d, g->metrics_from)) != 0)
			return rc;
		in.metrics = d->metrics;
		in.nmetrics = d->nmetrics;
		mlp_gate_decide(&d->result, &in);
	}
	return 0;
}

/* What the decision used and found, as the JSON of its detail column. */
static char *detail_json(const struct mlp_stage_gate *d)
{
	const struct mlp_gate *g = d->gate;
	struct mlp_json *o = mlp_json_object(), *arr = mlp_json_array();
	struct mlp_json *m = mlp_json_object(), *b = mlp_json_object();
	char *text;

	mlp_json_add_string(o, "gate", g->name);
	mlp_json_add_string(o, "model", g->model);
	if (d->has_version)
		mlp_json_add_int(o, "version", d->version.version);
	else
		mlp_json_add_null(o, "version");
	mlp_json_add_string(o, "metrics_from", g->metrics_from);
	for (size_t i = 0; i < d->nmetrics; i++)
		mlp_json_add_number(m, d->metrics[i].name, d->metrics[i].value);
	mlp_json_add(o, "metrics", m);
	for (size_t i = 0; i < d->nthresholds; i++) {
		struct mlp_json *t = mlp_json_object();

		mlp_json_add_string(t, "metric", d->thresholds[i].metric);
		mlp_json_add_string(t, "op", d->thresholds[i].op);
		mlp_json_add_number(t, "value", d->thresholds[i].value);
		mlp_json_add_string(t, "updated_by", d->thresholds[i].updated_by);
		mlp_json_append(arr, t);
	}
	mlp_json_add(o, "thresholds", arr);
	mlp_json_add_string(b, "kind",
	                    g->baseline == MLP_BASELINE_DEPLOYED   ? "deployed"
	                    : g->baseline == MLP_BASELINE_APPROVED ? "approved"
	                                                           : "none");
	if (d->has_baseline)
		mlp_json_add_int(b, "version", d->baseline.version);
	else
		mlp_json_add_null(b, "version");
	if (g->baseline != MLP_BASELINE_NONE) {
		mlp_json_add_number(b, "max_regression",
		                    g->has_max_regression ? g->max_regression : 0);
		mlp_json_add_bool(b, "relative", g->max_regression_relative);
	}
	mlp_json_add(o, "baseline", b);
	mlp_json_add(o, "checks", mlp_gate_checks_json(&d->result));
	mlp_json_add_bool(o, "passed", d->result.passed);
	mlp_json_add_string(o, "reason", d->result.reason);
	mlp_json_add_string(o, "note", d->result.note);
	text = mlp_json_print(o, false);
	mlp_json_free(o);
	return text;
}

/* Records the decision; the version gets the judged metrics and its new
 * status. */
static int record(struct mlp_store *s, struct mlp_stage_gate *d)
{
	const struct mlp_gate *g = d->gate;
	char *detail = detail_json(d), *why;
	struct mlp_gate_decision rec = {
	        .run_id = d->run.id,
	        .stage = d->stage->name,
	        .gate = g->name,
	        .model_version_id = d->has_version ? d->version.id : 0,
	        .passed = d->result.passed,
	        .baseline_version_id = d->has_baseline ? d->baseline.id : 0,
	        .reason = d->result.passed ? d->result.note : d->result.reason,
	        .detail = detail,
	};
	int rc = mlp_store_gate_decision_record(&d->decision_id, s, &rec);

	free(detail);
	if (rc != 0 || !d->has_version)
		return rc;
	/* The metrics the gate judged become the version's: they are what a
	 * later gate compares with when this version is its baseline. */
	if (d->nmetrics && (rc = mlp_store_model_metrics_put(s, d->version.id, g->metrics_from,
	                                                     d->metrics, d->nmetrics)) != 0)
		return rc;
	if (d->result.passed)
		why = xasprintf("gate '%s' passed (run %lld)", g->name, (long long)d->run.id);
	else
		why = xasprintf("gate '%s' failed (run %lld): %s", g->name, (long long)d->run.id,
		                d->result.reason);
	rc = mlp_store_model_set_status(s, d->version.id,
	                                d->result.passed ? MLP_MODEL_APPROVED : MLP_MODEL_REJECTED,
	                                d->run.user, why);
	free(why);
	return rc;
}

int mlp_stage_gate_decide(struct mlp_stage_gate **out, struct mlp_store *s, int64_t run_id,
                          const char *stage)
{
	struct mlp_stage_gate *d = xcalloc(1, sizeof(*d));
	int rc;

	*out = NULL;
	if ((rc = load_stage(s, d, run_id, stage)) != 0)
		goto fail;
	if ((rc = mlp_store_begin(s)) != 0)
		goto fail;
	if ((rc = read_thresholds(s, d)) != 0 || (rc = read_versions(s, d)) != 0 ||
	    (rc = judge(s, d)) != 0 || (rc = record(s, d)) != 0) {
		mlp_store_rollback(s);
		goto fail;
	}
	if ((rc = mlp_store_commit(s)) != 0)
		goto fail;
	*out = d;
	return 0;
fail:
	mlp_stage_gate_free(d);
	return rc;
}

/* ---- reporting like a stage --------------------------------------------- */

static void print_decision(const struct mlp_stage_gate *d)
{
	const struct mlp_gate *g = d->gate;
	const char *kind = g->baseline == MLP_BASELINE_APPROVED ? "approved" : "deployed";

	if (d->has_version)
		printf("gate '%s': model %s version %d, metrics of stage '%s'\n", g->name, g->model,
		       d->version.version, g->metrics_from);
	else
		printf("gate '%s': run %lld registered no version of model '%s'; judging the "
		       "metrics of stage '%s' alone\n",
		       g->name, (long long)d->run.id, g->model, g->metrics_from);
	/* Without one, the note says so. */
	if (d->has_baseline)
		printf("baseline: %s version %d\n", kind, d->baseline.version);
	mlp_gate_print_table(stdout, &d->result);
	if (d->result.note)
		printf("note: %s\n", d->result.note);
	if (d->result.passed)
		printf("decision: PASS");
	else
		printf("decision: FAIL: %s", d->result.reason);
	if (d->has_version)
		printf(" (%s version %d %s)\n", g->model, d->version.version,
		       d->result.passed ? "approved" : "rejected");
	else
		printf("\n");
	fflush(stdout);
}

/* passed= and model_version= for later stages; the compared metrics. */
static int write_results(const struct mlp_stage_gate *d)
{
	struct mlp_buf b = {0};
	struct mlp_json *o;
	char *text;
	int rc;

	mlp_buf_printf(&b, "passed=%s\n", d->result.passed ? "true" : "false");
	if (d->has_version)
		mlp_buf_printf(&b, "model_version=%d\n", d->version.version);
	mlp_buf_printf(&b, "decision=%lld\n", (long long)d->decision_id);
	rc = mlp_stage_io_write(MLP_STAGE_ENV_OUTPUT, b.data, b.len);
	mlp_buf_free(&b);
	if (rc != 0)
		return rc;
	o = mlp_json_object();
	for (size_t i = 0; i < d->result.nchecks; i++) {
		const struct mlp_gate_check *c = &d->result.checks[i];

		if (c->kind == MLP_CHECK_THRESHOLD && c->present)
			mlp_json_add_number(o, c->metric, c->value);
	}
	text = mlp_json_print(o, false);
	mlp_json_free(o);
	rc = mlp_stage_io_write(MLP_STAGE_ENV_METRICS, text, strlen(text));
	free(text);
	return rc;
}

int mlp_stage_gate_exec(bool *out_passed, const char *db, int64_t run_id, const char *stage)
{
	struct mlp_stage_gate *d = NULL;
	struct mlp_store *s = NULL;
	int rc;

	*out_passed = false;
	if ((rc = mlp_store_open(&s, db, 0)) != 0 ||
	    (rc = mlp_stage_gate_decide(&d, s, run_id, stage)) != 0)
		goto done;
	print_decision(d);
	if ((rc = write_results(d)) != 0)
		goto done;
	*out_passed = d->result.passed;
	if (!d->result.passed) {
		/* The engine shows this as the stage's failure. */
		mlp_stage_io_write(MLP_STAGE_ENV_REASON, d->result.reason,
		                   strlen(d->result.reason));
		fprintf(stderr, "gate '%s' failed: %s\n", d->gate->name, d->result.reason);
	}
done:
	mlp_stage_gate_free(d);
	mlp_store_close(s);
	return rc;
}
