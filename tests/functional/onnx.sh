#!/bin/sh
# Functional tests of `mlpipe-train export --onnx` (docs/onnx.md): the file
# passes the ONNX checker (Debian's python3-onnx, full check) with the
# documented opset, names and shapes; ONNX Runtime (onnxruntime-node from
# npm, scripts/install-deps --with-test-peers) gives the logits of a numpy
# forward pass over the model file within 1e-5, and those of
# mlpipe-model-server when $MLPIPE_MODEL_SERVER names it; bad input is one
# line, a non-zero exit and no output file.
#
# Without python3-onnx + numpy or onnxruntime-node the parts that need them
# print "# SKIP", unless MLPIPE_ONNX_REQUIRED is set (.ci/run sets it):
# then a missing peer is a failure.
. "$(dirname "$0")/lib.sh"
: "${MLPIPE_TRAIN:?MLPIPE_TRAIN must name the mlpipe-train binary (run through make check)}"
export OMP_NUM_THREADS=1
unset WORLD_SIZE RANK LOCAL_RANK MLPIPE_METRICS MLPIPE_OUTPUT
server=
trap '[ -z "$server" ] || kill -9 "$server" 2>/dev/null || true; rm -rf "$T"' EXIT
cd "$T"

run_train() {
	set +e
	"$MLPIPE_TRAIN" "$@" >"$T/.out" 2>"$T/.err"
	rc=$?
	set -e
	out=$(cat "$T/.out")
	err=$(cat "$T/.err")
}
# expect_fail NAME RC REGEX FILE: the last run exited RC with one stderr
# line matching REGEX, and FILE does not exist.
expect_fail() {
	lines=$(printf '%s\n' "$err" | wc -l)
	if [ "$rc" = "$2" ] && [ "$lines" -eq 1 ] &&
		printf '%s' "$err" | grep -Eq -- "^mlpipe-train: .*$3" && [ ! -e "$4" ]; then
		ok "$1"
	else
		not_ok "$1" "rc: $rc (want $2), stderr lines: $lines (want 1)" "stderr: $err" \
			"output file left: $(ls -d "$4" 2>/dev/null || echo no)"
	fi
}
# skip_or_fail NAME REASON: a part whose peer is missing.
skip_or_fail() {
	if [ -n "${MLPIPE_ONNX_REQUIRED:-}" ]; then
		not_ok "$1" "MLPIPE_ONNX_REQUIRED is set but $2"
	else
		ok "$1 # SKIP $2"
	fi
}

if [ -x /usr/bin/python3 ]; then python=/usr/bin/python3; else python=$(command -v python3 || echo python3); fi
have_py=no
"$python" -c 'import onnx, numpy' 2>/dev/null && have_py=yes
npm_prefix=${MLPIPE_NPM_PREFIX:-/var/cache/mlpipe-npm}
NODE_PATH="$npm_prefix/node_modules${NODE_PATH:+:$NODE_PATH}"
export NODE_PATH
have_ort=no
command -v node >/dev/null && node -e 'require("onnxruntime-node")' 2>/dev/null && have_ort=yes

# check.py: the numpy side.  Reads model files as docs/model-format.md says.
cat >check.py <<'EOF'
import gzip, json, struct, sys, zlib
import numpy as np

def load(path):
    b = open(path, "rb").read()
    assert b[:4] == b"MLPM" and struct.unpack_from("<I", b, 4)[0] == 1
    n = struct.unpack_from("<I", b, 8)[0]
    sizes = struct.unpack_from("<%dI" % n, b, 12)
    p = struct.unpack_from("<Q", b, 12 + 4 * n)[0]
    end = 20 + 4 * n + 4 * p
    assert len(b) == end + 4 and zlib.crc32(b[:end]) == struct.unpack_from("<I", b, end)[0]
    flat = np.frombuffer(b, "<f4", p, 20 + 4 * n)
    layers, off = [], 0
    for i, o in zip(sizes, sizes[1:]):
        w = flat[off:off + o * i].reshape(o, i); off += o * i
        layers.append((w, flat[off:off + o])); off += o
    return sizes, layers

def prep(model, n, inputs, ref, images=None):
    """N input rows (from an IDX images file, as byte/255, or seeded
    random) and the logits of a float64 forward pass over them."""
    sizes, layers = load(model)
    n = int(n)
    if images:
        raw = gzip.open(images).read() if images.endswith(".gz") else open(images, "rb").read()
        f = sizes[0]
        x = np.frombuffer(raw, np.uint8, n * f, 16).reshape(n, f).astype(np.float32)
        x = x * np.float32(1.0 / 255.0)
    else:
        x = np.random.default_rng(7).standard_normal((n, sizes[0])).astype(np.float32)
    a = x.astype(np.float64)
    for k, (w, b) in enumerate(layers):
        a = a @ w.astype(np.float64).T + b
        if k < len(layers) - 1:
            a = np.maximum(a, 0)
    x.astype("<f4").tofile(inputs)
    a.astype("<f4").tofile(ref)

