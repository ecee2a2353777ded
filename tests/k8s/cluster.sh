#!/bin/sh
# tests/k8s/cluster.sh — a real, local Kubernetes control plane for the
# rollout tests: kube-apiserver and kube-controller-manager built from
# Debian's `kubernetes` source package (cached outside the clone), Debian's
# etcd, a test CA with TLS on loopback, static tokens, client certificates,
# RBAC, and a fake kubelet that marks pods ready unless their image matches
# a "bad" pattern.
#
# Usage:
#   cluster.sh build          build (or reuse) the binaries in the cache
#   cluster.sh start DIR      start a cluster whose state lives in DIR;
#                             writes DIR/env (sourceable) and kubeconfigs
#   cluster.sh stop DIR       stop the cluster started in DIR
#
# Cache: $MLPIPE_K8S_CACHE (default /var/cache/mlpipe-k8s), keyed on the
# source package version. Needs (scripts/install-deps --with-k8s):
# golang-1.19-go rsync etcd-server openssl curl jq dpkg-dev.
set -eu

CACHE=${MLPIPE_K8S_CACHE:-/var/cache/mlpipe-k8s}
BAD_PATTERN=${MLPIPE_K8S_BAD_IMAGE:-bad}

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

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
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

start() {
	D=$1
	bin=$(build)
	mkdir -p "$D/pki" "$D/etcd" "$D/logs"
	D=$(cd "$D" && pwd)
	: > "$D/pids"
	ETCD_PORT=$(free_port) ETCD_PEER=$(free_port) API_PORT=$(free_port)

	# PKI: a CA, the serving certificate, client certificates, the
	# service-account signing key, and a second CA nobody trusts.
	openssl req -x509 -new -newkey rsa:2048 -nodes -keyout "$D/pki/ca.key" \
		-subj "/CN=mlpipe-test-ca" -days 2 -out "$D/pki/ca.crt" 2>/dev/null
	openssl req -x509 -new -newkey rsa:2048 -nodes -keyout "$D/pki/wrong-ca.key" \
		-subj "/CN=not-the-ca" -days 2 -out "$D/pki/wrong-ca.crt" 2>/dev/null
	issue apiserver kube-apiserver "" "IP:127.0.0.1,DNS:localhost"
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
TOK

	etcd --name default --data-dir "$D/etcd" \
		--listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
		--advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
		--listen-peer-urls "http://127.0.0.1:$ETCD_PEER" \
		--initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
		--initial-cluster "default=http://127.0.0.1:$ETCD_PEER" \
		> "$D/logs/etcd.log" 2>&1 &
	echo $! >> "$D/pids"
	"$bin/bin/kube-apiserver" --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
		--bind-address 127.0.0.1 --secure-port "$API_PORT" --insecure-port 0 \
		--advertise-address 127.0.0.1 --endpoint-reconciler-type none \
		--tls-cert-file "$D/pki/apiserver.crt" --tls-private-key-file "$D/pki/apiserver.key" \
		--client-ca-file "$D/pki/ca.crt" --token-auth-file "$D/pki/tokens.csv" \
		--authorization-mode RBAC \
		--service-account-issuer https://kubernetes.default.svc \
		--service-account-key-file "$D/pki/sa.pub" \
		--service-account-signing-key-file "$D/pki/sa.key" \
		--service-cluster-ip-range 10.0.0.0/24 \
		--disable-admission-plugins ServiceAccount \
		> "$D/logs/apiserver.log" 2>&1 &
	echo $! >> "$D/pids"

	kubeconfig "$D/admin.kubeconfig" "    token: $ADMIN_TOKEN"
	kubeconfig "$D/deployer.kubeconfig" "    token: deployer-token-1234567890"
	kubeconfig "$D/viewer.kubeconfig" "    token: viewer-token-1234567890"
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

	if ! wait_ready "https://127.0.0.1:$API_PORT/readyz" "$ADMIN_TOKEN" 60; then
		tail -20 "$D/logs/apiserver.log" >&2
		stop "$D"
		die "the API server did not become ready"
	fi
	"$bin/bin/kube-controller-manager" --kubeconfig "$D/admin.kubeconfig" \
		--controllers deployment,replicaset,garbagecollector --leader-elect=false \
		--port 0 --secure-port 0 --concurrent-deployment-syncs 5 \
		> "$D/logs/controller-manager.log" 2>&1 &
	echo $! >> "$D/pids"
	sh "$(dirname "$0")/fake-kubelet.sh" "$D" "https://127.0.0.1:$API_PORT" "$ADMIN_TOKEN" \
		"$BAD_PATTERN" > "$D/logs/kubelet.log" 2>&1 &
	echo $! >> "$D/pids"
	cat > "$D/env" <<ENV
K8S_DIR='$D'
K8S_SERVER='https://127.0.0.1:$API_PORT'
K8S_API_PORT='$API_PORT'
K8S_ADMIN_TOKEN='$ADMIN_TOKEN'
KUBECTL='$bin/bin/kubectl'
ENV
	echo "$D/env"
}

stop() {
	D=$1
	[ -f "$D/pids" ] || return 0
	touch "$D/stop"
	# Newest first: kubelet, controller-manager, apiserver, etcd.
	for pid in $(tac "$D/pids"); do
		kill "$pid" 2>/dev/null || true
	done
	for pid in $(tac "$D/pids"); do
		i=0
		while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 50 ]; do
			sleep 0.1
			i=$((i + 1))
		done
		kill -9 "$pid" 2>/dev/null || true
	done
	rm -f "$D/pids"
}

case "${1:-}" in
build) build ;;
start) [ $# -eq 2 ] || die "usage: cluster.sh start DIR"; start "$2" ;;
stop) [ $# -eq 2 ] || die "usage: cluster.sh stop DIR"; stop "$2" ;;
*) die "usage: cluster.sh build|start DIR|stop DIR" ;;
esac
