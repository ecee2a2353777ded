#!/usr/bin/env python3
"""scripted-apiserver.py - a Kubernetes API server, scripted, for the
functional tests of runs-on: kubernetes (tests/functional/k8s-scripted.sh).

It plays, over plain HTTP on 127.0.0.1, what `mlpipe stage-k8s` talks to:
/version; Secrets, Services and batch/v1 Jobs (create, list with an
equality labelSelector, get, delete with propagationPolicy); the Job
controller (an Indexed Job gets one pod per index, with the index
annotation and hostname; a plain Job `parallelism` pods, told apart by
their mlpipe.dev/node-rank label; none while suspended; backoffLimit 0: a
failed pod fails the Job, whose other pods are then deleted); the garbage
collector (ownerReferences, deletion of a Job's pods, Workloads);
the kubelet (pods go Pending -> Running -> terminated as the scenario
says, their logs stream with timestamps, deleted pods get SIGTERM after a
grace period); Kueue (a Job with a queue-name label stays suspended while
its Workload's condition message changes, then is admitted); and rank 0's
results port through pods/proxy (status long-poll, files, done).

    scripted-apiserver.py serve --scenario FILE --dir DIR [--timeout 120]
    scripted-apiserver.py requests DIR/requests.jsonl [--method M] [--path RE]
                                   [--field DOTTED.PATH] [--count]

`serve` listens on a free port and writes it to DIR/port once it listens;
every request goes to DIR/requests.jsonl as one JSON line ({"method",
"path", "body", "status"}, plus "uid" for a create and "sha256" for a file
served); DIR/state.json names what exists now (rewritten on each change).
It exits after --timeout seconds or as soon as DIR/stop exists.
`requests` prints what the log holds: the matching lines' DOTTED.PATH
(in the body, "\\." for a dot inside a key; "path", "t", "uid", "status"
and "sha256" are the entry's own), one per line.

The scenario (JSON; every key optional):

  {"version": {"major": "1", "minor": "29+", "gitVersion": "v1.29.0"},
   "drop_fields": false,   # keep claiming the version, but strip
                           # spec.completionMode and spec.suspend off Jobs
                           # (what a 1.20 server does)
   "forbid_secrets": false,# POST secrets -> 403 Forbidden (RBAC)
   "forbid_proxy": false,  # pods/proxy -> 403 Forbidden (RBAC)
   "proxy_unreachable": false, # pods/proxy -> 503 (a NetworkPolicy in the way)
   "serve_timeout_s": 30,  # rank 0 ends this long after its ranks if no /done
   "grace_s": 0.3,         # a deleted pod's container ends after this
   "job_kill_after_s": 2,  # a failed Job's controller deletes its other pods
   "kueue": {"messages": ["...", "..."], "min_phase_s": 0.3,
             "copy_labels": false},
                           # each message is the Workload's newest condition
                           # until mlpipe has read it and min_phase_s passed;
                           # after the last one the Job is admitted.  The
                           # Workload has the label kueue.x-k8s.io/job-uid
                           # (and the Job's labels with copy_labels)
   "pods": {"0": POD, "1": POD, "default": POD},
   "results": {"files": {"model": {"text": "..."} | {"size": N},
                         "output": {...}, "metrics": {...}},
               "corrupt": ["model"]},   # served bytes differ from sha256
   "seed": [OBJECT ...]}   # objects that exist from the start

  POD: {"running_after": 0.2,  # s from creation to Running
        "lines": ["[rank0] ..."], "line_gap": 0.05,
        "exit_code": 0, "message": "", "reason": "Error",
        "duration": s,          # Running -> ended (default: after the lines)
        "unschedulable": "...", # stays Pending: PodScheduled False, this message
        "break_log_after": N}   # the first log stream ends after N lines

Index 0 is rank 0, whose results port follows docs/mlpipe-pod.md: when its
ranks end with 0, /status turns "done" with the files and the container
ends only once POST /done came (or serve_timeout_s later); with another
exit code, /status is "done" with that exit_code and the message as its
reason, and the container ends half a second later.
Python 3 stdlib only.
"""
import argparse
import datetime
import hashlib
import http.server
import json
import os
import random
import re
import string
import sys
import threading
import time
import traceback
import urllib.parse
import uuid

