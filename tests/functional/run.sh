#!/bin/sh
# Functional tests of `mlpipe run`: the engine as a user meets it.
. "$(dirname "$0")/lib.sh"

# json RUN_ID: the run's JSON with all whitespace removed, for grepping.
json() { "$MLPIPE" runs show "$1" --json | tr -d ' \t\n'; }
# wait_for FILE: up to 10 s for a file to appear.
# wait_for FILE: until FILE has content (a pid file exists from the moment
# the shell opens it, before `echo $$` wrote anything: an empty file under
# load made the next check read no pid at all).
wait_for() {
	i=0
	while [ ! -s "$1" ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i + 1)); done
	[ -s "$1" ]
}
# gone PID: the process has exited (a zombie counts).
gone() {
	case "$1" in '' | *[!0-9]*) echo "# gone: '$1' is not a pid" >&2; return 1 ;; esac
	[ ! -e "/proc/$1" ] && return 0
	st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 0
	[ "$st" = Z ] || [ "$st" = X ]
}

mkdir -p "$T/p"
cd "$T/p"

# --- a passing pipeline: outputs and metrics flow between stages -----------
cat > ok.yml <<'Y'
name: flow
env:
  GREETING: hello
stages:
  a:
    run: |
      echo "word=$GREETING" >> "$MLPIPE_OUTPUT"
      echo 'tricky=$(touch pwned); `touch pwned2`' >> "$MLPIPE_OUTPUT"
      echo '{"accuracy": 0.93, "loss": 0.21}' > "$MLPIPE_METRICS"
  b:
    needs: [a]
    run: |
      echo got ${{ stages.a.outputs.word }} acc=${{ stages.a.metrics.accuracy }} run=${{ run.id }}
      echo ${{ stages.a.outputs.tricky }} > tricky.txt
Y
run_mlpipe run ok.yml
expect_eq "a passing pipeline exits 0" 0 "$rc"
expect_match "log lines are prefixed by stage" "b +\| got hello acc=0.93 run=1" "$out"
expect_match "the summary names the run" "run 1 succeeded" "$out"
expect_eq "outputs are substituted shell-quoted (no command ran)" \
	'$(touch pwned); `touch pwned2`' "$(cat tricky.txt)"
if [ -e pwned ] || [ -e pwned2 ]; then not_ok "no injection through outputs"; else ok "no injection through outputs"; fi
j=$(json 1)
expect_match "the run is recorded as succeeded" '"status":"succeeded"' "$j"
expect_match "metrics are recorded" '"a.accuracy":0.93' "$j"
expect_match "outputs are recorded" '"a.word":"hello"' "$j"
expect_match "the pipeline's sha256 is recorded" '"pipeline_sha256":"[0-9a-f]{64}"' "$j"

# --- a failing stage fails the run; what depends on it is skipped ----------
cat > fail.yml <<'Y'
stages:
  bad:
    run: echo about to fail; exit 3
  after_bad:
    needs: [bad]
    run: touch after_bad.ran
  independent:
    run: touch independent.ran
  on_failure:
    needs: [after_bad]
    if: failure()
    run: touch on_failure.ran
  cleanup:
    needs: [bad]
    if: always()
    run: touch cleanup.ran
  not_on_success:
    needs: [independent]
    if: failure()
    run: touch not_on_success.ran
Y
run_mlpipe run fail.yml
expect_eq "a failing stage makes the run exit 1" 1 "$rc"
expect_match "the failure names the stage and exit code" "stage 'bad' failed: exit code 3" "$out"
[ ! -e after_bad.ran ] && ok "a stage whose need failed does not run" || not_ok "a stage whose need failed does not run"
[ -e independent.ran ] && ok "independent stages still run" || not_ok "independent stages still run"
[ -e on_failure.ran ] && ok "if: failure() runs after an upstream failure" || not_ok "if: failure() runs after an upstream failure"
[ -e cleanup.ran ] && ok "if: always() runs" || not_ok "if: always() runs"
[ ! -e not_on_success.ran ] && ok "if: failure() does not run when nothing failed" || not_ok "if: failure() does not run when nothing failed"
j=$(json 2)
expect_match "the failed attempt records its exit code" '"stage":"bad","attempt":1,"kind":"run","status":"failed","exit_code":3' "$j"
expect_match "the skipped stage is recorded" '"stage":"after_bad","attempt":0,"kind":"run","status":"skipped"' "$j"

