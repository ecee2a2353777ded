#!/bin/sh
# Functional tests of `mlpipe serve`'s graceful shutdown (docs/serve.md,
# "Queue, execution and recovery"): on SIGTERM a running run may finish
# within --grace and the server exits 0 only after it; a run still going
# when the grace period ends is cancelled and its stage's process group
# killed; while stopping, a webhook delivery is refused (the listening
# socket is closed) and queues nothing; a run queued but not started stays
# queued in SQLite and the next server runs it.  A real server on
# 127.0.0.1, a real file:// bare repository, real SQLite.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/serve-lib.sh"

new_repo
cat > pipeline.yml <<'Y'
name: stopping
on: push
stages:
  work:
    run: |
      echo $$ > "$MLPIPE_TEST_GATE.$MLPIPE_RUN_ID.pid"
      case "$MLPIPE_BRANCH" in
        slow) sleep 300 ;;
        *) # until the test lets it finish (bounded: 60 s)
           i=0
           while [ ! -e "$MLPIPE_TEST_GATE.release" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done ;;
      esac
      echo finished
Y
git add pipeline.yml
commit_push 'first'
commit_push 'slow' slow
printf 'stop-secret\n' > "$T/secret"
"$MLPIPE" project add stopping --remote "file://$T/remote.git" --branch main --branch slow \
	--pipeline pipeline.yml --secret-file "$T/secret" >/dev/null
token=$("$MLPIPE" token create t)

# queue BRANCH: a manual run through the API; prints its id.
queue() { run_id_of "$(api -X POST -d "{\"project\":\"stopping\",\"branch\":\"$1\"}" "$base/api/v1/runs" | tr -d ' \n')"; }
# db_status RUN: the run's status in the database (no server needed).
db_status() { "$MLPIPE" runs show "$1" --json | tr -d ' \n\t' | sed -n 's/.*"status":"\([a-z]*\)".*/\1/p' | head -1; }
started() { [ -s "$MLPIPE_TEST_GATE.$1.pid" ]; }
logged() { grep -q "$1" "$T/serve.log"; }
nruns() { "$MLPIPE" runs --json | tr -d ' \n' | grep -o '"id":' | wc -l | tr -d ' '; }

# --- (a) a run that finishes within the grace period --------------------------
start_server --poll-interval 0 --grace 10s -j 1
expect_match "the server starts" '^[1-9][0-9]*$' "$port"
ra=$(queue main)
wait_for "the held stage starts" started "$ra" && ok "the held stage starts"
rq=$(queue main)
expect_match "a second run of the project is queued behind it" '^[0-9]+$' "$rq"
expect_eq "... and waits (one run of a project at a time)" queued "$(run_status "$rq")"
kill -TERM "$server"
wait_for "the server logs that it stops taking work" logged 'SIGTERM: no new work' &&
	ok "the server logs that it stops taking work"

# --- (c) a delivery while stopping ----------------------------------------------
before=$(nruns)
printf '{"ref":"refs/heads/main","before":"%040d","after":"%s","repository":{}}' 0 "$head" > "$T/body"
sig=sha256=$(openssl dgst -sha256 -hmac stop-secret < "$T/body" | sed 's/^.*= *//')
set +e
curl -s -o /dev/null -X POST -H 'X-GitHub-Event: push' -H 'X-GitHub-Delivery: d-late' \
	-H "X-Hub-Signature-256: $sig" -H 'Content-Type: application/json' \
	--data-binary "@$T/body" "$base/hooks/github"
curl_rc=$?
set -e
expect_eq "a webhook delivery while stopping: connection refused (curl exit 7)" 7 "$curl_rc"
expect_eq "... it queued no run" "$before" "$(nruns)"
if [ "$(db_status "$ra")" = running ]; then ok "the running run is not cancelled within the grace period"
else not_ok "the running run is not cancelled within the grace period" "$(db_status "$ra")"; fi
# the stage may finish now, well within the 10 s grace period
touch "$MLPIPE_TEST_GATE.release"

server_rc=0
wait "$server" 2>/dev/null || server_rc=$?
st_at_exit=$(db_status "$ra")
server=
expect_eq "after SIGTERM the server exits 0" 0 "$server_rc"
expect_eq "... only after the running run ended, succeeded" succeeded "$st_at_exit"
expect_match "... its stage ran to the end" 'finished' "$("$MLPIPE" logs "$ra" work 2>&1 || true)"
if logged 'grace period over'; then not_ok "... nothing was cancelled" "$(tail -5 "$T/serve.log")"
else ok "... nothing was cancelled"; fi

# --- (d) a queued run stays queued for the next server ------------------------------
expect_eq "the run queued behind it stays queued in SQLite" queued "$(db_status "$rq")"
if started "$rq"; then not_ok "... and never started"; else ok "... and never started"; fi
start_server --poll-interval 0 --grace 10s -j 1
if wait_run "$rq" succeeded; then ok "the next server picks the queued run up and runs it"
else not_ok "the next server picks the queued run up and runs it" "$(run_status "$rq")" "$(tail -10 "$T/serve.log")"; fi

# --- (b) a run still going when the grace period ends -------------------------------
stop_server
start_server --poll-interval 0 --grace 1s -j 1
rb=$(queue slow)
wait_for "the 300 s stage starts" started "$rb" && ok "the 300 s stage starts"
pid=$(cat "$MLPIPE_TEST_GATE.$rb.pid" 2>/dev/null || echo 0)
# The stage's shell leads its own process group (it and its sleep).
pgid=$(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ')
expect_eq "the stage's shell leads its own process group" "$pid" "$pgid"
t0=$(date +%s)
kill -TERM "$server"
server_rc=0
i=0
while kill -0 "$server" 2>/dev/null && [ $i -lt 300 ]; do sleep 0.05; i=$((i + 1)); done
t1=$(date +%s)
if kill -0 "$server" 2>/dev/null; then
	not_ok "the server exits within 15 s of SIGTERM with --grace 1s" "$(tail -10 "$T/serve.log")"
	kill -9 "$server"
fi
wait "$server" 2>/dev/null || server_rc=$?
server=
expect_eq "... and exits 0" 0 "$server_rc"
elapsed=$((t1 - t0))
if [ "$elapsed" -ge 1 ] && [ "$elapsed" -le 6 ]; then ok "... after the 1 s grace period, within a few seconds ($elapsed s)"
else not_ok "... after the 1 s grace period, within a few seconds" "took $elapsed s"; fi
expect_match "the server logs the cancel" 'grace period over: cancelling 1 run' "$(cat "$T/serve.log")"
expect_eq "the run is recorded cancelled" cancelled "$(db_status "$rb")"
if kill -0 "$pid" 2>/dev/null; then not_ok "the stage's process is gone" "pid $pid"; else ok "the stage's process is gone"; fi
# live PGID: the processes of the group that are not zombies (a zombie is
# dead; whoever inherited it reaps it in its own time).
live() { ps -e -o pgid=,stat=,pid=,args= | awk -v g="$1" '$1 == g && $2 !~ /^Z/'; }
i=0
while [ -n "$pgid" ] && [ -n "$(live "$pgid")" ] && [ $i -lt 40 ]; do sleep 0.05; i=$((i + 1)); done
if [ -n "$pgid" ] && [ -n "$(live "$pgid")" ]; then
	not_ok "... and its whole process group (the sleep too)" "$(live "$pgid")"
else ok "... and its whole process group (the sleep too)"; fi
if pgrep -f "exec-run --db $MLPIPE_DB --run $rb\$" >/dev/null; then
	not_ok "the run's exec-run process is gone"
else ok "the run's exec-run process is gone"; fi
finish
