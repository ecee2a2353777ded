/*
 * test-store.c - the SQLite store on a real database file: migrations,
 * runs, attempts, outputs, metrics, liveness of runs whose process died,
 * and the errors a user sees for a locked, corrupt or too-new database.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/error.h"
#include "store/store.h"
#include "store/store-runs.h"
#include "base/util.h"

struct fixture {
	char dir[64];
	char *db;
};

static int setup(void **state)
{
	struct fixture *f = xcalloc(1, sizeof(*f));

	snprintf(f->dir, sizeof(f->dir), "/tmp/mlpipe-store-XXXXXX");
	if (mkdtemp(f->dir) == NULL)
		return -1;
	f->db = xasprintf("%s/sub/dir/mlpipe.db", f->dir);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char *cmd = xasprintf("rm -rf '%s'", f->dir);

	if (system(cmd) != 0)
		return -1;
	free(cmd);
	free(f->db);
	free(f);
	return 0;
}

static const struct mlp_run_new sample_run = {
        .pipeline = "fashion",
        .pipeline_path = "/p/pipeline.yml",
        .pipeline_text = "name: fashion\n",
        .pipeline_sha256 = "abc",
        .trigger = "cli",
        .user = "ada",
        .git_commit = "0123456789abcdef",
        .workspace = "/p",
};

static void test_store__open_creates_and_migrates(void **state)
{
	struct fixture *f = *state;
	struct mlp_store *s;
	int version;
	sqlite3 *db;
	sqlite3_stmt *st;

	assert_int_equal(mlp_store_open(&s, f->db, 0), 0);
	assert_int_equal(mlp_store_schema_version(&version, s), 0);
	assert_int_equal(version, mlp_store_schema_latest());
	mlp_store_close(s);
	/* Opening again is a no-op migration. */
	assert_int_equal(mlp_store_open(&s, f->db, 0), 0);
	mlp_store_close(s);

	assert_int_equal(sqlite3_open(f->db, &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
	sqlite3_finalize(st);
	sqlite3_close(db);
}

static void test_store__runs_round_trip(void **state)
{
	struct fixture *f = *state;
	struct mlp_store *s;
	struct mlp_run_info r, *list;
	struct mlp_run_filter filter = {.pipeline = "fashion"};
	size_t n;
	int64_t id1, id2;

	assert_int_equal(mlp_store_open(&s, f->db, 0), 0);
	assert_int_equal(mlp_store_run_create(&id1, s, &sample_run), 0);
	assert_int_equal(mlp_store_run_finish(s, id1, MLP_STATUS_FAILED, 1, "stage 'x' failed"), 0);
	assert_int_equal(mlp_store_run_create(&id2, s, &sample_run), 0);
	assert_true(id2 > id1);

	assert_int_equal(mlp_store_run_get(&r, s, id1), 0);
	assert_string_equal(r.pipeline, "fashion");
	assert_string_equal(r.pipeline_text, "name: fashion\n");
	assert_string_equal(r.git_commit, "0123456789abcdef");
	assert_int_equal(r.status, MLP_STATUS_FAILED);
	assert_int_equal(r.exit_code, 1);
	assert_string_equal(r.message, "stage 'x' failed");
	assert_true(r.ended_at >= r.started_at);
	mlp_run_info_clear(&r);

	/* Newest first; the second run is still running (we hold its lock). */
	assert_int_equal(mlp_store_runs_list(&list, &n, s, &filter), 0);
	assert_int_equal(n, 2);
	assert_int_equal(list[0].id, id2);
	assert_int_equal(list[0].status, MLP_STATUS_RUNNING);
	assert_int_equal(list[0].exit_code, -1);
	mlp_run_info_free_all(list, n);

	filter.has_status = true;
	filter.status = MLP_STATUS_FAILED;
	assert_int_equal(mlp_store_runs_list(&list, &n, s, &filter), 0);
	assert_int_equal(n, 1);
	assert_int_equal(list[0].id, id1);
	mlp_run_info_free_all(list, n);

	filter.pipeline = "other";
	filter.has_status = false;
	assert_int_equal(mlp_store_runs_list(&list, &n, s, &filter), 0);
	assert_int_equal(n, 0);
	mlp_run_info_free_all(list, n);

	assert_int_equal(mlp_store_run_get(&r, s, 999), MLP_ENOTFOUND);
	assert_string_equal(mlp_error_last(), "no run 999");
	mlp_store_close(s);
}

static void test_store__attempts_outputs_metrics(void **state)
{
	struct fixture *f = *state;
	struct mlp_store *s;
	struct mlp_attempt_info *a;
	struct mlp_stage_value *v;
	size_t n;
	int64_t run, at1, at2;
	struct mlp_attempt_end failed = {
	        .status = MLP_STATUS_FAILED,
	        .exit_code = -1,
	        .signal = SIGKILL,
	        .timed_out = true,
	        .message = "timed out after 1s",
	};
	struct mlp_attempt_end ok = {.status = MLP_STATUS_SUCCEEDED, .exit_code = 0};

	assert_int_equal(mlp_store_open(&s, f->db, 0), 0);
	assert_int_equal(mlp_store_run_create(&run, s, &sample_run), 0);
	assert_int_equal(mlp_store_attempt_start(&at1, s, run, "train", "run", 1, "/l/1"), 0);
	assert_int_equal(mlp_store_attempt_finish(s, at1, &failed), 0);
	assert_int_equal(mlp_store_attempt_start(&at2, s, run, "train", "run", 2, "/l/2"), 0);
	assert_int_equal(mlp_store_attempt_finish(s, at2, &ok), 0);
	assert_int_equal(mlp_store_stage_not_run(s, run, "deploy", "run", MLP_STATUS_SKIPPED,
	                                         "a stage it needs did not succeed"),
	                 0);
	assert_int_equal(mlp_store_output_put(s, run, "train", "model", "m.bin"), 0);
	assert_int_equal(mlp_store_output_put(s, run, "train", "model", "m2.bin"), 0);
	assert_int_equal(mlp_store_metric_put(s, run, "train", "accuracy", 0.875), 0);

	assert_int_equal(mlp_store_attempts_list(&a, &n, s, run), 0);
	assert_int_equal(n, 3);
	assert_string_equal(a[0].stage, "train");
	assert_int_equal(a[0].attempt, 1);
	assert_int_equal(a[0].status, MLP_STATUS_FAILED);
	assert_int_equal(a[0].signal, SIGKILL);
	assert_int_equal(a[0].exit_code, -1);
	assert_true(a[0].timed_out);
	assert_string_equal(a[0].message, "timed out after 1s");
	assert_int_equal(a[1].attempt, 2);
	assert_int_equal(a[1].status, MLP_STATUS_SUCCEEDED);
	assert_int_equal(a[1].exit_code, 0);
	assert_string_equal(a[2].stage, "deploy");
	assert_int_equal(a[2].attempt, 0);
	assert_int_equal(a[2].status, MLP_STATUS_SKIPPED);
	mlp_attempt_info_free_all(a, n);

	assert_int_equal(mlp_store_outputs_list(&v, &n, s, run), 0);
	assert_int_equal(n, 1);
	assert_string_equal(v[0].text, "m2.bin");
	mlp_stage_value_free_all(v, n);
	assert_int_equal(mlp_store_metrics_list(&v, &n, s, run), 0);
	assert_int_equal(n, 1);
	assert_string_equal(v[0].name, "accuracy");
	assert_true(v[0].number == 0.875);
	mlp_stage_value_free_all(v, n);
	mlp_store_close(s);
}

/* A run whose process dies without finishing is interrupted, not running. */
static void test_store__dead_owner_means_interrupted(void **state)
{
	struct fixture *f = *state;
	struct mlp_store *s;
	struct mlp_run_info r;
	int go[2], ready[2], status;
	pid_t pid;
	char c;

	assert_int_equal(pipe(go), 0);
	assert_int_equal(pipe(ready), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct mlp_store *cs;
		int64_t id, at;

		if (mlp_store_open(&cs, f->db, 0) != 0 ||
		    mlp_store_run_create(&id, cs, &sample_run) != 0 ||
		    mlp_store_attempt_start(&at, cs, id, "train", "run", 1, "/l") != 0)
			_exit(1);
		if (write(ready[1], "r", 1) != 1)
			_exit(1);
		if (read(go[0], &c, 1) < 0)
			_exit(1);
		_exit(0); /* dies without mlp_store_run_finish, like kill -9 */
	}
	assert_int_equal(read(ready[0], &c, 1), 1);
	assert_int_equal(mlp_store_open(&s, f->db, 0), 0);
	assert_int_equal(mlp_store_run_get(&r, s, 1), 0);
	assert_int_equal(r.status, MLP_STATUS_RUNNING); /* alive: still running */
	mlp_run_info_clear(&r);
	mlp_store_close(s);

	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	assert_int_equal(mlp_store_open(&s, f->db, 0), 0);
	assert_int_equal(mlp_store_run_get(&r, s, 1), 0);
	assert_int_equal(r.status, MLP_STATUS_INTERRUPTED);
	assert_true(r.ended_at > 0);
	mlp_run_info_clear(&r);
	{
		struct mlp_attempt_info *a;
		size_t n;

		assert_int_equal(mlp_store_attempts_list(&a, &n, s, 1), 0);
		assert_int_equal(n, 1);
		assert_int_equal(a[0].status, MLP_STATUS_INTERRUPTED);
		mlp_attempt_info_free_all(a, n);
	}
	mlp_store_close(s);
	close(go[0]);
	close(go[1]);
	close(ready[0]);
	close(ready[1]);
}

static void test_store__locked_database_is_a_clear_error(void **state)
{
	struct fixture *f = *state;
	struct mlp_store *s;
	sqlite3 *db;
	int64_t id;

	assert_int_equal(mlp_store_open(&s, f->db, 0), 0);
	mlp_store_close(s);
	assert_int_equal(sqlite3_open(f->db, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "BEGIN EXCLUSIVE", NULL, NULL, NULL), SQLITE_OK);
	setenv("MLPIPE_DB_BUSY_TIMEOUT_MS", "100", 1);
	if (mlp_store_open(&s, f->db, 0) == 0) {
		assert_int_equal(mlp_store_run_create(&id, s, &sample_run), MLP_EDB);
		mlp_store_close(s);
	}
	assert_non_null(strstr(mlp_error_last(), "is locked by another process"));
	unsetenv("MLPIPE_DB_BUSY_TIMEOUT_MS");
	sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	sqlite3_close(db);
}

static void test_store__not_a_database(void **state)
{
	struct fixture *f = *state;
	struct mlp_store *s;
	char *path = xasprintf("%s/garbage.db", f->dir);
	FILE *fp = fopen(path, "w");

	assert_non_null(fp);
	for (int i = 0; i < 512; i++)
		fputs("this is not sqlite ", fp);
	fclose(fp);
	assert_int_equal(mlp_store_open(&s, path, 0), MLP_EDB);
	assert_null(s);
	assert_non_null(strstr(mlp_error_last(), "not a database"));
	free(path);
}

static void test_store__newer_schema_is_refused(void **state)
{
	struct fixture *f = *state;
	struct mlp_store *s;
	sqlite3 *db;

	assert_int_equal(mlp_store_open(&s, f->db, 0), 0);
	mlp_store_close(s);
	assert_int_equal(sqlite3_open(f->db, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 999", NULL, NULL, NULL),
	                 SQLITE_OK);
	sqlite3_close(db);
	assert_int_equal(mlp_store_open(&s, f->db, 0), MLP_EDB);
	assert_non_null(strstr(mlp_error_last(), "newer than this mlpipe"));
}

static void test_store__default_path_follows_env(void **state)
{
	char *p;

	setenv("MLPIPE_DB", "/x/y.db", 1);
	assert_int_equal(mlp_store_default_path(&p), 0);
	assert_string_equal(p, "/x/y.db");
	free(p);
	unsetenv("MLPIPE_DB");
	setenv("XDG_DATA_HOME", "/data", 1);
	assert_int_equal(mlp_store_default_path(&p), 0);
	assert_string_equal(p, "/data/mlpipe/mlpipe.db");
	free(p);
	unsetenv("XDG_DATA_HOME");
	setenv("HOME", "/home/ada", 1);
	assert_int_equal(mlp_store_default_path(&p), 0);
	assert_string_equal(p, "/home/ada/.local/share/mlpipe/mlpipe.db");
	free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test_setup_teardown(test_store__open_creates_and_migrates, setup,
	                                        teardown),
	        cmocka_unit_test_setup_teardown(test_store__runs_round_trip, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_store__attempts_outputs_metrics, setup,
	                                        teardown),
	        cmocka_unit_test_setup_teardown(test_store__dead_owner_means_interrupted, setup,
	                                        teardown),
	        cmocka_unit_test_setup_teardown(test_store__locked_database_is_a_clear_error, setup,
	                                        teardown),
	        cmocka_unit_test_setup_teardown(test_store__not_a_database, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_store__newer_schema_is_refused, setup,
	                                        teardown),
	        cmocka_unit_test(test_store__default_path_follows_env),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
