#!/bin/sh
# runs-on: kubernetes end to end through `mlpipe run`, against a scripted
# API server (tests/k8s/scripted-apiserver.py: Python's http.server on
# 127.0.0.1 playing the API server, the Job controller, the kubelet, Kueue
# and rank 0's results port).  The real test cluster (make check-k8s) is
# Kubernetes 1.20: no Indexed Jobs, no suspend, no Kueue; these paths are
# covered here: the Indexed Job and what it is made of, the pods' logs,
# the model fetched back and registered, Kueue's admission, a server that
# drops fields, the first failure, a damaged model, RBAC, and the
# per-node Jobs an old server gets.  Each case has its own server, store
# and workspace; every wait is bounded (the server exits by itself after
# 120 s; each `mlpipe run` is killed after 90 s).
. "$(dirname "$0")/lib.sh"

if [ -x /usr/bin/python3 ]; then python=/usr/bin/python3; else python=$(command -v python3 || true); fi
if [ -z "$python" ]; then
	echo "1..0 # SKIP no python3 for the scripted API server"
	exit 0
fi
SERVER="$MLPIPE_TEST_SRCDIR/k8s/scripted-apiserver.py"
SECRET_VALUE='hunter2-do-not-leak'
srv_pid=
S=
trap 'stop_server; rm -rf "$T"' EXIT

