#!/usr/bin/python3
# model-server-client.py - the clients of tests/functional/model-server.sh,
# standard library only.
#
#   accuracy PORT NAME DATA_DIR BATCH      prints "correct N of M"
#   concurrent PORT NAME DATA_DIR THREADS REQUESTS
#                                          prints "same N differ M errors E"
#   load PORT NAME DATA_DIR THREADS STARTED_FILE SECONDS
#                                          prints "ok N refused M reset R lost L"
#   artifact TOKEN FILE PORT_FILE [CERT KEY]
#                                          serves FILE at
#                                          /api/v1/models/fashion/versions/1/artifact
#                                          to "Authorization: Bearer TOKEN" only
#                                          (over TLS with CERT and KEY)
#
# Features are what mlpipe-train computes: float32(byte) * float32(1/255)
# rounded to float32, written exactly (repr of the float32 value).
import gzip
import http.client
import http.server
import json
import os
import ssl
import struct
import sys
import threading
import time


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


SCALE = f32(1.0 / 255.0)
PIXEL = [repr(f32(b * SCALE)) for b in range(256)]


def idx(path):
    raw = gzip.open(path + ".gz").read() if os.path.exists(path + ".gz") else open(path, "rb").read()
    dims = raw[3]
    shape = struct.unpack(">%dI" % dims, raw[4:4 + 4 * dims])
    return shape, raw[4 + 4 * dims:]


def test_set(data_dir):
    (n, h, w), px = idx(os.path.join(data_dir, "t10k-images-idx3-ubyte"))
    _, labels = idx(os.path.join(data_dir, "t10k-labels-idx1-ubyte"))
    f = h * w
    rows = ["[" + ",".join(PIXEL[b] for b in px[i * f:(i + 1) * f]) + "]" for i in range(n)]
    return rows, list(labels), f


def body(rows, f):
    return ('{"inputs":[{"name":"input","datatype":"FP32","shape":[%d,%d],"data":[%s]}]}'
            % (len(rows), f, ",".join(rows))).encode()


def post(conn, name, data):
    conn.request("POST", "/v2/models/%s/infer" % name, body=data,
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    return r.status, r.read()


def accuracy(port, name, data_dir, batch):
    rows, labels, f = test_set(data_dir)
    conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=60)
    correct = 0
    for i in range(0, len(rows), int(batch)):
        status, answer = post(conn, name, body(rows[i:i + int(batch)], f))
        if status != 200:
            sys.exit("batch at %d: HTTP %d %s" % (i, status, answer[:200]))
        classes = [o for o in json.loads(answer)["outputs"] if o["name"] == "class"][0]["data"]
        correct += sum(1 for k, c in enumerate(classes) if c == labels[i + k])
    print("correct %d of %d" % (correct, len(rows)))


def concurrent(port, name, data_dir, threads, requests):
    rows, _, f = test_set(data_dir)
    rows = rows[:50]
    conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=60)
    alone = []
    for r in rows:
        status, answer = post(conn, name, body([r], f))
        if status != 200:
            sys.exit("one by one: HTTP %d %s" % (status, answer[:200]))
        alone.append(json.loads(answer)["outputs"])
    counts = {"same": 0, "differ": 0, "errors": 0}
    lock = threading.Lock()

    def client(t):
        c = http.client.HTTPConnection("127.0.0.1", int(port), timeout=60)
        for k in range(int(requests)):
            i = (t * 7 + k) % len(rows)
            try:
                status, answer = post(c, name, body([rows[i]], f))
                key = "errors" if status != 200 else (
                    "same" if json.loads(answer)["outputs"] == alone[i] else "differ")
            except (OSError, http.client.HTTPException):
                key = "errors"
            with lock:
                counts[key] += 1

    ts = [threading.Thread(target=client, args=(t,)) for t in range(int(threads))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    print("same %(same)d differ %(differ)d errors %(errors)d" % counts)


def load(port, name, data_dir, threads, started_file, seconds):
    rows, _, f = test_set(data_dir)
    data = body(rows[:1], f)
    counts = {"ok": 0, "refused": 0, "reset": 0, "lost": 0}
    lock = threading.Lock()
    deadline = time.monotonic() + float(seconds)

    def client():
        while time.monotonic() < deadline:
            c = http.client.HTTPConnection("127.0.0.1", int(port), timeout=20)
            try:
                status, _ = post(c, name, data)
                key = "ok" if status == 200 else "lost"
                if key == "lost":
                    sys.stderr.write("lost: HTTP %d\n" % status)
            except ConnectionRefusedError:
                key = "refused"
            except ConnectionResetError:
                # The kernel completed the handshake after the server's
                # last accept: never read by the server (which reports
                # what it read and did not answer).
                key = "reset"
            except (OSError, http.client.HTTPException) as e:
                sys.stderr.write("lost: %r\n" % e)
                key = "lost"
            finally:
                c.close()
            with lock:
                counts[key] += 1
                if counts["ok"] == 50:
                    open(started_file, "w").close()
            if key in ("refused", "reset"):
                return

    ts = [threading.Thread(target=client) for _ in range(int(threads))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    print("ok %(ok)d refused %(refused)d reset %(reset)d lost %(lost)d" % counts)


def artifact(token, path, port_file, cert=None, key=None):
    model = open(path, "rb").read()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.path != "/api/v1/models/fashion/versions/1/artifact":
                code, data = 404, b"{}"
            elif self.headers.get("Authorization") != "Bearer " + token:
                code, data = 401, b'{"error":"bad token"}'
            else:
                code, data = 200, model
            self.send_response(code)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(port_file + ".tmp", port_file)
    server.serve_forever()


if __name__ == "__main__":
    {"accuracy": accuracy, "concurrent": concurrent, "load": load,
     "artifact": artifact}[sys.argv[1]](*sys.argv[2:])
