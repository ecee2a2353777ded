/*
 * term.h - what `mlpipe run` shows while a pipeline runs.
 *
 * On a terminal: a live block at the bottom, one line per stage (state,
 * elapsed time, attempt), redrawn in place, with the stages' log lines
 * scrolling above it, each prefixed by its stage name.  Anywhere else
 * (a pipe, a file, CI): plain lines, one per event and per log line.
 * Colour only on a terminal, and never when NO_COLOR is set.
 */
#ifndef MLP_TERM_H
#define MLP_TERM_H

#include <stdbool.h>
#include <stdio.h>

#include "engine.h"
#include "pipeline.h"

struct mlp_term;

/* live: -1 decide by isatty(), 0 plain, 1 live. */
struct mlp_term *mlp_term_new(const struct mlp_pipeline *p, FILE *out, int live);
const struct mlp_engine_observer *mlp_term_observer(struct mlp_term *t);
/* Prints the final summary of the run. */
void mlp_term_finish(struct mlp_term *t, int64_t run_id, const struct mlp_engine_result *r,
                     int64_t elapsed_ms);
/* Accepts NULL. */
void mlp_term_free(struct mlp_term *t);

#endif
