/*
 * test-gate.c - gates and the model registry: the decision rules of
 * gate.c as pure functions, the registry, artifacts and thresholds of
 * store-models.c and store-gates.c on a real SQLite file, a gate stage's decision
 * (stage-gate.c) as a function on that file, and `mlpipe stage-gate`
 * deciding a recorded run end to end (in a child process, on that same
 * file).
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/cmd.h"
#include "base/error.h"
#include "deploy/gate.h"
#include "base/json.h"
#include "engine/stage-gate.h"
#include "store/store.h"
#include "store/store-models.h"
#include "store/store-runs.h"
#include "base/util.h"

struct fixture {
	char dir[64];
	char *db;
	struct mlp_store *s;
};

static int setup(void **state)
{
	struct fixture *f = xcalloc(1, sizeof(*f));

	snprintf(f->dir, sizeof(f->dir), "/tmp/mlpipe-gate-XXXXXX");
	if (mkdtemp(f->dir) == NULL)
		return -1;
	f->db = xasprintf("%s/data/mlpipe.db", f->dir);
	if (mlp_store_open(&f->s, f->db, 0) != 0)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char *cmd = xasprintf("chmod -R u+w '%s' && rm -rf '%s'", f->dir, f->dir);

	mlp_store_close(f->s);
	if (system(cmd) != 0)
		return -1;
	free(cmd);
	free(f->db);
	free(f);
	return 0;
}

/* ---- decision rules (gate.c) -------------------------------------------- */

#define M(n, v)                  \
	{                        \
		(char *)(n), (v) \
	}

static void test_gate__thresholds_pass_and_fail_at_the_boundary(void **state)
{
	struct mlp_metric m[] = {M("accuracy", 0.85), M("loss", 0.3)};
	struct mlp_gate_rule rules[] = {
	        {"accuracy", MLP_OP_GE, 0.85},
	        {"loss", MLP_OP_LT, 0.3},
	};
	struct mlp_gate_input in = {
	        .gate = "fashion",
	        .metrics_from = "evaluate",
	        .rules = rules,
	        .nrules = 2,
	        .metrics = m,
	        .nmetrics = 2,
	};
	struct mlp_gate_result r;

	(void)state;
	mlp_gate_decide(&r, &in);
	assert_false(r.passed);
	assert_int_equal(r.nchecks, 2);
	assert_true(r.checks[0].passed);  /* 0.85 >= 0.85 */
	assert_false(r.checks[1].passed); /* 0.3 < 0.3 is false */
	assert_string_equal(r.reason, "loss = 0.3 does not meet < 0.3");
	mlp_gate_result_clear(&r);

	rules[1].op = MLP_OP_LE;
	mlp_gate_decide(&r, &in);
	assert_true(r.passed);
	assert_null(r.reason);
	assert_null(r.note);
	mlp_gate_result_clear(&r);

	assert_true(mlp_gate_op_holds(MLP_OP_GT, 0.9, 0.85));
	assert_false(mlp_gate_op_holds(MLP_OP_GT, 0.85, 0.85));
	assert_false(mlp_gate_op_holds(MLP_OP_GE, NAN, 0.85));
	assert_false(mlp_gate_op_holds(MLP_OP_LE, NAN, 0.85));
}

static void test_gate__missing_metric_fails_and_suggests_the_near_one(void **state)
{
	struct mlp_metric m[] = {M("accuracy", 0.95), M("loss", 0.1)};
	struct mlp_gate_rule rules[] = {{"acuracy", MLP_OP_GE, 0.85}};
	struct mlp_gate_input in = {
	        .gate = "fashion",
	        .metrics_from = "evaluate",
	        .rules = rules,
	        .nrules = 1,
	        .metrics = m,
	        .nmetrics = 2,
	};
	struct mlp_gate_result r;

	(void)state;
	mlp_gate_decide(&r, &in);
	assert_false(r.passed);
	assert_string_equal(r.reason, "metric 'acuracy' is missing from stage 'evaluate' "
	                              "(did you mean 'accuracy'?)");
	assert_false(r.checks[0].present);
	mlp_gate_result_clear(&r);

	/* Nothing near: say what there is. */
	rules[0].metric = "f1";
	mlp_gate_decide(&r, &in);
	assert_false(r.passed);
	assert_string_equal(r.reason, "metric 'f1' is missing from stage 'evaluate' "
	                              "(it reported accuracy, loss)");
	mlp_gate_result_clear(&r);

	in.nmetrics = 0;
	mlp_gate_decide(&r, &in);
	assert_string_equal(r.reason, "metric 'f1' is missing from stage 'evaluate' "
	                              "(it reported no metrics)");
	mlp_gate_result_clear(&r);
}