RESULTS_PORT = "8476"
INDEX = "batch.kubernetes.io/job-completion-index"
QUEUE = "kueue.x-k8s.io/queue-name"
SERVE_TIMEOUT_S = 30.0
USER = "system:serviceaccount:ml:mlpipe"

L = threading.RLock()
MONO0 = time.monotonic()
WALL0 = time.time()


def now():
    return time.monotonic() - MONO0


def stamp(t, nanos=False):
    """The wall time of simulation time t, as the API writes it."""
    wall = WALL0 + t
    d = datetime.datetime.fromtimestamp(int(wall), datetime.timezone.utc)
    s = d.strftime("%Y-%m-%dT%H:%M:%S")
    if nanos:
        s += ".%09d" % int(round((wall - int(wall)) * 1e9) % 1000000000)
    return s + "Z"


def parse_stamp(s):
    """sinceTime -> simulation time (second precision, as the kubelet)."""
    d = datetime.datetime.strptime(s[:19], "%Y-%m-%dT%H:%M:%S")
    wall = d.replace(tzinfo=datetime.timezone.utc).timestamp()
    return wall - WALL0


def suffix():
    return "".join(random.choice(string.ascii_lowercase + string.digits) for _ in range(5))


def status_obj(code, reason, message):
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


class Sim:
    """Everything the server holds; guarded by L."""

    def __init__(self, scenario, state_path):
        self.sc = scenario
        self.state_path = state_path
        self.rv = 100
        # kind -> name -> object (namespaced by the object's own namespace)
        self.objs = {"secrets": {}, "services": {}, "jobs": {}, "workloads": {}}
        self.pods = {}  # name -> Pod
        self.last_state = None
        for o in scenario.get("seed", []):
            kind = {"Secret": "secrets", "Service": "services", "Job": "jobs"}[o["kind"]]
            self.store(kind, o)

    def next_rv(self):
        self.rv += 1
        return str(self.rv)

    def store(self, kind, obj):
        md = obj.setdefault("metadata", {})
        md["uid"] = str(uuid.uuid4())
        md["resourceVersion"] = self.next_rv()
        md["creationTimestamp"] = stamp(now())
        self.objs[kind][md["name"]] = obj
        return obj

    def pod_spec(self, index):
        pods = self.sc.get("pods", {})
        spec = dict(pods.get("default", {}))
        spec.update(pods.get(str(index), {}))
        return spec

    # ---- the Job controller and Kueue ----------------------------------

    def create_job(self, job):
        spec = job.setdefault("spec", {})
        if self.sc.get("drop_fields"):
            spec.pop("completionMode", None)
            spec.pop("suspend", None)
        job["status"] = {}
        self.store("jobs", job)
        labels = job["metadata"].get("labels", {})
        if spec.get("suspend") and QUEUE in labels:
            self.create_workload(job)
        if not spec.get("suspend"):
            self.start_job(job)
        return job

    def create_workload(self, job):
        md = job["metadata"]
        name = "job-%s-%s" % (md["name"][:50], suffix())
        # As Kueue: the Job's uid as a label; the Job's own labels only
        # when the scenario says (Kueue's labelKeysToCopy, empty by default).
        labels = dict(md.get("labels", {})) if self.sc.get("kueue", {}).get("copy_labels") \
            else {}
        labels["kueue.x-k8s.io/job-uid"] = md["uid"]
        wl = {"apiVersion": "kueue.x-k8s.io/v1beta1", "kind": "Workload",
              "metadata": {"name": name, "namespace": md["namespace"],
                           "labels": labels,
                           "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job",
                                                "name": md["name"], "uid": md["uid"],
                                                "controller": True}]},
              "spec": {"queueName": md["labels"][QUEUE],
                       "podSets": [{"name": "main",
                                    "count": job["spec"].get("parallelism", 1)}]},
              "status": {"conditions": []}}
        self.store("workloads", wl)
        wl["_phase"] = -1
        wl["_phase_at"] = now()
        wl["_seen"] = True
        self.kueue_step(wl)

    def kueue_step(self, wl):
        """Moves a Workload to its next message once mlpipe has read the
        current one and min_phase_s passed; past the last one, admits."""
        k = self.sc.get("kueue", {})
        msgs = k.get("messages", [])
        if not wl["_seen"] or now() - wl["_phase_at"] < k.get("min_phase_s", 0.3):
            return
        wl["_phase"] += 1
        wl["_phase_at"] = now()
        wl["_seen"] = False
        wl["metadata"]["resourceVersion"] = self.next_rv()
        if wl["_phase"] < len(msgs):
            reserved = msgs[wl["_phase"]].startswith("Quota reserved")
            wl["status"]["conditions"] = [{
                "type": "QuotaReserved", "status": "True" if reserved else "False",
                "reason": "QuotaReserved" if reserved else "Pending",
                "message": msgs[wl["_phase"]], "lastTransitionTime": stamp(now())}]
            return
        wl["status"]["conditions"].append({
            "type": "Admitted", "status": "True", "reason": "Admitted",
            "message": "The workload is admitted", "lastTransitionTime": stamp(now())})
        owner = wl["metadata"]["ownerReferences"][0]["name"]
        job = self.objs["jobs"].get(owner)
        if job and job["spec"].get("suspend"):
            job["spec"]["suspend"] = False
            job["metadata"]["resourceVersion"] = self.next_rv()
            self.start_job(job)

    def start_job(self, job):
        md, spec = job["metadata"], job["spec"]
        job["status"]["startTime"] = stamp(now())
        if spec.get("completionMode") == "Indexed":
            for i in range(spec.get("completions", 1)):
                self.create_pod(job, i, "%s-%d-%s" % (md["name"], i, suffix()))
        else:  # per-node Jobs (parallelism 1) are told apart by their label
            node = int(md.get("labels", {}).get("mlpipe.dev/node-rank", "0"))
            for i in range(spec.get("parallelism", 1)):
                self.create_pod(job, node + i, "%s-%s" % (md["name"], suffix()))

    def create_pod(self, job, index, name):
        p = Pod(self, job, index, name, self.pod_spec(index))
        self.pods[name] = p

    def job_failed(self, job):
        """backoffLimit 0: the Job fails with its first failed pod and the
        controller deletes the pods still active (after a moment)."""
        st = job["status"]
        if any(c["type"] == "Failed" for c in st.get("conditions", [])):
            return
        st["conditions"] = [{"type": "Failed", "status": "True",
                             "reason": "BackoffLimitExceeded",
                             "message": "Job has reached the specified backoff limit",
                             "lastTransitionTime": stamp(now())}]
        job["metadata"]["resourceVersion"] = self.next_rv()
        for p in self.pods.values():
            if p.job_uid == job["metadata"]["uid"]:
                p.delete(now() + self.sc.get("job_kill_after_s", 2.0))

    def advance(self):
        t = now()
        for name in [n for n, p in self.pods.items() if p.gone(t)]:
            del self.pods[name]
        for wl in list(self.objs["workloads"].values()):
            self.kueue_step(wl)
        for job in self.objs["jobs"].values():
            mine = [p for p in self.pods.values() if p.job_uid == job["metadata"]["uid"]]
            st = job["status"]
            st["active"] = sum(1 for p in mine if p.phase(t) in ("Pending", "Running"))
            st["succeeded"] = sum(1 for p in mine if p.phase(t) == "Succeeded")
            st["failed"] = sum(1 for p in mine if p.phase(t) == "Failed")
            if st["failed"] and job["spec"].get("backoffLimit", 6) == 0:
                self.job_failed(job)
        self.write_state()

    # ---- deletion and the garbage collector ------------------------------

    def delete(self, kind, name, policy):
        obj = self.objs[kind].pop(name)
        uid = obj["metadata"]["uid"]
        if kind == "jobs" and policy != "Orphan":
            for p in self.pods.values():
                if p.job_uid == uid:
                    p.delete(now())
        self.collect(uid)
        return obj

    def collect(self, uid):
        for kind, objs in self.objs.items():
            for name in list(objs):
                refs = objs[name]["metadata"].get("ownerReferences", [])
                if name in objs and any(r.get("uid") == uid for r in refs):
                    self.delete(kind, name, "Background")

    def write_state(self):
        state = {k: sorted(v) for k, v in self.objs.items()}
        state["pods"] = sorted(self.pods)
        text = json.dumps(state, sort_keys=True)
        if text != self.last_state:
            self.last_state = text
            tmp = self.state_path + ".tmp"
            with open(tmp, "w") as f:
                f.write(text + "\n")
            os.replace(tmp, self.state_path)


