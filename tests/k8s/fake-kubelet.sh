#!/bin/sh
# tests/k8s/fake-kubelet.sh - stands in for kubelets: marks every pod
# Running and Ready, except pods whose image matches a "bad" pattern,
# which stay unready (a stuck rollout).  No scheduler, no runtime.
#
# Usage: fake-kubelet.sh DIR SERVER TOKEN BAD-PATTERN
# Stops by itself when DIR/stop appears, when DIR vanishes, or after an
# hour at most.
D=$1 SERVER=$2 TOKEN=$3 BAD=$4
end=$(($(date +%s) + 3600))
ca="$D/pki/ca.crt"

while [ ! -e "$D/stop" ] && [ -d "$D" ] && [ "$(date +%s)" -lt "$end" ]; do
	curl -sS --cacert "$ca" -H "Authorization: Bearer $TOKEN" \
		"$SERVER/api/v1/pods" 2>/dev/null |
	jq -r --arg bad "$BAD" '.items[]? |
		select(.metadata.deletionTimestamp == null) |
		select([.status.conditions[]? | select(.type == "Ready" and .status == "True")] |
			length == 0) |
		select([.spec.containers[].image | test($bad)] | any | not) |
		"\(.metadata.namespace) \(.metadata.name)"' 2>/dev/null |
	while read -r ns name; do
		now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
		curl -sS -o /dev/null --cacert "$ca" -H "Authorization: Bearer $TOKEN" \
			-X PATCH -H 'Content-Type: application/merge-patch+json' \
			"$SERVER/api/v1/namespaces/$ns/pods/$name/status" \
			-d "{\"status\":{\"phase\":\"Running\",\"hostIP\":\"127.0.0.1\",\"podIP\":\"127.0.0.2\",\"startTime\":\"$now\",\"conditions\":[{\"type\":\"Initialized\",\"status\":\"True\",\"lastTransitionTime\":\"$now\"},{\"type\":\"Ready\",\"status\":\"True\",\"lastTransitionTime\":\"$now\"},{\"type\":\"ContainersReady\",\"status\":\"True\",\"lastTransitionTime\":\"$now\"},{\"type\":\"PodScheduled\",\"status\":\"True\",\"lastTransitionTime\":\"$now\"}]}}" \
			2>/dev/null
		echo "ready: $ns/$name"
	done
	sleep 0.2
done
