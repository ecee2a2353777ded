/*
 * stage-io.h - the contract between the engine and a stage's process: the
 * files a stage talks back through, named in its environment.
 *
 *   $MLPIPE_OUTPUT   KEY=VALUE lines (or KEY<<DELIM ... DELIM): outputs that
 *                    later stages read as ${{ stages.X.outputs.KEY }}
 *   $MLPIPE_METRICS  a flat JSON object of numbers: the stage's metrics
 *   $MLPIPE_REASON   its first line says why the stage failed
 *
 * Two sides use it.  The engine names the files of an attempt, puts them
 * in the attempt's environment and reads them after it exits; a stage that
 * runs inside mlpipe (stage-gate.c, stage-rollout.c) writes them.  Nothing
 * here knows a stage kind or the scheduler.
 */
#ifndef MLP_STAGE_IO_H
#define MLP_STAGE_IO_H

#include <stdbool.h>
#include <stddef.h>

#include "base/json.h"
#include "base/kvlist.h"
#include "base/util.h"

#define MLP_STAGE_ENV_OUTPUT "MLPIPE_OUTPUT"
#define MLP_STAGE_ENV_METRICS "MLPIPE_METRICS"
#define MLP_STAGE_ENV_REASON "MLPIPE_REASON"

/* The files of one attempt.  Zero-initialise; free with mlp_stage_io_clear. */
struct mlp_stage_io {
	char *output_path;
	char *metrics_path;
	char *reason_path;
};

/*
 * Names the files of attempt `attempt` of stage `stage` in dir (the run's
 * directory: new, and attempts are numbered, so they never exist yet).
 * Frees the names io had.
 */
void mlp_stage_io_init(struct mlp_stage_io *io, const char *dir, const char *stage, int attempt);
/* Frees the names; io is zeroed (accepts a zeroed io). */
void mlp_stage_io_clear(struct mlp_stage_io *io);

/* Sets $MLPIPE_OUTPUT, $MLPIPE_METRICS and $MLPIPE_REASON in env, in that
 * order. */
void mlp_stage_io_setenv(struct mlp_strv *env, const struct mlp_stage_io *io);

/*
 * Reads what the attempt wrote: its outputs are appended to outputs, its
 * metrics set in *metrics and *nmetrics (free with mlp_metrics_free).  A
 * file the stage did not write is no outputs, no metrics.  Returns 0, or
 * MLP_EINVAL with a message naming the file ($MLPIPE_OUTPUT line 3 ...).
 */
int mlp_stage_io_collect(struct mlp_kvlist *outputs, struct mlp_metric **metrics, size_t *nmetrics,
                         const struct mlp_stage_io *io);

/*
 * The first line of $MLPIPE_REASON, when the stage wrote a non-empty one,
 * copied into buf (truncated to size); returns whether buf now holds a
 * reason.  buf is left alone when there is no file.
 */
bool mlp_stage_io_reason(char *buf, size_t size, const struct mlp_stage_io *io);

/*
 * Parses what a stage wrote to $MLPIPE_OUTPUT: KEY=VALUE lines, or
 * KEY<<DELIM ... DELIM for values with newlines.  Appends to out.
 * Returns 0 or MLP_EINVAL with a message naming the line.
 */
int mlp_outputs_parse(struct mlp_kvlist *out, const char *text, size_t len);

/*
 * For a stage running inside mlpipe: writes text (atomically) to the file
 * that the environment variable env_name (MLP_STAGE_ENV_*) names.  Returns
 * 0 without writing when the variable is unset or empty, else what
 * mlp_write_file_atomic returns.
 */
int mlp_stage_io_write(const char *env_name, const char *text, size_t len);

#endif
