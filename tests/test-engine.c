/*
 * test-engine.c - the engine on real pipelines, a real store and real
 * processes: dependency order, the jobs limit, observers, outputs parsing,
 * and refusing stage kinds this build cannot execute.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/engine.h"
#include "base/error.h"
#include "engine/stage-io.h"
#include "engine/stagekind.h"
#include "store/store.h"
#include "store/store-runs.h"
#include "base/util.h"

struct fixture {
	char dir[64];
	struct mlp_store *store;
	struct mlp_buf events;
	int running, max_running;
};

static int setup(void **state)
{
	struct fixture *f = xcalloc(1, sizeof(*f));
	char *db;

	snprintf(f->dir, sizeof(f->dir), "/tmp/mlpipe-engine-XXXXXX");
	if (mkdtemp(f->dir) == NULL)
		return -1;
	db = xasprintf("%s/mlpipe.db", f->dir);
	if (mlp_store_open(&f->store, db, 0) != 0)
		return -1;
	free(db);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char *cmd = xasprintf("rm -rf '%s'", f->dir);
	int rc = system(cmd);

	free(cmd);
	mlp_store_close(f->store);
	mlp_buf_free(&f->events);
	free(f);
	return rc == 0 ? 0 : -1;
}

static void on_stage(void *payload, size_t index, const struct mlp_stage_view *v)
{
	struct fixture *f = payload;

	if (v->status == MLP_STATUS_RUNNING) {
		mlp_buf_printf(&f->events, "start:%s ", v->name);
		if (++f->running > f->max_running)
			f->max_running = f->running;
	} else if (v->status != MLP_STATUS_QUEUED) {
		if (v->started_ms)
			f->running--;
		mlp_buf_printf(&f->events, "%s:%s ", mlp_status_name(v->status), v->name);
	}
}

static void on_log(void *payload, size_t index, const char *line, size_t len)
{
	struct fixture *f = payload;

	mlp_buf_puts(&f->events, "log:");
	mlp_buf_add(&f->events, line, len);
	mlp_buf_putc(&f->events, ' ');
}

static int run_text(struct fixture *f, const char *yaml, int jobs, struct mlp_engine_result *res)
{
	struct mlp_pipeline *p = NULL;
	struct mlp_diags d = {0};
	struct mlp_engine_observer obs = {.stage = on_stage, .log = on_log, .payload = f};
	char *path = xasprintf("%s/pipeline.yml", f->dir);
	struct mlp_run_new r = {
	        .pipeline = "t",
	        .pipeline_text = yaml,
	        .pipeline_sha256 = "x",
	        .trigger = "cli",
	};
	struct mlp_engine_opts o = {
	        .jobs = jobs,
	        .workspace = f->dir,
	        .self_exe = "/bin/false",
	        .observer = &obs,
	};
	int64_t id;
	int rc;

	rc = mlp_pipeline_parse(&p, &d, path, yaml, strlen(yaml));
	if (rc != 0) {
		mlp_diags_print(&d, stderr);
		fail_msg("pipeline did not parse");
	}
	assert_int_equal(mlp_store_run_create(&id, f->store, &r), 0);
	rc = mlp_engine_run(res, p, f->store, id, &o);
	assert_int_equal(mlp_store_run_finish(f->store, id, res->status, 0, res->message), 0);
	mlp_pipeline_free(p);
	mlp_diags_free(&d);
	free(path);
	return rc;
}

static void test_engine__diamond_runs_in_dependency_order(void **state)
{
	struct fixture *f = *state;
	struct mlp_engine_result res;
	const char *ev;

	assert_int_equal(run_text(f,
	                          "stages:\n"
	                          "  d: {needs: [b, c], run: echo d}\n"
	                          "  b: {needs: [a], run: echo b}\n"
	                          "  c: {needs: [a], run: echo c}\n"
	                          "  a: {run: echo a}\n",
	                          4, &res),
	                 0);
	assert_int_equal(res.status, MLP_STATUS_SUCCEEDED);
	assert_null(res.message);
	ev = mlp_buf_str(&f->events);
	/* a before b and c; d only after both have succeeded. */
	assert_true(strstr(ev, "succeeded:a") < strstr(ev, "start:b"));
	assert_true(strstr(ev, "succeeded:a") < strstr(ev, "start:c"));
	assert_true(strstr(ev, "succeeded:b") < strstr(ev, "start:d"));
	assert_true(strstr(ev, "succeeded:c") < strstr(ev, "start:d"));
	/* A stage's log lines come before its end. */
	assert_true(strstr(ev, "log:d") < strstr(ev, "succeeded:d"));
}

