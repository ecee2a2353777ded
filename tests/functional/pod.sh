#!/bin/sh
# Functional tests of mlpipe-pod, the in-pod helper of the Kubernetes
# executor (docs/mlpipe-pod.md): the PET_* environment, the ranks and their
# prefixes, --once, the termination log and exit codes, signals (also as a
# PID 1), waiting for MASTER_ADDR to resolve, install, and that it needs
# only libc.  Its results server is tests/functional/pod-results.sh's; two
# nodes training for real are pod-train.sh's.
. "$(dirname "$0")/lib.sh"
: "${MLPIPE_POD:?MLPIPE_POD must name the mlpipe-pod binary (run through make check)}"
unset PET_NNODES PET_NODE_RANK PET_NPROC_PER_NODE PET_MASTER_ADDR PET_MASTER_PORT \
	TORCHELASTIC_RUN_ID MLPIPE_RUN_ID RANK WORLD_SIZE MASTER_ADDR MASTER_PORT
mkdir -p "$T/p"
cd "$T/p"
TL="$T/p/termination-log"

# run_pod ARGS...: runs mlpipe-pod with the termination log at $TL; stdout
# in $out, stderr in $err, exit code in $rc, the log in $tlog.
run_pod() {
	rm -f "$TL"
	set +e
	"$MLPIPE_POD" "$@" >"$T/.out" 2>"$T/.err"
	rc=$?
	set -e
	out=$(cat "$T/.out")
	err=$(cat "$T/.err")
	tlog=$(cat "$TL" 2>/dev/null || echo "(no termination log)")
}
skip() { tap_n=$((tap_n + 1)); echo "ok $tap_n - $1 # SKIP $2"; }
gone() {
	[ ! -e "/proc/$1" ] && return 0
	st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 0
	[ "$st" = Z ] || [ "$st" = X ]
}
# wait_for FILE: up to 10 s for FILE to exist.
wait_for() {
	i=0
	while [ ! -s "$1" ] && [ $i -lt 1000 ]; do sleep 0.01; i=$((i + 1)); done
}
port=$((20000 + ($$ + 11) % 20000))

# --- bad input: one line on stderr and in the termination log, exit 2 ------
run_pod run --termination-log "$TL"
expect_eq "no command exits 2" 2 "$rc"
expect_eq "with one line on stderr" 1 "$(printf '%s\n' "$err" | wc -l | tr -d ' ')"
expect_match "naming the problem" "^mlpipe-pod: node 0: no command given" "$err"
expect_eq "and the same in the termination log" "node 0: no command given (mlpipe-pod run [OPTIONS] -- COMMAND [ARG...])" "$tlog"
PET_NNODES=1:2 run_pod run --termination-log "$TL" -- true
expect_eq "an elastic PET_NNODES exits 2" 2 "$rc"
expect_eq "and says so" "PET_NNODES='1:2' is not a number from 1 to 1024" "$tlog"
PET_NNODES=2 PET_MASTER_ADDR=127.0.0.1 PET_MASTER_PORT=$port run_pod run --termination-log "$TL" -- true
expect_eq "two nodes without PET_NODE_RANK exit 2" 2 "$rc"
expect_eq "naming it" "PET_NODE_RANK is not set (PET_NNODES is 2)" "$tlog"
PET_NNODES=2 PET_NODE_RANK=2 run_pod run --termination-log "$TL" -- true
expect_eq "PET_NODE_RANK beyond PET_NNODES exits 2" 2 "$rc"
PET_NNODES=2 PET_NODE_RANK=1 PET_MASTER_PORT=$port run_pod run --termination-log "$TL" -- true
expect_eq "two nodes without PET_MASTER_ADDR exit 2" 2 "$rc"
expect_eq "naming it, and the node" "node 1: PET_MASTER_ADDR is not set (PET_NNODES is 2)" "$tlog"
run_pod run --termination-log "$TL" --rdzv-timeout 5 -- true
expect_eq "a duration without a unit exits 2" 2 "$rc"
expect_match "naming the option" "^node 0: --rdzv-timeout: " "$tlog"
run_pod run --termination-log "$TL" --result 'a/b=x' -- true
expect_eq "a bad --result name exits 2" 2 "$rc"
run_pod run --termination-log "$TL" --result m=a --result m=b -- true
expect_eq "a --result name twice exits 2" 2 "$rc"
run_pod run --termination-log "$TL" --bogus -- true
expect_eq "an unknown option exits 2" 2 "$rc"
expect_eq "naming it" "node 0: unknown option or missing value: '--bogus'" "$tlog"
run_pod run --termination-log "$TL" -- /nonexistent/program
expect_eq "a missing program exits 2" 2 "$rc"
expect_match "naming it" "^node 0: .*/nonexistent/program" "$tlog"
long=$(awk 'BEGIN { for (i = 0; i < 5000; i++) printf "x" }')
run_pod run --termination-log "$TL" "--$long" -- true
expect_eq "the termination log holds at most 4096 bytes" 4096 "$(wc -c <"$TL" | tr -d ' ')"
expect_eq "and no temporary file is left beside it" "termination-log" "$(ls "$T/p" | grep termination || true)"
run_pod
expect_eq "no subcommand exits 2" 2 "$rc"
run_pod --help
expect_eq "--help exits 0" 0 "$rc"
for opt in --nproc-per-node --gpus-per-node --stall-timeout --kill-grace --rdzv-timeout \
	--once --results-port --serve-timeout --result --termination-log; do
	expect_match "--help documents $opt" "  $opt" "$out"
