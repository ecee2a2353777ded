#!/bin/sh
# tests/k8s/model-server.sh - a model shipped without an image build, on a
# real control plane (cluster.sh): mlpipe-model-server runs as the pods of
# examples/k8s/model-service.yaml (the test kubelet runs it as a process
# and probes its /v2/health/ready), fetching its model from `mlpipe serve`'s
# artifact endpoint with a models:read token from a Secret.  A pipeline's
# rollout stage with `model:` moves it from version 1 to 2 through
# MODEL_URI; a corrupt version 3 never becomes ready and is rolled back
# while version 2 keeps serving.  TAP; run by `make check-k8s`.
. "$MLPIPE_TEST_SRCDIR/functional/lib.sh"
. "$MLPIPE_TEST_SRCDIR/k8s/k8s-lib.sh"
examples=$MLPIPE_TEST_SRCDIR/../examples/k8s

k8s_need etcd openssl curl jq python3 dpkg-deb
for b in "${MLPIPE_MODEL_SERVER:-}" "${MLPIPE_TRAIN:-}"; do
	[ -x "$b" ] || k8s_skip "MLPIPE_MODEL_SERVER and MLPIPE_TRAIN must name the built programs"
done
k8s_start
CURL=$(k8s_wrap curl "$(command -v curl)")
admin() { "$KUBECTL" --kubeconfig "$K8S_DIR/admin.kubeconfig" -n ml "$@"; }
export KUBECONFIG="$K8S_DIR/deployer.kubeconfig"

# --- three versions of a model: two trained, one corrupt ---------------------
mkdir -p "$T/p"
cd "$T/p"
awk 'BEGIN { s = 12345; print "label,f0,f1,f2,f3"
	for (i = 0; i < 600; i++) { c = i % 3; line = c
		for (j = 0; j < 4; j++) { s = (s * 16807) % 2147483647
			line = line "," sprintf("%.4f", (j == c ? 1 : 0) + (s / 2147483647 - 0.5) * 0.8) }
		print line } }' > train.csv
"$MLPIPE_TRAIN" --data train.csv --layers 4,16,3 --epochs 2 --seed 1 --out v1.bin >/dev/null 2>&1
"$MLPIPE_TRAIN" --data train.csv --layers 4,16,3 --epochs 4 --seed 2 --out v2.bin >/dev/null 2>&1
# version 3: version 2 with one parameter byte changed (its CRC no longer matches)
cp v2.bin v3.bin
printf '\377' | dd of=v3.bin bs=1 seek=40 conv=notrunc 2>/dev/null
cat > register.yml <<'Y'
name: register
stages:
  train:
    run: |
      cp "$SRC" model.bin
      echo '{"accuracy": 0.9}' > "$MLPIPE_METRICS"
    model: { name: fashion, path: model.bin }
Y
run_mlpipe run --var SRC="$T/p/v1.bin" register.yml
expect_eq "version 1 is registered" 0 "$rc"
"$MLPIPE" models approve fashion:1 --reason "the first one" >/dev/null

# --- mlpipe serve where the pods reach it (the cluster bridge's address) -------
reader=$("$MLPIPE" token create model-server --scope models:read)
rm -f "$T/port"
"$MLPIPE" serve --listen 0.0.0.0:0 --port-file "$T/port" --grace 2s 2>"$T/serve.log" &
serve_pid=$!
wait_for 20 test -s "$T/port" || echo "Bail out! mlpipe serve did not start: $(tail -3 "$T/serve.log")"
# 10.244.0.1: the bridge's address in the cluster namespace (cluster.sh)
base="http://10.244.0.1:$(cat "$T/port")"
sha1=$(sha256sum v1.bin | cut -c1-64)

# --- the example Deployment, running the real server ------------------------------
admin apply -f "$examples/namespace.yaml" >/dev/null
admin apply -f "$examples/role.yaml" -f "$examples/rolebinding.yaml" >/dev/null
admin create rolebinding deployers --role mlpipe-deployer --user deployer >/dev/null
admin create secret generic mlpipe-model-token --from-literal=token="$reader" >/dev/null
admin apply -f "$examples/model-service.yaml" >/dev/null
# The test kubelet runs host programs (no images): the container runs the
# server built here, version 1 from serve, probed every second; 2 replicas
# and a short progress deadline keep the test quick.
cat > "$T/patch.json" <<J
{"spec": {"replicas": 2, "progressDeadlineSeconds": 12,
 "template": {"spec": {"containers": [{"name": "model-container",
   "command": ["$MLPIPE_MODEL_SERVER"],
   "readinessProbe": {"periodSeconds": 1},
   "env": [{"name": "MODEL_URI", "value": "$base/api/v1/models/fashion/versions/1/artifact"},
           {"name": "MODEL_SHA256", "value": "$sha1"},
           {"name": "MODEL_NAME", "value": "fashion"},
           {"name": "MODEL_VERSION", "value": "1"}]}]}}}}
