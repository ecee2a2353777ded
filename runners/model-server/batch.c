/*
 * batch.c - the dynamic batcher: requests that arrive together share one
 * forward pass, one matrix multiply per layer over all their rows
 * (model-server.h, docs/model-server.md "Batching").
 *
 * HTTP threads queue a job (their rows and where the logits go) and wait
 * on the job's own condition variable; one batcher thread takes the queued
 * jobs, up to max_batch rows, copies their rows into one matrix, runs the
 * forward pass and wakes each job's thread.
 *
 * When to run: at once when nothing else is on its way, so that a lone
 * client never pays the delay; while other requests have been announced
 * (ms_batcher_arriving(): their bodies are being read or parsed), wait for
 * their rows up to delay_us after the first queued job.  Under load the
 * queue also fills by itself while a batch is computing.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/error.h"
#include "base/util.h"
#include "model-server.h"

struct job {
	const struct ms_model *model;
	const float *x;
	int rows;
	float *logits;
	bool done;
	pthread_cond_t cv;
	struct job *next;
};

struct ms_batcher {
	pthread_mutex_t mu;
	pthread_cond_t work; /* a job was queued, an announced request came or gave up */
	pthread_t thread;
	struct job *head, *tail;
	int queued_rows;
	int arriving; /* announced requests not yet queued */
	bool stop;
	int max_batch;
	long delay_us;
	struct ms_metrics *metrics;
	float *x;       /* max_batch rows of the widest input seen */
	size_t x_cap;   /* floats */
	float *logits;  /* max_batch rows of logits */
	size_t l_cap;   /* floats */
	float *scratch; /* the forward pass's */
	size_t s_cap;   /* floats */
};

static void deadline_after(struct timespec *ts, long us)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += us / 1000000;
	ts->tv_nsec += (us % 1000000) * 1000;
	if (ts->tv_nsec >= 1000000000) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000;
	}
}

/* Takes from the queue the jobs of one batch: the first job, and those
 * after it for the same model while they fit in max_batch rows.  Called
 * with mu held. */
static struct job *take_batch(struct ms_batcher *b, int *out_rows)
{
	struct job *first = b->head, *last = first;
	int rows = first->rows;

	while (last->next && last->next->model == first->model &&
	       rows + last->next->rows <= b->max_batch) {
		last = last->next;
		rows += last->rows;
	}
	b->head = last->next;
	if (b->head == NULL)
		b->tail = NULL;
	last->next = NULL;
	b->queued_rows -= rows;
	*out_rows = rows;
	return first;
}

static void ensure(float **buf, size_t *cap, size_t need)
{
	if (need > *cap) {
		free(*buf);
		*buf = xmalloc(need * sizeof(float));
		*cap = need;
	}
}

/* Runs one batch outside the lock and scatters the logits. */
static void compute(struct ms_batcher *b, struct job *jobs, int rows)
{
	const struct ms_model *m = jobs->model;
	size_t features = (size_t)ms_model_features(m), classes = (size_t)ms_model_classes(m);
	size_t at = 0;

	if (jobs->next == NULL) {
		ensure(&b->scratch, &b->s_cap, ms_model_scratch(m, rows));
		ms_model_forward(m, jobs->x, rows, jobs->logits, b->scratch);
		return;
	}
	ensure(&b->x, &b->x_cap, (size_t)rows * features);
	ensure(&b->logits, &b->l_cap, (size_t)rows * classes);
	ensure(&b->scratch, &b->s_cap, ms_model_scratch(m, rows));
	for (struct job *j = jobs; j; j = j->next) {
		memcpy(b->x + at * features, j->x, (size_t)j->rows * features * sizeof(float));
		at += (size_t)j->rows;
	}
	ms_model_forward(m, b->x, rows, b->logits, b->scratch);
	at = 0;
	for (struct job *j = jobs; j; j = j->next) {
		memcpy(j->logits, b->logits + at * classes,
		       (size_t)j->rows * classes * sizeof(float));
		at += (size_t)j->rows;
	}
}

static void *batcher_main(void *arg)
{
	struct ms_batcher *b = arg;

	pthread_mutex_lock(&b->mu);
	for (;;) {
		struct job *jobs, *next;
		struct timespec deadline;
		int rows;

		while (b->head == NULL && !b->stop)
			pthread_cond_wait(&b->work, &b->mu);
		if (b->head == NULL)
			break;
		if (b->arriving > 0 && b->queued_rows < b->max_batch && b->delay_us > 0) {
			deadline_after(&deadline, b->delay_us);
			while (b->arriving > 0 && b->queued_rows < b->max_batch &&
			       pthread_cond_timedwait(&b->work, &b->mu, &deadline) != ETIMEDOUT)
				;
		}
		jobs = take_batch(b, &rows);
		pthread_mutex_unlock(&b->mu);
		compute(b, jobs, rows);
		if (b->metrics)
			ms_metrics_batch(b->metrics, rows);
		pthread_mutex_lock(&b->mu);
		for (struct job *j = jobs; j; j = next) {
			next = j->next;
			j->done = true;
			pthread_cond_signal(&j->cv);
		}
	}
	pthread_mutex_unlock(&b->mu);
	return NULL;
}

int ms_batcher_start(struct ms_batcher **out, int max_batch, long delay_us,
                     struct ms_metrics *metrics)
{
	struct ms_batcher *b = xcalloc(1, sizeof(*b));
	pthread_condattr_t ca;
	int err;

	*out = NULL;
	b->max_batch = max_batch;
	b->delay_us = delay_us;
	b->metrics = metrics;
	pthread_mutex_init(&b->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&b->work, &ca);
	pthread_condattr_destroy(&ca);
	if ((err = pthread_create(&b->thread, NULL, batcher_main, b)) != 0) {
		mlp_error_set_errno(err, "cannot start the batcher thread");
		pthread_cond_destroy(&b->work);
		pthread_mutex_destroy(&b->mu);
		free(b);
		return MLP_ERROR;
	}
	*out = b;
	return 0;
}

void ms_batcher_stop(struct ms_batcher *b)
{
	if (b == NULL)
		return;
	pthread_mutex_lock(&b->mu);
	b->stop = true;
	pthread_cond_signal(&b->work);
	pthread_mutex_unlock(&b->mu);
	pthread_join(b->thread, NULL);
	pthread_cond_destroy(&b->work);
	pthread_mutex_destroy(&b->mu);
	free(b->x);
	free(b->logits);
	free(b->scratch);
	free(b);
}

void ms_batcher_arriving(struct ms_batcher *b)
{
	pthread_mutex_lock(&b->mu);
	b->arriving++;
	pthread_mutex_unlock(&b->mu);
}

void ms_batcher_abandon(struct ms_batcher *b)
{
	pthread_mutex_lock(&b->mu);
	b->arriving--;
	pthread_cond_signal(&b->work);
	pthread_mutex_unlock(&b->mu);
}

void ms_batcher_run(struct ms_batcher *b, const struct ms_model *m, const float *x, int rows,
                    float *logits)
{
	struct job j = {.model = m, .x = x, .rows = rows, .logits = logits};

	pthread_cond_init(&j.cv, NULL);
	pthread_mutex_lock(&b->mu);
	b->arriving--;
	if (b->tail)
		b->tail->next = &j;
	else
		b->head = &j;
	b->tail = &j;
	b->queued_rows += rows;
	pthread_cond_signal(&b->work);
	while (!j.done)
		pthread_cond_wait(&j.cv, &b->mu);
	pthread_mutex_unlock(&b->mu);
	pthread_cond_destroy(&j.cv);
}
