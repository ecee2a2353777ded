#!/bin/sh
# Functional tests of mlpipe-model-server against a model that
# mlpipe-train trains on Fashion-MNIST: accuracy through the HTTP API
# equals `mlpipe-train evaluate`'s, every bad input is a 4xx with an
# "error" and the server goes on, concurrent clients get batched answers
# identical to one-by-one ones, a digest mismatch or an unreachable URI
# keeps it not ready, http and https (verified with --ca-file) loading
# sends the bearer token, SIGTERM during load loses no accepted request,
# /metrics has every metric, and bad flags are one line and exit 2.
. "$(dirname "$0")/lib.sh"
: "${MLPIPE_TRAIN:?MLPIPE_TRAIN must name the mlpipe-train binary (run through make check)}"
: "${MLPIPE_MODEL_SERVER:?MLPIPE_MODEL_SERVER must name the mlpipe-model-server binary}"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
unset MODEL_URI MODEL_SHA256 MODEL_NAME MODEL_VERSION LISTEN MODEL_TOKEN_FILE MODEL_CA_FILE
DATA=${MLPIPE_TEST_FASHION:-/usr/share/datasets/fashion-mnist}
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
CLIENT="$MLPIPE_TEST_SRCDIR/functional/model-server-client.py"
if [ ! -f "$DATA/t10k-images-idx3-ubyte.gz" ] && [ ! -f "$DATA/t10k-images-idx3-ubyte" ]; then
	echo "1..0 # SKIP no Fashion-MNIST in $DATA"
	exit 0
fi
pids=
trap 'for p in $pids; do kill "$p" 2>/dev/null || true; done; rm -rf "$T"' EXIT

