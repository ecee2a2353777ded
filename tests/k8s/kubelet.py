#!/usr/bin/python3
# tests/k8s/kubelet.py - the test cluster's kubelet and scheduler.
#
# One process plays N nodes (node-0, node-1, ...) and the scheduler of the
# test cluster that tests/k8s/cluster.sh starts.  It runs inside the
# cluster's own network, PID and mount namespaces, next to the real
# kube-apiserver and kube-controller-manager, and does what a kubelet with a
# container runtime would do, minus images:
#
#   - registers the Node objects (capacity, allocatable, a pretend
#     nvidia.com/gpu count, labels, taints, Ready, the log server's port);
#   - binds unscheduled pods to a node that fits them (requests, node
#     selector and affinity, taints), or marks them Unschedulable with
#     kube-scheduler 1.20's message;
#   - gives each pod a sandbox: a pause process in new network, UTS and
#     mount namespaces, a veth on the cluster's bridge with an IP from
#     10.244.0.0/24, its hostname, and /etc/hosts and /etc/resolv.conf
#     bind-mounted in its mount namespace; the hosts file also lists the
#     pods behind the headless Service named by spec.subdomain (a stand-in
#     for cluster DNS), kept up to date as Endpoints change;
#   - runs init containers then containers as local processes (the host's
#     programs: there are no images) joined to the sandbox, each in a mount
#     namespace of its own with its volumes bound in, in its own process
#     group, output to a timestamped log;
#   - reports pod status as the real kubelet does (phase, conditions,
#     container states, exit codes, termination messages), restarts
#     containers per restartPolicy, and finishes graceful deletions
#     (SIGTERM, SIGKILL after the grace period, then the final DELETE);
#   - serves /containerLogs over TLS for `kubectl logs [-f]`;
#   - runs httpGet readiness probes (periodSeconds, initialDelaySeconds,
#     timeoutSeconds, success/failureThreshold, named ports) against the pod
#     IP for containers that run a process: such a container is ready only
#     while its probe passes (the model server's rollout tests).
#
# Pods whose containers have neither command nor args run no process: their
# containers just count as running and ready (the Deployments of the rollout
# tests).  Images matching $MLPIPE_K8S_BAD_IMAGE (default "bad") never become
# ready; images matching $MLPIPE_K8S_PULL_ERROR_IMAGE (default
# "no-such-image") stay waiting in ImagePullBackOff.  See tests/k8s/README.md
# for every knob.
#
# Usage (cluster.sh does this):  kubelet.py run DIR SERVER TOKEN
#   DIR     the cluster directory (DIR/pki/ca.crt, DIR/pki/kubelet.{crt,key});
#           the kubelet's state lives in DIR/kubelet and it writes
#           DIR/kubelet/ready once the nodes are registered
#   SERVER  the API server's URL;  TOKEN  an admin bearer token
# It stops by itself when DIR/stop appears, when DIR vanishes, after two
# hours, or on SIGTERM/SIGINT, killing every pod it runs.
#
# Each container is started through tests/k8s/pod-launch.py (join the
# sandbox, mount, chdir, exec).
#
# Python 3 standard library only.

import base64
import calendar
import fractions
import hashlib
import http.client
import http.server
import json
import math
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import traceback
import urllib.parse

POD_NET = "10.244.0"            # pods get POD_NET.2 .. POD_NET.254
GATEWAY = POD_NET + ".1"        # the bridge's address in the cluster namespace
BRIDGE = "cbr0"
NODE_IP = "127.0.0.1"           # every node's InternalIP (one host)
LOG_PORT = 10250                # the log server (one for all nodes)
MAX_LIFETIME = 2 * 3600         # the kubelet never outlives this
POLL = 0.1                      # seconds between API polls
KUBE_VERSION = "v1.20.2"
TERM_MSG_MAX = 4096             # kubelet: MaxContainerTerminationMessageLength
TERM_LOG_LINES = 80             # FallbackToLogsOnError: last lines ...
TERM_LOG_MAX = 2048             # ... and at most this many bytes
PAUSE_SECONDS = 7500            # a pause process outlives the kubelet's bound
LAUNCHER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pod-launch.py")

# A sandbox's pause process: name the UTS namespace, bind the pod's hosts and
# resolv.conf over the host's in the new mount namespace, say so, then sleep.
PAUSE_SH = (
    'hostname "$1" && mount --bind "$2" /etc/hosts && '
    '{ mount --bind "$3" /etc/resolv.conf || true; } && '
    'echo ok && exec sleep "$4"')


def log(*args):
    stamp = time.strftime("%H:%M:%S", time.localtime())
    print("%s.%03d kubelet:" % (stamp, int(time.time() * 1000) % 1000), *args,
          file=sys.stderr, flush=True)


# --- time and quantities -----------------------------------------------------

def rfc3339(t=None):
    """Seconds precision, as metav1.Time is serialised."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ",
                         time.gmtime(time.time() if t is None else t))


def rfc3339nano(ns):
    """Go's time.RFC3339Nano: nanoseconds with trailing zeros trimmed."""
    sec, frac = divmod(ns, 10 ** 9)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    digits = ("%09d" % frac).rstrip("0")
    return base + ("." + digits if digits else "") + "Z"


_TIME_RE = re.compile(
    r"^(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(\.\d+)?(Z|z|[+-]\d\d:\d\d)$")


def parse_time_ns(text):
    """RFC 3339 (with or without fractions) to nanoseconds since the epoch."""
    m = _TIME_RE.match(text or "")
    if not m:
        raise ValueError("not an RFC 3339 time: %r" % text)
    y, mo, d, h, mi, s = (int(x) for x in m.group(1, 2, 3, 4, 5, 6))
    ns = calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)) * 10 ** 9
    if m.group(7):
        ns += int((m.group(7)[1:] + "000000000")[:9])
    zone = m.group(8)
    if zone not in ("Z", "z"):
        sign = 1 if zone[0] == "+" else -1
        ns -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60) * 10 ** 9
    return ns


_SUFFIX = {"": 1, "m": fractions.Fraction(1, 1000), "k": 10 ** 3, "M": 10 ** 6,
           "G": 10 ** 9, "T": 10 ** 12, "P": 10 ** 15, "E": 10 ** 18,
           "Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40,
           "Pi": 2 ** 50, "Ei": 2 ** 60}
_QTY_RE = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?$")


def quantity(text):
    """A resource.Quantity ("500m", "2Gi", "1e3") as an exact Fraction."""
    m = _QTY_RE.match(str(text).strip())
    if not m:
        raise ValueError("bad quantity %r" % text)
    return fractions.Fraction(m.group(1)) * _SUFFIX[m.group(2) or ""]


def scheduler_units(name, q):
    """What the scheduler compares: millicores for cpu, integers otherwise."""
    if name == "cpu":
        return math.ceil(q * 1000)
    return math.ceil(q)


def pod_requests(spec):
    """The scheduler's view of a pod's requests (fit.go
    computePodResourceRequest): the containers' sum, at least any init
    container's; requests, else limits (the API server defaults the
    former from the latter)."""
    def of(container):
        res = container.get("resources") or {}
        merged = dict(res.get("limits") or {})
        merged.update(res.get("requests") or {})
        out = {}
        for name, value in merged.items():
            try:
                out[name] = scheduler_units(name, quantity(value))
            except ValueError:
                pass
        return out
    total = {}
    for c in spec.get("containers") or []:
        for k, v in of(c).items():
            total[k] = total.get(k, 0) + v
    for c in spec.get("initContainers") or []:
        for k, v in of(c).items():
            total[k] = max(total.get(k, 0), v)
    return total


# --- $(VAR) expansion, as the kubelet does in env values, command and args ---

def expand(text, env):
    out = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "$" and i + 1 < n:
            nxt = text[i + 1]
            if nxt == "$":                      # $$ is a literal $
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                end = text.find(")", i + 2)
                if end >= 0:
                    name = text[i + 2:end]
                    if name in env:
                        out.append(env[name])
                    else:
                        out.append(text[i:end + 1])
                    i = end + 1
                    continue
        out.append(ch)
        i += 1
    return "".join(out)


# --- the API ---------------------------------------------------------------