static void test_gate__nan_and_infinity_fail(void **state)
{
	struct mlp_metric m[] = {M("loss", NAN), M("accuracy", INFINITY)};
	struct mlp_gate_rule rules[] = {
	        {"loss", MLP_OP_LE, 1e9},
	        {"accuracy", MLP_OP_GE, 0.5},
	};
	struct mlp_gate_input in = {
	        .gate = "g",
	        .metrics_from = "evaluate",
	        .rules = rules,
	        .nrules = 2,
	        .metrics = m,
	        .nmetrics = 2,
	        /* A baseline must not turn a non-finite value into a pass either. */
	        .baseline = MLP_BASELINE_APPROVED,
	        .has_baseline = true,
	        .baseline_version = 1,
	        .baseline_metrics = m,
	        .nbaseline_metrics = 2,
	};
	struct mlp_gate_result r;
	struct mlp_json *j;
	char *text;

	(void)state;
	mlp_gate_decide(&r, &in);
	assert_false(r.passed);
	assert_string_equal(r.reason, "metric 'loss' is NaN, not a finite number");
	assert_false(r.checks[1].passed);
	assert_string_equal(r.checks[1].failure, "metric 'accuracy' is infinite, not a "
	                                         "finite number");
	/* No regression check is made of a value that is not a number. */
	assert_int_equal(r.nchecks, 2);
	/* And the record holds null, not an invalid JSON token. */
	j = mlp_gate_checks_json(&r);
	text = mlp_json_print(j, false);
	assert_non_null(strstr(text, "\"metric\":\"loss\",\"value\":null"));
	free(text);
	mlp_json_free(j);
	mlp_gate_result_clear(&r);
}

static void test_gate__no_thresholds_is_refused_unless_allowed(void **state)
{
	struct mlp_metric m[] = {M("accuracy", 0.9)};
	struct mlp_gate_input in = {
	        .gate = "fashion",
	        .metrics_from = "evaluate",
	        .metrics = m,
	        .nmetrics = 1,
	};
	struct mlp_gate_result r;

	(void)state;
	mlp_gate_decide(&r, &in);
	assert_false(r.passed);
	assert_string_equal(r.reason, "gate 'fashion' has no thresholds: add one with "
	                              "'mlpipe gate set fashion METRIC OP VALUE' (or require: "
	                              "in the pipeline), or say allow_empty: true");
	mlp_gate_result_clear(&r);

	in.allow_empty = true;
	mlp_gate_decide(&r, &in);
	assert_true(r.passed);
	assert_string_equal(r.note, "no thresholds (allow_empty: true)");
	mlp_gate_result_clear(&r);
}

static void test_gate__no_baseline_yet_passes_on_thresholds_alone(void **state)
{
	struct mlp_metric m[] = {M("accuracy", 0.9)};
	struct mlp_gate_rule rules[] = {{"accuracy", MLP_OP_GE, 0.85}};
	struct mlp_gate_input in = {
	        .gate = "fashion",
	        .metrics_from = "evaluate",
	        .rules = rules,
	        .nrules = 1,
	        .metrics = m,
	        .nmetrics = 1,
	        .baseline = MLP_BASELINE_DEPLOYED,
	        .has_max_regression = true,
	        .max_regression = 0.005,
	};
	struct mlp_gate_result r;

	(void)state;
	mlp_gate_decide(&r, &in);
	assert_true(r.passed);
	assert_string_equal(r.note, "no baseline yet: passes on thresholds alone (no deployed "
	                            "version)");
	assert_int_equal(r.nchecks, 1);
	mlp_gate_result_clear(&r);

	/* ... but the thresholds still decide. */
	m[0].value = 0.8;
	mlp_gate_decide(&r, &in);
	assert_false(r.passed);
	mlp_gate_result_clear(&r);
}

static void test_gate__max_regression_absolute_and_relative(void **state)
{
	struct mlp_metric cand[] = {M("accuracy", 0.905), M("loss", 0.32)};
	struct mlp_metric base[] = {M("accuracy", 0.91), M("loss", 0.30)};
	struct mlp_gate_rule rules[] = {
	        {"accuracy", MLP_OP_GE, 0.8},
	        {"loss", MLP_OP_LE, 1.0},
	};
	struct mlp_gate_input in = {
	        .gate = "fashion",
	        .metrics_from = "evaluate",
	        .rules = rules,
	        .nrules = 2,
	        .metrics = cand,
	        .nmetrics = 2,
	        .baseline = MLP_BASELINE_DEPLOYED,
	        .has_baseline = true,
	        .baseline_version = 2,
	        .baseline_metrics = base,
	        .nbaseline_metrics = 2,
	        .has_max_regression = true,
	        .max_regression = 0.005,
	};
	struct mlp_gate_result r;

	(void)state;
	/* accuracy: exactly 0.005 worse (in floating point a hair more): passes;
	 * loss: lower is better, 0.02 worse: fails. */
	mlp_gate_decide(&r, &in);
	assert_int_equal(r.nchecks, 4);
	assert_int_equal(r.checks[2].kind, MLP_CHECK_REGRESSION);
	assert_int_equal(r.checks[2].direction, MLP_DIRECTION_HIGHER);
	assert_true(r.checks[2].passed);
	assert_string_equal(r.checks[2].text, ">= 0.905 (deployed v2 0.91 - 0.005)");
	assert_int_equal(r.checks[3].direction, MLP_DIRECTION_LOWER);
	assert_false(r.checks[3].passed);
	assert_string_equal(r.checks[3].text, "<= 0.305 (deployed v2 0.3 + 0.005)");
	assert_false(r.passed);
	assert_string_equal(r.reason, "loss = 0.32 is worse than deployed version 2 (0.3) by "
	                              "0.02; max_regression is 0.005");
	mlp_gate_result_clear(&r);

	/* Relative: 10% of 0.3 is 0.03, so loss 0.32 passes; accuracy 0.905 is
	 * 0.55% below 0.91, within 10%. */
	in.max_regression = 0.10;
	in.max_regression_relative = true;
	mlp_gate_decide(&r, &in);
	assert_true(r.passed);
	assert_string_equal(r.checks[3].text, "<= 0.33 (deployed v2 0.3 + 10%)");
	mlp_gate_result_clear(&r);

	/* 0.5% relative: accuracy 0.905 is 0.549% worse: fails. */
	in.max_regression = 0.005;
	mlp_gate_decide(&r, &in);
	assert_false(r.passed);
	assert_string_equal(r.reason, "accuracy = 0.905 is worse than deployed version 2 (0.91) "
	                              "by 0.549%; max_regression is 0.5%");
	mlp_gate_result_clear(&r);

	/* A baseline without max_regression: never worse at all. */
	in.has_max_regression = false;
	in.max_regression_relative = false;
	cand[0].value = 0.91;
	cand[1].value = 0.29;
	mlp_gate_decide(&r, &in);
	assert_true(r.passed);
	cand[0].value = 0.9099;
	mlp_gate_result_clear(&r);
	mlp_gate_decide(&r, &in);
	assert_false(r.passed);
	mlp_gate_result_clear(&r);
}

