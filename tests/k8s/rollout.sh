#!/bin/sh
# tests/k8s/rollout.sh - mlpipe rollout / rollback / deployments against a
# real control plane (cluster.sh: kube-apiserver, kube-controller-manager,
# etcd, the test kubelet), compared with `kubectl rollout status` (Debian's
# kubernetes-client 1.20) on the same Deployments.  TAP; run by
# `make check-k8s`.
#
# Without the harness's packages (scripts/install-deps --with-k8s) it
# prints "1..0 # SKIP" and exits 0, unless MLPIPE_K8S_REQUIRED=1.
. "$MLPIPE_TEST_SRCDIR/functional/lib.sh"
. "$MLPIPE_TEST_SRCDIR/k8s/k8s-lib.sh"
examples=$MLPIPE_TEST_SRCDIR/../examples/k8s

k8s_need etcd openssl curl jq python3 dpkg-deb
# $KUBECTL and $MLPIPE now run in the cluster's network namespace.
k8s_start
admin() { "$KUBECTL" --kubeconfig "$K8S_DIR/admin.kubeconfig" -n ml "$@"; }
image_now() { admin get deploy "${1:-model-service}" -o 'jsonpath={.spec.template.spec.containers[0].image}'; }
# kubectl's verdict on a Deployment: its exit code.
kubectl_verdict() {
	set +e
	"$KUBECTL" --kubeconfig "$K8S_DIR/admin.kubeconfig" -n ml rollout status \
		"deploy/${1:-model-service}" --timeout "${2:-60s}" >"$T/kubectl.out" 2>&1
	echo $?
	set -e
}
last_row() { "$MLPIPE" deployments --json --limit 1 | jq -r ".[0].$1"; }
rollout() { run_mlpipe rollout ml/model-service --kubeconfig "$K8S_DIR/${KC:-deployer}.kubeconfig" "$@"; }

# The example manifests, exactly as shipped; the Role is the least-privilege
# one from examples/k8s, bound to the test users.
admin apply -f "$examples/namespace.yaml" >/dev/null
admin apply -f "$examples/deployment.yaml" -f "$examples/role.yaml" \
	-f "$examples/rolebinding.yaml" >/dev/null
admin create rolebinding deployers --role mlpipe-deployer --user deployer \
	--user cert-deployer --user exec-deployer >/dev/null
admin create role viewer --verb get,list,watch --resource deployments.apps >/dev/null
admin create rolebinding viewer --role viewer --user viewer >/dev/null
# Stuck rollouts should fail within the test's patience.
admin patch deploy model-service -p '{"spec":{"progressDeadlineSeconds":8}}' >/dev/null
expect_eq "the example Deployment becomes ready" 0 "$(kubectl_verdict)"

# --- a rollout completes ------------------------------------------------------
rollout --image registry.local/model:v2
expect_eq "rollout with a token: exit 0" 0 "$rc"
expect_match "progress is shown while waiting" '[0-9]/3 updated, [0-9] available' "$out"
expect_match "completion is reported" 'rollout complete: 3/3 updated, 3 available' "$out"
expect_eq "the Deployment runs the new image" registry.local/model:v2 "$(image_now)"
expect_eq "kubectl agrees it is complete" 0 "$(kubectl_verdict)"
expect_eq "the row says complete" complete "$(last_row result)"
expect_eq "the row records the previous image" registry.local/model:v1 "$(last_row from)"
expect_eq "sidecar-safe: still one container" 1 \
	"$(admin get deploy model-service -o json | jq '.spec.template.spec.containers | length')"

# --- a bad image is stuck, detected, rolled back -------------------------------
rollout --image registry.local/model:bad-1 --env EXTRA=1
expect_eq "stuck rollout: exit 1" 1 "$rc"
expect_match "the reason is the progress deadline" 'exceeded its progress deadline' "$err"
expect_match "it rolls back" 'rollback complete: registry.local/model:v2 serving again' "$out"
expect_eq "the old image serves again" registry.local/model:v2 "$(image_now)"
expect_eq "the env it added is gone again" "" \
	"$(admin get deploy model-service -o json |
		jq -r '.spec.template.spec.containers[0].env[]? | select(.name == "EXTRA") | .name')"
expect_eq "kubectl agrees the rollback completed" 0 "$(kubectl_verdict)"
expect_eq "the rollback is a row" rollback "$(last_row kind)"
expect_eq "the rollback completed" complete "$(last_row result)"
expect_eq "the failed rollout is marked rolled_back" rolled_back \
	"$("$MLPIPE" deployments --json --limit 2 | jq -r '.[1].result')"