class Pod:
    """One pod of a Job and its scripted container."""

    def __init__(self, sim, job, index, name, spec):
        md = job["metadata"]
        self.sim = sim
        self.name = name
        self.index = index
        self.job_uid = md["uid"]
        self.sc = spec
        self.created = now()
        self.deleted_at = None
        self.done_at = None  # POST /done
        self.served_status = False
        tmpl = json.loads(json.dumps(job["spec"].get("template", {})))
        tmd = tmpl.get("metadata", {})
        labels = dict(tmd.get("labels", {}))
        annotations = dict(tmd.get("annotations", {}))
        labels.update({"job-name": md["name"], "controller-uid": md["uid"],
                       "batch.kubernetes.io/job-name": md["name"],
                       "batch.kubernetes.io/controller-uid": md["uid"]})
        pspec = tmpl.get("spec", {})
        if job["spec"].get("completionMode") == "Indexed":
            labels[INDEX] = str(index)
            annotations[INDEX] = str(index)
            pspec["hostname"] = "%s-%d" % (md["name"], index)
        self.obj = {"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name, "namespace": md["namespace"],
                                 "uid": str(uuid.uuid4()),
                                 "creationTimestamp": stamp(self.created),
                                 "labels": labels, "annotations": annotations,
                                 "ownerReferences": [{
                                     "apiVersion": "batch/v1", "kind": "Job",
                                     "name": md["name"], "uid": md["uid"],
                                     "controller": True, "blockOwnerDeletion": True}]},
                    "spec": pspec}
        gap = spec.get("line_gap", 0.05)
        lines = spec.get("lines", [])
        if spec.get("unschedulable"):
            self.running_at = None
        else:
            self.running_at = self.created + spec.get("running_after", 0.2)
        self.lines = []
        if self.running_at is not None:
            for i, text in enumerate(lines):
                self.lines.append((self.running_at + (i + 1) * gap, text))
        self.duration = spec.get("duration", (len(lines) + 1) * gap)

    def ranks_end(self):
        return None if self.running_at is None else self.running_at + self.duration

    def natural_end(self):
        """When the container ends by itself, and with what (code, reason, message)."""
        end = self.ranks_end()
        if end is None:
            return None
        code = self.sc.get("exit_code", 0)
        if self.index == 0 and code == 0:
            serve = self.sim.sc.get("serve_timeout_s", SERVE_TIMEOUT_S)
            end = self.done_at + 0.1 if self.done_at is not None else end + serve
        elif self.index == 0:
            end += 0.5  # answers the pending long polls, then exits
        reason = "Completed" if code == 0 else self.sc.get("reason", "Error")
        return end, code, reason, self.sc.get("message", "")

    def end(self):
        """(time, exitCode, reason, message) of the container's end, or None."""
        nat = self.natural_end()
        if self.deleted_at is not None:
            kill = self.deleted_at + self.sim.sc.get("grace_s", 0.3)
            if self.running_at is None or kill < self.running_at:
                return (kill, None, None, None)  # never ran
            if nat is None or kill < nat[0]:
                return (kill, 143, "Error", "")
        return nat

    def delete(self, at):
        if self.deleted_at is None or at < self.deleted_at:
            self.deleted_at = at

    def gone(self, t):
        if self.deleted_at is None or t < self.deleted_at:
            return False
        e = self.end()
        return e is None or t >= e[0] + 0.1

    def phase(self, t):
        e = self.end()
        if e is not None and t >= e[0] and e[1] is not None:
            return "Succeeded" if e[1] == 0 else "Failed"
        if self.running_at is not None and t >= self.running_at and (e is None or t < e[0]):
            return "Running"
        return "Pending"

    def running(self, t):
        return self.phase(t) == "Running"

    def ranks_done(self, t):
        end = self.ranks_end()
        return end is not None and t >= end

    def render(self, t):
        o = json.loads(json.dumps(self.obj))
        md = o["metadata"]
        md["resourceVersion"] = self.sim.next_rv()
        if self.deleted_at is not None and t >= self.deleted_at:
            md["deletionTimestamp"] = stamp(self.deleted_at)
            md["deletionGracePeriodSeconds"] = int(self.sim.sc.get("grace_s", 0.3) + 0.999)
        ph = self.phase(t)
        e = self.end()
        conds = []
        st = {"phase": ph, "conditions": conds, "hostIP": "10.0.0.1"}
        if self.running_at is None:
            conds.append({"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                          "message": self.sc["unschedulable"]})
            o["status"] = st
            return o
        conds.append({"type": "PodScheduled", "status": "True"})
        st["podIP"] = "10.244.0.%d" % (10 + self.index)
        st["startTime"] = stamp(self.created)
        init_done = t >= self.running_at
        st["initContainerStatuses"] = [{
            "name": "mlpipe-tools", "ready": init_done, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "reason": "Completed"}} if init_done else
            {"running": {"startedAt": stamp(self.created)}}}]
        if ph == "Pending":
            state = {"waiting": {"reason": "PodInitializing"}}
        elif ph == "Running":
            state = {"running": {"startedAt": stamp(self.running_at)}}
        else:
            term = {"exitCode": e[1], "reason": e[2], "startedAt": stamp(self.running_at),
                    "finishedAt": stamp(e[0])}
            if e[3]:
                term["message"] = e[3]
            state = {"terminated": term}
        st["containerStatuses"] = [{"name": "train", "ready": ph == "Running",
                                    "restartCount": 0, "state": state,
                                    "image": "scripted", "imageID": "scripted"}]
        o["status"] = st
        return o


