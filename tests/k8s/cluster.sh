#!/bin/sh
# tests/k8s/cluster.sh — a real, local Kubernetes cluster for the check-k8s
# tests: kube-apiserver and kube-controller-manager (deployment, replicaset,
# job, endpoint, garbagecollector controllers) built from Debian's
# `kubernetes` source package (cached outside the clone), Debian's etcd, a
# test CA with TLS, static tokens, client certificates, RBAC, and a test
# kubelet (kubelet.py) that schedules pods onto pretend nodes and runs their
# commands as local processes in sandboxes of their own.  The whole cluster
# lives in network, PID and mount namespaces of its own, so several can run
# at once and stopping one leaves nothing behind.  See tests/k8s/README.md.
#
# Usage:
#   cluster.sh build          build (or reuse) the binaries in the cache
#   cluster.sh check          fail (saying why) if this machine cannot run it
#   cluster.sh start DIR      start a cluster whose state lives in DIR;
#                             writes DIR/env (sourceable), kubeconfigs, and
#                             DIR/run: `DIR/run CMD...` runs CMD where the
#                             cluster is reachable (its network namespace)
#   cluster.sh stop DIR       stop the cluster started in DIR
#
# Cache: $MLPIPE_K8S_CACHE (default /var/cache/mlpipe-k8s), keyed on the
# source package version. Needs (scripts/install-deps --with-k8s):
# golang-1.19-go rsync etcd-server openssl curl jq dpkg-dev, and root for
# unshare/nsenter/ip (util-linux, iproute2).
set -eu

CACHE=${MLPIPE_K8S_CACHE:-/var/cache/mlpipe-k8s}
# Inside the cluster's own network namespace the ports can be fixed.
API_PORT=6443
ETCD_PORT=2379
ETCD_PEER=2380
POD_GATEWAY=10.244.0.1
here=$(cd "$(dirname "$0")" && pwd)

die() { echo "cluster.sh: $*" >&2; exit 1; }

# Private apt configuration with deb-src lines, so /etc/apt stays untouched.
apt_private() {
	d=$CACHE/apt
	mkdir -p "$d/lists/partial"
	uri=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
	[ -n "$uri" ] || uri=$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list 2>/dev/null)
	[ -n "$uri" ] || uri=http://deb.debian.org/debian
	{
		echo "deb-src $uri bookworm main"
		echo "deb-src $uri bookworm-updates main"
		echo "deb-src http://deb.debian.org/debian-security bookworm-security main"
		echo "deb $uri bookworm main"
		echo "deb $uri bookworm-updates main"
		echo "deb http://deb.debian.org/debian-security bookworm-security main"
	} > "$d/sources.list"
	APT_OPTS="-o Dir::Etc::SourceList=$d/sources.list -o Dir::Etc::SourceParts=/nonexistent -o Dir::State::Lists=$d/lists -o Debug::NoLocking=1"
	[ -e "$d/updated" ] || { apt-get $APT_OPTS update >&2 && touch "$d/updated"; }
}

src_version() {
	apt-cache $APT_OPTS showsrc kubernetes 2>/dev/null |
		sed -n 's/^Version: *//p' | sort -V | tail -1
}