# --- kubectl's verdict on a stuck rollout matches mlpipe's ---------------------
rollout --image registry.local/model:bad-2 --on-failure keep
expect_eq "on_failure keep: exit 1" 1 "$rc"
expect_eq "the bad image stays (keep)" registry.local/model:bad-2 "$(image_now)"
expect_eq "kubectl also says failed (non-zero)" 1 "$(kubectl_verdict model-service 20s)"
expect_match "kubectl names the same reason" 'exceeded its progress deadline' "$(cat "$T/kubectl.out")"
expect_eq "the kept rollout is recorded failed" failed "$(last_row result)"
run_mlpipe rollback ml/model-service --kubeconfig "$K8S_DIR/deployer.kubeconfig"
expect_eq "mlpipe rollback: exit 0" 0 "$rc"
expect_eq "rollback restores the recorded image" registry.local/model:v2 "$(image_now)"
expect_eq "kubectl agrees after the rollback" 0 "$(kubectl_verdict)"

# --- refused before anything changes --------------------------------------------
before=$(admin get deploy model-service -o 'jsonpath={.metadata.generation}')
KC=viewer rollout --image registry.local/model:v3
expect_eq "a user without patch: exit 2" 2 "$rc"
expect_match "the API's own 403 message" 'cannot patch resource "deployments".*HTTP 403' "$err"
expect_eq "nothing changed (403)" "$before" \
	"$(admin get deploy model-service -o 'jsonpath={.metadata.generation}')"
run_mlpipe rollout ml/nope --image x:1 --kubeconfig "$K8S_DIR/deployer.kubeconfig"
expect_eq "missing Deployment: exit 2" 2 "$rc"
expect_match "missing Deployment: the API's message" 'deployments.apps "nope" not found' "$err"
rollout --image registry.local/model:v3 --container wrong
expect_eq "wrong container: exit 2" 2 "$rc"
expect_match "wrong container: names the real one" "no container 'wrong' \\(it has 'model-container'\\)" "$err"
expect_eq "nothing changed (wrong container)" "$before" \
	"$(admin get deploy model-service -o 'jsonpath={.metadata.generation}')"
KC=wrong-ca rollout --image registry.local/model:v3
expect_eq "a wrong CA: exit 2" 2 "$rc"
expect_match "a wrong CA fails TLS verification" 'certificate' "$err"

# --- dry run ---------------------------------------------------------------------
rollout --image registry.local/model:v9 --dry-run
expect_eq "dry run: exit 0" 0 "$rc"
expect_eq "dry run: nothing changed" registry.local/model:v2 "$(image_now)"
expect_eq "dry run: recorded as such" dry_run "$(last_row result)"

# --- other credentials -----------------------------------------------------------
KC=cert rollout --image registry.local/model:v3
expect_eq "client certificate (inline data): exit 0" 0 "$rc"
expect_eq "client certificate: rolled out" registry.local/model:v3 "$(image_now)"
KC=cert-files rollout --image registry.local/model:v4
expect_eq "client certificate (files): exit 0" 0 "$rc"
KC=exec rollout --image registry.local/model:v5
expect_eq "exec plugin: exit 0" 0 "$rc"
expect_eq "exec plugin: rolled out" registry.local/model:v5 "$(image_now)"

# --- a concurrent edit: 409, re-read, retried --------------------------------------
# The exec plugin runs before each request (its token expires at once), and
# before the PATCH it edits the Deployment as admin: the PATCH, conditional
# on the resourceVersion mlpipe read, must get 409 and be retried.
cat > "$T/hook" <<HOOK
n=\$(cat "$T/hook.n" 2>/dev/null || echo 0); n=\$((n + 1)); echo \$n > "$T/hook.n"
[ "\$n" -eq 2 ] && "$KUBECTL" --kubeconfig "$K8S_DIR/admin.kubeconfig" -n ml annotate deploy model-service concurrent=edit --overwrite
exit 0
HOOK
EXEC_HOOK="sh $T/hook" EXEC_EXPIRY=$(date -u -d '+5 seconds' +%Y-%m-%dT%H:%M:%SZ) \
	KC=exec rollout --image registry.local/model:v6
expect_eq "conflict: exit 0" 0 "$rc"
expect_match "conflict: the 409 is reported and retried" '409 Conflict' "$out"
expect_eq "conflict: the new image is in" registry.local/model:v6 "$(image_now)"
expect_eq "conflict: the concurrent edit survives" edit \
	"$(admin get deploy model-service -o 'jsonpath={.metadata.annotations.concurrent}')"