class Api:
    """A tiny client: one keep-alive HTTPS connection per thread."""

    def __init__(self, server, token, cafile):
        url = urllib.parse.urlsplit(server)
        self.host, self.port = url.hostname, url.port or 443
        self.token = token
        self.ctx = ssl.create_default_context(cafile=cafile)
        self.local = threading.local()

    def call(self, method, path, body=None, ctype="application/json", timeout=30):
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": "Bearer " + self.token,
                   "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = ctype
        for attempt in (0, 1):
            conn = getattr(self.local, "conn", None)
            if conn is None:
                conn = http.client.HTTPSConnection(self.host, self.port,
                                                   context=self.ctx, timeout=timeout)
                self.local.conn = conn
            try:
                conn.request(method, path, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                self.local.conn = None
                if attempt:
                    return 0, {"message": str(e)}
                continue
            try:
                obj = json.loads(raw) if raw else {}
            except ValueError:
                obj = {"message": raw.decode("utf-8", "replace")}
            return resp.status, obj
        return 0, {}

    def patch(self, path, body):
        return self.call("PATCH", path, body, "application/merge-patch+json")


def q(text):
    return urllib.parse.quote(text, safe="")


# --- nodes -----------------------------------------------------------------

def parse_labels(text):
    out = {}
    for item in (text or "").split(","):
        item = item.strip()
        if item:
            k, _, v = item.partition("=")
            out[k.strip()] = v.strip()
    return out


def parse_taints(text):
    """"key=value:Effect,key:Effect" to Taint objects."""
    out = []
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        kv, _, effect = item.rpartition(":")
        if not kv:
            raise ValueError("taint %r needs an effect (key=value:NoSchedule)" % item)
        key, _, value = kv.partition("=")
        taint = {"key": key, "effect": effect}
        if value:
            taint["value"] = value
        out.append(taint)
    return out


def node_configs(env):
    """The nodes to play, from the environment (tests/k8s/README.md):
    MLPIPE_K8S_NODES (count), MLPIPE_K8S_NODE_{CPU,MEMORY,GPUS,PODS,LABELS,
    TAINTS} for all nodes, MLPIPE_K8S_NODE_<i>_<KNOB> for node i."""
    count = int(env.get("MLPIPE_K8S_NODES", "2"))
    nodes = []
    for i in range(count):
        def get(knob, default):
            return env.get("MLPIPE_K8S_NODE_%d_%s" % (i, knob),
                           env.get("MLPIPE_K8S_NODE_" + knob, default))
        name = "node-%d" % i
        resources = {"cpu": get("CPU", "4"), "memory": get("MEMORY", "8Gi"),
                     "pods": get("PODS", "110"), "ephemeral-storage": "100Gi"}
        gpus = get("GPUS", "2")
        if gpus not in ("", "0"):
            resources["nvidia.com/gpu"] = gpus
        for value in resources.values():
            quantity(value)                     # fail early on a typo
        labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                  "kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
                  "beta.kubernetes.io/arch": "amd64"}
        labels.update(parse_labels(get("LABELS", "")))
        nodes.append({"name": name, "resources": resources, "labels": labels,
                      "taints": parse_taints(get("TAINTS", ""))})
    return nodes


# --- scheduling predicates (kube-scheduler 1.20 filter plugins) -------------