def check(onnx_path, model, sha256):
    """The ONNX checker's full check, then what docs/onnx.md promises."""
    import onnx
    from onnx import TensorProto, numpy_helper
    m = onnx.load(onnx_path)
    onnx.checker.check_model(m, full_check=True)
    sizes, layers = load(model)
    def shape(v):
        return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
    got = {
        "ir": m.ir_version,
        "opset": [(o.domain, o.version) for o in m.opset_import],
        "producer": m.producer_name,
        "inputs": [(v.name, v.type.tensor_type.elem_type, shape(v)) for v in m.graph.input],
        "outputs": [(v.name, v.type.tensor_type.elem_type, shape(v)) for v in m.graph.output],
        "ops": [n.op_type for n in m.graph.node],
        "meta": {p.key: p.value for p in m.metadata_props},
    }
    ops = []
    for k in range(len(layers)):
        ops += ["Gemm"] + (["Relu"] if k < len(layers) - 1 else [])
    want = {
        "ir": 8,
        "opset": [("", 13)],
        "producer": "mlpipe-train",
        "inputs": [("input", TensorProto.FLOAT, ["batch", sizes[0]])],
        "outputs": [("logits", TensorProto.FLOAT, ["batch", sizes[-1]]),
                    ("class", TensorProto.INT64, ["batch"])],
        "ops": ops + ["ArgMax"],
        "meta": {"mlpipe_layers": "-".join(map(str, sizes)), "mlpipe_sha256": sha256},
    }
    for k in want:
        if got[k] != want[k]:
            sys.exit("%s: %r, want %r" % (k, got[k], want[k]))
    # The initializers hold the model file's parameters, bit for bit.
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    for k, (w, b) in enumerate(layers, 1):
        if not (np.array_equal(inits["W%d" % k], w) and np.array_equal(inits["b%d" % k], b)):
            sys.exit("initializers W%d/b%d differ from the model file" % (k, k))

def compare(a, b, cols, tol):
    """Max |a - b| of two float32 files; fails above tol."""
    x, y = np.fromfile(a, "<f4"), np.fromfile(b, "<f4")
    if x.shape != y.shape or x.size == 0:
        sys.exit("sizes differ: %d and %d values" % (x.size, y.size))
    d = float(np.max(np.abs(x.astype(np.float64) - y)))
    print("%d rows, max |diff| %.3g" % (x.size // int(cols), d))
    if not d <= float(tol):
        sys.exit("max |diff| %.3g is above %s" % (d, tol))

def classes(logits, cols, got):
    """The class output is the first arg-max of each row of logits."""
    want = np.fromfile(logits, "<f4").reshape(-1, int(cols)).argmax(axis=1)
    have = np.array([int(v) for v in open(got).read().split()])
    if not np.array_equal(want, have):
        sys.exit("class %s, want %s" % (have[:10], want[:10]))

def infer(port, inputs, cols, out):
    """The model server's logits over HTTP (Open Inference Protocol v2)."""
    import urllib.request
    x = np.fromfile(inputs, "<f4")
    n = x.size // int(cols)
    body = {"inputs": [{"name": "input", "shape": [n, int(cols)], "datatype": "FP32",
                        "data": [float(v) for v in x]}]}
    req = urllib.request.Request("http://127.0.0.1:%s/v2/models/m/infer" % port,
                                 json.dumps(body).encode(), {"Content-Type": "application/json"})
    r = json.load(urllib.request.urlopen(req, timeout=30))
    logits = [o for o in r["outputs"] if o["name"] == "logits"][0]
    np.asarray(logits["data"], "<f4").tofile(out)

def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])

globals()[sys.argv[1]](*sys.argv[2:])
EOF

