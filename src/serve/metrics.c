/*
 * metrics.c - GET /metrics of `mlpipe serve`: the Prometheus text format
 * (serve-int.h, docs/serve.md).
 *
 * Runs in an HTTP thread: the counts come from the database (under
 * db_lock) and from the webhook counters that leave no row (hooks.c).
 * Nothing here writes.
 */
#include "config.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#include "base/util.h"
#include "serve/serve-int.h"
#include "store/store.h"
#include "store/store-queue.h"

static void prom_counts(struct mlp_buf *b, struct serve *sv, enum mlp_count_kind kind,
                        const char *name, const char *label)
{
	struct mlp_count *c = NULL;
	size_t n = 0;

	if (mlp_store_counts(&c, &n, sv->db, kind) != 0)
		return;
	for (size_t i = 0; i < n; i++) {
		mlp_buf_printf(b, "%s{%s=\"", name, label);
		mlp_buf_put_prom_label(b, c[i].label);
		mlp_buf_printf(b, "\"} %.17g\n", c[i].value);
	}
	mlp_count_free_all(c, n);
}

/* One series: name{k1="v1",...} value, the values escaped. */
static void prom_series(struct mlp_buf *b, const char *name, const char *const *keys,
                        char *const *values, size_t n, double value)
{
	mlp_buf_printf(b, "%s{", name);
	for (size_t i = 0; i < n; i++) {
		mlp_buf_printf(b, "%s%s=\"", i ? "," : "", keys[i]);
		mlp_buf_put_prom_label(b, values[i]);
		mlp_buf_putc(b, '"');
	}
	mlp_buf_printf(b, "} %.17g\n", value);
}

/*
 * The stage duration histogram, one per stage kind (run, train, gate,
 * rollout, ...): a training stage takes hours and a gate a second, so a
 * quantile over both says nothing.  The kinds are the stage-kind table's,
 * a handful, whereas stage names are the users' and unbounded: they are
 * not a label.
 */
static void prom_stage_durations(struct mlp_buf *b, struct serve *sv)
{
	static const double bounds[] = {0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 14400};
	uint64_t counts[MLP_ARRAY_SIZE(bounds) + 1];
	struct mlp_count *kinds = NULL;
	size_t nkinds = 0;
	double sum = 0;

	mlp_buf_puts(b, "# HELP mlpipe_stage_duration_seconds Duration of finished stage "
	                "attempts, by stage kind.\n"
	                "# TYPE mlpipe_stage_duration_seconds histogram\n");
	if (mlp_store_counts(&kinds, &nkinds, sv->db, MLP_COUNT_STAGE_KINDS) != 0)
		return;
	for (size_t k = 0; k < nkinds; k++) {
		const char *kind = kinds[k].label;

		if (mlp_store_stage_durations(&sum, sv->db, kind, bounds, MLP_ARRAY_SIZE(bounds),
		                              counts) != 0)
			break;
		for (size_t i = 0; i < MLP_ARRAY_SIZE(bounds); i++) {
			mlp_buf_puts(b, "mlpipe_stage_duration_seconds_bucket{kind=\"");
			mlp_buf_put_prom_label(b, kind);
			mlp_buf_printf(b, "\",le=\"%g\"} %llu\n", bounds[i],
			               (unsigned long long)counts[i]);
		}
		mlp_buf_puts(b, "mlpipe_stage_duration_seconds_bucket{kind=\"");
		mlp_buf_put_prom_label(b, kind);
		mlp_buf_printf(b, "\",le=\"+Inf\"} %llu\n",
		               (unsigned long long)counts[MLP_ARRAY_SIZE(bounds)]);
		mlp_buf_puts(b, "mlpipe_stage_duration_seconds_sum{kind=\"");
		mlp_buf_put_prom_label(b, kind);
		mlp_buf_printf(b, "\"} %.6f\n", sum);
		mlp_buf_puts(b, "mlpipe_stage_duration_seconds_count{kind=\"");
		mlp_buf_put_prom_label(b, kind);
		mlp_buf_printf(b, "\"} %llu\n", (unsigned long long)counts[MLP_ARRAY_SIZE(bounds)]);
	}
	mlp_count_free_all(kinds, nkinds);
}

/* Rollouts and rollbacks (the deployments table), by kind and result; the
 * metrics of each model's deployed version, and of its newest versions. */
