#!/bin/sh
# tests/k8s/train.sh - stages with runs-on: kubernetes against a real
# control plane (cluster.sh: kube-apiserver 1.20, the Job, Endpoints and
# garbage-collector controllers, and the test kubelet that really runs the
# pods' commands as local processes in network namespaces of their own).
# TAP; run by `make check-k8s`.
#
# 1.20 has no Indexed Jobs: the executor makes one Job per node here.
# Indexed mode and Kueue are covered by tests/functional/k8s-scripted.sh.
. "$MLPIPE_TEST_SRCDIR/functional/lib.sh"
here=$MLPIPE_TEST_SRCDIR/k8s
examples=$MLPIPE_TEST_SRCDIR/../examples/k8s-train

. "$MLPIPE_TEST_SRCDIR/k8s/k8s-lib.sh"
k8s_need etcd openssl curl jq dpkg-deb pgrep

bindir=$(cd "$(dirname "$MLPIPE")" && pwd)
REAL_MLPIPE=$bindir/$(basename "$MLPIPE")
# The pods' commands find mlpipe-pod and mlpipe-train where the build put
# them: the test kubelet runs "images" as local processes.
export MLPIPE_K8S_POD_PATH="$bindir:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
export OMP_NUM_THREADS=1
k8s_start
admin() { "$KUBECTL" --kubeconfig "$K8S_DIR/admin.kubeconfig" -n ml-train "$@"; }
# $MLPIPE runs where the cluster is reachable (k8s-lib.sh).
k8s_mlpipe() { run_mlpipe "$@"; }
# Objects of the mlpipe store left in the namespace.
left() {
	admin get secrets,services,jobs,pods -l app.kubernetes.io/managed-by=mlpipe \
		-o name 2>/dev/null | wc -l | tr -d ' '
}
# wait_until SECONDS CMD...: a bounded poll.
wait_until() {
	n=$(($1 * 10))
	shift
	while [ "$n" -gt 0 ]; do
		if "$@" >/dev/null 2>&1; then return 0; fi
		sleep 0.1
		n=$((n - 1))
	done
	return 1
}
no_pods_left() { [ "$(admin get pods -l app.kubernetes.io/managed-by=mlpipe -o name | wc -l)" -eq 0 ]; }

# The example's namespace and least-privilege Role, exactly as shipped,
# bound to the test user "trainer" (and nothing to "viewer").
admin apply -f "$examples/namespace.yaml" >/dev/null
admin apply -f "$examples/role.yaml" >/dev/null
admin create rolebinding trainer --role mlpipe-trainer --user trainer >/dev/null

# The "image": the code and data the pods see, apart from the workspace
# mlpipe runs in, so that results can only come back through the API.
IMG=$T/image
mkdir -p "$IMG" "$T/ws"
awk 'BEGIN {
	s = 777; print "label,f0,f1,f2,f3,f4,f5,f6,f7,f8,f9,f10,f11,f12,f13,f14,f15"
	for (i = 0; i < 2000; i++) {
		c = i % 4; line = c
		for (j = 0; j < 16; j++) {
			s = (s * 16807) % 2147483647
			line = line "," sprintf("%.4f", (j == c ? 1 : 0) + (s / 2147483647 - 0.5) * 0.8)
		}
		print line
	}
}' > "$IMG/data.csv"
cp "$IMG/data.csv" "$T/ws/data.csv"

# pipeline NAME BODY: a pipeline whose stages run on the test cluster.
pipeline() {
	cat > "$T/ws/$1.yml" <<Y
name: $1
kubernetes:
  kubeconfig: $K8S_DIR/${KC:-trainer}.kubeconfig
  namespace: ml-train
  image: registry.local/trainer:1
  helper_image: registry.local/mlpipe:test
  workdir: $IMG
  start_timeout: ${START_TIMEOUT:-60s}
stages:
$2
Y
}
cd "$T/ws"
# In the database's terms: the stage's reason.
reason() { "$MLPIPE" runs show "$1" --json | jq -r ".stages[] | select(.stage == \"$2\") | .message // \"\"" | tail -1; }