build() {
	apt_private
	ver=$(src_version)
	[ -n "$ver" ] || die "no source version of kubernetes found"
	out=$CACHE/$ver
	if [ -x "$out/bin/kube-apiserver" ] && [ -x "$out/bin/kube-controller-manager" ] &&
	   [ -x "$out/bin/kubectl" ]; then
		echo "$out"
		return 0
	fi
	mkdir -p "$out/src" "$out/bin"
	if [ ! -x "$out/bin/kube-apiserver" ]; then
		(cd "$out/src" && [ -n "$(ls -d kubernetes-*/ 2>/dev/null)" ] ||
			{ apt-get $APT_OPTS source --download-only "kubernetes=$ver" >&2 &&
			  dpkg-source --no-check -x kubernetes_*.dsc >&2; })
		tree=$(ls -d "$out"/src/kubernetes-*/ | head -1)
		[ -d "$tree" ] || die "source tree missing"
		# Go >= 1.18 faults in the vendored reflect2 1.0.1: use Debian's.
		for p in github.com/modern-go/reflect2 github.com/json-iterator/go; do
			[ -d "/usr/share/gocode/src/$p" ] || die "missing /usr/share/gocode/src/$p"
			rm -rf "$tree/vendor/$p"
			mkdir -p "$tree/vendor/$p"
			cp -rL "/usr/share/gocode/src/$p/." "$tree/vendor/$p/"
		done
		(cd "$tree" && PATH=/usr/lib/go-1.19/bin:$PATH GOPROXY=off CGO_ENABLED=0 \
			GOFLAGS=-mod=vendor GOCACHE="$out/gocache" \
			make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" >&2)
		cp "$tree"/_output/local/bin/linux/*/kube-apiserver \
		   "$tree"/_output/local/bin/linux/*/kube-controller-manager "$out/bin/"
	fi
	if [ ! -x "$out/bin/kubectl" ]; then
		(cd "$out" && rm -f kubernetes-client_*.deb &&
			apt-get $APT_OPTS download kubernetes-client >&2 &&
			dpkg-deb -x kubernetes-client_*.deb "$out/kc" &&
			cp "$out/kc/usr/bin/kubectl" "$out/bin/kubectl")
	fi
	echo "$out"
}

# A key and a certificate signed by the test CA: NAME CN [O] [SAN].
issue() {
	name=$1 cn=$2 org=${3:-} san=${4:-}
	subj="/CN=$cn"
	[ -z "$org" ] || subj="/O=$org/CN=$cn"
	openssl req -new -newkey rsa:2048 -nodes -keyout "$D/pki/$name.key" \
		-subj "$subj" -out "$D/pki/$name.csr" 2>/dev/null
	if [ -n "$san" ]; then
		printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$san" > "$D/pki/$name.ext"
	else
		printf 'extendedKeyUsage=clientAuth\n' > "$D/pki/$name.ext"
	fi
	openssl x509 -req -in "$D/pki/$name.csr" -CA "$D/pki/ca.crt" -CAkey "$D/pki/ca.key" \
		-CAcreateserial -days 2 -extfile "$D/pki/$name.ext" -out "$D/pki/$name.crt" 2>/dev/null
}

b64() { base64 -w0 < "$1"; }

# kubeconfig FILE USER-YAML [CA-FILE]
kubeconfig() {
	ca=${3:-$D/pki/ca.crt}
	cat > "$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $(b64 "$ca")
contexts:
- name: test
  context:
    cluster: test
    user: u
    namespace: ml
current-context: test
users:
- name: u
  user:
$2
KC
}

wait_ready() { # URL TOKEN SECONDS
	i=0
	while [ "$i" -lt "$(($3 * 10))" ]; do
		if curl -fsS --cacert "$D/pki/ca.crt" -H "Authorization: Bearer $2" "$1" \
			>/dev/null 2>&1; then
			return 0
		fi
		sleep 0.1
		i=$((i + 1))
	done
	return 1
}

python() {
	if [ -x /usr/bin/python3 ]; then echo /usr/bin/python3
	else command -v python3 || die "python3 is missing"; fi
}

# What the cluster needs from this machine, checked before anything starts.
preflight() {
	for tool in unshare nsenter ip etcd openssl curl; do
		command -v "$tool" >/dev/null 2>&1 || die "$tool is missing (scripts/install-deps --with-k8s)"
	done
	python >/dev/null
	err=$(unshare --net --pid --mount --fork --mount-proc true 2>&1) ||
		die "unshare --net --pid --mount does not work here (it needs root): $err"
	err=$(unshare --net sh -c 'ip link add cbr-probe type bridge && ip link set lo up' 2>&1) ||
		die "ip cannot make a bridge in a new network namespace: $err"
	err=$(nsenter --net=/proc/self/ns/net true 2>&1) ||
		die "nsenter does not work here (it needs root): $err"
}

# The PID, in this PID namespace, of the process holding the cluster's
# namespaces, if it still runs (checked against the recorded netns inode,
# so a recycled PID is never taken for it).
holder() {
	pid=$(cat "$1/holder.pid" 2>/dev/null) || return 1
	ino=$(cat "$1/netns.ino" 2>/dev/null) || return 1
	[ "$(stat -Lc %i "/proc/$pid/ns/net" 2>/dev/null)" = "$ino" ] || return 1
	state=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -c1)
	[ -n "$state" ] && [ "$state" != Z ] || return 1
	echo "$pid"
}

