"""gilscope sample: two pure-Python spinners on a free-threaded build (CPython 3.13t+).

Threads (all in the main interpreter):
  MainThread   blocked in os.read() on a pipe in `main_idle`
  spinner-1    pure-Python loop in `spin`
  spinner-2    pure-Python loop in `spin`
  stdin-watch  blocked in os.read(0)

Run it with PYTHON_GIL=0 (the GIL stays disabled: both spinners are attached and on CPU at the
same time) or PYTHON_GIL=1 (the GIL is enabled permanently: at most one of them holds it).
"gil_enabled" in the ready line is sys._is_gil_enabled() after every import this sample does.
On a default (GIL) build it runs too, as two ordinary spinners.
"""

import os
import threading

import sample_support as S


def spin(report):
    report()
    x = 0
    while True:
        x += 1


def main_idle(fd):
    os.read(fd, 1)  # LINE:main


def main():
    watcher = S.guard_against_orphans()
    spinners = [S.start_thread("spinner-%d" % n, spin) for n in (1, 2)]
    threads = [
        S.thread_entry(threading.get_native_id(), threading.current_thread().name, "main", "main_idle",
                       S.marker_line("main")),
    ]
    for n, tid in enumerate(spinners, 1):
        threads.append(S.thread_entry(tid, "spinner-%d" % n, "spinner", "spin", None))
    threads.append(watcher)
    S.print_ready(S.ready_object("freethreaded", threads))
    main_idle(S.block_forever())


if __name__ == "__main__":
    main()