static void test_gate__baseline_without_the_metric_is_not_compared(void **state)
{
	struct mlp_metric cand[] = {M("accuracy", 0.5)};
	struct mlp_metric base[] = {M("loss", 0.3)};
	struct mlp_gate_rule rules[] = {{"accuracy", MLP_OP_GE, 0.4}};
	struct mlp_gate_input in = {
	        .gate = "g",
	        .metrics_from = "evaluate",
	        .rules = rules,
	        .nrules = 1,
	        .metrics = cand,
	        .nmetrics = 1,
	        .baseline = MLP_BASELINE_APPROVED,
	        .has_baseline = true,
	        .baseline_version = 4,
	        .baseline_metrics = base,
	        .nbaseline_metrics = 1,
	};
	struct mlp_gate_result r;

	(void)state;
	mlp_gate_decide(&r, &in);
	assert_true(r.passed);
	assert_int_equal(r.nchecks, 2);
	assert_false(r.checks[1].compared);
	assert_string_equal(r.checks[1].text, "not compared: approved version 4 has no "
	                                      "'accuracy'");
	mlp_gate_result_clear(&r);
}

static void test_gate__directions(void **state)
{
	struct mlp_kvlist declared = {0};
	struct mlp_metric cand[] = {M("throughput", 90)};
	struct mlp_metric base[] = {M("throughput", 100)};
	struct mlp_gate_rule rules[] = {{"throughput", MLP_OP_GE, 10}};
	struct mlp_gate_input in = {
	        .gate = "g",
	        .metrics_from = "bench",
	        .rules = rules,
	        .nrules = 1,
	        .metrics = cand,
	        .nmetrics = 1,
	        .baseline = MLP_BASELINE_DEPLOYED,
	        .has_baseline = false,
	        .directions = &declared,
	};
	struct mlp_gate_result r;

	(void)state;
	assert_int_equal(mlp_gate_direction(NULL, "accuracy"), MLP_DIRECTION_HIGHER);
	assert_int_equal(mlp_gate_direction(NULL, "val_acc"), MLP_DIRECTION_HIGHER);
	assert_int_equal(mlp_gate_direction(NULL, "F1-macro"), MLP_DIRECTION_HIGHER);
	assert_int_equal(mlp_gate_direction(NULL, "mAP"), MLP_DIRECTION_HIGHER);
	assert_int_equal(mlp_gate_direction(NULL, "eval_loss"), MLP_DIRECTION_LOWER);
	assert_int_equal(mlp_gate_direction(NULL, "test.rmse"), MLP_DIRECTION_LOWER);
	assert_int_equal(mlp_gate_direction(NULL, "latency_p99_ms"), MLP_DIRECTION_LOWER);
	assert_int_equal(mlp_gate_direction(NULL, "perplexity"), MLP_DIRECTION_LOWER);
	/* Whole words only; both kinds or neither is unknown. */
	assert_int_equal(mlp_gate_direction(NULL, "heatmap"), MLP_DIRECTION_UNKNOWN);
	assert_int_equal(mlp_gate_direction(NULL, "error_score"), MLP_DIRECTION_UNKNOWN);
	assert_int_equal(mlp_gate_direction(NULL, "throughput"), MLP_DIRECTION_UNKNOWN);

	/* Unknown with a baseline configured fails even before a baseline
	 * exists, with the message that says what to do. */
	mlp_gate_decide(&r, &in);
	assert_false(r.passed);
	assert_string_equal(r.reason, "direction of metric 'throughput' is unknown: declare it "
	                              "under directions");
	mlp_gate_result_clear(&r);

	/* Declared, it is compared: 90 is 10 worse than 100 (higher is better). */
	mlp_kvlist_set(&declared, "throughput", "higher");
	assert_int_equal(mlp_gate_direction(&declared, "throughput"), MLP_DIRECTION_HIGHER);
	in.has_baseline = true;
	in.baseline_version = 1;
	in.baseline_metrics = base;
	in.nbaseline_metrics = 1;
	mlp_gate_decide(&r, &in);
	assert_false(r.passed);
	assert_string_equal(r.reason, "throughput = 90 is worse than deployed version 1 (100) "
	                              "by 10; max_regression is 0");
	mlp_gate_result_clear(&r);

	/* A declaration overrides the built-in default. */
	mlp_kvlist_set(&declared, "throughput", "lower");
	mlp_gate_decide(&r, &in);
	assert_true(r.passed);
	mlp_gate_result_clear(&r);
	mlp_kvlist_set(&declared, "accuracy", "lower");
	assert_int_equal(mlp_gate_direction(&declared, "accuracy"), MLP_DIRECTION_LOWER);
	mlp_kvlist_free(&declared);
}

