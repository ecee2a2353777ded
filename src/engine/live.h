/*
 * live.h - the live view: what `mlpipe run` shows while a pipeline runs.
 *
 * On a terminal: a live block at the bottom, one line per stage (state,
 * elapsed time, attempt), redrawn in place, with the stages' log lines
 * scrolling above it, each prefixed by its stage name.  Anywhere else
 * (a pipe, a file, CI): plain lines, one per event and per log line.
 * Colour only on a terminal, and never when NO_COLOR is set.
 */
#ifndef MLP_LIVE_H
#define MLP_LIVE_H

#include <stdbool.h>
#include <stdio.h>

#include "engine/engine.h"
#include "pipeline/pipeline.h"

struct mlp_live;

/* live: -1 decide by isatty(), 0 plain, 1 live. */
struct mlp_live *mlp_live_new(const struct mlp_pipeline *p, FILE *out, int live);
const struct mlp_engine_observer *mlp_live_observer(struct mlp_live *t);
/* Prints the final summary of the run. */
void mlp_live_finish(struct mlp_live *t, int64_t run_id, const struct mlp_engine_result *r,
                     int64_t elapsed_ms);
/* Accepts NULL. */
void mlp_live_free(struct mlp_live *t);

#endif
