#!/usr/bin/python3
# bench/model_server_torch.py - the peer of mlpipe-model-server in
# bench/model-server: the same MLP (read from an mlpipe model file, see
# docs/model-format.md) in PyTorch, behind the standard library's threading
# HTTP server (HTTP/1.1 keep-alive), answering the same Open Inference
# Protocol infer requests with the same logits and class outputs.
#
#   model_server_torch.py MODEL.bin PORT [NAME]
import json
import struct
import sys
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch


def load(path):
    b = open(path, "rb").read()
    if b[:4] != b"MLPM" or struct.unpack_from("<I", b, 4)[0] != 1:
        sys.exit(path + ": not an mlpipe model file")
    n = struct.unpack_from("<I", b, 8)[0]
    sizes = struct.unpack_from("<%dI" % n, b, 12)
    p = struct.unpack_from("<Q", b, 12 + 4 * n)[0]
    end = 20 + 4 * n + 4 * p
    if zlib.crc32(b[:end]) != struct.unpack_from("<I", b, end)[0]:
        sys.exit(path + ": checksum mismatch")
    params = torch.frombuffer(bytearray(b[20 + 4 * n:end]), dtype=torch.float32)
    layers, off = [], 0
    for i in range(1, n):
        lin = torch.nn.Linear(sizes[i - 1], sizes[i])
        w = sizes[i] * sizes[i - 1]
        lin.weight.data = params[off:off + w].view(sizes[i], sizes[i - 1]).clone()
        off += w
        lin.bias.data = params[off:off + sizes[i]].clone()
        off += sizes[i]
        layers.append(lin)
        if i < n - 1:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers).eval(), sizes


def main():
    model, sizes = load(sys.argv[1])
    port = int(sys.argv[2])
    name = sys.argv[3] if len(sys.argv) > 3 else "model"
    path = "/v2/models/%s/infer" % name
    torch.set_grad_enabled(False)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # The headers and the body are two writes: without TCP_NODELAY,
        # Nagle's algorithm holds the body for the client's delayed ACK
        # and every answer takes 40 ms more than the work.
        disable_nagle_algorithm = True

        def log_message(self, *args):
            pass

        def reply(self, code, obj):
            body = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path == "/v2/health/ready":
                self.reply(200, {})
            else:
                self.reply(404, {"error": "not found"})

        def do_POST(self):
            n = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(n)
            if self.path != path:
                self.reply(404, {"error": "not found"})
                return
            try:
                inp = json.loads(raw)["inputs"][0]
                x = torch.tensor(inp["data"], dtype=torch.float32).view(-1, sizes[0])
            except (ValueError, KeyError, IndexError, RuntimeError) as e:
                self.reply(400, {"error": str(e)})
                return
            logits = model(x)
            classes = logits.argmax(dim=1)
            rows = x.shape[0]
            self.reply(200, {"model_name": name, "model_version": "1", "outputs": [
                {"name": "logits", "datatype": "FP32", "shape": [rows, sizes[-1]],
                 "data": logits.flatten().tolist()},
                {"name": "class", "datatype": "INT64", "shape": [rows],
                 "data": classes.tolist()}]})

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.request_queue_size = 256
    server.serve_forever()


if __name__ == "__main__":
    main()