/* ---- the registry and artifacts (store-models.c) ----------------------- */

static char *write_temp(const struct fixture *f, const char *name, const char *content)
{
	char *path = xasprintf("%s/%s", f->dir, name);

	assert_int_equal(mlp_write_file_atomic(path, content, strlen(content), 0644), 0);
	return path;
}

static const struct mlp_run_new sample_run = {
        .pipeline = "fashion",
        .pipeline_text = "name: fashion\n",
        .pipeline_sha256 = "abc",
        .trigger = "cli",
        .user = "ada",
        .git_commit = "0123abcd",
        .workspace = "/p",
};

static void test_gate__artifacts_are_stored_once_by_content(void **state)
{
	struct fixture *f = *state;
	char *a = write_temp(f, "a.bin", "weights"), *b = write_temp(f, "b.bin", "weights");
	char *c = write_temp(f, "c.bin", "other");
	char ha[65], hb[65], hc[65], *pa, *pb, *pc, *text;
	struct stat st;
	size_t len;

	assert_int_equal(mlp_store_artifact_put(ha, &pa, f->s, a), 0);
	assert_int_equal(mlp_store_artifact_put(hb, &pb, f->s, b), 0);
	assert_int_equal(mlp_store_artifact_put(hc, &pc, f->s, c), 0);
	/* sha256("weights") */
	assert_string_equal(ha, hb);
	assert_string_equal(pa, pb);
	assert_string_not_equal(ha, hc);
	{
		char *want = xasprintf("%s/data/artifacts/sha256/%.2s/%s", f->dir, ha, ha + 2);

		assert_string_equal(pa, want);
		free(want);
	}
	assert_int_equal(mlp_read_file(&text, &len, pa, 1024), 0);
	assert_string_equal(text, "weights");
	free(text);
	assert_int_equal(stat(pa, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0444);
	/* No temporary copies are left behind. */
	{
		char *cmd = xasprintf("test -z \"$(ls -A '%s/data/artifacts/tmp')\"", f->dir);

		assert_int_equal(system(cmd), 0);
		free(cmd);
	}
	assert_int_equal(mlp_store_artifact_put(ha, NULL, f->s, "/nonexistent/model.bin"), MLP_EIO);
	assert_non_null(strstr(mlp_error_last(), "cannot read /nonexistent/model.bin"));
	free(a);
	free(b);
	free(c);
	free(pa);
	free(pb);
	free(pc);
}

static void test_gate__versions_are_numbered_with_run_commit_and_metrics(void **state)
{
	struct fixture *f = *state;
	char *file = write_temp(f, "m.bin", "weights-1");
	char hex[65];
	int64_t run, id1, id2;
	int v1, v2;
	struct mlp_metric m[] = {M("accuracy", 0.9), M("loss", 0.25)};
	struct mlp_model_version_new nv = {
	        .model = "fashion",
	        .sha256 = hex,
	        .stage = "train",
	        .metrics = m,
	        .nmetrics = 2,
	};
	struct mlp_model_version got;
	struct mlp_model_info *models;
	size_t n;

	assert_int_equal(mlp_store_run_create(&run, f->s, &sample_run), 0);
	assert_int_equal(mlp_store_artifact_put(hex, NULL, f->s, file), 0);
	nv.run_id = run;
	assert_int_equal(mlp_store_model_register(&id1, &v1, f->s, &nv), 0);
	nv.metrics = NULL;
	nv.nmetrics = 0;
	nv.git_commit = "feedbeef";
	assert_int_equal(mlp_store_model_register(&id2, &v2, f->s, &nv), 0);
	assert_int_equal(v1, 1);
	assert_int_equal(v2, 2);

	assert_int_equal(mlp_store_model_version_get(&got, f->s, "fashion", 1), 0);
	assert_int_equal(got.id, id1);
	assert_string_equal(got.sha256, hex);
	assert_int_equal(got.run_id, run);
	assert_string_equal(got.stage, "train");
	/* The run's commit when none is given. */
	assert_string_equal(got.git_commit, "0123abcd");
	assert_int_equal(got.status, MLP_MODEL_CANDIDATE);
	assert_int_equal(got.size, 9);
	assert_int_equal(got.nmetrics, 2);
	assert_string_equal(got.metrics[0].name, "accuracy");
	assert_true(got.metrics[0].value == 0.9);
	mlp_model_version_clear(&got);

	/* 0: the latest. */
	assert_int_equal(mlp_store_model_version_get(&got, f->s, "fashion", 0), 0);
	assert_int_equal(got.version, 2);
	assert_string_equal(got.git_commit, "feedbeef");
	mlp_model_version_clear(&got);
	assert_int_equal(mlp_store_model_version_of_run(&got, f->s, "fashion", run), 0);
	assert_int_equal(got.version, 2);
	mlp_model_version_clear(&got);
	assert_int_equal(mlp_store_model_version_of_run(&got, f->s, "fashion", run + 1),
	                 MLP_ENOTFOUND);

	assert_int_equal(mlp_store_model_version_get(&got, f->s, "fashion", 7), MLP_ENOTFOUND);
	assert_string_equal(mlp_error_last(), "model 'fashion' has no version 7");
	assert_int_equal(mlp_store_model_version_get(&got, f->s, "mnist", 0), MLP_ENOTFOUND);
	assert_string_equal(mlp_error_last(), "no model 'mnist'");

	assert_int_equal(mlp_store_models_list(&models, &n, f->s), 0);
	assert_int_equal(n, 1);
	assert_string_equal(models[0].name, "fashion");
	assert_int_equal(models[0].versions, 2);
	assert_int_equal(models[0].latest, 2);
	assert_int_equal(models[0].approved, 0);
	mlp_model_info_free_all(models, n);
	free(file);
}

static void test_gate__status_changes_follow_the_lifecycle(void **state)
{
	struct fixture *f = *state;
	char *file = write_temp(f, "m.bin", "w");
	char hex[65];
	int64_t id1, id2;
	struct mlp_model_version_new nv = {.model = "fashion", .sha256 = hex};
	struct mlp_model_version got;
	struct mlp_model_info *models;
	size_t n;

	assert_int_equal(mlp_store_artifact_put(hex, NULL, f->s, file), 0);
	assert_int_equal(mlp_store_model_register(&id1, NULL, f->s, &nv), 0);
	assert_int_equal(mlp_store_model_register(&id2, NULL, f->s, &nv), 0);

	assert_int_equal(
	        mlp_store_model_set_status(f->s, id1, MLP_MODEL_REJECTED, "bob", "bias on class 4"),
	        0);
	assert_int_equal(mlp_store_model_version_get(&got, f->s, "fashion", 1), 0);
	assert_int_equal(got.status, MLP_MODEL_REJECTED);
	assert_string_equal(got.status_by, "bob");
	assert_string_equal(got.status_reason, "bias on class 4");
	assert_true(got.status_changed_at > 0);
	mlp_model_version_clear(&got);
	/* An operator may overrule: rejected -> approved -> deployed. */
	assert_int_equal(mlp_store_model_set_status(f->s, id1, MLP_MODEL_APPROVED, "bob", "ok"), 0);
	assert_int_equal(mlp_store_model_set_status(f->s, id1, MLP_MODEL_DEPLOYED, "ci", "out"), 0);
	/* A deployed version is not approved or rejected. */
	assert_int_equal(mlp_store_model_set_status(f->s, id1, MLP_MODEL_REJECTED, "bob", "x"),
	                 MLP_EINVAL);
	assert_string_equal(mlp_error_last(), "model 'fashion' version 1 is deployed: it cannot "
	                                      "become rejected");
	/* A candidate is not deployed before it is approved. */
	assert_int_equal(mlp_store_model_set_status(f->s, id2, MLP_MODEL_DEPLOYED, "ci", "x"),
	                 MLP_EINVAL);
	assert_int_equal(mlp_store_model_set_status(f->s, id2, MLP_MODEL_APPROVED, "ci", "x"), 0);

	/* Baselines: the deployed one, the latest approved other than v. */
	assert_int_equal(
	        mlp_store_model_version_with_status(&got, f->s, "fashion", MLP_MODEL_DEPLOYED, 0),
	        0);
	assert_int_equal(got.version, 1);
	mlp_model_version_clear(&got);
	assert_int_equal(
	        mlp_store_model_version_with_status(&got, f->s, "fashion", MLP_MODEL_APPROVED, id2),
	        MLP_ENOTFOUND);

	assert_int_equal(mlp_store_models_list(&models, &n, f->s), 0);
	assert_int_equal(models[0].approved, 2);
	assert_int_equal(models[0].deployed, 1);
	mlp_model_info_free_all(models, n);
	free(file);
}

/* ---- thresholds --------------------------------------------------------- */

static void test_gate__thresholds_keep_every_change(void **state)
{
	struct fixture *f = *state;
	struct mlp_gate_threshold *t;
	struct mlp_gate_threshold_change *c;
	size_t n;
	bool changed, seeded;

	/* A pipeline seeds what the database never had ... */
	assert_int_equal(mlp_store_gate_threshold_seed(&seeded, f->s, "fashion", "accuracy",
	                                               ">=", 0.85, "ada", "require:"),
	                 0);
	assert_true(seeded);
	/* ... an operator raises it ... */
	assert_int_equal(mlp_store_gate_threshold_set(&changed, f->s, "fashion", "accuracy",
	                                              ">=", 0.9, "bob", "raise the bar"),
	                 0);
	assert_true(changed);
	/* ... and the pipeline's require: no longer changes it. */
	assert_int_equal(mlp_store_gate_threshold_seed(&seeded, f->s, "fashion", "accuracy",
	                                               ">=", 0.85, "ada", "require:"),
	                 0);
	assert_false(seeded);
	/* Setting the same value changes nothing and records nothing. */
	assert_int_equal(mlp_store_gate_threshold_set(&changed, f->s, "fashion", "accuracy",
	                                              ">=", 0.9, "bob", "again"),
	                 0);
	assert_false(changed);

	assert_int_equal(mlp_store_gate_thresholds_list(&t, &n, f->s, "fashion"), 0);
	assert_int_equal(n, 1);
	assert_string_equal(t[0].op, ">=");
	assert_true(t[0].value == 0.9);
	assert_string_equal(t[0].updated_by, "bob");
	mlp_gate_threshold_free_all(t, n);

	/* Removed stays removed: a seed does not bring it back. */
	assert_int_equal(mlp_store_gate_threshold_unset(f->s, "fashion", "accuracy", "carol",
	                                                "wrong metric"),
	                 0);
	assert_int_equal(mlp_store_gate_threshold_seed(&seeded, f->s, "fashion", "accuracy",
	                                               ">=", 0.85, "ada", "require:"),
	                 0);
	assert_false(seeded);
	assert_int_equal(mlp_store_gate_thresholds_list(&t, &n, f->s, NULL), 0);
	assert_int_equal(n, 0);
	mlp_gate_threshold_free_all(t, n);
	assert_int_equal(
	        mlp_store_gate_threshold_unset(f->s, "fashion", "accuracy", "carol", "again"),
	        MLP_ENOTFOUND);
	assert_string_equal(mlp_error_last(), "gate 'fashion' has no threshold on 'accuracy'");

	assert_int_equal(mlp_store_gate_history(&c, &n, f->s, "fashion"), 0);
	assert_int_equal(n, 3);
	assert_null(c[0].old_op);
	assert_string_equal(c[0].new_op, ">=");
	assert_true(c[0].new_value == 0.85);
	assert_string_equal(c[0].source, "pipeline-seed");
	assert_string_equal(c[0].user, "ada");
	assert_string_equal(c[1].old_op, ">=");
	assert_true(c[1].old_value == 0.85);
	assert_true(c[1].new_value == 0.9);
	assert_string_equal(c[1].user, "bob");
	assert_string_equal(c[1].reason, "raise the bar");
	assert_string_equal(c[1].source, "cli");
	assert_true(c[1].at > 0);
	assert_null(c[2].new_op);
	assert_string_equal(c[2].user, "carol");
	mlp_gate_threshold_change_free_all(c, n);

	assert_int_equal(mlp_store_gate_history(&c, &n, f->s, "other"), 0);
	assert_int_equal(n, 0);
	mlp_gate_threshold_change_free_all(c, n);
}

/* ---- the gate stage, end to end ----------------------------------------- */

static const char gate_pipeline[] = "name: fashion\n"
                                    "stages:\n"
                                    "  train:\n"
                                    "    run: \"true\"\n"
                                    "    model: { name: fashion, path: model.bin }\n"
                                    "  evaluate:\n"
                                    "    needs: [train]\n"
                                    "    run: \"true\"\n"
                                    "  gate:\n"
                                    "    needs: [evaluate]\n"
                                    "    gate:\n"
                                    "      model: fashion\n"
                                    "      metrics_from: evaluate\n"
                                    "      require: { accuracy: \">= 0.85\" }\n"
                                    "      baseline: approved\n"
                                    "      max_regression: 0.01\n";

/* Records a run as the engine would up to its gate stage: train registered
 * a version (unless register is false), evaluate succeeded with accuracy. */
static int64_t record_run(struct fixture *f, double accuracy, bool evaluate_ok,
                          bool register_version)
{
	struct mlp_run_new r = sample_run;
	struct mlp_attempt_end ok = {.status = MLP_STATUS_SUCCEEDED, .exit_code = 0};
	struct mlp_attempt_end bad = {.status = MLP_STATUS_FAILED, .exit_code = 3};
	char *path = xasprintf("%s/pipeline.yml", f->dir);
	int64_t run, at;

	r.pipeline_text = gate_pipeline;
	r.pipeline_path = path;
	assert_int_equal(mlp_store_run_create(&run, f->s, &r), 0);
	if (register_version) {
		char *content = xasprintf("weights %g", accuracy);
		char *file = write_temp(f, "model.bin", content);
		char hex[65];
		struct mlp_model_version_new nv = {
		        .model = "fashion",
		        .sha256 = hex,
		        .run_id = run,
		        .stage = "train",
		};

		assert_int_equal(mlp_store_artifact_put(hex, NULL, f->s, file), 0);
		assert_int_equal(mlp_store_model_register(NULL, NULL, f->s, &nv), 0);
		free(content);
		free(file);
	}
	assert_int_equal(mlp_store_attempt_start(&at, f->s, run, "evaluate", "run", 1, NULL), 0);
	assert_int_equal(mlp_store_attempt_finish(f->s, at, evaluate_ok ? &ok : &bad), 0);
	if (evaluate_ok) {
		assert_int_equal(mlp_store_metric_put(f->s, run, "evaluate", "accuracy", accuracy),
		                 0);
		assert_int_equal(mlp_store_metric_put(f->s, run, "evaluate", "loss", 0.3), 0);
	}
	free(path);
	return run;
}

/* The decision as a library function: no process, no environment. */
static void test_gate__stage_decide_passes_and_fails_on_the_store(void **state)
{
	struct fixture *f = *state;
	struct mlp_stage_gate *g = NULL;
	struct mlp_model_version v;
	struct mlp_gate_decision *d;
	size_t n;
	int64_t run;

	/* 0.9 meets the seeded accuracy >= 0.85: a pass, recorded. */
	run = record_run(f, 0.9, true, true);
	assert_int_equal(mlp_stage_gate_decide(&g, f->s, run, "gate"), 0);
	assert_true(mlp_stage_gate_passed(g));
	assert_null(mlp_stage_gate_reason(g));
	mlp_stage_gate_free(g);
	assert_int_equal(mlp_store_model_version_get(&v, f->s, "fashion", 1), 0);
	assert_int_equal(v.status, MLP_MODEL_APPROVED);
	mlp_model_version_clear(&v);

	/* 0.8 does not: a fail, with the reason, and the version rejected. */
	run = record_run(f, 0.8, true, true);
	assert_int_equal(mlp_stage_gate_decide(&g, f->s, run, "gate"), 0);
	assert_false(mlp_stage_gate_passed(g));
	assert_string_equal(mlp_stage_gate_reason(g), "accuracy = 0.8 does not meet >= 0.85");
	mlp_stage_gate_free(g);
	assert_int_equal(mlp_store_model_version_get(&v, f->s, "fashion", 2), 0);
	assert_int_equal(v.status, MLP_MODEL_REJECTED);
	assert_string_equal(v.status_reason, "gate 'fashion' failed (run 2): accuracy = 0.8 does "
	                                     "not meet >= 0.85");
	mlp_model_version_clear(&v);
	assert_int_equal(mlp_store_gate_decisions_list(&d, &n, f->s, "fashion", 0, 0), 0);
	assert_int_equal(n, 2);
	assert_false(d[0].passed);
	assert_int_equal(d[0].run_id, run);
	assert_true(d[1].passed);
	mlp_gate_decision_free_all(d, n);

	/* A stage that is not a gate cannot be decided, and nothing is written. */
	g = (struct mlp_stage_gate *)1;
	assert_int_equal(mlp_stage_gate_decide(&g, f->s, run, "evaluate"), MLP_ENOTFOUND);
	assert_null(g);
	assert_string_equal(mlp_error_last(), "run 2 has no gate stage 'evaluate'");
	assert_int_equal(mlp_store_gate_decisions_list(&d, &n, f->s, "fashion", 0, 0), 0);
	assert_int_equal(n, 2);
	mlp_gate_decision_free_all(d, n);
}

/* Runs `mlpipe stage-gate` for the run in a child; returns its exit code
 * and leaves its stdout and $MLPIPE_OUTPUT in *out_log and *out_output. */
static int run_stage_gate(struct fixture *f, int64_t run, char **out_log, char **out_output)
{
	char *log = xasprintf("%s/gate.log", f->dir), *output = xasprintf("%s/gate.out", f->dir);
	char *metrics = xasprintf("%s/gate.metrics", f->dir);
	char runarg[32];
	size_t len;
	int status;
	pid_t pid;

	snprintf(runarg, sizeof(runarg), "%lld", (long long)run);
	unlink(output);
	fflush(stdout);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char *argv[] = {
		        (char *)"stage-gate", (char *)"--db", f->db, (char *)"--run", runarg,
		        (char *)"--stage",    (char *)"gate", NULL,
		};
		int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);

		dup2(fd, 1);
		dup2(fd, 2);
		setenv("MLPIPE_OUTPUT", output, 1);
		setenv("MLPIPE_METRICS", metrics, 1);
		unsetenv("MLPIPE_REASON");
		optind = 1;
		_exit(mlp_cmd_stage_gate.exec(7, argv));
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(mlp_read_file(out_log, &len, log, 1 << 20), 0);
	if (mlp_read_file(out_output, &len, output, 1 << 20) != 0)
		*out_output = xstrdup("");
	free(log);
	free(output);
	free(metrics);
	return WEXITSTATUS(status);
}

