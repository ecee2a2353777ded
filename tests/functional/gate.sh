#!/bin/sh
# Functional tests of gates and the model registry: a model that misses its
# threshold never reaches its deploy stage; `mlpipe gate set` changes the
# next run's decision with no change to the pipeline file; `mlpipe models`
# and `mlpipe gate` as an operator uses them.
. "$(dirname "$0")/lib.sh"

mkdir -p "$T/p"
cd "$T/p"

# json RUN_ID: the run's JSON with all whitespace removed, for grepping.
json() { "$MLPIPE" runs show "$1" --json | tr -d ' \t\n'; }

cat > pipeline.yml <<'Y'
name: fashion
stages:
  train:
    run: |
      echo "weights for $ACC" > model.bin
      echo '{"train_loss": 0.2}' > "$MLPIPE_METRICS"
    model: { name: fashion, path: model.bin }
  evaluate:
    needs: [train]
    run: |
      printf '{"accuracy": %s, "loss": 0.3}\n' "$ACC" > "$MLPIPE_METRICS"
  gate:
    needs: [evaluate]
    gate:
      model: fashion
      metrics_from: evaluate
      require: { accuracy: ">= 0.85" }
      baseline: deployed
      max_regression: 0.005
  deploy:
    needs: [gate]
    run: echo deploying version ${{ stages.gate.outputs.model_version }} > deployed.txt
Y
sha_before=$(sha256sum pipeline.yml)

# --- run 1: 0.90 passes the seeded threshold; deploy runs --------------------
run_mlpipe run --var ACC=0.90 pipeline.yml
expect_eq "a model over the threshold passes the gate (exit 0)" 0 "$rc"
expect_match "the decision is printed as a table" "gate +\|   accuracy +0\.9 +>= 0\.85 +pass" "$out"
expect_match "no deployed version yet is said" "note: no baseline yet: passes on thresholds alone \(no deployed version\)" "$out"
expect_match "the version is approved" "decision: PASS \(fashion version 1 approved\)" "$out"
expect_eq "deploy runs with the approved version" "deploying version 1" "$(cat deployed.txt 2>/dev/null)"
run_mlpipe models show fashion:1 --json
j=$(printf '%s' "$out" | tr -d ' \t\n')
expect_match "version 1 is approved in the registry" '"status":"approved"' "$j"
expect_match "its sha256 is recorded" "\"sha256\":\"$(sha256sum model.bin | cut -c1-64)\"" "$j"
expect_match "it knows its run and stage" '"run_id":1,"stage":"train"' "$j"
expect_match "the judged metrics are the version's" '"metrics":\{"accuracy":0.9,"loss":0.3,"train_loss":0.2\}' "$j"
expect_match "the decision with its thresholds is kept" '"thresholds":\[\{"metric":"accuracy","op":">=","value":0.85' "$j"
artifact=$(printf '%s' "$j" | sed -n 's/.*"artifact":"\([^"]*\)".*/\1/p')
expect_eq "the artifact store holds a copy of the model" "$(cat model.bin)" "$(cat "$artifact" 2>/dev/null)"
expect_match "the model_version output reaches later stages" '"train.model_version":"1"' "$(json 1)"

# --- the operator raises the bar: the same file now fails --------------------
rm -f deployed.txt
run_mlpipe gate set fashion accuracy '>=' 0.95 --reason "raise the bar for Q3"
expect_eq "gate set exits 0" 0 "$rc"
expect_eq "gate set says what changed" "gate fashion: accuracy >= 0.95 (was >= 0.85)" "$out"
run_mlpipe run --var ACC=0.90 pipeline.yml
expect_eq "the next run fails at the gate (exit 1)" 1 "$rc"
expect_match "it says why" "decision: FAIL: accuracy = 0.9 does not meet >= 0.95 \(fashion version 2 rejected\)" "$out"
expect_match "the run's failure names the reason" "run 2 failed .*stage 'gate' failed: .*accuracy = 0.9 does not meet >= 0.95" "$out"
[ ! -e deployed.txt ] && ok "the deploy stage never ran" || not_ok "the deploy stage never ran"
expect_match "deploy is recorded as skipped" '"stage":"deploy","attempt":0,"kind":"run","status":"skipped"' "$(json 2)"
run_mlpipe models show fashion:2
expect_match "version 2 is rejected" "^model fashion version 2  rejected" "$out"
expect_match "with the gate's reason" "gate 'fashion' failed \(run 2\): accuracy = 0.9 does not meet >= 0.95" "$out"
expect_eq "the pipeline file was not changed" "$sha_before" "$(sha256sum pipeline.yml)"

