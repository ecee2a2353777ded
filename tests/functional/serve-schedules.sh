#!/bin/sh
# Functional tests of the schedules `mlpipe serve` fires: a real server on
# 127.0.0.1, real file:// repositories, the pipeline's on.schedule.  Time
# comes from the documented test hook MLPIPE_SERVE_TEST_CLOCK (a file
# holding the Unix time, which the server follows instead of the wall
# clock), so a test moves time by writing the file and waits for what the
# server does, never for minutes to pass.
#
# Concurrency forbid / replace / allow while a run is going; a missed fire
# after downtime fires once within starting_deadline and not at all
# outside it, never once per missed time; @nightly in Europe/Berlin;
# `mlpipe schedules` listing the projects' schedules.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/serve-lib.sh"

new_repo
cat > cron.yml <<'Y'
name: cron
on:
  schedule:
    - cron: "0,1 3 * * *"
      concurrency: forbid
      starting_deadline: 5m
    - cron: "10,11 3 * * *"
      concurrency: replace
      starting_deadline: 5m
    - cron: "20,21 3 * * *"
      concurrency: allow
      starting_deadline: 5m
stages:
  work:
    run: |
      touch "$MLPIPE_TEST_GATE.started-$MLPIPE_RUN_ID"
      while [ ! -e "$MLPIPE_TEST_GATE.go-$MLPIPE_RUN_ID" ]; do sleep 0.05; done
      echo "trigger=$MLPIPE_TRIGGER" >> "$MLPIPE_OUTPUT"
      echo "commit=$MLPIPE_COMMIT" >> "$MLPIPE_OUTPUT"
Y
cat > late.yml <<'Y'
name: late
on:
  schedule:
    - cron: "0 10-16 * * *"
      starting_deadline: 30m
    - cron: "@nightly"
      timezone: Europe/Berlin
      starting_deadline: 2h
stages:
  work:
    run: echo "trigger=$MLPIPE_TRIGGER" >> "$MLPIPE_OUTPUT"
Y
git add cron.yml late.yml
commit_push 'two scheduled pipelines'
printf 'cron-secret' > "$T/s1"
printf 'late-secret' > "$T/s2"
"$MLPIPE" project add cron --remote "file://$T/remote.git" --pipeline cron.yml \
	--secret-file "$T/s1" >/dev/null
"$MLPIPE" project add late --remote "file://$T/remote.git" --pipeline late.yml \
	--secret-file "$T/s2" >/dev/null
token=$("$MLPIPE" token create t)
printf 'jobs = 4\nper_project = 4\n' > "$T/serve.conf"
export MLPIPE_SERVE_TEST_CLOCK="$T/clock"
clock() { # clock UTC-TIME: moves the server's clock (an atomic replace)
	date -u -d "$1" +%s > "$T/clock.new" && mv "$T/clock.new" "$T/clock"
}
log_has() { grep -Eq -- "$1" "$T/serve.log"; }
log_count() { grep -Ec -- "$1" "$T/serve.log" || true; }
# mark, then since_count REGEX: matching log lines written after the mark.
mark() { logmark=$(wc -l < "$T/serve.log"); }
since_count() { tail -n +$((logmark + 1)) "$T/serve.log" | grep -Ec -- "$1" || true; }
started() { [ -e "$MLPIPE_TEST_GATE.started-$1" ]; }
release() { touch "$MLPIPE_TEST_GATE.go-$1"; }
# queued_by KEY-REGEX N: the run id the Nth "run N queued" line of KEY names.
queued_by() {
	sed -n "s/.*schedule $1: run \([0-9]*\) queued.*/\1/p" "$T/serve.log" | sed -n "${2}p"
}

# --- the hook is off by default, and refuses a bad clock ---------------------
echo 'not a time' > "$T/badclock"
MLPIPE_SERVE_TEST_CLOCK="$T/badclock" run_mlpipe serve --listen 127.0.0.1:0
expect_eq "a test clock that is not a Unix time is refused" 1 "$rc"

# --- concurrency ------------------------------------------------------------
clock '2026-01-05 02:59:00'
start_server --poll-interval 0 --config "$T/serve.conf"
expect_match "the server says it follows the test clock" 'TEST HOOK: schedules follow the clock' "$(cat "$T/serve.log")"
wait_for "the five schedules are loaded" sh -c "[ \$(grep -c ': new; first fire at' '$T/serve.log') -ge 5 ]"
expect_match "a new schedule counts from now: first fire 03:00" 'schedule cron#1 0,1 3 \* \* \* UTC: new; first fire at 2026-01-05T03:00:00Z' "$(cat "$T/serve.log")"
expect_match "@nightly in Europe/Berlin first fires at 02:00 CET" 'schedule late#2 @nightly Europe/Berlin: new; first fire at 2026-01-06T01:00:00Z' "$(cat "$T/serve.log")"
expect_eq "nothing fires before its time" "" "$(runs_of cron)"

