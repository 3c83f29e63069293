"""gilscope sample: many short-lived threads whose pthread idents (and perhaps TIDs) are reused
(CPython 3.9+), recorded by tests/names.rs.

MODE (argv[1]):
  sequential  threads job-0 ... job-99 one after another, each alive ~20 ms, each joined
              before the next starts (glibc hands the next one the same stack, so the same
              pthread_t: the `threading` ident is reused at once)
  pool        20 rounds of a ThreadPoolExecutor(max_workers=4), each given 40 short tasks and
              shut down: every round recycles the idents of the previous round's workers
  http        a ThreadingHTTPServer on 127.0.0.1 (one new thread per request) under a client
              loop of 150 sequential GET requests, ~20 ms each (bounded: the sample ends after them)

Protocol: it prints a ready line ({"sample": "thread_names", "pid": ..., ...}, see
sample_support.py), then waits for a line on stdin (the test sends one once the recorder is
sampling), does its work, writes the log line below and exits (at EOF on stdin before the go
line it exits at once).

Every thread of the process logs itself: its native TID, its start time (field 22 of
/proc/self/task/TID/stat, clock ticks after boot: with the TID it names one OS thread even
if the TID is reused) and the name `threading` gives it, read by the thread itself while it
runs. The log is ONE line of JSON on stdout,
    {"sample": "thread_names", "mode": MODE, "pid": int, "version": str,
     "threads": [{"native_id": int, "start_ticks": int, "name": str}, ...]}
sorted by (native_id, start_ticks). A thread that logged several times (pool workers, the
main thread) appears once, unless it changed names (it does not here).
"""

import http.client
import http.server
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import sample_support as S

_log = set()
_log_lock = threading.Lock()


def start_ticks(tid):
    with open("/proc/self/task/%d/stat" % tid) as f:
        text = f.read()
    rest = text[text.rindex(")") + 2:].split()
    return int(rest[22 - 3])


def log_self():
    """Record the calling thread as it sees itself."""
    tid = threading.get_native_id()
    entry = (tid, start_ticks(tid), threading.current_thread().name)
    with _log_lock:
        _log.add(entry)


def job(ms):
    log_self()
    deadline = time.monotonic() + ms / 1000.0
    x = 0
    # Half pure Python (holding the GIL), half asleep: both states get sampled.
    while time.monotonic() < deadline:
        for _ in range(200):
            x += 1
        time.sleep(0.001)
    log_self()


def sequential():
    for i in range(100):
        t = threading.Thread(target=job, args=(20,), name="job-%d" % i)
        t.start()
        t.join()


def pool():
    for _ in range(20):
        with ThreadPoolExecutor(max_workers=4) as ex:
            for f in [ex.submit(job, 2) for _ in range(40)]:
                f.result()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        log_self()
        time.sleep(0.02)  # a request takes a while: its thread is sampled once registered
        body = b"x" * 64
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def http_load():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    port = server.server_address[1]
    def serve():
        log_self()
        server.serve_forever(0.05)

    serving = threading.Thread(target=serve, name="http-server")
    serving.start()
    try:
        for _ in range(150):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", "/")
            resp = conn.getresponse()
            if resp.status != 200 or len(resp.read()) != 64:
                S.fail("request failed: %s" % resp.status)
            conn.close()
            log_self()
    finally:
        server.shutdown()
        serving.join()
        server.server_close()


def main():
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL
    except Exception:
        pass
    mode = sys.argv[1] if len(sys.argv) > 1 else "sequential"
    log_self()
    S.print_ready(S.ready_object("thread_names", []))
    if not sys.stdin.readline():
        os._exit(0)
    if mode == "sequential":
        sequential()
    elif mode == "pool":
        pool()
    elif mode == "http":
        http_load()
    else:
        S.fail("unknown mode %r" % mode)
    log_self()
    threads = [{"native_id": t, "start_ticks": s, "name": n} for (t, s, n) in sorted(_log)]
    out = {
        "sample": "thread_names",
        "mode": mode,
        "pid": os.getpid(),
        "version": S.version_string(),
        "threads": threads,
    }
    sys.stdout.write(json.dumps(out, sort_keys=True) + "\n")
    sys.stdout.flush()
    # Without waiting for the recorder: it sees the process go.


if __name__ == "__main__":
    main()
