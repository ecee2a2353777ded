#!/usr/bin/env python3
"""slowloris.py - a slow-headers attack on `mlpipe serve`, and a probe of
what still answers while it lasts (tests/functional/serve-slowloris.sh).

    slowloris.py PORT SERVER_PID SECRET REPORT [--hold N] [--ips K]
                 [--crowd M] [--interval S] [--duration S] [--probes P]

Opens N connections from K loopback addresses (127.0.0.2 ...), each sending
a request line and then one header line every S seconds, never finishing
its headers; M more from one address (127.0.0.200) to meet the per-IP
limit; and one (from 127.0.0.201) that sends whole headers and then
trickles its body a byte at a time.  While they are held, it sends P signed GitHub push deliveries and P
GET /healthz from 127.0.0.1, one at a time, and times each.  It stops when
the server has closed every slow connection or after --duration seconds,
and writes a KEY=VALUE report (times in ms):

    held        slow connections open when the probe began
    server_fds  descriptors the server held then (-1: no /proc)
    refused     connections the server closed within 1 s of opening
    crowd_held  of the M from one address, those held past 1 s
    closed_min  earliest close by the server, after the connection opened,
    closed_max  latest close (of those not refused), -1 if none
    open_left   connections still open at the end
    body_closed when the server closed the slow-body connection, -1 if not
    hook_codes  the deliveries' HTTP statuses, sorted and unique
    hook_p50, hook_max, health_p50, health_max
    failures    probe requests that got no answer

Python's standard library only.
"""
import argparse
import hashlib
import hmac
import http.client
import json
import os
import resource
import selectors
import socket
import statistics
import sys
import threading
import time


def raise_fd_limit(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


class Slow:
    def __init__(self, sock, opened, crowd, body):
        self.sock = sock
        self.opened = opened
        self.crowd = crowd
        self.body = body
        self.closed = None  # when the server closed it (monotonic)
        self.lines = 0


def open_slow(port, src, crowd, body=False):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((src, 0))
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    s.setblocking(False)
    c = Slow(s, time.monotonic(), crowd, body)
    head = b"POST /hooks/github HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if body:
        head += b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    try:
        s.send(head)
    except OSError:
        c.closed = time.monotonic()
    return c


def probe(port, secret, count, out):
    """Signed deliveries and /healthz, alternately, each timed."""
    hooks, health, codes, failures = [], [], set(), 0
    for i in range(count):
        after = hashlib.sha1(os.urandom(16)).hexdigest()
        body = json.dumps({
            "ref": "refs/heads/main",
            "before": "0" * 40,
            "after": after,
            "repository": {"clone_url": out["remote"]},
        }).encode()
        sig = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        for kind in ("hook", "health"):
            t0 = time.monotonic()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10,
                                                  source_address=("127.0.0.1", 0))
                if kind == "hook":
                    conn.request("POST", "/hooks/github", body=body, headers={
                        "X-GitHub-Event": "push",
                        "X-GitHub-Delivery": "slow-%d-%s" % (i, after[:8]),
                        "X-Hub-Signature-256": sig,
                        "Content-Type": "application/json",
                    })
                else:
                    conn.request("GET", "/healthz")
                resp = conn.getresponse()
                resp.read()
                ms = (time.monotonic() - t0) * 1000.0
                conn.close()
            except OSError:
                failures += 1
                continue
            if kind == "hook":
                hooks.append(ms)
                codes.add(resp.status)
            else:
                health.append(ms)
                if resp.status != 200:
                    failures += 1
    out["hook_codes"] = ",".join(str(c) for c in sorted(codes))
    for name, xs in (("hook", hooks), ("health", health)):
        out[name + "_p50"] = "%.1f" % statistics.median(xs) if xs else "-1"
        out[name + "_max"] = "%.1f" % max(xs) if xs else "-1"
    out["failures"] = str(failures)


def count_fds(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return -1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("server_pid", type=int)
    ap.add_argument("secret")
    ap.add_argument("report")
    ap.add_argument("--remote", default="file:///nonexistent")
    ap.add_argument("--hold", type=int, default=1000)
    ap.add_argument("--ips", type=int, default=8)
    ap.add_argument("--crowd", type=int, default=200)
    ap.add_argument("--interval", type=float, default=2.0)
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--probes", type=int, default=20)
    a = ap.parse_args()
    raise_fd_limit(a.hold + a.crowd + 256)
    secret = open(a.secret, "rb").read().strip()
    start = time.monotonic()
    conns = []
    for i in range(a.hold):
        conns.append(open_slow(a.port, "127.0.0.%d" % (2 + i % a.ips), False))
    for i in range(a.crowd):
        conns.append(open_slow(a.port, "127.0.0.200", True))
    conns.append(open_slow(a.port, "127.0.0.201", False, True))
    sel = selectors.DefaultSelector()
    for c in conns:
        if c.closed is None:
            sel.register(c.sock, selectors.EVENT_READ, c)
    out = {"remote": a.remote}
    prober = None
    next_line = time.monotonic() + a.interval
    probe_at = start + 1.5
    while time.monotonic() - start < a.duration:
        now = time.monotonic()
        if prober is None and now >= probe_at:
            out["held"] = str(sum(1 for c in conns if c.closed is None))
            out["server_fds"] = str(count_fds(a.server_pid))
            prober = threading.Thread(target=probe, args=(a.port, secret, a.probes, out))
            prober.start()
        if now >= next_line:
            for c in conns:
                if c.closed is not None:
                    continue
                try:
                    c.sock.send(b" " if c.body else b"X-Slow-%d: x\r\n" % c.lines)
                    c.lines += 1
                except OSError:
                    c.closed = now
                    sel.unregister(c.sock)
            next_line = now + a.interval
        for key, _ in sel.select(timeout=0.05):
            c = key.data
            try:
                data = c.sock.recv(4096)
            except OSError:
                data = b""
            if not data:
                c.closed = time.monotonic()
                sel.unregister(c.sock)
        if prober is not None and not prober.is_alive() and \
                all(c.closed is not None for c in conns):
            break
    if prober is not None:
        prober.join()
    refused = [c for c in conns if c.closed is not None and c.closed - c.opened < 1.0]
    later = [(c.closed - c.opened) * 1000.0 for c in conns
             if c.closed is not None and c.closed - c.opened >= 1.0]
    out["refused"] = str(len(refused))
    out["crowd_held"] = str(sum(1 for c in conns if c.crowd and c not in refused))
    out["closed_min"] = "%.0f" % min(later) if later else "-1"
    out["closed_max"] = "%.0f" % max(later) if later else "-1"
    out["open_left"] = str(sum(1 for c in conns if c.closed is None))
    body = conns[-1]
    out["body_closed"] = "%.0f" % ((body.closed - body.opened) * 1000.0) \
        if body.closed is not None else "-1"
    for c in conns:
        c.sock.close()
    del out["remote"]
    with open(a.report, "w") as f:
        for k in sorted(out):
            f.write("%s=%s\n" % (k, out[k]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