# --- 2 nodes x 2 ranks of the builtin trainer ------------------------------
cat > local.yml <<'Y'
name: local
stages:
  train:
    train:
      ranks: 4
      builtin: { layers: [16, 32, 4], epochs: 3, batch: 32, lr: 0.1, validation_split: 0.2, data: data.csv }
    model: { name: tiny-local, path: local.bin }
Y
run_mlpipe run local.yml
expect_eq "the same training runs locally with 4 ranks" 0 "$rc"
local_run=$("$MLPIPE" runs --json --limit 1 | jq -r '.[0].id')
pipeline builtin "  train:
    runs-on: kubernetes
    train:
      nodes: 2
      ranks: 2
      builtin: { layers: [16, 32, 4], epochs: 3, batch: 32, lr: 0.1, validation_split: 0.2, data: data.csv }
    model: { name: tiny, path: tiny.bin }"
k8s_mlpipe run builtin.yml
expect_eq "2 nodes x 2 ranks of mlpipe-train on the cluster: exit 0" 0 "$rc"
run=$("$MLPIPE" runs --json --limit 1 | jq -r '.[0].id')
log=$("$MLPIPE" logs "$run" train)
expect_match "rank 0's lines too" "\[rank0\]" "$log"
expect_match "the executor made one Job per node on 1.20" "one Job per node" "$log"
expect_match "the gang started whole" "all 2 pods are running" "$log"
expect_match "the world spans the two pods" "world size 4" "$log"
acc_k=$("$MLPIPE" runs show "$run" --json | jq -r '.metrics["train.val_accuracy"] // .metrics["train.accuracy"] // empty')
acc_l=$("$MLPIPE" runs show "$local_run" --json | jq -r '.metrics["train.val_accuracy"] // .metrics["train.accuracy"] // empty')
if [ -n "$acc_k" ] && awk -v a="$acc_k" -v b="$acc_l" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 0.02 && a >= 0.9) }'; then
	ok "the cluster run reaches the local accuracy ($acc_k vs $acc_l)"
else
	not_ok "the cluster run reaches the local accuracy" "cluster: $acc_k local: $acc_l"
fi
run_mlpipe models show tiny:1
expect_eq "the model is registered" 0 "$rc"
sha_ws=$(sha256sum tiny.bin | cut -d' ' -f1)
sha_pod=$(sha256sum "$IMG/tiny.bin" | cut -d' ' -f1)
expect_eq "the model came back through the API, unchanged" "$sha_pod" "$sha_ws"
expect_match "and its sha256 is the registered one" "$sha_ws" "$out"
wait_until 30 no_pods_left || true
expect_eq "nothing is left on the cluster after success" 0 "$(left)"

# --- torchrun inside the pods ----------------------------------------------
# torchrun takes --nnodes, --node_rank, --master_addr ... from the PET_*
# variables (Kubeflow's convention); Debian's torchrun (torch 1.13 on
# Python 3.11) also needs --redirects/--tee/--log_dir to start at all.
if /usr/bin/python3 -c 'import torch.distributed' 2>/dev/null; then
	cat > "$IMG/ddp.py" <<'P'
import os, torch, torch.distributed as dist
dist.init_process_group("gloo")
t = torch.ones(1) * (dist.get_rank() + 1)
dist.all_reduce(t)
print(f"rank {dist.get_rank()} of {dist.get_world_size()} on {os.uname().nodename}: sum {int(t.item())}", flush=True)
dist.destroy_process_group()
P
	pipeline torch "  ddp:
    runs-on: kubernetes
    train:
      nodes: 2
      ranks: 2
      command: torchrun --redirects 1 --tee 1 --log_dir torchrun-logs-\$PET_NODE_RANK ddp.py"
	PATH=/usr/bin:$PATH k8s_mlpipe run torch.yml
	expect_eq "a PyTorch DDP script through torchrun in the pods: exit 0" 0 "$rc"
	log=$("$MLPIPE" logs "$("$MLPIPE" runs --json --limit 1 | jq -r '.[0].id')" ddp)
	expect_match "gloo all-reduced across 4 ranks on 2 pods" "rank 3 of 4 .*sum 10" "$log"
