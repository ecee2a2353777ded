/*
 * test-pipeline.c - unit tests of the pipeline module: the typed structs
 * filled from good files, and the exact message and position of every
 * problem in bad ones (including each tests/pipelines/bad fixture against
 * its .expected file).
 */
#include "config.h"

#include <dirent.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/error.h"
#include "pipeline/pipeline.h"
#include "base/util.h"

/* ---- helpers ---------------------------------------------------------- */

/* The fixtures directory: $MLPIPE_TEST_SRCDIR/pipelines when make check
 * sets it, else next to this source file. */
static char *fixture_dir(void)
{
	const char *srcdir = getenv("MLPIPE_TEST_SRCDIR");
	char *dir, *path;

	if (srcdir != NULL && *srcdir)
		return xasprintf("%s/pipelines", srcdir);
	dir = mlp_dirname(__FILE__);
	path = xasprintf("%s/pipelines", dir);
	free(dir);
	return path;
}

static char *fixture(const char *name)
{
	char *dir = fixture_dir();
	char *path = xasprintf("%s/%s", dir, name);

	free(dir);
	return path;
}

/* The diags as "LINE:COL: message\n" lines. */
static char *diags_text(const struct mlp_diags *d)
{
	struct mlp_buf b = {0};

	for (size_t i = 0; i < d->len; i++)
		mlp_buf_printf(&b, "%d:%d: %s\n", d->items[i].pos.line, d->items[i].pos.col,
		               d->items[i].message);
	return mlp_buf_detach(&b);
}

/* Parses text that must be valid; fails the test with the diags if not. */
static struct mlp_pipeline *parse_ok(const char *text)
{
	struct mlp_pipeline *p = NULL;
	struct mlp_diags d = {0};
	int rc = mlp_pipeline_parse(&p, &d, "test.yml", text, strlen(text));

	if (rc != 0) {
		char *s = diags_text(&d);

		print_error("unexpected problems:\n%s", s);
		free(s);
	}
	assert_int_equal(rc, 0);
	assert_int_equal(d.len, 0);
	assert_non_null(p);
	mlp_diags_free(&d);
	return p;
}

/* Parses text that must be invalid and checks every problem, in order. */
static void expect_diags(const char *text, const char *expected)
{
	struct mlp_pipeline *p = (struct mlp_pipeline *)1;
	struct mlp_diags d = {0};
	int rc = mlp_pipeline_parse(&p, &d, "test.yml", text, strlen(text));
	char *actual = diags_text(&d);

	assert_int_equal(rc, MLP_EINVAL);
	assert_null(p);
	assert_string_equal(actual, expected);
	for (size_t i = 0; i < d.len; i++)
		assert_string_equal(d.items[i].file, "test.yml");
	free(actual);
	mlp_diags_free(&d);
}

static const struct mlp_stage *stage(const struct mlp_pipeline *p, const char *name)
{
	ssize_t i = mlp_pipeline_find_stage(p, name);

	assert_true(i >= 0);
	return &p->stages[i];
}

/* ---- fixtures --------------------------------------------------------- */

static void test_pipeline__good_fixtures_load(void **state)
{
	char *dir = fixture("good");
	DIR *d = opendir(dir);
	struct dirent *e;
	int count = 0;

	(void)state;
	assert_non_null(d);
	while ((e = readdir(d)) != NULL) {
		struct mlp_pipeline *p = NULL;
		struct mlp_diags diags = {0};
		char *path;
		int rc;

		if (strstr(e->d_name, ".yml") == NULL)
			continue;
		path = xasprintf("%s/%s", dir, e->d_name);
		rc = mlp_pipeline_load(&p, &diags, path);
		if (rc != 0) {
			char *s = diags_text(&diags);

			print_error("%s:\n%s", path, s);
			free(s);
		}
		assert_int_equal(rc, 0);
		assert_true(p->nstages >= 1);
		assert_non_null(p->order);
		mlp_pipeline_free(p);
		mlp_diags_free(&diags);
		free(path);
		count++;
	}
	closedir(d);
	free(dir);
	assert_true(count >= 4);
}

static void test_pipeline__bad_fixtures_match_expected(void **state)
{
	char *dir = fixture("bad");
	DIR *d = opendir(dir);
	struct dirent *e;
	int count = 0;

	(void)state;
	assert_non_null(d);
	while ((e = readdir(d)) != NULL) {
		struct mlp_pipeline *p = NULL;
		struct mlp_diags diags = {0};
		char *path, *expected_path, *expected = NULL, *actual;
		size_t len = strlen(e->d_name);

		if (len < 5 || strcmp(e->d_name + len - 4, ".yml") != 0)
			continue;
		path = xasprintf("%s/%s", dir, e->d_name);
		expected_path = xasprintf("%s/%.*s.expected", dir, (int)(len - 4), e->d_name);
		assert_int_equal(mlp_read_file(&expected, NULL, expected_path, 1 << 20), 0);
		assert_int_equal(mlp_pipeline_load(&p, &diags, path), MLP_EINVAL);
		assert_null(p);
		actual = diags_text(&diags);
		if (strcmp(actual, expected) != 0)
			print_error("%s\n", e->d_name);
		assert_string_equal(actual, expected);
		for (size_t i = 0; i < diags.len; i++)
			assert_string_equal(diags.items[i].file, path);
		free(actual);
		free(expected);
		free(expected_path);
		free(path);
		mlp_diags_free(&diags);
		count++;
	}
	closedir(d);
	free(dir);
	assert_true(count >= 25);
}

