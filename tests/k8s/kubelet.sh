#!/bin/sh
# tests/k8s/kubelet.sh - the test cluster's kubelet (kubelet.py), proven
# with kubectl 1.20 and the admin kubeconfig only, no mlpipe: Jobs whose
# pods find each other through a headless Service and talk over TCP (one
# Job per rank, and one 2-pod Job), init containers and volumes, exit
# codes and termination messages, `kubectl logs -f` and the log API's
# parameters, the scheduler's Unschedulable message, graceful deletion,
# the dns-delay hook, pods/proxy, and a `cluster.sh stop` that leaves
# nothing behind.  TAP; run by `make check-k8s`.
#
# Without the harness's packages (scripts/install-deps --with-k8s) it
# prints "1..0 # SKIP" and exits 0, unless MLPIPE_K8S_REQUIRED=1.
. "$MLPIPE_TEST_SRCDIR/functional/lib.sh"
. "$MLPIPE_TEST_SRCDIR/k8s/k8s-lib.sh"

k8s_need etcd openssl curl jq python3 dpkg-deb ip
# Containers run this machine's programs: a python for the servers.
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3)

# What the host looks like before the cluster: nothing may be left after.
# (Other programs on the machine may mount or add links meanwhile: only
# what this cluster could leave is compared.)
host_links() { ip -o link | awk -F': ' '$2 ~ /^(veth|cbr0)/ {print $2}' | sort; }
host_mounts() { # mounts over what sandboxes cover, and anything from $T
	awk -v t="$T" '$5 == "/" || $5 == "/dev" || $5 == "/etc/hosts" ||
		$5 == "/etc/resolv.conf" || index($4, t) == 1 || index($5, t) == 1 {print $5}' \
		/proc/self/mountinfo | sort
}
host_links > "$T/links.before"
host_mounts > "$T/mounts.before"
ip netns list > "$T/netns.before" 2>/dev/null || true

