"""A loopback stand-in for Grafana Pyroscope's ingest API, for tests/push.rs (and by hand).

    python3 tests/pyroscope_receiver.py DIR [PORT]

Listens on 127.0.0.1:PORT (0: any free port; the port is printed as the first line of
stdout). Every POST /ingest is checked the way Pyroscope reads it — query parameters name,
from, until (unix seconds, from < until), format=pprof, sampleRate (a positive integer),
spyName; the body multipart/form-data with the profile in the `profile` field (or the bare
profile) — and answered 200, or 400 with the reason. Each accepted profile is stored as
DIR/<n>.pb.gz, and one JSON line per request (accepted or not) is appended to
DIR/requests.jsonl: {"n", "ok", "error", "query", "headers", "file"}. Standard library only.
"""

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

DIR = sys.argv[1]
PORT = int(sys.argv[2]) if len(sys.argv) > 2 else 0
LOCK = threading.Lock()
os.makedirs(DIR, exist_ok=True)


def next_n():
    n = 0
    for f in os.listdir(DIR):
        if f.endswith(".pb.gz"):
            n = max(n, int(f.split(".")[0]))
    return n + 1


def profile_of(content_type, body):
    if not content_type.startswith("multipart/form-data"):
        return body
    boundary = None
    for part in content_type.split(";")[1:]:
        k, _, v = part.strip().partition("=")
        if k == "boundary":
            boundary = v.strip('"')
    if not boundary:
        raise ValueError("multipart without a boundary")
    delim = b"--" + boundary.encode()
    for part in body.split(delim)[1:]:
        if part.startswith(b"--"):
            break
        head, _, data = part.partition(b"\r\n\r\n")
        if b'name="profile"' in head:
            return data[: -2] if data.endswith(b"\r\n") else data
    raise ValueError("no `profile` field in the form")


def check_query(q):
    for k in ("name", "from", "until", "format", "sampleRate", "spyName"):
        if len(q.get(k, [])) != 1:
            raise ValueError("query parameter %s missing or repeated" % k)
    if q["format"][0] != "pprof":
        raise ValueError("format is %r, not pprof" % q["format"][0])
    f, u = int(q["from"][0]), int(q["until"][0])
    if not (1_000_000_000 < f < u < 100_000_000_000):
        raise ValueError("from/until are not unix seconds with from < until: %d %d" % (f, u))
    if int(q["sampleRate"][0]) <= 0:
        raise ValueError("sampleRate must be positive")


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        url = urlsplit(self.path)
        q = parse_qs(url.query)
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        rec = {"query": {k: v[0] for k, v in q.items()},
               "headers": {k.lower(): v for k, v in self.headers.items()}}
        try:
            if url.path != "/ingest":
                raise ValueError("path %s is not /ingest" % url.path)
            check_query(q)
            prof = profile_of(self.headers.get("Content-Type", ""), body)
            if not prof.startswith(b"\x1f\x8b"):
                raise ValueError("the profile is not gzip'd")
            with LOCK:
                n = next_n()
                path = os.path.join(DIR, "%d.pb.gz" % n)
                with open(path, "wb") as out:
                    out.write(prof)
                rec.update(n=n, ok=True, error=None, file=path)
                with open(os.path.join(DIR, "requests.jsonl"), "a") as log:
                    log.write(json.dumps(rec) + "\n")
            self.send_response(200)
            self.end_headers()
        except ValueError as e:
            rec.update(n=None, ok=False, error=str(e), file=None)
            with LOCK, open(os.path.join(DIR, "requests.jsonl"), "a") as log:
                log.write(json.dumps(rec) + "\n")
            msg = str(e).encode()
            self.send_response(400)
            self.send_header("Content-Length", str(len(msg)))
            self.end_headers()
            self.wfile.write(msg)


ThreadingHTTPServer.allow_reuse_address = True
server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