start() {
	D=$1
	preflight
	bin=$(build)
	mkdir -p "$D/pki" "$D/etcd" "$D/logs"
	D=$(cd "$D" && pwd)
	! holder "$D" >/dev/null || die "a cluster already runs in $D"
	rm -f "$D/stop" "$D/ready" "$D/failed" "$D/holder.pid" "$D/netns.ino"

	# PKI: a CA, the serving certificates (API server, kubelet), client
	# certificates, the service-account signing key, and a second CA
	# nobody trusts.
	openssl req -x509 -new -newkey rsa:2048 -nodes -keyout "$D/pki/ca.key" \
		-subj "/CN=mlpipe-test-ca" -days 2 -out "$D/pki/ca.crt" 2>/dev/null
	openssl req -x509 -new -newkey rsa:2048 -nodes -keyout "$D/pki/wrong-ca.key" \
		-subj "/CN=not-the-ca" -days 2 -out "$D/pki/wrong-ca.crt" 2>/dev/null
	issue apiserver kube-apiserver "" \
		"IP:127.0.0.1,DNS:localhost,IP:$POD_GATEWAY,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
	issue kubelet kubelet "" "IP:127.0.0.1,DNS:localhost"
	issue admin admin system:masters
	issue cert-deployer cert-deployer
	openssl genrsa -out "$D/pki/sa.key" 2048 2>/dev/null
	openssl rsa -in "$D/pki/sa.key" -pubout -out "$D/pki/sa.pub" 2>/dev/null
	ADMIN_TOKEN=admin-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
	cat > "$D/pki/tokens.csv" <<TOK
$ADMIN_TOKEN,admin,1,"system:masters"
deployer-token-1234567890,deployer,2
viewer-token-1234567890,viewer,3
exec-token-1234567890,exec-deployer,4
trainer-token-1234567890,trainer,5
TOK
	echo "$ADMIN_TOKEN" > "$D/pki/admin.token"

	kubeconfig "$D/admin.kubeconfig" "    token: $ADMIN_TOKEN"
	kubeconfig "$D/deployer.kubeconfig" "    token: deployer-token-1234567890"
	kubeconfig "$D/viewer.kubeconfig" "    token: viewer-token-1234567890"
	kubeconfig "$D/trainer.kubeconfig" "    token: trainer-token-1234567890"
	kubeconfig "$D/cert.kubeconfig" "    client-certificate-data: $(b64 "$D/pki/cert-deployer.crt")
    client-key-data: $(b64 "$D/pki/cert-deployer.key")"
	kubeconfig "$D/cert-files.kubeconfig" "    client-certificate: pki/cert-deployer.crt
    client-key: pki/cert-deployer.key"
	cat > "$D/exec-credential" <<'EX'
#!/bin/sh
# An exec credential plugin: prints an ExecCredential.  With $EXEC_HOOK
# set, runs it first (tests use it to edit the Deployment concurrently).
[ -z "${EXEC_HOOK:-}" ] || sh -c "$EXEC_HOOK" >/dev/null 2>&1
echo "plugin: issuing a token" >&2
printf '{"apiVersion":"client.authentication.k8s.io/v1beta1","kind":"ExecCredential","status":{"token":"%s"%s}}\n' \
	"exec-token-1234567890" "${EXEC_EXPIRY:+,\"expirationTimestamp\":\"$EXEC_EXPIRY\"}"
EX
	chmod +x "$D/exec-credential"
	kubeconfig "$D/exec.kubeconfig" "    exec:
      apiVersion: client.authentication.k8s.io/v1beta1
      command: ./exec-credential
      args: []"
	kubeconfig "$D/wrong-ca.kubeconfig" "    token: deployer-token-1234567890" \
		"$D/pki/wrong-ca.crt"

	# The holder: unshare stays in the new network and mount namespaces,
	# its child is PID 1 of the new PID namespace and runs `inside`.  When
	# that PID 1 exits, the kernel kills every process of the cluster;
	# --kill-child makes it exit if the holder is killed.
	host_ino=$(stat -Lc %i /proc/self/ns/net)
	unshare --net --pid --mount --fork --mount-proc --kill-child \
		sh "$here/cluster.sh" _inside "$D" "$bin" </dev/null >"$D/logs/cluster.log" 2>&1 &
	pid=$!
	echo "$pid" > "$D/holder.pid"
	i=0
	while [ "$i" -lt 1200 ]; do
		ino=$(stat -Lc %i "/proc/$pid/ns/net" 2>/dev/null) || break
		if [ "$ino" != "$host_ino" ]; then
			echo "$ino" > "$D/netns.ino"
			break
		fi
		sleep 0.01
		i=$((i + 1))
	done
	# Wait for the cluster to be ready: API server, controllers, nodes.
	i=0
	while [ ! -e "$D/ready" ] && [ ! -e "$D/failed" ] && [ "$i" -lt 1200 ] &&
	      holder "$D" >/dev/null; do
		sleep 0.1
		i=$((i + 1))
	done
	if [ ! -e "$D/ready" ]; then
		why=$(cat "$D/failed" 2>/dev/null || echo "it did not become ready (logs in $D/logs)")
		tail -5 "$D/logs/cluster.log" >&2 || true
		stop "$D"
		die "$why"
	fi

	cat > "$D/run" <<RUN
#!/bin/sh
# Runs a command in the network namespace of the test cluster in $D, where
# its API server (https://127.0.0.1:$API_PORT) and pod IPs are reachable.
# Only the network namespace changes: files, cwd, environment and user stay.
pid=\$(cat '$D/holder.pid' 2>/dev/null)
if [ -z "\$pid" ] || [ "\$(stat -Lc %i "/proc/\$pid/ns/net" 2>/dev/null)" != "\$(cat '$D/netns.ino' 2>/dev/null)" ]; then
	echo "run: the test cluster in $D is not running" >&2
	exit 125
fi
[ \$# -gt 0 ] || { echo "usage: $D/run COMMAND [ARG...]" >&2; exit 125; }
exec nsenter --net="/proc/\$pid/ns/net" -- "\$@"
RUN
	chmod +x "$D/run"
	cat > "$D/env" <<ENV
K8S_DIR='$D'
K8S_SERVER='https://127.0.0.1:$API_PORT'
K8S_API_PORT='$API_PORT'
K8S_ADMIN_TOKEN='$ADMIN_TOKEN'
KUBECTL='$bin/bin/kubectl'
K8S_RUN='$D/run'
K8S_KUBECONFIG='$D/admin.kubeconfig'
K8S_CONTEXT='test'
K8S_POD_CIDR='10.244.0.0/24'
K8S_NODES='$(cat "$D/nodes" 2>/dev/null)'
ENV
	echo "$D/env"
}

# PID 1 of the cluster's PID namespace, in its own network and mount
# namespaces: the pod bridge, etcd, the API server, the controllers and the
# kubelet; then wait for DIR/stop (or DIR to vanish, or two hours), stop
# them, and exit, which takes every remaining process of the cluster along.
inside() {
	D=$1 bin=$2
	ADMIN_TOKEN=$(cat "$D/pki/admin.token")
	stopping=0
	trap 'stopping=1' TERM HUP INT
	pids=
	set +e
	fail() {
		echo "cluster.sh: $*" > "$D/failed"
		finish
		exit 1
	}
	# Stop the daemons, newest (the kubelet) first, each for 5 s at most.
	finish() {
		for pid in $pids; do
			kill "$pid" 2>/dev/null
			i=0
			while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 50 ]; do
				sleep 0.1
				i=$((i + 1))
			done
		done
	}
	{ ip link set lo up && ip link add cbr0 type bridge &&
	  ip addr add "$POD_GATEWAY/24" dev cbr0 && ip link set cbr0 up; } ||
		fail "cannot make the pod bridge cbr0 ($POD_GATEWAY/24) with ip"

	etcd --name default --data-dir "$D/etcd" \
		--listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
		--advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
		--listen-peer-urls "http://127.0.0.1:$ETCD_PEER" \
		--initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
		--initial-cluster "default=http://127.0.0.1:$ETCD_PEER" \
		> "$D/logs/etcd.log" 2>&1 &
	pids="$! $pids"
	"$bin/bin/kube-apiserver" --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
		--bind-address 0.0.0.0 --secure-port "$API_PORT" --insecure-port 0 \
		--advertise-address 127.0.0.1 --endpoint-reconciler-type none \
		--tls-cert-file "$D/pki/apiserver.crt" --tls-private-key-file "$D/pki/apiserver.key" \
		--client-ca-file "$D/pki/ca.crt" --token-auth-file "$D/pki/tokens.csv" \
		--authorization-mode RBAC \
		--kubelet-certificate-authority "$D/pki/ca.crt" \
		--kubelet-preferred-address-types InternalIP \
		--service-account-issuer https://kubernetes.default.svc \
		--service-account-key-file "$D/pki/sa.pub" \
		--service-account-signing-key-file "$D/pki/sa.key" \
		--service-cluster-ip-range 10.0.0.0/24 \
		--disable-admission-plugins ServiceAccount \
		> "$D/logs/apiserver.log" 2>&1 &
	pids="$! $pids"
	if ! wait_ready "https://127.0.0.1:$API_PORT/readyz" "$ADMIN_TOKEN" 60; then
		tail -20 "$D/logs/apiserver.log" >&2
		fail "the API server did not become ready (logs in $D/logs)"
	fi
	"$bin/bin/kube-controller-manager" --kubeconfig "$D/admin.kubeconfig" \
		--controllers deployment,replicaset,job,endpoint,garbagecollector \
		--leader-elect=false --port 0 --secure-port 0 --concurrent-deployment-syncs 5 \
		> "$D/logs/controller-manager.log" 2>&1 &
	pids="$! $pids"
	"$(python)" "$here/kubelet.py" run "$D" "https://127.0.0.1:$API_PORT" "$ADMIN_TOKEN" \
		> "$D/logs/kubelet.log" 2>&1 &
	kubelet=$!
	pids="$kubelet $pids"
	i=0
	while [ ! -e "$D/kubelet/ready" ] && [ "$i" -lt 300 ]; do
		kill -0 "$kubelet" 2>/dev/null || break
		sleep 0.1
		i=$((i + 1))
	done
	if [ ! -e "$D/kubelet/ready" ]; then
		tail -20 "$D/logs/kubelet.log" >&2
		fail "the kubelet did not start (logs in $D/logs/kubelet.log)"
	fi
	"$bin/bin/kubectl" --kubeconfig "$D/admin.kubeconfig" get nodes \
		-o 'jsonpath={.items[*].metadata.name}' > "$D/nodes" 2>/dev/null
	touch "$D/ready"
	n=0
	while [ "$stopping" = 0 ] && [ ! -e "$D/stop" ] && [ -d "$D" ] && [ "$n" -lt 14400 ]; do
		sleep 0.5
		n=$((n + 1))
	done
	finish
	exit 0
}

stop() {
	D=$1
	[ -e "$D/holder.pid" ] || return 0
	touch "$D/stop" 2>/dev/null || true
	# PID 1 stops the daemons (the kubelet stops its pods) and exits.
	i=0
	while holder "$D" >/dev/null && [ "$i" -lt 150 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	if pid=$(holder "$D"); then
		kill -9 "$pid" 2>/dev/null || true
		i=0
		while holder "$D" >/dev/null && [ "$i" -lt 50 ]; do
			sleep 0.1
			i=$((i + 1))
		done
	fi
	! holder "$D" >/dev/null || die "the cluster in $D did not stop"
	rm -f "$D/holder.pid" "$D/netns.ino"
}

case "${1:-}" in
build) build ;;
check) preflight ;;
start) [ $# -eq 2 ] || die "usage: cluster.sh start DIR"; start "$2" ;;
stop) [ $# -eq 2 ] || die "usage: cluster.sh stop DIR"; stop "$2" ;;
_inside) inside "$2" "$3" ;;
*) die "usage: cluster.sh build|check|start DIR|stop DIR" ;;
esac