static void test_engine__jobs_limit_is_respected(void **state)
{
	struct fixture *f = *state;
	struct mlp_engine_result res;

	assert_int_equal(run_text(f,
	                          "stages:\n"
	                          "  a: {run: sleep 0.1}\n"
	                          "  b: {run: sleep 0.1}\n"
	                          "  c: {run: sleep 0.1}\n"
	                          "  d: {run: sleep 0.1}\n",
	                          2, &res),
	                 0);
	assert_int_equal(res.status, MLP_STATUS_SUCCEEDED);
	assert_int_equal(f->max_running, 2);
}

static void test_engine__failure_skips_dependants_and_names_the_stage(void **state)
{
	struct fixture *f = *state;
	struct mlp_engine_result res;

	assert_int_equal(run_text(f,
	                          "stages:\n"
	                          "  a: {run: exit 7}\n"
	                          "  b: {needs: [a], run: echo never}\n",
	                          2, &res),
	                 0);
	assert_int_equal(res.status, MLP_STATUS_FAILED);
	assert_string_equal(res.message, "stage 'a' failed: exit code 7");
	assert_non_null(strstr(mlp_buf_str(&f->events), "skipped:b"));
	assert_null(strstr(mlp_buf_str(&f->events), "log:never"));
	free(res.message);
}

static void test_engine__partial_last_line_is_delivered(void **state)
{
	struct fixture *f = *state;
	struct mlp_engine_result res;

	assert_int_equal(run_text(f, "stages:\n  a: {run: printf 'x\\ny'}\n", 1, &res), 0);
	assert_non_null(strstr(mlp_buf_str(&f->events), "log:x log:y succeeded:a"));
}

static void test_engine__refuses_kinds_this_build_cannot_run(void **state)
{
	static const char yaml[] = "stages:\n"
	                           "  t: {run: \"true\"}\n"
	                           "  g:\n"
	                           "    needs: [t]\n"
	                           "    gate: {model: m, allow_empty: true}\n";
	struct mlp_pipeline *p = NULL;
	struct mlp_diags d = {0};

	assert_int_equal(mlp_pipeline_parse(&p, &d, "p.yml", yaml, strlen(yaml)), 0);
	if (mlp_stage_kind_ops(MLP_STAGE_GATE)->prepare == NULL) {
		assert_int_equal(mlp_engine_check(p, &d), MLP_EINVAL);
		assert_int_equal(d.len, 1);
		assert_int_equal(d.items[0].pos.line, 5);
		assert_non_null(strstr(d.items[0].message, "'gate' stages are not executed"));
	} else {
		assert_int_equal(mlp_engine_check(p, &d), 0);
	}
	mlp_diags_free(&d);
	mlp_pipeline_free(p);
}

static void test_engine__outputs_parse_lines_and_heredocs(void **state)
{
	static const char text[] = "model=out/model.bin\r\n"
	                           "\n"
	                           "empty=\n"
	                           "notes<<EOF\n"
	                           "line one\n"
	                           "a=b\n"
	                           "EOF\n"
	                           "model=override\n";
	struct mlp_kvlist l = {0};

	assert_int_equal(mlp_outputs_parse(&l, text, strlen(text)), 0);
	assert_int_equal(l.len, 3);
	assert_string_equal(mlp_kvlist_get(&l, "model"), "override");
	assert_string_equal(mlp_kvlist_get(&l, "empty"), "");
	assert_string_equal(mlp_kvlist_get(&l, "notes"), "line one\na=b");
	mlp_kvlist_free(&l);
}

static void test_engine__outputs_reject_malformed_lines(void **state)
{
	struct mlp_kvlist l = {0};

	assert_int_equal(mlp_outputs_parse(&l, "ok=1\nno equals sign\n", 18), MLP_EINVAL);
	assert_string_equal(mlp_error_last(),
	                    "$MLPIPE_OUTPUT line 2: expected KEY=VALUE (KEY: letters, digits, "
	                    "'_' and '-')");
	mlp_kvlist_free(&l);
	assert_int_equal(mlp_outputs_parse(&l, "1bad=x\n", 7), MLP_EINVAL);
	mlp_kvlist_free(&l);
	assert_int_equal(mlp_outputs_parse(&l, "v<<END\nabc\n", 11), MLP_EINVAL);
	assert_non_null(strstr(mlp_error_last(), "missing its closing delimiter 'END'"));
	mlp_kvlist_free(&l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test_setup_teardown(test_engine__diamond_runs_in_dependency_order,
	                                        setup, teardown),
	        cmocka_unit_test_setup_teardown(test_engine__jobs_limit_is_respected, setup,
	                                        teardown),
	        cmocka_unit_test_setup_teardown(
	                test_engine__failure_skips_dependants_and_names_the_stage, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_engine__partial_last_line_is_delivered, setup,
	                                        teardown),
	        cmocka_unit_test(test_engine__refuses_kinds_this_build_cannot_run),
	        cmocka_unit_test(test_engine__outputs_parse_lines_and_heredocs),
	        cmocka_unit_test(test_engine__outputs_reject_malformed_lines),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