static void test_gate__stage_decides_records_and_sets_the_status(void **state)
{
	struct fixture *f = *state;
	struct mlp_model_version v;
	struct mlp_gate_decision *d;
	struct mlp_gate_threshold_change *c;
	char *log, *out;
	size_t n;
	int64_t run;

	/* Run 1: require: seeds accuracy >= 0.85; 0.9 passes; no approved
	 * version yet, so thresholds alone decide. */
	run = record_run(f, 0.9, true, true);
	assert_int_equal(run_stage_gate(f, run, &log, &out), 0);
	assert_non_null(strstr(log, "gate 'fashion': model fashion version 1, metrics of stage "
	                            "'evaluate'\n"));
	assert_non_null(strstr(log, "note: no baseline yet: passes on thresholds alone (no "
	                            "approved version)\n"));
	assert_non_null(strstr(log, "decision: PASS (fashion version 1 approved)\n"));
	assert_non_null(strstr(out, "passed=true\nmodel_version=1\n"));
	free(log);
	free(out);
	assert_int_equal(mlp_store_model_version_get(&v, f->s, "fashion", 1), 0);
	assert_int_equal(v.status, MLP_MODEL_APPROVED);
	assert_string_equal(v.status_reason, "gate 'fashion' passed (run 1)");
	/* The judged metrics became the version's (future baselines). */
	assert_int_equal(v.nmetrics, 2);
	mlp_model_version_clear(&v);
	assert_int_equal(mlp_store_gate_history(&c, &n, f->s, "fashion"), 0);
	assert_int_equal(n, 1);
	assert_string_equal(c[0].source, "pipeline-seed");
	mlp_gate_threshold_change_free_all(c, n);

	/* An operator raises the bar in the database: the same pipeline text
	 * now fails, the version is rejected, the decision says why. */
	assert_int_equal(mlp_store_gate_threshold_set(NULL, f->s, "fashion", "accuracy", ">=", 0.95,
	                                              "bob", "tighten"),
	                 0);
	run = record_run(f, 0.92, true, true);
	assert_int_equal(run_stage_gate(f, run, &log, &out), 1);
	assert_non_null(strstr(log, "baseline: approved version 1\n"));
	assert_non_null(strstr(log, "decision: FAIL: accuracy = 0.92 does not meet >= 0.95 "
	                            "(fashion version 2 rejected)\n"));
	assert_non_null(strstr(log, "gate 'fashion' failed: accuracy = 0.92 does not meet "
	                            ">= 0.95\n"));
	assert_non_null(strstr(out, "passed=false\nmodel_version=2\n"));
	free(log);
	free(out);
	assert_int_equal(mlp_store_model_version_get(&v, f->s, "fashion", 2), 0);
	assert_int_equal(v.status, MLP_MODEL_REJECTED);
	mlp_model_version_clear(&v);
	assert_int_equal(mlp_store_gate_decisions_list(&d, &n, f->s, "fashion", 0, 0), 0);
	assert_int_equal(n, 2);
	assert_false(d[0].passed);
	assert_int_equal(d[0].run_id, run);
	assert_string_equal(d[0].stage, "gate");
	assert_string_equal(d[0].reason, "accuracy = 0.92 does not meet >= 0.95");
	assert_true(d[0].baseline_version_id > 0);
	/* The detail holds the thresholds used and every comparison. */
	assert_non_null(strstr(d[0].detail, "\"thresholds\":[{\"metric\":\"accuracy\","
	                                    "\"op\":\">=\",\"value\":0.95"));
	assert_non_null(strstr(d[0].detail, "\"baseline\":{\"kind\":\"approved\",\"version\":1"));
	assert_non_null(strstr(d[0].detail, "\"kind\":\"regression\",\"metric\":\"accuracy\","
	                                    "\"value\":0.92,\"direction\":\"higher\","
	                                    "\"baseline\":0.9"));
	assert_true(d[1].passed);
	mlp_gate_decision_free_all(d, n);
}