static void test_pipeline__design_example_fills_every_struct(void **state)
{
	char *path = fixture("good/full.yml");
	struct mlp_pipeline *p = NULL;
	struct mlp_diags d = {0};
	const struct mlp_stage *st;

	(void)state;
	assert_int_equal(mlp_pipeline_load(&p, &d, path), 0);
	assert_string_equal(p->path, path);
	assert_true(p->dir[0] == '/');
	assert_string_equal(p->name, "fashion");
	assert_true(p->on_push);
	assert_int_equal(p->npush_branches, 1);
	assert_string_equal(p->push_branches[0], "main");
	assert_int_equal(p->npush_tags, 0);
	assert_int_equal(p->nschedules, 1);
	assert_string_equal(p->schedules[0].cron, "0 2 * * *");
	assert_string_equal(p->schedules[0].timezone, "Europe/Berlin");
	assert_string_equal(p->schedules[0].concurrency, "forbid");
	assert_int_equal(p->schedules[0].pos.line, 6);
	assert_int_equal(p->env.len, 1);
	assert_string_equal(p->env.items[0].key, "DATA");
	assert_string_equal(p->env.items[0].value, "/usr/share/datasets/fashion-mnist");
	assert_int_equal(p->default_timeout_ms, 30 * 60 * 1000);
	assert_int_equal(p->default_kill_grace_ms, 10000);
	assert_int_equal(p->default_retry.max, 1);
	assert_int_equal(p->default_retry.non, 2);
	assert_int_equal(p->default_retry.on[0].match, MLP_RETRY_SIGNAL);
	assert_int_equal(p->default_retry.on[0].value, -1);
	assert_int_equal(p->default_retry.on[1].match, MLP_RETRY_EXIT);
	assert_int_equal(p->default_retry.on[1].value, 137);

	assert_int_equal(p->nstages, 4);
	st = stage(p, "train");
	assert_int_equal(st->kind, MLP_STAGE_TRAIN);
	assert_int_equal(st->pos.line, 14);
	assert_int_equal(st->pos.col, 3);
	assert_int_equal(st->kind_pos.line, 15);
	assert_int_equal(st->kind_pos.col, 5);
	assert_int_equal(st->timeout_ms, 30 * 60 * 1000); /* from defaults */
	assert_int_equal(st->kill_grace_ms, 10000);
	assert_int_equal(st->retry.max, 1);
	assert_int_equal(st->retry.non, 2);
	assert_int_equal(st->retry.on[1].value, 137);
	assert_int_equal(st->train.ranks, 2);
	assert_int_equal(st->train.nodes, 1);
	assert_true(st->train.has_builtin);
	assert_null(st->train.command);
	assert_int_equal(st->train.builtin.nlayers, 3);
	assert_int_equal(st->train.builtin.layers[0], 784);
	assert_int_equal(st->train.builtin.layers[1], 256);
	assert_int_equal(st->train.builtin.layers[2], 10);
	assert_int_equal(st->train.builtin.epochs, 5);
	assert_int_equal(st->train.builtin.batch, 64);
	assert_true(st->train.builtin.lr == 0.05);
	assert_true(st->train.builtin.momentum == 0.9);
	assert_int_equal(st->train.builtin.seed, 42);
	assert_string_equal(st->train.builtin.data, "${{ env.DATA }}");
	assert_string_equal(st->train.builtin.device, "auto");
	assert_null(st->train.builtin.test_data);
	assert_true(st->model.set);
	assert_string_equal(st->model.name, "fashion");
	assert_string_equal(st->model.path, "model.bin");

	st = stage(p, "evaluate");
	assert_int_equal(st->kind, MLP_STAGE_RUN);
	assert_string_equal(st->run, "mlpipe-train evaluate model.bin --data \"$DATA\" "
	                             "--metrics \"$MLPIPE_METRICS\"");
	assert_int_equal(st->run_pos.line, 23);
	assert_int_equal(st->run_pos.col, 10);
	assert_int_equal(st->nneeds, 1);
	assert_string_equal(st->needs[0], "train");
	assert_int_equal(st->need_index[0], 0);
	assert_int_equal(st->cond, MLP_IF_SUCCESS);

	st = stage(p, "gate");
	assert_int_equal(st->kind, MLP_STAGE_GATE);
	assert_string_equal(st->gate.model, "fashion");
	assert_string_equal(st->gate.name, "fashion");
	assert_string_equal(st->gate.metrics_from, "evaluate");
	assert_int_equal(st->gate.nrequire, 1);
	assert_string_equal(st->gate.require[0].metric, "accuracy");
	assert_int_equal(st->gate.require[0].op, MLP_OP_GE);
	assert_true(st->gate.require[0].value == 0.85);
	assert_int_equal(st->gate.baseline, MLP_BASELINE_DEPLOYED);
	assert_true(st->gate.has_max_regression);
	assert_false(st->gate.max_regression_relative);
	assert_true(st->gate.max_regression == 0.005);
	assert_false(st->gate.allow_empty);

	st = stage(p, "deploy");
	assert_int_equal(st->kind, MLP_STAGE_ROLLOUT);
	assert_string_equal(st->rollout.deployment, "model-service");
	assert_string_equal(st->rollout.namespace_, "ml");
	assert_string_equal(st->rollout.container, "model-container");
	assert_string_equal(st->rollout.image, "registry.local/model:${{ run.id }}");
	assert_int_equal(st->rollout.timeout_ms, 10 * 60 * 1000);
	assert_int_equal(st->rollout.on_failure, MLP_ON_FAILURE_ROLLBACK);
	assert_false(st->rollout.dry_run);
	assert_null(st->rollout.context);

	for (size_t i = 0; i < 4; i++)
		assert_int_equal(p->order[i], i);
	mlp_pipeline_free(p);
	mlp_diags_free(&d);
	free(path);
}