done

# --- the ranks of one pod: torchrun's environment, [rankN] prefixes --------
cat >env.sh <<'S'
echo "RANK=$RANK LOCAL_RANK=$LOCAL_RANK WORLD_SIZE=$WORLD_SIZE GROUP_RANK=$GROUP_RANK MASTER=$MASTER_ADDR:$MASTER_PORT RUN=$TORCHELASTIC_RUN_ID"
S
PET_NNODES=1 PET_NODE_RANK=0 PET_NPROC_PER_NODE=2 PET_MASTER_ADDR=127.0.0.1 PET_MASTER_PORT=$port \
	TORCHELASTIC_RUN_ID=job-7 run_pod run --termination-log "$TL" -- sh env.sh
expect_eq "two ranks of a shell command succeed" 0 "$rc"
expect_eq "each with its rank, the world and PET_MASTER_*, prefixed [rankN]" \
	"[rank0] RANK=0 LOCAL_RANK=0 WORLD_SIZE=2 GROUP_RANK=0 MASTER=127.0.0.1:$port RUN=job-7
[rank1] RANK=1 LOCAL_RANK=1 WORLD_SIZE=2 GROUP_RANK=0 MASTER=127.0.0.1:$port RUN=job-7" \
	"$(printf '%s\n' "$out" | sort)"
expect_eq "and nothing in the termination log" "(no termination log)" "$tlog"
PET_NNODES=3 PET_NODE_RANK=2 PET_NPROC_PER_NODE=2 PET_MASTER_ADDR=localhost PET_MASTER_PORT=$port \
	MLPIPE_RUN_ID=run-9 run_pod run --termination-log "$TL" -- sh env.sh
expect_eq "node 2 of 3 numbers its ranks globally" \
	"[rank4] RANK=4 LOCAL_RANK=0 WORLD_SIZE=6 GROUP_RANK=2 MASTER=localhost:$port RUN=run-9
[rank5] RANK=5 LOCAL_RANK=1 WORLD_SIZE=6 GROUP_RANK=2 MASTER=localhost:$port RUN=run-9" \
	"$(printf '%s\n' "$out" | sort)"
PET_NPROC_PER_NODE=2 run_pod run --nproc-per-node 3 --termination-log "$TL" -- sh -c 'echo $WORLD_SIZE'
expect_eq "--nproc-per-node wins over PET_NPROC_PER_NODE" "3 3 3" "$(printf '%s\n' "$out" | sed 's/.* //' | tr '\n' ' ' | sed 's/ $//')"