# start_server CASE SCENARIO-JSON: a server of its own in $T/CASE (= $S),
# a kubeconfig for it, a store, and the case's workspace as the cwd.
start_server() {
	S="$T/$1"
	mkdir -p "$S"
	printf '%s\n' "$2" > "$S/scenario.json"
	"$python" "$SERVER" serve --scenario "$S/scenario.json" --dir "$S/srv" --timeout 120 \
		2> "$S/server.err" &
	srv_pid=$!
	i=0
	while [ ! -s "$S/srv/port" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
	if [ ! -s "$S/srv/port" ]; then
		echo "# the scripted API server did not start:" >&2
		sed 's/^/#   /' "$S/server.err" >&2
		exit 1
	fi
	cat > "$S/kubeconfig" <<K
apiVersion: v1
kind: Config
current-context: scripted
clusters:
- name: scripted
  cluster: {server: "http://127.0.0.1:$(cat "$S/srv/port")"}
contexts:
- name: scripted
  context: {cluster: scripted, user: mlpipe, namespace: ml}
users:
- name: mlpipe
  user: {token: scripted-token}
K
	export MLPIPE_DB="$S/mlpipe.db"
	cd "$S"
}
stop_server() {
	[ -n "$srv_pid" ] || return 0
	touch "$S/srv/stop"
	i=0
	while kill -0 "$srv_pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
	kill -9 "$srv_pid" 2>/dev/null || true
	wait "$srv_pid" 2>/dev/null || true
	srv_pid=
	if [ -s "$S/server.err" ]; then
		echo "# the scripted API server wrote on stderr:"
		sed 's/^/#   /' "$S/server.err"
	fi
}

# write_pipeline [KUBERNETES-LINES]: a train stage of 2 nodes x 2 ranks on
# the scripted server (the command is never run: the pods are scripted).
write_pipeline() {
	cat > pipeline.yml <<Y
name: scripted
env:
  HF_TOKEN: $SECRET_VALUE
kubernetes:
  kubeconfig: $S/kubeconfig
  namespace: ml
  image: registry.example.com/train:run-\${{ run.id }}
${1:-}
stages:
  train:
    runs-on: kubernetes
    train:
      nodes: 2
      ranks: 2
      command: python train.py --epochs 2 --out model.bin
    model: {name: scripted, path: model.bin}
Y
}

# run_k8s ARGS...: run_mlpipe with a bound.
run_k8s() {
	set +e
	timeout -k 5 90 "$MLPIPE" "$@" > "$T/.out" 2> "$T/.err"
	rc=$?
	set -e
	out=$(cat "$T/.out")
	err=$(cat "$T/.err")
}

# req [--method M] [--path RE] [--field F] [--count]: what the server was asked.
req() { "$python" "$SERVER" requests "$S/srv/requests.jsonl" "$@"; }

# wait_empty [STATE]: up to 10 s for the server to hold no object at all
# (or STATE); prints what it holds.
empty='{"jobs": [], "pods": [], "secrets": [], "services": [], "workloads": []}'
wait_empty() {
	i=0
	while [ "$(cat "$S/srv/state.json")" != "${1:-$empty}" ] && [ $i -lt 200 ]; do
		sleep 0.05
		i=$((i + 1))
	done
	cat "$S/srv/state.json"
}

stage_json() { "$MLPIPE" runs show 1 --json | tr -d ' \t\n'; }
B=mlp-1-train-1

# --- success: one Indexed Job, the logs, the model ---------------------------
store=$(printf '%s:%s' "$(uname -n)" "$T/ok/mlpipe.db" | sha256sum | cut -c1-16)
start_server ok '{
 "pods": {
  "0": {"lines": ["[rank0] epoch 1 loss 0.9", "[rank1] epoch 1 loss 0.9",
                  "[rank0] epoch 2 loss 0.4", "[rank1] epoch 2 loss 0.4",
                  "[rank0] saved model.bin"], "break_log_after": 2},
  "1": {"lines": ["[rank2] epoch 1 loss 0.8", "[rank3] epoch 1 loss 0.8",
                  "[rank2] epoch 2 loss 0.5", "[rank3] epoch 2 loss 0.5"]}},
 "results": {"files": {"model": {"size": 300000},
                       "output": {"text": "epochs=2\n"},
                       "metrics": {"text": "{\"loss\": 0.25}\n"}}},
 "seed": [
  {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
   "metadata": {"name": "mlp-99-train-1", "namespace": "ml",
                "labels": {"app.kubernetes.io/managed-by": "mlpipe",
                           "mlpipe.dev/store": "'"$store"'", "mlpipe.dev/run": "99"}}},
  {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
   "metadata": {"name": "mlp-98-train-1", "namespace": "ml",
                "labels": {"app.kubernetes.io/managed-by": "mlpipe",
                           "mlpipe.dev/store": "0123456789abcdef", "mlpipe.dev/run": "98"}}}]
}'
write_pipeline
run_k8s run pipeline.yml
expect_eq "a 2-node train stage on the scripted server succeeds" 0 "$rc"
[ "$rc" = 0 ] || printf '# %s\n' "$out" "$err"
expect_match "Indexed mode is chosen for a 1.29 server" \
	"\[mlpipe\] $B: 2 pods x 2 ranks in namespace ml on http://127.0.0.1:[0-9]+ \(v1.29.0, one Indexed Job\)" "$out"
expect_eq "exactly one Job is created" 1 "$(req --method POST --path '/jobs$' --count)"
expect_eq "... Indexed" Indexed "$(req --method POST --path '/jobs$' --field spec.completionMode)"
expect_eq "... completions 2" 2 "$(req --method POST --path '/jobs$' --field spec.completions)"
expect_eq "... parallelism 2" 2 "$(req --method POST --path '/jobs$' --field spec.parallelism)"
expect_eq "... backoffLimit 0" 0 "$(req --method POST --path '/jobs$' --field spec.backoffLimit)"
expect_eq "... not suspended without a queue" null "$(req --method POST --path '/jobs$' --field spec.suspend)"
expect_eq "... the image's expression is resolved" registry.example.com/train:run-1 \
	"$(req --method POST --path '/jobs$' --field spec.template.spec.containers.0.image)"
env=$(req --method POST --path '/jobs$' --field spec.template.spec.containers.0.env)
expect_match "PET_NODE_RANK comes from the completion index" \
	'\{"name":"PET_NODE_RANK","valueFrom":\{"fieldRef":\{"fieldPath":"metadata.annotations\['"'"'batch.kubernetes.io/job-completion-index'"'"'\]"\}\}\}' "$env"