static void test_pipeline__all_keys_fill_every_field(void **state)
{
	char *path = fixture("good/all-keys.yml");
	struct mlp_pipeline *p = NULL;
	struct mlp_diags d = {0};
	const struct mlp_stage *st;

	(void)state;
	assert_int_equal(mlp_pipeline_load(&p, &d, path), 0);
	assert_string_equal(p->workdir, "work");
	assert_int_equal(p->npush_branches, 2);
	assert_string_equal(p->push_branches[1], "release/*");
	assert_int_equal(p->npush_tags, 1);
	assert_string_equal(p->push_tags[0], "v*");
	assert_int_equal(p->nschedules, 2);
	assert_string_equal(p->schedules[0].concurrency, "replace");
	assert_int_equal(p->schedules[0].starting_deadline_ms, 15 * 60 * 1000);
	assert_string_equal(p->schedules[1].cron, "@nightly");
	assert_string_equal(p->schedules[1].timezone, "UTC");
	assert_int_equal(p->env.len, 5);
	assert_string_equal(p->env.items[1].value, "5");    /* numbers as written */
	assert_string_equal(p->env.items[2].value, "true"); /* booleans too */
	assert_string_equal(p->env.items[4].value, "");     /* null is empty */
	assert_int_equal(p->default_retry.max, 3);
	assert_int_equal(p->default_retry.backoff_ms, 2000);
	assert_true(p->default_retry.backoff_factor == 1.5);
	assert_int_equal(p->default_retry.backoff_max_ms, 60000);
	assert_int_equal(p->default_retry.non, 7);
	assert_int_equal(p->default_retry.on[0].match, MLP_RETRY_ANY);
	assert_int_equal(p->default_retry.on[1].match, MLP_RETRY_EXIT);
	assert_int_equal(p->default_retry.on[1].value, -1);
	assert_int_equal(p->default_retry.on[2].value, 1);
	assert_int_equal(p->default_retry.on[3].match, MLP_RETRY_SIGNAL);
	assert_int_equal(p->default_retry.on[4].value, SIGTERM);
	assert_int_equal(p->default_retry.on[5].value, 9);
	assert_int_equal(p->default_retry.on[6].match, MLP_RETRY_TIMEOUT);

	st = stage(p, "fetch");
	assert_string_equal(st->description, "fetch the data");
	assert_string_equal(st->run, "./fetch.sh \"$DATA\"\n"
	                             "echo \"rows=60000\" >> \"$MLPIPE_OUTPUT\"\n");
	assert_string_equal(st->workdir, "scripts");
	assert_int_equal(st->timeout_ms, 600000);
	assert_int_equal(st->kill_grace_ms, 0);
	assert_int_equal(st->retry.max, 0); /* retry: 0 replaces defaults */
	assert_int_equal(st->retry.non, 0);
	assert_int_equal(st->retry.backoff_ms, 1000);
	assert_int_equal(st->env.len, 1);
	assert_string_equal(st->env.items[0].key, "SOURCE");

	st = stage(p, "train");
	assert_int_equal(st->timeout_ms, 3600000); /* defaults */
	assert_int_equal(st->kill_grace_ms, 20000);
	assert_int_equal(st->retry.max, 1); /* stage retry: each field defaults */
	assert_int_equal(st->retry.non, 0);
	assert_int_equal(st->retry.backoff_ms, 1000);
	assert_true(st->retry.backoff_factor == 2);
	assert_int_equal(st->retry.backoff_max_ms, 300000);
	assert_int_equal(st->train.ranks, 4);
	assert_int_equal(st->train.nodes, 2);
	assert_int_equal(st->train.gpus_per_node, 4);
	assert_int_equal(st->train.max_restarts, 0);
	assert_int_equal(st->train.stall_timeout_ms, 300000);
	/* runs-on: kubernetes, the stage's keys over the pipeline's. */
	assert_int_equal(st->runs_on, MLP_RUNS_ON_KUBERNETES);
	assert_string_equal(st->k8s.namespace_, "ml-train");
	assert_string_equal(st->k8s.context, "prod");
	assert_string_equal(st->k8s.kubeconfig, "/etc/mlpipe/kubeconfig");
	assert_string_equal(st->k8s.image, "registry.local/trainer:${{ run.commit }}");
	assert_string_equal(st->k8s.helper_image, "registry.local/mlpipe:0.1");
	assert_string_equal(st->k8s.service_account, "trainer");
	assert_string_equal(st->k8s.queue, "team-a");
	assert_string_equal(st->k8s.workdir, "/workspace/src");
	assert_string_equal(st->k8s.pull_policy, "IfNotPresent");
	assert_int_equal(st->k8s.start_timeout_ms, 300000);
	assert_int_equal(st->k8s.resources.len, 3);
	assert_string_equal(mlp_kvlist_get(&st->k8s.resources, "memory"), "64Gi");
	assert_string_equal(mlp_kvlist_get(&st->k8s.resources, "nvidia.com/gpu"), "4");
	assert_string_equal(mlp_kvlist_get(&st->k8s.node_selector, "gpu"), "h100");
	assert_string_equal(mlp_kvlist_get(&st->k8s.annotations, "example.com/owner"), "vision");
	assert_string_equal(mlp_kvlist_get(&st->k8s.labels, "team"), "vision");
	assert_int_equal(st->k8s.ntolerations, 2);
	assert_string_equal(st->k8s.tolerations[0].operator_, "Exists");
	assert_string_equal(st->k8s.tolerations[0].effect, "NoSchedule");
	assert_null(st->k8s.tolerations[1].operator_);
	assert_string_equal(st->k8s.tolerations[1].value, "true");
	assert_int_equal(st->k8s.tolerations[1].seconds, 60);
	assert_string_equal(st->k8s.tolerations[1].effect, "NoExecute");
	assert_string_equal(st->k8s.checkout_repo, "https://git.example.com/ml.git");
	assert_string_equal(st->k8s.checkout_secret, "git-creds");
	assert_string_equal(st->k8s.checkout_path, "/workspace");
	assert_int_equal(st->train.builtin.nlayers, 4);
	assert_int_equal(st->train.builtin.epochs, 10);
	assert_int_equal(st->train.builtin.batch, 128);
	assert_true(st->train.builtin.lr == 0.1);
	assert_true(st->train.builtin.momentum == 0.95);
	assert_true(st->train.builtin.weight_decay == 1e-4);
	assert_int_equal(st->train.builtin.seed, 7);
	assert_string_equal(st->train.builtin.test_data, "${{ env.DATA }}/test");
	assert_true(st->train.builtin.validation_split == 0.1);
	assert_string_equal(st->train.builtin.device, "cuda");
	assert_string_equal(st->model.path, "models/${{ run.id }}/model.bin");

	st = stage(p, "train_custom");
	assert_int_equal(st->runs_on, MLP_RUNS_ON_LOCAL);
	assert_int_equal(st->train.max_restarts, 3);
	assert_false(st->train.has_builtin);
	assert_string_equal(st->train.command,
	                    "python3 train.py --rows ${{ stages.fetch.outputs.rows }}");
	assert_true(st->continue_on_error);

	st = stage(p, "gate");
	assert_string_equal(st->gate.name, "digits-quality");
	assert_int_equal(st->gate.nrequire, 4);
	assert_int_equal(st->gate.require[1].op, MLP_OP_GT);
	assert_int_equal(st->gate.require[2].op, MLP_OP_LE);
	assert_int_equal(st->gate.require[3].op, MLP_OP_LT);
	assert_true(st->gate.require[3].value == 20);
	assert_int_equal(st->gate.baseline, MLP_BASELINE_APPROVED);
	assert_true(st->gate.max_regression_relative);
	assert_true(st->gate.max_regression == 0.005);
	assert_int_equal(st->gate.directions.len, 3);
	assert_string_equal(st->gate.directions.items[0].key, "loss");
	assert_string_equal(st->gate.directions.items[0].value, "lower");
	assert_string_equal(st->gate.directions.items[2].value, "higher");
	assert_true(st->gate.allow_empty);

	st = stage(p, "deploy");
	assert_int_equal(st->timeout_ms, 15 * 60 * 1000);
	assert_string_equal(st->rollout.deployment, "digits.serving");
	assert_int_equal(st->rollout.env.len, 2);
	assert_string_equal(st->rollout.context, "prod-cluster");
	assert_int_equal(st->rollout.timeout_ms, 300000);
	assert_int_equal(st->rollout.on_failure, MLP_ON_FAILURE_KEEP);
	assert_string_equal(st->rollout.model, "digits");
	assert_string_equal(st->rollout.model_base_url, "https://mlpipe.ci.svc:8443/");

	assert_int_equal(stage(p, "notify")->cond, MLP_IF_FAILURE);
	assert_int_equal(stage(p, "cleanup")->cond, MLP_IF_ALWAYS);
	mlp_pipeline_free(p);
	mlp_diags_free(&d);
	free(path);
}