# ort.js: ONNX Runtime's side.  Prints the session's input and output
# names, writes the logits (float32) and the classes (one a line).
cat >ort.js <<'EOF'
const ort = require("onnxruntime-node");
const fs = require("fs");
const [model, inputs, cols, logitsOut, classOut] = process.argv.slice(2);
(async () => {
	const x = new Float32Array(new Uint8Array(fs.readFileSync(inputs)).buffer);
	const f = Number(cols);
	const session = await ort.InferenceSession.create(model);
	console.log(session.inputNames.join(",") + " -> " + session.outputNames.join(","));
	const r = await session.run({ input: new ort.Tensor("float32", x, [x.length / f, f]) });
	const l = r.logits.data;
	fs.writeFileSync(logitsOut, Buffer.from(l.buffer, l.byteOffset, l.byteLength));
	fs.writeFileSync(classOut, Array.from(r.class.data, String).join("\n") + "\n");
})().catch((e) => { console.error(e.message); process.exit(1); });
EOF

# Three models: Fashion-MNIST with one hidden layer, and two on a CSV of 8
# features: no hidden layer (a lone Gemm) and two hidden layers.
fashion=/usr/share/datasets/fashion-mnist
awk 'BEGIN { s = 1; print "label,f0,f1,f2,f3,f4,f5,f6,f7"
	for (i = 0; i < 300; i++) { line = i % 3
		for (j = 0; j < 8; j++) { s = (s * 16807) % 2147483647
			line = line "," sprintf("%.4f", (j == i % 3) + (s / 2147483647 - 0.5)) }
		print line } }' >train.csv
models="flat deep"
run_train --data train.csv --layers 8,3 --epochs 2 --out flat.bin
[ "$rc" = 0 ] || not_ok "train a model without hidden layers" "$err"
run_train --data train.csv --layers 8,16,12,3 --epochs 2 --out deep.bin
[ "$rc" = 0 ] || not_ok "train a model with two hidden layers" "$err"
if [ -f "$fashion/t10k-images-idx3-ubyte.gz" ]; then
	run_train --data "$fashion" --layers 784,32,10 --steps 100 --epochs 1 --out fm.bin
	[ "$rc" = 0 ] || not_ok "train a Fashion-MNIST model" "$err"
	models="fm $models"
else
	echo "# no $fashion (Debian dataset-fashion-mnist): CSV models only"
fi

for m in $models; do
	run_train export --onnx $m.bin $m.onnx
	if [ "$rc" = 0 ] && [ -s $m.onnx ] && [ -z "$err" ] &&
		printf '%s' "$out" | grep -q "^wrote $m.onnx (ONNX IR 8, opset 13, sha256 [0-9a-f]\{64\})$"; then
		ok "$m: export --onnx writes the file and says so"
	else
		not_ok "$m: export --onnx writes the file and says so" "rc $rc" "out: $out" "err: $err"
	fi
	sha=$(sha256sum $m.bin | cut -d' ' -f1)
	if [ $have_py = no ]; then
		skip_or_fail "$m: the ONNX checker accepts it, with opset 13 and the documented names" \
			"python3-onnx or python3-numpy is missing"
		continue
	fi
	if r=$("$python" check.py check $m.onnx $m.bin "$sha" 2>&1); then
		ok "$m: the ONNX checker accepts it, with opset 13 and the documented names"
	else
		not_ok "$m: the ONNX checker accepts it, with opset 13 and the documented names" "$r"
	fi
	cols=$(case $m in fm) echo 10 ;; *) echo 3 ;; esac)
	if [ $m = fm ]; then
		"$python" check.py prep $m.bin 200 $m.in $m.ref "$fashion/t10k-images-idx3-ubyte.gz"
	else
		"$python" check.py prep $m.bin 50 $m.in $m.ref
	fi
	if [ $have_ort = no ]; then
		skip_or_fail "$m: ONNX Runtime's logits equal numpy's within 1e-5" \
			"onnxruntime-node is not in $npm_prefix (scripts/install-deps --with-test-peers)"
		continue
	fi
	feats=$(case $m in fm) echo 784 ;; *) echo 8 ;; esac)
	if names=$(node ort.js $m.onnx $m.in $feats $m.ort $m.class 2>&1) &&
		r=$("$python" check.py compare $m.ort $m.ref $cols 1e-5 2>&1); then
		ok "$m: ONNX Runtime's logits equal numpy's within 1e-5 ($r)"
	else
		not_ok "$m: ONNX Runtime's logits equal numpy's within 1e-5" "$names" "${r:-}"
	fi
	expect_eq "$m: ONNX Runtime sees input -> logits,class" "input -> logits,class" "$names"
	if r=$("$python" check.py classes $m.ort $cols $m.class 2>&1); then
		ok "$m: the class output is the arg-max of the logits"
	else
		not_ok "$m: the class output is the arg-max of the logits" "$r"
	fi
done

