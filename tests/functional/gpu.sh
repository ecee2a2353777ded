#!/bin/sh
# Functional tests of the GPU path (docs/gpu.md), on a machine with a GPU:
# mlpipe-train --device cuda trains like the CPU; a world-size-1 NCCL run
# goes through the launcher end to end; the NCCL watchdog ends a hung
# collective, the rank exits 1 and the launcher restarts the group and then
# gives up (nothing hangs); `mlpipe gpu-check` lists the GPU and passes its
# all-reduce, and fails clearly when more GPUs are expected than there are;
# a `train:` stage with `builtin: {device: cuda}` runs through `mlpipe run`.
# Without a usable GPU (or in a build without CUDA) the whole file is a
# visible skip: "1..0 # SKIP no CUDA device".
. "$(dirname "$0")/lib.sh"
: "${MLPIPE_TRAIN:?MLPIPE_TRAIN must name the mlpipe-train binary (run through make check)}"
export OMP_NUM_THREADS=1
unset WORLD_SIZE RANK LOCAL_RANK LOCAL_WORLD_SIZE MLPIPE_METRICS MLPIPE_OUTPUT \
	MLPIPE_COLL_BACKEND MLPIPE_COLL_TIMEOUT MLPIPE_NCCL_TEST_DELAY_MS NCCL_COMM_ID

set +e
gpus=$("$MLPIPE_TRAIN" gpu-count 2>"$T/why")
set -e
if [ -z "$gpus" ] || [ "$gpus" = 0 ]; then
	sed 's/^/# /' "$T/why"
	echo "1..0 # SKIP no CUDA device"
	exit 0
fi
echo "# $gpus GPU(s) visible"
cd "$T"

run_train() {
	set +e
	"$MLPIPE_TRAIN" "$@" >"$T/.out" 2>"$T/.err"
	rc=$?
	set -e
	out=$(cat "$T/.out")
	err=$(cat "$T/.err")
}
# seconds since the epoch, for "nothing hangs"
now() { date +%s; }

# 3 classes, 8 features: class c is near the unit vector e_c.
awk 'BEGIN {
	s = 4242; print "label,f0,f1,f2,f3,f4,f5,f6,f7"
	for (i = 0; i < 3000; i++) {
		c = i % 3; line = c
		for (j = 0; j < 8; j++) {
			s = (s * 16807) % 2147483647
			line = line "," sprintf("%.4f", (j == c ? 1 : 0) + (s / 2147483647 - 0.5) * 0.8)
		}
		print line
	}
}' >train.csv
head -1 train.csv >test.csv
tail -n 600 train.csv >>test.csv
common="--data train.csv --test-data test.csv --layers 8,32,16,3 --epochs 3 --batch 32 --lr 0.05 --momentum 0.9 --seed 7"

# --- the cuda backend against the cpu backend -------------------------------------
# shellcheck disable=SC2086
run_train $common --device cpu --out cpu.bin --dump-params cpu.f32 --metrics cpu.json
expect_eq "the cpu run exits 0" 0 "$rc"
# shellcheck disable=SC2086
run_train $common --device cuda --out gpu.bin --dump-params gpu.f32 --metrics gpu.json
expect_eq "--device cuda exits 0" 0 "$rc"
expect_match "it says it runs on cuda" "on cuda, 3000 training samples" "$out"
expect_match "it prints the same epoch lines" "epoch 3/3  loss [0-9.]+  accuracy [0-9.]+  test_accuracy [0-9.]+  samples/s [0-9]+" "$out"
if [ -s cpu.f32 ] && [ -s gpu.f32 ]; then
	d=$(od -An -v -f -w4 cpu.f32 >cpu.txt && od -An -v -f -w4 gpu.f32 >gpu.txt &&
		paste cpu.txt gpu.txt | awk '{ d = $1 - $2; if (d < 0) d = -d; if (d > m) m = d } END { printf "%g", m }')
	if awk -v m="$d" 'BEGIN { exit !(m <= 1e-3) }'; then
		ok "cpu and cuda end with the same parameters (max abs diff $d)"
	else
		not_ok "cpu and cuda end with the same parameters" "max abs diff $d"
	fi
else
	not_ok "both runs dumped their parameters" "$err"
fi
acc_cpu=$(sed -n 's/.*"test_accuracy": \([0-9.e+-]*\).*/\1/p' cpu.json)
acc_gpu=$(sed -n 's/.*"test_accuracy": \([0-9.e+-]*\).*/\1/p' gpu.json)
if awk -v a="$acc_cpu" -v b="$acc_gpu" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a != "" && d <= 0.005) }'; then
	ok "the same test accuracy ($acc_cpu vs $acc_gpu)"
else
	not_ok "the same test accuracy" "cpu $acc_cpu, cuda $acc_gpu"
fi
run_train evaluate gpu.bin --data test.csv --device cuda
expect_eq "evaluate --device cuda exits 0" 0 "$rc"
eval_gpu=$out
run_train evaluate gpu.bin --data test.csv --device cpu
expect_eq "evaluate gives the cpu's accuracy on the gpu" \
	"$(printf '%s\n' "$out" | sed -n 's/^accuracy \([0-9.]*\) .*/\1/p')" \
	"$(printf '%s\n' "$eval_gpu" | sed -n 's/^accuracy \([0-9.]*\) .*/\1/p')"
