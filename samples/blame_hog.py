"""gilscope workload: one thread hogs the GIL in a known function, two wait for it (CPython 3.9+).

Unlike the other samples this one runs for a fixed time (BLAME_SECONDS, default 3) under
`gilscope record -- python blame_hog.py`, then prints ONE line of JSON with what it measured
and exits.

Threads (main interpreter):
  MainThread  joins the others (idle)
  gil-hog     in `hog`: `usleep(150000)` called through ctypes.PyDLL, so the GIL stays held
              for those 150 ms, then `time.sleep(0.04)` (without the GIL), over and over
  waiter-1/2  in `spin`: pure-Python loops that want the GIL all the time

Ground truth: while `usleep` runs nobody else can run Python, and both waiters (always wanting
the GIL) wait for it all that time. "hog_seconds" = completed calls × 0.150 s (usleep
overshoots by tens of microseconds) is the time each waiter spent waiting for gil-hog while it
was in `hog` (give or take the microseconds of Python around each call). It is counted by
construction, not timed with perf_counter around the call: after the call the hog must take
the GIL back from a waiter (it drops it at once, asked to by the waiters) before it could read
the clock, so a timing would include its own wait.
"""

import ctypes
import json
import os
import sys
import threading
import time

SECONDS = float(os.environ.get("BLAME_SECONDS", "3"))


HOLD_US = 150_000


def hog(libc, deadline, out, started):
    # Both waiters spin before the first call, so they wait through every call.
    while len(started) < 2:
        time.sleep(0.001)
    calls = 0
    while time.perf_counter() < deadline:
        libc.usleep(HOLD_US)  # holds the GIL (PyDLL)
        calls += 1
        time.sleep(0.04)
    out["hog_seconds"] = calls * HOLD_US / 1e6
    out["hog_calls"] = calls
    out["done"] = True


def spin(out, started):
    started.append(1)
    x = 0
    while "done" not in out:  # until the hog is done: the waiters want the GIL all along
        x += 1


def wait_for_go():
    """With GO_LINE=1: say so on stderr, and start once a line comes on stdin (the test sends it once the recorder
    samples, so everything measured is recorded); then 0.3 s more for the recorder to see the
    threads."""
    if os.environ.get("GO_LINE") == "1":
        sys.stderr.write("waiting for the go line\n")
        sys.stderr.flush()
        sys.stdin.readline()
    time.sleep(0.3)


def main():
    libc = ctypes.PyDLL(None)
    wait_for_go()
    deadline = time.perf_counter() + SECONDS
    out = {}
    started = []
    threads = [
        threading.Thread(target=hog, args=(libc, deadline, out, started), name="gil-hog")
    ]
    threads += [
        threading.Thread(target=spin, args=(out, started), name="waiter-%d" % i) for i in (1, 2)
    ]
    for t in threads:
        t.start()
    out["tids"] = {t.name: t.native_id for t in threads}
    for t in threads:
        t.join()
    print(json.dumps(out), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