# The model server, when there is one: same rows (200, one request), same logits.
if [ -n "${MLPIPE_MODEL_SERVER:-}" ] && [ -x "$MLPIPE_MODEL_SERVER" ] && [ -f fm.ort ]; then
	port=$("$python" check.py free_port)
	"$MLPIPE_MODEL_SERVER" --model "file://$T/fm.bin" --sha256 "$(sha256sum fm.bin | cut -d' ' -f1)" \
		--listen "127.0.0.1:$port" --name m --max-batch 256 >server.log 2>&1 &
	server=$!
	i=0
	until curl -sf -o /dev/null "http://127.0.0.1:$port/v2/health/ready"; do
		i=$((i + 1))
		if [ $i -ge 600 ] || ! kill -0 $server 2>/dev/null; then break; fi
		sleep 0.05
	done
	if r=$("$python" check.py infer "$port" fm.in 784 fm.server 2>&1) &&
		r=$("$python" check.py compare fm.server fm.ort 10 1e-5 2>&1); then
		ok "mlpipe-model-server's logits equal ONNX Runtime's within 1e-5 ($r)"
	else
		not_ok "mlpipe-model-server's logits equal ONNX Runtime's within 1e-5" "$r" \
			"$(tail -5 server.log)"
	fi
	kill -TERM $server 2>/dev/null || true
	wait $server 2>/dev/null || true
	server=
else
	echo "# MLPIPE_MODEL_SERVER is not set: logits compared with numpy and ONNX Runtime only"
fi

# Bad input: one line naming the file, non-zero, nothing written.
run_train export --onnx missing.bin out.onnx
expect_fail "a missing model file" 2 "missing.bin: No such file" out.onnx
printf 'not a model at all\n' >junk.bin
run_train export --onnx junk.bin out.onnx
expect_fail "a file that is not a model" 2 "junk.bin: not an mlpipe model file" out.onnx
head -c 100 flat.bin >cut.bin
run_train export --onnx cut.bin out.onnx
expect_fail "a truncated model" 2 "cut.bin: truncated" out.onnx
: >file
run_train export --onnx flat.bin file/out.onnx
expect_fail "an output directory that is a file" 1 "file/out.onnx: not written" file/out.onnx
mkdir ro
chmod 555 ro
if [ "$(id -u)" != 0 ]; then
	run_train export --onnx flat.bin ro/out.onnx
elif command -v setpriv >/dev/null && chmod 755 "$T" && chmod 644 flat.bin &&
	setpriv --reuid=65534 --regid=65534 --clear-groups "$MLPIPE_TRAIN" --version >/dev/null 2>&1; then
	# root writes anywhere: run this one as nobody.
	set +e
	setpriv --reuid=65534 --regid=65534 --clear-groups \
		"$MLPIPE_TRAIN" export --onnx flat.bin ro/out.onnx >.out 2>.err
	rc=$?
	set -e
	err=$(cat .err)
else
	rc=skip
fi
if [ "$rc" = skip ]; then
	ok "an output directory that is not writable # SKIP root, and nobody cannot run $MLPIPE_TRAIN"
else
	expect_fail "an output directory that is not writable" 1 "ro/out.onnx: not written .*Permission denied" ro/out.onnx
	leftover=$(ls -A ro)
	expect_eq "no temporary file is left behind" "" "$leftover"
fi
cp flat.onnx keep.onnx
run_train export --onnx junk.bin keep.onnx
if [ "$rc" = 2 ] && cmp -s flat.onnx keep.onnx; then
	ok "a failed export leaves an existing output file as it was"
else
	not_ok "a failed export leaves an existing output file as it was" "rc $rc" "$err"
fi
run_train export --onnx flat.bin flat.bin
if [ "$rc" = 2 ] && printf '%s' "$err" | grep -q "flat.bin: is the model file itself" &&
	run_train export --onnx flat.bin again.onnx && [ "$rc" = 0 ]; then
	ok "export refuses to write over its own model file"
else
	not_ok "export refuses to write over its own model file" "rc $rc" "$err"
fi

# Usage errors: exit 2, one line.
run_train export flat.bin x.onnx
expect_fail "export without --onnx" 2 "export needs a format: --onnx" x.onnx
run_train export --onnx flat.bin
expect_fail "export with one file" 2 "takes a model file and an output file" x.onnx
run_train export --onnx flat.bin x.onnx extra
expect_fail "export with three files" 2 "takes a model file and an output file" x.onnx
run_train export --onnx --frobnicate flat.bin x.onnx
expect_fail "export with an unknown option" 2 "unknown option '--frobnicate'" x.onnx
run_train --help
expect_match "--help shows the export command" "mlpipe-train export --onnx MODEL OUT.onnx" "$out"

finish
