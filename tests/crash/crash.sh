#!/bin/bash
# crash.sh - crash injection (`make check-crash`, docs/testing.md): while
# signed GitHub deliveries arrive at `mlpipe serve` on 127.0.0.1, a killer
# sends SIGKILL, at moments drawn from a seeded generator, to the server
# (which it then starts again) or to one of the `mlpipe exec-run` children
# executing the runs.  Afterwards a last server finishes every run, and the
# test checks what docs/serve.md promises under "Recovery policy":
#
#   - every delivery answered 2xx is exactly one run, and a delivery sent
#     again (after a kill, or at random) names the same run;
#   - every run ends succeeded (resume_limit is raised out of the way);
#   - no stage ran again after an attempt of it succeeded, no attempt
#     number was used twice, and every attempt the trace saw is recorded;
#   - no stage ever had two live attempts (each attempt takes a flock on a
#     file of its run and stage, and says "overlap" when it cannot);
#   - PRAGMA integrity_check says ok, and no process of the test is left.
#
# CRASH_SEED=N reproduces the killer's choices (the timing of the machine
# still varies); CRASH_DELIVERIES and CRASH_KILLS size it.  Real git
# (file://), real SQLite, real processes.  Needs curl, openssl, git, flock,
# sqlite3 and pgrep.
. "$(dirname "$0")/../functional/lib.sh" || exit 1
# CI sets MLPIPE_CRASH_REQUIRED=1: there a missing tool is a failure.
for tool in curl openssl git flock sqlite3 pgrep; do
	command -v $tool >/dev/null && continue
	[ "${MLPIPE_CRASH_REQUIRED:-}" = 1 ] && { echo "Bail out! needs $tool"; exit 1; }
	echo "1..0 # SKIP needs $tool"; exit 0
done

seed=${CRASH_SEED:-$(( $(date +%s) % 100000 ))}
deliveries=${CRASH_DELIVERIES:-80}
kills=${CRASH_KILLS:-20}
echo "# CRASH_SEED=$seed CRASH_DELIVERIES=$deliveries CRASH_KILLS=$kills"
RANDOM=$seed
started=$(date +%s)

export GIT_AUTHOR_NAME="Ada Tester" GIT_AUTHOR_EMAIL=ada@example.com
export GIT_COMMITTER_NAME="Ada Tester" GIT_COMMITTER_EMAIL=ada@example.com
export TRACE="$T/trace" STAGE_SH="$T/stage.sh" T
mkdir -p "$T/locks" "$T/out" "$T/sent"
: > "$TRACE"

