/*
 * test-queue.c - what `mlpipe serve` keeps in the store (store-queue.c,
 * mlp_store_run_claim in store-runs.c), on a real database file: a
 * delivery recorded in the transaction that queues its run (and in no
 * other), redeliveries and once-per-commit, a claim that only one of many
 * racing processes wins, schedule fire times, cancellation, API tokens
 * found by their hash only, and the counts behind /metrics.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/crypto.h"
#include "base/error.h"
#include "store/store.h"
#include "store/store-queue.h"
#include "base/util.h"

struct fixture {
	char dir[64];
	char *db;
	struct mlp_store *s;
};

static int setup(void **state)
{
	struct fixture *f = xcalloc(1, sizeof(*f));

	snprintf(f->dir, sizeof(f->dir), "/tmp/mlpipe-queue-XXXXXX");
	if (mkdtemp(f->dir) == NULL)
		return -1;
	f->db = xasprintf("%s/mlpipe.db", f->dir);
	if (mlp_store_open(&f->s, f->db, 0) != 0)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char *cmd = xasprintf("rm -rf '%s'", f->dir);

	mlp_store_close(f->s);
	if (system(cmd) != 0)
		return -1;
	free(cmd);
	free(f->db);
	free(f);
	return 0;
}

#define COMMIT_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define COMMIT_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

static const struct mlp_run_queued push_a = {
        .project = "demo",
        .trigger = "webhook",
        .user = "github",
        .git_commit = COMMIT_A,
        .git_ref = "refs/heads/main",
        .once_per_commit = true,
};

/* Runs a statement on a connection of its own (the test's, not the store's). */
static void raw_exec(const char *db, const char *sql)
{
	sqlite3 *c;

	assert_int_equal(sqlite3_open(db, &c), SQLITE_OK);
	assert_int_equal(sqlite3_exec(c, sql, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(c);
}

static int64_t raw_count(const char *db, const char *sql)
{
	sqlite3 *c;
	sqlite3_stmt *st;
	int64_t n;

	assert_int_equal(sqlite3_open(db, &c), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(c, sql, -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	n = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(c);
	return n;
}

static void test_queue__redelivery_queues_nothing(void **state)
{
	struct fixture *f = *state;
	struct mlp_queued_run *q = NULL;
	size_t n = 0;
	int64_t id = 0, again = 0;

	assert_int_equal(mlp_store_run_enqueue(&id, f->s, &push_a, "github", "d-1"), 0);
	assert_true(id > 0);
	assert_int_equal(mlp_store_run_enqueue(&again, f->s, &push_a, "github", "d-1"),
	                 MLP_EEXISTS);
	assert_int_equal(again, id);
	/* The same id from another forge is another delivery; the commit has
	 * a run already, so it points there and queues nothing either. */
	assert_int_equal(mlp_store_run_enqueue(&again, f->s, &push_a, "gitlab", "d-1"),
	                 MLP_EEXISTS);
	assert_int_equal(again, id);
	assert_int_equal(
	        raw_count(f->db, "SELECT count(*) FROM deliveries WHERE run_id IS NOT NULL"), 2);
	assert_int_equal(mlp_store_queue_list(&q, &n, f->s), 0);
	assert_int_equal(n, 1);
	assert_int_equal(q[0].id, id);
	assert_int_equal(q[0].status, MLP_STATUS_QUEUED);
	assert_string_equal(q[0].git_commit, COMMIT_A);
	assert_string_equal(q[0].project, "demo");
	mlp_queued_run_free_all(q, n);
}

/* The dispatcher's list: every running run, and of the queued ones only
 * each project's per_project oldest, whatever the backlog behind them. */
static void test_queue__next_is_each_projects_oldest(void **state)
{
	struct fixture *f = *state;
	struct mlp_run_queued manual = push_a, other = push_a;
	struct mlp_queued_run *q = NULL;
	size_t n = 0;
	int64_t a[4], b = 0;
	bool resumed;

	manual.once_per_commit = false;
	other.project = "other";
	other.once_per_commit = false;
	for (int i = 0; i < 4; i++)
		assert_int_equal(mlp_store_run_enqueue(&a[i], f->s, &manual, NULL, NULL), 0);
	assert_int_equal(mlp_store_run_enqueue(&b, f->s, &other, NULL, NULL), 0);
	assert_int_equal(mlp_store_run_claim(&resumed, f->s, a[0]), 0);

	assert_int_equal(mlp_store_queue_list_next(&q, &n, f->s, 1), 0);
	assert_int_equal(n, 3);
	assert_int_equal(q[0].id, a[0]);
	assert_int_equal(q[0].status, MLP_STATUS_RUNNING);
	assert_int_equal(q[1].id, a[1]);
	assert_int_equal(q[2].id, b);
	mlp_queued_run_free_all(q, n);

	assert_int_equal(mlp_store_queue_list_next(&q, &n, f->s, 2), 0);
	assert_int_equal(n, 4);
	assert_int_equal(q[2].id, a[2]);
	assert_int_equal(q[3].id, b);
	mlp_queued_run_free_all(q, n);

	/* No room: the running run only. */
	assert_int_equal(mlp_store_queue_list_next(&q, &n, f->s, 0), 0);
	assert_int_equal(n, 1);
	assert_int_equal(q[0].id, a[0]);
	mlp_queued_run_free_all(q, n);

	assert_int_equal(mlp_store_queue_list(&q, &n, f->s), 0);
	assert_int_equal(n, 5);
	mlp_queued_run_free_all(q, n);
}

static void test_queue__once_per_commit_is_per_commit(void **state)
{
	struct fixture *f = *state;
	struct mlp_run_queued b = push_a, manual = push_a;
	int64_t a_id = 0, b_id = 0, m1 = 0, m2 = 0;

	b.git_commit = COMMIT_B;
	manual.once_per_commit = false;
	manual.trigger = "api";
	assert_int_equal(mlp_store_run_enqueue(&a_id, f->s, &push_a, "github", "d-a"), 0);
	assert_int_equal(mlp_store_run_enqueue(&b_id, f->s, &b, "github", "d-b"), 0);
	assert_true(b_id > a_id);
	/* Manual runs (no delivery, not once per commit) always queue. */
	assert_int_equal(mlp_store_run_enqueue(&m1, f->s, &manual, NULL, NULL), 0);
	assert_int_equal(mlp_store_run_enqueue(&m2, f->s, &manual, NULL, NULL), 0);
	assert_true(m2 > m1 && m1 > b_id);
}

static void test_queue__ignored_delivery_is_remembered(void **state)
{
	struct fixture *f = *state;
	int64_t id = -1;

	assert_int_equal(mlp_store_delivery_ignore(f->s, "github", "d-del", "demo", "deleted"), 0);
	assert_int_equal(mlp_store_delivery_ignore(f->s, "github", "d-del", "demo", "deleted"),
	                 MLP_EEXISTS);
	/* A later delivery with that id queues nothing: it was ignored (run 0). */
	assert_int_equal(mlp_store_run_enqueue(&id, f->s, &push_a, "github", "d-del"), MLP_EEXISTS);
	assert_int_equal(id, 0);
	assert_int_equal(raw_count(f->db, "SELECT count(*) FROM runs"), 0);
}

/* A run that cannot be queued leaves no delivery behind: the forge's
 * retry must be able to queue it. */
static void test_queue__delivery_and_run_are_one_transaction(void **state)
{
	struct fixture *f = *state;
	int64_t id = 0;

	raw_exec(f->db, "CREATE TRIGGER no_runs BEFORE INSERT ON runs"
	                " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END");
	assert_int_not_equal(mlp_store_run_enqueue(&id, f->s, &push_a, "github", "d-retry"), 0);
	assert_int_equal(raw_count(f->db, "SELECT count(*) FROM deliveries"), 0);
	assert_int_equal(raw_count(f->db, "SELECT count(*) FROM runs"), 0);
	raw_exec(f->db, "DROP TRIGGER no_runs");
	assert_int_equal(mlp_store_run_enqueue(&id, f->s, &push_a, "github", "d-retry"), 0);
	assert_true(id > 0);
	assert_int_equal(raw_count(f->db, "SELECT count(*) FROM deliveries WHERE id = 'd-retry'"
	                                  " AND run_id IS NOT NULL"),
	                 1);
}

/* Eight processes claim one run at once: exactly one gets it.  Each
 * holds on (keeping its liveness lock) until all have tried, so a late
 * claimer cannot mistake the winner for a dead owner. */
static void test_queue__claim_is_atomic(void **state)
{
	struct fixture *f = *state;
	enum { N = 8 };
	int results[2], release[2], won = 0, lost = 0;
	pid_t pids[N];
	int64_t id = 0;
	struct mlp_queued_run q;

	assert_int_equal(mlp_store_run_enqueue(&id, f->s, &push_a, "github", "d-claim"), 0);
	assert_int_equal(pipe(results), 0);
	assert_int_equal(pipe(release), 0);
	for (int i = 0; i < N; i++) {
		pids[i] = fork();
		assert_true(pids[i] >= 0);
		if (pids[i] == 0) {
			struct mlp_store *mine = NULL;
			bool resumed = false;
			char r = 'x', byte;
			int rc;

			close(results[0]);
			close(release[1]);
			if (mlp_store_open(&mine, f->db, 0) == 0) {
				rc = mlp_store_run_claim(&resumed, mine, id);
				r = rc == 0 ? (resumed ? 'r' : 'w') : rc == MLP_EEXISTS ? 'l' : 'e';
			}
			if (write(results[1], &r, 1) != 1)
				_exit(2);
			while (read(release[0], &byte, 1) > 0)
				;
			mlp_store_close(mine);
			_exit(0);
		}
	}
	close(results[1]);
	close(release[0]);
	for (int i = 0; i < N; i++) {
		char r;

		assert_int_equal(read(results[0], &r, 1), 1);
		if (r == 'w')
			won++;
		else if (r == 'l')
			lost++;
	}
	close(release[1]);
	for (int i = 0; i < N; i++) {
		int st;

		assert_int_equal(waitpid(pids[i], &st, 0), pids[i]);
		assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	close(results[0]);
	assert_int_equal(won, 1);
	assert_int_equal(lost, N - 1);
	assert_int_equal(mlp_store_queued_run_get(&q, f->s, id), 0);
	assert_int_equal(q.exec_attempts, 1);
	mlp_queued_run_clear(&q);
}

static void test_queue__cancel_a_queued_run(void **state)
{
	struct fixture *f = *state;
	int64_t id = 0, pid = -1;

	assert_int_equal(mlp_store_run_enqueue(&id, f->s, &push_a, NULL, NULL), 0);
	assert_int_equal(mlp_store_run_cancel(&pid, f->s, id), 0);
	assert_int_equal(pid, 0);
	assert_int_equal(raw_count(f->db, "SELECT count(*) FROM runs WHERE status = 'cancelled'"),
	                 1);
	assert_int_equal(mlp_store_run_cancel(&pid, f->s, id), MLP_EINVAL);
	assert_int_equal(mlp_store_run_cancel(&pid, f->s, 9999), MLP_ENOTFOUND);
}

static void test_queue__schedule_fire_records_time_and_run(void **state)
{
	struct fixture *f = *state;
	struct mlp_run_queued r = {
	        .project = "demo",
	        .trigger = "schedule",
	        .user = "schedule",
	        .git_ref = "refs/heads/main",
	        .schedule = "demo#1 @nightly UTC",
	};
	int64_t last = -1, id = 0, none = -1, active = -1, pid;

	assert_int_equal(mlp_store_schedule_last(&last, f->s, r.schedule), 0);
	assert_int_equal(last, 0);
	assert_int_equal(mlp_store_schedule_active(&active, f->s, r.schedule), 0);
	assert_int_equal(active, 0);
	assert_int_equal(mlp_store_schedule_fire(&id, f->s, r.schedule, 1767578400, &r), 0);
	assert_true(id > 0);
	assert_int_equal(mlp_store_schedule_last(&last, f->s, r.schedule), 0);
	assert_int_equal(last, 1767578400);
	assert_int_equal(mlp_store_schedule_active(&active, f->s, r.schedule), 0);
	assert_int_equal(active, id);
	/* A skipped fire moves the time and queues nothing. */
	assert_int_equal(mlp_store_schedule_fire(&none, f->s, r.schedule, 1767664800, NULL), 0);
	assert_int_equal(none, 0);
	assert_int_equal(mlp_store_schedule_last(&last, f->s, r.schedule), 0);
	assert_int_equal(last, 1767664800);
	assert_int_equal(raw_count(f->db, "SELECT count(*) FROM runs"), 1);
	assert_int_equal(mlp_store_run_cancel(&pid, f->s, id), 0);
	assert_int_equal(mlp_store_schedule_active(&active, f->s, r.schedule), 0);
	assert_int_equal(active, 0);
}

static void test_queue__token_found_by_hash_only(void **state)
{
	struct fixture *f = *state;
	const char *token = "mlp_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
	char sha[MLP_SHA256_HEX_LEN + 1], other[MLP_SHA256_HEX_LEN + 1];
	char *name = NULL, *scopes = NULL, *text = NULL;
	size_t len;

	mlp_sha256_hex(sha, token, strlen(token));
	mlp_sha256_hex(other, "mlp_guess", 9);
	assert_int_equal(mlp_store_token_create(f->s, "ci", sha, NULL), 0);
	assert_int_equal(mlp_store_token_create(f->s, "ci", other, NULL), MLP_EEXISTS);
	assert_int_equal(mlp_store_token_create(f->s, "bot", other, "models:read"), 0);
	assert_int_equal(mlp_store_token_check(&name, NULL, f->s, sha), 0);
	assert_string_equal(name, "ci");
	free(name);
	assert_int_equal(mlp_store_token_check(&name, &scopes, f->s, other), 0);
	assert_string_equal(name, "bot");
	assert_string_equal(scopes, "models:read");
	free(name);
	free(scopes);
	assert_int_equal(mlp_store_token_check(NULL, &scopes, f->s, sha), 0);
	assert_string_equal(scopes, "all");
	free(scopes);
	/* Not a prefix, not another case, not empty. */
	sha[10] = '\0';
	assert_int_equal(mlp_store_token_check(&name, NULL, f->s, sha), MLP_ENOTFOUND);
	assert_null(name);
	mlp_sha256_hex(sha, token, strlen(token));
	for (char *p = sha; *p; p++)
		if (*p >= 'a' && *p <= 'f')
			*p = (char)(*p - 'a' + 'A');
	assert_int_equal(mlp_store_token_check(NULL, NULL, f->s, sha), MLP_ENOTFOUND);
	assert_int_equal(mlp_store_token_check(NULL, NULL, f->s, ""), MLP_ENOTFOUND);
	/* The token itself is nowhere in the database. */
	mlp_store_close(f->s);
	f->s = NULL;
	assert_int_equal(mlp_read_file(&text, &len, f->db, 64 << 20), 0);
	assert_null(memmem(text, len, token, strlen(token)));
	free(text);
}

/*
 * /metrics exports the metrics of each model's newest 100 versions, by
 * version number: with gaps in the numbers (a model registered elsewhere,
 * versions deleted) "the newest 100" is not "above max - 100".
 */
static void test_queue__version_metrics_keep_the_newest_100(void **state)
{
	struct fixture *f = *state;
	struct mlp_count *c = NULL;
	size_t n = 0;

	raw_exec(f->db,
	         "INSERT INTO artifacts VALUES ('aa', '/dev/null', 0, 0);"
	         "INSERT INTO models VALUES ('big', 0), ('small', 0);"
	         "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < 150)"
	         " INSERT INTO model_versions (model, version, sha256, status, created_at)"
	         " SELECT 'big', 2 * i, 'aa', CASE i WHEN 150 THEN 'deployed' ELSE 'retired' END,"
	         " 0 FROM k;"
	         "INSERT INTO model_versions (model, version, sha256, status, created_at)"
	         " VALUES ('small', 1, 'aa', 'rejected', 0), ('small', 2, 'aa', 'approved', 0);"
	         "INSERT INTO model_metrics (version_id, name, value)"
	         " SELECT id, 'accuracy', version / 1000.0 FROM model_versions;"
	         "INSERT INTO model_metrics (version_id, name, value)"
	         " SELECT id, 'loss', 1 FROM model_versions WHERE model = 'big';");
	assert_int_equal(mlp_store_counts(&c, &n, f->s, MLP_COUNT_VERSION_METRICS), 0);
	assert_int_equal(n, 2 * MLP_VERSION_METRICS_MAX + 2);
	/* big: versions 102 .. 300 (the newest 100 of 2, 4 .. 300), two metrics each. */
	assert_string_equal(c[0].label, "big");
	assert_string_equal(c[0].label2, "102");
	assert_string_equal(c[0].label3, "accuracy");
	assert_string_equal(c[0].label4, "retired");
	assert_true(c[0].value == 0.102);
	assert_string_equal(c[1].label3, "loss");
	assert_string_equal(c[199].label2, "300");
	assert_string_equal(c[199].label4, "deployed");
	/* small: both versions, whatever their status. */
	assert_string_equal(c[200].label, "small");
	assert_string_equal(c[200].label2, "1");
	assert_string_equal(c[200].label4, "rejected");
	assert_string_equal(c[201].label2, "2");
	assert_string_equal(c[201].label4, "approved");
	mlp_count_free_all(c, n);
}

/* A rollback row is counted as a rollback, and the rollout it undid by
 * its own result, rolled_back. */
static void test_queue__rollbacks_counted_apart(void **state)
{
	struct fixture *f = *state;
	struct mlp_count *c = NULL;
	size_t n = 0;

	raw_exec(f->db, "INSERT INTO deployments (kind, namespace, deployment, container, result,"
	                " started_at) VALUES ('rollout', 'ml', 'm', 'c', 'complete', 0),"
	                " ('rollout', 'ml', 'm', 'c', 'rolled_back', 0),"
	                " ('rollback', 'ml', 'm', 'c', 'complete', 0),"
	                " ('rollout', 'ml', 'm', 'c', 'complete', 0)");
	assert_int_equal(mlp_store_counts(&c, &n, f->s, MLP_COUNT_ROLLOUTS_BY_RESULT), 0);
	assert_int_equal(n, 3);
	assert_string_equal(c[0].label2, "rollout");
	assert_string_equal(c[0].label, "complete");
	assert_true(c[0].value == 2);
	assert_string_equal(c[1].label2, "rollout");
	assert_string_equal(c[1].label, "rolled_back");
	assert_true(c[1].value == 1);
	assert_string_equal(c[2].label2, "rollback");
	assert_string_equal(c[2].label, "complete");
	assert_true(c[2].value == 1);
	mlp_count_free_all(c, n);
}

/* Stage durations are counted per stage kind; skipped stages (attempt 0)
 * and attempts still running are not counted. */
static void test_queue__stage_durations_by_kind(void **state)
{
	static const double bounds[] = {0.1, 1, 10};
	struct fixture *f = *state;
	struct mlp_count *c = NULL;
	uint64_t counts[MLP_ARRAY_SIZE(bounds) + 1];
	size_t n = 0;
	double sum = 0;

	raw_exec(f->db,
	         "INSERT INTO runs (id, pipeline, pipeline_text, pipeline_sha256, status, trigger,"
	         " created_at) VALUES (1, 'p', '', '', 'succeeded', 'cli', 0);"
	         "INSERT INTO stages (run_id, stage, attempt, kind, status, started_at, ended_at)"
	         " VALUES (1, 'a', 1, 'run', 'succeeded', 1000, 1050),"
	         " (1, 'a', 2, 'run', 'succeeded', 2000, 4000),"
	         " (1, 'g', 1, 'gate', 'failed', 5000, 5200),"
	         " (1, 's', 0, 'rollout', 'skipped', 6000, 6000),"
	         " (1, 't', 1, 'train', 'running', 7000, NULL)");
	assert_int_equal(mlp_store_counts(&c, &n, f->s, MLP_COUNT_STAGE_KINDS), 0);
	assert_int_equal(n, 2);
	assert_string_equal(c[0].label, "gate");
	assert_true(c[0].value == 1);
	assert_string_equal(c[1].label, "run");
	assert_true(c[1].value == 2);
	mlp_count_free_all(c, n);

	assert_int_equal(mlp_store_stage_durations(&sum, f->s, "run", bounds,
	                                           MLP_ARRAY_SIZE(bounds), counts),
	                 0);
	assert_int_equal(counts[0], 1); /* 0.05 s */
	assert_int_equal(counts[1], 1);
	assert_int_equal(counts[2], 2); /* and 2 s */
	assert_int_equal(counts[3], 2);
	assert_true(sum > 2.049 && sum < 2.051);
	assert_int_equal(mlp_store_stage_durations(&sum, f->s, "gate", bounds,
	                                           MLP_ARRAY_SIZE(bounds), counts),
	                 0);
	assert_int_equal(counts[0], 0);
	assert_int_equal(counts[1], 1);
	assert_int_equal(counts[3], 1);
	assert_int_equal(
	        mlp_store_stage_durations(&sum, f->s, NULL, bounds, MLP_ARRAY_SIZE(bounds), counts),
	        0);
	assert_int_equal(counts[3], 3);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test_setup_teardown(test_queue__redelivery_queues_nothing, setup,
	                                        teardown),
	        cmocka_unit_test_setup_teardown(test_queue__next_is_each_projects_oldest, setup,
	                                        teardown),
	        cmocka_unit_test_setup_teardown(test_queue__once_per_commit_is_per_commit, setup,
	                                        teardown),
	        cmocka_unit_test_setup_teardown(test_queue__ignored_delivery_is_remembered, setup,
	                                        teardown),
	        cmocka_unit_test_setup_teardown(test_queue__delivery_and_run_are_one_transaction,
	                                        setup, teardown),
	        cmocka_unit_test_setup_teardown(test_queue__claim_is_atomic, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_queue__cancel_a_queued_run, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_queue__schedule_fire_records_time_and_run,
	                                        setup, teardown),
	        cmocka_unit_test_setup_teardown(test_queue__token_found_by_hash_only, setup,
	                                        teardown),
	        cmocka_unit_test_setup_teardown(test_queue__version_metrics_keep_the_newest_100,
	                                        setup, teardown),
	        cmocka_unit_test_setup_teardown(test_queue__rollbacks_counted_apart, setup,
	                                        teardown),
	        cmocka_unit_test_setup_teardown(test_queue__stage_durations_by_kind, setup,
	                                        teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
