#!/bin/sh
# Functional tests of mlpipe-pod's results server (docs/mlpipe-pod.md,
# "Results"), driven with curl the way the executor drives it through the
# API server's pods/proxy: /status running -> done with each result's size
# and SHA-256, long polls, /files/NAME streaming the bytes, the refusals,
# a silent client blocking nothing, POST /done ending the pod with the
# training's exit code, the serve timeout, and a failure ending it at once.
. "$(dirname "$0")/lib.sh"
: "${MLPIPE_POD:?MLPIPE_POD must name the mlpipe-pod binary (run through make check)}"
unset PET_NNODES PET_NODE_RANK PET_NPROC_PER_NODE PET_MASTER_ADDR PET_MASTER_PORT \
	TORCHELASTIC_RUN_ID MLPIPE_RUN_ID RANK WORLD_SIZE MASTER_ADDR MASTER_PORT
if ! command -v curl >/dev/null; then
	echo "1..0 # SKIP no curl"
	exit 0
fi
mkdir -p "$T/p"
cd "$T/p"
TL="$T/p/termination-log"
port=$((20000 + ($$ + 23) % 20000))
url="http://127.0.0.1:$port"

# The ranks wait for the file "go" (at most 30 s), then rank 0 writes the
# results; a rank exits $JOB_EXIT (rank 1) when set.
cat >job.sh <<'S'
i=0
while [ ! -e go ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i + 1)); done
if [ "$RANK" = 0 ]; then
	head -c 3000000 /dev/urandom >model.bin
	echo '{"accuracy": 0.93}' >metrics.json
fi
[ "$RANK" = 1 ] && exit "${JOB_EXIT:-0}"
exit 0
S
# start_pod ARGS...: mlpipe-pod run with 2 ranks of job.sh in the
# background ($pod), once its server answers.
start_pod() {
	rm -f go model.bin metrics.json "$TL"
	"$MLPIPE_POD" run --nproc-per-node 2 --results-port "$port" --termination-log "$TL" \
		"$@" -- sh job.sh >pod.out 2>pod.err &
	pod=$!
	i=0
	while ! curl -s -o /dev/null "$url/status" && [ $i -lt 500 ]; do sleep 0.02; i=$((i + 1)); done
}
# stop_pod: the pod's exit code in $rc (it must end within 20 s).
stop_pod() {
	i=0
	while kill -0 "$pod" 2>/dev/null && [ $i -lt 2000 ]; do sleep 0.01; i=$((i + 1)); done
	kill -KILL "$pod" 2>/dev/null || true
	set +e
	wait "$pod"
	rc=$?
	set -e
}
# http ARGS...: curl; the status code in $code, the body in $body.
http() {
	code=$(curl -s -o "$T/.body" -w '%{http_code}' "$@" || true)
	body=$(cat "$T/.body" 2>/dev/null || true)
}
ms() { date +%s%3N; }

# --- a successful run ------------------------------------------------------------
start_pod --result model=model.bin --result metrics=metrics.json --result absent=nope.bin \
	--serve-timeout 60s
http "$url/status"
expect_eq "/status says running while the ranks run" '200 {"state":"running"}' "$code $body"
http -X POST "$url/done"
expect_eq "POST /done while running is refused" 409 "$code"
http "$url/files/model"
expect_eq "no file is served while running" 404 "$code"
t0=$(ms)
http "$url/status?wait=1"
t1=$(ms)
expect_eq "a long poll that times out says running" '200 {"state":"running"}' "$code $body"
if [ $((t1 - t0)) -ge 900 ] && [ $((t1 - t0)) -lt 5000 ]; then ok "after its wait (1 s)"
else not_ok "a long poll waits its time" "$((t1 - t0)) ms"; fi

# A silent client holds a connection from now on: nothing may wait for it.
bash -c "exec 3<>/dev/tcp/127.0.0.1/$port; sleep 12" &
silent=$!
curl -s -o lp.json "$url/status?wait=30" &
lp=$!
sleep 0.3
t0=$(ms)
touch go
wait "$lp"
t1=$(ms)
sha_model=$(sha256sum model.bin | cut -d' ' -f1)
sha_metrics=$(sha256sum metrics.json | cut -d' ' -f1)
size_metrics=$(wc -c <metrics.json | tr -d ' ')
done_json="{\"state\":\"done\",\"exit_code\":0,\"reason\":\"\",\"files\":{\"model\":{\"size\":3000000,\"sha256\":\"$sha_model\"},\"metrics\":{\"size\":$size_metrics,\"sha256\":\"$sha_metrics\"}}}"
expect_eq "a long poll returns when the ranks end, with sizes and sha256 (a missing file left out)" \
	"$done_json" "$(cat lp.json)"
