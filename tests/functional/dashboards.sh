#!/bin/sh
# The Grafana dashboards of examples/grafana/ against a real Prometheus
# (Debian's prometheus package): a store with runs, stage attempts, gate
# decisions (passed and failed), model versions with metrics, a rollout
# and a rollback (made by mlpipe itself: `mlpipe run` of a gated pipeline,
# `mlpipe rollout` against tests/functional/deployment-apiserver.py) is
# served by `mlpipe serve`; mlpipe-model-server ($MLPIPE_MODEL_SERVER)
# serves a model under load with some bad requests; Prometheus scrapes
# both every second, and every panel's expression of both dashboards is
# evaluated through its HTTP API and must return a number
# (tests/functional/dashboards-check.py).  Also: the dashboards' JSON, the
# new /metrics series themselves, and the example prometheus.yml.
# Every wait is bounded; the servers are killed at exit.
. "$(dirname "$0")/lib.sh"

prometheus=$(command -v prometheus || echo /usr/bin/prometheus)
if [ ! -x "$prometheus" ]; then
	echo "1..0 # SKIP no prometheus (Debian's package; scripts/install-deps --with-test-peers)"
	exit 0
fi
command -v python3 >/dev/null && command -v curl >/dev/null || {
	echo "1..0 # SKIP needs python3 and curl"; exit 0; }
CHECK="$MLPIPE_TEST_SRCDIR/functional/dashboards-check.py"
APISERVER="$MLPIPE_TEST_SRCDIR/functional/deployment-apiserver.py"
GRAFANA="$MLPIPE_TEST_SRCDIR/../examples/grafana"
pids=
trap 'touch "$T/stop-load" "$T/k8s/stop" 2>/dev/null; for p in $pids; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$T"' EXIT

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# wait_http URL: until URL answers 200 (30 s at most).
wait_http() {
	i=0
	while [ $i -lt 300 ]; do
		[ "$(curl -s -o /dev/null -w '%{http_code}' "$1")" = 200 ] && return 0
		sleep 0.1; i=$((i + 1))
	done
	return 1
}

# --- the dashboards' JSON ------------------------------------------------------
for d in model-server mlpipe-serve; do
	expect_eq "$d.json is valid: schema 39, DS_PROMETHEUS, every panel titled with a datasource" \
		"" "$(python3 "$CHECK" lint "$GRAFANA/$d.json" 2>&1)"
done
expect_match "the model server dashboard's model variable comes from mlpipe_model_info" \
	'"query": "label_values\(mlpipe_model_info, model\)"' "$(cat "$GRAFANA/model-server.json")"

# --- a store with history: runs, gate decisions, versions, rollouts ----------------
mkdir -p "$T/p"
cd "$T/p"
cat > pipeline.yml <<'Y'
name: fashion
stages:
  train:
    run: |
      echo "weights for $ACC" > model.bin
      echo '{"train_loss": 0.2}' > "$MLPIPE_METRICS"
    model: { name: fashion, path: model.bin }
  evaluate:
    needs: [train]
    run: |
      printf '{"accuracy": %s, "loss": 0.3}\n' "$ACC" > "$MLPIPE_METRICS"
  gate:
    needs: [evaluate]
    gate:
      model: fashion
      metrics_from: evaluate
      require: { accuracy: ">= 0.85" }
Y
for acc in 0.90 0.92 0.50; do "$MLPIPE" run --var ACC=$acc pipeline.yml >/dev/null 2>&1 || true; done
expect_eq "three runs: two pass the gate, one fails it" "failed succeeded succeeded" \
	"$("$MLPIPE" runs --json | tr -d ' \t\n' | grep -o '"status":"[a-z]*"' | cut -d'"' -f4 | sort | tr '\n' ' ' | sed 's/ $//')"

