#!/bin/sh
# Functional tests of the DDP launcher: `mlpipe launch` and `train:` stages
# with a `command:`.  The builtin trainer has its own tests (train.sh).
. "$(dirname "$0")/lib.sh"

gone() {
	[ ! -e "/proc/$1" ] && return 0
	st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 0
	[ "$st" = Z ] || [ "$st" = X ]
}
mkdir -p "$T/p"
cd "$T/p"

# --- the whole torchrun environment contract, checked by each rank ---------
cat > contract.sh <<'S'
set -u
fail() { echo "contract: $*" >&2; exit 1; }
for v in RANK LOCAL_RANK WORLD_SIZE LOCAL_WORLD_SIZE GROUP_RANK GROUP_WORLD_SIZE \
	ROLE_RANK ROLE_WORLD_SIZE ROLE_NAME MASTER_ADDR MASTER_PORT \
	TORCHELASTIC_RESTART_COUNT TORCHELASTIC_MAX_RESTARTS TORCHELASTIC_RUN_ID OMP_NUM_THREADS; do
	eval "[ -n \"\${$v:-}\" ]" || fail "$v is not set"
done
[ "$WORLD_SIZE" = 3 ] || fail "WORLD_SIZE=$WORLD_SIZE"
[ "$LOCAL_WORLD_SIZE" = 3 ] || fail "LOCAL_WORLD_SIZE=$LOCAL_WORLD_SIZE"
[ "$RANK" = "$LOCAL_RANK" ] || fail "RANK $RANK != LOCAL_RANK $LOCAL_RANK on one node"
[ "$RANK" -ge 0 ] && [ "$RANK" -lt 3 ] || fail "RANK=$RANK"
[ "$GROUP_RANK" = 0 ] && [ "$GROUP_WORLD_SIZE" = 1 ] || fail "group $GROUP_RANK/$GROUP_WORLD_SIZE"
[ "$ROLE_RANK" = "$RANK" ] && [ "$ROLE_WORLD_SIZE" = 3 ] && [ "$ROLE_NAME" = default ] || fail role
[ "$MASTER_ADDR" = 127.0.0.1 ] || fail "MASTER_ADDR=$MASTER_ADDR"
[ "$MASTER_PORT" -gt 0 ] && [ "$MASTER_PORT" -lt 65536 ] || fail "MASTER_PORT=$MASTER_PORT"
[ "$TORCHELASTIC_RESTART_COUNT" = 0 ] && [ "$TORCHELASTIC_MAX_RESTARTS" = 2 ] || fail restarts
[ "$OMP_NUM_THREADS" = 1 ] || fail "OMP_NUM_THREADS=$OMP_NUM_THREADS"
echo "$RANK $MASTER_PORT" >> ranks.txt
echo "contract ok on rank $RANK"
S
cat > contract.yml <<'Y'
stages:
  ddp:
    train:
      ranks: 3
      max_restarts: 2
      command: sh contract.sh
Y
run_mlpipe run contract.yml
expect_eq "a command: stage gets the whole env contract on every rank" 0 "$rc"
expect_eq "three ranks ran" "0 1 2" "$(cut -d' ' -f1 ranks.txt | sort | tr '\n' ' ' | sed 's/ $//')"
expect_eq "all ranks share one MASTER_PORT" 1 "$(cut -d' ' -f2 ranks.txt | sort -u | wc -l | tr -d ' ')"
expect_match "rank output is prefixed by rank in the stage log" "\[rank2\] contract ok on rank 2" "$("$MLPIPE" logs 1 ddp)"
rm -f ranks.txt
OMP_NUM_THREADS=4 "$MLPIPE" launch -n 1 -- sh -c 'echo $OMP_NUM_THREADS' > omp.out
expect_eq "OMP_NUM_THREADS is kept when set" "[rank0] 4" "$(cat omp.out)"

# --- a killed rank restarts the group on a fresh port ----------------------
cat > restart.yml <<'Y'
stages:
  ddp:
    train:
      ranks: 2
      max_restarts: 1
      command: |
        echo "$TORCHELASTIC_RESTART_COUNT $MASTER_PORT" >> "rounds.$RANK"
        if [ "$TORCHELASTIC_RESTART_COUNT" = 0 ]; then
          # Round 0: rank 1 dies only once rank 0 has written its line (a
          # bounded wait), and rank 0 stays alive until the group restart
          # stops it, so each round leaves exactly one line per rank.
          if [ "$RANK" = 1 ]; then
            i=0
            while ! grep -q '^0 ' rounds.0 2>/dev/null && [ $i -lt 3000 ]; do sleep 0.01; i=$((i + 1)); done
            kill -KILL $$
          fi
          sleep 60
        fi
Y
run_mlpipe run restart.yml
expect_eq "the group succeeds after one restart" 0 "$rc"
expect_eq "rank 0 ran twice (the survivor is restarted too)" 2 "$(wc -l < rounds.0 | tr -d ' ')"
expect_eq "each round has a fresh port" 2 "$(cut -d' ' -f2 rounds.0 | sort -u | wc -l | tr -d ' ')"
expect_match "the restart names the root cause" "restarting the group \(1 of 1\): rank 1 \(pid [0-9]+\) failed: killed by SIGKILL" "$out"

# --- no restarts left: the stage fails with the root cause, nothing left ---
cat > dead.yml <<'Y'
stages:
  ddp:
    kill_grace: 1s
    train:
      ranks: 2
      max_restarts: 1
      command: |
        sh -c 'trap "" TERM; sleep 300' &
        echo $! >> "children.$RANK"
        if [ "$RANK" = 1 ]; then sleep 0.3; exit 5; fi
        wait