# GPUs (no GPU needed: an inherited CUDA_VISIBLE_DEVICES lists them).
CUDA_VISIBLE_DEVICES=3,5 run_pod run --nproc-per-node 2 --gpus-per-node 2 --termination-log "$TL" -- \
	sh -c 'echo "$LOCAL_RANK=$CUDA_VISIBLE_DEVICES"'
expect_eq "--gpus-per-node gives each local rank a GPU of its own" "[rank0] 0=3
[rank1] 1=5" "$(printf '%s\n' "$out" | sort)"
CUDA_VISIBLE_DEVICES=3 run_pod run --nproc-per-node 2 --gpus-per-node 2 --termination-log "$TL" -- true
expect_eq "more GPUs asked for than the node has is bad input" 2 "$rc"
expect_eq "saying so" "node 0: 2 GPUs per node asked for, but this node has 1 (CUDA_VISIBLE_DEVICES)" "$tlog"
CUDA_VISIBLE_DEVICES=3,5 run_pod run --once --gpus-per-node 2 --termination-log "$TL" -- \
	sh -c 'echo "$CUDA_VISIBLE_DEVICES"'
expect_eq "--once leaves the node's GPUs to torchrun" "[node0] 3,5" "$out"
CUDA_VISIBLE_DEVICES=3 run_pod run --once --gpus-per-node 2 --termination-log "$TL" -- true
expect_eq "but checks their count" "2 node 0: 2 GPUs per node asked for, but this node has 1 (CUDA_VISIBLE_DEVICES)" "$rc $tlog"

# --- --once: the command (torchrun) once per pod, [nodeN] -------------------
cat >once.sh <<'S'
echo "pid $$ PET_NNODES=$PET_NNODES PET_NODE_RANK=$PET_NODE_RANK PET_NPROC_PER_NODE=$PET_NPROC_PER_NODE"
S
PET_NNODES=2 PET_NODE_RANK=1 PET_NPROC_PER_NODE=4 PET_MASTER_ADDR=127.0.0.1 PET_MASTER_PORT=$port \
	run_pod run --once --termination-log "$TL" -- sh once.sh
expect_eq "--once runs the command once" 0 "$rc"
expect_eq "one process" 1 "$(printf '%s\n' "$out" | grep -c pid)"
expect_match "prefixed [nodeN] with the PET_* environment left for it" \
	"^\[node1\] pid [0-9]+ PET_NNODES=2 PET_NODE_RANK=1 PET_NPROC_PER_NODE=4$" "$out"
PET_NPROC_PER_NODE=gpu run_pod run --once --termination-log "$TL" -- sh -c 'exit 4'
expect_eq "--once passes the command's exit code" 4 "$rc"
expect_eq "and names the command, not a rank" "node 0: sh failed: exit code 4" "$tlog"

# --- a failing rank: its exit code, the root cause in the termination log --
cat >fail.sh <<'S'
echo $$ >"pid.$RANK"
if [ "$RANK" = 3 ]; then sleep 0.2; exit 3; fi
exec sleep 60
S
rm -f pid.*
PET_NNODES=2 PET_NODE_RANK=1 PET_NPROC_PER_NODE=2 PET_MASTER_ADDR=127.0.0.1 PET_MASTER_PORT=$port \
	run_pod run --kill-grace 2s --termination-log "$TL" -- sh fail.sh
expect_eq "a rank exiting 3 makes the pod exit 3" 3 "$rc"
expect_match "the termination log names the node and the rank" "^node 1: rank 3 \(pid [0-9]+\) failed: exit code 3$" "$tlog"
expect_match "so does stderr" "^mlpipe-pod: node 1: rank 3 \(pid [0-9]+\) failed: exit code 3$" "$err"
expect_eq "the other rank was stopped" yes "$(gone "$(cat pid.2)" && echo yes || echo no)"
run_pod run --termination-log "$TL" -- sh -c 'kill -KILL $$'
expect_eq "a rank killed by a signal makes the pod exit 128+N" 137 "$rc"
expect_match "and says so" "^node 0: rank 0 \(pid [0-9]+\) failed: killed by SIGKILL$" "$tlog"
run_pod run --stall-timeout 300ms --termination-log "$TL" -- sleep 60
expect_eq "the stall watchdog is a failure of no rank's making: exit 1" 1 "$rc"
expect_match "with the launcher's reason" "^node 0: no output and no metric from any rank for 300ms" "$tlog"