static void test_pipeline__anchors_and_merge_keys(void **state)
{
	char *path = fixture("good/anchors.yml");
	struct mlp_pipeline *p = NULL;
	struct mlp_diags d = {0};
	const struct mlp_stage *st;

	(void)state;
	assert_int_equal(mlp_pipeline_load(&p, &d, path), 0);
	assert_int_equal(p->env.len, 2);
	assert_string_equal(p->env.items[0].key, "PYTHONUNBUFFERED");
	assert_string_equal(p->env.items[1].key, "DATA");
	st = stage(p, "prepare");
	assert_int_equal(st->timeout_ms, 20 * 60 * 1000);
	assert_int_equal(st->kill_grace_ms, 30000);
	assert_int_equal(st->retry.max, 2);
	assert_int_equal(st->retry.backoff_ms, 5000);
	assert_int_equal(st->retry.non, 2);
	assert_int_equal(st->retry.on[1].value, SIGKILL);
	st = stage(p, "train");
	assert_int_equal(st->timeout_ms, 2 * 3600 * 1000); /* explicit wins */
	assert_string_equal(st->description, "runs on the GPU nodes");
	assert_int_equal(st->train.ranks, 2); /* one per GPU */
	assert_int_equal(st->nneeds, 1);
	mlp_pipeline_free(p);
	mlp_diags_free(&d);
	free(path);
}

/* ---- structure and defaults ------------------------------------------- */

static void test_pipeline__name_defaults_to_file_name(void **state)
{
	struct mlp_pipeline *p = NULL;
	struct mlp_diags d = {0};
	const char *text = "stages: { a: { run: x } }\n";

	(void)state;
	assert_int_equal(mlp_pipeline_parse(&p, &d, "dir/nightly-retrain.yaml", text, strlen(text)),
	                 0);
	assert_string_equal(p->name, "nightly-retrain");
	mlp_pipeline_free(p);
	assert_int_equal(mlp_pipeline_parse(&p, &d, "x.yml", text, strlen(text)), 0);
	assert_string_equal(p->name, "x");
	assert_false(p->on_push);
	assert_int_equal(p->nschedules, 0);
	assert_int_equal(p->default_kill_grace_ms, 10000);
	assert_int_equal(p->stages[0].kill_grace_ms, 10000);
	assert_int_equal(p->stages[0].timeout_ms, 0);
	assert_int_equal(p->stages[0].retry.max, 0);
	mlp_pipeline_free(p);
}

static void test_pipeline__topological_order_breaks_ties_by_file_order(void **state)
{
	struct mlp_pipeline *p = parse_ok("stages:\n"
	                                  "  deploy: { needs: [test, lint], run: d }\n"
	                                  "  test: { needs: [build], run: t }\n"
	                                  "  lint: { run: l }\n"
	                                  "  build: { run: b }\n"
	                                  "  docs: { needs: build, run: x }\n");
	static const char *const want[] = {"lint", "build", "test", "deploy", "docs"};

	(void)state;
	for (size_t i = 0; i < 5; i++)
		assert_string_equal(p->stages[p->order[i]].name, want[i]);
	assert_true(mlp_pipeline_depends_on(p, 0, 3)); /* deploy -> test -> build */
	assert_true(mlp_pipeline_depends_on(p, 0, 2));
	assert_false(mlp_pipeline_depends_on(p, 3, 0));
	assert_false(mlp_pipeline_depends_on(p, 2, 2));
	assert_false(mlp_pipeline_depends_on(p, 4, 2));
	assert_false(mlp_pipeline_depends_on(p, 99, 0));
	assert_int_equal(mlp_pipeline_find_stage(p, "docs"), 4);
	assert_int_equal(mlp_pipeline_find_stage(p, "nope"), -1);
	mlp_pipeline_free(p);
}

static void test_pipeline__on_accepts_word_list_and_map(void **state)
{
	struct mlp_pipeline *p;

	(void)state;
	p = parse_ok("on: push\nstages: { a: { run: x } }\n");
	assert_true(p->on_push);
	assert_int_equal(p->npush_branches, 0);
	mlp_pipeline_free(p);
	p = parse_ok("on: [push]\nstages: { a: { run: x } }\n");
	assert_true(p->on_push);
	mlp_pipeline_free(p);
	p = parse_ok("on: { push: }\nstages: { a: { run: x } }\n");
	assert_true(p->on_push);
	mlp_pipeline_free(p);
	p = parse_ok("on: { push: { branches: main, tags: [v1, v2] } }\n"
	             "stages: { a: { run: x } }\n");
	assert_int_equal(p->npush_branches, 1);
	assert_string_equal(p->push_branches[0], "main");
	assert_int_equal(p->npush_tags, 2);
	mlp_pipeline_free(p);
	p = parse_ok("on: { schedule: [ { cron: '@hourly' } ] }\nstages: { a: { run: x } }\n");
	assert_false(p->on_push);
	assert_int_equal(p->nschedules, 1);
	mlp_pipeline_free(p);
}