Y
run_mlpipe run dead.yml
expect_eq "a group that keeps failing fails the run" 1 "$rc"
expect_match "the run names the rank and the exit code" "stage 'ddp' failed: rank 1 \(pid [0-9]+\) failed: exit code 5 \(1 of 1 restarts used\)" "$out"
expect_match "runs show records the root cause" "rank 1 \(pid [0-9]+\) failed: exit code 5" "$("$MLPIPE" runs show 3)"
left=
for pid in $(cat children.0 children.1); do gone "$pid" || left="$left $pid"; done
expect_eq "no rank's grandchild is left behind (even one ignoring SIGTERM)" "" "$left"
for pid in $left; do kill -9 "$pid" 2>/dev/null || true; done

# --- the stall watchdog -----------------------------------------------------
cat > stall.yml <<'Y'
stages:
  hung:
    train:
      ranks: 2
      stall_timeout: 600ms
      command: echo "one line, then silence"; sleep 300
Y
t0=$(date +%s)
run_mlpipe run stall.yml
t1=$(date +%s)
expect_eq "a silent group is killed by the watchdog" 1 "$rc"
expect_match "and the reason says so" "no output and no metric from any rank for 600ms \(stall_timeout\)" "$out"
if [ $((t1 - t0)) -lt 20 ]; then ok "the watchdog fires promptly"; else not_ok "the watchdog fires promptly" "$((t1 - t0)) s"; fi

# --- a stage timeout reaches the ranks through the launcher ----------------
cat > timeout.yml <<'Y'
stages:
  slow:
    timeout: 500ms
    kill_grace: 2s
    train:
      ranks: 2
      command: echo $$ >> "ranks.pid"; sleep 300
Y
rm -f ranks.pid
run_mlpipe run timeout.yml
expect_eq "a train stage that times out fails" 1 "$rc"
left=
for pid in $(cat ranks.pid); do gone "$pid" || left="$left $pid"; done
expect_eq "its ranks are gone" "" "$left"

# --- a real PyTorch script with init_method=env:// -------------------------
if /usr/bin/python3 -c 'import torch.distributed' 2>/dev/null; then
	cat > ddp.py <<'P'
import os, torch, torch.distributed as dist
dist.init_process_group("gloo", init_method="env://")
t = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(t)
print(f"rank {dist.get_rank()} of {dist.get_world_size()}: sum {t.item():g}", flush=True)
dist.destroy_process_group()
P
	run_mlpipe launch -n 2 -- /usr/bin/python3 ddp.py
	expect_eq "an unmodified PyTorch env:// script runs" 0 "$rc"
	expect_match "and its ranks all-reduce through gloo" "\[rank1\] rank 1 of 2: sum 3" "$out"
else
	echo "# PyTorch is not installed (Debian python3-torch): the env:// test did not run"
fi

# --- usage -------------------------------------------------------------------
run_mlpipe launch -n 2
expect_eq "launch without a command exits 2" 2 "$rc"
run_mlpipe launch -n 0 -- true
expect_eq "launch -n 0 exits 2" 2 "$rc"
run_mlpipe launch --nnodes 2 -- true
expect_eq "several nodes without master address exits 2" 2 "$rc"
expect_match "and says what is missing" "need --master-addr and --master-port" "$err"
run_mlpipe launch -- /nonexistent/prog
expect_eq "a missing program exits 2" 2 "$rc"
cat > nodes.yml <<'Y'
stages:
  big:
    train:
      nodes: 2
      ranks: 1
      command: "true"
Y
run_mlpipe run nodes.yml
expect_eq "multi-node train stages on this machine are refused before anything runs" 2 "$rc"
expect_match "with the reason" "needs runs-on: kubernetes" "$err"

# --- GPU placement (these need no GPU) -------------------------------------
run_mlpipe launch -n 2 --gpus-per-node 1 -- true
expect_eq "more ranks than GPUs per node is refused" 2 "$rc"
expect_match "and says each rank needs its own GPU" "each rank needs a GPU of its own" "$err"
CUDA_VISIBLE_DEVICES=3,5 run_mlpipe launch -n 2 --gpus-per-node 2 -- sh -c 'echo "$LOCAL_RANK=$CUDA_VISIBLE_DEVICES"'
expect_eq "each local rank gets one GPU of an inherited CUDA_VISIBLE_DEVICES" "[rank0] 0=3
[rank1] 1=5" "$(printf '%s\n' "$out" | sort)"
CUDA_VISIBLE_DEVICES=3 run_mlpipe launch -n 2 --gpus-per-node 2 -- true
expect_eq "asking for more GPUs than visible fails before any rank starts" 2 "$rc"
expect_match "naming what the node has" "2 GPUs per node asked for, but this node has 1 \(CUDA_VISIBLE_DEVICES\)" "$err"
cat > gpus.yml <<'Y'
stages:
  big:
    train:
      gpus_per_node: 2
      ranks: 2
      command: "true"
Y
CUDA_VISIBLE_DEVICES=0 run_mlpipe run gpus.yml
expect_eq "a pipeline asking for more GPUs than the node has is refused before it runs" 2 "$rc"
expect_match "with FILE:LINE:COL" "^gpus.yml:3:5: stage 'big' asks for 2 GPUs per node, but this node has 1" "$err"

finish