# Every process the servers started (exec-run, stages, their children)
# has CRASH_MARK=$T in its environment; nothing else has.  At exit,
# whatever is left of them goes.
ours() {
	for e in /proc/[0-9]*/environ; do
		if tr '\0' '\n' 2>/dev/null < "$e" | grep -qxF "CRASH_MARK=$T"; then
			p=${e#/proc/}; echo "${p%/environ}"
		fi
	done
	return 0
}
cleanup() {
	for p in $(ours); do kill -9 "$p" 2>/dev/null; done
	[ -n "${CRASH_KEEP:-}" ] && echo "# kept $T" || rm -rf "$T"
}
trap cleanup EXIT

# --- the stage --------------------------------------------------------------
# One attempt: takes its run and stage's lock (an attempt still alive
# holds it, its background sleep included), writes "start RUN STAGE
# ATTEMPT PID", works 0.1-0.4 s, writes "end ...".  Its output goes to a
# file: once its exec-run is dead, a write to the inherited pipe would be
# SIGPIPE, which would end a leftover before it could overlap anything.
#
# Crash injection at the earliest moment a stage exists: when the killer
# has left $T/arm, the first attempt to take it kills its exec-run (the
# first "mlpipe" among its ancestors) before it does anything else.
cat > "$STAGE_SH" <<'S'
me="$MLPIPE_RUN_ID $MLPIPE_STAGE $MLPIPE_ATTEMPT $$"
if mv "$T/arm" "$T/armed.$$" 2>/dev/null; then
	p=$PPID n=0
	while [ $n -lt 4 ] && read -r _ comm _ ppid _ < "/proc/$p/stat"; do
		if [ "$comm" = "(mlpipe)" ]; then kill -9 "$p"; break; fi
		p=$ppid n=$((n + 1))
	done
	echo "exec-run-by-stage $p $MLPIPE_RUN_ID ($me)" > "$T/armed.$$"
fi
exec >> "$T/out/$MLPIPE_RUN_ID.$MLPIPE_STAGE.$MLPIPE_ATTEMPT" 2>&1
exec 9>> "$T/locks/$MLPIPE_RUN_ID.$MLPIPE_STAGE"
if ! flock -n 9; then
	echo "overlap $me" >> "$TRACE"
	flock -w 60 9 || exit 1
fi
echo "start $me" >> "$TRACE"
sleep "0.$(( $$ % 4 + 1 ))" &
wait $!
echo "end $me" >> "$TRACE"
S

# --- a repository: one commit, a branch per delivery ------------------------
# A commit that already has a run on a ref is a duplicate (docs/serve.md):
# each delivery pushes the same commit to a branch of its own.  The poller
# then never queues anything: every branch's head is the commit its
# delivery ran, or a branch that never ran.
git init -q --bare "$T/remote.git"
git init -q -b main "$T/work"
cd "$T/work"
cat > pipeline.yml <<'Y'
name: crash
on:
  push:
    branches: ["d/*"]
stages:
  prepare:
    run: sh "$STAGE_SH"
  train:
    needs: [prepare]
    run: sh "$STAGE_SH"
  check:
    needs: [prepare]
    run: sh "$STAGE_SH"
  report:
    needs: [train, check]
    run: sh "$STAGE_SH"
Y
git add pipeline.yml
git commit -q -m crash
git remote add origin "file://$T/remote.git"
commit=$(git rev-parse HEAD)
refspecs=()
for k in $(seq 1 "$deliveries"); do refspecs+=("HEAD:refs/heads/d/$k"); done
git push -q origin "${refspecs[@]}"
cd "$T"
printf 'crash-secret\n' > "$T/secret"
"$MLPIPE" project add crash --remote "file://$T/remote.git" --branch 'd/*' \
	--pipeline pipeline.yml --secret-file "$T/secret" >/dev/null
printf 'jobs = 4\nper_project = 4\nresume_limit = 1000\n' > "$T/serve.conf"

# --- the server -------------------------------------------------------------
alive() { kill -0 "$1" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
# start_server: a server on a fresh port; its pid in $T/serve.pid, its port
# in $T/port (the senders read it before each try).
start_server() {
	rm -f "$T/port"
	# Started from a subshell, so that no shell reports it killed.
	(CRASH_MARK=$T "$MLPIPE" serve --listen 127.0.0.1:0 --port-file "$T/port" \
		--poll-interval 0 --grace 30s --config "$T/serve.conf" 2>>"$T/serve.log" &
		echo $! > "$T/serve.pid")
	i=0
	while [ ! -s "$T/port" ] && [ $i -lt 400 ] && alive "$(cat "$T/serve.pid")"; do
		sleep 0.05; i=$((i + 1)); done
	[ -s "$T/port" ]
}
# Every exec-run of this database: those serve started for a run, and the
# one standing by for the next run (dispatch.c), which a kill may hit too.
exec_runs() { pgrep -f "exec-run --db $MLPIPE_DB --" || true; }
# exec_run_of RUN: its exec-run, from the newest "run N: started (... pid
# P" line of the servers' log (a standby's command line names no run).
exec_run_of() {
	sed -n "s/.* run $1: started (.*pid \([0-9]*\).*/\1/p" "$T/serve.log" | tail -1
}

# --- the senders ------------------------------------------------------------
body_of() { # K: the push of delivery K
	printf '{"ref":"refs/heads/d/%s","before":"%s","after":"%s","repository":{"clone_url":"file://%s/remote.git"}}' \
		"$1" 0000000000000000000000000000000000000000 "$commit" "$T"
}
# deliver K: posts delivery K until it is answered 2xx (60 s at most, and
# not after the senders' deadline), the way a forge redelivers; appends
# "K CODE RUN" to $T/sent/K.  A refused connection or an empty reply (a
# server killed meanwhile) and a 5xx are tried again 0.1 s later (and
# counted); any other answer is a defect, logged as "bad".
deliver() {
	local k=$1 body sig code port end=$((SECONDS + 60))
	body=$(body_of "$k")
	sig=$(printf '%s' "$body" | openssl dgst -sha256 -hmac crash-secret | sed 's/^.*= *//')
	while [ $SECONDS -lt $end ] && [ $SECONDS -lt "$send_deadline" ]; do
		port=$(cat "$T/port" 2>/dev/null || echo 1)
		code=$(curl -s -o "$T/sent/resp.$k" -w '%{http_code}' --connect-timeout 2 --max-time 15 \
			-X POST -H "X-GitHub-Event: push" -H "X-GitHub-Delivery: crash-$k" \
			-H "X-Hub-Signature-256: sha256=$sig" -H 'Content-Type: application/json' \
			--data-binary "$body" "http://127.0.0.1:$port/hooks/github" 2>/dev/null) || true
		case "$code" in
		2??)
			echo "$k $code $(sed -n 's/.*"run": *\([0-9]*\).*/\1/p' "$T/sent/resp.$k")" >> "$T/sent/$k"
			return 0;;
		000|5??) echo "$k $code" >> "$T/sent/retried";;
		*) echo "bad $k $code $(cat "$T/sent/resp.$k")" >> "$T/sent/bad"; return 1;;
		esac
		sleep 0.1
	done
	echo "bad $k never answered 2xx" >> "$T/sent/bad"
	return 1
}
# sender FIRST STEP SEED: delivers FIRST, FIRST+STEP ... 0.1-0.6 s apart
# (4 minutes at most for all);
# after a kill (a new line in $T/kills) and now and then at random, it
# sends an earlier delivery again.
sender() {
	local k=$1 step=$2 seen=0 n
	RANDOM=$3
	while [ "$k" -le "$deliveries" ] && [ $SECONDS -lt "$send_deadline" ]; do
		deliver "$k" || true
		n=$(wc -l < "$T/kills")
		if [ "$n" != "$seen" ] || [ $((RANDOM % 8)) = 0 ]; then
			seen=$n
			j=$((k - step * (RANDOM % 3)))
			[ "$j" -ge 1 ] || j=$k
			deliver "$j" || true
		fi
		sleep "0.$((RANDOM % 6 + 1))"
		k=$((k + step))
	done
}

