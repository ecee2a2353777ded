# tests/k8s/k8s-lib.sh - what the check-k8s tests share.  Source it after
# tests/functional/lib.sh, call k8s_need with the tools the test uses, then
# k8s_start: it starts a cluster (cluster.sh) in $C=$T/cluster, stops it
# and removes $T at exit, sources the cluster's env (K8S_DIR, K8S_RUN,
# KUBECTL, ...), and turns $KUBECTL and $MLPIPE into wrappers that run the
# real programs through $K8S_RUN, in the cluster's network namespace, where
# its API server (https://127.0.0.1:6443) and its pods are reachable.
#
# Without the harness (tools missing, or no root for namespaces) the test
# prints "1..0 # SKIP why" and exits 0, unless MLPIPE_K8S_REQUIRED=1.
k8s_here=$MLPIPE_TEST_SRCDIR/k8s

k8s_skip() {
	if [ "${MLPIPE_K8S_REQUIRED:-0}" = 1 ]; then
		echo "Bail out! $1"
		exit 1
	fi
	echo "1..0 # SKIP $1"
	exit 0
}

# k8s_need TOOL...: skip unless every TOOL is on PATH.
k8s_need() {
	for tool in "$@"; do
		command -v "$tool" >/dev/null 2>&1 ||
			k8s_skip "$tool is missing (scripts/install-deps --with-k8s)"
	done
}

# k8s_wrap NAME PROGRAM: $T/bin/NAME runs PROGRAM in the cluster's network
# namespace; prints its path.
k8s_wrap() {
	mkdir -p "$T/bin"
	printf '#!/bin/sh\nexec '\''%s'\'' '\''%s'\'' "$@"\n' "$K8S_RUN" "$2" > "$T/bin/$1"
	chmod +x "$T/bin/$1"
	echo "$T/bin/$1"
}

k8s_start() {
	if ! why=$(sh "$k8s_here/cluster.sh" check 2>&1); then
		k8s_skip "${why#cluster.sh: }"
	fi
	C=$T/cluster
	trap 'sh "$k8s_here/cluster.sh" stop "$C" >/dev/null 2>&1; rm -rf "$T"' EXIT
	# Interrupted, still stop the cluster (the EXIT trap runs on exit).
	trap 'exit 1' INT TERM HUP
	if ! envfile=$(sh "$k8s_here/cluster.sh" start "$C" 2>"$T/cluster.err"); then
		echo "Bail out! the test cluster did not start: $(tail -5 "$T/cluster.err")"
		exit 1
	fi
	. "$envfile"
	KUBECTL=$(k8s_wrap kubectl "$KUBECTL")
	MLPIPE=$(k8s_wrap mlpipe "$MLPIPE")
}

# wait_for SECONDS CMD...: run CMD (quietly) every 0.2 s until it succeeds;
# 1 if it did not within SECONDS of wall-clock time.
wait_for() {
	wf_end=$(($(date +%s) + $1))
	shift
	while :; do
		if "$@" >/dev/null 2>&1; then
			return 0
		fi
		[ "$(date +%s)" -lt "$wf_end" ] || return 1
		sleep 0.2
	done
}