# --- in-cluster configuration (service-account files) ------------------------------
mkdir -p "$T/sa" "$T/home"
echo deployer-token-1234567890 > "$T/sa/token"
cp "$K8S_DIR/pki/ca.crt" "$T/sa/ca.crt"
echo ml > "$T/sa/namespace"
set +e
env -u KUBECONFIG HOME="$T/home" MLPIPE_K8S_SA_DIR="$T/sa" KUBERNETES_SERVICE_HOST=127.0.0.1 \
	KUBERNETES_SERVICE_PORT="$K8S_API_PORT" "$MLPIPE" rollout model-service \
	--image registry.local/model:v7 >"$T/.out" 2>"$T/.err"
rc=$?
set -e
expect_eq "in-cluster config: exit 0" 0 "$rc"
expect_eq "in-cluster config: the namespace file is used" registry.local/model:v7 "$(image_now)"

# --- the rollout: stage ------------------------------------------------------------
mkdir -p "$T/p"
cat > "$T/p/pipeline.yml" <<PIPE
name: k8s-stage
stages:
  deploy:
    rollout:
      deployment: model-service
      namespace: ml
      container: model-container
      image: registry.local/model:run-\${{ run.id }}
      env: { MODEL_RUN: "\${{ run.id }}" }
      timeout: 2m
PIPE
set +e
(cd "$T/p" && KUBECONFIG="$K8S_DIR/deployer.kubeconfig" "$MLPIPE" run pipeline.yml) \
	>"$T/.out" 2>"$T/.err"
rc=$?
set -e
run_id=$("$MLPIPE" runs --json | jq -r '.[0].id')
expect_eq "rollout stage: the run succeeds" 0 "$rc"
expect_eq "rollout stage: the run's image is rolled out" "registry.local/model:run-$run_id" "$(image_now)"
expect_eq "rollout stage: the row names the run" "$run_id" "$(last_row run)"
expect_eq "rollout stage: annotated with the run" "$run_id" \
	"$(admin get deploy model-service -o 'jsonpath={.spec.template.metadata.annotations.mlpipe\.io/run}')"
expect_eq "kubectl agrees (stage)" 0 "$(kubectl_verdict)"

# --- train -> gate -> rollout: the model version becomes deployed -------------------
cat > "$T/p/model.yml" <<'PIPE'
name: k8s-model
stages:
  train:
    run: echo "weights $TAG" > model.bin
    model: { name: served, path: model.bin }
  evaluate:
    needs: [train]
    run: |
      echo '{"accuracy": 0.9}' > "$MLPIPE_METRICS"
  gate:
    needs: [evaluate]
    gate: { model: served, metrics_from: evaluate, require: { accuracy: ">= 0.5" } }
  deploy:
    needs: [gate]
    rollout:
      deployment: model-service
      namespace: ml
      container: model-container
      image: registry.local/model:${{ env.TAG }}
      timeout: 2m
PIPE
model_run() { # TAG
	set +e
	(cd "$T/p" && TAG=$1 KUBECONFIG="$K8S_DIR/deployer.kubeconfig" "$MLPIPE" run model.yml) \
		>"$T/.out" 2>"$T/.err"
	rc=$?
	set -e
}
model_status() { "$MLPIPE" models show "served:$1" --json | jq -r .status; }
model_run m1
expect_eq "model pipeline: the run succeeds" 0 "$rc"
expect_eq "model pipeline: version 1 is deployed" deployed "$(model_status 1)"
expect_eq "model pipeline: annotated with the model version" 1 \
	"$(admin get deploy model-service -o 'jsonpath={.spec.template.metadata.annotations.mlpipe\.io/model-version}')"
model_run m2
expect_eq "model pipeline: version 2 is deployed" deployed "$(model_status 2)"
expect_eq "model pipeline: version 1 is retired" retired "$(model_status 1)"
model_run bad-3
expect_eq "model pipeline: a stuck rollout fails the run" 1 "$rc"
expect_eq "model pipeline: the stuck version is not deployed" approved "$(model_status 3)"
expect_eq "model pipeline: version 2 still deployed" deployed "$(model_status 2)"
expect_eq "model pipeline: version 2's image serves" registry.local/model:m2 "$(image_now)"
expect_match "model pipeline: the run says why" 'progress deadline' "$("$MLPIPE" runs show "$("$MLPIPE" runs --json | jq -r '.[0].id')" 2>&1)"
# A manual rollback of version 2's rollout: version 1's image and status
# come back, so the registry again names what serves.
run_mlpipe rollback ml/model-service --kubeconfig "$K8S_DIR/deployer.kubeconfig"
expect_eq "model pipeline: mlpipe rollback exits 0" 0 "$rc"
expect_eq "model pipeline: version 1's image serves again" registry.local/model:m1 "$(image_now)"
expect_eq "model pipeline: version 2 is retired by the rollback" retired "$(model_status 2)"
expect_eq "model pipeline: version 1 is deployed again" deployed "$(model_status 1)"

finish
