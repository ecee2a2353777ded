#!/bin/sh
# Functional tests of the exec-run that `mlpipe serve` starts ahead of the
# next run (src/serve/dispatch.c): a run's start is writing its id to a
# process that has already loaded, so the first stage does not wait for a
# process start.  What users rely on: runs still start, log to
# runs/N.exec.log and are resumed as before; no standby is left behind
# when the server stops or dies; `exec-run --standby` alone does nothing
# at end of input and refuses a bad id.  A real server on 127.0.0.1, a
# real file:// bare repository, real SQLite.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/serve-lib.sh"

# standbys: the pids of this database's standing-by exec-runs.
standbys() { pgrep -f "exec-run --db $MLPIPE_DB --standby\$" || true; }
one_standby() { [ "$(standbys | wc -l)" = 1 ]; }
no_standby() { [ -z "$(standbys)" ]; }

new_repo
cat > pipeline.yml <<'Y'
name: standby
stages:
  work:
    run: echo working
Y
git add pipeline.yml
commit_push 'one stage'
printf 'standby-secret' > "$T/secret"
"$MLPIPE" project add standby --remote "file://$T/remote.git" --pipeline pipeline.yml \
	--secret-file "$T/secret" >/dev/null
token=$("$MLPIPE" token create t)

start_server --poll-interval 0
wait_for "an exec-run stands by once the server is up" one_standby &&
	ok "an exec-run stands by once the server is up"
sb=$(standbys)

r=$(run_id_of "$(api -X POST -d '{"project":"standby","branch":"main"}' "$base/api/v1/runs" | tr -d ' \n')")
if wait_run "$r" succeeded; then ok "a run started through the standby succeeds"
else not_ok "a run started through the standby succeeds" "$(api "$base/api/v1/runs/$r")" "$(tail -15 "$T/serve.log")"; fi
expect_eq "... and was executed by the process that stood by" "$sb" "$(exec_pid "$r")"
expect_match "... which the server's log says" "run $r: started \\(api, pid $sb, stood by\\)" \
	"$(cat "$T/serve.log")"
expect_match "its output went to runs/N.exec.log" "run $r succeeded" "$(cat "$T/runs/$r.exec.log")"
expect_match "the stage's log is served as before" 'working' "$(api "$base/api/v1/runs/$r/logs/work")"
wait_for "another exec-run stands by for the next run" one_standby &&
	ok "another exec-run stands by for the next run"
expect_eq "... a new process" 1 "$([ "$(standbys)" != "$sb" ] && echo 1)"

# Five runs at once (jobs = 2): the first takes the standby, the rest are
# started as before; each runs exactly once.
ids=
for k in 1 2 3 4 5; do
	ids="$ids $(run_id_of "$(api -X POST -d '{"project":"standby","branch":"main"}' "$base/api/v1/runs" | tr -d ' \n')")"
done
all=ok
for id in $ids; do wait_run "$id" succeeded || all="run $id did not succeed"; done
expect_eq "five runs queued at once all succeed" ok "$all"
n=0
for id in $ids; do n=$((n + $(grep -c "^run $id: standby at" "$T/runs/$id.exec.log"))); done
expect_eq "... each executed once" 5 "$n"

# A standby that dies before its run is replaced, and the next run still starts.
sb=$(standbys)
kill -9 $sb
gone() { ! kill -0 "$sb" 2>/dev/null && one_standby; }
wait_for "a standby killed before its run is replaced" gone &&
	ok "a standby killed before its run is replaced"
expect_match "... and the server says so" "standby exec-run \\(pid $sb\\) ended before its run" \
	"$(cat "$T/serve.log")"
r=$(run_id_of "$(api -X POST -d '{"project":"standby","branch":"main"}' "$base/api/v1/runs" | tr -d ' \n')")
if wait_run "$r" succeeded; then ok "the next run succeeds"
else not_ok "the next run succeeds" "$(tail -15 "$T/serve.log")"; fi

stop_server
expect_eq "SIGTERM stops the server cleanly" 0 "$server_rc"
expect_eq "... and no standby is left" "" "$(standbys)"

# A server killed -9 leaves a standby with a closed pipe: it exits by itself.
logs=$(ls "$T/runs" | grep -c 'exec\.log$')
start_server --poll-interval 0
wait_for "a standby starts with the next server" one_standby &&
	ok "a standby starts with the next server"
kill -9 $server
wait $server 2>/dev/null || true
server=
wait_for "after kill -9 of the server its standby exits by itself" no_standby &&
	ok "after kill -9 of the server its standby exits by itself"
expect_eq "... having run nothing" "$logs" "$(ls "$T/runs" | grep -c 'exec\.log$')"

# exec-run --standby by hand.
"$MLPIPE" exec-run --db "$MLPIPE_DB" --standby </dev/null >"$T/out" 2>&1
expect_eq "exec-run --standby exits 0 at end of input" "0" "$?"
expect_eq "... and says nothing" "" "$(cat "$T/out")"
rc=0
echo '12x' | "$MLPIPE" exec-run --db "$MLPIPE_DB" --standby >"$T/out" 2>&1 || rc=$?
expect_eq "a bad run id is refused" 1 "$rc"
expect_match "... in one line" "bad run id '12x'" "$(cat "$T/out")"
rc=0
"$MLPIPE" exec-run --db "$MLPIPE_DB" --standby --run 1 >"$T/out" 2>&1 || rc=$?
expect_eq "--standby and --run together are a usage error" 2 "$rc"
finish