# --- the killer -------------------------------------------------------------
# Until $T/stop exists or it has killed $kills times: waits 0-2 s, then
# kills the server (1 time in 3; it starts a new one 0-0.5 s later) or an
# exec-run: at once, as soon as a stage writes "start", or (through the
# stage itself, $T/arm) as soon as a stage's process exists, a moment
# when it may not be recorded yet.
killer() {
	local n=0 what pids victim size i
	while [ $n -lt "$kills" ] && [ ! -e "$T/stop" ]; do
		sleep "$((RANDOM % 2)).$((RANDOM % 10))$((RANDOM % 10))"
		[ "$n" = 0 ] && sleep 0.2
		what=$((RANDOM % 8))
		if [ $what -ge 6 ]; then
			touch "$T/arm"; i=0
			while [ -e "$T/arm" ] && [ ! -e "$T/stop" ] && [ $i -lt 300 ]; do
				sleep 0.01; i=$((i + 1)); done
			rm -f "$T/arm"
			for f in "$T"/armed.*; do
				[ -s "$f" ] || continue
				cat "$f" >> "$T/kills"; rm -f "$f"; n=$((n + 1))
			done
			continue
		fi
		if [ $what -lt 2 ]; then
			victim=$(cat "$T/serve.pid")
			kill -9 "$victim" 2>/dev/null || true
			i=0
			while alive "$victim" && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
			n=$((n + 1)); echo "serve $victim" >> "$T/kills"
			sleep "0.$((RANDOM % 6))"
			start_server || echo "a server did not start" >> "$T/sent/bad"
			continue
		fi
		kind=exec-run
		if [ $what -ge 4 ]; then
			kind=exec-run-at-start
			# At a stage's start: the next "start" line (3 s at most).
			size=$(wc -c < "$TRACE"); i=0
			while [ "$(wc -c < "$TRACE")" = "$size" ] && [ $i -lt 300 ]; do
				sleep 0.01; i=$((i + 1)); done
			run=$(tail -1 "$TRACE" | awk '$1 == "start" {print $2}')
			pids=$([ -z "$run" ] || exec_run_of "$run")
			[ -z "$pids" ] || alive "$pids" || pids=
		else
			pids=$(exec_runs)
		fi
		set -- $pids
		[ $# -gt 0 ] || continue
		victim=$(eval echo "\${$((RANDOM % $# + 1))}")
		cmd=$(tr "\\0" " " 2>/dev/null < "/proc/$victim/cmdline" || true)
		kill -9 "$victim" 2>/dev/null || continue
		n=$((n + 1)); echo "$kind $victim ${cmd##*--run }" >> "$T/kills"
	done
}

: > "$T/kills"
: > "$T/sent/retried"
send_deadline=$((SECONDS + 240))
if start_server; then ok "the server starts"; else not_ok "the server starts" "$(tail -5 "$T/serve.log")"; fi
killer &
killer_pid=$!
sender 1 2 $((seed + 1)) &
s1=$!
sender 2 2 $((seed + 2)) &
s2=$!
wait $s1 $s2 || true
# The killer goes on while runs execute: until it has killed $kills times
# or every run has finished (2 min at most).
db() { sqlite3 -cmd '.timeout 5000' "$MLPIPE_DB" "$@"; }
unfinished() { db "SELECT count(*) FROM runs WHERE status IN ('queued','running','interrupted')"; }
i=0
while alive "$killer_pid" && [ "$(unfinished)" != 0 ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i + 1)); done
touch "$T/stop"
wait $killer_pid || true
nkills=$(wc -l < "$T/kills")
echo "# $nkills kills: $(awk '{print $1}' "$T/kills" | sort | uniq -c | tr -s ' \n' ' ')"
echo "# $(cat "$T"/sent/[0-9]* 2>/dev/null | wc -l) answers to $deliveries deliveries;" \
	"tried again: $(grep -c ' 000$' "$T/sent/retried" || true) refused or cut," \
	"$(grep -c ' 5..$' "$T/sent/retried" || true) 5xx"

