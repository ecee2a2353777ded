#!/bin/sh
# Functional tests of `mlpipe serve`: a real server on 127.0.0.1, a real
# file:// bare repository pushed to from a work tree, real SQLite.  Push ->
# webhook -> run of the pushed commit; forgeries, replays, oversized and
# malformed bodies, other events, branch filters; the API and /metrics;
# kill -9 during a run and the recovery after it.
. "$(dirname "$0")/lib.sh"

command -v curl >/dev/null && command -v openssl >/dev/null && command -v git >/dev/null || {
	echo "1..0 # SKIP needs curl, openssl and git"; exit 0; }

export GIT_AUTHOR_NAME="Ada Tester" GIT_AUTHOR_EMAIL=ada@example.com
export GIT_COMMITTER_NAME="Ada Tester" GIT_COMMITTER_EMAIL=ada@example.com
export MLPIPE_TEST_GATE="$T/go"
git init -q --bare "$T/remote.git"
git init -q -b main "$T/work"
cd "$T/work"
cat > pipeline.yml <<'Y'
name: hooked
on:
  push:
    branches: [main, "release/*"]
stages:
  build:
    run: |
      echo "commit=$MLPIPE_COMMIT" >> "$MLPIPE_OUTPUT"
      echo "ref=$MLPIPE_REF" >> "$MLPIPE_OUTPUT"
      echo "branch=$MLPIPE_BRANCH" >> "$MLPIPE_OUTPUT"
      echo "author=$MLPIPE_AUTHOR" >> "$MLPIPE_OUTPUT"
      printf 'message=%s\n' "$MLPIPE_COMMIT_MESSAGE" | head -1 >> "$MLPIPE_OUTPUT"
      echo "hello from the build"
  test:
    needs: [build]
    run: |
      echo "build said ${{ stages.build.outputs.branch }}"
      echo once >> "$MLPIPE_TEST_GATE.test-count"
Y
git add pipeline.yml
git commit -q -m 'first $(touch pwned)'
git remote add origin "file://$T/remote.git"
git push -q origin main
c1=$(git rev-parse HEAD)

printf 'hook-secret\n' > "$T/secret"
run_mlpipe project add demo --remote "file://$T/remote.git" --branch main \
	--branch 'release/*' --pipeline pipeline.yml --secret-file "$T/secret"
expect_eq "project add" 0 "$rc"
run_mlpipe project list
expect_match "project list names where the secret is, not the secret" "demo .*$T/secret" "$out"
token=$("$MLPIPE" token create ci)
expect_match "token create prints a token" '^mlp_[0-9a-f]{64}$' "$token"

start_server() {
	rm -f "$T/port"
	"$MLPIPE" serve --listen 127.0.0.1:0 --port-file "$T/port" --poll-interval 0 \
		--grace 5s "$@" 2>>"$T/serve.log" &
	server=$!
	i=0
	while [ ! -s "$T/port" ] && [ $i -lt 200 ] && kill -0 $server 2>/dev/null; do
		sleep 0.05; i=$((i + 1)); done
	port=$(cat "$T/port" 2>/dev/null || echo 0)
	base="http://127.0.0.1:$port"
}
stop_server() {
	kill -TERM $server 2>/dev/null || true
	server_rc=0
	wait $server 2>/dev/null || server_rc=$?
}
trap '[ -z "${server:-}" ] || kill -9 "$server" 2>/dev/null || true; rm -rf "$T"' EXIT