clock '2026-01-05 03:00:00'
wait_for "forbid: the schedule fires at its time" log_has 'schedule cron#1 [^:]*: run [0-9]+ queued'
f1=$(queued_by 'cron#1[^:]*' 1)
wait_for "forbid: its run starts" started "$f1" && ok "a schedule fires a run of the project's pipeline at its time"
clock '2026-01-05 03:01:00'
wait_for "forbid: the second fire is seen" log_has 'schedule cron#1 [^:]*: not run'
expect_match "forbid: a fire while the run is going is skipped and logged" "schedule cron#1 [^:]*: not run: run $f1 is still going \\(concurrency: forbid\\)" "$(cat "$T/serve.log")"
expect_eq "forbid: ... and queues nothing" "$f1" "$(runs_of cron)"
release "$f1"
if wait_run "$f1" succeeded; then ok "forbid: the first run finishes"; else not_ok "forbid: the first run finishes" "$(api "$base/api/v1/runs/$f1")"; fi
r=$(api "$base/api/v1/runs/$f1" | tr -d ' \n')
expect_match "the run is a schedule's, of the branch head" "\"trigger\":\"schedule\",\"user\":\"schedule\",\"commit\":\"$head\"" "$r"
expect_match "... and names its schedule" '"schedule":"cron#10,13\*\*\*UTC"' "$r"
j=$("$MLPIPE" runs show "$f1" --json | tr -d '\n\t ')
expect_match "MLPIPE_TRIGGER is schedule in the stage" '"work.trigger":"schedule"' "$j"

clock '2026-01-05 03:10:00'
wait_for "replace: the schedule fires" log_has 'schedule cron#2 [^:]*: run [0-9]+ queued'
r1=$(queued_by 'cron#2[^:]*' 1)
wait_for "replace: its run starts" started "$r1"
clock '2026-01-05 03:11:00'
wait_for "replace: the second fire queues a run" sh -c "[ \$(grep -Ec 'schedule cron#2 [^:]*: run [0-9]+ queued' '$T/serve.log') -ge 2 ]"
r2=$(queued_by 'cron#2[^:]*' 2)
if wait_run "$r1" cancelled; then ok "replace: the running run is cancelled"
else not_ok "replace: the running run is cancelled" "$(api "$base/api/v1/runs/$r1")"; fi
wait_for "replace: the new run starts" started "$r2" && ok "replace: the new run starts"
release "$r2"
if wait_run "$r2" succeeded; then ok "replace: the new run succeeds"; else not_ok "replace: the new run succeeds"; fi

clock '2026-01-05 03:20:00'
wait_for "allow: the schedule fires" log_has 'schedule cron#3 [^:]*: run [0-9]+ queued'
a1=$(queued_by 'cron#3[^:]*' 1)
wait_for "allow: its run starts" started "$a1"
clock '2026-01-05 03:21:00'
wait_for "allow: the second fire queues a run" sh -c "[ \$(grep -Ec 'schedule cron#3 [^:]*: run [0-9]+ queued' '$T/serve.log') -ge 2 ]"
a2=$(queued_by 'cron#3[^:]*' 2)
wait_for "allow: the second run starts" started "$a2"
expect_eq "allow: both run at once" "running running" "$(run_status "$a1") $(run_status "$a2")"
release "$a1"; release "$a2"
if wait_run "$a1" succeeded && wait_run "$a2" succeeded; then ok "allow: both succeed"; else not_ok "allow: both succeed"; fi
expect_eq "cron ran exactly the runs its fires queued" "$(printf '%s\n' "$f1" "$r1" "$r2" "$a1" "$a2" | sort -n)" "$(runs_of cron)"
stop_server
expect_eq "the server stops cleanly" 0 "$server_rc"

# --- `mlpipe schedules`: the server's projects ---------------------------------
run_mlpipe schedules --from 2026-03-28T00:00:00Z -n 2
expect_eq "schedules without a file lists the projects'" 0 "$rc"
expect_match "... read at the default branch head of the mirror" "cron: cron.yml at main ${head%????????????????????????????}" "$out"
expect_match "... each schedule with its zone and concurrency" 'cron #2: "10,11 3 \* \* \*" UTC \(concurrency replace\)' "$out"
expect_match "... and its next fire times" '2026-03-28T03:00:00Z  2026-03-28 03:00 \+00:00' "$out"
expect_match "... in its zone, across the spring-forward night (02:00 CET does not exist: 03:00 CEST)" \
	'late #2: "@nightly" Europe/Berlin \(concurrency forbid\).  2026-03-28T01:00:00Z  2026-03-28 02:00 \+01:00.  2026-03-29T01:00:00Z  2026-03-29 03:00 \+02:00' "$(printf '%s' "$out" | tr '\n' '.')"