expect_match "the env value comes from the Secret" \
	'\{"name":"HF_TOKEN","valueFrom":\{"secretKeyRef":\{"key":"env.HF_TOKEN","name":"'$B'"\}\}\}' "$env"
expect_match "the master is node 0 through the Service" '"name":"MASTER_ADDR","value":"'$B-0.$B'"' "$env"
if req --path '/jobs$|/services$' | grep -q "$SECRET_VALUE"; then
	not_ok "the env value is in neither the Job nor the Service"
else
	ok "the env value is in neither the Job nor the Service"
fi
expect_match "the env value is in the Secret" "\"env.HF_TOKEN\":\"$SECRET_VALUE\"" \
	"$(req --method POST --path '/secrets$' --field stringData)"
expect_eq "the Secret is Opaque" Opaque "$(req --method POST --path '/secrets$' --field type)"
expect_eq "the Service is headless" None "$(req --method POST --path '/services$' --field spec.clusterIP)"
expect_eq "... publishes not-ready pods" true \
	"$(req --method POST --path '/services$' --field spec.publishNotReadyAddresses)"
expect_eq "... selects the gang" "{\"mlpipe.dev/gang\":\"$B\"}" \
	"$(req --method POST --path '/services$' --field spec.selector)"
uid=$(req --method POST --path '/secrets$' --field uid)
owner="{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"name\":\"$B\",\"uid\":\"$uid\"}"
expect_eq "the Service is owned by the Secret" "[$owner]" \
	"$(req --method POST --path '/services$' --field metadata.ownerReferences)"
expect_eq "the Job is owned by the Secret" "[$owner]" \
	"$(req --method POST --path '/jobs$' --field metadata.ownerReferences)"
expect_eq "the Secret is created first, then the Service, then the Job" \
	"secrets services jobs" \
	"$(req --method POST --path '/(secrets|services|jobs)$' --field path | sed 's|.*/||' | tr '\n' ' ' | sed 's/ $//')"
logs=$("$MLPIPE" logs 1 train)
expect_eq "node 0's ranks' lines, in order, each once (the stream broke and resumed)" \
	"[rank0] epoch 1 loss 0.9
[rank1] epoch 1 loss 0.9
[rank0] epoch 2 loss 0.4
[rank1] epoch 2 loss 0.4
[rank0] saved model.bin" "$(printf '%s\n' "$logs" | grep '^\[rank[01]\]')"
expect_eq "node 1's ranks' lines, in order, each once" \
	"[rank2] epoch 1 loss 0.8
[rank3] epoch 1 loss 0.8
[rank2] epoch 2 loss 0.5
[rank3] epoch 2 loss 0.5" "$(printf '%s\n' "$logs" | grep '^\[rank[23]\]')"
expect_eq "node 0's log was followed again from where it broke" 1 \
	"$(req --path '/pods/'$B'-0-[a-z0-9]*/log\?.*sinceTime=' --count | awk '{ print ($1 >= 1) }')"
expect_match "all pods running is announced" "\[mlpipe\] all 2 pods are running" "$logs"
served=$(req --method GET --path '/proxy/files/model$' --field sha256)
expect_match "the model was served once" '^[0-9a-f]{64}$' "$served"
expect_eq "the fetched model is the served one" "$served  model.bin" "$(sha256sum model.bin)"
expect_match "the fetch is announced" "\[mlpipe\] fetched the model from $B-0-[a-z0-9]+ \(300000 bytes, sha256 $served\)" "$logs"
run_k8s models show scripted:1 --json
expect_match "the model is registered with that sha256" "\"sha256\":[[:space:]]*\"$served\"" "$out"
j=$(stage_json)
expect_match "the metrics came back from rank 0" '"train.loss":0.25' "$j"
expect_match "the output came back from rank 0" '"train.epochs":"2"' "$j"
[ ! -e model.bin.mlpipe-part ] && ok "no partial download is left" || not_ok "no partial download is left"
expect_eq "rank 0 is released once" 1 "$(req --method POST --path ":8476/proxy/done$" --count)"
expect_match "the Job is deleted in the background" '"propagationPolicy":"Background"' \
	"$(req --method DELETE --path "/jobs/$B\$")"
