/*
 * train.h - mlpipe-train's two jobs: the data-parallel training loop and
 * the evaluation of a saved model.  main.c turns a command line into these
 * option structs; everything after that lives in train.c and evaluate.c.
 *
 * Both return 0, MLP_EINVAL / MLP_ENOTFOUND for bad input (files, options,
 * sizes, labels: exit 2) or another negative MLP_E* for a runtime failure
 * (a collective, a write: exit 1), with the message in mlp_error_last().
 */
#ifndef MLP_TRAIN_TRAIN_H
#define MLP_TRAIN_TRAIN_H

#include <stdbool.h>
#include <stdint.h>

#include "backend.h"
#include "data.h"
#include "model.h"

struct mlp_train_opts {
	struct mlp_data_source data;
	struct mlp_data_source test; /* test.path NULL: a directory's t10k-* */
	struct mlp_shape shape;
	int epochs;
	long long max_steps; /* 0: no limit */
	int batch;           /* global: split evenly over the ranks */
	double lr;
	double momentum;
	double weight_decay;
	double validation_split; /* 0: none */
	uint64_t seed;
	const char *device;      /* "cpu", "cuda", "auto" */
	const char *out;         /* the model file */
	const char *dump_params; /* NULL, or raw float32 params here */
	const char *metrics;     /* NULL: $MLPIPE_METRICS */
};

struct mlp_eval_opts {
	const char *model;
	struct mlp_data_source data;
	int batch;
	const char *device;
	const char *metrics; /* NULL: $MLPIPE_METRICS */
};

int mlp_train_run(const struct mlp_train_opts *o);
int mlp_train_evaluate(const struct mlp_eval_opts *o);

/* --- shared by train.c and evaluate.c -------------------------------------- */

/* One metric for a flat JSON object. */
struct mlp_metric {
	char *name; /* owned */
	double value;
};

struct mlp_metrics {
	struct mlp_metric *v;
	size_t len;
	size_t cap;
};

void mlp_metrics_add(struct mlp_metrics *m, const char *name, double value);
/* Writes {"name": value, ...} atomically to path (non-finite values are
 * left out: JSON has no NaN).  0 or MLP_EIO. */
int mlp_metrics_write(const struct mlp_metrics *m, const char *path);
void mlp_metrics_free(struct mlp_metrics *m);

/*
 * Fills perm with a permutation of 0..n-1 that depends only on seed and
 * epoch (the same on every rank): what a DistributedSampler shuffles
 * with.  Exposed for the tests.
 */
void mlp_train_permutation(uint32_t *perm, uint32_t n, uint64_t seed, uint64_t epoch);

#endif