else
	ok "# SKIP python3-torch is missing (scripts/install-deps --with-test-peers)"
fi

# --- one rank exits 3 --------------------------------------------------------
pipeline fail "  train:
    runs-on: kubernetes
    train:
      nodes: 2
      ranks: 2
      command: 'echo \"hello from \$RANK\"; if [ \"\$RANK\" = 3 ]; then echo bye; exit 3; fi; sleep 60'"
k8s_mlpipe run fail.yml
expect_eq "a rank that exits 3 fails the run" 1 "$rc"
run=$("$MLPIPE" runs --json --limit 1 | jq -r '.[0].id')
why=$(reason "$run" train)
expect_match "the root cause names the pod, node 1 and rank 3 with its exit code" "pod .*-1-.* \(node 1\) failed first: node 1: rank 3 .*code 3" "$why"
log=$("$MLPIPE" logs "$run" train)
expect_match "the failing rank's last line is in the log" "\[rank3\] bye" "$log"
expect_match "the other ranks' lines are in the log" "\[rank0\] hello from 0" "$log"
expect_eq "no pod is left when the stage ends" 0 "$(admin get pods -l mlpipe.dev/run="$run" -o name | wc -l | tr -d ' ')"
j=$("$MLPIPE" runs show "$run" --json)
expect_eq "the stage's exit code is the rank's" 3 "$(printf '%s' "$j" | jq -r '.stages[] | select(.stage == "train") | .exit_code' | tail -1)"

