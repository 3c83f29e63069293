"""gilscope benchmark target: a stdlib threaded HTTP server on loopback (CPython 3.9+).

    http_server.py

`http.server.ThreadingHTTPServer` on 127.0.0.1 (a free port), one thread per connection,
answering every GET with a small body built in Python. Ready line {"pid", "version",
"port"}; serves until its stdin reaches EOF (or its parent dies), then exits.
The load comes from `http_client.py` in another process.
"""

import http.server
import json
import os
import sys
import threading


def die_with_parent():
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL
    except Exception:
        pass


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"path": self.path, "items": [i * i for i in range(50)]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    die_with_parent()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True, name="serve_forever").start()
    print(json.dumps({"pid": os.getpid(), "version": sys.version.split()[0],
                      "port": srv.server_address[1]}), flush=True)
    sys.stdin.read()
    srv.shutdown()


if __name__ == "__main__":
    main()