expect_eq "the Secret is deleted" 200 "$(req --method DELETE --path "/secrets/$B\$" --field status)"
other='{"jobs": [], "pods": [], "secrets": ["mlp-98-train-1"], "services": [], "workloads": []}'
expect_eq "nothing is left on the cluster (but another store's Secret)" "$other" "$(wait_empty "$other")"
expect_match "the objects a dead run of this store left are swept" \
	"\[mlpipe\] sweeping mlp-99-train-1: run 99 is over but its objects were left" "$logs"
expect_eq "... and deleted" 200 "$(req --method DELETE --path '/secrets/mlp-99-train-1$' --field status)"
expect_eq "another store's objects are left alone" 0 "$(req --method DELETE --path 'mlp-98' --count)"
stop_server

# --- Kueue: suspended until admitted ------------------------------------------
start_server kueue '{
 "kueue": {"messages": [
   "couldn'"'"'t assign flavors to pod set main: insufficient unused quota for nvidia.com/gpu in flavor default-flavor, 4 more needed",
   "Quota reserved in ClusterQueue cluster-queue"]},
 "pods": {"0": {"lines": ["[rank0] admitted"]}, "1": {"lines": ["[rank2] admitted"]}},
 "results": {"files": {"model": {"text": "weights\n"}}}
}'
write_pipeline "  queue: team-a"
run_k8s run pipeline.yml
expect_eq "a queued stage succeeds once Kueue admits it" 0 "$rc"
expect_eq "the Job is created suspended" true "$(req --method POST --path '/jobs$' --field spec.suspend)"
expect_eq "... with the queue label" team-a \
	"$(req --method POST --path '/jobs$' --field 'metadata.labels.kueue\.x-k8s\.io/queue-name')"
logs=$("$MLPIPE" logs 1 train)
expect_match "Kueue's first word is in the stage log" \
	"\[mlpipe\] waiting for Kueue \(queue team-a\): couldn't assign flavors to pod set main: insufficient unused quota for nvidia.com/gpu in flavor default-flavor, 4 more needed" "$logs"
expect_match "... and its second" \
	"\[mlpipe\] waiting for Kueue \(queue team-a\): Quota reserved in ClusterQueue cluster-queue" "$logs"
expect_eq "... in that order, before the pods ran" \
	"couldn't assign flavors to pod set main: insufficient unused quota for nvidia.com/gpu in flavor default-flavor, 4 more needed
Quota reserved in ClusterQueue cluster-queue
[mlpipe] all 2 pods are running" \
	"$(printf '%s\n' "$logs" | sed -n 's/^\[mlpipe\] waiting for Kueue (queue team-a): \(c.*\|Q.*\)$/\1/p; s/^\(\[mlpipe\] all 2 pods are running\).*/\1/p')"
# While Kueue holds the Job the loop only asks for the Job (and its
# Workload): once a second, not on every 100 ms turn.
first_pods=$(req --method GET --path '/pods\?' --field t | head -n 1)
gaps=$(req --method GET --path '/jobs\?' --field t | awk -v end="$first_pods" '$1 < end' |
	awk 'NR > 1 { g = $1 - p; if (min == "" || g < min) min = g } { p = $1 } END { print (NR > 1 && min >= 0.5) ? "ok" : NR " checks, min gap " min " s" }')
expect_eq "the held Job is asked about once a second, not every turn" ok "$gaps"
expect_match "the Workload is found by the Job's uid (Kueue does not copy labels)" \
	"/workloads\?labelSelector=kueue.x-k8s.io%2Fjob-uid%3D$(req --method POST --path '/jobs$' --field uid)" \
	"$(req --method GET --path '/workloads\?' --field path)"