expect_eq "every delivery was answered 2xx, never 4xx" "" "$(cat "$T/sent/bad" 2>/dev/null || true)"
[ "$nkills" -ge 5 ] && ok "the killer killed ($nkills times)" || not_ok "the killer killed" "$nkills kills"

# --- a last server finishes every run ---------------------------------------
serve_pid=$(cat "$T/serve.pid")
alive "$serve_pid" || start_server || true
serve_pid=$(cat "$T/serve.pid")
i=0
while [ "$(unfinished)" != 0 ] && [ $i -lt 1800 ]; do sleep 0.1; i=$((i + 1)); done
expect_eq "every run finishes" 0 "$(unfinished)"
kill -TERM "$serve_pid" 2>/dev/null || true
i=0
while alive "$serve_pid" && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
if alive "$serve_pid"; then not_ok "the last server stops on SIGTERM"
else ok "the last server stops on SIGTERM"; fi

# --- deliveries and runs ----------------------------------------------------
# "K CODE RUN" for every answer; the database's delivery -> run mapping.
cat "$T"/sent/[0-9]* 2>/dev/null | sort -n > "$T/answers" || true
db "SELECT substr(id, 7), coalesce(run_id, '-'), result FROM deliveries WHERE forge = 'github' ORDER BY 1" |
	tr '|' ' ' | sort -n > "$T/delivered"