python3 "$APISERVER" --dir "$T/k8s" --timeout 300 2>"$T/k8s.err" &
pids="$pids $!"
i=0
while [ ! -s "$T/k8s/port" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
cat > "$T/kubeconfig" <<K
apiVersion: v1
kind: Config
current-context: scripted
clusters:
- name: scripted
  cluster: {server: "http://127.0.0.1:$(cat "$T/k8s/port" 2>/dev/null)"}
contexts:
- name: scripted
  context: {cluster: scripted, user: mlpipe, namespace: ml}
users:
- name: mlpipe
  user: {token: scripted-token}
K
run_mlpipe rollout ml/model-service --image registry.local/model:1 --model fashion:1 \
	--kubeconfig "$T/kubeconfig" --timeout 30s
expect_eq "the rollout of version 1 completes" 0 "$rc"
run_mlpipe rollout ml/model-service --image registry.local/model:broken --model fashion:2 \
	--kubeconfig "$T/kubeconfig" --timeout 30s
expect_match "the rollout of a broken image is rolled back" "rollback complete" "$out $err"
touch "$T/k8s/stop"

# --- mlpipe serve's /metrics ----------------------------------------------------------
"$MLPIPE" serve --listen 127.0.0.1:0 --port-file "$T/serve.port" --poll-interval 0 \
	2>"$T/serve.log" &
serve_pid=$!
pids="$pids $serve_pid"
i=0
while [ ! -s "$T/serve.port" ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i + 1)); done
sport=$(cat "$T/serve.port" 2>/dev/null || echo 0)
m=$(curl -s "http://127.0.0.1:$sport/metrics")
expect_match "metrics: every version's metric, with its status" \
	'mlpipe_model_version_metric\{model="fashion",version="3",metric="accuracy",status="rejected"\} 0.5' "$m"
expect_match "metrics: ... the deployed one too" \
	'mlpipe_model_version_metric\{model="fashion",version="1",metric="accuracy",status="deployed"\} 0.9' "$m"
expect_match "metrics: a rollback is counted apart from rollouts" \
	'mlpipe_rollouts_total\{kind="rollback",result="complete"\} 1' "$m"
expect_match "metrics: ... and the rollout it undid is rolled_back" \
	'mlpipe_rollouts_total\{kind="rollout",result="rolled_back"\} 1' "$m"
expect_match "metrics: stage durations by stage kind" \
	'mlpipe_stage_duration_seconds_count\{kind="gate"\} 3' "$m"

# --- mlpipe-model-server, under load ----------------------------------------------
mport=
if [ -n "${MLPIPE_MODEL_SERVER:-}" ]; then
	# A 784-16-10 model in the format of docs/model-format.md.
	python3 - "$T/model.bin" <<'PY'
import struct, sys, zlib
sizes = [784, 16, 10]
p = sum(o * i + o for i, o in zip(sizes, sizes[1:]))
b = b"MLPM" + struct.pack("<II", 1, len(sizes)) + struct.pack("<%dI" % len(sizes), *sizes)
b += struct.pack("<Q", p) + struct.pack("<%df" % p, *[((k * 7919) % 101 - 50) / 500.0 for k in range(p)])
open(sys.argv[1], "wb").write(b + struct.pack("<I", zlib.crc32(b)))
PY
	mport=$(free_port)
	"$MLPIPE_MODEL_SERVER" --listen "127.0.0.1:$mport" --model "file://$T/model.bin" \
		--name fashion --version 1 2>"$T/model-server.log" &
	pids="$pids $!"
	if wait_http "http://127.0.0.1:$mport/v2/health/ready"; then ok "the model server is ready"
	else not_ok "the model server is ready" "$(tail -5 "$T/model-server.log")"; fi
	python3 -c 'import json; print(json.dumps({"inputs": [{"name": "input", "shape": [1, 784],
		"datatype": "FP32", "data": [0.5] * 784}]}))' > "$T/good.json"
	echo '{"inputs":[{"name":"input","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}' \
		> "$T/bad.json"
	# Requests until the checks are done (or 3 minutes): the rates need
	# traffic between scrapes.  Every fifth is malformed (an error by code).
	(
		n=0
		while [ ! -e "$T/stop-load" ] && [ $n -lt 1800 ]; do
			body=good
			[ $((n % 5)) -eq 4 ] && body=bad
			curl -s -o /dev/null -X POST -H 'Content-Type: application/json' \
				--data-binary "@$T/$body.json" \
				"http://127.0.0.1:$mport/v2/models/fashion/infer" || true
			sleep 0.1
			n=$((n + 1))
		done
	) &
	pids="$pids $!"