# start_server LOG ARGS...: starts the server on a free loopback port;
# $pid and $port name it.
start_server() {
	log=$1
	shift
	"$MLPIPE_MODEL_SERVER" --listen 127.0.0.1:0 "$@" 2>"$log" &
	pid=$!
	pids="$pids $pid"
	port=
	i=0
	while [ $i -lt 100 ] && [ -z "$port" ]; do
		port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$log")
		[ -n "$port" ] || sleep 0.1
		i=$((i + 1))
	done
	[ -n "$port" ] || { echo "# the server did not start:"; sed 's/^/#   /' "$log"; exit 1; }
}
# wait_log LOG REGEX: waits (bounded) until a line of LOG matches.
wait_log() {
	i=0
	while [ $i -lt 150 ] && ! grep -Eq -- "$2" "$1"; do sleep 0.1; i=$((i + 1)); done
}
# http METHOD PATH [BODY_FILE]: $code and $body of one request to $port.
http() {
	if [ $# -ge 3 ]; then
		code=$(curl -s -o "$T/.body" -w '%{http_code}' -X "$1" -H 'Content-Type: application/json' \
			--data-binary @"$3" "http://127.0.0.1:$port$2") || true
	else
		code=$(curl -s -o "$T/.body" -w '%{http_code}' -X "$1" "http://127.0.0.1:$port$2") || true
	fi
	body=$(cat "$T/.body")
}
stop_server() { # PID: SIGTERM and wait; $stop_rc
	kill -TERM "$1" 2>/dev/null || true
	set +e
	wait "$1"
	stop_rc=$?
	set -e
}

"$MLPIPE_TRAIN" train --data "$DATA" --layers 784,32,10 --epochs 1 --steps 400 \
	--out "$T/model.bin" >"$T/train.log" 2>&1 || { cat "$T/train.log"; exit 1; }
sha=$(sha256sum "$T/model.bin" | cut -d' ' -f1)
evaluated=$("$MLPIPE_TRAIN" evaluate "$T/model.bin" --data "$DATA" --device cpu |
	sed -n 's/^accuracy \([0-9.]*\) .*/\1/p')

# --- 1. accuracy through HTTP equals mlpipe-train evaluate's ------------------
start_server "$T/main.log" --model "file://$T/model.bin" --sha256 "$sha" --name fashion \
	--max-batch 500 --max-body-bytes 8000000
main=$pid main_port=$port
wait_log "$T/main.log" "ready"
http GET /v2/health/ready
expect_eq "a verified model is ready" "200 {\"ready\":true}" "$code $body"
expect_match "the ready line names the model, sha256 and shape" \
	"model fashion version 1 ready \(sha256 $sha, 784-32-10\)" "$(cat "$T/main.log")"
http GET /v2/models/fashion
expect_eq "metadata" '{"name":"fashion","versions":["1"],"platform":"mlpipe_mlp","inputs":[{"name":"input","datatype":"FP32","shape":[-1,784]}],"outputs":[{"name":"logits","datatype":"FP32","shape":[-1,10]},{"name":"class","datatype":"INT64","shape":[-1]}]}' "$body"
correct=$("$PY" "$CLIENT" accuracy "$port" fashion "$DATA" 500)
served=$(echo "$correct" | awk '{ printf "%.4f", $2 / $4 }')
expect_eq "accuracy over HTTP (10000 images, batches of 500) equals evaluate's" \
	"$evaluated" "$served"

# --- 2. bad input: the right status, an "error", and the server goes on -------
row=$("$PY" -c 'print(",".join(["0.5"] * 784))')
printf '{"inputs":' >"$T/b-json"
printf '[1,2]' >"$T/b-array"
printf '{}' >"$T/b-noinput"
printf '{"inputs":[{"name":"pixels","datatype":"FP32","shape":[1,784],"data":[%s]}]}' "$row" >"$T/b-name"
printf '{"inputs":[{"name":"input","datatype":"INT32","shape":[1,784],"data":[%s]}]}' "$row" >"$T/b-type"
printf '{"inputs":[{"name":"input","datatype":"FP32","shape":[1,783],"data":[%s]}]}' "$row" >"$T/b-shape"
printf '{"inputs":[{"name":"input","datatype":"FP32","shape":[2,784],"data":[%s]}]}' "$row" >"$T/b-len"
printf '{"inputs":[{"name":"input","datatype":"FP32","shape":[1,784],"data":["a",%s]}]}' "${row#0.5,}" >"$T/b-str"
printf '{"inputs":[{"name":"input","datatype":"FP32","shape":[1,784],"data":["NaN",%s]}]}' "${row#0.5,}" >"$T/b-nan"
printf '{"inputs":[{"name":"input","datatype":"FP32","shape":[1,784],"data":[1e999,%s]}]}' "${row#0.5,}" >"$T/b-inf"
printf '{"inputs":[{"name":"input","datatype":"FP32","shape":[0,784],"data":[]}]}' >"$T/b-zero"
printf '{"inputs":[{"name":"input","datatype":"FP32","shape":[501,784],"data":[]}]}' >"$T/b-over"
printf '{"inputs":[{"name":"input","datatype":"FP32","shape":[1,784],"data":[%s]}],"outputs":[{"name":"probs"}]}' "$row" >"$T/b-out"
printf '{"id":7,"inputs":[{"name":"input","datatype":"FP32","shape":[1,784],"data":[%s]}]}' "$row" >"$T/b-id"
printf '{"id":"r1","inputs":[{"name":"input","datatype":"FP32","shape":[784],"data":[%s]}],"outputs":[{"name":"class"}]}' "$row" >"$T/good"
head -c 9000000 /dev/zero | tr '\0' ' ' >"$T/b-big"
for c in "400 b-json not JSON" "400 b-array not an object" "400 b-noinput no inputs" \
	"400 b-name a wrong input name" "400 b-type datatype INT32" "400 b-shape 783 features" \
	"400 b-len data shorter than the shape" "400 b-str a string in data" \
	"400 b-nan a \"NaN\" string" "400 b-inf an infinite number" "400 b-zero zero rows" \
	"400 b-over more rows than --max-batch" "400 b-out an unknown output" \
	"400 b-id a numeric id" "413 b-big a body over --max-body-bytes"; do
	set -- $c
	want=$1 file=$2
	shift 2
	http POST /v2/models/fashion/infer "$T/$file"
	expect_match "infer with $*: $want and an error" "^$want \{\"error\":\".+\"\}" "$code $body"
done
http POST /v2/models/other/infer "$T/good"
expect_match "an unknown model: 404" '^404 \{"error":"unknown model other"\}' "$code $body"
http POST /v2/models/fashion/versions/2/infer "$T/good"
expect_match "an unknown version: 404" '^404 \{"error":"unknown model fashion version 2"\}' "$code $body"
http GET /v2/models/fashion/infer
expect_match "GET on infer: 405" '^405 \{"error":' "$code $body"
http POST /v2/health/live "$T/good"
expect_match "POST on live: 405" '^405 \{"error":' "$code $body"
http GET /v3/anything
expect_match "an unknown path: 404" '^404 \{"error":' "$code $body"
http POST /v2/models/fashion/versions/1/infer "$T/good"
expect_match "after all that it still answers, with the id and only the class" \
	'^200 \{"id":"r1","model_name":"fashion","model_version":"1","outputs":\[\{"name":"class","datatype":"INT64","shape":\[1\],"data":\[[0-9]\]\}\]\}$' \
	"$code $body"

# --- 3. concurrent clients: batched answers equal one-by-one answers ---------
start_server "$T/batch.log" --model "$T/model.bin" --name fashion --batch-delay-us 20000
batch=$pid
wait_log "$T/batch.log" "ready"
got=$("$PY" "$CLIENT" concurrent "$port" fashion "$DATA" 16 50)
expect_eq "16 clients x 50 requests: every answer equals the one-by-one answer" \
	"same 800 differ 0 errors 0" "$got"
curl -s "http://127.0.0.1:$port/metrics" >"$T/batch.metrics"
ones=$(sed -n 's/^mlpipe_model_infer_batch_size_bucket{model="fashion",le="1"} //p' "$T/batch.metrics")
all=$(sed -n 's/^mlpipe_model_infer_batch_size_count{model="fashion"} //p' "$T/batch.metrics")
if [ -n "$ones" ] && [ -n "$all" ] && [ "$ones" -lt "$all" ]; then
	ok "requests were merged: $((all - ones)) of $all forward passes had more than one row"
else
	not_ok "requests were merged" "le=1: $ones, count: $all"
fi
stop_server "$batch"

# --- 4. a digest mismatch or an unreachable URI: not ready, live ------------
start_server "$T/bad.log" --model "file://$T/model.bin" --name fashion \
	--sha256 0000000000000000000000000000000000000000000000000000000000000000
bad=$pid
wait_log "$T/bad.log" "mismatch"
expect_eq "a digest mismatch is one log line naming both digests" \
	"mlpipe-model-server: model file://$T/model.bin: sha256 mismatch (expected 0000000000000000000000000000000000000000000000000000000000000000, got $sha)" \
	"$(grep -v 'listening on' "$T/bad.log")"
http GET /v2/health/ready
expect_eq "... and the server is not ready" "503 {\"ready\":false}" "$code $body"
http GET /v2/models/fashion/ready
expect_eq "... nor is the model" "503 {\"name\":\"fashion\",\"ready\":false}" "$code $body"
http GET /v2/health/live
expect_eq "... but live" "200 {\"live\":true}" "$code $body"
http POST /v2/models/fashion/infer "$T/good"
expect_eq "... and infer is 503" "503 {\"error\":\"model fashion is not ready\"}" "$code $body"
expect_match "... counted as a load failure" "^mlpipe_model_load_failures_total 1$" \
	"$(curl -s "http://127.0.0.1:$port/metrics")"
stop_server "$bad"
closed=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
start_server "$T/unreach.log" --model "http://127.0.0.1:$closed/model.bin" --sha256 "$sha"
unreach=$pid
wait_log "$T/unreach.log" "will retry"
expect_match "an unreachable URI is logged and retried" \
	"model http://127.0.0.1:$closed/model.bin: .*(refused|connect).*\(will retry\)" "$(cat "$T/unreach.log")"
http GET /v2/health/ready
expect_eq "... and the server is not ready" "503" "$code"
stop_server "$unreach"
expect_eq "a server that never got ready stops with 0" "0" "$stop_rc"

# --- 5. http(s) loading with the token file ----------------------------------
printf 'artifact-token-1\n' >"$T/token"
printf 'wrong\n' >"$T/wrong-token"
"$PY" "$CLIENT" artifact artifact-token-1 "$T/model.bin" "$T/artifact.port" 2>"$T/artifact.log" &
pids="$pids $!"
i=0
while [ $i -lt 100 ] && [ ! -f "$T/artifact.port" ]; do sleep 0.1; i=$((i + 1)); done
aport=$(cat "$T/artifact.port")
uri="http://127.0.0.1:$aport/api/v1/models/fashion/versions/1/artifact"
start_server "$T/http.log" --model "$uri" --sha256 "$sha" --token-file "$T/token" --name fashion
fetched=$pid
wait_log "$T/http.log" "ready|status"
http GET /v2/health/ready
expect_eq "a model fetched over http with the bearer token is ready" "200" "$code"
http POST /v2/models/fashion/infer "$T/good"
fetched_answer=$body
port=$main_port
http POST /v2/models/fashion/infer "$T/good"
expect_eq "... and answers as the file's" "$body" "$fetched_answer"
stop_server "$fetched"
start_server "$T/http401.log" --model "$uri" --sha256 "$sha" --token-file "$T/wrong-token"
denied=$pid
wait_log "$T/http401.log" "status"
expect_match "a refused token is one line, not retried" \
	"model $uri: HTTP status 401 \(check --token-file\)$" "$(cat "$T/http401.log")"
http GET /v2/health/ready
expect_eq "... and not ready" "503" "$code"
stop_server "$denied"
# https: verified against --ca-file; without it the certificate is refused.
(
	cd "$T"
	openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 \
		-subj /CN=model-server-test-ca
	openssl req -newkey rsa:2048 -nodes -keyout srv.key -out srv.csr -subj /CN=127.0.0.1
	printf 'subjectAltName=IP:127.0.0.1\n' >srv.ext
	openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem \
		-days 2 -extfile srv.ext
) >"$T/openssl.log" 2>&1 || { cat "$T/openssl.log"; exit 1; }
"$PY" "$CLIENT" artifact artifact-token-1 "$T/model.bin" "$T/tls.port" "$T/srv.pem" \
	"$T/srv.key" 2>"$T/tls-artifact.log" &
pids="$pids $!"
i=0
while [ $i -lt 100 ] && [ ! -f "$T/tls.port" ]; do sleep 0.1; i=$((i + 1)); done
turi="https://127.0.0.1:$(cat "$T/tls.port")/api/v1/models/fashion/versions/1/artifact"
start_server "$T/https.log" --model "$turi" --sha256 "$sha" --token-file "$T/token" \
	--ca-file "$T/ca.pem" --name fashion
tls=$pid
wait_log "$T/https.log" "ready|retry"
http GET /v2/health/ready
expect_eq "a model fetched over https, verified with --ca-file, is ready" "200" "$code"
stop_server "$tls"
start_server "$T/https-untrusted.log" --model "$turi" --sha256 "$sha" --token-file "$T/token"
untrusted=$pid
wait_log "$T/https-untrusted.log" "retry"
expect_match "without the CA the certificate is refused" \
	"model $turi: .*certificate.*\(will retry\)" "$(cat "$T/https-untrusted.log")"
http GET /v2/health/ready
expect_eq "... and the server is not ready" "503" "$code"
stop_server "$untrusted"

# --- 6. SIGTERM during load: every accepted request is answered --------------
start_server "$T/term.log" --model "$T/model.bin" --name fashion
term=$pid
wait_log "$T/term.log" "ready"
"$PY" "$CLIENT" load "$port" fashion "$DATA" 8 "$T/started" 20 >"$T/load.out" &
load=$!
i=0
while [ $i -lt 200 ] && [ ! -f "$T/started" ]; do sleep 0.05; i=$((i + 1)); done
started=$(date +%s)
stop_server "$term"
stopped=$(date +%s)
wait "$load" || true
expect_eq "SIGTERM under load: exit 0" "0" "$stop_rc"
expect_match "... within the bound" "^[0-9]$" "$((stopped - started))"
# A connection the kernel completes in the instant between the server's
# last accept and the listener's close is reset unread ("reset"); the
# server's own count says whether any request it read went unanswered.
expect_match "... no request lost, the rest refused (or reset unread)" \
	"^ok [0-9]+ refused [0-9]+ reset [0-9]+ lost 0$" "$(cat "$T/load.out")"
set -- $(cat "$T/load.out")
expect_eq "... the clients were still sending when it stopped" yes \
	"$([ $(($4 + $6)) -gt 0 ] && echo yes || echo "no: $*")"
expect_match "... and the server answered every request it read" \
	"stopped: every request it read was answered" "$(cat "$T/term.log")"
expect_match "... and said so in order" "SIGTERM: not ready; finishing the requests in flight" \
	"$(cat "$T/term.log")"

# --- 7. metrics --------------------------------------------------------------
port=$main_port
metrics=$(curl -s "http://127.0.0.1:$port/metrics")
for m in 'mlpipe_model_infer_requests_total\{model="fashion"\} [1-9][0-9]*' \
	'mlpipe_model_infer_errors_total\{model="fashion",code="400"\} 1[0-9]' \
	'mlpipe_model_infer_errors_total\{model="fashion",code="413"\} 1' \
	'mlpipe_model_infer_errors_total\{model="fashion",code="404"\} 2' \
	'mlpipe_model_infer_request_duration_seconds_bucket\{model="fashion",le="5e-05"\} [0-9]+' \
	'mlpipe_model_infer_request_duration_seconds_count\{model="fashion"\} [1-9][0-9]*' \
	'mlpipe_model_infer_batch_size_bucket\{model="fashion",le="500"\} [1-9][0-9]+' \
	"mlpipe_model_info\\{model=\"fashion\",version=\"1\",sha256=\"$sha\"\\} 1" \
	'mlpipe_model_ready 1' 'mlpipe_model_load_failures_total 0' \
	'process_start_time_seconds 1[0-9]{9}\.[0-9]+' \
	'# TYPE mlpipe_model_infer_request_duration_seconds histogram'; do
	expect_match "metrics: $m" "^$m$" "$metrics"
done
http GET /metrics
expect_eq "metrics are text format 0.0.4" "text/plain; version=0.0.4; charset=utf-8" \
	"$(curl -s -o /dev/null -w '%{content_type}' "http://127.0.0.1:$port/metrics")"
stop_server "$main"
expect_eq "an idle server stops with 0" "0" "$stop_rc"

# --- 8. bad flags: one line, exit 2 ------------------------------------------
for c in "required|" "not 64 hex|--model $T/model.bin --sha256 abc" \
	"required for a model fetched over http|--model http://127.0.0.1:1/m" \
	"is not a path, file:///PATH|--model ftp://host/model.bin" "from 1 to 65536|--model $T/model.bin --max-batch 0" \
	"HOST:PORT|--model $T/model.bin --listen 8080" \
	"not a port|--model $T/model.bin --listen 127.0.0.1:99999" \
	"unknown option '--bogus'|--model $T/model.bin --bogus" \
	"cannot read|--model $T/model.bin --token-file $T/none"; do
	want=${c%%|*}
	args=${c#*|}
	set +e
	# shellcheck disable=SC2086
	"$MLPIPE_MODEL_SERVER" $args >"$T/.out" 2>"$T/.err"
	rc=$?
	set -e
	err=$(cat "$T/.err")
	if [ "$rc" = 2 ] && [ "$(wc -l <"$T/.err")" -eq 1 ] &&
		printf '%s' "$err" | grep -Eq -- "^mlpipe-model-server: .*$want"; then
		ok "bad flags ($args): exit 2 with one line"
	else
		not_ok "bad flags ($args): exit 2 with one line" "rc $rc" "stderr: $err"
	fi
done
# --- a relative path is taken from the directory it starts in --------------
(cd "$T" && exec "$MLPIPE_MODEL_SERVER" --listen 127.0.0.1:0 --model model.bin --name fashion) \
	2>"$T/relative.log" &
pid=$!
pids="$pids $pid"
wait_log "$T/relative.log" "ready \\(sha256"
expect_match "--model model.bin (relative) loads $T/model.bin" "ready \(sha256 $sha" "$(cat "$T/relative.log")"
stop_server "$pid"

# --- 9. no privileges needed: as uid 65532 (the container's user) -----------
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
	chmod 755 "$T"
	chmod 644 "$T/model.bin"
	setpriv --reuid 65532 --regid 65532 --clear-groups --inh-caps=-all \
		"$MLPIPE_MODEL_SERVER" --listen 127.0.0.1:0 --model "$T/model.bin" --sha256 "$sha" \
		--name fashion 2>"$T/nonroot.log" &
	pid=$!
	pids="$pids $pid"
	wait_log "$T/nonroot.log" "ready \\(sha256"
	port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$T/nonroot.log")
	http GET /v2/health/ready
	expect_eq "as an unprivileged user (uid 65532, no capabilities) it loads and is ready" 200 "$code"
	expect_eq "... running as that user" 65532 "$(stat -c %u /proc/$pid 2>/dev/null)"
	stop_server "$pid"
	expect_eq "... and stops cleanly" 0 "$stop_rc"
else
	ok "# SKIP the unprivileged run needs root and setpriv"
fi
MODEL_URI="$T/model.bin" MODEL_NAME=env-name "$MLPIPE_MODEL_SERVER" --help >"$T/help"
expect_match "--help lists the environment variables" "MODEL_URI" "$(cat "$T/help")"
# Under ASan/UBSan (make check in an --enable-asan build) a report would be
# in a server's log.
reports=$(grep -lE 'Sanitizer|runtime error' "$T"/*.log 2>/dev/null || true)
expect_eq "no sanitizer report in any server's log" "" "$reports"
finish
