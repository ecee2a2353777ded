#!/bin/sh
# A builtin train stage end to end through `mlpipe run`: 2 data-parallel
# ranks of mlpipe-train on generated data, the model registered, evaluate
# finding mlpipe-train on the stage's PATH, and a gate deciding on it.
. "$(dirname "$0")/lib.sh"
export OMP_NUM_THREADS=1
mkdir -p "$T/p"
cd "$T/p"

# 4 classes, 16 features: class c is near the unit vector e_c.
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
}' > data.csv

cat > pipeline.yml <<'Y'
name: tiny
stages:
  train:
    train:
      ranks: 2
      builtin:
        layers: [16, 32, 4]
        epochs: 3
        batch: 32
        lr: 0.1
        momentum: 0.9
        validation_split: 0.2
        data: data.csv
    model: { name: tiny, path: tiny.bin }
  evaluate:
    needs: [train]
    run: mlpipe-train evaluate tiny.bin --data data.csv
  gate:
    needs: [evaluate]
    gate:
      model: tiny
      metrics_from: evaluate
      require: { accuracy: ">= 0.9" }
Y
run_mlpipe run pipeline.yml
expect_eq "a builtin train stage with 2 ranks runs end to end" 0 "$rc"
expect_match "both ranks took part, through shared memory" "world size 2 \(shm\)" "$("$MLPIPE" logs 1 train)"
j=$("$MLPIPE" runs show 1 --json | tr -d ' \t\n')
expect_match "the trainer's metrics are recorded" '"train.world_size":2' "$j"
acc=$(printf '%s' "$j" | sed -n 's/.*"evaluate.accuracy":\([0-9.]*\).*/\1/p')
if awk -v a="$acc" 'BEGIN { exit !(a >= 0.9) }'; then ok "the model learned (accuracy $acc)"
else not_ok "the model learned" "accuracy: $acc"; fi
expect_match "the model file's sha256 is an output" '"train.model_sha256":"[0-9a-f]{64}"' "$j"
run_mlpipe models show tiny:1
expect_match "the model is registered and approved by the gate" "approved" "$out"
[ -s tiny.bin ] && ok "the model file is in the workspace" || not_ok "the model file is in the workspace"

finish