static void test_pipeline__retry_forms_and_inheritance(void **state)
{
	struct mlp_pipeline *p =
	        parse_ok("defaults:\n"
	                 "  retry: { max: 2, backoff: 3s, on: [timeout, signal:segv] }\n"
	                 "stages:\n"
	                 "  inherits: { run: a }\n"
	                 "  count: { run: b, retry: 5 }\n"
	                 "  single: { run: c, retry: { on: exit:3 } }\n");
	const struct mlp_stage *st;

	(void)state;
	st = stage(p, "inherits");
	assert_int_equal(st->retry.max, 2);
	assert_int_equal(st->retry.backoff_ms, 3000);
	assert_int_equal(st->retry.non, 2);
	assert_int_equal(st->retry.on[0].match, MLP_RETRY_TIMEOUT);
	assert_int_equal(st->retry.on[1].value, SIGSEGV);
	assert_ptr_not_equal(st->retry.on, p->default_retry.on); /* its own copy */
	st = stage(p, "count");
	assert_int_equal(st->retry.max, 5);
	assert_int_equal(st->retry.backoff_ms, 1000); /* replaced, not merged */
	assert_int_equal(st->retry.non, 0);
	st = stage(p, "single");
	assert_int_equal(st->retry.max, 1);
	assert_int_equal(st->retry.non, 1);
	assert_int_equal(st->retry.on[0].match, MLP_RETRY_EXIT);
	assert_int_equal(st->retry.on[0].value, 3);
	mlp_pipeline_free(p);
}

static void test_pipeline__if_accepts_the_three_functions(void **state)
{
	struct mlp_pipeline *p = parse_ok("stages:\n"
	                                  "  a: { run: x }\n"
	                                  "  b: { needs: a, run: x, if: success() }\n"
	                                  "  c: { needs: a, run: x, if: '${{failure()}}' }\n"
	                                  "  d: { needs: a, run: x, if: \"${{ always() }}\" }\n");

	(void)state;
	assert_int_equal(stage(p, "a")->cond, MLP_IF_SUCCESS);
	assert_int_equal(stage(p, "b")->cond, MLP_IF_SUCCESS);
	assert_int_equal(stage(p, "c")->cond, MLP_IF_FAILURE);
	assert_int_equal(stage(p, "d")->cond, MLP_IF_ALWAYS);
	mlp_pipeline_free(p);
}

static void test_pipeline__gate_metrics_from_defaults_to_single_need(void **state)
{
	struct mlp_pipeline *p = parse_ok("stages:\n"
	                                  "  evaluate: { run: x }\n"
	                                  "  gate: { needs: evaluate, gate: { model: m } }\n");

	(void)state;
	assert_string_equal(stage(p, "gate")->gate.metrics_from, "evaluate");
	mlp_pipeline_free(p);
}

static void test_pipeline__metrics_from_may_be_a_transitive_need(void **state)
{
	struct mlp_pipeline *p = parse_ok(
	        "stages:\n"
	        "  evaluate: { run: x }\n"
	        "  report: { needs: evaluate, run: y }\n"
	        "  gate: { needs: report, gate: { model: m, metrics_from: evaluate } }\n"
	        "  use: { needs: gate, run: 'echo ${{ stages.evaluate.metrics.acc }}' }\n");

	(void)state;
	mlp_pipeline_free(p);
}

static void test_pipeline__merge_keys_first_source_wins(void **state)
{
	struct mlp_pipeline *p = parse_ok("x-a: &a { run: from-a, timeout: 1m }\n"
	                                  "x-b: &b { run: from-b, timeout: 2m, kill_grace: 3s }\n"
	                                  "stages:\n"
	                                  "  s:\n"
	                                  "    <<: [*a, *b]\n"
	                                  "    timeout: 5m\n");
	const struct mlp_stage *st = stage(p, "s");

	(void)state;
	assert_string_equal(st->run, "from-a");
	assert_int_equal(st->timeout_ms, 300000);
	assert_int_equal(st->kill_grace_ms, 3000);
	mlp_pipeline_free(p);
}

static void test_pipeline__merged_keys_are_not_duplicates(void **state)
{
	struct mlp_pipeline *p = parse_ok("x-base: &base { run: make, timeout: 1m }\n"
	                                  "stages:\n"
	                                  "  a: { <<: *base, run: make all }\n"
	                                  "  b: *base\n");

	(void)state;
	assert_string_equal(stage(p, "a")->run, "make all");
	assert_string_equal(stage(p, "b")->run, "make");
	mlp_pipeline_free(p);
}

/* ---- messages --------------------------------------------------------- */

static void test_pipeline__empty_text_is_an_empty_pipeline(void **state)
{
	(void)state;
	expect_diags("", "1:1: empty pipeline file\n");
	expect_diags("# nothing\n\n   # here\n", "1:1: empty pipeline file\n");
	expect_diags("---\n", "1:1: empty pipeline file\n");
}

static void test_pipeline__top_level_must_be_a_mapping(void **state)
{
	(void)state;
	expect_diags("\n  just text\n", "2:3: a pipeline file must be a mapping of keys "
	                                "(name, on, env, stages ...)\n");
}

static void test_pipeline__syntax_error_is_the_only_problem(void **state)
{
	(void)state;
	expect_diags("nmae: x\nstages:\n  a: { run: x\n",
	             "4:1: did not find expected ',' or '}' (while parsing a flow mapping "
	             "that starts at 3:6)\n");
}

static void test_pipeline__tab_indentation_is_explained(void **state)
{
	(void)state;
	expect_diags("stages:\n  a:\n    run: x\n\t  env: {}\n",
	             "4:1: tab character used for indentation (YAML allows spaces only)\n");
	expect_diags("stages:\n\ta:\n", "2:1: tab character used for indentation "
	                                "(YAML allows spaces only)\n");
}

static void test_pipeline__invalid_utf8_points_at_the_byte(void **state)
{
	(void)state;
	expect_diags("stages:\n  a:\n    run: \xc3\xa9t\xc3\n", "3:12: invalid UTF-8 byte 0xc3\n");
	expect_diags("name: \xff\n", "1:7: invalid UTF-8 byte 0xff\n");
	/* An overlong encoding of '/'. */
	expect_diags("name: a\xc0\xaf\n", "1:8: invalid UTF-8 byte 0xc0\n");
}

