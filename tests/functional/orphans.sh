#!/bin/sh
# Functional tests of what a crash leaves running (docs/running.md, "When
# mlpipe is killed"): when `mlpipe run` or serve's `exec-run` is killed -9
# in the middle of a stage, the stage's process group lives on; the next
# mlpipe stops it (SIGTERM, then SIGKILL after the stage's kill grace)
# before it starts anything, so a stage never has two live attempts.
# Every attempt writes "start R.A" / "end R.A" (and "term R.A" when it gets
# SIGTERM) to one trace file, and "overlap" when it starts while a process
# of an earlier attempt still lives.  Real processes, real SQLite, a real
# server on 127.0.0.1 for the serve case.
. "$(dirname "$0")/lib.sh"

export TRACE="$T/trace" STAGE_SH="$T/stage.sh" T
# A failing check may leave held stages behind: at exit, every process
# whose environment names this test's stage script goes.
kill_stages() {
	for e in /proc/[0-9]*/environ; do
		if tr '\0' '\n' < "$e" 2>/dev/null | grep -qxF "STAGE_SH=$STAGE_SH"; then
			p=${e#/proc/}; kill -9 "${p%/environ}" 2>/dev/null
		fi
	done
	return 0
}
trap 'kill_stages; rm -rf "$T"' EXIT
: > "$TRACE"
# One attempt: held while $T/hold.RUN.ATTEMPT (or $T/hold.any.ATTEMPT)
# exists (60 s at most), with
# a background child in its group.  IGNORE_TERM=1: it ignores SIGTERM.
# Its output goes to a file: once its mlpipe is dead, a write to the pipe
# it inherited (the shell's own "Terminated" message, say) is SIGPIPE.
cat > "$STAGE_SH" <<'S'
me="$MLPIPE_RUN_ID.$MLPIPE_ATTEMPT"
exec >> "$T/out.$me" 2>&1
live() { st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) && [ "$st" != Z ] && [ "$st" != X ]; }
if [ "${IGNORE_TERM:-}" = 1 ]; then trap '' TERM
else trap 'echo "term $me" >> "$TRACE"; exit 143' TERM; fi
for f in "$T"/pids.*; do
	[ -s "$f" ] || continue
	for p in $(cat "$f"); do live "$p" && echo "overlap $me with ${f#"$T"/pids.}" >> "$TRACE"; done
done
echo "start $me" >> "$TRACE"
sleep 300 &
echo "$$ $! $(awk '{print $5}' /proc/$$/stat)" > "$T/pids.$me.tmp"
mv "$T/pids.$me.tmp" "$T/pids.$me"
i=0
while { [ -e "$T/hold.$me" ] || [ -e "$T/hold.any.$MLPIPE_ATTEMPT" ]; } && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
echo "end $me" >> "$TRACE"
S

# wait_file FILE: up to 20 s for FILE to have content.
wait_file() {
	i=0
	while [ ! -s "$1" ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i + 1)); done
	[ -s "$1" ]
}
# group_left PGID: how many live (not zombie) processes are in the group.
group_left() {
	n=0
	for s in /proc/[0-9]*/stat; do
		set -- $(sed 's/^.*) //' "$s" 2>/dev/null) x x x x
		[ "$3" = "$PGID" ] && [ "$1" != Z ] && [ "$1" != X ] && n=$((n + 1))
	done
	echo $n
}
# nothing_left R.A: no process of that attempt is alive.
nothing_left() {
	PGID=$(awk '{print $3}' "$T/pids.$1")
	[ -n "$PGID" ] && [ "$(group_left)" = 0 ]
}
still_there() {
	PGID=$(awk '{print $3}' "$T/pids.$1")
	[ -n "$PGID" ] && [ "$(group_left)" != 0 ]
}
trace() { tr '\n' ' ' < "$TRACE" | sed 's/ $//'; }

mkdir -p "$T/p"
cat > "$T/p/p.yml" <<'Y'
name: orphan
stages:
  long:
    run: sh "$STAGE_SH"
Y
cat > "$T/p/stubborn.yml" <<'Y'
name: stubborn
stages:
  long:
    kill_grace: 1s
    env:
      IGNORE_TERM: "1"
    run: sh "$STAGE_SH"
Y

# --- `mlpipe run` killed -9, then run again ---------------------------------
touch "$T/hold.1.1"
"$MLPIPE" run --plain "$T/p/p.yml" > "$T/run1.out" 2>&1 &
mlp=$!
if wait_file "$T/pids.1.1"; then ok "run 1's stage starts"; else not_ok "run 1's stage starts" "$(cat "$T/run1.out")"; fi
kill -9 $mlp
wait $mlp 2>/dev/null || true
if still_there 1.1; then ok "the stage outlives the mlpipe killed -9"
else not_ok "the stage outlives the mlpipe killed -9" "$(trace)"; fi
run_mlpipe run --plain "$T/p/p.yml"
expect_eq "mlpipe run again succeeds" 0 "$rc"
expect_match "it says once that it stopped what run 1 left" \
	"run 1: stage 'long' attempt 1 was still running after its mlpipe died: process group [0-9]+ stopped \(SIGTERM\)" "$err"
expect_eq "attempt 1 got SIGTERM and ended before run 2 started" "start 1.1 term 1.1 start 2.1 end 2.1" "$(trace)"
if nothing_left 1.1; then ok "no process of run 1's attempt is left"
else not_ok "no process of run 1's attempt is left" "$(ps -eo pid,pgid,stat,args | grep -v ' ps ')"; fi
expect_match "run 1 is recorded as interrupted" '"status":"interrupted"' "$("$MLPIPE" runs show 1 --json | tr -d ' \t\n')"
run_mlpipe run --plain "$T/p/p.yml"
expect_eq "a group is stopped once: the next run says nothing of it" "" "$(printf '%s' "$err" | grep 'still running' || true)"