# shellcheck disable=SC2086
LOCAL_RANK=$gpus LOCAL_WORLD_SIZE=$((gpus + 1)) run_train $common --device cuda --out x.bin
if [ "$rc" = 2 ] && [ "$(printf '%s\n' "$err" | wc -l)" -eq 1 ] &&
	printf '%s' "$err" | grep -q "^mlpipe-train: --device cuda: LOCAL_RANK $gpus but only $gpus GPUs\{0,1\} visible"; then
	ok "a LOCAL_RANK without its GPU is refused in one line"
else
	not_ok "a LOCAL_RANK without its GPU is refused in one line" "rc $rc" "$err"
fi

# --- NCCL at world size 1 through the launcher ------------------------------------
run_mlpipe launch -n 1 --gpus-per-node 1 -- env MLPIPE_COLL_BACKEND=nccl \
	"$MLPIPE_TRAIN" train $common --device cuda --out nccl.bin --dump-params nccl.f32
expect_eq "a world-size-1 NCCL run through mlpipe launch exits 0" 0 "$rc"
expect_match "it all-reduced with NCCL" "on cuda.*world size 1 \(nccl\)" "$out"
if cmp -s gpu.f32 nccl.f32; then
	ok "averaging over one rank with NCCL changes nothing"
else
	not_ok "averaging over one rank with NCCL changes nothing" "$err"
fi

# --- the watchdog ----------------------------------------------------------------------
t0=$(now)
MLPIPE_COLL_BACKEND=nccl MLPIPE_NCCL_TEST_DELAY_MS=3000 MLPIPE_COLL_TIMEOUT=1 \
	run_train $common --device cuda --out hung.bin
t1=$(now)
expect_eq "a hung all-reduce makes the rank exit 1" 1 "$rc"
expect_match "with a line naming the timeout" \
	"^mlpipe-train: NCCL all-reduce did not complete within 1000 ms .*timeout" "$err"
if [ $((t1 - t0)) -le 20 ]; then ok "within seconds ($((t1 - t0)) s)"
else not_ok "within seconds" "took $((t1 - t0)) s"; fi
expect_eq "and writes no model" "" "$(ls hung.bin 2>/dev/null || true)"

t0=$(now)
run_mlpipe launch -n 1 --gpus-per-node 1 --max-restarts 1 -- env MLPIPE_COLL_BACKEND=nccl \
	MLPIPE_NCCL_TEST_DELAY_MS=3000 MLPIPE_COLL_TIMEOUT=1 \
	"$MLPIPE_TRAIN" train $common --device cuda --out hung.bin
t1=$(now)
expect_eq "the launcher gives up after its restart" 1 "$rc"
expect_match "having restarted the group once" "1 of 1 restarts used" "$err"
hits=$(printf '%s\n' "$out" "$err" | grep -c 'did not complete within' || true)
if [ "$hits" -ge 2 ]; then ok "both attempts hit the watchdog"
else not_ok "both attempts hit the watchdog" "$hits lines name it" "$out" "$err"; fi
if [ $((t1 - t0)) -le 60 ]; then ok "nothing hangs ($((t1 - t0)) s)"
else not_ok "nothing hangs" "took $((t1 - t0)) s"; fi

# --- mlpipe gpu-check --------------------------------------------------------------------
run_mlpipe gpu-check --max-bytes 1M --iters 5
expect_eq "gpu-check passes" 0 "$rc"
expect_match "it lists the GPU" "^GPU 0: .*GiB" "$out"
expect_match "with the versions" "^driver [0-9]+\.[0-9]+, runtime [0-9]+\.[0-9]+, NCCL [0-9.]+" "$out"
expect_match "and a bandwidth table" "algbw GB/s +busbw GB/s" "$out"
if [ "$gpus" = 1 ]; then
	expect_match "and says the all-reduce works" "all-reduce over 1 GPU: ok" "$out"
else
	expect_match "and says the all-reduce works" "all-reduce over $gpus GPUs: ok" "$out"
fi
run_mlpipe gpu-check --expect-gpus $((gpus + 1))
expect_eq "expecting more GPUs than there are fails" 1 "$rc"
expect_match "clearly" "$gpus GPUs? visible, $((gpus + 1)) expected" "$err"
run_mlpipe gpu-check --iters many
expect_eq "a bad option is a usage error" 2 "$rc"

# --- a train stage on the GPU through mlpipe run ------------------------------------------
mkdir -p p
cp train.csv p/data.csv
cat >p/pipeline.yml <<'Y'
name: gpu
stages:
  train:
    train:
      gpus_per_node: 1
      builtin:
        layers: [8, 32, 3]
        epochs: 3
        batch: 32
        lr: 0.1
        momentum: 0.9
        validation_split: 0.2
        data: data.csv
        device: cuda
    model: { name: gpu-tiny, path: tiny.bin }
Y
cd p
run_mlpipe run pipeline.yml
expect_eq "a builtin train stage with device cuda runs through mlpipe run" 0 "$rc"
expect_match "on the GPU" "on cuda" "$("$MLPIPE" logs 1 train)"
[ -s tiny.bin ] && ok "and leaves its model" || not_ok "and leaves its model" "$out" "$err"
cd ..

finish
