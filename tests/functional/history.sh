#!/bin/sh
# Functional tests of the history: `mlpipe runs`, `runs show`, `logs`.
. "$(dirname "$0")/lib.sh"

mkdir -p "$T/p"
cd "$T/p"
cat > a.yml <<'Y'
name: alpha
stages:
  first:
    run: echo one; echo two
  second:
    needs: [first]
    retry: { max: 1, backoff: 10ms }
    run: |
      echo "second try $MLPIPE_ATTEMPT"
      [ "$MLPIPE_ATTEMPT" -ge 2 ]
Y
cat > b.yml <<'Y'
name: beta
stages:
  only:
    run: echo beta; exit 1
Y

run_mlpipe runs
expect_eq "runs on an empty database" "no runs yet" "$out"

"$MLPIPE" run a.yml > /dev/null
"$MLPIPE" run b.yml > /dev/null || true
"$MLPIPE" run a.yml > /dev/null

run_mlpipe runs
expect_eq "runs exits 0" 0 "$rc"
expect_eq "runs lists newest first" "3 2 1" "$(printf '%s\n' "$out" | awk 'NR > 1 { printf "%s ", $1 }' | sed 's/ $//')"
expect_match "runs shows pipeline and status" "2 +beta +failed" "$out"

run_mlpipe runs --pipeline alpha
expect_eq "--pipeline filters" "3 1" "$(printf '%s\n' "$out" | awk 'NR > 1 { printf "%s ", $1 }' | sed 's/ $//')"
run_mlpipe runs --status failed
expect_eq "--status filters" "2" "$(printf '%s\n' "$out" | awk 'NR > 1 { printf "%s ", $1 }' | sed 's/ $//')"
run_mlpipe runs --status nonsense
expect_eq "an unknown status is a usage error" 2 "$rc"
run_mlpipe runs --json --limit 1
expect_match "--json is JSON with the run" '"id":[[:space:]]*3' "$out"
expect_match "--limit limits" '^\[' "$out"
[ "$(printf '%s' "$out" | grep -c '"id"')" = 1 ] && ok "--limit 1 gives one run" || not_ok "--limit 1 gives one run"

run_mlpipe runs show 1
expect_eq "runs show exits 0" 0 "$rc"
expect_match "runs show lists each attempt" "second +1 +failed" "$out"
expect_match "runs show lists the retry" "second +2 +succeeded" "$out"
expect_match "runs show gives the file's hash" "sha256 [0-9a-f]{12}" "$out"
run_mlpipe runs show 99
expect_eq "runs show of a missing run exits 2" 2 "$rc"
expect_eq "with one line" "mlpipe: no run 99" "$err"
run_mlpipe runs show x1
expect_eq "runs show of a bad id exits 2" 2 "$rc"

run_mlpipe logs 1 first
expect_eq "logs ID STAGE prints that stage's log" "one
two" "$out"
run_mlpipe logs 1
expect_match "logs ID prefixes lines with the stage" "first \| one" "$out"
expect_match "and later attempts with their number" "second#2 \| second try 2" "$out"
run_mlpipe logs 1 second --attempt 1
expect_eq "--attempt picks one attempt" "second try 1" "$out"
run_mlpipe logs 1 nosuch
expect_eq "logs of an unknown stage exits 2" 2 "$rc"
run_mlpipe logs 42
expect_eq "logs of a missing run exits 2" 2 "$rc"

# logs -f follows a running run to its end.
cat > slow.yml <<'Y'
stages:
  ticking:
    run: for i in 1 2 3; do echo tick $i; sleep 0.2; done
Y
"$MLPIPE" run slow.yml > /dev/null &
pid=$!
i=0
while ! "$MLPIPE" runs show 4 > /dev/null 2>&1 && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
run_mlpipe logs 4 ticking -f
wait $pid
expect_eq "logs -f prints lines as they come until the run ends" "tick 1
tick 2
tick 3" "$out"

finish