k8s_start
kc() { "$KUBECTL" --kubeconfig "$K8S_KUBECONFIG" --context "$K8S_CONTEXT" -n t "$@"; }
# get KIND/NAME JSONPATH: a field, or "" if there is no such object.
get() { kc get "$1" -o "jsonpath=$2" 2>/dev/null || true; }
phase_in() { # POD PHASE...: the pod's phase is one of PHASE
	ph=$(get "pod/$1" '{.status.phase}')
	shift
	for want in "$@"; do [ "$ph" = "$want" ] && return 0; done
	return 1
}
gone() { ! kc get "pod/$1" >/dev/null 2>&1; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

kc create namespace t >/dev/null

# --- nodes ------------------------------------------------------------------------
nodes=$(kc get nodes -o json)
expect_eq "two nodes" "node-0 node-1" "$(printf '%s\n' "$nodes" | jq -r '[.items[].metadata.name] | join(" ")')"
expect_eq "both Ready" "True True" \
	"$(printf '%s\n' "$nodes" | jq -r '[.items[].status.conditions[] | select(.type == "Ready") | .status] | join(" ")')"
expect_eq "pretend GPUs are allocatable" "2 2" \
	"$(printf '%s\n' "$nodes" | jq -r '[.items[].status.allocatable["nvidia.com/gpu"]] | join(" ")')"
expect_eq "the admission's not-ready taint is lifted" "" \
	"$(printf '%s\n' "$nodes" | jq -r '[.items[].spec.taints[]?] | length | select(. > 0)')"
expect_eq "the kubelet's address and port" "127.0.0.1:10250" \
	"$(printf '%s\n' "$nodes" | jq -r '.items[0] | "\(.status.addresses[] | select(.type == "InternalIP") | .address):\(.status.daemonEndpoints.kubeletEndpoint.Port)"')"

# --- two Jobs whose pods talk over TCP through a headless Service --------------------
# 1.20 has no Indexed Jobs: one Job per rank, each pod with its hostname,
# all under the Service's subdomain.
job() { # NAME SCRIPT
	cat <<JOB
apiVersion: batch/v1
kind: Job
metadata: {name: $1}
spec:
  backoffLimit: 0
  template:
    metadata: {labels: {group: pair}}
    spec:
      restartPolicy: Never
      hostname: $1
      subdomain: pair
      containers:
      - name: main
        image: registry.local/trainer:1
        command: ["$PY", "-c"]
        args:
        - |
$(printf '%s\n' "$2" | sed 's/^/          /')
---
JOB
}
{
	cat <<'SVC'
apiVersion: v1
kind: Service
metadata: {name: pair}
spec:
  clusterIP: None
  publishNotReadyAddresses: true
  selector: {group: pair}
  ports: [{port: 7000}]
---
SVC
	job pair-0 'import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7000))
s.listen(1)
print("server", socket.gethostname(), "listening", flush=True)
c, addr = s.accept()
line = c.makefile().readline().strip()
print("got %r from %s" % (line, addr[0]), flush=True)
c.sendall(b"pong from pair-0\n")
open("/dev/termination-log", "w").write("served " + addr[0])'
	job pair-1 'import socket, sys, time
for i in range(200):
    try:
        c = socket.create_connection(("pair-0.pair", 7000), timeout=2)
        break
    except OSError as e:
        time.sleep(0.1)
else:
    sys.exit("pair-0.pair never answered")
c.sendall(b"ping from pair-1\n")
print("reply:", c.makefile().readline().strip(), flush=True)
open("/dev/termination-log", "w").write("talked to " + c.getpeername()[0])'
} | kc apply -f - >/dev/null
jobs_done() { [ "$(get job/pair-0 '{.status.succeeded}')$(get job/pair-1 '{.status.succeeded}')" = 11 ]; }
wait_for 60 jobs_done || true
expect_eq "both Jobs complete" 11 "$(get job/pair-0 '{.status.succeeded}')$(get job/pair-1 '{.status.succeeded}')"
pods=$(kc get pods -l group=pair -o json)
pod_of() { printf '%s\n' "$pods" | jq -r --arg j "$1" '.items[] | select(.metadata.labels["job-name"] == $j) | '"$2"; }
ip0=$(pod_of pair-0 .status.podIP) ip1=$(pod_of pair-1 .status.podIP)
expect_match "pod IPs come from 10.244.0.0/24" '^10\.244\.0\.[0-9]+ 10\.244\.0\.[0-9]+$' "$ip0 $ip1"
expect_eq "the two pods are spread over both nodes" "node-0 node-1" \
	"$(echo "$(pod_of pair-0 .spec.nodeName) $(pod_of pair-1 .spec.nodeName)" | tr ' ' '\n' | sort | paste -sd' ')"
expect_eq "both pods Succeeded" "Succeeded Succeeded" "$(pod_of pair-0 .status.phase) $(pod_of pair-1 .status.phase)"
expect_eq "exit codes and reasons" "0 Completed 0 Completed" \
	"$(pod_of pair-0 '.status.containerStatuses[0].state.terminated | "\(.exitCode) \(.reason)"') $(pod_of pair-1 '.status.containerStatuses[0].state.terminated | "\(.exitCode) \(.reason)"')"
log0=$(kc logs "$(pod_of pair-0 .metadata.name)" 2>&1 || true)
log1=$(kc logs "$(pod_of pair-1 .metadata.name)" 2>&1 || true)
expect_match "pair-0 runs under its own hostname" "^server pair-0 listening" "$log0"
expect_match "pair-0 got pair-1's line from pair-1's pod IP" "got 'ping from pair-1' from $ip1\$" "$log0"
expect_match "pair-1 got the answer" "^reply: pong from pair-0\$" "$log1"
expect_eq "pair-0's termination message" "served $ip1" \
	"$(pod_of pair-0 '.status.containerStatuses[0].state.terminated.message')"
expect_eq "pair-1's termination message names pair-0's IP" "talked to $ip0" \
	"$(pod_of pair-1 '.status.containerStatuses[0].state.terminated.message')"
expect_eq "no /dev/termination-log was made on the host" no \
	"$([ -e /dev/termination-log ] && echo yes || echo no)"

# --- one 2-pod Job: both pods share a hostname, the name lists both -------------------------
# Without Indexed Jobs the pods of one Job share one template, so one
# hostname: "w.duo" resolves to both pod IPs, and each pod talks to the
# address that is not its own (the lower IP serves).
kc apply -f - >/dev/null <<JOB
apiVersion: v1
kind: Service
metadata: {name: duo}
spec:
  clusterIP: None
  publishNotReadyAddresses: true
  selector: {group: duo}
  ports: [{port: 7100}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: duo}
spec:
  completions: 2
  parallelism: 2
  backoffLimit: 0
  template:
    metadata: {labels: {group: duo}}
    spec:
      restartPolicy: Never
      hostname: w
      subdomain: duo
      containers:
      - name: main
        image: registry.local/trainer:1
        env:
        - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
        command: ["$PY", "-c"]
        args:
        - |
          import os, socket, sys, time
          me = os.environ["POD_IP"]
          for i in range(200):
              try:
                  ips = sorted({a[4][0] for a in socket.getaddrinfo(
                      "w.duo", 7100, socket.AF_INET, socket.SOCK_STREAM)})
              except socket.gaierror:
                  ips = []
              if len(ips) == 2:
                  break
              time.sleep(0.1)
          else:
              sys.exit("w.duo never listed both pods: %s" % ips)
          peer = [ip for ip in ips if ip != me][0]
          if me == ips[0]:
              s = socket.socket()
              s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
              s.bind((me, 7100))
              s.listen(1)
              c, addr = s.accept()
              line = c.makefile().readline().strip()
              c.sendall(b"welcome\\n")
              print("server got %r from %s" % (line, addr[0]), flush=True)
          else:
              for i in range(100):
                  try:
                      c = socket.create_connection((peer, 7100), timeout=2)
                      break
                  except OSError:
                      time.sleep(0.1)
              c.sendall(("hello from %s\\n" % me).encode())
              print("client got %r from %s" % (c.makefile().readline().strip(), peer), flush=True)
          open("/dev/termination-log", "w").write("peer " + peer)
JOB
duo_done() { [ "$(get job/duo '{.status.succeeded}')" = 2 ]; }
wait_for 60 duo_done || true
expect_eq "a 2-pod Job: both pods succeed" 2 "$(get job/duo '{.status.succeeded}')"
duo=$(kc get pods -l job-name=duo -o json)
duo_ips=$(printf '%s\n' "$duo" | jq -r '[.items[].status.podIP] | sort | join(" ")')
duo_logs=$(for p in $(printf '%s\n' "$duo" | jq -r '.items[].metadata.name'); do kc logs "$p"; done 2>&1)
expect_match "the lower IP served the other pod's line" \
	"server got 'hello from ${duo_ips#* }' from ${duo_ips#* }" "$duo_logs"
expect_match "the other pod got the answer from the lower IP" \
	"client got 'welcome' from ${duo_ips% *}" "$duo_logs"
expect_eq "each pod's termination message names the other" "peer ${duo_ips#* } peer ${duo_ips% *}" \
	"$(printf '%s\n' "$duo" | jq -r '[.items[] | {ip: .status.podIP, m: .status.containerStatuses[0].state.terminated.message}] | sort_by(.ip) | map(.m) | join(" ")')"

# --- exit codes, signals, init containers ------------------------------------------------
kc apply -f - >/dev/null <<'POD'
apiVersion: v1
kind: Pod
metadata: {name: exit7}
spec:
  restartPolicy: Never
  containers:
  - {name: c, image: x, command: ["sh", "-c", "echo bye > /dev/termination-log; exit 7"]}
---
apiVersion: v1
kind: Pod
metadata: {name: killed}
spec:
  restartPolicy: Never
  containers:
  # $$ is Kubernetes' escape for $: the shell sees "kill -9 $$".
  - {name: c, image: x, command: ["sh", "-c", "kill -9 $$$$"]}
---
apiVersion: v1
kind: Pod
metadata: {name: initfail}
spec:
  restartPolicy: Never
  initContainers:
  - {name: prep, image: x, command: ["sh", "-c", "exit 3"]}
  containers:
  - {name: c, image: x, command: ["true"]}
POD
wait_for 20 phase_in exit7 Failed || true
wait_for 20 phase_in killed Failed || true
wait_for 20 phase_in initfail Failed || true
expect_eq "exit 7: Failed, exit code, reason, message" "Failed 7 Error bye" \
	"$(get pod/exit7 '{.status.phase} {.status.containerStatuses[0].state.terminated.exitCode} {.status.containerStatuses[0].state.terminated.reason} {.status.containerStatuses[0].state.terminated.message}')"
expect_eq "killed by signal 9: exit code 137" "Failed 137" \
	"$(get pod/killed '{.status.phase} {.status.containerStatuses[0].state.terminated.exitCode}')"
expect_eq "a failing init container fails the pod" "Failed 3 PodInitializing" \
	"$(get pod/initfail '{.status.phase} {.status.initContainerStatuses[0].state.terminated.exitCode} {.status.containerStatuses[0].state.waiting.reason}')"

# --- init containers, volumes, environment ------------------------------------------------
# Mount points that do not exist (a new top-level directory, one in /etc)
# are made inside the container only, never on the host.
vol=/mlpipe-test-vol-$$
kc create secret generic creds --from-literal=token=s3cret >/dev/null
kc create configmap settings --from-literal=mode=fast >/dev/null
kc apply -f - >/dev/null <<POD
apiVersion: v1
kind: Pod
metadata: {name: vols, labels: {app: v}}
spec:
  restartPolicy: Never
  initContainers:
  - name: prep
    image: x
    command: ["sh", "-c", "echo prepared > $vol/data.txt"]
    volumeMounts: [{name: shared, mountPath: $vol}]
  containers:
  - name: main
    image: x
    workingDir: $vol-work
    command:
    - sh
    - -c
    - |
      pwd; cat $vol/data.txt /etc/mlpipe-test-cfg/mode; echo
      echo "\$TOKEN \$APP \$HOSTNAME"
      grep -c "	vols\$" /etc/hosts
      touch /etc/mlpipe-test-cfg/x 2>/dev/null || echo read-only
    env:
    - {name: TOKEN, valueFrom: {secretKeyRef: {name: creds, key: token}}}
    - {name: APP, valueFrom: {fieldRef: {fieldPath: "metadata.labels['app']"}}}
    volumeMounts:
    - {name: shared, mountPath: $vol}
    - {name: cfg, mountPath: /etc/mlpipe-test-cfg}
  volumes:
  - {name: shared, emptyDir: {}}
  - {name: cfg, configMap: {name: settings}}
POD
wait_for 20 phase_in vols Succeeded Failed || true
expect_eq "init container, emptyDir, configMap, secret and fieldRef env" \
	"Succeeded|$vol-work|prepared|fast|s3cret v vols|1|read-only" \
	"$(get pod/vols '{.status.phase}')|$(kc logs vols 2>&1 | paste -sd'|')"
expect_eq "no mount point or working directory was made on the host" "" \
	"$(ls -d "$vol" "$vol-work" /etc/mlpipe-test-cfg 2>/dev/null || true)"

# --- logs: live, and the log API's parameters ----------------------------------------------
kc apply -f - >/dev/null <<'POD'
apiVersion: v1
kind: Pod
metadata: {name: ticker}
spec:
  restartPolicy: Never
  containers:
  - name: t
    image: x
    command: ["sh", "-c", "i=0; while [ $i -lt 8 ]; do echo tick $i; i=$((i + 1)); sleep 0.5; done"]
POD
wait_for 20 phase_in ticker Running Succeeded || true
kc logs -f ticker > "$T/follow.out" 2>&1 &
follower=$!
wait_for 10 grep -q 'tick 1' "$T/follow.out" || true
early=$(cat "$T/follow.out")
expect_match "logs -f shows lines as they are written" 'tick 1' "$early"
expect_eq "... before the container has finished" "no Running" \
	"$(if grep -q 'tick 7' "$T/follow.out"; then echo yes; else echo no; fi) $(get pod/ticker '{.status.phase}')"
i=0
while kill -0 "$follower" 2>/dev/null && [ "$i" -lt 150 ]; do sleep 0.1; i=$((i + 1)); done
kill "$follower" 2>/dev/null || true
set +e
wait "$follower"
frc=$?
set -e
expect_eq "logs -f ends when the container has ended" 0 "$frc"
expect_eq "logs -f got every line" "tick 0 tick 1 tick 2 tick 3 tick 4 tick 5 tick 6 tick 7" \
	"$(paste -sd' ' "$T/follow.out")"
stamped=$(kc get --raw "/api/v1/namespaces/t/pods/ticker/log?timestamps=true" 2>&1 || true)
expect_match "timestamps are RFC 3339 with nanoseconds" \
	'^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?Z tick 0$' "$(echo "$stamped" | head -1)"
# sinceTime (whole seconds, as the API server passes it) = tick 7's second.
since=$(echo "$stamped" | awk '/tick 7/ {print substr($1, 1, 19) "Z"}')
later=$(kc get --raw "/api/v1/namespaces/t/pods/ticker/log?follow=true&timestamps=true&sinceTime=$since" 2>&1 || true)
expect_match "follow+timestamps+sinceTime: the last line is there" 'Z tick 7$' "$later"
expect_eq "follow+timestamps+sinceTime: earlier lines are not" "" "$(echo "$later" | grep 'tick 0' || true)"
expect_eq "tailLines" "tick 6 tick 7" \
	"$(kc get --raw "/api/v1/namespaces/t/pods/ticker/log?tailLines=2" 2>&1 | paste -sd' ')"
expect_eq "limitBytes" "tick 0" "$(kc get --raw "/api/v1/namespaces/t/pods/ticker/log?limitBytes=6" 2>&1)"
expect_eq "sinceSeconds" 8 "$(kc logs ticker --since=1h 2>&1 | grep -c tick)"
kc apply -f - >/dev/null <<'POD'
apiVersion: v1
kind: Pod
metadata: {name: slowinit}
spec:
  restartPolicy: Never
  initContainers: [{name: wait, image: x, command: ["sleep", "60"]}]
  containers: [{name: c, image: x, command: ["echo", "late"]}]
POD
initializing() { [ -n "$(get pod/slowinit '{.status.initContainerStatuses[0].state.running}')" ]; }
wait_for 20 initializing || true
expect_match "a container not started yet: the kubelet's message" \
	'container "c" in pod "slowinit" is waiting to start: PodInitializing' \
	"$(kc logs slowinit -c c 2>&1 || true)"

# --- the scheduler ---------------------------------------------------------------------------
kc apply -f - >/dev/null <<'POD'
apiVersion: v1
kind: Pod
metadata: {name: gpu-hog}
spec:
  containers:
  - {name: c, image: x, command: ["sleep", "60"], resources: {limits: {nvidia.com/gpu: 3}}}
---
apiVersion: v1
kind: Pod
metadata: {name: gpu-one}
spec:
  containers:
  - {name: c, image: x, command: ["sleep", "60"], resources: {limits: {nvidia.com/gpu: 1}}}
POD
unschedulable() { [ "$(get pod/gpu-hog '{.status.conditions[0].reason}')" = Unschedulable ]; }
wait_for 10 unschedulable || true
expect_eq "too many GPUs: Unschedulable" "False Unschedulable" \
	"$(get pod/gpu-hog '{.status.conditions[0].status} {.status.conditions[0].reason}')"
expect_eq "... with kube-scheduler's message" "0/2 nodes are available: 2 Insufficient nvidia.com/gpu." \
	"$(get pod/gpu-hog '{.status.conditions[0].message}')"
expect_match "... and a FailedScheduling event" 'FailedScheduling.*Insufficient nvidia.com/gpu' \
	"$(kc get events --field-selector involvedObject.name=gpu-hog 2>&1 || true)"
wait_for 10 phase_in gpu-one Running || true
expect_eq "one GPU fits" Running "$(get pod/gpu-one '{.status.phase}')"

# --- graceful deletion --------------------------------------------------------------------------
cat > "$T/graceful.sh" <<EOF
trap 'echo TERM > "$T/graceful.marker"; exit 0' TERM
echo ready
while :; do sleep 0.1; done
EOF
kc apply -f - >/dev/null <<POD
apiVersion: v1
kind: Pod
metadata: {name: graceful}
spec:
  terminationGracePeriodSeconds: 30
  containers: [{name: c, image: x, command: ["sh", "$T/graceful.sh"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: stubborn}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - {name: c, image: x, command: ["sh", "-c", "trap '' TERM; while :; do sleep 0.1; done", "stubborn-$$"]}
POD
wait_for 20 phase_in graceful Running || true
graceful_ready() { kc logs graceful 2>/dev/null | grep -q ready; }
wait_for 10 graceful_ready || true
t0=$(now_ms)
kc delete pod graceful --wait=false >/dev/null
wait_for 10 test -e "$T/graceful.marker" || true
expect_eq "deletion sends SIGTERM first (the trap ran)" TERM "$(cat "$T/graceful.marker" 2>/dev/null)"
wait_for 10 gone graceful || true
took=$(($(now_ms) - t0))
expect_eq "the pod is gone afterwards" yes "$(gone graceful && echo yes || echo no)"
expect_eq "... well within its 30 s grace period (it exited on TERM)" yes \
	"$([ "$took" -lt 5000 ] && echo yes || echo "no: $took ms")"
wait_for 20 phase_in stubborn Running || true
t0=$(now_ms)
kc delete pod stubborn --wait=false >/dev/null
wait_for 15 gone stubborn || true
took=$(($(now_ms) - t0))
expect_eq "a container ignoring SIGTERM is killed after the grace period" yes \
	"$(gone stubborn && [ "$took" -ge 1900 ] && [ "$took" -lt 8000 ] && echo yes || echo "no: $took ms")"
expect_eq "... and its processes are gone" "" \
	"$(grep -l "stubborn-$$" /proc/[0-9]*/cmdline 2>/dev/null || true)"

# --- dns-delay -----------------------------------------------------------------------------------
# Each pod measures how long until "anchor.dd" resolves from inside it.
probe() { # NAME [DELAY]
	cat <<POD
apiVersion: v1
kind: Pod
metadata:
  name: $1
  labels: {grp: dd}
  annotations: {test.mlpipe.dev/dns-delay: "${2:-0}"}
spec:
  restartPolicy: Never
  hostname: $1
  subdomain: dd
  containers:
  - name: c
    image: x
    command:
    - sh
    - -c
    - |
      s=\$(date +%s%N); i=0
      until getent hosts anchor.dd >/dev/null; do
        i=\$((i + 1)); [ \$i -gt 300 ] && exit 1; sleep 0.05
      done
      echo "seen after \$(( (\$(date +%s%N) - s) / 1000000 )) ms"
      grep "\$(hostname)" /etc/hosts
---
POD
}
kc apply -f - >/dev/null <<'POD'
apiVersion: v1
kind: Service
metadata: {name: dd}
spec: {clusterIP: None, publishNotReadyAddresses: true, selector: {grp: dd}, ports: [{port: 1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: anchor, labels: {grp: dd}}
spec:
  hostname: anchor
  subdomain: dd
  containers: [{name: c, image: x, command: ["sleep", "120"]}]
POD
anchored() { get endpoints/dd '{.subsets[*].addresses[*].hostname}' | grep -q anchor; }
wait_for 20 anchored || true
{ probe prompt; probe delayed 3; } | kc apply -f - >/dev/null
wait_for 20 phase_in prompt Succeeded Failed || true
wait_for 20 phase_in delayed Succeeded Failed || true
ms() { kc logs "$1" 2>/dev/null | sed -n 's/^seen after \([0-9]*\) ms$/\1/p'; }
prompt_ms=$(ms prompt) delayed_ms=$(ms delayed)
expect_eq "without a delay a peer resolves at once" yes \
	"$([ -n "$prompt_ms" ] && [ "$prompt_ms" -lt 1500 ] && echo yes || echo "no: '$prompt_ms' ms")"
expect_eq "dns-delay 3 hides the peer for about 3 s" yes \
	"$([ -n "$delayed_ms" ] && [ "$delayed_ms" -ge 2000 ] && [ "$delayed_ms" -lt 8000 ] && echo yes || echo "no: '$delayed_ms' ms")"
expect_match "a pod's own hosts line, as the kubelet writes it" \
	"^$(get pod/delayed '{.status.podIP}' | sed 's/\./\\./g')	delayed\.dd\.t\.svc\.cluster\.local	delayed\$" \
	"$(kc logs delayed 2>&1 || true)"

# --- pods/proxy -------------------------------------------------------------------------------------
mkdir -p "$T/www"
echo "hello from the pod" > "$T/www/hello.txt"
kc apply -f - >/dev/null <<POD
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers:
  - {name: web, image: x, command: ["$PY", "-m", "http.server", "8080", "--directory", "$T/www"]}
POD
served() { kc get --raw /api/v1/namespaces/t/pods/web:8080/proxy/hello.txt | grep -q hello; }
wait_for 20 served || true
expect_eq "pods/proxy reaches a pod's HTTP server" "hello from the pod" \
	"$(kc get --raw /api/v1/namespaces/t/pods/web:8080/proxy/hello.txt 2>&1 || true)"

# --- stop leaves nothing behind ---------------------------------------------------------------------
holder=$(cat "$C/holder.pid")
netns=$(cat "$C/netns.ino")
pidns=$(stat -Lc %i "/proc/$holder/ns/pid_for_children")
sh "$k8s_here/cluster.sh" stop "$C"
left=
for p in /proc/[0-9]*; do
	n=$(stat -Lc %i "$p/ns/net" 2>/dev/null || true)
	q=$(stat -Lc %i "$p/ns/pid" 2>/dev/null || true)
	if [ "$n" = "$netns" ] || [ "$q" = "$pidns" ] ||
	   { tr '\0' ' ' < "$p/cmdline"; } 2>/dev/null | grep -q "$C"; then
		left="$left ${p#/proc/}"
	fi
done
expect_eq "after stop: no process of the cluster or its pods" "" "$left"
expect_eq "after stop: no network namespace" "$(cat "$T/netns.before")" "$(ip netns list 2>/dev/null || true)"
expect_eq "after stop: no veth or bridge on the host" "$(cat "$T/links.before")" "$(host_links)"
expect_eq "after stop: no mount" "$(cat "$T/mounts.before")" "$(host_mounts)"
set +e
"$K8S_RUN" true 2>/dev/null
rrc=$?
set -e
expect_eq "after stop: DIR/run refuses" 125 "$rrc"

finish
