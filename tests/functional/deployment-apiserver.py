#!/usr/bin/env python3
"""deployment-apiserver.py - the part of a Kubernetes API server that a
rollout talks to, scripted, for tests/functional/dashboards.sh.

It plays, over plain HTTP on 127.0.0.1, one apps/v1 Deployment (its
namespace and name from the command line, one container
"model-container") and its controller: GET of the Deployment, a strategic
merge PATCH of its pod template (containers by name: image and env;
annotations, null removing one), the resourceVersion precondition (409
when stale), and watches of it (the current object as one event, then the
stream ends; mlpipe watches again from that version).  The controller
acts at once: after a PATCH the status is that of a finished rollout
(every replica updated and available, a new revision), unless the
container's image contains "broken": then the Progressing condition says
ProgressDeadlineExceeded, as it would once the new pods never became
ready.

    deployment-apiserver.py --dir DIR [--namespace ml] [--name model-service]
                            [--timeout 120]

It writes its port to DIR/port once it listens, each request as a JSON line
to DIR/requests.jsonl, and exits after --timeout seconds or as soon as
DIR/stop exists.  Python 3 stdlib only.
"""
import argparse
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
STATE = {}


def deployment(ns, name):
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "generation": 1,
                     "resourceVersion": "1", "uid": "d-1",
                     "annotations": {"deployment.kubernetes.io/revision": "1"}},
        "spec": {"replicas": 2,
                 "template": {"metadata": {"annotations": {}},
                              "spec": {"containers": [
                                  {"name": "model-container",
                                   "image": "registry.local/model:0",
                                   "env": []}]}}},
        "status": {},
    }


def settle(d):
    """The controller's verdict on the current spec (see the module doc)."""
    meta, spec = d["metadata"], d["spec"]
    replicas = spec["replicas"]
    image = spec["template"]["spec"]["containers"][0]["image"]
    if "broken" in image:
        d["status"] = {
            "observedGeneration": meta["generation"], "replicas": replicas + 1,
            "updatedReplicas": 1, "availableReplicas": replicas,
            "conditions": [{"type": "Progressing", "status": "False",
                            "reason": "ProgressDeadlineExceeded",
                            "message": "ReplicaSet has timed out progressing."}]}
    else:
        d["status"] = {
            "observedGeneration": meta["generation"], "replicas": replicas,
            "updatedReplicas": replicas, "availableReplicas": replicas,
            "readyReplicas": replicas,
            "conditions": [{"type": "Progressing", "status": "True",
                            "reason": "NewReplicaSetAvailable"}]}


def merge_env(env, patch_env):
    for e in patch_env or []:
        env[:] = [x for x in env if x.get("name") != e.get("name")]
        if e.get("$patch") != "delete":
            env.append({k: v for k, v in e.items() if k != "$patch"})


def apply_patch(d, p):
    """A strategic merge patch of what mlpipe changes; False: a container
    the Deployment does not have."""
    tmpl = (p.get("spec") or {}).get("template") or {}
    anns = (tmpl.get("metadata") or {}).get("annotations") or {}
    have = d["spec"]["template"]["metadata"].setdefault("annotations", {})
    for k, v in anns.items():
        if v is None:
            have.pop(k, None)
        else:
            have[k] = v
    for c in (tmpl.get("spec") or {}).get("containers") or []:
        mine = [x for x in d["spec"]["template"]["spec"]["containers"]
                if x["name"] == c.get("name")]
        if not mine:
            return False
        if "image" in c:
            mine[0]["image"] = c["image"]
        merge_env(mine[0].setdefault("env", []), c.get("env"))
    return True


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def send_json(self, status, obj, log_body=None):
        data = json.dumps(obj).encode() + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        with open(os.path.join(STATE["dir"], "requests.jsonl"), "a") as f:
            f.write(json.dumps({"method": self.command, "path": self.path,
                                "body": log_body, "status": status}) + "\n")

    def not_found(self):
        self.send_json(404, {"kind": "Status", "status": "Failure", "code": 404,
                             "reason": "NotFound", "message": "not found"})

    def do_GET(self):
        path = self.path.split("?")[0]
        with LOCK:
            d = json.loads(json.dumps(STATE["d"]))
        if path == STATE["path"]:
            self.send_json(200, d)
        elif path == STATE["list"] and "watch=true" in self.path:
            self.send_json(200, {"type": "MODIFIED", "object": d})
        elif path == STATE["list"]:
            self.send_json(200, {"kind": "DeploymentList", "items": [d],
                                 "metadata": {"resourceVersion":
                                              d["metadata"]["resourceVersion"]}})
        else:
            self.not_found()

    def do_PATCH(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n).decode()
        if self.path.split("?")[0] != STATE["path"]:
            self.not_found()
            return
        try:
            p = json.loads(body)
        except ValueError:
            self.send_json(400, {"kind": "Status", "code": 400, "message": "bad JSON"}, body)
            return
        with LOCK:
            d = STATE["d"]
            rv = (p.get("metadata") or {}).get("resourceVersion")
            if rv is not None and rv != d["metadata"]["resourceVersion"]:
                self.send_json(409, {"kind": "Status", "code": 409, "reason": "Conflict",
                                     "message": "the object has been modified"}, body)
                return
            if not apply_patch(d, p):
                self.send_json(422, {"kind": "Status", "code": 422, "reason": "Invalid",
                                     "message": "unknown container"}, body)
                return
            meta = d["metadata"]
            meta["generation"] += 1
            meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
            rev = int(meta["annotations"]["deployment.kubernetes.io/revision"]) + 1
            meta["annotations"]["deployment.kubernetes.io/revision"] = str(rev)
            settle(d)
            out = json.loads(json.dumps(d))
        self.send_json(200, out, body)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--namespace", default="ml")
    ap.add_argument("--name", default="model-service")
    ap.add_argument("--timeout", type=float, default=120)
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    STATE["dir"] = a.dir
    STATE["d"] = deployment(a.namespace, a.name)
    settle(STATE["d"])
    STATE["list"] = "/apis/apps/v1/namespaces/%s/deployments" % a.namespace
    STATE["path"] = STATE["list"] + "/" + a.name
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    tmp = os.path.join(a.dir, "port.tmp")
    with open(tmp, "w") as f:
        f.write("%d\n" % srv.server_address[1])
    os.rename(tmp, os.path.join(a.dir, "port"))
    end = time.monotonic() + a.timeout
    while time.monotonic() < end and not os.path.exists(os.path.join(a.dir, "stop")):
        time.sleep(0.1)
    srv.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