# --- SIGTERM (the kubelet deleting the pod) --------------------------------
# sigterm_pod [WRAPPER...]: starts mlpipe-pod (under WRAPPER, if any) with
# 2 ranks that say they are up and sleep, sends SIGTERM to mlpipe-pod once
# both are; leaves rc, tlog and left (the ranks still alive, checked
# without a wrapper only: under one, their pids are another namespace's).
sigterm_pod() {
	rm -f up.* pid.* "$TL"
	"$@" "$MLPIPE_POD" run --nproc-per-node 2 --termination-log "$TL" -- \
		sh -c 'echo $$ >"pid.$RANK"; echo up >"up.$RANK"; exec sleep 60' >"$T/.out" 2>"$T/.err" &
	bg=$!
	wait_for up.0
	wait_for up.1
	target=$bg
	[ $# -eq 0 ] || target=$(cat "/proc/$bg/task/$bg/children")
	kill -TERM $target
	set +e
	wait "$bg"
	rc=$?
	set -e
	tlog=$(cat "$TL" 2>/dev/null || echo "(no termination log)")
	left=
	if [ $# -eq 0 ]; then
		for r in 0 1; do gone "$(cat pid.$r)" || left="$left $(cat pid.$r)"; done
	fi
}
sigterm_pod
expect_eq "SIGTERM makes the pod exit 143" 143 "$rc"
expect_eq "with the termination message" "node 0: stopped by SIGTERM" "$tlog"
expect_eq "and its ranks are gone" "" "$left"
if unshare --pid --fork true 2>/dev/null; then
	# The kernel drops a signal sent to a namespace's PID 1 that has no
	# handler for it, unless it is blocked: what a container's PID 1 meets.
	sigterm_pod unshare --pid --fork
	expect_eq "as PID 1 of its own pid namespace (a container), SIGTERM still stops it: 143" 143 "$rc"
	expect_eq "with the termination message" "node 0: stopped by SIGTERM" "$tlog"
else
	skip "SIGTERM to mlpipe-pod as PID 1" "unshare --pid needs root (CAP_SYS_ADMIN)"
fi

# --- waiting for MASTER_ADDR to resolve --------------------------------------
t0=$(date +%s)
PET_NNODES=2 PET_NODE_RANK=1 PET_MASTER_ADDR=nonexistent.invalid PET_MASTER_PORT=$port \
	run_pod run --rdzv-timeout 1s --termination-log "$TL" -- true
t1=$(date +%s)
expect_eq "a MASTER_ADDR that never resolves fails: exit 1" 1 "$rc"
expect_eq "the termination message says so" "node 1: MASTER_ADDR 'nonexistent.invalid' did not resolve within 1.0s" "$tlog"
expect_eq "after saying it waits" "[mlpipe-pod] waiting for MASTER_ADDR nonexistent.invalid to resolve" "$out"
if [ $((t1 - t0)) -le 8 ]; then ok "it gives up at --rdzv-timeout"; else not_ok "it gives up at --rdzv-timeout" "took $((t1 - t0)) s"; fi
# SIGTERM while waiting, once it says it waits; also as PID 1, whose
# signals the kernel drops unless blocked or handled (a container's PID 1).
sigterm_waiting() {
	rm -f "$TL" "$T/.out"
	PET_MASTER_ADDR=nonexistent.invalid "$@" "$MLPIPE_POD" run --rdzv-timeout 30s \
		--termination-log "$TL" -- true >"$T/.out" 2>&1 &
	bg=$!
	wait_for "$T/.out"
	target=$bg
	[ $# -eq 0 ] || target=$(cat "/proc/$bg/task/$bg/children")
	t0=$(date +%s)
	kill -TERM $target
	set +e
	wait $bg
	rc=$?
	set -e
	t1=$(date +%s)
	tlog=$(cat "$TL" 2>/dev/null || echo "(no termination log)")
}
sigterm_waiting
expect_eq "SIGTERM while waiting for MASTER_ADDR exits 143" 143 "$rc"
expect_eq "with the termination message" "node 0: stopped by SIGTERM" "$tlog"
if unshare --pid --fork true 2>/dev/null; then
	sigterm_waiting unshare --pid --fork
	expect_eq "as PID 1 too" "143 node 0: stopped by SIGTERM" "$rc $tlog"
	if [ $((t1 - t0)) -le 5 ]; then ok "at once"; else not_ok "at once" "took $((t1 - t0)) s"; fi
else
	skip "SIGTERM while waiting, as PID 1" "unshare --pid needs root (CAP_SYS_ADMIN)"
fi
# A name that resolves only later: /etc/hosts bind-mounted in a private
# mount namespace, the record appended while mlpipe-pod waits.
if unshare --mount true 2>/dev/null; then
	cp /etc/hosts hosts
	cat >late.sh <<S
mount --bind "$T/p/hosts" /etc/hosts || exit 99
PET_NNODES=2 PET_NODE_RANK=1 PET_MASTER_ADDR=late-master.mlpipe.test PET_MASTER_PORT=$port \
	"$MLPIPE_POD" run --rdzv-timeout 30s --termination-log "$TL" -- sh -c 'getent hosts \$MASTER_ADDR' &
sleep 1.5
echo "127.0.0.1 late-master.mlpipe.test" >>"$T/p/hosts"
wait \$!
S
	set +e
	unshare --mount sh late.sh >"$T/.out" 2>"$T/.err"
	rc=$?
	set -e
	out=$(cat "$T/.out")
	expect_eq "a MASTER_ADDR that resolves after 1.5 s: the ranks run" 0 "$rc"
	expect_match "it said it waited" "^\[mlpipe-pod\] waiting for MASTER_ADDR late-master.mlpipe.test to resolve$" "$out"
	expect_match "and how long" "^\[mlpipe-pod\] late-master.mlpipe.test resolved after [0-9.]+s$" "$out"
	expect_match "then the rank ran" "^\[rank1\] 127.0.0.1 +late-master.mlpipe.test$" "$out"
else
	skip "a MASTER_ADDR that resolves late" "unshare --mount needs root (CAP_SYS_ADMIN)"
fi

# --- install -----------------------------------------------------------------
mkdir -p shared
run_pod install "$T/p/shared"
expect_eq "install exits 0" 0 "$rc"
expect_eq "the copy is mode 0755" 755 "$(stat -c %a shared/mlpipe-pod)"
expect_eq "and the same bytes" "$(sha256sum <"$MLPIPE_POD")" "$(sha256sum <shared/mlpipe-pod)"
expect_eq "no temporary file is left" "mlpipe-pod" "$(ls -A shared)"
expect_match "the copy runs" "^mlpipe-pod [0-9]" "$(shared/mlpipe-pod --version)"
run_pod install "$T/p/no/such/dir"
expect_eq "install into a missing directory exits 1" 1 "$rc"
expect_eq "with one line" 1 "$(printf '%s\n' "$err" | wc -l | tr -d ' ')"

# --- it needs libc alone ------------------------------------------------------
if [ "${MLPIPE_POD_STATIC_CRYPTO:-yes}" != yes ]; then
	skip "mlpipe-pod needs only libc" "configure found no libcrypto.a and linked libcrypto dynamically"
elif [ "${MLPIPE_SANITIZED:-no}" = yes ]; then
	skip "mlpipe-pod needs only libc" "a sanitizer build also links libasan, libubsan and libm (the plain build checks)"
elif ! command -v readelf >/dev/null; then
	skip "mlpipe-pod needs only libc" "no readelf (binutils)"
else
	needed=$(readelf -d "$MLPIPE_POD" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ' | sed 's/ $//')
	expect_eq "mlpipe-pod needs only libc (readelf -d)" "libc.so.6" "$needed"
fi

finish
