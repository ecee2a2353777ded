/*
 * expr.h - ${{ ... }} expressions in pipeline files.
 *
 * An expression names a value:
 *   ${{ run.id }}                  the run's id
 *   ${{ env.NAME }}                a variable of the pipeline's environment
 *   ${{ stages.S.outputs.KEY }}    a key=value line S wrote to $MLPIPE_OUTPUT
 *   ${{ stages.S.metrics.NAME }}   a number S wrote to $MLPIPE_METRICS
 *
 * In shell commands (`run:`, `train.command`) each value is written for
 * the quoting context it sits in (shell.h), so that the shell reads back
 * the value and never shell syntax; a context that cannot be known for
 * sure is refused.  Elsewhere (env values, image names, paths) a value is
 * substituted as is.
 */
#ifndef MLP_EXPR_H
#define MLP_EXPR_H

#include <stddef.h>

#include "base/util.h"

enum mlp_expr_kind {
	MLP_EXPR_RUN_ID,
	MLP_EXPR_RUN_COMMIT, /* the run's git commit (hex), "" outside git */
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

enum mlp_expr_quoting {
	MLP_EXPR_RAW,   /* values as they are */
	MLP_EXPR_SHELL, /* text is a /bin/sh command: values quoted by context */
};

/* Expands every expression in text into *out (a new string).  With
 * MLP_EXPR_SHELL a value that cannot be placed safely fails (MLP_EINVAL,
 * message set); mlp_expr_check_shell finds those at validation time. */
int mlp_expr_expand(char **out, const char *text, enum mlp_expr_quoting quoting,
                    mlp_expr_resolve_fn resolve, void *payload);

/*
 * Reports, through report, every problem of a shell command's expressions
 * that only its quoting context shows: an expression whose context is not
 * known for sure (inside eval, $((...)), after a backslash ...) unless its
 * value is always a number, and a command the scanner cannot read to its
 * end.  offset is a byte offset into command.
 */
void mlp_expr_check_shell(const char *command,
                          void (*report)(size_t offset, const char *message, void *payload),
                          void *payload);

#endif