expect_match "the pods ran after admission" '^\[rank2\] admitted$' "$logs"
expect_eq "nothing is left on the cluster" "$empty" "$(wait_empty)"
stop_server

# --- a server that drops completionMode while claiming 1.29 -------------------
start_server dropped '{"drop_fields": true, "pods": {"0": {"lines": ["[rank0] must not run"]}}}'
write_pipeline
run_k8s run pipeline.yml
expect_eq "a Job the server did not keep fails the run" 1 "$rc"
expect_match "... saying which field it dropped" \
	"the API server \(v1.29.0\) did not keep the Job's spec.completionMode \(sent \"Indexed\", kept \(dropped\)\)" "$out"
expect_match "the stage exits 2: it could not be tried" '"stage":"train","attempt":1,"kind":"train","status":"failed","exit_code":2' "$(stage_json)"
expect_eq "the Job is deleted" 200 "$(req --method DELETE --path "/jobs/$B\$" --field status)"
expect_eq "the Secret is deleted" 200 "$(req --method DELETE --path "/secrets/$B\$" --field status)"
expect_eq "nothing is left on the cluster" "$empty" "$(wait_empty)"
stop_server

# --- the first failure stops the gang -----------------------------------------
# The Job controller would delete node 0's pod after 30 s only: mlpipe must.
start_server first-failure '{
 "job_kill_after_s": 30,
 "pods": {
  "0": {"lines": ["[rank0] step 1", "[rank1] step 1"], "duration": 100},
  "1": {"lines": ["[rank2] step 1", "[rank3] CUDA error: an illegal memory access"],
        "exit_code": 3, "message": "node 1: rank 3 exited with code 3\n"}}
}'
write_pipeline
run_k8s run pipeline.yml
expect_eq "a rank's failure fails the run" 1 "$rc"
pod1=$(req --path "/pods/$B-1-[a-z0-9]*/log" --field path | head -n 1 | sed 's|.*/pods/\([^/]*\)/log.*|\1|')
expect_match "the reason names the pod, node 1 and its termination message" \
	"stage 'train' failed: pod $pod1 \(node 1\) failed first: node 1: rank 3 exited with code 3" "$out"
run_k8s runs
expect_match "mlpipe runs shows the run failed" '^ *1 .*failed' "$out"
j=$(stage_json)
expect_match "the stage's reason is recorded" "\"message\":\"pod$pod1\(node1\)failedfirst:node1:rank3exitedwithcode3\"" "$j"
expect_match "the stage's exit code is the rank's" '"status":"failed","exit_code":3' "$j"
logs=$("$MLPIPE" logs 1 train)
expect_match "the failing rank's last line is in the stage log" '\[rank3\] CUDA error: an illegal memory access' "$logs"
expect_match "the stop is announced" "; stopping the other pods" "$logs"
created=$(req --method POST --path '/jobs$' --field t)
deleted=$(req --method DELETE --path "/jobs/$B\$" --field t)
expect_eq "the Job is deleted within 10 s (not after rank 0's 20 s long-poll)" ok \
	"$(awk -v c="$created" -v d="$deleted" 'BEGIN { print (d != "" && d - c < 10) ? "ok" : "created at " c " s, deleted at " d " s" }')"
expect_eq "nothing is left on the cluster" "$empty" "$(wait_empty)"
stop_server

# --- node 0 fails: its results port says so ---------------------------------
start_server node0-fails '{
 "pods": {"0": {"lines": ["[rank1] loss is nan"], "exit_code": 5,
                "message": "node 0: rank 1 exited with code 5"},
          "1": {"lines": ["[rank2] waiting"], "duration": 100}}
}'
write_pipeline
run_k8s run pipeline.yml
expect_eq "node 0's failure fails the run" 1 "$rc"
expect_match "... with its termination message" "node 0: rank 1 exited with code 5" "$out"
expect_match "... and its exit code" '"status":"failed","exit_code":5' "$(stage_json)"
expect_eq "no result file is asked for" 0 "$(req --path ':8476/proxy/(files|done)' --count)"
expect_eq "nothing is left on the cluster" "$empty" "$(wait_empty)"
stop_server