static void test_pipeline__binary_data_is_refused(void **state)
{
	struct mlp_pipeline *p = NULL;
	struct mlp_diags d = {0};
	static const char text[] = "stages:\n  a: { run: x }\n\0\0\0garbage";

	(void)state;
	assert_int_equal(mlp_pipeline_parse(&p, &d, "bin", text, sizeof(text) - 1), MLP_EINVAL);
	assert_int_equal(d.len, 1);
	assert_int_equal(d.items[0].pos.line, 3);
	assert_int_equal(d.items[0].pos.col, 1);
	assert_string_equal(d.items[0].message, "binary data in pipeline file");
	mlp_diags_free(&d);
	expect_diags("\x7f"
	             "ELF\x02\x01",
	             "1:1: binary data in pipeline file\n");
}

static void test_pipeline__too_large_text_is_refused(void **state)
{
	size_t len = MLP_PIPELINE_MAX_BYTES + 1;
	char *text = xmalloc(len);
	struct mlp_pipeline *p = NULL;
	struct mlp_diags d = {0};

	(void)state;
	memset(text, '#', len);
	assert_int_equal(mlp_pipeline_parse(&p, &d, "big.yml", text, len), MLP_EINVAL);
	assert_int_equal(d.len, 1);
	assert_string_equal(d.items[0].message,
	                    "file is too large (1048577 bytes; the limit is 1048576)");
	mlp_diags_free(&d);
	free(text);
}

static void test_pipeline__load_reports_a_large_file_as_a_diag(void **state)
{
	char path[] = "/tmp/mlpipe-test-pipeline.XXXXXX";
	int fd = mkstemp(path);
	struct mlp_pipeline *p = NULL;
	struct mlp_diags d = {0};

	(void)state;
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 2 * 1024 * 1024), 0);
	close(fd);
	assert_int_equal(mlp_pipeline_load(&p, &d, path), MLP_EINVAL);
	assert_int_equal(d.len, 1);
	assert_string_equal(d.items[0].file, path);
	assert_int_equal(d.items[0].pos.line, 1);
	assert_int_equal(d.items[0].pos.col, 1);
	assert_string_equal(d.items[0].message,
	                    "file is too large (2097152 bytes; the limit is 1048576)");
	mlp_diags_free(&d);
	unlink(path);
}

static void test_pipeline__load_missing_file_sets_the_error(void **state)
{
	struct mlp_pipeline *p = (struct mlp_pipeline *)1;
	struct mlp_diags d = {0};

	(void)state;
	assert_int_equal(mlp_pipeline_load(&p, &d, "/nonexistent/pipeline.yml"), MLP_ENOTFOUND);
	assert_null(p);
	assert_int_equal(d.len, 0);
	assert_string_equal(mlp_error_last(),
	                    "/nonexistent/pipeline.yml: No such file or directory");
	assert_int_equal(mlp_pipeline_load(&p, &d, "/"), MLP_EIO);
	assert_int_equal(d.len, 0);
}

/* Builds "stages: { a: { run: x, env: [[[...]]] } }" with n lists. */
static char *nested(int n)
{
	struct mlp_buf b = {0};

	mlp_buf_puts(&b, "stages: { a: { run: x, env: ");
	for (int i = 0; i < n; i++)
		mlp_buf_putc(&b, '[');
	for (int i = 0; i < n; i++)
		mlp_buf_putc(&b, ']');
	mlp_buf_puts(&b, " } }\n");
	return mlp_buf_detach(&b);
}

static void test_pipeline__nesting_stops_at_64_levels(void **state)
{
	char *ok = nested(61); /* 3 mappings + 61 lists = 64 */
	char *bad = nested(62);
	char *deep = nested(100000);
	struct mlp_diags d = {0};
	struct mlp_pipeline *p = NULL;

	(void)state;
	/* 64 levels parse; the env is then the wrong type, which is fine. */
	expect_diags(ok, "1:29: 'env' must be a mapping of NAME: value, not a list\n");
	expect_diags(bad, "1:90: nesting too deep (more than 64 levels)\n");
	assert_int_equal(mlp_pipeline_parse(&p, &d, "deep", deep, strlen(deep)), MLP_EINVAL);
	assert_int_equal(d.len, 1);
	assert_string_equal(d.items[0].message, "nesting too deep (more than 64 levels)");
	mlp_diags_free(&d);
	free(ok);
	free(bad);
	free(deep);
}

