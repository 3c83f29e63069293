"""gilscope workload: garbage collections the program times itself (CPython 3.9+).

Runs for a fixed time (GC_SECONDS, default 3) under `gilscope record -- python gc_timed.py`,
then prints ONE line of JSON with what it measured and exits.

The main thread keeps 300,000 tracked objects alive with automatic collection off
(`gc.disable()`), then calls `gc.collect()` from `collect_now` every 20 ms: each full
collection traverses them all (tens of ms). A `gc.callbacks` hook times every collection
("start" → "stop", perf_counter); "gc_seconds" is their sum, "collections" their count,
"line" the line of the `gc.collect()` call. With automatic collection off nothing else collects.
"""

import gc
import json
import os
import sys
import time

SECONDS = float(os.environ.get("GC_SECONDS", "3"))


class Node:
    def __init__(self):
        self.ref = self


def collect_now():
    gc.collect()  # the line the collections are triggered at


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
    gc.disable()
    keep = [Node() for _ in range(300_000)]
    timing = {"seconds": 0.0, "n": 0, "start": None}

    def cb(phase, info):
        if phase == "start":
            timing["start"] = time.perf_counter()
        elif timing["start"] is not None:
            timing["seconds"] += time.perf_counter() - timing["start"]
            timing["n"] += 1
            timing["start"] = None

    wait_for_go()
    gc.callbacks.append(cb)
    deadline = time.perf_counter() + SECONDS
    while time.perf_counter() < deadline:
        collect_now()
        time.sleep(0.02)
    gc.callbacks.remove(cb)
    out = {
        "gc_seconds": timing["seconds"],
        "collections": timing["n"],
        "line": collect_now.__code__.co_firstlineno + 1,
        "objects": len(keep),
    }
    print(json.dumps(out), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
