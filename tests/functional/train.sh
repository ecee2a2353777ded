#!/bin/sh
# Functional tests of mlpipe-train: it learns a separable problem from CSV
# and from an IDX directory, evaluates with per-class metrics, writes its
# outputs, refuses every kind of bad input with one line and exit 2, and
# 2 ranks x batch 32 end with the parameters of 1 rank x batch 64.
. "$(dirname "$0")/lib.sh"
: "${MLPIPE_TRAIN:?MLPIPE_TRAIN must name the mlpipe-train binary (run through make check)}"
export OMP_NUM_THREADS=1
unset WORLD_SIZE RANK LOCAL_RANK MLPIPE_METRICS MLPIPE_OUTPUT

# run_train ARGS...: like run_mlpipe, for mlpipe-train.
run_train() {
	set +e
	"$MLPIPE_TRAIN" "$@" >"$T/.out" 2>"$T/.err"
	rc=$?
	set -e
	out=$(cat "$T/.out")
	err=$(cat "$T/.err")
}
# expect_bad_input NAME REGEX: the last run exited 2 with one matching line.
expect_bad_input() {
	lines=$(printf '%s\n' "$err" | wc -l)
	if [ "$rc" = 2 ] && [ "$lines" -eq 1 ] && printf '%s' "$err" | grep -Eq -- "^mlpipe-train: .*$2"; then
		ok "$1"
	else
		not_ok "$1" "rc: $rc (want 2), stderr lines: $lines (want 1)" "stderr: $err"
	fi
}
# A separable problem: 3 classes, 8 features, class c is near the unit
# vector e_c, with deterministic noise in [-0.4, 0.4].
make_csv() { # FILE ROWS
	awk -v n="$2" 'BEGIN {
		s = 12345; print "label,f0,f1,f2,f3,f4,f5,f6,f7"
		for (i = 0; i < n; i++) {
			c = i % 3; line = c
			for (j = 0; j < 8; j++) {
				s = (s * 16807) % 2147483647
				v = (j == c ? 1 : 0) + (s / 2147483647 - 0.5) * 0.8
				line = line "," sprintf("%.4f", v)
			}
			print line
		}
	}' >"$1"
}
# bytes N...: writes the bytes with the given decimal values.
bytes() {
	for v in "$@"; do printf "\\$(printf '%03o' "$v")"; done
}
# An IDX pair of N 2x2 images: class c lights pixel c (3 classes, bright on
# dark with a little deterministic variation).
make_idx() { # PREFIX N
	n=$2
	{
		bytes 0 0 8 3 0 0 0 "$n" 0 0 0 2 0 0 0 2
		i=0
		while [ $i -lt "$n" ]; do
			c=$((i % 3)) k=0
			while [ $k -lt 4 ]; do
				if [ $k -eq $c ]; then bytes $((200 + (i * 7) % 50)); else bytes $(((i * 13 + k) % 60)); fi
				k=$((k + 1))
			done
			i=$((i + 1))
		done
	} >"$1-images-idx3-ubyte"
	{
		bytes 0 0 8 1 0 0 0 "$n"
		i=0
		while [ $i -lt "$n" ]; do bytes $((i % 3)); i=$((i + 1)); done
	} >"$1-labels-idx1-ubyte"
}

# max_abs_diff A B: "COUNT MAXDIFF" of two raw float32 files.
max_abs_diff() {
	od -An -v -t f4 "$1" | tr -s ' ' '\n' | grep . >"$T/.a"
	od -An -v -t f4 "$2" | tr -s ' ' '\n' | grep . >"$T/.b"
	paste "$T/.a" "$T/.b" | awk '{ d = $1 - $2; if (d < 0) d = -d; if (d > m) m = d }
	                            END { printf "%d %g\n", NR, m }'
}

make_csv "$T/train.csv" 600
make_csv "$T/test.csv" 150

# --- help, version -----------------------------------------------------------
run_train --help
expect_eq "--help exits 0" 0 "$rc"
for opt in --data --labels --label-column --device --metrics --layers --epochs --steps \
	--batch --lr --momentum --weight-decay --seed --test-data --test-labels \
	--validation-split --out --dump-params; do
	expect_match "--help documents $opt" "  $opt " "$out"