# --- continue_on_error ------------------------------------------------------
cat > coe.yml <<'Y'
stages:
  flaky:
    continue_on_error: true
    run: exit 1
  next:
    needs: [flaky]
    run: touch next.ran
Y
run_mlpipe run coe.yml
expect_eq "continue_on_error keeps the run green" 0 "$rc"
[ -e next.ran ] && ok "continue_on_error lets dependants run" || not_ok "continue_on_error lets dependants run"

# --- retries ----------------------------------------------------------------
cat > retry.yml <<'Y'
stages:
  flaky:
    retry: { max: 2, backoff: 100ms }
    run: |
      n=$(cat count 2>/dev/null || echo 0); n=$((n + 1)); echo $n > count
      echo "attempt $MLPIPE_ATTEMPT"
      [ $n -ge 2 ]
Y
run_mlpipe run retry.yml
expect_eq "a stage that fails once then passes succeeds with retry" 0 "$rc"
expect_eq "it ran exactly twice" 2 "$(cat count)"
expect_match "the retry is announced" "flaky: failed after .* \(exit code 1\); retrying in" "$out"
j=$(json 4)
expect_match "both attempts are recorded" '"attempt":1,"kind":"run","status":"failed".*"attempt":2,"kind":"run","status":"succeeded"' "$j"

cat > retry-on.yml <<'Y'
stages:
  wrong_code:
    retry: { max: 3, backoff: 10ms, on: ["exit:3"] }
    run: echo x >> tries; exit 4
Y
run_mlpipe run retry-on.yml
expect_eq "a failure not matching retry.on is not retried" 1 "$(wc -l < tries | tr -d ' ')"

# --- timeout kills the whole process tree ----------------------------------
cat > timeout.yml <<'Y'
stages:
  slow:
    timeout: 500ms
    kill_grace: 200ms
    run: |
      sh -c 'trap "" TERM; sleep 300' &
      echo $! > grandchild.pid
      sleep 300
Y
t0=$(date +%s)
run_mlpipe run timeout.yml
t1=$(date +%s)
expect_eq "a timed-out stage fails the run" 1 "$rc"
expect_match "the timeout is reported" "timed out after 500ms" "$out"
if [ $((t1 - t0)) -lt 10 ]; then ok "the timeout stops the stage promptly"; else not_ok "the timeout stops the stage promptly" "took $((t1 - t0)) s"; fi
gc=$(cat grandchild.pid)
i=0; while ! gone "$gc" && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
if gone "$gc"; then ok "a grandchild that ignores SIGTERM is killed too"; else not_ok "a grandchild that ignores SIGTERM is killed too"; kill -9 "$gc"; fi
expect_match "the attempt is recorded as timed out" '"timed_out":true' "$(json 6)"

# --- cancel with Ctrl-C and SIGTERM ----------------------------------------
cat > long.yml <<'Y'
stages:
  long:
    kill_grace: 2s
    run: |
      echo $$ > long.pid
      sleep 300
  later:
    needs: [long]
    run: touch later.ran
Y
for sig in INT TERM; do
	rm -f long.pid later.ran
	"$MLPIPE" run long.yml > cancel.out 2>&1 &
	pid=$!
	if wait_for long.pid; then
		kill -s $sig $pid
		set +e; wait $pid; crc=$?; set -e
		[ $sig = INT ] && want=130 || want=143
		expect_eq "SIG$sig cancels the run with exit $want" $want $crc
		sp=$(cat long.pid)
		if gone "$sp"; then ok "SIG$sig kills the running stage"; else not_ok "SIG$sig kills the running stage" "pid '$sp'"; kill -9 "$sp" 2>/dev/null || true; fi
		[ ! -e later.ran ] && ok "nothing starts after SIG$sig" || not_ok "nothing starts after SIG$sig"
	else
		not_ok "the long stage started" "$(cat cancel.out)"
		kill -9 $pid
	fi
done
j=$("$MLPIPE" runs --json --limit 1 | tr -d ' \t\n')
expect_match "a cancelled run is recorded as cancelled" '"status":"cancelled"' "$j"