def tolerates(tolerations, taint):
    for t in tolerations or []:
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        if t.get("key") and t.get("key") != taint.get("key"):
            continue
        op = t.get("operator") or "Equal"
        if op == "Exists" or (t.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def match_expression(expr, value_of):
    key, op = expr.get("key"), expr.get("operator")
    values = expr.get("values") or []
    present, value = value_of(key)
    if op == "In":
        return present and value in values
    if op == "NotIn":
        return not present or value not in values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt"):
        try:
            have, want = int(value), int(values[0])
        except (TypeError, ValueError, IndexError):
            return False
        return present and (have > want if op == "Gt" else have < want)
    return False


def node_matches(pod_spec, node):
    labels = node["metadata"].get("labels") or {}
    for k, v in (pod_spec.get("nodeSelector") or {}).items():
        if labels.get(k) != v:
            return False
    required = ((pod_spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution")
    if required is None:
        return True
    for term in required.get("nodeSelectorTerms") or []:
        exprs = term.get("matchExpressions") or []
        fields = term.get("matchFields") or []
        if not exprs and not fields:
            continue
        if all(match_expression(e, lambda k: (k in labels, labels.get(k))) for e in exprs) and \
           all(match_expression(e, lambda k: (k == "metadata.name", node["metadata"]["name"]))
               for e in fields):
            return True
    return False


def filter_node(pod_spec, requests, node, used):
    """The reasons a node cannot take the pod, in the default plugin order
    (each plugin stops the node at its first failure), or [] if it fits."""
    if (node.get("spec") or {}).get("unschedulable"):
        tolerated = tolerates(pod_spec.get("tolerations"),
                              {"key": "node.kubernetes.io/unschedulable",
                               "effect": "NoSchedule"})
        if not tolerated:
            return ["node(s) were unschedulable"]
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("effect") not in ("NoSchedule", "NoExecute"):
            continue
        if not tolerates(pod_spec.get("tolerations"), taint):
            return ["node(s) had taint {%s: %s}, that the pod didn't tolerate"
                    % (taint.get("key", ""), taint.get("value", ""))]
    if not node_matches(pod_spec, node):
        return ["node(s) didn't match Pod's node affinity"]
    alloc = {}
    for name, value in ((node.get("status") or {}).get("allocatable") or {}).items():
        try:
            alloc[name] = scheduler_units(name, quantity(value))
        except ValueError:
            pass
    reasons = []
    if used.get("pods", 0) + 1 > alloc.get("pods", 0):
        reasons.append("Too many pods")
    for name in sorted(requests):
        if name == "pods" or requests[name] == 0:
            continue
        if alloc.get(name, 0) < requests[name] + used.get(name, 0):
            reasons.append("Insufficient %s" % name)
    return reasons


def node_score(node, used):
    """Lower is better: least allocated (with the scheduler's non-zero
    defaults, 100m cpu and 200Mi per pod), then fewer pods, then name."""
    alloc = (node.get("status") or {}).get("allocatable") or {}
    try:
        cpu = scheduler_units("cpu", quantity(alloc.get("cpu", "1")))
        mem = scheduler_units("memory", quantity(alloc.get("memory", "1")))
    except ValueError:
        cpu = mem = 1
    frac = (used.get("_cpu", 0) / max(cpu, 1) + used.get("_memory", 0) / max(mem, 1)) / 2
    return (frac, used.get("pods", 0), node["metadata"]["name"])


def add_usage(used, requests):
    for k, v in requests.items():
        used[k] = used.get(k, 0) + v
    used["pods"] = used.get("pods", 0) + 1
    used["_cpu"] = used.get("_cpu", 0) + (requests.get("cpu") or 100)
    used["_memory"] = used.get("_memory", 0) + (requests.get("memory") or 200 * 2 ** 20)


# --- containers and pods -----------------------------------------------------

class ConfigError(Exception):
    """A container cannot be configured yet (CreateContainerConfigError)."""


class LogInstance:
    """The log of one run of a container."""

    def __init__(self, path):
        self.path = path
        self.done = threading.Event()   # the writer reached EOF (or no process)


class Container:
    def __init__(self, spec, init, pod_name, bad, pull_error):
        self.spec = spec
        self.name = spec["name"]
        self.init = init
        self.image = spec.get("image") or ""
        # Neither command nor args: nothing to run (a Deployment's pods).
        self.pretend = not spec.get("command") and not spec.get("args")
        # A "bad" image never becomes ready, and runs nothing.
        self.bad = bool(bad.search(self.image)) if bad else False
        if self.bad:
            self.pretend = True
        self.pull_error = bool(pull_error.search(self.image)) if pull_error else False
        self.state = "waiting"
        self.reason = "PodInitializing"
        self.message = None
        self.started_at = None
        self.finished_at = None
        self.exit_code = None
        self.term_reason = None
        self.term_message = None
        self.container_id = None
        self.restart_count = 0
        self.starts = 0
        self.last = None            # lastState.terminated
        self.last_instance = None   # ... and the LogInstance of that run
        self.instance = None        # LogInstance of the current/last run
        self.proc = None
        self.next_start = 0.0
        self.pod_name = pod_name
        # An httpGet readinessProbe is run against a container that runs a
        # process (a pretend one has nothing to answer it).
        rp = spec.get("readinessProbe") or {}
        self.probe = rp if rp.get("httpGet") and not self.pretend else None
        self.probe_ok = False

    def alive(self):
        return self.proc is not None and self.proc.returncode is None and self.state == "running"

    def ready(self):
        if self.init:
            return self.state == "terminated" and self.exit_code == 0
        if self.probe:
            return self.state == "running" and self.probe_ok
        return self.state == "running" and not self.bad

    def terminated_dict(self):
        d = {"exitCode": self.exit_code, "reason": self.term_reason,
             "startedAt": self.started_at, "finishedAt": self.finished_at}
        if self.term_message:
            d["message"] = self.term_message
        if self.container_id:
            d["containerID"] = self.container_id
        return d

    def status(self):
        d = {"name": self.name, "image": self.image, "imageID": "mlpipe-test://" + self.image,
             "ready": self.ready(), "restartCount": self.restart_count,
             "started": self.state == "running"}
        if self.state == "running":
            d["state"] = {"running": {"startedAt": self.started_at}}
        elif self.state == "terminated":
            d["state"] = {"terminated": self.terminated_dict()}
        else:
            w = {"reason": self.reason}
            if self.message:
                w["message"] = self.message
            d["state"] = {"waiting": w}
        d["lastState"] = {"terminated": self.last} if self.last else {}
        if self.container_id and self.state != "waiting":
            d["containerID"] = self.container_id
        return d


class PodRuntime:
    """A pod on one of our nodes: its sandbox, its containers, one thread."""

    def __init__(self, kubelet, pod):
        self.k = kubelet
        self.pod = pod
        meta, spec = pod["metadata"], pod["spec"]
        self.uid, self.ns, self.name = meta["uid"], meta["namespace"], meta["name"]
        self.node = spec.get("nodeName")
        self.spec = spec
        self.policy = spec.get("restartPolicy") or "Always"
        self.hostname = (spec.get("hostname") or self.name)[:63].rstrip("-.")
        self.subdomain = spec.get("subdomain") or ""
        self.dir = os.path.join(kubelet.dir, "kubelet", "pods", self.uid)
        self.cond = threading.Condition(threading.RLock())
        self.init = [Container(c, True, self.name, kubelet.bad, kubelet.pull_error)
                     for c in spec.get("initContainers") or []]
        self.containers = [Container(c, False, self.name, kubelet.bad, kubelet.pull_error)
                           for c in spec.get("containers") or []]
        for c in self.containers:
            c.reason = "PodInitializing" if self.init else "ContainerCreating"
        self.ip = None
        self.ip_octet = None
        self.pause = None
        self.netns_ino = None
        self.sandbox_up = False
        self.start_time = None
        self.start_mono = None
        self.initialized = not self.init
        self.delete_requested = False
        self.kill_deadline = None
        self.gone = False
        self.thread_done = False
        self.deleted = False
        self.volume_paths = {}
        self.volume_tree_ours = {}
        self.reported = None
        self.report_lock = threading.Lock()
        self.hosts_written = None
        self.transitions = {}
        for c in (pod.get("status") or {}).get("conditions") or []:
            self.transitions[c.get("type")] = (c.get("status"), c.get("lastTransitionTime"))

    # -- bookkeeping --------------------------------------------------------

    def all_containers(self):
        return self.init + self.containers

    def find(self, name):
        for c in self.all_containers():
            if c.name == name:
                return c
        return None

    def stop_wanted(self):
        return self.delete_requested or self.gone or self.k.stopping

    def notify(self):
        with self.cond:
            self.cond.notify_all()
        self.k.wake.set()

    def update(self, pod):
        """A newer copy of the pod from the API."""
        meta = pod["metadata"]
        with self.cond:
            self.pod = pod
            if meta.get("deletionTimestamp"):
                grace = meta.get("deletionGracePeriodSeconds")
                grace = 30 if grace is None else int(grace)
                deadline = time.monotonic() + grace
                if not self.delete_requested:
                    self.delete_requested = True
                    self.kill_deadline = deadline
                    log("pod %s/%s: deletion requested, grace %ss" % (self.ns, self.name, grace))
                    self.notify()
                elif deadline < self.kill_deadline:
                    self.kill_deadline = deadline
                    self.notify()

    def set_gone(self):
        with self.cond:
            if not self.gone:
                self.gone = True
                log("pod %s/%s: gone from the API" % (self.ns, self.name))
                self.notify()

    def wait(self, seconds):
        """Sleep up to SECONDS unless something changes; True if the pod
        should stop."""
        with self.cond:
            if not self.stop_wanted():
                self.cond.wait(seconds)
            return self.stop_wanted()

    # -- status ---------------------------------------------------------------

    def phase(self):
        """kubelet_pods.go getPhase, on our container states."""
        pending_init = failed_init = 0
        for c in self.init:
            if c.state == "running":
                pending_init += 1
            elif c.state == "terminated":
                if c.exit_code != 0:
                    failed_init += 1
            elif c.last is not None:
                if c.last.get("exitCode") != 0:
                    failed_init += 1
            else:
                pending_init += 1
        running = waiting = stopped = succeeded = 0
        for c in self.containers:
            if c.state == "running":
                running += 1
            elif c.state == "terminated":
                stopped += 1
                if c.exit_code == 0:
                    succeeded += 1
            elif c.last is not None:
                stopped += 1
            else:
                waiting += 1
        if failed_init and self.policy == "Never":
            return "Failed"
        if pending_init or waiting:
            return "Pending"
        if running:
            return "Running"
        if stopped:
            if self.policy == "Always":
                return "Running"
            if stopped == succeeded:
                return "Succeeded"
            if self.policy == "Never":
                return "Failed"
            return "Running"
        return "Pending"

    def condition(self, ctype, status, reason=None, message=None):
        prev = self.transitions.get(ctype)
        if prev and prev[0] == status and prev[1]:
            when = prev[1]
        else:
            when = rfc3339()
            self.transitions[ctype] = (status, when)
        d = {"type": ctype, "status": status, "lastProbeTime": None,
             "lastTransitionTime": when}
        if reason:
            d["reason"] = reason
        if message:
            d["message"] = message
        return d

    def status(self):
        with self.cond:
            phase = self.phase()
            conds = [self.condition("PodScheduled", "True")]
            incomplete = [c.name for c in self.init if not c.ready()]
            if phase == "Succeeded":
                conds.append(self.condition("Initialized", "True", "PodCompleted"))
            elif incomplete:
                conds.append(self.condition(
                    "Initialized", "False", "ContainersNotInitialized",
                    "containers with incomplete status: [%s]" % " ".join(incomplete)))
            else:
                conds.append(self.condition("Initialized", "True"))
            unready = [c.name for c in self.containers if not c.ready()]
            if phase == "Succeeded":
                conds.append(self.condition("ContainersReady", "False", "PodCompleted"))
                conds.append(self.condition("Ready", "False", "PodCompleted"))
            elif unready:
                msg = "containers with unready status: [%s]" % " ".join(unready)
                conds.append(self.condition("ContainersReady", "False", "ContainersNotReady", msg))
                conds.append(self.condition("Ready", "False", "ContainersNotReady", msg))
            else:
                conds.append(self.condition("ContainersReady", "True"))
                conds.append(self.condition("Ready", "True"))
            st = {"phase": phase, "conditions": conds, "hostIP": NODE_IP,
                  "containerStatuses": [c.status() for c in self.containers]}
            if self.init:
                st["initContainerStatuses"] = [c.status() for c in self.init]
            if self.ip:
                st["podIP"] = self.ip
                st["podIPs"] = [{"ip": self.ip}]
            if self.start_time:
                st["startTime"] = self.start_time
            return st

    # -- the pod's life ---------------------------------------------------------

    def run(self):
        try:
            self.lifecycle()
        except Exception:
            log("pod %s/%s: %s" % (self.ns, self.name, traceback.format_exc()))
        try:
            self.wind_down()
        except Exception:
            log("pod %s/%s: wind down: %s" % (self.ns, self.name, traceback.format_exc()))
        with self.cond:
            self.thread_done = True
        self.k.wake.set()

    def lifecycle(self):
        """Sandbox and volumes, init containers, containers; returns when
        the pod is done or must stop (then wind_down runs)."""
        if self.prepare() and self.run_init_containers():
            self.run_containers()

    def prepare(self):
        """The sandbox and the volumes, retried each second until they
        work; False if the pod must stop first."""
        self.start_time = rfc3339()
        self.start_mono = time.monotonic()
        os.makedirs(os.path.join(self.dir, "work"), exist_ok=True)
        self.k.wake.set()
        while True:
            err = self.setup_sandbox()
            if err is None:
                break
            self.waiting_all("ContainerCreating", err)
            if self.wait(1.0):
                return False
        while True:
            err = self.prepare_volumes()
            if err is None:
                break
            self.waiting_all("ContainerCreating", err)
            if self.wait(1.0):
                return False
        self.waiting_all(None, None)
        return True

    def run_init_containers(self):
        """One by one, each until it succeeds (restarting per policy);
        False if the pod failed or must stop."""
        for c in self.init:
            while True:
                if self.stop_wanted():
                    return
                if c.pull_error:
                    self.set_waiting(c, "ImagePullBackOff",
                                     'Back-off pulling image "%s"' % c.image)
                    while not self.wait(1.0):
                        pass
                    return False
                if c.pretend:               # nothing to run: done at once
                    self.pretend_run(c)
                    self.finish_pretend(c, 0)
                    break
                if not self.start_container(c):
                    if self.wait(1.0):
                        return False
                    continue
                with self.cond:
                    while c.state == "running" and not self.stop_wanted():
                        self.cond.wait(1.0)
                if self.stop_wanted():
                    return False
                if c.exit_code == 0:
                    break
                if self.policy == "Never":
                    log("pod %s/%s: init container %s failed" % (self.ns, self.name, c.name))
                    return False
                self.crash_loop(c)
                while time.monotonic() < c.next_start:
                    if self.wait(c.next_start - time.monotonic()):
                        return False
        return True

    def run_containers(self):
        """Start them all, then restart per policy until all have ended
        for good or the pod must stop."""
        with self.cond:
            self.initialized = True
            for c in self.containers:
                if c.state == "waiting" and c.reason == "PodInitializing":
                    c.reason = "ContainerCreating"
        self.k.wake.set()
        for c in self.containers:
            if c.pull_error:
                self.set_waiting(c, "ErrImagePull",
                                 'rpc error: code = NotFound desc = failed to pull and unpack image "%s"' % c.image)
            elif c.pretend:
                self.pretend_run(c)
            elif not self.start_container(c):
                c.next_start = time.monotonic() + 1.0
        pulls = 0
        while True:
            now = time.monotonic()
            with self.cond:
                if self.stop_wanted():
                    return
                todo = []
                for c in self.containers:
                    if c.pull_error:
                        continue
                    if c.state == "terminated" and self.restartable(c):
                        self.crash_loop(c)
                    if c.state == "waiting" and now >= c.next_start:
                        todo.append(c)
                if not todo and all(c.state == "terminated" for c in self.containers):
                    return                  # the pod is done
            for c in todo:
                if not self.start_container(c):
                    c.next_start = time.monotonic() + 1.0
            pulls += 1
            if pulls == 4:
                for c in self.containers:
                    if c.pull_error:
                        self.set_waiting(c, "ImagePullBackOff",
                                         'Back-off pulling image "%s"' % c.image)
            with self.cond:
                waits = [c.next_start - time.monotonic() for c in self.containers
                         if c.state == "waiting" and not c.pull_error]
                self.cond.wait(max(0.05, min(waits + [0.5])))

    def restartable(self, c):
        return self.policy == "Always" or (self.policy == "OnFailure" and c.exit_code != 0)

    def crash_loop(self, c):
        """A container exited and will be restarted after a back-off."""
        with self.cond:
            c.last = c.terminated_dict()
            c.last_instance = c.instance
            delay = min(self.k.backoff * (2 ** max(c.starts - 1, 0)), 300.0)
            c.next_start = time.monotonic() + delay
            c.state = "waiting"
            c.reason = "CrashLoopBackOff"
            c.message = "back-off %s restarting failed container=%s pod=%s_%s(%s)" % (
                fmt_duration(delay), c.name, self.name, self.ns, self.uid)
            c.exit_code = None
        self.k.wake.set()

    def waiting_all(self, reason, message):
        with self.cond:
            for c in self.all_containers():
                if c.state == "waiting" and c.starts == 0:
                    if reason:
                        c.reason, c.message = reason, message
                    else:
                        c.reason = "PodInitializing" if (c.init or self.init) else "ContainerCreating"
                        c.message = None
        self.k.wake.set()

    def set_waiting(self, c, reason, message):
        with self.cond:
            c.state, c.reason, c.message = "waiting", reason, message
        self.k.wake.set()

    def container_id(self, c):
        return "mlpipe://" + hashlib.sha256(
            ("%s/%s/%d" % (self.uid, c.name, c.starts)).encode()).hexdigest()

    def pretend_run(self, c):
        """A container with nothing to run: it runs until the pod stops."""
        path = self.log_path(c, c.starts)
        open(path, "ab").close()
        inst = LogInstance(path)
        with self.cond:
            c.instance = inst
            c.container_id = self.container_id(c)
            c.starts += 1
            c.state, c.reason, c.message = "running", None, None
            c.started_at = rfc3339()
        self.k.wake.set()

    def finish_pretend(self, c, code):
        with self.cond:
            c.state = "terminated"
            c.exit_code = code
            c.term_reason = "Completed" if code == 0 else "Error"
            c.finished_at = rfc3339()
            if c.instance:
                c.instance.done.set()
        self.k.wake.set()

    def log_path(self, c, run):
        d = os.path.join(self.dir, "logs", c.name)
        os.makedirs(d, exist_ok=True)
        return os.path.join(d, "%d.log" % run)

    # -- the sandbox ------------------------------------------------------------

    def setup_sandbox(self):
        """The pause process, its network and its files; None or an error."""
        if self.sandbox_up:
            return None
        if self.ip is None:
            octet = self.k.alloc_ip()
            if octet is None:
                return "no free pod IP in %s.0/24" % POD_NET
            self.ip_octet, self.ip = octet, "%s.%d" % (POD_NET, octet)
        self.k.wake.set()
        hosts = os.path.join(self.dir, "etc-hosts")
        resolv = os.path.join(self.dir, "resolv.conf")
        with open(hosts, "w") as f:
            f.write(self.hosts_content(self.k.endpoints))
        self.hosts_written = None
        with open(resolv, "w") as f:
            # Nothing answers on 127.0.0.1:53 in the pod: names that are not
            # in /etc/hosts fail at once instead of timing out.
            f.write("search %s.svc.cluster.local svc.cluster.local cluster.local\n"
                    "nameserver 127.0.0.1\noptions ndots:5\n" % self.ns)
        veth = "veth%d" % self.ip_octet
        try:
            pause = subprocess.Popen(
                ["unshare", "--net", "--uts", "--mount", "sh", "-c", PAUSE_SH, "pause",
                 self.hostname, hosts, resolv, str(PAUSE_SECONDS)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, start_new_session=True)
        except OSError as e:
            return "cannot start the sandbox: %s" % e
        self.pause = pause
        line = pause.stdout.readline()
        pause.stdout.close()
        if line.strip() != b"ok":
            self.kill_pause()
            return "the sandbox did not start (see the kubelet log)"
        try:
            self.netns_ino = os.stat("/proc/%d/ns/net" % pause.pid).st_ino
            host_side = "link add %s type veth peer name eth0 netns %d\nlink set %s master %s up\n" % (
                veth, pause.pid, veth, BRIDGE)
            try:
                run_checked(["ip", "-batch", "-"], host_side)
            except RuntimeError:
                # A veth of a torn-down pod with this IP may linger while its
                # namespace is being destroyed: remove it and try again.
                subprocess.run(["ip", "link", "del", veth], stderr=subprocess.DEVNULL)
                run_checked(["ip", "-batch", "-"], host_side)
            run_checked(["nsenter", "-t", str(pause.pid), "-n", "ip", "-batch", "-"],
                        "link set lo up\naddr add %s/24 dev eth0\nlink set eth0 up\n"
                        "route add default via %s\n" % (self.ip, GATEWAY))
            # The IP may have been an earlier pod's: forget its MAC, or
            # packets to this pod go to a dead veth until the stale ARP
            # entry expires (proxied requests then hung for 15-30 s).
            subprocess.run(["ip", "neigh", "flush", "to", self.ip],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except (OSError, RuntimeError) as e:
            self.kill_pause()
            return "cannot set up the pod network: %s" % e
        self.sandbox_up = True
        return None

    def kill_pause(self):
        if self.pause is not None:
            try:
                self.pause.kill()
            except OSError:
                pass
            self.pause.wait()

    def teardown_sandbox(self):
        if self.ip_octet is not None:
            subprocess.run(["ip", "link", "del", "veth%d" % self.ip_octet],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.kill_pause()
        if self.netns_ino is not None:
            kill_netns_members(self.netns_ino)
        self.sandbox_up = False

    def hosts_content(self, endpoints):
        """/etc/hosts as the kubelet writes it, plus the peers behind the
        headless Service named by spec.subdomain (our stand-in for DNS)."""
        lines = ["# Kubernetes-managed hosts file.",
                 "127.0.0.1\tlocalhost",
                 "::1\tlocalhost ip6-localhost ip6-loopback",
                 "fe00::0\tip6-localnet",
                 "fe00::0\tip6-mcastprefix",
                 "fe00::1\tip6-allnodes",
                 "fe00::2\tip6-allrouters"]
        if self.ip:
            if self.subdomain:
                lines.append("%s\t%s.%s.%s.svc.cluster.local\t%s" % (
                    self.ip, self.hostname, self.subdomain, self.ns, self.hostname))
            else:
                lines.append("%s\t%s" % (self.ip, self.hostname))
        aliases = self.spec.get("hostAliases") or []
        if aliases:
            lines.append("")
            lines.append("# Entries added by HostAliases.")
            for a in aliases:
                lines.append("%s\t%s" % (a.get("ip", ""), "\t".join(a.get("hostnames") or [])))
        if self.subdomain and not self.dns_delayed():
            peers = endpoints.get((self.ns, self.subdomain)) or []
            if peers:
                lines.append("")
                lines.append("# Endpoints of the headless Service %s/%s (the test kubelet's "
                             "stand-in for cluster DNS)." % (self.ns, self.subdomain))
                for hostname, ip in peers:
                    lines.append("%s\t%s.%s.%s.svc.cluster.local\t%s.%s" % (
                        ip, hostname, self.subdomain, self.ns, hostname, self.subdomain))
        return "\n".join(lines) + "\n"

    def dns_delayed(self):
        ann = (self.pod["metadata"].get("annotations") or {}).get("test.mlpipe.dev/dns-delay")
        if not ann or self.start_mono is None:
            return False
        try:
            delay = float(ann)
        except ValueError:
            return False
        return time.monotonic() < self.start_mono + delay

    def refresh_hosts(self, endpoints):
        """Rewrite the hosts file in place (the bind mount follows the inode)
        when its content changes."""
        if not self.sandbox_up:
            return
        content = self.hosts_content(endpoints)
        if content == self.hosts_written:
            return
        try:
            with open(os.path.join(self.dir, "etc-hosts"), "r+") as f:
                f.write(content)
                f.truncate()
            self.hosts_written = content
        except OSError as e:
            log("pod %s/%s: hosts: %s" % (self.ns, self.name, e))

    # -- volumes --------------------------------------------------------------

    def prepare_volumes(self):
        """Realise the pod's volumes under its directory; None or an error."""
        for v in self.spec.get("volumes") or []:
            name = v["name"]
            if name in self.volume_paths:
                continue
            path = os.path.join(self.dir, "volumes", name)
            tree_ours = True
            try:
                if "emptyDir" in v:
                    os.makedirs(path, exist_ok=True)
                elif "secret" in v:
                    src = v["secret"]
                    data = self.k.get_data("secrets", self.ns, src.get("secretName", ""),
                                           src.get("optional"))
                    write_volume(path, data, src.get("items"), src.get("defaultMode"))
                elif "configMap" in v:
                    src = v["configMap"]
                    data = self.k.get_data("configmaps", self.ns, src.get("name", ""),
                                           src.get("optional"))
                    write_volume(path, data, src.get("items"), src.get("defaultMode"))
                elif "downwardAPI" in v:
                    src = v["downwardAPI"]
                    data = {}
                    for item in src.get("items") or []:
                        ref = item.get("fieldRef") or {}
                        data[item["path"]] = self.field_value(ref.get("fieldPath", "")).encode()
                    write_volume(path, data, None, src.get("defaultMode"))
                elif "projected" in v:
                    src = v["projected"]
                    data = {}
                    for s in src.get("sources") or []:
                        if "secret" in s or "configMap" in s:
                            kind = "secrets" if "secret" in s else "configmaps"
                            ref = s.get("secret") or s.get("configMap")
                            got = self.k.get_data(kind, self.ns, ref.get("name", ""), ref.get("optional"))
                            items = ref.get("items")
                            if items:
                                for it in items:
                                    if it["key"] in got:
                                        data[it["path"]] = got[it["key"]]
                            else:
                                data.update(got)
                        elif "downwardAPI" in s:
                            for item in s["downwardAPI"].get("items") or []:
                                ref = item.get("fieldRef") or {}
                                data[item["path"]] = self.field_value(ref.get("fieldPath", "")).encode()
                    write_volume(path, data, None, src.get("defaultMode"))
                elif "hostPath" in v:
                    src = v["hostPath"]
                    path = src["path"]
                    tree_ours = False
                    kind = src.get("type") or ""
                    if kind == "DirectoryOrCreate":
                        os.makedirs(path, exist_ok=True)
                    elif kind == "FileOrCreate" and not os.path.exists(path):
                        os.makedirs(os.path.dirname(path), exist_ok=True)
                        open(path, "a").close()
                    elif kind and not os.path.exists(path):
                        return 'MountVolume.SetUp failed for volume "%s" : hostPath %s does not exist' % (name, path)
                else:
                    kinds = [k for k in v if k != "name"]
                    return 'volume "%s": the test kubelet does not support %s volumes' % (
                        name, "/".join(kinds) or "these")
            except ConfigError as e:
                return 'MountVolume.SetUp failed for volume "%s" : %s' % (name, e)
            self.volume_paths[name] = path
            self.volume_tree_ours[name] = tree_ours
        return None

    # -- environment ----------------------------------------------------------

    def field_value(self, path):
        meta = self.pod["metadata"]
        m = re.match(r"^metadata\.(labels|annotations)\['(.*)'\]$", path)
        if m:
            return (meta.get(m.group(1)) or {}).get(m.group(2), "")
        if path in ("metadata.labels", "metadata.annotations"):
            items = meta.get(path.split(".")[1]) or {}
            return "\n".join('%s="%s"' % (k, items[k]) for k in sorted(items))
        return {"metadata.name": self.name, "metadata.namespace": self.ns,
                "metadata.uid": self.uid, "spec.nodeName": self.node or "",
                "spec.serviceAccountName": self.spec.get("serviceAccountName") or "",
                "status.podIP": self.ip or "", "status.podIPs": self.ip or "",
                "status.hostIP": NODE_IP}.get(path, "")

    def resource_value(self, c, ref):
        target = self.find(ref.get("containerName") or c.name) or c
        res = target.spec.get("resources") or {}
        kind, _, name = (ref.get("resource") or "").partition(".")
        value = (res.get(kind) or {}).get(name)
        if value is None and kind == "limits":
            node = self.k.node_cfg(self.node)
            value = (node or {}).get("resources", {}).get(name, "0")
        if value is None:
            value = "0"
        divisor = quantity(ref.get("divisor") or "1")
        if divisor == 0:
            divisor = 1
        return str(math.ceil(quantity(value) / divisor))

    def container_env(self, c):
        """The container's environment, as the kubelet and runtime build it."""
        env = {}
        # What the runtime and the kubelet add (container env overrides).
        base = {"PATH": self.k.pod_path, "HOSTNAME": self.hostname, "HOME": "/root",
                "KUBERNETES_SERVICE_HOST": GATEWAY,
                "KUBERNETES_SERVICE_PORT": str(self.k.api_port),
                "KUBERNETES_SERVICE_PORT_HTTPS": str(self.k.api_port),
                "KUBERNETES_PORT": "tcp://%s:%d" % (GATEWAY, self.k.api_port)}
        for ef in c.spec.get("envFrom") or []:
            prefix = ef.get("prefix") or ""
            if "secretRef" in ef:
                ref = ef["secretRef"]
                data = self.k.get_data("secrets", self.ns, ref.get("name", ""), ref.get("optional"))
            elif "configMapRef" in ef:
                ref = ef["configMapRef"]
                data = self.k.get_data("configmaps", self.ns, ref.get("name", ""), ref.get("optional"))
            else:
                continue
            for k, v in data.items():
                if re.match(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$", prefix + k):
                    env[prefix + k] = v.decode("utf-8", "replace")
        for e in c.spec.get("env") or []:
            name = e["name"]
            if "valueFrom" not in e:
                env[name] = expand(e.get("value") or "", {**base, **env})
                continue
            src = e["valueFrom"]
            if "fieldRef" in src:
                env[name] = self.field_value(src["fieldRef"].get("fieldPath", ""))
            elif "resourceFieldRef" in src:
                env[name] = self.resource_value(c, src["resourceFieldRef"])
            elif "secretKeyRef" in src or "configMapKeyRef" in src:
                secret = "secretKeyRef" in src
                ref = src.get("secretKeyRef") or src.get("configMapKeyRef")
                kind = "secrets" if secret else "configmaps"
                data = self.k.get_data(kind, self.ns, ref.get("name", ""), ref.get("optional"))
                key = ref.get("key", "")
                if key in data:
                    env[name] = data[key].decode("utf-8", "replace")
                elif not ref.get("optional"):
                    raise ConfigError("couldn't find key %s in %s %s/%s" % (
                        key, "Secret" if secret else "ConfigMap", self.ns, ref.get("name", "")))
        out = dict(base)
        out.update(env)
        return out, {**base, **env}

    # -- containers -------------------------------------------------------------

    def mounts_for(self, c):
        out = []
        for vm in c.spec.get("volumeMounts") or []:
            name = vm.get("name")
            if name not in self.volume_paths:
                raise ConfigError('volume "%s" not found' % name)
            src = self.volume_paths[name]
            if vm.get("subPath"):
                src = os.path.join(src, vm["subPath"].lstrip("/"))
                if not os.path.exists(src) and self.volume_tree_ours[name]:
                    os.makedirs(src, exist_ok=True)
            ro = bool(vm.get("readOnly"))
            for v in self.spec.get("volumes") or []:
                if v["name"] == name and any(k in v for k in ("secret", "configMap", "downwardAPI", "projected")):
                    ro = True
            out.append({"src": src, "dst": vm["mountPath"], "ro": ro,
                        "tree_ours": self.volume_tree_ours[name] and not ro})
        out.sort(key=lambda m: m["dst"].rstrip("/").count("/"))
        return out

    def start_container(self, c):
        """Start one run of a container; False if it cannot be configured
        yet (it then waits with CreateContainerConfigError)."""
        try:
            env, expand_env = self.container_env(c)
            mounts = self.mounts_for(c)
        except ConfigError as e:
            self.set_waiting(c, "CreateContainerConfigError", str(e))
            return False
        argv = [expand(a, expand_env) for a in (c.spec.get("command") or []) + (c.spec.get("args") or [])]
        run = c.starts
        cdir = os.path.join(self.dir, "containers", c.name)
        os.makedirs(cdir, exist_ok=True)
        term = os.path.join(cdir, "%d.termination-log" % run)
        open(term, "w").close()
        startfail = os.path.join(cdir, "%d.startfail" % run)
        if os.path.exists(startfail):
            os.unlink(startfail)
        scratch = os.path.join(cdir, "%d.root" % run)
        os.makedirs(scratch, exist_ok=True)
        workdir = c.spec.get("workingDir") or os.path.join(self.dir, "work")
        spec = {"pause": self.pause.pid, "mounts": mounts, "argv": argv, "env": env,
                "term": [term, c.spec.get("terminationMessagePath") or "/dev/termination-log"],
                "cwd": workdir, "startfail": startfail, "scratch": scratch,
                "ours": [self.dir]}
        spec_path = os.path.join(cdir, "%d.spec.json" % run)
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        inst = LogInstance(self.log_path(c, run))
        try:
            proc = subprocess.Popen(
                [self.k.python, "-I", "-S", LAUNCHER, spec_path],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        except OSError as e:
            self.set_waiting(c, "CreateContainerError", str(e))
            return False
        with self.cond:
            if c.starts > 0:
                c.restart_count = c.starts
            c.starts += 1
            c.proc = proc
            c.instance = inst
            c.container_id = self.container_id(c)
            c.state, c.reason, c.message = "running", None, None
            c.started_at = rfc3339()
            c.finished_at = c.term_message = c.term_reason = None
            c.exit_code = None
        threading.Thread(target=self.read_output, args=(proc.stdout, inst), daemon=True).start()
        threading.Thread(target=self.wait_container, args=(c, proc, inst, term, startfail),
                         daemon=True).start()
        if c.probe:
            threading.Thread(target=self.probe_loop, args=(c, c.starts), daemon=True).start()
        log("pod %s/%s: started %s (pid %d)" % (self.ns, self.name, c.name, proc.pid))
        self.k.wake.set()
        return True

    def probe_port(self, c, port):
        if isinstance(port, int):
            return port
        for p in c.spec.get("ports") or []:
            if p.get("name") == port:
                return int(p["containerPort"])
        return int(port)

    def probe_once(self, c):
        """One httpGet readiness probe, as the kubelet's prober: success
        is a status from 200 to 399 within timeoutSeconds."""
        g = c.probe["httpGet"]
        timeout = float(c.probe.get("timeoutSeconds") or 1)
        try:
            port = self.probe_port(c, g.get("port"))
            if (g.get("scheme") or "HTTP").upper() == "HTTPS":
                conn = http.client.HTTPSConnection(self.ip, port, timeout=timeout,
                                                   context=ssl._create_unverified_context())
            else:
                conn = http.client.HTTPConnection(self.ip, port, timeout=timeout)
            headers = {h["name"]: h["value"] for h in g.get("httpHeaders") or []}
            conn.request("GET", g.get("path") or "/", headers=headers)
            code = conn.getresponse().status
            conn.close()
            return 200 <= code < 400
        except (OSError, ValueError, http.client.HTTPException):
            return False

    def probe_loop(self, c, run):
        """Probes one run of a container every periodSeconds after
        initialDelaySeconds; ready after successThreshold successes in a
        row, unready after failureThreshold failures in a row."""
        period = max(1, int(c.probe.get("periodSeconds") or 10))
        fail_max = max(1, int(c.probe.get("failureThreshold") or 3))
        ok_min = max(1, int(c.probe.get("successThreshold") or 1))
        oks = fails = 0
        if self.wait(float(c.probe.get("initialDelaySeconds") or 0)):
            return
        while True:
            with self.cond:
                if c.starts != run or c.state != "running" or self.stop_wanted():
                    c.probe_ok = False
                    return
            good = self.probe_once(c)
            oks, fails = (oks + 1, 0) if good else (0, fails + 1)
            changed = False
            with self.cond:
                if c.starts != run or c.state != "running":
                    c.probe_ok = False
                    return
                if good and oks >= ok_min and not c.probe_ok:
                    c.probe_ok = changed = True
                elif not good and fails >= fail_max and c.probe_ok:
                    c.probe_ok, changed = False, True
            if changed:
                log("pod %s/%s: %s is %s" % (self.ns, self.name, c.name,
                                             "ready" if c.probe_ok else "not ready"))
                self.k.wake.set()
            if self.wait(period):
                return

    def read_output(self, pipe, inst):
        """Container output to its log, one timestamped record per line:
        "TIME F line" for full lines, "TIME P part" for an unterminated
        tail (the CRI log format)."""
        fd = pipe.fileno()
        pending = b""
        try:
            with open(inst.path, "ab", buffering=0) as f:
                while True:
                    try:
                        chunk = os.read(fd, 65536)
                    except OSError:
                        chunk = b""
                    ts = rfc3339nano(time.time_ns()).encode()
                    if not chunk:
                        if pending:
                            f.write(ts + b" P " + pending + b"\n")
                        break
                    lines = (pending + chunk).split(b"\n")
                    pending = lines.pop()
                    out = b"".join(ts + b" F " + line + b"\n" for line in lines)
                    if len(pending) >= 16384:
                        out += ts + b" P " + pending + b"\n"
                        pending = b""
                    if out:
                        f.write(out)
        except OSError as e:
            log("pod %s/%s: log: %s" % (self.ns, self.name, e))
        finally:
            pipe.close()
            inst.done.set()

    def wait_container(self, c, proc, inst, term, startfail):
        """Wait for a container's process, then record how it ended."""
        try:
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:
            pass
        # Like a container's PID namespace going away: what the process
        # left behind in its process group goes with it.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        rc = proc.wait()
        inst.done.wait(2.0)
        message = None
        try:
            with open(startfail, "r", errors="replace") as f:
                message = f.read()
        except OSError:
            pass
        with self.cond:
            c.finished_at = rfc3339()
            if message is not None:
                c.exit_code, c.term_reason = 128, "StartError"
                c.term_message = message
            else:
                c.exit_code = rc if rc >= 0 else 128 - rc
                c.term_reason = "Completed" if c.exit_code == 0 else "Error"
                c.term_message = termination_message(
                    term, inst.path, c.spec.get("terminationMessagePolicy"), c.exit_code)
            c.state = "terminated"
            self.cond.notify_all()
        log("pod %s/%s: %s exited %d" % (self.ns, self.name, c.name, c.exit_code))
        self.k.wake.set()

    # -- the end ---------------------------------------------------------------

    def wind_down(self):
        """Stop what runs (gracefully for a deletion), tear the sandbox
        down, report, and finish a deletion with the final DELETE."""
        graceful = self.delete_requested and not self.gone and not self.k.stopping
        running = [c for c in self.all_containers() if c.alive()]
        if running:
            deadline = self.kill_deadline if graceful else time.monotonic() + (1.0 if self.k.stopping else 0)
            if deadline > time.monotonic():
                for c in running:
                    signal_group(c.proc.pid, signal.SIGTERM)
                log("pod %s/%s: SIGTERM to %s" % (self.ns, self.name, " ".join(c.name for c in running)))
                with self.cond:
                    while any(c.alive() for c in running) and time.monotonic() < deadline:
                        self.cond.wait(min(0.1, max(deadline - time.monotonic(), 0.01)))
            for c in running:
                if c.alive():
                    signal_group(c.proc.pid, signal.SIGKILL)
            with self.cond:
                end = time.monotonic() + 5
                while any(c.alive() for c in running) and time.monotonic() < end:
                    self.cond.wait(0.1)
        for c in self.all_containers():
            if c.pretend and c.state == "running":
                self.finish_pretend(c, 0)
        self.teardown_sandbox()
        if self.gone or self.k.stopping:
            return
        self.k.report(self)
        if self.delete_requested:
            self.k.delete_pod(self)


def fmt_duration(seconds):
    """Go's time.Duration String for whole seconds and minutes."""
    seconds = int(round(seconds))
    if seconds >= 60:
        return "%dm%ds" % divmod(seconds, 60)
    return "%ds" % seconds


def termination_message(term_path, log_path, policy, exit_code):
    try:
        with open(term_path, "rb") as f:
            msg = f.read(TERM_MSG_MAX)
    except OSError:
        msg = b""
    if not msg and policy == "FallbackToLogsOnError" and exit_code != 0:
        try:
            with open(log_path, "rb") as f:
                records = f.read().splitlines()[-TERM_LOG_LINES:]
        except OSError:
            records = []
        parts = []
        for rec in records:
            fields = rec.split(b" ", 2)
            if len(fields) == 3:
                parts.append(fields[2] + (b"\n" if fields[1] == b"F" else b""))
        msg = b"".join(parts)[-TERM_LOG_MAX:]
    return msg.decode("utf-8", "replace") or None


def write_volume(path, data, items, mode):
    """Files of a secret/configMap/downwardAPI volume."""
    os.makedirs(path, exist_ok=True)
    mode = 0o644 if mode is None else int(mode)
    files = []
    if items:
        for it in items:
            if it["key"] in data:
                files.append((it["path"], data[it["key"]], it.get("mode", mode)))
    else:
        files = [(k, v, mode) for k, v in data.items()]
    for rel, content, fmode in files:
        dst = os.path.join(path, rel.lstrip("/"))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with open(dst, "wb") as f:
            f.write(content)
        os.chmod(dst, int(fmode) & 0o7777)


def signal_group(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except OSError:
        pass


def kill_netns_members(ino):
    """SIGKILL whatever is left in a pod's network namespace."""
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            if os.stat("/proc/%s/ns/net" % entry).st_ino == ino:
                os.kill(int(entry), signal.SIGKILL)
        except OSError:
            pass


def run_checked(argv, stdin_text):
    r = subprocess.run(argv, input=stdin_text.encode(), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    if r.returncode != 0:
        raise RuntimeError("%s: %s" % (" ".join(argv[:3]), r.stderr.decode(errors="replace").strip()))


# --- the log server ------------------------------------------------------------

class LogHandler(http.server.BaseHTTPRequestHandler):
    """GET /containerLogs/NS/POD/CONTAINER, as the kubelet serves it to the
    API server for `kubectl logs`."""
    protocol_version = "HTTP/1.1"
    server_version = "mlpipe-test-kubelet"

    def setup(self):
        self.request.settimeout(15)
        self.request.do_handshake()
        self.request.settimeout(None)
        super().setup()

    def log_message(self, fmt, *args):
        pass

    def plain(self, code, text):
        body = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def chunk(self, data):
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

    def do_GET(self):
        kubelet = self.server.kubelet
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/healthz":
            return self.plain(200, "ok")
        m = re.match(r"^/containerLogs/([^/]+)/([^/]+)/([^/]+)$", url.path)
        if not m:
            return self.plain(404, "404 page not found")
        ns, pod, cname = (urllib.parse.unquote(x) for x in m.groups())
        query = urllib.parse.parse_qs(url.query)

        def opt(name):
            return (query.get(name) or [None])[0]
        try:
            follow = opt("follow") == "true"
            previous = opt("previous") == "true"
            timestamps = opt("timestamps") == "true"
            tail = opt("tailLines") or opt("tail")
            tail = None if tail in (None, "all") else int(tail)
            limit = int(opt("limitBytes")) if opt("limitBytes") else None
            since = None
            if opt("sinceSeconds"):
                since = time.time_ns() - int(opt("sinceSeconds")) * 10 ** 9
            if opt("sinceTime"):
                since = parse_time_ns(opt("sinceTime"))
        except ValueError:
            return self.plain(400, '{"message": "Unable to decode query."}')
        rt = kubelet.find_pod(ns, pod)
        if rt is None:
            return self.plain(404, 'pod "%s" does not exist' % pod)
        c = rt.find(cname)
        if c is None:
            return self.plain(404, 'container "%s" not found in pod "%s"' % (cname, pod))
        with rt.cond:
            if previous:
                inst = c.last_instance if c.last else None
                if inst is None:
                    return self.plain(400, 'previous terminated container "%s" in pod "%s" not found'
                                      % (cname, pod))
            elif c.state in ("running", "terminated") and c.instance is not None:
                inst = c.instance
            elif c.last is not None and c.last_instance is not None:
                inst = c.last_instance
            else:
                return self.plain(400, 'container "%s" in pod "%s" is waiting to start: %s'
                                  % (cname, pod, c.reason or "ContainerCreating"))
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            self.stream(rt, inst, follow, timestamps, tail, since, limit)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (OSError, ValueError):
            pass                        # the client went away
        except Exception:
            log("logs of %s/%s/%s: %s" % (ns, pod, cname, traceback.format_exc()))
        self.close_connection = True

    def stream(self, rt, inst, follow, timestamps, tail, since, limit):
        kubelet = self.server.kubelet
        try:
            f = open(inst.path, "rb")
        except OSError:
            return
        with f:
            # Tail first (the last TAIL records of the file), then the since
            # filter, as the kubelet's ReadLogs does.
            data = f.read()
            cut = data.rfind(b"\n") + 1
            complete, rest = data[:cut], data[cut:]
            if tail is not None:
                records = complete.splitlines(keepends=True)
                complete = b"".join(records[-tail:]) if tail > 0 else b""
            pending = complete + rest
            sent = 0
            while True:
                data = pending + f.read()
                pending = b""
                if data:
                    cut = data.rfind(b"\n") + 1
                    data, pending = data[:cut], data[cut:]
                    out = []
                    for rec in data.splitlines():
                        fields = rec.split(b" ", 2)
                        if len(fields) < 3:
                            continue
                        ts, tag, text = fields
                        if since is not None:
                            try:
                                if parse_time_ns(ts.decode()) < since:
                                    continue
                            except ValueError:
                                pass
                        line = text + (b"\n" if tag == b"F" else b"")
                        if timestamps:
                            try:
                                ts = rfc3339nano(parse_time_ns(ts.decode())).encode()
                            except ValueError:
                                pass
                            line = ts + b" " + line
                        out.append(line)
                    blob = b"".join(out)
                    if limit is not None:
                        blob = blob[:max(limit - sent, 0)]
                    self.chunk(blob)
                    sent += len(blob)
                    if limit is not None and sent >= limit:
                        return
                    continue
                if not follow:
                    return
                # At the end of what is written: done when the run is over
                # and its writer has finished, else wait for more.
                if inst.done.is_set() or rt.thread_done or kubelet.stopping:
                    rest = f.read()
                    if not rest:
                        return
                    pending = rest
                    continue
                time.sleep(0.05)


class LogServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, kubelet, cert, key):
        super().__init__(("127.0.0.1", LOG_PORT), LogHandler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.socket = ctx.wrap_socket(self.socket, server_side=True,
                                      do_handshake_on_connect=False)
        self.kubelet = kubelet

    def handle_error(self, request, client_address):
        pass


# --- the kubelet ----------------------------------------------------------------

class Kubelet:
    def __init__(self, d, server, token):
        self.dir = d
        self.api = Api(server, token, os.path.join(d, "pki", "ca.crt"))
        self.api_port = urllib.parse.urlsplit(server).port or 443
        self.node_cfgs = node_configs(os.environ)
        self.node_names = {n["name"] for n in self.node_cfgs}
        bad = os.environ.get("MLPIPE_K8S_BAD_IMAGE", "bad")
        pull = os.environ.get("MLPIPE_K8S_PULL_ERROR_IMAGE", "no-such-image")
        self.bad = re.compile(bad) if bad else None
        self.pull_error = re.compile(pull) if pull else None
        self.pod_path = os.environ.get("MLPIPE_K8S_POD_PATH") or os.environ.get(
            "PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        self.backoff = float(os.environ.get("MLPIPE_K8S_RESTART_BACKOFF", "1"))
        self.python = sys.executable or "/usr/bin/python3"
        self.pods = {}                  # uid -> PodRuntime
        self.lock = threading.RLock()
        self.wake = threading.Event()
        self.stopping = False
        self.deadline = time.monotonic() + MAX_LIFETIME
        self.ip_used = set()
        self.ip_next = 2
        self.endpoints = {}             # (ns, service) -> [(hostname, ip)]
        self.unschedulable = {}         # uid -> the message last reported
        self.deleting = {}              # uid -> when we last DELETEd it
        self.last_error = 0.0

    # -- helpers -------------------------------------------------------------

    def node_cfg(self, name):
        for n in self.node_cfgs:
            if n["name"] == name:
                return n
        return None

    def alloc_ip(self):
        with self.lock:
            for i in range(253):
                n = 2 + (self.ip_next - 2 + i) % 253
                if n not in self.ip_used:
                    self.ip_used.add(n)
                    self.ip_next = n + 1
                    return n
        return None

    def free_ip(self, n):
        with self.lock:
            self.ip_used.discard(n)

    def get_data(self, kind, ns, name, optional):
        """A Secret's (decoded) or ConfigMap's data; {} if optional and
        missing; ConfigError if required and missing."""
        code, obj = self.api.call("GET", "/api/v1/namespaces/%s/%s/%s" % (q(ns), kind, q(name)))
        if code == 404:
            if optional:
                return {}
            raise ConfigError('%s "%s" not found' % ("secret" if kind == "secrets" else "configmap", name))
        if code != 200:
            raise ConfigError("cannot read %s %s/%s: %s" % (kind, ns, name, obj.get("message")))
        out = {}
        if kind == "secrets":
            for k, v in (obj.get("data") or {}).items():
                out[k] = base64.b64decode(v)
        else:
            for k, v in (obj.get("data") or {}).items():
                out[k] = v.encode()
            for k, v in (obj.get("binaryData") or {}).items():
                out[k] = base64.b64decode(v)
        return out

    def find_pod(self, ns, name):
        with self.lock:
            found = [rt for rt in self.pods.values()
                     if rt.ns == ns and rt.name == name and not rt.gone]
        found.sort(key=lambda rt: rt.start_mono or 0)
        return found[-1] if found else None

    def should_stop(self):
        return (self.stopping or os.path.exists(os.path.join(self.dir, "stop"))
                or not os.path.isdir(self.dir) or time.monotonic() > self.deadline)

    def error(self, text):
        if time.monotonic() - self.last_error > 1.0:
            log(text)
            self.last_error = time.monotonic()

    # -- nodes -----------------------------------------------------------------

    def register_nodes(self):
        now = rfc3339()
        for n in self.node_cfgs:
            body = {"apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": n["name"], "labels": n["labels"]},
                    "spec": {"taints": n["taints"]} if n["taints"] else {}}
            code, obj = self.api.call("POST", "/api/v1/nodes", body)
            if code == 409:
                code, obj = self.api.patch("/api/v1/nodes/" + q(n["name"]),
                                           {"metadata": {"labels": n["labels"]}})
            if code not in (200, 201):
                raise RuntimeError("cannot register %s: %s" % (n["name"], obj.get("message")))
            status = {
                "capacity": n["resources"], "allocatable": n["resources"],
                "conditions": [
                    {"type": t, "status": s, "reason": r, "message": m,
                     "lastHeartbeatTime": now, "lastTransitionTime": now}
                    for t, s, r, m in (
                        ("MemoryPressure", "False", "KubeletHasSufficientMemory",
                         "kubelet has sufficient memory available"),
                        ("DiskPressure", "False", "KubeletHasNoDiskPressure",
                         "kubelet has no disk pressure"),
                        ("PIDPressure", "False", "KubeletHasSufficientPID",
                         "kubelet has sufficient PID available"),
                        ("Ready", "True", "KubeletReady", "kubelet is posting ready status"))],
                "addresses": [{"type": "InternalIP", "address": NODE_IP},
                              {"type": "Hostname", "address": n["name"]}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": LOG_PORT}},
                "nodeInfo": {"machineID": "", "systemUUID": "", "bootID": "",
                             "kernelVersion": os.uname().release,
                             "osImage": "mlpipe test kubelet (local processes)",
                             "containerRuntimeVersion": "mlpipe-test://1",
                             "kubeletVersion": KUBE_VERSION, "kubeProxyVersion": KUBE_VERSION,
                             "operatingSystem": "linux", "architecture": "amd64"},
            }
            code, obj = self.api.patch("/api/v1/nodes/%s/status" % q(n["name"]), {"status": status})
            if code != 200:
                raise RuntimeError("cannot set %s's status: %s" % (n["name"], obj.get("message")))
            # The TaintNodesByCondition admission plugin taints a new node
            # not-ready; the node lifecycle controller (not run here) would
            # lift it once the node is Ready.  Keep only our own taints.
            code, obj = self.api.patch("/api/v1/nodes/" + q(n["name"]),
                                       {"spec": {"taints": n["taints"] or None}})
            if code != 200:
                raise RuntimeError("cannot set %s's taints: %s" % (n["name"], obj.get("message")))
        log("nodes registered: %s" % " ".join(sorted(self.node_names)))

    # -- the loop ----------------------------------------------------------------

    def run(self):
        deadline = time.monotonic() + 60
        while True:
            try:
                self.register_nodes()
                break
            except RuntimeError as e:
                if time.monotonic() > deadline or self.should_stop():
                    raise
                self.error(str(e))
                time.sleep(0.2)
        server = LogServer(self, os.path.join(self.dir, "pki", "kubelet.crt"),
                           os.path.join(self.dir, "pki", "kubelet.key"))
        threading.Thread(target=server.serve_forever, args=(0.2,), daemon=True).start()
        with open(os.path.join(self.dir, "kubelet", "ready"), "w") as f:
            f.write("%d\n" % LOG_PORT)
        log("ready: logs on https://127.0.0.1:%d" % LOG_PORT)
        while not self.should_stop():
            self.wake.clear()
            try:
                self.sync()
            except Exception:
                self.error(traceback.format_exc())
            self.wake.wait(POLL)
        self.shutdown()
        server.shutdown()

    def sync(self):
        code, lst = self.api.call("GET", "/api/v1/pods?resourceVersion=0")
        if code != 200:
            self.error("list pods: HTTP %s %s" % (code, lst.get("message")))
            return
        items = lst.get("items") or []
        seen = set()
        unbound = []
        for pod in items:
            meta, spec = pod["metadata"], pod["spec"]
            uid = meta["uid"]
            seen.add(uid)
            node = spec.get("nodeName")
            if not node:
                phase = (pod.get("status") or {}).get("phase")
                if not meta.get("deletionTimestamp") and phase not in ("Succeeded", "Failed"):
                    unbound.append(pod)
                continue
            if node not in self.node_names:
                continue
            rt = self.pods.get(uid)
            if rt is not None:
                rt.update(pod)
                continue
            phase = (pod.get("status") or {}).get("phase")
            if meta.get("deletionTimestamp"):
                # Not running here: nothing to stop, delete it at once.
                if time.monotonic() - self.deleting.get(uid, -10.0) > 1.0:
                    self.deleting[uid] = time.monotonic()
                    self.delete_object(meta["namespace"], meta["name"], uid)
            elif phase not in ("Succeeded", "Failed"):
                self.start_pod(pod)
        with self.lock:
            runtimes = list(self.pods.values())
        for rt in runtimes:
            if rt.uid not in seen:
                rt.set_gone()
        for memo in (self.unschedulable, self.deleting):
            for uid in list(memo):
                if uid not in seen:
                    del memo[uid]
        if unbound:
            self.schedule(unbound, items)
        self.sync_endpoints(runtimes)
        for rt in runtimes:
            if rt.gone:
                if rt.thread_done:
                    self.forget(rt)
                continue
            rt.refresh_hosts(self.endpoints)
            if rt.thread_done and rt.delete_requested and not rt.deleted:
                self.delete_pod(rt)
            elif not rt.deleted:
                self.report(rt)

    def sync_endpoints(self, runtimes):
        if not any(rt.subdomain and rt.sandbox_up for rt in runtimes):
            return
        code, lst = self.api.call("GET", "/api/v1/endpoints?resourceVersion=0")
        if code != 200:
            self.error("list endpoints: HTTP %s %s" % (code, lst.get("message")))
            return
        out = {}
        for ep in lst.get("items") or []:
            peers = []
            for subset in ep.get("subsets") or []:
                for a in subset.get("addresses") or []:
                    if a.get("hostname") and a.get("ip"):
                        peers.append((a["hostname"], a["ip"]))
            out[(ep["metadata"]["namespace"], ep["metadata"]["name"])] = sorted(set(peers))
        self.endpoints = out

    def start_pod(self, pod):
        rt = PodRuntime(self, pod)
        with self.lock:
            self.pods[rt.uid] = rt
        log("pod %s/%s on %s: starting" % (rt.ns, rt.name, rt.node))
        threading.Thread(target=rt.run, daemon=True).start()
        return rt

    def forget(self, rt):
        with self.lock:
            self.pods.pop(rt.uid, None)
        if rt.ip_octet is not None:
            self.free_ip(rt.ip_octet)
        shutil.rmtree(rt.dir, ignore_errors=True)

    # -- scheduling ---------------------------------------------------------------

    def schedule(self, unbound, items):
        code, lst = self.api.call("GET", "/api/v1/nodes?resourceVersion=0")
        if code != 200:
            self.error("list nodes: HTTP %s" % code)
            return
        nodes = [n for n in lst.get("items") or [] if n["metadata"]["name"] in self.node_names]
        nodes.sort(key=lambda n: n["metadata"]["name"])
        used = {n["metadata"]["name"]: {} for n in nodes}
        for pod in items:
            node = pod["spec"].get("nodeName")
            if node not in used:
                continue
            rt = self.pods.get(pod["metadata"]["uid"])
            if rt is not None:
                with rt.cond:
                    phase = rt.phase()
            else:
                phase = (pod.get("status") or {}).get("phase")
            if phase in ("Succeeded", "Failed"):
                continue
            add_usage(used[node], pod_requests(pod["spec"]))
        unbound.sort(key=lambda p: (-(p["spec"].get("priority") or 0),
                                    p["metadata"].get("creationTimestamp") or "",
                                    p["metadata"]["name"]))
        for pod in unbound:
            meta, spec = pod["metadata"], pod["spec"]
            if meta["uid"] in self.pods:
                continue            # bound by us a moment ago
            if (spec.get("schedulerName") or "default-scheduler") != "default-scheduler":
                continue
            requests = pod_requests(spec)
            reasons = {}
            fits = []
            for n in nodes:
                why = filter_node(spec, requests, n, used[n["metadata"]["name"]])
                for r in why:
                    reasons[r] = reasons.get(r, 0) + 1
                if not why:
                    fits.append(n)
            if fits:
                best = min(fits, key=lambda n: node_score(n, used[n["metadata"]["name"]]))
                name = best["metadata"]["name"]
                self.bind(pod, name, requests, used[name])
            else:
                msg = "0/%d nodes are available: %s." % (
                    len(nodes), ", ".join(sorted("%d %s" % (v, k) for k, v in reasons.items())))
                if self.unschedulable.get(meta["uid"]) != msg:
                    self.mark_unschedulable(pod, msg)

    def bind(self, pod, node, requests, used):
        meta = pod["metadata"]
        body = {"apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node}}
        code, obj = self.api.call("POST", "/api/v1/namespaces/%s/pods/%s/binding"
                                  % (q(meta["namespace"]), q(meta["name"])), body)
        if code not in (200, 201):
            self.error("bind %s/%s: HTTP %s %s" % (meta["namespace"], meta["name"], code, obj.get("message")))
            return
        add_usage(used, requests)
        self.unschedulable.pop(meta["uid"], None)
        pod["spec"]["nodeName"] = node
        self.start_pod(pod)
        self.event(pod, "Scheduled", "Normal", "Successfully assigned %s/%s to %s"
                   % (meta["namespace"], meta["name"], node))

    def mark_unschedulable(self, pod, msg):
        meta = pod["metadata"]
        cond = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": msg, "lastProbeTime": None, "lastTransitionTime": rfc3339()}
        code, obj = self.api.patch("/api/v1/namespaces/%s/pods/%s/status"
                                   % (q(meta["namespace"]), q(meta["name"])),
                                   {"status": {"phase": "Pending", "conditions": [cond]}})
        if code != 200:
            self.error("mark %s/%s unschedulable: HTTP %s" % (meta["namespace"], meta["name"], code))
            return
        self.unschedulable[meta["uid"]] = msg
        log("pod %s/%s: %s" % (meta["namespace"], meta["name"], msg))
        self.event(pod, "FailedScheduling", "Warning", msg)

    def event(self, pod, reason, kind, message):
        meta = pod["metadata"]
        now = rfc3339()
        body = {"apiVersion": "v1", "kind": "Event",
                "metadata": {"generateName": meta["name"] + ".", "namespace": meta["namespace"]},
                "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": meta["namespace"],
                                   "name": meta["name"], "uid": meta["uid"]},
                "reason": reason, "message": message, "type": kind,
                "source": {"component": "default-scheduler"},
                "firstTimestamp": now, "lastTimestamp": now, "count": 1}
        self.api.call("POST", "/api/v1/namespaces/%s/events" % q(meta["namespace"]), body)

    # -- status and deletion ----------------------------------------------------------

    def report(self, rt):
        """PATCH the pod's status when it differs from what was sent."""
        with rt.report_lock:
            if rt.gone or rt.deleted or self.stopping:
                return
            st = rt.status()
            key = json.dumps(st, sort_keys=True)
            if key == rt.reported:
                return
            code, obj = self.api.patch("/api/v1/namespaces/%s/pods/%s/status" % (q(rt.ns), q(rt.name)),
                                       {"status": st})
            if code == 200:
                rt.reported = key
            elif code == 404:
                rt.set_gone()
            else:
                self.error("status of %s/%s: HTTP %s %s" % (rt.ns, rt.name, code, obj.get("message")))

    def delete_object(self, ns, name, uid):
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                "preconditions": {"uid": uid}}
        code, obj = self.api.call("DELETE", "/api/v1/namespaces/%s/pods/%s" % (q(ns), q(name)), body)
        if code not in (200, 202, 404, 409):
            self.error("delete %s/%s: HTTP %s %s" % (ns, name, code, obj.get("message")))
            return False
        return True

    def delete_pod(self, rt):
        with rt.report_lock:
            if rt.deleted:
                return
            if self.delete_object(rt.ns, rt.name, rt.uid):
                rt.deleted = True
                log("pod %s/%s: deleted" % (rt.ns, rt.name))

    def shutdown(self):
        """Stop every pod (no API calls: the API may be going away)."""
        log("stopping")
        self.stopping = True
        with self.lock:
            runtimes = list(self.pods.values())
        for rt in runtimes:
            rt.notify()
        end = time.monotonic() + 5
        for rt in runtimes:
            while not rt.thread_done and time.monotonic() < end:
                time.sleep(0.05)


# --- main -----------------------------------------------------------------------------

def main(argv):
    if len(argv) != 5 or argv[1] != "run":
        print("usage: kubelet.py run DIR SERVER TOKEN", file=sys.stderr)
        return 2
    d = os.path.abspath(argv[2])
    os.makedirs(os.path.join(d, "kubelet", "pods"), exist_ok=True)
    kubelet = Kubelet(d, argv[3], argv[4])

    def on_signal(signum, frame):
        kubelet.stopping = True
        kubelet.wake.set()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    kubelet.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