# --- a model that comes back damaged -----------------------------------------
start_server corrupt '{
 "pods": {"0": {"lines": ["[rank0] saved"]}},
 "results": {"files": {"model": {"size": 200000}}, "corrupt": ["model"]}
}'
write_pipeline
run_k8s run pipeline.yml
expect_eq "a damaged model fails the run" 1 "$rc"
expect_match "... saying so" "rank 0's model came back damaged: 200000 bytes with sha256 [0-9a-f]{64}, expected 200000 bytes with sha256 [0-9a-f]{64}" "$out"
run_k8s models
expect_match "no model is registered" "no models yet" "$out"
[ ! -e model.bin ] && ok "no model file is left" || not_ok "no model file is left"
[ ! -e model.bin.mlpipe-part ] && ok "no partial download is left" || not_ok "no partial download is left"
expect_eq "rank 0 is still released" 1 "$(req --method POST --path ":8476/proxy/done$" --count)"
expect_eq "nothing is left on the cluster" "$empty" "$(wait_empty)"
stop_server

# --- RBAC: no right to create Secrets ----------------------------------------
start_server rbac '{"forbid_secrets": true}'
write_pipeline
run_k8s run pipeline.yml
expect_eq "a forbidden Secret fails the run" 1 "$rc"
logs=$("$MLPIPE" logs 1 train)
expect_eq "one clear line with the API's message" \
	"mlpipe: stage train: cannot create the Secret $B in namespace ml: secrets is forbidden: User \"system:serviceaccount:ml:mlpipe\" cannot create resource \"secrets\" in API group \"\" in the namespace \"ml\" (HTTP 403)" \
	"$(printf '%s\n' "$logs" | grep forbidden)"
expect_match "the stage exits 2: it could not be tried" '"status":"failed","exit_code":2' "$(stage_json)"
expect_eq "nothing else is created" 0 "$(req --method POST --path '/(services|jobs)$' --count)"
stop_server

# --- RBAC: no pods/proxy, so rank 0's results cannot be read ------------------
start_server no-proxy '{"forbid_proxy": true,
 "pods": {"0": {"lines": ["[rank0] done"]}, "1": {"lines": ["[rank2] done"]}},
 "results": {"files": {"model": {"text": "weights\n"}}}}'
write_pipeline
run_k8s run pipeline.yml
expect_eq "results behind a forbidden pods/proxy fail the run (not hang it)" 1 "$rc"
expect_match "... with the API's message" \
	"cannot read rank 0's results: pods \"$B-0-[a-z0-9]+\" is forbidden: User \"system:serviceaccount:ml:mlpipe\" cannot get resource \"pods/proxy\"" "$out"
expect_eq "... after one try" 1 "$(req --path ':8476/proxy/' --count)"
expect_eq "nothing is left on the cluster" "$empty" "$(wait_empty)"
stop_server

# --- the proxy never reaches rank 0, which gives up waiting -------------------
start_server unreachable '{"proxy_unreachable": true, "serve_timeout_s": 1.5,
 "pods": {"0": {"lines": ["[rank0] done"]}, "1": {"lines": ["[rank2] done"]}},
 "results": {"files": {"model": {"text": "weights\n"}}}}'
write_pipeline
run_k8s run pipeline.yml
expect_eq "rank 0 ending with its results unread fails the run (not hang it)" 1 "$rc"
expect_match "... saying so" "every pod ended, but rank 0's results could not be read" "$out"
[ ! -e model.bin ] && ok "... and no model file is made" || not_ok "... and no model file is made"
expect_eq "nothing is left on the cluster" "$empty" "$(wait_empty)"
stop_server