# --- a stage that ignores SIGTERM gets SIGKILL after its kill grace ---------
: > "$TRACE"
touch "$T/hold.4.1"
"$MLPIPE" run --plain "$T/p/stubborn.yml" > "$T/run4.out" 2>&1 &
mlp=$!
wait_file "$T/pids.4.1" || true
kill -9 $mlp
wait $mlp 2>/dev/null || true
run_mlpipe run --plain "$T/p/p.yml"
expect_match "a stage that ignores SIGTERM is killed after its kill_grace" \
	"run 4: stage 'long' attempt 1 .* stopped \(SIGKILL after 1(\.0)?s\)" "$err"
expect_eq "... before the next run starts (no overlap, no end)" "start 4.1 start 5.1 end 5.1" "$(trace)"
if nothing_left 4.1; then ok "no process of run 4's attempt is left"
else not_ok "no process of run 4's attempt is left" "$(ps -eo pid,pgid,stat,args | grep -v ' ps ')"; fi

# --- serve: exec-run killed -9, the run resumed -----------------------------
if ! command -v curl >/dev/null || ! command -v openssl >/dev/null || ! command -v git >/dev/null; then
	echo "# SKIP serve part: needs curl, openssl and git"
	finish
	exit $?
fi
. "$(dirname "$0")/serve-lib.sh"
trap '[ -z "$server" ] || kill -9 "$server" 2>/dev/null || true; kill_stages; rm -rf "$T"' EXIT
: > "$TRACE"
new_repo
cp "$T/p/p.yml" pipeline.yml
git add pipeline.yml
commit_push first
printf 'orphan-secret\n' > "$T/secret"
"$MLPIPE" project add orphan --remote "file://$T/remote.git" --branch main \
	--pipeline pipeline.yml --secret-file "$T/secret" >/dev/null
token=$("$MLPIPE" token create t)
start_server --poll-interval 0
touch "$T/hold.any.1"
r=$(run_id_of "$(api -X POST -d '{"project":"orphan","branch":"main"}' "$base/api/v1/runs" | tr -d ' \n')")
expect_match "a run is queued through the API" '^[0-9]+$' "$r"
if wait_file "$T/pids.$r.1"; then ok "its stage starts"; else not_ok "its stage starts" "$(tail -15 "$T/serve.log")"; fi
execpid=$(exec_pid "$r")
expect_match "exec-run runs it" '^[0-9]+$' "$execpid"
[ -z "$execpid" ] || kill -9 "$execpid"
if wait_run "$r" succeeded; then ok "the server resumes the run and it succeeds"
else not_ok "the server resumes the run and it succeeds" "$(api "$base/api/v1/runs/$r")" "$(tail -15 "$T/serve.log")"; fi
expect_eq "attempt 1 was stopped before attempt 2 started" "start $r.1 term $r.1 start $r.2 end $r.2" "$(trace)"
if nothing_left "$r.1"; then ok "no process of attempt 1 is left"
else not_ok "no process of attempt 1 is left" "$(ps -eo pid,pgid,stat,args | grep -v ' ps ')"; fi
expect_match "the resuming exec-run logs it once" \
	"run $r: stage 'long' attempt 1 was still running after its mlpipe died: process group [0-9]+ stopped \(SIGTERM\)" \
	"$(cat "$T/runs/$r.exec.log")"
r=$(api "$base/api/v1/runs/$r" | tr -d ' \n')
expect_match "attempt 1 is recorded as interrupted, attempt 2 succeeded" \
	'"stage":"long","attempt":1,"kind":"run","status":"interrupted".*"stage":"long","attempt":2,"kind":"run","status":"succeeded"' "$r"
stop_server
expect_eq "the server stops cleanly" 0 "$server_rc"

# --- serve: a run not resumed again (resume_limit) is stopped by the server --
: > "$TRACE"
printf 'resume_limit = 1\n' > "$T/serve.conf"
start_server --poll-interval 0 --config "$T/serve.conf"
r=$(run_id_of "$(api -X POST -d '{"project":"orphan","branch":"main"}' "$base/api/v1/runs" | tr -d ' \n')")
wait_file "$T/pids.$r.1" || true
execpid=$(exec_pid "$r")
[ -z "$execpid" ] || kill -9 "$execpid"
if wait_run "$r" failed; then ok "a run interrupted resume_limit times is not resumed: failed"
else not_ok "a run interrupted resume_limit times is not resumed: failed" "$(api "$base/api/v1/runs/$r")"; fi
# The run is marked failed first, then the server stops its group.
stopped_logged() { grep -Eq "run $r: stage 'long' attempt 1 was still running .* stopped \(SIGTERM\)" "$T/serve.log"; }
wait_for "the server stops what its dead exec-run left, and logs it" stopped_logged &&
	ok "the server stops what its dead exec-run left, and logs it"
expect_eq "... with SIGTERM" "start $r.1 term $r.1" "$(trace)"
if nothing_left "$r.1"; then ok "... and no process of it is left"
else not_ok "... and no process of it is left" "$(ps -eo pid,pgid,stat,args | grep -v ' ps ')"; fi
stop_server
expect_eq "the server stops cleanly again" 0 "$server_rc"
finish
