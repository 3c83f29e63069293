"""gilscope benchmark target: release-heavy work, timed (CPython 3.9+).

    switchy.py CALLS THREADS

THREADS threads each call os.lseek on /dev/null CALLS times. CPython releases and re-takes
the GIL around every such system call (one drop_gil, one take_gil: 3 probe events in exact
mode), so this is about the worst case for exact mode; with 2+ threads they also contend.
Same method as the ignored test `overhead_per_event_is_measured` in tests/exact.rs.
(`time.sleep(0)` would measure the timer slack instead: ~55 µs per call.)

Protocol as in cpu_work.py: ready line {"pid", "version"}, waits for one line on stdin, runs,
prints {"elapsed": wall seconds, "cpu": CPU seconds of
the process}, exits.
"""

import json
import os
import sys
import threading
import time


def die_with_parent():
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL
    except Exception:
        pass


def main():
    die_with_parent()
    n, k = int(sys.argv[1]), int(sys.argv[2])
    fd = os.open("/dev/null", os.O_RDONLY)

    def work():
        s = os.lseek
        for _ in range(n):
            s(fd, 0, 0)

    v = sys.version_info
    print(json.dumps({"pid": os.getpid(), "version": "%d.%d.%d" % v[:3]}), flush=True)
    if not sys.stdin.readline():
        os._exit(0)
    ts = [threading.Thread(target=work) for _ in range(k)]
    t0, c0 = time.perf_counter(), time.process_time()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    print(json.dumps({"elapsed": time.perf_counter() - t0, "cpu": time.process_time() - c0}),
          flush=True)


if __name__ == "__main__":
    main()