static void test_gate__stage_edge_cases_fail(void **state)
{
	struct fixture *f = *state;
	char *log, *out;
	int64_t run;

	/* metrics_from did not succeed: nothing to judge is a failure. */
	run = record_run(f, 0.9, false, true);
	assert_int_equal(run_stage_gate(f, run, &log, &out), 1);
	assert_non_null(strstr(log, "stage 'evaluate' (metrics_from) did not succeed in run 1: "
	                            "there are no metrics to judge"));
	free(log);
	free(out);

	/* No version registered by the run: the metrics are judged alone. */
	run = record_run(f, 0.9, true, false);
	assert_int_equal(run_stage_gate(f, run, &log, &out), 0);
	assert_non_null(strstr(log, "gate 'fashion': run 2 registered no version of model "
	                            "'fashion'; judging the metrics of stage 'evaluate' alone\n"));
	assert_null(strstr(out, "model_version="));
	free(log);
	free(out);

	/* An unknown run or stage cannot be decided: exit 2. */
	assert_int_equal(run_stage_gate(f, 99, &log, &out), 2);
	assert_non_null(strstr(log, "no run 99"));
	free(log);
	free(out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_gate__thresholds_pass_and_fail_at_the_boundary),
	        cmocka_unit_test(test_gate__missing_metric_fails_and_suggests_the_near_one),
	        cmocka_unit_test(test_gate__nan_and_infinity_fail),
	        cmocka_unit_test(test_gate__no_thresholds_is_refused_unless_allowed),
	        cmocka_unit_test(test_gate__no_baseline_yet_passes_on_thresholds_alone),
	        cmocka_unit_test(test_gate__max_regression_absolute_and_relative),
	        cmocka_unit_test(test_gate__baseline_without_the_metric_is_not_compared),
	        cmocka_unit_test(test_gate__directions),
	        cmocka_unit_test_setup_teardown(test_gate__artifacts_are_stored_once_by_content,
	                                        setup, teardown),
	        cmocka_unit_test_setup_teardown(
	                test_gate__versions_are_numbered_with_run_commit_and_metrics, setup,
	                teardown),
	        cmocka_unit_test_setup_teardown(test_gate__status_changes_follow_the_lifecycle,
	                                        setup, teardown),
	        cmocka_unit_test_setup_teardown(test_gate__thresholds_keep_every_change, setup,
	                                        teardown),
	        cmocka_unit_test_setup_teardown(
	                test_gate__stage_decide_passes_and_fails_on_the_store, setup, teardown),
	        cmocka_unit_test_setup_teardown(
	                test_gate__stage_decides_records_and_sets_the_status, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_gate__stage_edge_cases_fail, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
