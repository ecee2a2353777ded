#!/usr/bin/env python3
"""git-http-server.py - a git smart-HTTP server for the functional tests.

Serves the bare repositories under ROOT through `git http-backend` (as
CGI), on 127.0.0.1 at PORT (0: any free port), behind HTTP basic auth:
every request must carry USER:PASSWORD or it is answered 401 with a
WWW-Authenticate challenge.  Prints "port N" on stdout once it listens;
logs one line per request on stderr ("401 GET /repo.git/info/refs" ...),
which the tests count to check that a client gives up after a bounded
number of refusals.

    git-http-server.py ROOT PORT USER PASSWORD
"""
import base64
import hmac
import http.server
import os
import subprocess
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    # Keep-alive, as git servers do: every response has a Content-Length.
    protocol_version = "HTTP/1.1"
    # Each response leaves in one write, head and body together.
    wbufsize = 1 << 20
    root = user = password = None

    def log_message(self, fmt, *args):  # the request lines below instead
        pass

    def authorised(self):
        h = self.headers.get("Authorization", "")
        if not h.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(h[6:]).decode().partition(":")
        except ValueError:
            return False
        return hmac.compare_digest(user, self.user) and hmac.compare_digest(
            password, self.password)

    def serve(self):
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if not self.authorised():
            sys.stderr.write("401 %s %s\n" % (self.command, path))
            sys.stderr.flush()
            # As forges answer: a challenge with a short body, head and
            # body in one write (wbufsize above).
            msg = b"Authentication required\n"
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(msg)))
            self.end_headers()
            self.wfile.write(msg)
            return
        env = dict(os.environ,
                   GIT_PROJECT_ROOT=self.root, GIT_HTTP_EXPORT_ALL="1",
                   REQUEST_METHOD=self.command, PATH_INFO=path,
                   QUERY_STRING=query, REMOTE_USER=self.user,
                   REMOTE_ADDR=self.client_address[0],
                   CONTENT_TYPE=self.headers.get("Content-Type", ""),
                   CONTENT_LENGTH=str(len(body)))
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        if self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        out = subprocess.run(["git", "http-backend"], input=body, env=env,
                             stdout=subprocess.PIPE, check=False).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        if not _:
            head, _, payload = out.partition(b"\n\n")
        status = 200
        headers = []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name, value.strip()))
        sys.stderr.write("%d %s %s\n" % (status, self.command, path))
        sys.stderr.flush()
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = serve


def main():
    if len(sys.argv) != 5:
        sys.exit("usage: git-http-server.py ROOT PORT USER PASSWORD")
    Handler.root = os.path.abspath(sys.argv[1])
    Handler.user, Handler.password = sys.argv[3], sys.argv[4]
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), Handler)
    print("port %d" % srv.server_address[1], flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