done
run_train --version
expect_match "--version prints the version" "^mlpipe-train [0-9]+\.[0-9]+" "$out"

# --- training on CSV ---------------------------------------------------------
cd "$T"
: >"$T/outputs"
MLPIPE_METRICS="$T/metrics.json" MLPIPE_OUTPUT="$T/outputs" run_train train \
	--data train.csv --test-data test.csv --layers 8,16,3 --epochs 10 --batch 32 \
	--lr 0.1 --momentum 0.9 --out model.bin
expect_eq "training on CSV exits 0" 0 "$rc"
expect_match "prints one line per epoch" \
	"epoch 10/10  loss [0-9.]+  accuracy [0-9.]+  test_accuracy [0-9.]+  samples/s [0-9]+" "$out"
acc=$(printf '%s\n' "$out" | sed -n 's/^epoch 10\/10 .*test_accuracy \([0-9.]*\).*/\1/p')
if awk -v a="$acc" 'BEGIN { exit !(a >= 0.95) }'; then ok "it learns (test accuracy $acc >= 0.95)"
else not_ok "it learns" "test accuracy '$acc', want >= 0.95" "$out"; fi
metrics=$(cat "$T/metrics.json")
for k in accuracy loss samples_per_sec epochs world_size; do
	expect_match "metrics have $k" "\"$k\": [0-9.e+-]+" "$metrics"
done
expect_match "metrics say 10 epochs and world size 1" '"epochs": 10, "world_size": 1' "$metrics"
expect_eq "the model file has the documented size" 816 "$(wc -c <model.bin | tr -d ' ')"
expect_eq "outputs name the model's sha256" \
	"model_sha256=$(sha256sum model.bin | cut -d' ' -f1)" "$(grep model_sha256= outputs)"
expect_eq "and its path" "model_path=$T/model.bin" "$(grep model_path= outputs)"
expect_eq "no temporary files are left" "" "$(ls | grep tmp || true)"

# The same seed trains the same model; another seed another.
run_train --data train.csv --layers 8,16,3 --epochs 2 --seed 5 --out a.bin
run_train --data train.csv --layers 8,16,3 --epochs 2 --seed 5 --out b.bin
run_train --data train.csv --layers 8,16,3 --epochs 2 --seed 6 --out c.bin
if cmp -s a.bin b.bin; then ok "a seed makes training deterministic"; else not_ok "a seed makes training deterministic"; fi
if cmp -s a.bin c.bin; then not_ok "another seed trains another model"; else ok "another seed trains another model"; fi
expect_match "without a test set it says where accuracy comes from" "accuracy is on the training data" "$out"

run_train --data train.csv --layers 8,16,3 --epochs 5 --validation-split 0.2 --out v.bin \
	--metrics v.json
expect_match "a validation split is reported" "val_accuracy [0-9.]+" "$out"
expect_match "and is in the metrics" '"val_accuracy"' "$(cat v.json)"

# --- evaluate ------------------------------------------------------------------
run_train evaluate model.bin --data test.csv --metrics eval.json
expect_eq "evaluate exits 0" 0 "$rc"
expect_match "evaluate prints accuracy" "^accuracy [0-9.]+  loss [0-9.]+  samples 150" "$out"
evm=$(cat eval.json)
for k in accuracy loss accuracy_class_0 accuracy_class_1 accuracy_class_2; do
	expect_match "evaluate metrics have $k" "\"$k\": [0-9.e+-]+" "$evm"
done
MLPIPE_METRICS="$T/eval2.json" run_train evaluate model.bin --data test.csv
expect_eq "evaluate writes \$MLPIPE_METRICS by default" "$evm" "$(cat eval2.json)"

# --- IDX directories (plain and gzip) ----------------------------------------------
mkdir idx
make_idx idx/train 90
make_idx idx/t10k 30
gzip idx/train-images-idx3-ubyte
run_train --data idx --layers 4,8,3 --epochs 30 --batch 10 --lr 0.2 --out idx.bin
expect_eq "training on an IDX directory exits 0" 0 "$rc"
expect_match "uses its t10k files as the test set" "90 training samples, 30 test" "$out"
expect_match "and learns them" "epoch 30/30 .* test_accuracy (1\.0000|0\.9[0-9]+)" "$out"
run_train evaluate idx.bin --data idx
expect_match "evaluate on a directory uses t10k" "samples 30" "$out"
run_train --data idx/t10k-images-idx3-ubyte --labels idx/t10k-labels-idx1-ubyte \
	--layers 4,8,3 --epochs 1 --out idx2.bin