static void prom_models(struct mlp_buf *b, struct serve *sv)
{
	static const char *const rollout_keys[] = {"kind", "result"};
	static const char *const deployed_keys[] = {"model", "metric", "version"};
	static const char *const version_keys[] = {"model", "version", "metric", "status"};
	struct mlp_count *c = NULL;
	size_t n = 0;

	mlp_buf_puts(b, "# HELP mlpipe_rollouts_total Rollouts and rollbacks of Deployments, "
	                "by kind (rollout, rollback) and result.\n"
	                "# TYPE mlpipe_rollouts_total counter\n");
	if (mlp_store_counts(&c, &n, sv->db, MLP_COUNT_ROLLOUTS_BY_RESULT) == 0) {
		for (size_t i = 0; i < n; i++) {
			char *values[] = {c[i].label2, c[i].label};

			prom_series(b, "mlpipe_rollouts_total", rollout_keys, values, 2,
			            c[i].value);
		}
		mlp_count_free_all(c, n);
	}
	mlp_buf_puts(b, "# HELP mlpipe_deployed_model_metric The metrics of the deployed "
	                "version of each model.\n# TYPE mlpipe_deployed_model_metric gauge\n");
	if (mlp_store_counts(&c, &n, sv->db, MLP_COUNT_DEPLOYED_METRICS) == 0) {
		for (size_t i = 0; i < n; i++) {
			char *values[] = {c[i].label, c[i].label2, c[i].label3};

			prom_series(b, "mlpipe_deployed_model_metric", deployed_keys, values, 3,
			            c[i].value);
		}
		mlp_count_free_all(c, n);
	}
	mlp_buf_printf(b,
	               "# HELP mlpipe_model_version_metric The metrics of each model version "
	               "(the newest %d of each model), with its registry status.\n"
	               "# TYPE mlpipe_model_version_metric gauge\n",
	               MLP_VERSION_METRICS_MAX);
	if (mlp_store_counts(&c, &n, sv->db, MLP_COUNT_VERSION_METRICS) == 0) {
		for (size_t i = 0; i < n; i++) {
			char *values[] = {c[i].label, c[i].label2, c[i].label3, c[i].label4};

			prom_series(b, "mlpipe_model_version_metric", version_keys, values, 4,
			            c[i].value);
		}
		mlp_count_free_all(c, n);
	}
}

void serve_metrics_handle(struct serve *sv, struct mlp_http_response *r)
{
	struct mlp_buf b = {0};
	int64_t queued = 0;

	pthread_mutex_lock(&sv->db_lock);
	mlp_buf_puts(&b, "# HELP mlpipe_runs Runs recorded, by status.\n"
	                 "# TYPE mlpipe_runs gauge\n");
	prom_counts(&b, sv, MLP_COUNT_RUNS_BY_STATUS, "mlpipe_runs", "status");
	mlp_store_runs_count(&queued, sv->db, NULL, MLP_STATUS_QUEUED);
	mlp_buf_printf(&b,
	               "# HELP mlpipe_queue_depth Runs waiting to start.\n"
	               "# TYPE mlpipe_queue_depth gauge\nmlpipe_queue_depth %lld\n",
	               (long long)queued);
	prom_stage_durations(&b, sv);
	mlp_buf_puts(&b, "# HELP mlpipe_webhook_deliveries_total Webhook deliveries, by "
	                 "result (queued and ignored are kept in the database; the others "
	                 "count since the server started).\n"
	                 "# TYPE mlpipe_webhook_deliveries_total counter\n");
	prom_counts(&b, sv, MLP_COUNT_DELIVERIES_BY_RESULT, "mlpipe_webhook_deliveries_total",
	            "result");
	mlp_buf_printf(&b,
	               "mlpipe_webhook_deliveries_total{result=\"rejected\"} %llu\n"
	               "mlpipe_webhook_deliveries_total{result=\"duplicate\"} %llu\n"
	               "mlpipe_webhook_deliveries_total{result=\"invalid\"} %llu\n"
	               "mlpipe_webhook_deliveries_total{result=\"other_event\"} %llu\n",
	               (unsigned long long)atomic_load(&sv->rejected),
	               (unsigned long long)atomic_load(&sv->duplicate),
	               (unsigned long long)atomic_load(&sv->invalid),
	               (unsigned long long)atomic_load(&sv->ignored_events));
	mlp_buf_puts(&b, "# HELP mlpipe_gate_decisions_total Gate decisions, by result.\n"
	                 "# TYPE mlpipe_gate_decisions_total counter\n");
	prom_counts(&b, sv, MLP_COUNT_GATE_DECISIONS, "mlpipe_gate_decisions_total", "result");
	prom_models(&b, sv);
	pthread_mutex_unlock(&sv->db_lock);
	r->status = 200;
	r->content_type = "text/plain; version=0.0.4; charset=utf-8";
	r->body_len = b.len;
	r->body = mlp_buf_detach(&b);
}
