"""gilscope benchmark target: a fixed amount of CPU-bound Python work, timed (CPython 3.9+).

    cpu_work.py ROUNDS          pure Python (recursive fib(18) per round), one thread

Protocol: prints {"pid", "version"} on stdout when ready, then waits for one line on stdin
("go"), runs ROUNDS rounds, prints {"elapsed": wall seconds, "cpu": CPU seconds of
the process} and exits. Exits at once at stdin EOF
or when its parent dies. The time measured is the work's own wall time (perf_counter), so
the profiler's start-up is not in it.
"""

import json
import os
import sys
import time


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def work(rounds):
    s = 0
    for _ in range(rounds):
        s += fib(18)
    return s


def die_with_parent():
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL
    except Exception:
        pass


def main():
    die_with_parent()
    rounds = int(sys.argv[1])
    work(1)  # warm up (specialisation on 3.11+)
    v = sys.version_info
    print(json.dumps({"pid": os.getpid(), "version": "%d.%d.%d" % v[:3]}), flush=True)
    if not sys.stdin.readline():
        os._exit(0)
    t0, c0 = time.perf_counter(), time.process_time()
    work(rounds)
    print(json.dumps({"elapsed": time.perf_counter() - t0, "cpu": time.process_time() - c0}),
          flush=True)


if __name__ == "__main__":
    main()
