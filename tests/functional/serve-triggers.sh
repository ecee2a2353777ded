#!/bin/sh
# Functional tests of `on:` under every trigger of `mlpipe serve`: the
# pipeline file read at the run's commit decides, the same way whoever
# started the run.  A pipeline without `on:` runs when started by hand
# (POST /api/v1/runs, `mlpipe run`) and is cancelled, with the same
# message, when a webhook or the git poller saw the push; a schedule whose
# pipeline no longer has on.schedule at the branch head is cancelled too.
# A real server on 127.0.0.1, a real file:// bare repository, real SQLite;
# time comes from MLPIPE_SERVE_TEST_CLOCK (serve-schedules.sh).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/serve-lib.sh"

new_repo
cat > manual.yml <<'Y'
name: manual
stages:
  work:
    run: echo "trigger=$MLPIPE_TRIGGER" >> "$MLPIPE_OUTPUT"
Y
cat > sched.yml <<'Y'
name: sched
on:
  schedule:
    - cron: "0 3 * * *"
stages:
  work:
    run: echo "trigger=$MLPIPE_TRIGGER" >> "$MLPIPE_OUTPUT"
Y
git add manual.yml sched.yml
commit_push 'a manual and a scheduled pipeline'
c1=$head
printf 'manual-secret' > "$T/s1"
printf 'sched-secret' > "$T/s2"
"$MLPIPE" project add manual --remote "file://$T/remote.git" --pipeline manual.yml \
	--secret-file "$T/s1" >/dev/null
"$MLPIPE" project add sched --remote "file://$T/remote.git" --pipeline sched.yml \
	--secret-file "$T/s2" >/dev/null
token=$("$MLPIPE" token create t)
export MLPIPE_SERVE_TEST_CLOCK="$T/clock"
clock() { date -u -d "$1" +%s > "$T/clock.new" && mv "$T/clock.new" "$T/clock"; }
log_has() { grep -Eq -- "$1" "$T/serve.log"; }
run_json() { api "$base/api/v1/runs/$1" | tr -d '\n'; }
# cancelled_because RUN TRIGGER MESSAGE-REGEX NAME
cancelled_because() {
	if wait_run "$1" cancelled; then
		r=$(run_json "$1")
		expect_match "$4" "\"trigger\": *\"$2\".*\"message\": *\"not started: the pipeline at [0-9a-f]{12} $3\"" "$r"
	else
		not_ok "$4" "$(run_json "$1")" "$(tail -10 "$T/serve.log")"
	fi
}

clock '2026-01-05 02:59:00'
start_server --poll-interval 0
wait_for "the schedule is loaded" log_has 'schedule sched#1 [^:]*: new; first fire at'

# --- by hand: runs without on: ------------------------------------------------
a=$(run_id_of "$(api -X POST -H 'Content-Type: application/json' \
	-d '{"project":"manual","branch":"main"}' "$base/api/v1/runs" | tr -d ' ')")
if wait_run "$a" succeeded; then ok "api: a pipeline without on: runs when started by hand"
else not_ok "api: a pipeline without on: runs when started by hand" "$(run_json "$a")"; fi
run_mlpipe run manual.yml
expect_eq "cli: mlpipe run runs a pipeline without on:" 0 "$rc"

# The next commit drops the schedule; the server has not fetched it.
cat > sched.yml <<'Y'
name: sched
stages:
  work:
    run: echo "trigger=$MLPIPE_TRIGGER" >> "$MLPIPE_OUTPUT"
Y
git add sched.yml
commit_push 'sched: no schedule any more'
c2=$head

# --- webhook: cancelled, as before --------------------------------------------
printf '{"ref":"refs/heads/main","before":"%s","after":"%s","repository":{}}' "$c1" "$c2" > "$T/body"
sig=$(openssl dgst -sha256 -hmac manual-secret < "$T/body" | sed 's/^.*= *//')
w=$(run_id_of "$(curl -s -X POST -H 'X-GitHub-Event: push' -H 'X-GitHub-Delivery: d-1' \
	-H "X-Hub-Signature-256: sha256=$sig" -H 'Content-Type: application/json' \
	--data-binary "@$T/body" "$base/hooks/github" | tr -d ' ')")
cancelled_because "$w" webhook 'does not run on a push to refs/heads/main \(on\.push\)' \
	"webhook: a push to a pipeline without on: is cancelled, saying why"

# --- schedule: the pipeline at the head no longer has on.schedule -------------
clock '2026-01-05 03:00:00'
wait_for "the schedule fires" log_has 'schedule sched#1 [^:]*: run [0-9]+ queued'
s=$(sed -n 's/.*schedule sched#1 [^:]*: run \([0-9]*\) queued.*/\1/p' "$T/serve.log" | head -1)
cancelled_because "$s" schedule 'does not run on a schedule \(on\.schedule\)' \
	"schedule: a fire whose pipeline at the head has no on.schedule is cancelled, saying why"
stop_server

# --- poll: the same rule as the webhook ---------------------------------------
git commit -q --allow-empty -m 'seen by the poller only'
git push -q origin HEAD:refs/heads/main
c3=$(git rev-parse HEAD)
start_server --poll-interval 0
wait_for "the poller queues the moved branch" log_has "poll manual: refs/heads/main moved to ${c3%????????????????????????????}"
p=$(sed -n 's/.*poll manual: [^ ]* moved to [0-9a-f]*: run \([0-9]*\) queued.*/\1/p' "$T/serve.log" | tail -1)
cancelled_because "$p" poll 'does not run on a push to refs/heads/main \(on\.push\)' \
	"poll: a push the poller saw is cancelled like the webhook's, saying why"
expect_eq "poll: ... and the run is of the polled commit" "$c3" \
	"$(run_json "$p" | sed -n 's/.*"commit": *"\([0-9a-f]*\)".*/\1/p')"
stop_server
expect_eq "the server stops cleanly" 0 "$server_rc"
finish