# hook EVENT DELIVERY FILE [SIGNATURE]: posts a GitHub delivery; sets $code.
hook() {
	sig=${4:-sha256=$(openssl dgst -sha256 -hmac hook-secret < "$3" | sed 's/^.*= *//')}
	code=$(curl -s -o "$T/resp" -w '%{http_code}' -X POST -H "X-GitHub-Event: $1" \
		-H "X-GitHub-Delivery: $2" -H "X-Hub-Signature-256: $sig" \
		-H 'Content-Type: application/json' --data-binary "@$3" "$base/hooks/github")
	resp=$(cat "$T/resp")
}
push_payload() { # REF COMMIT [DELETED]
	printf '{"ref":"%s","before":"%s","after":"%s","deleted":%s,"repository":{"clone_url":"file://%s/remote.git"}}' \
		"$1" 0000000000000000000000000000000000000000 "$2" "${3:-false}" "$T" > "$T/payload"
}
api() { curl -s -H "Authorization: Bearer $token" "$@"; }
# wait_run ID STATUS: polls the API (10 s at most) until the run has STATUS.
wait_run() {
	i=0
	while [ $i -lt 200 ]; do
		st=$(api "$base/api/v1/runs/$1" | tr -d ' \n' | sed -n 's/^{"id":[0-9]*,"pipeline":"[^"]*","status":"\([a-z]*\)".*/\1/p')
		[ "$st" = "$2" ] && return 0
		sleep 0.05; i=$((i + 1))
	done
	return 1
}
nruns() { "$MLPIPE" runs --json | tr -d ' \n' | grep -o '"id":' | wc -l | tr -d ' '; }

start_server
expect_match "the server starts and reports its port" '^[1-9][0-9]*$' "$port"
expect_eq "/healthz" '{"status":"ok"}' "$(curl -s "$base/healthz")"

# --- ping and a push that runs ----------------------------------------------
echo '{"zen":"Keep it logically awesome.","hook_id":1}' > "$T/ping"
hook ping d-ping "$T/ping"
expect_eq "ping is answered 200" 200 "$code"
push_payload refs/heads/main "$c1"
hook push d-1 "$T/payload"
expect_eq "a signed push is answered 202" 202 "$code"
run1=$(printf '%s' "$resp" | sed -n 's/.*"run":\([0-9]*\).*/\1/p')
expect_match "the answer carries the run id" '^[0-9]+$' "$run1"
if wait_run "$run1" succeeded; then ok "the pushed commit's pipeline ran and succeeded"
else not_ok "the pushed commit's pipeline ran and succeeded" "$(api "$base/api/v1/runs/$run1")" "$(cat "$T/serve.log" | tail -20)"; fi
j=$("$MLPIPE" runs show "$run1" --json | tr -d '\n\t')
expect_match "the run records the pushed commit" "\"git_commit\": *\"$c1\"" "$j"
expect_match "MLPIPE_COMMIT reaches the stage" "\"build.commit\": *\"$c1\"" "$j"
expect_match "MLPIPE_REF and MLPIPE_BRANCH reach the stage" '"build.ref": *"refs/heads/main".*"build.branch": *"main"' "$j"
expect_match "MLPIPE_AUTHOR comes from the commit" '"build.author": *"Ada Tester <ada@example.com>"' "$j"
expect_match "the commit message reaches the stage as data" '"build.message": *"first \$\(touch pwned\)"' "$j"
if [ -e "$T/work/pwned" ] || find "$T" -name pwned | grep -q .; then not_ok "no injection through the commit message"
else ok "no injection through the commit message"; fi
r=$(api "$base/api/v1/runs/$run1" | tr -d ' \n')
expect_match "the API shows the ref, author and stages" '"ref":"refs/heads/main","author":"AdaTester<ada@example.com>".*"stages":\[\{"stage":"build"' "$r"
logs=$(api "$base/api/v1/runs/$run1/logs/build")
expect_eq "the API serves a stage's log" "hello from the build" "$logs"