class Results:
    """Rank 0's result files as the scenario has them."""

    def __init__(self, sc):
        r = sc.get("results", {})
        self.files = {}
        self.corrupt = set(r.get("corrupt", []))
        for name, f in r.get("files", {}).items():
            if "text" in f:
                data = f["text"].encode()
            else:
                rnd = random.Random(name)
                data = bytes(rnd.getrandbits(8) for _ in range(f.get("size", 1024)))
            self.files[name] = data

    def status(self):
        files = {n: {"size": len(d), "sha256": hashlib.sha256(d).hexdigest()}
                 for n, d in self.files.items()}
        return {"state": "done", "exit_code": 0, "reason": "", "files": files}

    def served(self, name):
        data = self.files[name]
        if name in self.corrupt and data:
            data = bytes([data[0] ^ 0xff]) + data[1:]
        return data


SIM = None
RESULTS = None
LOG = None
STOP = threading.Event()
KINDS = {"secrets": ("v1", "Secret"), "services": ("v1", "Service"),
         "jobs": ("batch/v1", "Job"), "workloads": ("kueue.x-k8s.io/v1beta1", "Workload")}
PATH_RE = re.compile(
    r"^/(?:api/v1|apis/batch/v1|apis/kueue\.x-k8s\.io/v1beta1)/namespaces/([^/]+)/"
    r"(secrets|services|jobs|workloads|pods)(?:/([^/]+)(?:/(.*))?)?$")


