"""gilscope sample: an interpreter whose garbage collector runs most of the time (CPython 3.9+).

Threads (main interpreter):
  MainThread   role main      after the ready line: `gc.collect()` in a loop over 200,000
                              long-lived tracked objects (each full collection traverses all of
                              them: tens of milliseconds), with microseconds of Python between
  stdin-watch  role watchdog  blocked in os.read(0) (exits at EOF)

Ground truth: the main interpreter's `gc.collecting` is set for all but a sliver of the time
after the ready line; with GC_LOOP_IDLE=1 the main thread sleeps instead and the flag is never
set. The ready line also has "collect_share": the share of time the same loop spent inside
collections over its first second, measured by the loop itself through gc.callbacks.
"""

import gc
import os
import threading
import time

import sample_support as S


class Node:
    def __init__(self):
        self.ref = self


def main():
    watcher = S.guard_against_orphans()
    keep = [Node() for _ in range(200_000)]
    idle = os.environ.get("GC_LOOP_IDLE") == "1"
    # Measure the loop's own share of time in collections for one second (gc.callbacks).
    inside = [0.0, None]

    def cb(phase, info):
        if phase == "start":
            inside[1] = time.perf_counter()
        elif inside[1] is not None:
            inside[0] += time.perf_counter() - inside[1]
            inside[1] = None

    share = 0.0
    if not idle:
        gc.callbacks.append(cb)
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 1.0:
            gc.collect()
        share = inside[0] / (time.perf_counter() - t0)
        gc.callbacks.remove(cb)
    threads = [
        S.thread_entry(threading.get_native_id(), threading.current_thread().name, "main", None, None),
        watcher,
    ]
    obj = S.ready_object("gc_loop", threads)
    obj["collect_share"] = share
    S.print_ready(obj)
    while True:
        if idle:
            time.sleep(1)
        else:
            gc.collect()
    del keep


main()
