/*
 * metrics.c - mlpipe-model-server's Prometheus metrics, in the text
 * exposition format 0.0.4 (model-server.h, docs/model-server.md "Metrics").
 *
 * Counters are atomics; the two histograms share one mutex, held for a
 * few additions per request.  Every name has its unit and counters end in
 * _total, as Prometheus's naming conventions ask.
 */
#include "config.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "model-server.h"

#define MAX_BUCKETS 40

/* The status codes an infer request can end with, counted apart. */
static const int error_codes[] = {400, 404, 405, 413, 500, 503};

struct hist {
	int n; /* bounds, the +Inf bucket excluded */
	double bounds[MAX_BUCKETS];
	uint64_t counts[MAX_BUCKETS + 1]; /* per bucket, not cumulative */
	double sum;
	uint64_t count;
};

struct ms_metrics {
	char *name;
	double start_time; /* seconds since the epoch */
	atomic_ullong requests;
	atomic_ullong errors[MLP_ARRAY_SIZE(error_codes) + 1]; /* the last: other codes */
	atomic_ullong load_failures;
	pthread_mutex_t mu; /* the histograms */
	struct hist latency;
	struct hist batch;
};

static void hist_observe(struct hist *h, double v)
{
	int i = 0;

	while (i < h->n && v > h->bounds[i])
		i++;
	h->counts[i]++;
	h->sum += v;
	h->count++;
}

struct ms_metrics *ms_metrics_new(const char *name, int max_batch)
{
	static const double latency_bounds[] = {0.00005, 0.0001, 0.00025, 0.0005, 0.001,
	                                        0.0025,  0.005,  0.01,    0.025,  0.05,
	                                        0.1,     0.25,   0.5,     1.0};
	struct ms_metrics *m = xcalloc(1, sizeof(*m));

	m->name = xstrdup(name);
	m->start_time = (double)mlp_wall_ms() / 1000.0;
	pthread_mutex_init(&m->mu, NULL);
	m->latency.n = (int)MLP_ARRAY_SIZE(latency_bounds);
	memcpy(m->latency.bounds, latency_bounds, sizeof(latency_bounds));
	for (long b = 1; m->batch.n < MAX_BUCKETS; b *= 2) {
		if (b >= max_batch) {
			m->batch.bounds[m->batch.n++] = (double)max_batch;
			break;
		}
		m->batch.bounds[m->batch.n++] = (double)b;
	}
	return m;
}

void ms_metrics_free(struct ms_metrics *m)
{
	if (m == NULL)
		return;
	pthread_mutex_destroy(&m->mu);
	free(m->name);
	free(m);
}

void ms_metrics_request(struct ms_metrics *m)
{
	m->requests++;
}

void ms_metrics_error(struct ms_metrics *m, int status)
{
	size_t i = 0;

	while (i < MLP_ARRAY_SIZE(error_codes) && error_codes[i] != status)
		i++;
	m->errors[i]++;
}

void ms_metrics_latency(struct ms_metrics *m, double seconds)
{
	pthread_mutex_lock(&m->mu);
	hist_observe(&m->latency, seconds);
	pthread_mutex_unlock(&m->mu);
}

void ms_metrics_batch(struct ms_metrics *m, int rows)
{
	pthread_mutex_lock(&m->mu);
	hist_observe(&m->batch, (double)rows);
	pthread_mutex_unlock(&m->mu);
}

void ms_metrics_load_failure(struct ms_metrics *m)
{
	m->load_failures++;
}

/* Appends s as a label value (backslash, quote and newline escaped). */
static void put_label(struct mlp_buf *b, const char *s)
{
	mlp_buf_putc(b, '"');
	mlp_buf_put_prom_label(b, s);
	mlp_buf_putc(b, '"');
}

static void put_hist(struct mlp_buf *b, const char *metric, const char *help, const char *model,
                     const struct hist *h)
{
	uint64_t cum = 0;

	mlp_buf_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", metric, help, metric);
	for (int i = 0; i <= h->n; i++) {
		cum += h->counts[i];
		mlp_buf_printf(b, "%s_bucket{model=", metric);
		put_label(b, model);
		if (i < h->n)
			mlp_buf_printf(b, ",le=\"%g\"} %llu\n", h->bounds[i],
			               (unsigned long long)cum);
		else
			mlp_buf_printf(b, ",le=\"+Inf\"} %llu\n", (unsigned long long)cum);
	}
	mlp_buf_printf(b, "%s_sum{model=", metric);
	put_label(b, model);
	mlp_buf_printf(b, "} %.9g\n%s_count{model=", h->sum, metric);
	put_label(b, model);
	mlp_buf_printf(b, "} %llu\n", (unsigned long long)h->count);
}

char *ms_metrics_render(struct ms_metrics *m, const struct ms_model *model, const char *version,
                        bool ready)
{
	struct mlp_buf b = {0};
	struct hist latency, batch;

	pthread_mutex_lock(&m->mu);
	latency = m->latency;
	batch = m->batch;
	pthread_mutex_unlock(&m->mu);
	mlp_buf_puts(&b, "# HELP mlpipe_model_infer_requests_total Infer requests received.\n"
	                 "# TYPE mlpipe_model_infer_requests_total counter\n"
	                 "mlpipe_model_infer_requests_total{model=");
	put_label(&b, m->name);
	mlp_buf_printf(&b, "} %llu\n", (unsigned long long)m->requests);
	mlp_buf_puts(&b, "# HELP mlpipe_model_infer_errors_total Infer requests answered with "
	                 "an error, by HTTP status code.\n"
	                 "# TYPE mlpipe_model_infer_errors_total counter\n");
	for (size_t i = 0; i < MLP_ARRAY_SIZE(error_codes); i++) {
		mlp_buf_puts(&b, "mlpipe_model_infer_errors_total{model=");
		put_label(&b, m->name);
		mlp_buf_printf(&b, ",code=\"%d\"} %llu\n", error_codes[i],
		               (unsigned long long)m->errors[i]);
	}
	put_hist(&b, "mlpipe_model_infer_request_duration_seconds",
	         "Time from an infer request's arrival to its answer.", m->name, &latency);
	put_hist(&b, "mlpipe_model_infer_batch_size", "Rows in one forward pass.", m->name, &batch);
	mlp_buf_puts(&b, "# HELP mlpipe_model_info The loaded model.\n"
	                 "# TYPE mlpipe_model_info gauge\n");
	if (model) {
		mlp_buf_puts(&b, "mlpipe_model_info{model=");
		put_label(&b, m->name);
		mlp_buf_puts(&b, ",version=");
		put_label(&b, version);
		mlp_buf_printf(&b, ",sha256=\"%s\"} 1\n", model->sha256);
	}
	mlp_buf_printf(
	        &b,
	        "# HELP mlpipe_model_ready Whether the model is loaded and serving.\n"
	        "# TYPE mlpipe_model_ready gauge\nmlpipe_model_ready %d\n"
	        "# HELP mlpipe_model_load_failures_total Failed attempts to load the model.\n"
	        "# TYPE mlpipe_model_load_failures_total counter\n"
	        "mlpipe_model_load_failures_total %llu\n"
	        "# HELP process_start_time_seconds Start time of the process since the "
	        "Unix epoch in seconds.\n"
	        "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds %.3f\n",
	        ready ? 1 : 0, (unsigned long long)m->load_failures, m->start_time);
	return mlp_buf_detach(&b);
}