# --- and lowering it flips the next run back ---------------------------------
run_mlpipe gate set fashion accuracy ge 0.88 --reason "too strict"
expect_eq "ge needs no shell quoting" "gate fashion: accuracy >= 0.88 (was >= 0.95)" "$out"
run_mlpipe run --var ACC=0.90 pipeline.yml
expect_eq "the next run passes again" 0 "$rc"
expect_eq "and deploys version 3" "deploying version 3" "$(cat deployed.txt 2>/dev/null)"

# --- a model under the threshold: never deployed -----------------------------
rm -f deployed.txt
run_mlpipe run --var ACC=0.80 pipeline.yml
expect_eq "a model under the threshold fails the run" 1 "$rc"
[ ! -e deployed.txt ] && ok "its deploy stage never ran" || not_ok "its deploy stage never ran"

# --- gate list / history -----------------------------------------------------
run_mlpipe gate list
expect_match "gate list shows the current threshold" "^fashion +accuracy +>= 0\.88 " "$out"
run_mlpipe gate history fashion
expect_eq "history has every change" 3 "$(printf '%s\n' "$out" | tail -n +2 | wc -l | tr -d ' ')"
expect_match "the seed is recorded as such" "pipeline-seed +accuracy +\(none\) -> >= 0\.85 +require: of pipeline 'fashion' \(run 1\)" "$out"
expect_match "a change has its old and new value and reason" "cli +accuracy +>= 0\.85 -> >= 0\.95 +raise the bar for Q3" "$out"
run_mlpipe gate history fashion --json
expect_match "history --json has the user" "\"user\":[[:space:]]*\"$(id -un)\"" "$out"
run_mlpipe gate history nosuch
expect_eq "history of an unknown gate exits 2" 2 "$rc"
expect_eq "and says so" "mlpipe: no gate 'nosuch': it never had a threshold" "$err"

# --- gate usage errors -------------------------------------------------------
run_mlpipe gate set fashion accuracy '=>' 0.9
expect_eq "a bad OP exits 2" 2 "$rc"
expect_match "and names the valid ones" "OP must be one of >= > <= < \(or ge gt le lt\), not '=>'" "$err"
run_mlpipe gate set fashion accuracy '>=' nan
expect_eq "a non-number VALUE exits 2" 2 "$rc"
run_mlpipe gate unset fashion accuracy
expect_eq "unset without --reason exits 2" 2 "$rc"
run_mlpipe gate unset fashion f1 --reason x
expect_eq "unset of a missing threshold exits 2" 2 "$rc"
expect_eq "and says so" "mlpipe: gate 'fashion' has no threshold on 'f1'" "$err"
run_mlpipe gate frobnicate
expect_eq "an unknown subcommand exits 2" 2 "$rc"

# --- models ------------------------------------------------------------------
run_mlpipe models
expect_match "models lists the model and its latest version" "^fashion +4 +4 +rejected +v3 +- " "$out"
run_mlpipe models --json
expect_match "models --json" '"latest_status":[[:space:]]*"rejected"' "$out"
run_mlpipe models approve fashion:4 --reason "checked by hand"
expect_eq "approve exits 0" 0 "$rc"
expect_eq "approve says who and why" "model fashion version 4: rejected -> approved (by $(id -un): checked by hand)" "$out"
run_mlpipe models reject fashion:4
expect_eq "reject without --reason exits 2" 2 "$rc"
run_mlpipe models approve fashion --reason x
expect_eq "approve without a version exits 2" 2 "$rc"
run_mlpipe models show fashion:9
expect_eq "an unknown version exits 2" 2 "$rc"
expect_eq "and says so" "mlpipe: model 'fashion' has no version 9" "$err"
run_mlpipe models show mnist
expect_eq "an unknown model exits 2" 2 "$rc"
expect_eq "and says so" "mlpipe: no model 'mnist'" "$err"

