/*
 * expr.h - ${{ ... }} expressions in pipeline files.
 *
 * An expression names a value:
 *   ${{ run.id }}                  the run's id
 *   ${{ env.NAME }}                a variable of the pipeline's environment
 *   ${{ stages.S.outputs.KEY }}    a key=value line S wrote to $MLPIPE_OUTPUT
 *   ${{ stages.S.metrics.NAME }}   a number S wrote to $MLPIPE_METRICS
 *
 * In `run:` commands each value is substituted shell-quoted, so whatever
 * it holds stays one word and never becomes shell syntax; elsewhere (env
 * values, image names, paths) it is substituted as is.
 */
#ifndef MLP_EXPR_H
#define MLP_EXPR_H

#include <stddef.h>

#include "util.h"

enum mlp_expr_kind {
	MLP_EXPR_RUN_ID,
	MLP_EXPR_ENV,
	MLP_EXPR_OUTPUT,
	MLP_EXPR_METRIC,
};

/* One parsed reference; the strings point into a scratch buffer owned by
 * the scanner and are valid during the callback only. */
struct mlp_expr_ref {
	enum mlp_expr_kind kind;
	const char *stage; /* OUTPUT, METRIC */
	const char *name;  /* ENV variable, output key or metric name */
	size_t offset;     /* of "${{" in the text */
	size_t length;     /* up to and including "}}" */
};

/*
 * Calls cb for every expression in text, in order.  A malformed expression
 * stops the scan: returns MLP_EINVAL with a message set and *err_offset
 * the byte offset of the problem.  A non-zero return from cb stops the
 * scan and is returned.
 */
int mlp_expr_scan(const char *text, size_t *err_offset,
                  int (*cb)(const struct mlp_expr_ref *ref, void *payload), void *payload);

/*
 * Resolves a reference to its value: returns 0 and sets *out (owned by the
 * resolver's payload, valid until expansion ends), or a negative code with
 * a message set (an output that does not exist, say).
 */
typedef int (*mlp_expr_resolve_fn)(const char **out, const struct mlp_expr_ref *ref, void *payload);

/* Expands every expression in text into *out (a new string); with
 * shell_quote each value is single-quoted for /bin/sh. */
int mlp_expr_expand(char **out, const char *text, int shell_quote, mlp_expr_resolve_fn resolve,
                    void *payload);

#endif
