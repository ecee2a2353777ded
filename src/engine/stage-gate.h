/*
 * stage-gate.h - the execution half of a `gate:` stage: deciding one gate
 * stage of a recorded run against the database, and reporting the
 * decision the way any stage reports (stage-io.h).
 *
 * The rules of a decision are pure functions in deploy/gate.h; this is
 * where they meet the store: the thresholds, the candidate's metrics, the
 * model version and its baseline are read, and the decision and the
 * version's new status written, in one transaction.
 */
#ifndef MLP_STAGE_GATE_H
#define MLP_STAGE_GATE_H

#include <stdbool.h>
#include <stdint.h>

struct mlp_store;

/* One decided gate stage. */
struct mlp_stage_gate;

/*
 * Decides gate stage `stage` of run run_id.  It reads the run's pipeline
 * text from the database (the file may have changed since the run
 * started), finds the gate's settings, and in ONE write transaction seeds
 * the thresholds its require: names that the database never had, reads
 * the thresholds and the metrics of metrics_from, compares, records the
 * decision and sets the model version's status (approved or rejected).
 * So the thresholds a decision used are exactly the ones in the database
 * when it was recorded, whatever an operator runs at the same time.
 *
 * Returns 0 when a decision was recorded, passed or not (free *out with
 * mlp_stage_gate_free); a negative code with a message when none could be
 * made (no such run or gate stage, a pipeline that no longer parses, a
 * database error), and then nothing was written.
 */
int mlp_stage_gate_decide(struct mlp_stage_gate **out, struct mlp_store *s, int64_t run_id,
                          const char *stage);

/* Whether the gate passed. */
bool mlp_stage_gate_passed(const struct mlp_stage_gate *g);
/* Why it failed, one line (owned by g); NULL when it passed. */
const char *mlp_stage_gate_reason(const struct mlp_stage_gate *g);
/* Accepts NULL. */
void mlp_stage_gate_free(struct mlp_stage_gate *g);

/*
 * The process of a gate stage (`mlpipe stage-gate`): opens the database
 * at db (NULL: the default), decides, prints the decision table on
 * stdout, writes passed=, model_version= and decision= to $MLPIPE_OUTPUT
 * and the compared metrics to $MLPIPE_METRICS; when the gate failed, its
 * reason to $MLPIPE_REASON and "gate 'NAME' failed: REASON" on stderr.
 * Returns 0 with *out_passed set, or a negative code with a message when
 * it could not decide or could not report.
 */
int mlp_stage_gate_exec(bool *out_passed, const char *db, int64_t run_id, const char *stage);

#endif