# --- identical model files are stored once -----------------------------------
n_before=$(find "$T/artifacts/sha256" -type f | wc -l)
run_mlpipe run --var ACC=0.90 pipeline.yml
expect_eq "the same model content again" "$n_before" "$(find "$T/artifacts/sha256" -type f | wc -l)"

# --- edge cases are failures -------------------------------------------------
cat > typo.yml <<'Y'
name: typo
stages:
  evaluate:
    run: |
      echo '{"accuracy": 0.99}' > "$MLPIPE_METRICS"
  gate:
    needs: [evaluate]
    gate:
      model: typo
      require: { acuracy: ">= 0.5" }
  deploy:
    needs: [gate]
    run: touch typo-deployed
Y
run_mlpipe run typo.yml
expect_eq "a metric name with a typo fails the gate" 1 "$rc"
expect_match "and suggests the near one" "metric 'acuracy' is missing from stage 'evaluate' \(did you mean 'accuracy'\?\)" "$out"
expect_match "a run without a model version says so" "run [0-9]+ registered no version of model 'typo'; judging the metrics of stage 'evaluate' alone" "$out"
[ ! -e typo-deployed ] && ok "nothing after a failed gate runs" || not_ok "nothing after a failed gate runs"

cat > empty.yml <<'Y'
name: empty
stages:
  evaluate:
    run: |
      echo '{"accuracy": 0.99}' > "$MLPIPE_METRICS"
  gate:
    needs: [evaluate]
    gate: { name: empty-gate, model: empty }
Y
run_mlpipe run empty.yml
expect_eq "a gate with no thresholds fails" 1 "$rc"
expect_match "and says how to fix it" "gate 'empty-gate' has no thresholds: add one with 'mlpipe gate set empty-gate METRIC OP VALUE'" "$out"
sed 's/gate: { name: empty-gate, model: empty }/gate: { name: empty-gate, model: empty, allow_empty: true }/' empty.yml > allow.yml
run_mlpipe run allow.yml
expect_eq "allow_empty: true lets it pass" 0 "$rc"

cat > direction.yml <<'Y'
name: direction
stages:
  evaluate:
    run: |
      echo '{"throughput": 120}' > "$MLPIPE_METRICS"
  gate:
    needs: [evaluate]
    gate:
      model: direction
      require: { throughput: ">= 100" }
      baseline: approved
Y
run_mlpipe run direction.yml
expect_eq "a metric of unknown direction with a baseline fails" 1 "$rc"
expect_match "and asks for a declaration" "direction of metric 'throughput' is unknown: declare it under directions" "$out"

# --- help --------------------------------------------------------------------
run_mlpipe help
expect_match "help lists models" "^  models " "$(printf '%s\n' "$out" | grep '^  models ' || true)"
expect_match "help lists gate" "^  gate " "$(printf '%s\n' "$out" | grep '^  gate ' || true)"
expect_match "the gate stage's command is marked internal" "^  stage-gate +\(internal\)" "$(printf '%s\n' "$out" | grep '^  stage-gate ' || true)"
for c in models gate stage-gate; do
	run_mlpipe "$c" --help
	expect_eq "$c --help exits 0" 0 "$rc"
	expect_match "$c --help shows its usage" "^usage: mlpipe $c" "$out"
done

# A new metric with a near name: set, with a warning naming the near one.
run_mlpipe gate set typo-gate accuracy ">=" 0.5
run_mlpipe gate set typo-gate acuracy ">=" 0.5
expect_eq "a near-duplicate metric is still set" 0 "$rc"
expect_match "but warns about a likely typo" "warning: gate typo-gate already has a threshold on 'accuracy'; 'acuracy' is a new metric" "$err"
run_mlpipe gate set typo-gate loss "<=" 1
expect_eq "an unrelated new metric gets no warning" "" "$err"

finish
