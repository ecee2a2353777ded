/*
 * gate.h - how a gate decides: thresholds, metric directions, baselines
 * and max_regression, as a pure function of numbers.
 *
 * Nothing here touches the database or the file system: the gate stage
 * (engine/stage-gate.c) reads thresholds and metrics from the store, asks
 * mlp_gate_decide(), and records what it returns.  That keeps every rule
 * (a missing metric fails, NaN fails, no thresholds fails unless allowed,
 * no baseline passes on thresholds alone ...) testable on its own.
 */
#ifndef MLP_GATE_H
#define MLP_GATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "base/json.h"
#include "pipeline/pipeline.h"

/* ">=", ">", "<=", "<". */
const char *mlp_gate_op_text(enum mlp_gate_op op);
/* 0 or MLP_EINVAL (no message). */
int mlp_gate_op_parse(enum mlp_gate_op *out, const char *text);
/* Whether value satisfies "op limit" (false for NaN). */
bool mlp_gate_op_holds(enum mlp_gate_op op, double value, double limit);

enum mlp_direction { MLP_DIRECTION_UNKNOWN, MLP_DIRECTION_HIGHER, MLP_DIRECTION_LOWER };

const char *mlp_direction_name(enum mlp_direction d);

/*
 * Which way is better for a metric: what the gate declares under
 * directions: (declared may be NULL), else the built-in defaults by the
 * words of its name (split at anything but letters and digits, any case):
 * accuracy, acc, precision, recall, f1, auc, map, r2, score -> higher;
 * loss, error, err, mse, rmse, mae, perplexity, latency -> lower.  A name
 * with words of both kinds, or of neither, is unknown.
 */
enum mlp_direction mlp_gate_direction(const struct mlp_kvlist *declared, const char *metric);

struct mlp_gate_rule {
	const char *metric;
	enum mlp_gate_op op;
	double value;
};

struct mlp_gate_input {
	const char *gate;
	const char *metrics_from;          /* the stage the metrics came from */
	const struct mlp_gate_rule *rules; /* the thresholds */
	size_t nrules;
	const struct mlp_metric *metrics; /* the candidate's */
	size_t nmetrics;
	bool allow_empty;
	const struct mlp_kvlist *directions; /* may be NULL */
	enum mlp_baseline baseline;
	bool has_baseline; /* a baseline version exists */
	int baseline_version;
	const struct mlp_metric *baseline_metrics;
	size_t nbaseline_metrics;
	bool has_max_regression; /* else 0: never worse */
	double max_regression;   /* absolute, or a fraction */
	bool max_regression_relative;
};

enum mlp_gate_check_kind { MLP_CHECK_THRESHOLD, MLP_CHECK_REGRESSION };

/* One comparison the gate made. */
struct mlp_gate_check {
	enum mlp_gate_check_kind kind;
	char *metric;
	bool present; /* the candidate has the metric */
	double value; /* the candidate's value, when present */
	bool passed;
	/* MLP_CHECK_THRESHOLD */
	enum mlp_gate_op op;
	double threshold;
	/* MLP_CHECK_REGRESSION */
	enum mlp_direction direction;
	bool compared;   /* the baseline has the metric: the next three are set */
	double baseline; /* the baseline's value */
	double allowed;  /* the absolute regression allowed */
	double limit;    /* the worst acceptable value */
	char *text;      /* the rule as a person reads it */
	char *failure;   /* why it failed, one line; NULL when it passed */
};

struct mlp_gate_result {
	bool passed;
	char *reason; /* the first failure, one line; NULL on a pass */
	char *note;   /* "no baseline yet: ..." and the like, or NULL */
	struct mlp_gate_check *checks;
	size_t nchecks;
};

/*
 * Decides.  Every threshold is checked (not only up to the first
 * failure) so the table shows them all.  Failures: no thresholds (unless
 * allow_empty), a metric missing from the candidate (with the nearest name
 * when it looks like a typo), NaN or infinity, a threshold not met, a
 * metric whose direction is unknown when a baseline is configured, a
 * regression beyond max_regression.  Fill out with mlp_gate_result_clear.
 */
void mlp_gate_decide(struct mlp_gate_result *out, const struct mlp_gate_input *in);
void mlp_gate_result_clear(struct mlp_gate_result *r);

/* Every check, as a new JSON array (the caller owns it). */
struct mlp_json *mlp_gate_checks_json(const struct mlp_gate_result *r);

/* The checks as a table: METRIC, VALUE, RULE, RESULT. */
void mlp_gate_print_table(FILE *f, const struct mlp_gate_result *r);

/* Formats a number for people (%.15g: enough digits for any threshold a
 * person types, none of the noise of binary fractions). */
void mlp_gate_format_number(char *buf, size_t size, double v);

#endif