# --- replays, forgeries and junk --------------------------------------------
before=$(nruns)
hook push d-1 "$T/payload"
expect_eq "a replayed delivery is acknowledged 200" 200 "$code"
expect_match "... as a duplicate of its run" "\"run\":$run1,.*\"duplicate\":true" "$resp"
hook push d-forged "$T/payload" "sha256=$(printf '%064d' 0)"
expect_eq "a forged signature gets 401" 401 "$code"
hook push d-nosig "$T/payload" " "
expect_eq "a missing signature gets 401" 401 "$code"
printf 'other-secret' > "$T/old"
sig=sha256=$(openssl dgst -sha256 -hmac other-secret < "$T/payload" | sed 's/^.*= *//')
hook push d-stale "$T/payload" "$sig"
expect_eq "a signature with another (stale) secret gets 401" 401 "$code"
head -c 2000000 /dev/zero | tr '\0' 'x' > "$T/big"
hook push d-big "$T/big"
expect_eq "an oversized body gets 413" 413 "$code"
printf '{"ref": "refs/heads/main", ' > "$T/bad"
hook push d-bad "$T/bad"
expect_eq "malformed JSON (signed) gets 400" 400 "$code"
hook issues d-issue "$T/payload"
expect_eq "an unknown event is acknowledged 200" 200 "$code"
expect_match "... and ignored" '"ignored":"not a push event"' "$resp"
push_payload refs/heads/feature/x "$c1"
hook push d-feature "$T/payload"
expect_eq "a branch the project does not watch: 200" 200 "$code"
expect_match "... ignored" 'does not watch' "$resp"
push_payload refs/heads/main 0000000000000000000000000000000000000000 true
hook push d-deleted "$T/payload"
expect_eq "a deleted ref: 200" 200 "$code"
expect_match "... ignored" 'deleted' "$resp"
expect_eq "none of these queued a run" "$before" "$(nruns)"
if grep -q d-forged "$MLPIPE_DB" 2>/dev/null || grep -q d-stale "$MLPIPE_DB"-wal 2>/dev/null; then
	not_ok "a rejected delivery leaves no trace in the database"
else ok "a rejected delivery leaves no trace in the database"; fi
expect_match "... but a log line" 'webhook github from 127.0.0.1: rejected' "$(cat "$T/serve.log")"

# --- the API -------------------------------------------------------------------
expect_eq "the API wants a token" 401 "$(curl -s -o /dev/null -w '%{http_code}' "$base/api/v1/runs")"
expect_eq "... a valid one" 401 "$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer mlp_nope' "$base/api/v1/runs")"
expect_match "GET /api/v1/runs lists runs" "\"runs\":\[\{\"id\":$run1," "$(api "$base/api/v1/runs" | tr -d ' \n')"
r=$(api -X POST -d '{"project":"demo","branch":"main"}' "$base/api/v1/runs")
run2=$(printf '%s' "$r" | sed -n 's/.*"run":\([0-9]*\).*/\1/p')
expect_match "POST /api/v1/runs queues a manual run" '^[0-9]+$' "$run2"
if wait_run "$run2" succeeded; then ok "the manual run ran the branch head"; else not_ok "the manual run ran the branch head"; fi
expect_match "... recorded as an api run by the token's name" '"trigger": *"api".*"user": *"ci"' "$("$MLPIPE" runs show "$run2" --json | tr -d '\n\t')"
expect_eq "an unknown run is 404" 404 "$(api -o /dev/null -w '%{http_code}' "$base/api/v1/runs/9999")"

# --- /metrics ------------------------------------------------------------------
m=$(curl -s "$base/metrics")
expect_match "metrics: runs by status" 'mlpipe_runs\{status="succeeded"\} 2' "$m"
expect_match "metrics: queue depth" 'mlpipe_queue_depth 0' "$m"
expect_match "metrics: stage duration histogram, by kind" 'mlpipe_stage_duration_seconds_bucket\{kind="run",le="\+Inf"\} 4' "$m"
expect_match "metrics: deliveries by result" 'mlpipe_webhook_deliveries_total\{result="rejected"\} 3' "$m"
expect_match "metrics: ignored deliveries (from SQLite)" 'mlpipe_webhook_deliveries_total\{result="ignored"\} 2' "$m"
expect_match "metrics: HELP and TYPE lines" '# TYPE mlpipe_stage_duration_seconds histogram' "$m"

# --- kill -9 during a run, and recovery ----------------------------------------
git checkout -q -b release/1
cat > pipeline.yml <<'Y'
name: slow
on:
  push:
    branches: ["release/*"]