expect_eq "an explicit IDX images + labels pair works" 0 "$rc"

# --- bad input: one line, exit 2 --------------------------------------------------
run_train --data nowhere.csv --layers 8,16,3
expect_bad_input "a missing data file" "nowhere.csv: No such file"
run_train --data train.csv --layers 5,16,3
expect_bad_input "mismatched layer sizes" "data has 8 features but the model expects 5"
run_train --data train.csv --layers 8,16,2
expect_bad_input "a label out of range" "label 2 is out of range for a model with 2 classes"
printf 'label,a\n0,1\n1,x\n' >bad.csv
run_train --data bad.csv --layers 1,4,2
expect_bad_input "a non-numeric CSV field" "bad.csv:3: column 1: 'x' is not a number"
head -c 30 idx/t10k-images-idx3-ubyte >trunc-images
run_train --data trunc-images --labels idx/t10k-labels-idx1-ubyte --layers 4,8,3
expect_bad_input "a truncated IDX file" "truncated \(expected 120 bytes of image data, got 14\)"
head -c 100 idx/train-images-idx3-ubyte.gz >cut.gz
run_train --data cut.gz --labels idx/train-labels-idx1-ubyte --layers 4,8,3
expect_bad_input "a truncated gzip file" "cut.gz: (truncated|corrupt)"
run_train --data idx/t10k-labels-idx1-ubyte --labels idx/t10k-labels-idx1-ubyte --layers 4,8,3
expect_bad_input "a labels file as images" "is it a labels file"

cp model.bin corrupt.bin
printf 'X' | dd of=corrupt.bin bs=1 seek=100 conv=notrunc 2>/dev/null
run_train evaluate corrupt.bin --data test.csv
expect_bad_input "a corrupt model" "corrupt.bin: checksum mismatch \(file is corrupt\)"
head -c 100 model.bin >short.bin
run_train evaluate short.bin --data test.csv
expect_bad_input "a truncated model" "short.bin: truncated \(expected 816 bytes, got 100\)"
run_train evaluate test.csv --data test.csv
expect_bad_input "not a model" "not an mlpipe model file"
run_train evaluate idx.bin --data test.csv
expect_bad_input "evaluate with mismatched sizes" "data has 8 features but the model expects 4"
awk -F, 'NR == 1 || NR > 3 { print; next } { $1 = 7; print }' OFS=, test.csv >labels7.csv
run_train evaluate model.bin --data labels7.csv
expect_bad_input "evaluate with a label out of range" "labels7.csv:2: label 7 is out of range"

run_train --data train.csv --batch 0
expect_bad_input "--batch 0" "--batch wants a whole number"
run_train --data train.csv --lr fast
expect_bad_input "--lr not a number" "--lr wants a number"
run_train --data train.csv --momentum 1
expect_bad_input "--momentum 1" "--momentum wants a number from 0 to 1 \(exclusive\)"
run_train --data train.csv --layers 8,x,3
expect_bad_input "--layers with a non-number" "'x' is not a layer size"
run_train --data train.csv --frobnicate
expect_bad_input "an unknown option" "unknown option '--frobnicate'"
run_train --data
expect_bad_input "an option without its value" "--data needs a value"
run_train
expect_bad_input "no data" "no training data"
run_train frobnicate
expect_bad_input "an unknown command" "unknown command 'frobnicate'"
run_train evaluate --data test.csv
expect_bad_input "evaluate without a model" "evaluate needs a model file"
run_train evaluate model.bin --data test.csv --epochs 3
expect_bad_input "evaluate refuses training options" "evaluate does not take --epochs"
# --device cuda: one line and exit 2 where there is no GPU (or no CUDA
# backend in this build); on a GPU machine it simply trains.
if [ "$("$MLPIPE_TRAIN" gpu-count 2>/dev/null || echo 0)" = 0 ]; then
	run_train --data train.csv --layers 8,16,3 --device cuda
	expect_bad_input "--device cuda without a GPU" "cuda"
