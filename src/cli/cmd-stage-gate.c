/*
 * cmd-stage-gate.c - `mlpipe stage-gate`: the process of a `gate:` stage.
 *
 * Internal: the engine starts it (stage-gate.c, gate_prepare) with the
 * database, the run and the stage.  It reads the run's pipeline text from
 * the database (the file may have changed since the run started), finds
 * the gate's settings, and decides in ONE write transaction: seed the
 * thresholds require: names that the database never had, read the
 * thresholds, read the metrics, compare, record the decision, set the
 * model version's status.  So the thresholds a decision used are exactly
 * the ones in the database when it was recorded, whatever an operator
 * runs at the same time.
 *
 * It talks back like any stage: the decision table on stdout (the stage's
 * log and the live view), passed= and model_version= in $MLPIPE_OUTPUT,
 * the compared metrics in $MLPIPE_METRICS, exit 0 on a pass and 1 on a
 * fail (with a one-line reason on stderr), 2 when it could not decide.
 */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cmd.h"
#include "base/error.h"
#include "deploy/gate.h"
#include "base/json.h"
#include "pipeline/pipeline.h"
#include "store/store.h"
#include "base/util.h"

/* Everything one decision reads and makes; cleared by decision_clear. */
struct decision {
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

static void decision_clear(struct decision *d)
{
	mlp_run_info_clear(&d->run);
	mlp_pipeline_free(d->pipeline);
	mlp_gate_threshold_free_all(d->thresholds, d->nthresholds);
	free(d->rules);
	mlp_metrics_free(d->metrics, d->nmetrics);
	mlp_model_version_clear(&d->version);
	mlp_model_version_clear(&d->baseline);
	mlp_gate_result_clear(&d->result);
	free(d->stage_failure);
}

/* Reads the run and re-parses its pipeline; finds the gate stage. */
static int load_stage(struct mlp_store *s, struct decision *d, int64_t run_id, const char *stage)
{
	struct mlp_diags diags = {0};
	const char *path;
	ssize_t idx;
	int rc;

	if ((rc = mlp_store_run_get(s, &d->run, run_id)) != 0)
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
	if ((rc = mlp_store_attempts_list(s, &a, &n, run_id)) != 0)
		return rc;
	for (size_t i = 0; i < n; i++)
		if (strcmp(a[i].stage, stage) == 0 && a[i].status == MLP_STATUS_SUCCEEDED)
			*out = true;
	mlp_attempt_info_free_all(a, n);
	return 0;
}

/* The metrics the stage reported in the run, as mlp_metric. */
static int stage_metrics(struct mlp_store *s, struct decision *d, const char *stage)
{
	struct mlp_stage_value *v = NULL;
	size_t n = 0, cap = 0;
	int rc;

	if ((rc = mlp_store_metrics_list(s, &v, &n, d->run.id)) != 0)
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

static char *detail_json(const struct decision *d)
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

/*
 * The decision, in one write transaction (see the top of the file).
 * Returns 0 when a decision was recorded (passed or not).
 */
static int decide(struct mlp_store *s, struct decision *d)
{
	const struct mlp_gate *g = d->gate;
	const char *user = d->run.user;
	bool ok;
	char *why = NULL, *detail = NULL;
	int rc;

	if ((rc = mlp_store_begin(s)) != 0)
		return rc;
	why = xasprintf("require: of pipeline '%s' (run %lld)", d->pipeline->name,
	                (long long)d->run.id);
	for (size_t i = 0; i < g->nrequire && rc == 0; i++)
		rc = mlp_store_gate_threshold_seed(s, NULL, g->name, g->require[i].metric,
		                                   mlp_gate_op_text(g->require[i].op),
		                                   g->require[i].value, user, why);
	free(why);
	why = NULL;
	if (rc != 0)
		goto fail;
	if ((rc = mlp_store_gate_thresholds_list(s, &d->thresholds, &d->nthresholds, g->name)) != 0)
		goto fail;
	d->rules = xcalloc(d->nthresholds + 1, sizeof(*d->rules));
	for (size_t i = 0; i < d->nthresholds; i++) {
		d->rules[i].metric = d->thresholds[i].metric;
		d->rules[i].value = d->thresholds[i].value;
		if (mlp_gate_op_parse(&d->rules[i].op, d->thresholds[i].op) != 0) {
			mlp_error_set("threshold %s of gate '%s' has an unknown operator '%s'",
			              d->thresholds[i].metric, g->name, d->thresholds[i].op);
			rc = MLP_EDB;
			goto fail;
		}
	}

	rc = mlp_store_model_version_of_run(s, &d->version, g->model, d->run.id);
	if (rc == 0)
		d->has_version = true;
	else if (rc != MLP_ENOTFOUND)
		goto fail;
	if (g->baseline != MLP_BASELINE_NONE) {
		rc = mlp_store_model_version_with_status(s, &d->baseline, g->model,
		                                         g->baseline == MLP_BASELINE_DEPLOYED
		                                                 ? MLP_MODEL_DEPLOYED
		                                                 : MLP_MODEL_APPROVED,
		                                         d->has_version ? d->version.id : 0);
		if (rc == 0)
			d->has_baseline = true;
		else if (rc != MLP_ENOTFOUND)
			goto fail;
	}

	if ((rc = stage_succeeded(s, &ok, d->run.id, g->metrics_from)) != 0)
		goto fail;
	if (!ok) {
		d->stage_failure = xasprintf("stage '%s' (metrics_from) did not succeed in run "
		                             "%lld: there are no metrics to judge",
		                             g->metrics_from, (long long)d->run.id);
		memset(&d->result, 0, sizeof(d->result));
		d->result.passed = false;
		d->result.reason = xstrdup(d->stage_failure);
	} else {
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
			goto fail;
		in.metrics = d->metrics;
		in.nmetrics = d->nmetrics;
		mlp_gate_decide(&d->result, &in);
	}

	detail = detail_json(d);
	{
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

		rc = mlp_store_gate_decision_record(s, &d->decision_id, &rec);
	}
	free(detail);
	if (rc != 0)
		goto fail;
	if (d->has_version) {
		/* The metrics the gate judged become the version's: they are what a
		 * later gate compares with when this version is its baseline. */
		if (d->nmetrics &&
		    (rc = mlp_store_model_metrics_put(s, d->version.id, g->metrics_from, d->metrics,
		                                      d->nmetrics)) != 0)
			goto fail;
		if (d->result.passed)
			why = xasprintf("gate '%s' passed (run %lld)", g->name,
			                (long long)d->run.id);
		else
			why = xasprintf("gate '%s' failed (run %lld): %s", g->name,
			                (long long)d->run.id, d->result.reason);
		rc = mlp_store_model_set_status(
		        s, d->version.id,
		        d->result.passed ? MLP_MODEL_APPROVED : MLP_MODEL_REJECTED, user, why);
		free(why);
		if (rc != 0)
			goto fail;
	}
	return mlp_store_commit(s);
fail:
	mlp_store_rollback(s);
	return rc;
}

static void print_decision(const struct decision *d)
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
static int write_results(const struct decision *d)
{
	const char *out = getenv("MLPIPE_OUTPUT"), *met = getenv("MLPIPE_METRICS");
	int rc = 0;

	if (out && *out) {
		struct mlp_buf b = {0};

		mlp_buf_printf(&b, "passed=%s\n", d->result.passed ? "true" : "false");
		if (d->has_version)
			mlp_buf_printf(&b, "model_version=%d\n", d->version.version);
		mlp_buf_printf(&b, "decision=%lld\n", (long long)d->decision_id);
		rc = mlp_write_file_atomic(out, b.data, b.len, 0644);
		mlp_buf_free(&b);
	}
	if (rc == 0 && met && *met) {
		struct mlp_json *o = mlp_json_object();
		char *text;

		for (size_t i = 0; i < d->result.nchecks; i++) {
			const struct mlp_gate_check *c = &d->result.checks[i];

			if (c->kind == MLP_CHECK_THRESHOLD && c->present)
				mlp_json_add_number(o, c->metric, c->value);
		}
		text = mlp_json_print(o, false);
		mlp_json_free(o);
		rc = mlp_write_file_atomic(met, text, strlen(text), 0644);
		free(text);
	}
	return rc;
}

static int stage_gate_exec(int argc, char **argv)
{
	static const struct option opts[] = {
	        {"db", required_argument, NULL, 'd'},
	        {"run", required_argument, NULL, 'r'},
	        {"stage", required_argument, NULL, 's'},
	        {"help", no_argument, NULL, 'h'},
	        {NULL, 0, NULL, 0},
	};
	struct decision d = {0};
	struct mlp_store *s = NULL;
	const char *db = NULL, *stage = NULL;
	long long run = 0;
	int c, status = MLP_EXIT_USAGE;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'd':
			db = optarg;
			break;
		case 'r':
			if (mlp_parse_int(&run, optarg, 1, INT64_MAX) != 0)
				return mlp_cmd_usage_error(&mlp_cmd_stage_gate,
				                           "'%s' is not a run id", optarg);
			break;
		case 's':
			stage = optarg;
			break;
		case 'h':
			mlp_cmd_print_help(&mlp_cmd_stage_gate, stdout);
			return MLP_EXIT_OK;
		default:
			return mlp_cmd_usage_error(&mlp_cmd_stage_gate, "unknown option");
		}
	}
	if (optind < argc)
		return mlp_cmd_usage_error(&mlp_cmd_stage_gate, "unexpected argument '%s'",
		                           argv[optind]);
	if (run == 0 || stage == NULL)
		return mlp_cmd_usage_error(&mlp_cmd_stage_gate, "--run and --stage are required");
	if (mlp_store_open(&s, db, 0) != 0 || load_stage(s, &d, run, stage) != 0 ||
	    decide(s, &d) != 0) {
		mlp_cmd_error("%s", mlp_error_last());
		goto done;
	}
	print_decision(&d);
	if (write_results(&d) != 0) {
		mlp_cmd_error("%s", mlp_error_last());
		goto done;
	}
	if (d.result.passed) {
		status = MLP_EXIT_OK;
	} else {
		const char *why = getenv("MLPIPE_REASON");

		/* The engine shows this as the stage's failure. */
		if (why && *why)
			mlp_write_file_atomic(why, d.result.reason, strlen(d.result.reason), 0644);
		fprintf(stderr, "gate '%s' failed: %s\n", d.gate->name, d.result.reason);
		status = MLP_EXIT_FAILED;
	}
done:
	decision_clear(&d);
	mlp_store_close(s);
	return status;
}

const struct mlp_cmd mlp_cmd_stage_gate = {
        .name = "stage-gate",
        .args = "--db PATH --run ID --stage NAME",
        .summary = "(internal) The process of a gate: stage; `mlpipe run` starts it.",
        .help = "Decides one gate stage of a recorded run: seeds the thresholds its\n"
                "require: names that the database never had, checks the metrics of its\n"
                "metrics_from stage against every threshold (and its baseline), records\n"
                "the decision and sets the model version's status, in one transaction.\n"
                "See docs/gates.md.\n\n"
                "Exit code: 0 the gate passed, 1 it failed, 2 it could not decide.\n",
        .exec = stage_gate_exec,
};