def selects(sel, labels):
    for term in filter(None, (sel or "").split(",")):
        k, _, v = term.partition("=")
        if labels.get(k) != v.lstrip("="):
            return False
    return True


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60

    def log_message(self, fmt, *args):
        pass

    def record(self, status, **extra):
        entry = {"t": round(now(), 3), "method": self.command, "path": self.path,
                 "status": status}
        if self.body:
            try:
                entry["body"] = json.loads(self.body)
            except ValueError:
                entry["body"] = self.body.decode("utf-8", "replace")
        entry.update(extra)
        with L:
            LOG.write(json.dumps(entry, separators=(",", ":"), sort_keys=True) + "\n")
            LOG.flush()

    def send(self, code, obj, **extra):
        data = (json.dumps(obj) + "\n").encode()
        self.record(code, **extra)
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_bytes(self, code, data, ctype, **extra):
        self.record(code, **extra)
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def handle_any(self):
        n = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(n) if n else b""
        url = urllib.parse.urlsplit(self.path)
        q = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        if url.path == "/version":
            v = {"major": "1", "minor": "29+", "gitVersion": "v1.29.0", "platform": "linux/amd64"}
            v.update(SIM.sc.get("version", {}))
            return self.send(200, v)
        m = PATH_RE.match(url.path)
        if not m:
            return self.send(404, status_obj(404, "NotFound", "the server could not find "
                                             "the requested resource"))
        ns, kind, name, sub = m.groups()
        if kind == "pods":
            return self.pods(ns, name, sub, q)
        if sub is not None:
            return self.send(404, status_obj(404, "NotFound", "no such subresource"))
        if self.command == "POST" and name is None:
            return self.create(ns, kind)
        if self.command == "GET" and name is None:
            return self.list(ns, kind, q)
        if self.command == "GET":
            return self.get(ns, kind, name)
        if self.command == "DELETE" and name is not None:
            return self.remove(ns, kind, name)
        return self.send(405, status_obj(405, "MethodNotAllowed", "not scripted"))

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = handle_any

    def not_found(self, kind, name):
        group = "" if kind in ("secrets", "services", "pods") else \
            "." + KINDS[kind][0].split("/")[0]
        return self.send(404, status_obj(404, "NotFound", '%s%s "%s" not found' %
                                         (kind, group, name)))

    def create(self, ns, kind):
        try:
            obj = json.loads(self.body)
        except ValueError:
            return self.send(400, status_obj(400, "BadRequest", "the body is not JSON"))
        name = obj.get("metadata", {}).get("name", "")
        if kind == "secrets" and SIM.sc.get("forbid_secrets"):
            return self.send(403, status_obj(
                403, "Forbidden", 'secrets is forbidden: User "%s" cannot create resource '
                '"secrets" in API group "" in the namespace "%s"' % (USER, ns)))
        with L:
            SIM.advance()
            if name in SIM.objs[kind]:
                return self.send(409, status_obj(409, "AlreadyExists",
                                                 '%s "%s" already exists' % (kind, name)))
            obj["metadata"]["namespace"] = ns
            if kind == "jobs":
                SIM.create_job(obj)
            else:
                SIM.store(kind, obj)
            SIM.write_state()
            out = json.loads(json.dumps(obj))
        return self.send(201, out, uid=out["metadata"]["uid"])

    def list(self, ns, kind, q):
        with L:
            SIM.advance()
            items = [o for o in SIM.objs[kind].values()
                     if o["metadata"].get("namespace") == ns and
                     selects(q.get("labelSelector"), o["metadata"].get("labels", {}))]
            if kind == "workloads":
                for o in items:
                    o["_seen"] = True
            items = [{k: v for k, v in o.items() if not k.startswith("_")} for o in items]
            items = json.loads(json.dumps(items))
            rv = SIM.next_rv()
        api, k = KINDS[kind]
        return self.send(200, {"apiVersion": api, "kind": k + "List",
                               "metadata": {"resourceVersion": rv}, "items": items})

    def get(self, ns, kind, name):
        with L:
            SIM.advance()
            o = SIM.objs[kind].get(name)
            o = json.loads(json.dumps({k: v for k, v in o.items() if not k.startswith("_")})) \
                if o else None
        if o is None:
            return self.not_found(kind, name)
        return self.send(200, o)

    def remove(self, ns, kind, name):
        policy = "Background"
        if self.body:
            try:
                policy = json.loads(self.body).get("propagationPolicy", policy)
            except ValueError:
                pass
        with L:
            SIM.advance()
            if name not in SIM.objs[kind]:
                o = None
            else:
                o = SIM.delete(kind, name, policy)
                o = {k: v for k, v in o.items() if not k.startswith("_")}
            SIM.write_state()
        if o is None:
            return self.not_found(kind, name)
        return self.send(200, o)

    # ---- pods -------------------------------------------------------------

    def pods(self, ns, name, sub, q):
        if name is None and self.command == "GET":
            with L:
                SIM.advance()
                t = now()
                items = [p.render(t) for p in SIM.pods.values()
                         if p.obj["metadata"]["namespace"] == ns and
                         selects(q.get("labelSelector"), p.obj["metadata"]["labels"])]
                rv = SIM.next_rv()
            return self.send(200, {"apiVersion": "v1", "kind": "PodList",
                                   "metadata": {"resourceVersion": rv}, "items": items})
        if name and ":" in name and sub and sub.startswith("proxy/"):
            pod, _, port = name.partition(":")
            return self.proxy(pod, port, sub[len("proxy/"):], q)
        with L:
            p = SIM.pods.get(name)
        if p is None:
            return self.not_found("pods", name)
        if sub == "log":
            return self.log(p, q)
        if sub is None and self.command == "GET":
            with L:
                o = p.render(now())
            return self.send(200, o)
        return self.send(405, status_obj(405, "MethodNotAllowed", "not scripted"))

    def log(self, p, q):
        with L:
            t = now()
            if p.running_at is None or t < p.running_at:
                return self.send(400, status_obj(400, "BadRequest",
                                                 'container "train" in pod "%s" is waiting '
                                                 'to start: PodInitializing' % p.name))
        since = parse_stamp(q["sinceTime"]) if "sinceTime" in q else None
        follow = q.get("follow") == "true"
        stamps = q.get("timestamps") == "true"
        brk = None
        with L:
            if "break_log_after" in p.sc and not getattr(p, "broke", False):
                p.broke = True
                brk = p.sc["break_log_after"]
        self.record(200)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        sent = 0
        i = 0
        try:
            while not STOP.is_set():
                with L:
                    t = now()
                    e = p.end()
                    ended = (e is not None and t >= e[0]) or p.name not in SIM.pods
                    limit = e[0] if e is not None else None
                chunk = b""
                while i < len(p.lines) and p.lines[i][0] <= t and \
                        (limit is None or p.lines[i][0] < limit):
                    at, text = p.lines[i]
                    i += 1
                    if since is not None and at < since:
                        continue
                    line = (stamp(at, True) + " " if stamps else "") + text + "\n"
                    chunk += line.encode()
                    sent += 1
                    if brk is not None and sent >= brk:
                        break
                if chunk:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
                if (brk is not None and sent >= brk) or not follow:
                    break
                if ended and (i >= len(p.lines) or (limit is not None and
                                                    p.lines[i][0] >= limit)):
                    break
                time.sleep(0.03)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:  # the client went away, or stopped reading
            self.close_connection = True

    def proxy(self, name, port, what, q):
        if SIM.sc.get("forbid_proxy"):
            verb = "create" if self.command == "POST" else "get"
            return self.send(403, status_obj(
                403, "Forbidden", 'pods "%s" is forbidden: User "%s" cannot %s resource '
                '"pods/proxy" in API group "" in the namespace "ml"' % (name, USER, verb)))
        with L:
            p = SIM.pods.get(name)
            up = p is not None and port == RESULTS_PORT and p.running(now()) and \
                not SIM.sc.get("proxy_unreachable")
        if not up:
            return self.send(503, status_obj(503, "ServiceUnavailable",
                                             "error trying to reach service: dial tcp "
                                             "10.244.0.10:%s: connect: connection refused" %
                                             port))
        if what == "status" and self.command == "GET":
            deadline = time.monotonic() + min(float(q.get("wait", "0")), 20.0)
            while True:
                with L:
                    t = now()
                    done = p.ranks_done(t)
                    alive = p.name in SIM.pods and p.running(t)
                if done and p.sc.get("exit_code", 0) != 0:
                    return self.send(200, {"state": "done", "exit_code": p.sc["exit_code"],
                                           "reason": p.sc.get("message", ""), "files": {}})
                if done:
                    return self.send(200, RESULTS.status())
                if not alive:
                    return self.send(503, status_obj(503, "ServiceUnavailable",
                                                     "error trying to reach service: EOF"))
                if time.monotonic() >= deadline or STOP.is_set():
                    return self.send(200, {"state": "running"})
                time.sleep(0.03)
        with L:
            done = p.ranks_done(now()) and p.sc.get("exit_code", 0) == 0
        if what.startswith("files/") and self.command == "GET":
            fname = what[len("files/"):]
            if fname not in RESULTS.files or not done:
                return self.send_bytes(404, b"no such file\n", "text/plain")
            data = RESULTS.served(fname)
            return self.send_bytes(200, data, "application/octet-stream",
                                   sha256=hashlib.sha256(data).hexdigest())
        if what == "done" and self.command == "POST":
            if not done:
                return self.send_bytes(409, b"the ranks are running\n", "text/plain")
            with L:
                if p.done_at is None:
                    p.done_at = now()
            return self.send_bytes(200, b"bye\n", "text/plain")
        return self.send_bytes(404, b"not found\n", "text/plain")


class Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        """A client that went away is no news (mlpipe kills its streams)."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            sys.stderr.write("scripted-apiserver: " + traceback.format_exc())


def serve(args):
    global SIM, RESULTS, LOG
    with open(args.scenario) as f:
        scenario = json.load(f)
    os.makedirs(args.dir, exist_ok=True)
    LOG = open(os.path.join(args.dir, "requests.jsonl"), "a")
    SIM = Sim(scenario, os.path.join(args.dir, "state.json"))
    RESULTS = Results(scenario)
    with L:
        SIM.write_state()
    srv = Server(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    tmp = os.path.join(args.dir, "port.tmp")
    with open(tmp, "w") as f:
        f.write("%d\n" % srv.server_address[1])
    os.replace(tmp, os.path.join(args.dir, "port"))

    def ticker():
        stop_file = os.path.join(args.dir, "stop")
        end = time.monotonic() + args.timeout
        while time.monotonic() < end and not os.path.exists(stop_file):
            with L:
                SIM.advance()
            time.sleep(0.05)
        STOP.set()
        srv.shutdown()

    threading.Thread(target=ticker, daemon=True).start()
    srv.serve_forever(poll_interval=0.05)
    with L:
        SIM.advance()
        LOG.flush()
    os._exit(0)


def dotted(obj, path):
    """obj at a dotted path; "\\." is a dot inside a key (labels)."""
    for part in re.split(r"(?<!\\)\.", path):
        part = part.replace("\\.", ".")
        if isinstance(obj, list):
            try:
                obj = obj[int(part)]
            except (ValueError, IndexError):
                return None
        elif isinstance(obj, dict):
            obj = obj.get(part)
        else:
            return None
    return obj


def requests(args):
    n = 0
    with open(args.log) as f:
        for line in f:
            e = json.loads(line)
            if args.method and e["method"] != args.method:
                continue
            if args.path and not re.search(args.path, e["path"]):
                continue
            n += 1
            if args.count:
                continue
            if args.field in ("uid", "status", "sha256", "path", "method", "t"):
                v = e.get(args.field)
            elif args.field:
                v = dotted(e.get("body"), args.field)
            else:
                v = e.get("body")
            print(v if isinstance(v, str) else json.dumps(v, sort_keys=True,
                                                           separators=(",", ":")))
    if args.count:
        print(n)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--scenario", required=True)
    s.add_argument("--dir", required=True)
    s.add_argument("--timeout", type=float, default=120.0)
    r = sub.add_parser("requests")
    r.add_argument("log")
    r.add_argument("--method")
    r.add_argument("--path")
    r.add_argument("--field")
    r.add_argument("--count", action="store_true")
    args = ap.parse_args()
    if args.cmd == "serve":
        serve(args)
    else:
        requests(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