fi

# --- Prometheus scrapes both ---------------------------------------------------------
if command -v promtool >/dev/null; then
	run=$(promtool check config "$GRAFANA/prometheus.yml" 2>&1) && prc=0 || prc=$?
	expect_eq "examples/grafana/prometheus.yml passes promtool check config" 0 "$prc"
fi
cat > "$T/prometheus.yml" <<P
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: mlpipe-serve
    static_configs:
      - targets: ["127.0.0.1:$sport"]
P
if [ -n "$mport" ]; then
	cat >> "$T/prometheus.yml" <<P
  - job_name: mlpipe-model-server
    static_configs:
      - targets: ["127.0.0.1:$mport"]
P
fi
# A port is chosen, then bound by Prometheus: another process may take it
# in between, so up to three tries.
tries=0
prom=
while [ $tries -lt 3 ] && [ -z "$prom" ]; do
	pport=$(free_port)
	"$prometheus" --config.file="$T/prometheus.yml" --storage.tsdb.path="$T/tsdb" \
		--web.listen-address="127.0.0.1:$pport" --log.level=warn 2>>"$T/prometheus.log" &
	ppid_=$!
	pids="$pids $ppid_"
	if wait_http "http://127.0.0.1:$pport/-/ready"; then prom="http://127.0.0.1:$pport"
	else kill -9 "$ppid_" 2>/dev/null || true; fi
	tries=$((tries + 1))
done
if [ -n "$prom" ]; then ok "prometheus is ready"
else not_ok "prometheus is ready" "$(tail -5 "$T/prometheus.log")"; fi

# Two scrapes of each target at least (30 s at most).
want=1
[ -n "$mport" ] && want=2
i=0
while [ $i -lt 300 ] && [ -n "$prom" ]; do
	n=$(curl -s "$prom/api/v1/query" --data-urlencode 'query=count(count_over_time(up[1m]) >= 2 and up == 1)' |
		sed -n 's/.*"value":\[[0-9.]*,"\([0-9]*\)"\].*/\1/p')
	[ "${n:-0}" -ge $want ] && break
	sleep 0.1; i=$((i + 1))
done
expect_eq "prometheus scraped every target twice or more" "$want" "${n:-0}"

# --- every panel's expression returns data -----------------------------------------
# check_dashboard FILE SKIP-REASON: one TAP line per panel target.
check_dashboard() {
	if [ -n "$2" ] || [ -z "$prom" ]; then
		python3 "$CHECK" exprs "$GRAFANA/$1" > "$T/exprs"
		while IFS= read -r name; do
			tap_n=$((tap_n + 1))
			echo "ok $tap_n - $1: $name returns data # SKIP ${2:-no prometheus}"
		done < "$T/exprs"
		return 0
	fi
	python3 "$CHECK" query "$prom" "$GRAFANA/$1" --wait 60 > "$T/check.out" 2>&1
	while IFS="$(printf '\t')" read -r verdict name why; do
		if [ "$verdict" = PASS ]; then ok "$1: $name returns data"
		else not_ok "$1: $name returns data" "$why"; fi
	done < "$T/check.out"
	[ -s "$T/check.out" ] || not_ok "$1: the checker ran" "$(cat "$T/check.out")"
}
check_dashboard mlpipe-serve.json ""
if [ -n "$mport" ]; then check_dashboard model-server.json ""
else check_dashboard model-server.json "model server not built"; fi
touch "$T/stop-load"

# A clean stop (under ASan: no leak in what /metrics did meanwhile).
kill -TERM "$serve_pid" 2>/dev/null || true
serve_rc=0
wait "$serve_pid" 2>/dev/null || serve_rc=$?
expect_eq "mlpipe serve stops cleanly after being scraped" 0 "$serve_rc"

finish