static void test_pipeline__alias_bombs_are_stopped(void **state)
{
	struct mlp_buf b = {0};
	char *text;
	struct mlp_diags d = {0};
	struct mlp_pipeline *p = NULL;

	(void)state;
	mlp_buf_puts(&b, "x-0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
	for (int i = 1; i < 9; i++)
		mlp_buf_printf(&b,
		               "x-%d: &a%d [*a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, "
		               "*a%d, *a%d, *a%d]\n",
		               i, i, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1,
		               i - 1);
	mlp_buf_puts(&b, "stages: { a: { run: x } }\n");
	text = mlp_buf_detach(&b);
	assert_int_equal(mlp_pipeline_parse(&p, &d, "bomb", text, strlen(text)), MLP_EINVAL);
	assert_int_equal(d.len, 1);
	assert_string_equal(d.items[0].message,
	                    "too many alias expansions (more than 100000 nodes)");
	assert_int_equal(d.items[0].pos.line, 5);
	mlp_diags_free(&d);
	free(text);
}

static void test_pipeline__unknown_keys_suggest_the_nearest(void **state)
{
	(void)state;
	expect_diags("stagez: {}\n",
	             "1:1: unknown key 'stagez' (did you mean 'stages'?)\n"
	             "1:1: missing 'stages' (a mapping of stage names to stages)\n");
	expect_diags("stages:\n  a:\n    run: x\n    neds: b\n    zzzzzz: 1\n",
	             "4:5: unknown key 'neds' in stage 'a' (did you mean 'needs'?)\n"
	             "5:5: unknown key 'zzzzzz' in stage 'a'\n");
}

static void test_pipeline__booleans_are_yaml_1_2(void **state)
{
	struct mlp_pipeline *p = parse_ok("stages:\n"
	                                  "  a: { run: x, continue_on_error: True }\n"
	                                  "  b: { run: x, continue_on_error: FALSE }\n");

	(void)state;
	assert_true(stage(p, "a")->continue_on_error);
	assert_false(stage(p, "b")->continue_on_error);
	mlp_pipeline_free(p);
	expect_diags("stages: { a: { run: x, continue_on_error: no } }\n",
	             "1:43: 'continue_on_error' must be true or false, not 'no' (YAML 1.2 "
	             "reads yes/no/on/off as strings)\n");
	expect_diags("stages: { a: { run: x, continue_on_error: 'yes' } }\n",
	             "1:43: 'continue_on_error' must be true or false, not 'yes'\n");
}

static void test_pipeline__integers_must_be_plain_and_fit(void **state)
{
	(void)state;
	expect_diags("stages: { a: { train: { ranks: \"5\", command: x } } }\n",
	             "1:32: 'ranks' must be an integer, not the string \"5\"\n");
	expect_diags("stages: { a: { train: { ranks: 9223372036854775808, command: x } } }\n",
	             "1:32: 'ranks' must be at most 2147483647, not 9223372036854775808\n");
	expect_diags("stages: { a: { train: { ranks: 2147483648, command: x } } }\n",
	             "1:32: 'ranks' must be at most 2147483647, not 2147483648\n");
	expect_diags("stages: { a: { train: { nodes: -99999999999999999999, command: x } } }\n",
	             "1:32: 'nodes' must be at least 1, not -99999999999999999999\n");
	expect_diags("stages: { a: { train: { nodes: 0x10, command: x } } }\n",
	             "1:32: 'nodes' must be an integer, not '0x10'\n");
}

static void test_pipeline__every_problem_is_reported(void **state)
{
	(void)state;
	expect_diags("defaults: { timeout: 0s }\n"
	             "stages:\n"
	             "  a: { run: x, timeout: 5 }\n"
	             "  b: { needs: [c], run: y, retry: { on: [exit:x] } }\n"
	             "  a: { run: z }\n",
	             "1:22: 'timeout' must be more than 0\n"
	             "3:25: 'timeout': duration '5' has no unit (write e.g. '5s' or '5m')\n"
	             "4:16: stage 'b' needs 'c', which does not exist\n"
	             "4:42: unknown retry rule 'exit:x' (the rules are any, exit, exit:N "
	             "with N 0-255, signal, signal:NAME such as signal:KILL, signal:N with "
	             "N 1-64, and timeout)\n"
	             "5:3: duplicate stage 'a' (first defined at 3:3)\n");
}

static void test_pipeline__every_cycle_is_named_once(void **state)
{
	(void)state;
	expect_diags("stages:\n"
	             "  a: { needs: b, run: x }\n"
	             "  b: { needs: [a, c], run: x }\n"
	             "  c: { needs: a, run: x }\n"
	             "  d: { needs: e, run: x }\n"
	             "  e: { needs: d, run: x }\n"
	             "  f: { needs: [a, d], run: x }\n",
	             "2:3: dependency cycle: a -> b -> a\n"
	             "5:3: dependency cycle: d -> e -> d\n");
	expect_diags("stages:\n"
	             "  z: { needs: y, run: x }\n"
	             "  y: { needs: x, run: x }\n"
	             "  x: { needs: w, run: x }\n"
	             "  w: { needs: z, run: x }\n",
	             "2:3: dependency cycle: z -> y -> x -> w -> z\n");
}

static void test_pipeline__needs_problems(void **state)
{
	(void)state;
	expect_diags("stages:\n"
	             "  build: { run: x }\n"
	             "  test: { needs: [biuld, test, build, build], run: x }\n",
	             "3:19: stage 'test' needs 'biuld', which does not exist (did you mean "
	             "'build'?)\n"
	             "3:26: stage 'test' needs itself\n"
	             "3:39: stage 'test' needs 'build' twice (first at 3:32)\n");
}

static void test_pipeline__expression_columns(void **state)
{
	(void)state;
	/* Plain, quoted, with a multi-byte character before it, and a block
	 * (whose lines map to the file's, less the indentation). */
	expect_diags("stages:\n"
	             "  a:\n"
	             "    run: echo ${{ stages.b.outputs.x }}\n"
	             "  b: { run: \"\xc3\xa9 ${{ nope }}\" }\n"
	             "  c:\n"
	             "    run: |\n"
	             "      echo ${{ stages.zz.outputs.k }}\n",
	             "3:15: stage 'a' uses outputs of 'b' but does not need it (add it "
	             "to needs)\n"
	             "4:16: unknown context 'nope' in expression (known: run, env, "
	             "stages)\n"
	             "7:12: unknown stage 'zz' in expression\n");
	/* Escapes make the source differ from the value: the value's start. */
	expect_diags("stages: { a: { run: \"\\t${{ x }}\" } }\n",
	             "1:21: unknown context 'x' in expression (known: run, env, stages)\n");
}

static void test_pipeline__pipeline_env_cannot_use_stage_outputs(void **state)
{
	(void)state;
	expect_diags("env:\n"
	             "  A: ${{ env.HOME }}/${{ run.id }}\n"
	             "  B: x ${{ stages.a.metrics.acc }}\n"
	             "stages: { a: { run: x } }\n",
	             "3:8: the pipeline's env may use only env, run.id and run.commit in "
	             "expressions "
	             "(stage metrics exist only within stages)\n");
}

static void test_pipeline__duplicate_keys_are_reported_once(void **state)
{
	(void)state;
	/* The mapping is shared by two aliases, but written once. */
	expect_diags("x-e: &e { A: 1, A: 2 }\n"
	             "stages:\n"
	             "  a: { run: x, env: *e }\n"
	             "  b: { run: x, env: *e }\n",
	             "1:17: duplicate key 'A' (first defined at 1:11)\n");
}

static void test_pipeline__shared_mistakes_are_reported_once(void **state)
{
	(void)state;
	/* The bad timeout is checked once per stage that merges it. */
	expect_diags("x-t: &t { timeout: 5 }\n"
	             "stages:\n"
	             "  a: { <<: *t, run: x }\n"
	             "  b: { <<: *t, run: y }\n",
	             "1:20: 'timeout': duration '5' has no unit (write e.g. '5s' or '5m')\n");
}

static void test_pipeline__diags_of_several_files_stay_apart(void **state)
{
	struct mlp_pipeline *p = NULL;
	struct mlp_diags d = {0};
	const char *one = "\n\nstages: { a: { run: x, nope: 1 } }\n";
	const char *two = "stages: { b: { run: x, zip: 1 } }\n";
	char *text;

	(void)state;
	assert_int_equal(mlp_pipeline_parse(&p, &d, "one.yml", one, strlen(one)), MLP_EINVAL);
	assert_int_equal(mlp_pipeline_parse(&p, &d, "two.yml", two, strlen(two)), MLP_EINVAL);
	text = diags_text(&d);
	assert_string_equal(text, "3:24: unknown key 'nope' in stage 'a'\n"
	                          "1:24: unknown key 'zip' in stage 'b'\n");
	assert_string_equal(d.items[0].file, "one.yml");
	assert_string_equal(d.items[1].file, "two.yml");
	free(text);
	mlp_diags_free(&d);
}

static void test_pipeline__second_document_is_refused(void **state)
{
	(void)state;
	expect_diags("stages: { a: { run: x } }\n---\nname: b\n",
	             "2:1: a second YAML document (a pipeline file holds one)\n");
}

/* ---- diags ------------------------------------------------------------ */

static void test_pipeline__diags_sort_is_stable(void **state)
{
	struct mlp_diags d = {0};
	static const int lines[] = {3, 1, 2, 1, 3, 1};
	static const int cols[] = {1, 5, 2, 5, 1, 1};
	static const char *const want[] = {"5", "1", "3", "2", "0", "4"};
	char *f = NULL;
	FILE *mem;
	size_t size = 0;

	(void)state;
	for (int i = 0; i < 6; i++)
		mlp_diags_add(&d, "f.yml", (struct mlp_pos){lines[i], cols[i]}, "%d", i);
	mlp_diags_sort(&d);
	for (int i = 0; i < 6; i++)
		assert_string_equal(d.items[i].message, want[i]);
	mlp_diags_add(&d, "f.yml", (struct mlp_pos){0, 0}, "no position");
	mem = open_memstream(&f, &size);
	mlp_diags_print(&d, mem);
	fclose(mem);
	assert_string_equal(f, "f.yml:1:1: 5\nf.yml:1:5: 1\nf.yml:1:5: 3\nf.yml:2:2: 2\n"
	                       "f.yml:3:1: 0\nf.yml:3:1: 4\nf.yml: no position\n");
	free(f);
	mlp_diags_free(&d);
	assert_null(d.items);
	assert_int_equal(d.len, 0);
	mlp_diags_free(&d); /* twice is harmless */
}

static void test_pipeline__kind_names(void **state)
{
	(void)state;
	assert_string_equal(mlp_stage_kind_name(MLP_STAGE_RUN), "run");
	assert_string_equal(mlp_stage_kind_name(MLP_STAGE_TRAIN), "train");
	assert_string_equal(mlp_stage_kind_name(MLP_STAGE_GATE), "gate");
	assert_string_equal(mlp_stage_kind_name(MLP_STAGE_ROLLOUT), "rollout");
	mlp_pipeline_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_pipeline__good_fixtures_load),
	        cmocka_unit_test(test_pipeline__bad_fixtures_match_expected),
	        cmocka_unit_test(test_pipeline__design_example_fills_every_struct),
	        cmocka_unit_test(test_pipeline__all_keys_fill_every_field),
	        cmocka_unit_test(test_pipeline__anchors_and_merge_keys),
	        cmocka_unit_test(test_pipeline__name_defaults_to_file_name),
	        cmocka_unit_test(test_pipeline__topological_order_breaks_ties_by_file_order),
	        cmocka_unit_test(test_pipeline__on_accepts_word_list_and_map),
	        cmocka_unit_test(test_pipeline__retry_forms_and_inheritance),
	        cmocka_unit_test(test_pipeline__if_accepts_the_three_functions),
	        cmocka_unit_test(test_pipeline__gate_metrics_from_defaults_to_single_need),
	        cmocka_unit_test(test_pipeline__metrics_from_may_be_a_transitive_need),
	        cmocka_unit_test(test_pipeline__merge_keys_first_source_wins),
	        cmocka_unit_test(test_pipeline__merged_keys_are_not_duplicates),
	        cmocka_unit_test(test_pipeline__empty_text_is_an_empty_pipeline),
	        cmocka_unit_test(test_pipeline__top_level_must_be_a_mapping),
	        cmocka_unit_test(test_pipeline__syntax_error_is_the_only_problem),
	        cmocka_unit_test(test_pipeline__tab_indentation_is_explained),
	        cmocka_unit_test(test_pipeline__invalid_utf8_points_at_the_byte),
	        cmocka_unit_test(test_pipeline__binary_data_is_refused),
	        cmocka_unit_test(test_pipeline__too_large_text_is_refused),
	        cmocka_unit_test(test_pipeline__load_reports_a_large_file_as_a_diag),
	        cmocka_unit_test(test_pipeline__load_missing_file_sets_the_error),
	        cmocka_unit_test(test_pipeline__nesting_stops_at_64_levels),
	        cmocka_unit_test(test_pipeline__alias_bombs_are_stopped),
	        cmocka_unit_test(test_pipeline__unknown_keys_suggest_the_nearest),
	        cmocka_unit_test(test_pipeline__booleans_are_yaml_1_2),
	        cmocka_unit_test(test_pipeline__integers_must_be_plain_and_fit),
	        cmocka_unit_test(test_pipeline__every_problem_is_reported),
	        cmocka_unit_test(test_pipeline__every_cycle_is_named_once),
	        cmocka_unit_test(test_pipeline__needs_problems),
	        cmocka_unit_test(test_pipeline__expression_columns),
	        cmocka_unit_test(test_pipeline__pipeline_env_cannot_use_stage_outputs),
	        cmocka_unit_test(test_pipeline__duplicate_keys_are_reported_once),
	        cmocka_unit_test(test_pipeline__shared_mistakes_are_reported_once),
	        cmocka_unit_test(test_pipeline__diags_of_several_files_stay_apart),
	        cmocka_unit_test(test_pipeline__second_document_is_refused),
	        cmocka_unit_test(test_pipeline__diags_sort_is_stable),
	        cmocka_unit_test(test_pipeline__kind_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