stages:
  first:
    run: |
      echo "$MLPIPE_RUN_ID" >> "$MLPIPE_TEST_GATE.first-count"
      echo "value=42" >> "$MLPIPE_OUTPUT"
  second:
    needs: [first]
    run: |
      touch "$MLPIPE_TEST_GATE.second-started"
      while [ ! -e "$MLPIPE_TEST_GATE" ]; do sleep 0.05; done
      echo "got ${{ stages.first.outputs.value }}"
Y
git commit -q -am 'slow pipeline'
git push -q origin release/1
c2=$(git rev-parse HEAD)
push_payload refs/heads/release/1 "$c2"
hook push d-slow "$T/payload"
expect_eq "a push to release/1 is queued" 202 "$code"
run3=$(printf '%s' "$resp" | sed -n 's/.*"run":\([0-9]*\).*/\1/p')
i=0; while [ ! -e "$MLPIPE_TEST_GATE.second-started" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
# A second push waits in the queue (one run of a project at a time).
echo 'more' >> pipeline.yml.txt; git add pipeline.yml.txt; git commit -q -m more; git push -q origin release/1
c3=$(git rev-parse HEAD)
push_payload refs/heads/release/1 "$c3"
hook push d-queued "$T/payload"
run4=$(printf '%s' "$resp" | sed -n 's/.*"run":\([0-9]*\).*/\1/p')
expect_eq "a second push is answered 202 while the first runs" 202 "$code"
# The machine dies: the server and the run's process, with -9.
execpid=$(sed -n "s/.* run $run3: started (.*pid \([0-9]*\).*/\1/p" "$T/serve.log" | tail -1)
kill -9 $server
[ -n "$execpid" ] && kill -9 $execpid
wait $server 2>/dev/null || true
touch "$MLPIPE_TEST_GATE"
start_server
if wait_run "$run3" succeeded; then ok "after kill -9 the interrupted run is resumed and succeeds"
else not_ok "after kill -9 the interrupted run is resumed and succeeds" "$(api "$base/api/v1/runs/$run3")" "$(tail -20 "$T/serve.log")"; fi
expect_eq "the stage that had succeeded is not run again" 1 "$(grep -c "^$run3\$" "$MLPIPE_TEST_GATE.first-count")"
r=$(api "$base/api/v1/runs/$run3" | tr -d ' \n')
expect_match "the interrupted attempt is kept; the next is attempt 2" '"stage":"second","attempt":1,"kind":"run","status":"interrupted".*"stage":"second","attempt":2,"kind":"run","status":"succeeded"' "$r"
expect_match "outputs of the resumed stage reach later ones" "got '?42" "$(api "$base/api/v1/runs/$run3/logs/second")"
if wait_run "$run4" succeeded; then ok "the run answered 202 before the crash is not lost"
else not_ok "the run answered 202 before the crash is not lost" "$(api "$base/api/v1/runs/$run4")"; fi
expect_match "... and ran its own commit" "\"commit\":\"$c3\"" "$(api "$base/api/v1/runs/$run4" | tr -d ' \n')"

# --- cancel ----------------------------------------------------------------------
rm -f "$MLPIPE_TEST_GATE" "$MLPIPE_TEST_GATE.second-started"
r=$(api -X POST -d '{"project":"demo","branch":"release/1"}' "$base/api/v1/runs")
run5=$(printf '%s' "$r" | sed -n 's/.*"run":\([0-9]*\).*/\1/p')
i=0; while [ ! -e "$MLPIPE_TEST_GATE.second-started" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
r=$(api -X POST "$base/api/v1/runs/$run5/cancel")
expect_match "POST cancel on a running run" '"status":"cancelling"' "$r"
if wait_run "$run5" cancelled; then ok "the run is cancelled"; else not_ok "the run is cancelled" "$(api "$base/api/v1/runs/$run5")"; fi

# --- graceful stop ------------------------------------------------------------------
stop_server
expect_eq "SIGTERM stops the server cleanly" 0 "$server_rc"
[ "$server_rc" = 0 ] || tail -40 "$T/serve.log" | sed 's/^/# /'
expect_match "one log line per request" '127.0.0.1 GET /healthz 200' "$(cat "$T/serve.log")"
finish