if [ $((t1 - t0)) -lt 10000 ]; then ok "promptly, despite a silent client"
else not_ok "the long poll returns promptly" "$((t1 - t0)) ms"; fi
t0=$(ms)
http "$url/status"
t1=$(ms)
expect_eq "/status says the same" "200 $done_json" "$code $body"
if [ $((t1 - t0)) -lt 2000 ]; then ok "and answers at once while a client stays silent"
else not_ok "a silent client blocks nobody" "$((t1 - t0)) ms"; fi
http -D headers.txt "$url/files/model"
expect_eq "/files/model is 200" 200 "$code"
if cmp -s "$T/.body" model.bin; then ok "with the model's bytes"; else not_ok "/files/model sends the model's bytes"; fi
expect_match "as application/octet-stream" "Content-Type: application/octet-stream" "$(cat headers.txt)"
expect_match "with its Content-Length" "Content-Length: 3000000" "$(cat headers.txt)"
http "$url/files/metrics"
expect_eq "/files/metrics too" "200 $(cat metrics.json)" "$code $body"
http "$url/files/absent"
expect_eq "a result whose file does not exist is 404" 404 "$code"
http "$url/files/nosuchname"
expect_eq "an unknown name is 404" 404 "$code"
http "$url/nope"
expect_eq "an unknown path is 404" 404 "$code"
http -X PUT "$url/status"
expect_eq "PUT /status is 405" 405 "$code"
http "$url/done"
expect_eq "GET /done is 405" 405 "$code"
http "$url/status?wait=soon"
expect_eq "a bad wait= is 400" 400 "$code"
big=$(awk 'BEGIN { for (i = 0; i < 9000; i++) printf "x" }')
http -H "X-Big: $big" "$url/status"
expect_eq "headers over 8 KiB are 400" 400 "$code"
expect_eq "none of that ended the pod" yes "$(kill -0 "$pod" 2>/dev/null && echo yes || echo no)"
http -X POST "$url/done"
expect_eq "POST /done says bye" "200 bye" "$code $body"
stop_pod
expect_eq "and the pod exits with the training's code" 0 "$rc"
expect_eq "after a success there is no termination log" no "$([ -e "$TL" ] && echo yes || echo no)"
expect_match "its log says it served" "^\[mlpipe-pod\] serving the results on port $port until POST /done \(at most 1m00s\)$" "$(cat pod.out)"
kill "$silent" 2>/dev/null || true
wait "$silent" 2>/dev/null || true

# --- no POST /done: the serve timeout ends it --------------------------------
# And an image's openssl.cnf that activates a provider the static libcrypto
# cannot load (only it, so not the default one) must not change a digest.
cat >bad-openssl.cnf <<'C'
openssl_conf = openssl_init
[openssl_init]
providers = provider_sect
[provider_sect]
fips = fips_sect
[fips_sect]
module = /nonexistent/fips.so
activate = 1
C
OPENSSL_CONF="$T/p/bad-openssl.cnf" start_pod --result model=model.bin --serve-timeout 1s
t0=$(ms)
touch go
status=$(curl -s "$url/status?wait=20")
stop_pod
t1=$(ms)
expect_eq "without POST /done the pod exits 0 after --serve-timeout" 0 "$rc"
if [ $((t1 - t0)) -ge 1000 ] && [ $((t1 - t0)) -lt 8000 ]; then ok "after about 1 s"
else not_ok "the serve timeout is kept" "$((t1 - t0)) ms"; fi
expect_match "the image's openssl.cnf is not read: the sha256 is right" \
	"\"model\":\{\"size\":3000000,\"sha256\":\"$(sha256sum model.bin | cut -d' ' -f1)\"\}" "$status"

# --- a failure: the verdict to long polls, then exit at once -----------------
JOB_EXIT=3 start_pod --result model=model.bin --serve-timeout 60s
curl -s -o lp.json "$url/status?wait=30" &
lp=$!
sleep 0.3
t0=$(ms)
touch go
stop_pod
t1=$(ms)
wait "$lp" || true
expect_eq "a failed rank's code is the pod's" 3 "$rc"
if [ $((t1 - t0)) -lt 8000 ]; then ok "and it does not wait to serve"
else not_ok "a failed pod exits at once" "$((t1 - t0)) ms"; fi
expect_match "a long poll gets the failure" \
	'^\{"state":"done","exit_code":3,"reason":"node 0: rank 1 \(pid [0-9]+\) failed: exit code 3","files":\{' \
	"$(cat lp.json)"
expect_match "as does the termination log" "^node 0: rank 1 \(pid [0-9]+\) failed: exit code 3$" "$(cat "$TL")"

# --- only node 0 serves ----------------------------------------------------------
PET_NNODES=2 PET_NODE_RANK=1 PET_MASTER_ADDR=127.0.0.1 PET_MASTER_PORT=$((port + 1)) \
	"$MLPIPE_POD" run --results-port "$port" --termination-log "$TL" -- \
	sh -c "curl -s -o /dev/null $url/status && echo served || echo refused" >pod.out 2>&1 || true
expect_eq "node 1 serves nothing" "[rank1] refused" "$(cat pod.out)"
# The port taken: a runtime failure, before any rank starts.
{ "$MLPIPE_POD" run --results-port "$port" --serve-timeout 5s --termination-log "$TL.a" -- sh -c 'sleep 2' >/dev/null 2>&1 & }
first=$!
i=0
while ! curl -s -o /dev/null "$url/status" && [ $i -lt 500 ]; do sleep 0.02; i=$((i + 1)); done
set +e
"$MLPIPE_POD" run --results-port "$port" --termination-log "$TL" -- sh -c 'echo ran' >pod.out 2>&1
rc=$?
set -e
kill "$first" 2>/dev/null || true
wait "$first" 2>/dev/null || true
expect_eq "a results port in use fails the pod: exit 1" 1 "$rc"
expect_match "saying so" "^node 0: cannot listen on port $port for the results server: Address already in use$" "$(cat "$TL")"
expect_eq "before any rank ran" "" "$(grep ran pod.out || true)"

finish