run_mlpipe schedules --from 2026-10-24T12:00:00Z -n 2
expect_match "... and the fall-back night (02:00 CEST then 02:00 CET)" \
	'late #2: "@nightly" Europe/Berlin \(concurrency forbid\).  2026-10-25T00:00:00Z  2026-10-25 02:00 \+02:00.  2026-10-26T01:00:00Z  2026-10-26 02:00 \+01:00' "$(printf '%s' "$out" | tr '\n' '.')"

run_mlpipe schedules --from 2026-03-28
expect_eq "a --from that is not a UTC time is a usage error" 2 "$rc"

# --- downtime: catch up once within the deadline ----------------------------------
# Down from 03:21 to 13:10: "0 10-16" missed 10:00, 11:00, 12:00 and 13:00.
clock '2026-01-05 13:10:00'
mark
start_server --poll-interval 0 --config "$T/serve.conf"
wait_for "after downtime the missed schedule fires" log_has 'schedule late#1 [^:]*: run [0-9]+ queued'
l1=$(queued_by 'late#1[^:]*' 1)
if wait_run "$l1" succeeded; then ok "a missed fire within starting_deadline fires on start"
else not_ok "a missed fire within starting_deadline fires on start" "$(api "$base/api/v1/runs/$l1")"; fi
expect_eq "... once for four missed times, not four times" "$l1" "$(runs_of late)"
expect_eq "... and the schedules within their time did not fire" "0" "$(since_count 'schedule (cron#|late#2)[^:]*: (run|not run)')"
stop_server
# Down from 13:10 to 15:50: the latest missed time, 15:00, is 50 minutes old.
clock '2026-01-05 15:50:00'
start_server --poll-interval 0 --config "$T/serve.conf"
wait_for "a fire missed by more than the deadline is seen" log_has 'schedule late#1 [^:]*: not run'
expect_match "... and logged" 'schedule late#1 [^:]*: not run: missed by more than its starting_deadline' "$(cat "$T/serve.log")"
expect_eq "a missed fire outside starting_deadline does not fire" "$l1" "$(runs_of late)"
# It keeps its time afterwards.
clock '2026-01-05 16:00:00'
wait_for "the schedule fires at its next time after that" sh -c "[ \$(grep -Ec 'schedule late#1 [^:]*: run [0-9]+ queued' '$T/serve.log') -ge 2 ]"
l2=$(queued_by 'late#1[^:]*' 2)
if wait_run "$l2" succeeded; then ok "... and its run succeeds"; else not_ok "... and its run succeeds"; fi
stop_server
# Down from Jan 5 16:00 to Jan 8 02:40: @nightly (02:00 in Berlin, 01:00Z)
# missed three nights, the last 1h40 ago, within its 2h.
clock '2026-01-08 02:40:00'
mark
start_server --poll-interval 0 --config "$T/serve.conf"
wait_for "a missed @nightly fires on start" log_has 'schedule late#2 [^:]*: run [0-9]+ queued'
n1=$(queued_by 'late#2[^:]*' 1)
if wait_run "$n1" succeeded; then ok "... and succeeds"; else not_ok "... and succeeds"; fi
wait_for "the schedules missed for too long are seen" sh -c "[ \$(tail -n +$((logmark + 1)) '$T/serve.log' | grep -Ec 'schedule (cron#[123]|late#1) [^:]*: not run: missed') -ge 4 ]"
expect_eq "three missed nights fire once" 1 "$(log_count 'schedule late#2 [^:]*: run [0-9]+ queued')"
expect_eq "... and nothing else fired" "$(printf '%s\n' "$l1" "$l2" "$n1" | sort -n)" "$(runs_of late)"
expect_match "... the run names the @nightly schedule" '"schedule":"late#2@nightlyEurope/Berlin"' "$(api "$base/api/v1/runs/$n1" | tr -d ' \n')"
# A restart right after does not fire it again (the server's first turn
# fires what is due before it reads the SIGTERM that stops it).
stop_server
mark
start_server --poll-interval 0 --config "$T/serve.conf"
stop_server
expect_eq "a restart does not fire a schedule again" 0 "$(since_count 'schedule [^:]*: (run|not run)')"
expect_match "... (the restarted server did run)" 'mlpipe serve: stopped' "$(tail -n +$((logmark + 1)) "$T/serve.log")"

# --- a project the server has not fetched yet ---------------------------------------
"$MLPIPE" project add fresh --remote "file://$T/remote.git" --pipeline late.yml \
	--secret-file "$T/s1" >/dev/null
run_mlpipe schedules
expect_match "a project without a mirror says so" 'fresh: no mirror yet' "$out"
finish
