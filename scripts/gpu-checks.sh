#!/usr/bin/env bash
# scripts/gpu-checks.sh - every check of the GPU backend that needs a real
# GPU, in one go, on the GPU machine (docs/gpu.md):
#
#   1. the machine: nvidia-smi, CPUs, Python and PyTorch;
#   2. configure --with-cuda --enable-werror and build (make -j$(nproc));
#   3. tests/test-gpu: CPU/GPU parity of the backends (gradient, SGD step,
#      N training steps: loss within 1e-3 relative, accuracy within 0.5%,
#      predictions), parameter round trip, placement;
#   4. tests/functional/gpu.sh: --device cuda against --device cpu end to
#      end, a world-size-1 NCCL run through `mlpipe launch`, the NCCL
#      watchdog (a hung all-reduce aborted, the rank exits 1, the launcher
#      restarts and gives up, nothing hangs), `mlpipe gpu-check` and its
#      failure with --expect-gpus one too many, a `train:` stage with
#      `device: cuda` through `mlpipe run`;
#   5. `mlpipe gpu-check` as a user sees it;
#   6. bench/gpu: samples/s against PyTorch DDP, and the GEMM-peak fraction;
#   7. the whole `make check` on the GPU machine (with auto devices now
#      finding a GPU).
#
# Usage (from anywhere): scripts/gpu-checks.sh
# Environment: OUT=DIR also writes everything to DIR/gpu-checks.log;
# BUILD_DIR (default _build/gpu), JOBS (default nproc), SKIP_BENCH=1,
# SKIP_MAKE_CHECK=1.  Ends with a summary line per step; exits 1 when any
# step failed.  About 4-6 minutes on an H200 with 16 cores.
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
if [ -n "${OUT:-}" ]; then
	mkdir -p "$OUT"
	exec > >(tee "$OUT/gpu-checks.log") 2>&1
fi
build=${BUILD_DIR:-$top/_build/gpu}
jobs=${JOBS:-$(nproc)}
summary=()
failed=0
start=$(date +%s)

step() { echo; echo "== $* ($(($(date +%s) - start)) s)"; }
record() { # NAME RC
	if [ "$2" -eq 0 ]; then summary+=("ok      $1"); else summary+=("FAILED  $1 (exit $2)"); failed=1; fi
}
finish() {
	echo
	echo "== summary ($(($(date +%s) - start)) s)"
	printf '%s\n' "${summary[@]}"
	exit "$failed"
}

step "machine"
nvidia-smi 2>&1 | head -20 || echo "no nvidia-smi"
echo "cpus: $(nproc)"
python3 --version 2>&1 || true
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())' 2>&1 | tail -1 || true

step "configure --with-cuda and build"
missing=
for tool in autoreconf pkg-config make gcc g++; do
	command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
for mod in yaml-0.1 libcjson sqlite3 libgit2 libcurl libmicrohttpd libcrypto zlib cmocka; do
	pkg-config --exists "$mod" 2>/dev/null || missing="$missing $mod(pkg-config)"
done
pkg-config --exists openblas 2>/dev/null || pkg-config --exists blas 2>/dev/null ||
	missing="$missing openblas(pkg-config)"
[ -x /usr/local/cuda/bin/nvcc ] || missing="$missing /usr/local/cuda/bin/nvcc"
[ -f /usr/local/cuda/include/nccl.h ] || missing="$missing nccl.h"
if [ -n "$missing" ]; then
	echo "missing:$missing"
	echo "(scripts/install-deps installs the Debian packages; without autoreconf, carry a"
	echo " generated configure, Makefile.in, aclocal.m4, config.h.in, build-aux and m4)"
	rest=${missing// autoreconf/}
	if [ -n "$rest" ] || [ ! -x configure ]; then record build 1; finish; fi
fi
if command -v autoreconf >/dev/null 2>&1 &&
	{ [ ! -x configure ] || [ configure.ac -nt configure ] || [ Makefile.am -nt Makefile.in ]; }; then
	autoreconf -fi >/dev/null 2>&1 || { echo "autoreconf failed"; autoreconf -fi; record build 1; finish; }
fi
mkdir -p "$build"
(cd "$build" && "$top/configure" --with-cuda --enable-werror >configure.out 2>&1) || {
	tail -40 "$build/config.log"; record configure 1; finish; }
grep -A6 "mlpipe 0" "$build/configure.out" || tail -8 "$build/configure.out"
if ! (cd "$build" && make -j"$jobs" >make.out 2>&1 && make -j"$jobs" tests/test-gpu >>make.out 2>&1); then
	grep -B2 -A8 -E "error|Error" "$build/make.out" | head -80
	record build 1
	finish
fi
record build 0
grep -iE "warning" "$build/make.out" | head -20 || true

export MLPIPE="$build/mlpipe" MLPIPE_TRAIN="$build/mlpipe-train"
export MLPIPE_TEST_SRCDIR="$top/tests" CMOCKA_MESSAGE_OUTPUT=TAP NO_COLOR=1
unset WORLD_SIZE RANK LOCAL_RANK LOCAL_WORLD_SIZE MLPIPE_COLL_BACKEND MLPIPE_COLL_TIMEOUT

step "mlpipe-train gpu-count"
gpus=$("$MLPIPE_TRAIN" gpu-count)
echo "$gpus"
# no GPU here: every GPU test below would only skip
[ "${gpus:-0}" -gt 0 ] 2>/dev/null
record "a GPU is visible" $?

step "tests/test-gpu"
(cd "$build" && timeout 300 ./tests/test-gpu)
rc=$?
record tests/test-gpu $rc

step "tests/functional/gpu.sh"
(cd "$build" && timeout 300 sh "$top/tests/functional/gpu.sh")
rc=$?
record tests/functional/gpu.sh $rc

step "mlpipe gpu-check"
timeout 120 "$MLPIPE" gpu-check
record "mlpipe gpu-check" $?
timeout 60 "$MLPIPE" gpu-check --expect-gpus 2
echo "(exit $? with --expect-gpus 2)"

if [ -z "${SKIP_BENCH:-}" ]; then
	step "bench/gpu"
	timeout 420 bash "$top/bench/gpu" "$MLPIPE_TRAIN"
	record bench/gpu $?
fi

if [ -z "${SKIP_MAKE_CHECK:-}" ] && [ $(($(date +%s) - start)) -gt 420 ]; then
	echo; echo "== make check skipped: $(($(date +%s) - start)) s used already"
	summary+=("skipped make check (time)")
elif [ -z "${SKIP_MAKE_CHECK:-}" ]; then
	step "make check (all of it, on the GPU machine)"
	(cd "$build" && timeout 150 make -j"$jobs" check >check.out 2>&1)
	rc=$?
	grep -E "^(FAIL|ERROR|SKIP|XPASS):" "$build/check.out" | head -40
	grep -E "^# (TOTAL|PASS|SKIP|FAIL|ERROR)" "$build/check.out"
	if [ "$rc" -ne 0 ] && [ -f "$build/test-suite.log" ]; then
		grep -B2 -A25 -E "^(FAIL|ERROR):" "$build/test-suite.log" | head -150
	fi
	record "make check" $rc
fi

finish
