#!/bin/sh
# Two "pods" on one machine: two mlpipe-pod processes, PET_NNODES=2 and
# PET_NODE_RANK 0 and 1, each running 2 ranks of the builtin trainer in a
# directory of its own, rendezvous on 127.0.0.1 -- the Kubernetes executor's
# multi-node training without the cluster.  Both succeed, the four ranks
# train as one group (the same parameters as one process with the same
# global batch), and node 0 serves the model with its sha256.
. "$(dirname "$0")/lib.sh"
: "${MLPIPE_POD:?MLPIPE_POD must name the mlpipe-pod binary (run through make check)}"
: "${MLPIPE_TRAIN:?MLPIPE_TRAIN must name the mlpipe-train binary (run through make check)}"
unset PET_NNODES PET_NODE_RANK PET_NPROC_PER_NODE PET_MASTER_ADDR PET_MASTER_PORT \
	TORCHELASTIC_RUN_ID MLPIPE_RUN_ID RANK WORLD_SIZE MASTER_ADDR MASTER_PORT \
	MLPIPE_METRICS MLPIPE_OUTPUT
export OMP_NUM_THREADS=1 MLPIPE_COLL_TIMEOUT=60
if ! command -v curl >/dev/null; then
	echo "1..0 # SKIP no curl"
	exit 0
fi
mkdir -p "$T/n0" "$T/n1"
cd "$T"

# The separable problem of train.sh: 3 classes, 8 features.
awk 'BEGIN {
	s = 12345; print "label,f0,f1,f2,f3,f4,f5,f6,f7"
	for (i = 0; i < 600; i++) {
		c = i % 3; line = c
		for (j = 0; j < 8; j++) {
			s = (s * 16807) % 2147483647
			v = (j == c ? 1 : 0) + (s / 2147483647 - 0.5) * 0.8
			line = line "," sprintf("%.4f", v)
		}
		print line
	}
}' >train.csv
cp train.csv n0/
cp train.csv n1/
train="--data train.csv --layers 8,16,3 --lr 0.1 --momentum 0.9 --seed 3 --steps 12 --batch 64 --device cpu"
master_port=$((20000 + ($$ + 31) % 20000))
results_port=$((20000 + ($$ + 37) % 20000))
url="http://127.0.0.1:$results_port"

# start_node N: node N's pod in nN/, in the background ($podN).
start_node() {
	(
		cd "n$1"
		# shellcheck disable=SC2086
		PET_NNODES=2 PET_NODE_RANK=$1 PET_NPROC_PER_NODE=2 PET_MASTER_ADDR=127.0.0.1 \
			PET_MASTER_PORT=$master_port TORCHELASTIC_RUN_ID="pod-train-$$" \
			exec "$MLPIPE_POD" run --results-port "$results_port" \
			--result model=model.bin --result metrics=metrics.json \
			--termination-log termination-log --serve-timeout 60s -- \
			sh -c 'echo "rank $RANK of $WORLD_SIZE"; exec "$0" "$@"' \
			"$MLPIPE_TRAIN" $train --out model.bin --metrics metrics.json \
			--dump-params params.f32 >out 2>err
	) &
	eval "pod$1=\$!"
}
# Node 1 first: its ranks wait for rank 0, as pods that start apart do.
start_node 1
sleep 0.5
start_node 0
set +e
wait "$pod1"
rc1=$?
set -e
expect_eq "node 1 succeeds and exits as soon as its ranks end" 0 "$rc1"
expect_eq "its ranks are 2 and 3 of 4" "[rank2] rank 2 of 4
[rank3] rank 3 of 4" "$(sort n1/out)"
expect_eq "it writes no model (rank 0 does)" no "$([ -e n1/model.bin ] && echo yes || echo no)"
i=0
while [ "$(curl -s "$url/status?wait=30" | cut -c1-16)" != '{"state":"done",' ] && [ $i -lt 10 ]; do
	i=$((i + 1))