J
admin patch deploy model-service --type strategic -p "$(cat "$T/patch.json")" >/dev/null
status() { admin rollout status deploy/model-service --timeout "${1:-60s}" >/dev/null 2>&1 && echo 0 || echo 1; }
expect_eq "the model server pods become ready (model fetched with the token, digest checked)" 0 "$(status 90s)"

# infer NAME: POSTs one row to every ready pod; prints the model_version of
# each answer, sorted.
infer() {
	for ip in $(admin get pods -l app=model-service -o json |
		jq -r '.items[] | select(.metadata.deletionTimestamp == null) |
			select(any(.status.conditions[]?; .type == "Ready" and .status == "True")) | .status.podIP'); do
		"$CURL" -s -X POST -d '{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,0,0,0]}]}' \
			"http://$ip:8080/v2/models/fashion/infer" | jq -r '.model_version'
	done | sort
}
expect_eq "both pods answer inference with version 1" "1
1" "$(infer)"
expect_match "serve logged the artifact fetches" "GET /api/v1/models/fashion/versions/1/artifact 200" "$(cat "$T/serve.log")"
expect_eq "the token is in no log" "" "$(grep -F "$reader" "$T/serve.log" "$C"/kubelet/*.log 2>/dev/null | head -1)"

# --- version 2 through a pipeline: train, gate, rollout by model ---------------
cat > ship.yml <<Y
name: ship
stages:
  train:
    run: |
      cp "\$SRC" model.bin
      echo '{"accuracy": 0.93}' > "\$MLPIPE_METRICS"
    model: { name: fashion, path: model.bin }
  gate:
    needs: [train]
    gate: { model: fashion, require: { accuracy: ">= 0.5" } }
  deploy:
    needs: [gate]
    rollout:
      deployment: model-service
      namespace: ml
      container: model-container
      model: fashion
      model_base_url: $base
      timeout: 90s
Y
run_mlpipe run --var SRC="$T/p/v2.bin" ship.yml
expect_eq "the pipeline ships version 2 with no image: exit 0" 0 "$rc"
env_of() { admin get deploy model-service -o json |
	jq -r ".spec.template.spec.containers[0].env[] | select(.name == \"$1\") | .value"; }
expect_eq "MODEL_URI points at version 2's artifact" "$base/api/v1/models/fashion/versions/2/artifact" "$(env_of MODEL_URI)"
expect_eq "MODEL_SHA256 is version 2's digest" "$(sha256sum v2.bin | cut -c1-64)" "$(env_of MODEL_SHA256)"
expect_eq "the image did not change" "$(admin get deploy model-service -o 'jsonpath={.spec.template.spec.containers[0].image}')" \
	"$(admin get deploy model-service -o 'jsonpath={.spec.template.spec.containers[0].image}')"
expect_eq "the pod template is annotated with version 2" 2 \
	"$(admin get deploy model-service -o json | jq -r '.spec.template.metadata.annotations["mlpipe.io/model-version"]')"
expect_eq "every ready pod serves version 2" "2
2" "$(infer)"
expect_match "version 2 is deployed in the registry" '"status":"deployed"' \
	"$("$MLPIPE" models show fashion:2 --json | tr -d ' \t\n')"

# --- a corrupt version 3: never ready, rolled back, version 2 serves on -----------
run_mlpipe run --var SRC="$T/p/v3.bin" register.yml
"$MLPIPE" models approve fashion:3 --reason "approved by mistake" >/dev/null
run_mlpipe rollout ml/model-service --model fashion:3 --model-base-url "$base" --timeout 60s
expect_eq "the corrupt model's rollout fails: exit 1" 1 "$rc"
expect_match "... at the progress deadline" 'exceeded its progress deadline' "$err"
expect_match "... and is rolled back" 'rollback complete' "$out"
expect_eq "MODEL_URI is version 2's again" "$base/api/v1/models/fashion/versions/2/artifact" "$(env_of MODEL_URI)"
expect_eq "the rollback completed (kubectl agrees)" 0 "$(status 60s)"
expect_eq "version 2 serves on every ready pod" "2
2" "$(infer)"
expect_eq "version 3 is not deployed" approved \
	"$("$MLPIPE" models show fashion:3 --json | jq -r '.status')"

kill -TERM "$serve_pid" 2>/dev/null
wait "$serve_pid" 2>/dev/null || true
finish