bad_answers=$(awk '$3 !~ /^[0-9]+$/ {print}' "$T/answers")
expect_eq "every 2xx answer names its run" "" "$bad_answers"
# For each answered delivery: one recorded delivery, queued, whose run is
# the one every answer to it named.
mismatch=$(awk 'NR == FNR { run[$1] = $2; res[$1] = $3; n[$1]++; next }
	{ if (n[$1] != 1 || res[$1] != "queued" || run[$1] != $3) print "delivery " $1 " answered run " $3 ", recorded: " (n[$1] ? run[$1] " " res[$1] : "nothing") }' \
	"$T/delivered" "$T/answers" | sort -u | head -5)
expect_eq "every answered delivery is recorded once, with the run it was answered" "" "$mismatch"
expect_eq "every delivery was answered" "$deliveries" "$(awk '{print $1}' "$T/answers" | sort -u | wc -l | tr -d ' ')"
resent=$(( $(wc -l < "$T/answers") - deliveries ))
expect_eq "deliveries sent again name their run (duplicates: $resent)" "" \
	"$(awk '{ if ($1 in r && r[$1] != $3) print $1; r[$1] = $3 }' "$T/answers")"
expect_eq "each run belongs to exactly one delivery" \
	"$(db "SELECT count(*) FROM runs")" \
	"$(db "SELECT count(DISTINCT run_id) FROM deliveries WHERE run_id IS NOT NULL")"
expect_eq "one run per delivery, no more" "$deliveries" "$(db "SELECT count(*) FROM runs")"
expect_eq "every run succeeded" "" \
	"$(db "SELECT id, status, message FROM runs WHERE status != 'succeeded' LIMIT 5")"
resumed=$(db "SELECT count(*) FROM runs WHERE exec_attempts > 1")
echo "# runs resumed after their exec-run was killed: $resumed"

# --- stages -----------------------------------------------------------------
db "SELECT run_id, stage, attempt, status FROM stages ORDER BY run_id, stage, attempt" |
	tr '|' ' ' > "$T/attempts"
expect_eq "every stage of every run succeeded exactly once" "" \
	"$(db "SELECT r.id || ' ' || s.name || ': ' || count(st.id) FROM runs r
	       CROSS JOIN (SELECT 'prepare' AS name UNION SELECT 'train' UNION SELECT 'check'
	                   UNION SELECT 'report') s
	       LEFT JOIN stages st ON st.run_id = r.id AND st.stage = s.name AND st.status = 'succeeded'
	       GROUP BY r.id, s.name HAVING count(st.id) != 1 LIMIT 5")"
# After the attempt that succeeded, nothing of that stage started again;
# the attempt that succeeded started and ended in the trace.
again=$(awk 'NR == FNR { if ($4 == "succeeded") ok[$1 " " $2] = $3; next }
	$1 == "start" { k = $2 " " $3; if (k in ok && $4 > ok[k]) print "run " $2 " stage " $3 " attempt " $4 " after attempt " ok[k] " succeeded" }' \
	"$T/attempts" "$TRACE" | head -5)
expect_eq "no stage started again after it succeeded" "" "$again"
unended=$(awk 'NR == FNR { if ($4 == "succeeded") ok[$1 " " $2 " " $3] = 1; next }
	$1 == "end" { e[$2 " " $3 " " $4] = 1 }
	END { for (k in ok) if (!(k in e)) print k }' "$T/attempts" "$TRACE" | head -5)
expect_eq "every attempt recorded succeeded ran its command to the end" "" "$unended"
twice=$(awk '$1 == "start" { k = $2 " " $3 " " $4; if (k in s) print k " started by pids " s[k] " and " $5; s[k] = $5 }' "$TRACE" | head -5)
expect_eq "no attempt number was started twice" "" "$twice"
unrecorded=$(awk 'NR == FNR { a[$1 " " $2 " " $3] = 1; next }
	$1 == "start" && !(($2 " " $3 " " $4) in a) { print $2, $3, $4 }' "$T/attempts" "$TRACE" | head -5)
expect_eq "every attempt that started is recorded" "" "$unrecorded"
overlaps=$(grep '^overlap' "$TRACE" | head -5 || true)
expect_eq "no stage had two live attempts" "" "$overlaps"
# What happened to each: the trace, the kills, the attempts recorded
# (with their groups) and the log of each exec-run of the run.
printf '%s\n' "$overlaps" | while read -r _ r st _; do
	[ -n "$r" ] || continue
	grep -E "^[a-z]+ $r $st " "$TRACE" | sed 's/^/#   trace: /'
	grep -E " $r( |\$)" "$T/kills" | sed 's/^/#   killed: /' || true
	db "SELECT attempt, status, pgid, started_at, ended_at FROM stages WHERE run_id = $r AND stage = '$st'" |
		sed 's/^/#   attempt: /'
	sed 's/^/#   exec-run: /' "$T/runs/$r.exec.log" 2>/dev/null | tail -20 || true
	grep -E "run $r[:( ]" "$T/serve.log" | sed 's/^/#   serve: /' | tail -10 || true
done
restarts=$(awk '$1 == "start" && $4 > 1' "$TRACE" | wc -l | tr -d ' ')
echo "# stage attempts started again after a kill: $restarts"

# --- the database and the processes -----------------------------------------
# Under --enable-asan a sanitizer report aborts the process; its run would
# then only look interrupted.  The logs say.
expect_eq "no sanitizer report in the logs of the servers and exec-runs" "" \
	"$(grep -lE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$T/serve.log" "$T"/runs/*.exec.log 2>/dev/null || true)"
expect_eq "PRAGMA integrity_check" ok "$(db 'PRAGMA integrity_check')"
expect_eq "PRAGMA foreign_key_check" "" "$(db 'PRAGMA foreign_key_check')"
i=0
while [ -n "$(ours)" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
left=$(for p in $(ours); do tr '\0' ' ' < "/proc/$p/cmdline"; echo; done)
expect_eq "no process of the test is left" "" "$left"
echo "# $(( $(date +%s) - started )) s"
finish