done
status=$(curl -s "$url/status")
sha=$(sha256sum n0/model.bin | cut -d' ' -f1)
size=$(wc -c <n0/model.bin | tr -d ' ')
expect_match "node 0 serves the model's size and sha256" \
	"^\{\"state\":\"done\",\"exit_code\":0,\"reason\":\"\",\"files\":\{\"model\":\{\"size\":$size,\"sha256\":\"$sha\"\},\"metrics\":\{" \
	"$status"
curl -s -o got.bin "$url/files/model"
if cmp -s got.bin n0/model.bin; then ok "and its bytes"; else not_ok "/files/model sends the model's bytes"; fi
expect_match "the metrics say world size 4" '"world_size": 4' "$(curl -s "$url/files/metrics")"
expect_eq "POST /done ends node 0" bye "$(curl -s -X POST "$url/done")"
set +e
wait "$pod0"
rc0=$?
set -e
expect_eq "which succeeds" 0 "$rc0"
expect_match "rank 0 trained with world size 4 over TCP" "\[rank0\] .*world size 4 \(tcp\)" "$(cat n0/out)"

# The four ranks were one group: the parameters of one process with the
# same global batch.
(cd n0 && "$MLPIPE_TRAIN" $train --out one.bin --dump-params one.f32 >/dev/null)
if [ -s n0/params.f32 ] && [ -s n0/one.f32 ]; then
	diff=$(od -An -v -t f4 n0/params.f32 | tr -s ' ' '\n' | grep . >a.txt
		od -An -v -t f4 n0/one.f32 | tr -s ' ' '\n' | grep . >b.txt
		paste a.txt b.txt | awk '{ d = $1 - $2; if (d < 0) d = -d; if (d > m) m = d }
		                         END { printf "%d %g\n", NR, m }')
	set -- $diff
	if [ "$1" = 195 ] && awk -v m="$2" 'BEGIN { exit !(m <= 1e-5) }'; then
		ok "2 pods x 2 ranks end with 1 process's parameters (max abs diff $2)"
	else
		not_ok "2 pods x 2 ranks end with 1 process's parameters" "floats $1, max abs diff $2"
	fi
else
	not_ok "both runs dumped their parameters" "$(cat n0/err n1/err)"
fi

# --- --once: torchrun in each pod, wired by the PET_* variables alone -------
# (Kubeflow's convention.)  Debian's torchrun needs --redirects/--tee/--log_dir
# on Python 3.11 (shared/notes/training.md).
if /usr/bin/python3 -c 'import torch.distributed.run' 2>/dev/null && command -v torchrun >/dev/null; then
	cat >ddp.py <<'P'
import torch, torch.distributed as dist
dist.init_process_group("gloo", init_method="env://")
t = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(t)
print(f"rank {dist.get_rank()} of {dist.get_world_size()}: sum {t.item():g}", flush=True)
dist.destroy_process_group()
P
	for n in 0 1; do
		(
			cd "n$n"
			PET_NNODES=2 PET_NODE_RANK=$n PET_NPROC_PER_NODE=1 PET_MASTER_ADDR=localhost \
				PET_MASTER_PORT=$master_port exec "$MLPIPE_POD" run --once \
				--termination-log termination-log -- \
				torchrun --redirects 1 --tee 1 --log_dir torchrun-logs ../ddp.py >once.out 2>&1
		) &
		eval "pod$n=\$!"
	done
	set +e
	wait "$pod0"
	rc0=$?
	wait "$pod1"
	rc1=$?
	set -e
	expect_eq "torchrun under --once in two pods: both succeed" "0 0" "$rc0 $rc1"
	expect_match "node 0's worker all-reduced with node 1's" "^\[node0\] \[default0\]:rank 0 of 2: sum 3" "$(cat n0/once.out)"
	expect_match "and node 1's with node 0's" "^\[node1\] \[default0\]:rank 1 of 2: sum 3" "$(cat n1/once.out)"
else
	echo "# PyTorch is not installed (Debian python3-torch): the --once torchrun test did not run"
fi

finish