# --- late DNS ------------------------------------------------------------------
pipeline dns "  train:
    runs-on: kubernetes
    kubernetes: { annotations: { test.mlpipe.dev/dns-delay: \"4\" } }
    train:
      nodes: 2
      ranks: 1
      builtin: { layers: [16, 8, 4], epochs: 1, batch: 64, lr: 0.1, data: data.csv }"
k8s_mlpipe run dns.yml
expect_eq "a master whose DNS record comes 4 s late: the stage still succeeds" 0 "$rc"
log=$("$MLPIPE" logs "$("$MLPIPE" runs --json --limit 1 | jq -r '.[0].id')" train)
expect_match "the helper waited for the name" "waiting for MASTER_ADDR" "$log"

# --- timeout ---------------------------------------------------------------------
pipeline slow "  train:
    runs-on: kubernetes
    timeout: 4s
    kill_grace: 4s
    train: { nodes: 2, ranks: 1, command: 'trap \"echo got TERM; exit 143\" TERM; echo started; while :; do sleep 0.1; done' }"
k8s_mlpipe run slow.yml
expect_eq "a stage past its timeout fails" 1 "$rc"
run=$("$MLPIPE" runs --json --limit 1 | jq -r '.[0].id')
expect_match "it says it timed out" "timed out" "$("$MLPIPE" runs show "$run")"
expect_eq "and its pods are gone when it ends" 0 "$(admin get pods -l mlpipe.dev/run="$run" -o name | wc -l | tr -d ' ')"
expect_match "the pods got SIGTERM first" "got TERM" "$("$MLPIPE" logs "$run" train)"

# --- cancel ------------------------------------------------------------------------
pipeline cancel "  train:
    runs-on: kubernetes
    train: { nodes: 2, ranks: 1, command: 'echo started; sleep 120' }"
set +e
"$MLPIPE" run cancel.yml >"$T/cancel.out" 2>&1 &
pid=$!
set -e
both_running() { [ "$(admin get pods -l mlpipe.dev/stage=train -o jsonpath='{.items[*].status.phase}')" = "Running Running" ]; }
wait_until 60 both_running || true
kill -INT "$pid" 2>/dev/null || true
set +e
wait "$pid"
rc=$?
set -e
expect_eq "Ctrl-C cancels the run" 130 "$rc"
expect_eq "the cancelled stage's pods are gone when mlpipe exits" 0 "$(left)"

# --- an unschedulable gang -------------------------------------------------------
START_TIMEOUT=3s pipeline gpus "  train:
    runs-on: kubernetes
    train: { nodes: 2, ranks: 1, gpus_per_node: 64, command: 'true' }"
k8s_mlpipe run gpus.yml
expect_eq "a gang that cannot be scheduled fails" 1 "$rc"
why=$(reason "$("$MLPIPE" runs --json --limit 1 | jq -r '.[0].id')" train)
expect_match "with the scheduler's words" "0/[0-9]+ nodes are available: [0-9]+ Insufficient nvidia.com/gpu" "$why"
expect_eq "and nothing is left" 0 "$(left)"

# --- mlpipe killed -9 --------------------------------------------------------------
pipeline killed "  train:
    runs-on: kubernetes
    train: { nodes: 2, ranks: 1, command: 'sleep 120' }"
jobs_now() { admin get jobs -l app.kubernetes.io/managed-by=mlpipe -o name | wc -l | tr -d ' '; }
two_jobs() { [ "$(jobs_now)" -eq 2 ]; }
no_jobs() { [ "$(jobs_now)" -eq 0 ] && no_pods_left; }
# Only mlpipe dies: its stage process notices (PR_SET_PDEATHSIG) and
# deletes the gang itself.
"$MLPIPE" run killed.yml >"$T/killed.out" 2>&1 &
pid=$!
wait_until 60 two_jobs || true
kill -9 "$(pgrep -f "^$REAL_MLPIPE run killed.yml" | head -1)" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
if wait_until 60 no_jobs; then ok "mlpipe killed -9: its stage process deletes the gang"
else not_ok "mlpipe killed -9: its stage process deletes the gang" "$(admin get jobs,pods 2>&1)"; fi
# mlpipe and its stage process both die (the machine went away): the gang
# stays until its deadline, or until the next mlpipe stage on the cluster.
"$MLPIPE" run killed.yml >"$T/killed.out" 2>&1 &
pid=$!
wait_until 60 two_jobs || true
pkill -9 -f "^$REAL_MLPIPE stage-k8s .*--stage train" 2>/dev/null || true
kill -9 "$(pgrep -f "^$REAL_MLPIPE run killed.yml" | head -1)" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
sleep 1
expect_eq "mlpipe and its stage process killed -9 leave the gang behind" 2 "$(jobs_now)"
pipeline next "  hello:
    runs-on: kubernetes
    run: echo hello"
k8s_mlpipe run next.yml
expect_eq "the next stage on the cluster runs" 0 "$rc"
expect_match "and sweeps what the killed run left" "sweeping mlp-[0-9]+-train-1" "$("$MLPIPE" logs "$("$MLPIPE" runs --json --limit 1 | jq -r '.[0].id')" hello)"
wait_until 30 no_pods_left || true
expect_eq "nothing is left" 0 "$(left)"

# --- RBAC forbids ----------------------------------------------------------------------
KC=viewer pipeline rbac "  hello:
    runs-on: kubernetes
    run: echo hello"
k8s_mlpipe run rbac.yml
expect_eq "a user who may not create the objects fails the run" 1 "$rc"
why=$(reason "$("$MLPIPE" runs --json --limit 1 | jq -r '.[0].id')" hello)
expect_match "with one clear line from the API server" "cannot create the Secret .* forbidden: User \"viewer\" cannot create resource \"secrets\"" "$why"

finish