# --- kill -9 of mlpipe: the run shows as interrupted -----------------------
rm -f long.pid
"$MLPIPE" run long.yml > /dev/null 2>&1 &
pid=$!
if wait_for long.pid; then
	kill -9 $pid
	set +e; wait $pid; set -e
	kill -9 -"$(cat long.pid)" 2>/dev/null || true
	j=$("$MLPIPE" runs --json --limit 1 | tr -d ' \t\n')
	expect_match "a run whose mlpipe was killed shows as interrupted" '"status":"interrupted"' "$j"
else
	not_ok "the long stage started"
fi

# --- -j 1 runs one stage at a time -----------------------------------------
cat > serial.yml <<'Y'
stages:
  one:
    run: echo start >> order; sleep 0.3; echo end >> order
  two:
    run: echo start >> order; sleep 0.3; echo end >> order
Y
rm -f order
run_mlpipe run -j 1 serial.yml
expect_eq "-j 1 never overlaps stages" "start end start end" "$(tr '\n' ' ' < order | sed 's/ $//')"
rm -f order
run_mlpipe run -j 2 serial.yml
expect_eq "-j 2 overlaps independent stages" "start start end end" "$(tr '\n' ' ' < order | sed 's/ $//')"

# --- env precedence and --var ----------------------------------------------
cat > env.yml <<'Y'
env:
  A: pipeline
  B: pipeline
  C: ${{ env.A }}-derived
stages:
  show:
    env:
      B: stage
    run: echo "A=$A B=$B C=$C STAGE=$MLPIPE_STAGE ATTEMPT=$MLPIPE_ATTEMPT"
Y
run_mlpipe run --var A=cli env.yml
expect_match "--var overrides env; stage env overrides pipeline env" "A=cli B=stage C=cli-derived STAGE=show ATTEMPT=1" "$out"

# --- a missing expression value fails the stage, not the engine ------------
cat > badref.yml <<'Y'
stages:
  a:
    run: "true"
  b:
    needs: [a]
    run: echo ${{ stages.a.outputs.missing }}
Y
run_mlpipe run badref.yml
expect_eq "a missing output fails the run" 1 "$rc"
expect_match "and says which" "stage 'a' wrote no output 'missing'" "$out"

cat > badmetrics.yml <<'Y'
stages:
  a:
    run: |
      echo '{"accuracy": "high"}' > "$MLPIPE_METRICS"
Y
run_mlpipe run badmetrics.yml
expect_eq "metrics that are not numbers fail the stage" 1 "$rc"
expect_match "with a clear reason" "metric 'accuracy' is not a finite number" "$out"

# --- refused before anything runs: exit 2 and no run recorded --------------
before=$("$MLPIPE" runs --limit 0 --json | grep -c '"id"' || true)
cat > invalid.yml <<'Y'
stages:
  a:
    run: echo hi
    neds: [b]
Y
run_mlpipe run invalid.yml
expect_eq "an invalid pipeline exits 2" 2 "$rc"
expect_match "with FILE:LINE:COL" "^invalid.yml:4:5: unknown key 'neds'" "$err"
cat > nowd.yml <<'Y'
workdir: does/not/exist
stages:
  a:
    run: echo hi
Y
run_mlpipe run nowd.yml
expect_eq "a missing working directory exits 2" 2 "$rc"
expect_match "and says which" "working directory .*does/not/exist does not exist" "$err"
run_mlpipe run missing.yml
expect_eq "a missing file exits 2" 2 "$rc"
after=$("$MLPIPE" runs --limit 0 --json | grep -c '"id"' || true)
expect_eq "refused pipelines leave no run behind" "$before" "$after"

# --- a read-only database: one clear line, exit 2 --------------------------
ro="$T/ro"
mkdir -p "$ro"
"$MLPIPE" runs --db "$ro/ro.db" > /dev/null
chmod 555 "$ro"; chmod 444 "$ro"/ro.db*
if [ "$(id -u)" -eq 0 ]; then
	as_user="setpriv --reuid=65534 --regid=65534 --clear-groups --"
	chmod 755 "$T" "$T/p"
else
	as_user=
fi
set +e
$as_user "$MLPIPE" run --db "$ro/ro.db" ok.yml > ro.out 2> ro.err
rorc=$?
set -e
chmod 755 "$ro"
expect_eq "a read-only database exits 2" 2 "$rorc"
expect_match "and says it is read-only" "read-only" "$(cat ro.err)"
expect_eq "in one line" 1 "$(wc -l < ro.err | tr -d ' ')"

finish