else
	run_train --data train.csv --layers 8,16,3 --device cuda --out cuda.bin
	expect_eq "--device cuda trains on a GPU machine" 0 "$rc"
fi
run_train --data train.csv --layers 8,16,3 --validation-split 1.5
expect_bad_input "a bad --validation-split" "--validation-split"
RANK=0 WORLD_SIZE=2 LOCAL_RANK=0 LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=1 \
	run_train --data train.csv --layers 8,16,3 --batch 63
expect_bad_input "a batch the world size does not divide" "--batch 63 is not divisible by the world size 2"

# A rank whose peers never come: a runtime failure (1), not bad input.
port=$((20000 + ($$ + 7) % 20000))
RANK=0 WORLD_SIZE=2 LOCAL_RANK=0 LOCAL_WORLD_SIZE=2 GROUP_RANK=0 MASTER_ADDR=127.0.0.1 \
	MASTER_PORT=$port TORCHELASTIC_RUN_ID="train-alone-$$" MLPIPE_COLL_TIMEOUT=1 \
	run_train --data train.csv --layers 8,16,3 --out alone.bin
expect_eq "a rank left alone exits 1" 1 "$rc"
expect_match "with a line naming the rendezvous" "^mlpipe-train: rendezvous: " "$err"
expect_eq "and only that line" 1 "$(printf '%s\n' "$err" | wc -l | tr -d ' ')"
expect_eq "and writes no model" "" "$(ls alone.bin 2>/dev/null || true)"

# --- data parallel: 2 ranks x 32 == 1 rank x 64 --------------------------------------
# On the CPU backend whatever the machine has (the GPU's own parity and
# NCCL runs are tests/functional/gpu.sh's).
common="--data train.csv --layers 8,16,3 --lr 0.1 --momentum 0.9 --weight-decay 0.001 --seed 3 --steps 9 --device cpu"
# shellcheck disable=SC2086
run_train $common --batch 64 --out one.bin --dump-params one.f32
expect_eq "1 rank x 64 exits 0" 0 "$rc"
port=$((20000 + $$ % 20000))
for r in 0 1; do
	# shellcheck disable=SC2086
	RANK=$r LOCAL_RANK=$r WORLD_SIZE=2 LOCAL_WORLD_SIZE=2 GROUP_RANK=0 \
		MASTER_ADDR=127.0.0.1 MASTER_PORT=$port TORCHELASTIC_RUN_ID="train-test-$$" \
		MLPIPE_COLL_TIMEOUT=20 \
		"$MLPIPE_TRAIN" $common --batch 64 --out two.bin --dump-params two.f32 \
		>"rank$r.out" 2>"rank$r.err" &
	eval "pid$r=\$!"
done
set +e
wait "$pid0"; rc0=$?
wait "$pid1"; rc1=$?
set -e
expect_eq "2 ranks x 32 exit 0" "0 0" "$rc0 $rc1"
expect_match "rank 0 reports world size 2" "world size 2 .*batch 64 \(32 per rank\)" "$(cat rank0.out)"
expect_eq "rank 1 prints no progress" "" "$(cat rank1.out)"
# shellcheck disable=SC2086
run_train $common --steps 8 --batch 64 --out eight.bin --dump-params eight.f32
if [ -s one.f32 ] && [ -s two.f32 ] && [ -s eight.f32 ]; then
	set -- $(max_abs_diff one.f32 two.f32)
	expect_eq "the parameter dumps have 195 floats" 195 "$1"
	if awk -v m="$2" 'BEGIN { exit !(m <= 1e-5) }'; then
		ok "2x32 and 1x64 end with the same parameters (max abs diff $2)"
	else
		not_ok "2x32 and 1x64 end with the same parameters" "max abs diff $2 > 1e-5"
	fi
	set -- $(max_abs_diff one.f32 eight.f32)
	if awk -v m="$2" 'BEGIN { exit !(m > 1e-4) }'; then
		ok "the comparison sees one step's difference ($2)"
	else
		not_ok "the comparison sees one step's difference" "max abs diff $2"
	fi
else
	not_ok "every run dumped its parameters" "$(cat rank0.err rank1.err)"
fi

finish