# --- a pod that cannot be scheduled: the gang is stopped at start_timeout ------
start_server unschedulable '{
 "pods": {"0": {"lines": ["[rank0] waiting for node 1"], "duration": 100},
          "1": {"unschedulable": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}}
}'
write_pipeline "  start_timeout: 2s"
run_k8s run pipeline.yml
expect_eq "a gang that does not start in time fails the run" 1 "$rc"
expect_match "the reason names the pod that waits and why" \
	"only 1 of 2 pods were running after [0-9.]+s, so the gang was stopped rather than left half-started; pod $B-1-[a-z0-9]+: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu." "$out"
expect_eq "nothing is left on the cluster" "$empty" "$(wait_empty)"
stop_server

# --- cancel: SIGTERM to mlpipe deletes the gang -------------------------------
start_server cancel '{
 "pods": {"0": {"lines": ["[rank0] training for long"], "duration": 100},
          "1": {"lines": ["[rank2] training for long"], "duration": 100}}
}'
write_pipeline
"$MLPIPE" run pipeline.yml > "$T/.out" 2> "$T/.err" &
mlpipe_pid=$!
i=0
while [ "$(req --path '/log\?' --count)" -lt 2 ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
sleep 0.3
kill -TERM "$mlpipe_pid"
i=0
while kill -0 "$mlpipe_pid" 2>/dev/null && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
kill -9 "$mlpipe_pid" 2>/dev/null || true
set +e
wait "$mlpipe_pid"
rc=$?
set -e
out=$(cat "$T/.out")
expect_eq "a cancelled run exits 143" 143 "$rc"
expect_match "the stage says why it stopped the gang" \
	"\[mlpipe\] cancelled: the Job was deleted; stopping the other pods" "$("$MLPIPE" logs 1 train)"
expect_eq "the Job is deleted (the stage was not SIGKILLed first)" 200 \
	"$(req --method DELETE --path "/jobs/$B\$" --field status)"
expect_eq "nothing is left on the cluster" "$empty" "$(wait_empty)"
stop_server

# --- an old server (1.20) gets one Job per node -------------------------------
start_server per-node '{
 "version": {"major": "1", "minor": "20", "gitVersion": "v1.20.2"},
 "pods": {"0": {"lines": ["[rank0] old"]}, "1": {"lines": ["[rank2] old"]}},
 "results": {"files": {"model": {"text": "weights\n"}}}
}'
write_pipeline
run_k8s run pipeline.yml
expect_eq "a 2-node stage on a 1.20 server succeeds" 0 "$rc"
expect_match "per-node mode is chosen" "\(v1.20.2, one Job per node\)" "$out"
expect_eq "one Job per node" "/apis/batch/v1/namespaces/ml/jobs
/apis/batch/v1/namespaces/ml/jobs" "$(req --method POST --path '/jobs$' --field path)"
expect_eq "... named by node" "$B-0
$B-1" "$(req --method POST --path '/jobs$' --field metadata.name)"
expect_eq "... of one pod each" "1
1" "$(req --method POST --path '/jobs$' --field spec.completions)"
expect_eq "... without completionMode" "null
null" "$(req --method POST --path '/jobs$' --field spec.completionMode)"
expect_eq "... with fixed hostnames" "$B-0
$B-1" "$(req --method POST --path '/jobs$' --field spec.template.spec.hostname)"
expect_match "PET_NODE_RANK is literal" '"name":"PET_NODE_RANK","value":"1"' \
	"$(req --method POST --path '/jobs$' --field spec.template.spec.containers.0.env | tail -n 1)"
expect_match "both pods' lines are in the stage log" '\[rank2\] old' "$("$MLPIPE" logs 1 train)"
expect_eq "both Jobs are deleted" 2 "$(req --method DELETE --path "/jobs/$B-[01]\$" --count)"
expect_eq "nothing is left on the cluster" "$empty" "$(wait_empty)"
stop_server

finish
