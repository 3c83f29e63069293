"""gilscope sample: a thread that holds the GIL exactly half the time (CPython 3.9+).

Threads (all in the main interpreter, id 0):
  MainThread   role main      blocked in os.read() on a pipe in `main_idle` (no GIL, off CPU)
  duty         role duty      loop: ctypes.PyDLL(None).usleep(200 ms) (holds the GIL, off CPU),
                              then ctypes.CDLL(None).usleep(200 ms) (releases it, off CPU)
  releaser     role releaser  loop: ctypes.CDLL(None).usleep(10 ms) (no GIL while sleeping)
  stdin-watch  role watchdog  blocked in os.read(0) in `watch_stdin` (exits at EOF)

Ground truth over any window of whole periods (period 400 ms + microseconds of Python code):
  * duty holds the GIL 50 % of the time (off CPU both halves);
  * releaser never holds the GIL for more than the microseconds between two usleep calls; each
    time its 10 ms sleep ends while duty holds the GIL it must wait for the GIL until duty's
    200 ms hold ends: it waits for the GIL about (200 - 5) / 400 = 48.75 % of the time;
  * MainThread is idle (off CPU, no GIL) 100 % of the time.
Over a window of T seconds that is not a whole number of periods, the shares move by at most
half a half-period over T (100 ms / T: 2.5 points for 4 s).

The ready line is the usual one (samples/sample_support.py) plus "hold_us", "release_us",
"releaser_us". It is printed once every thread has started its loop.

Environment:
  DUTY_EXIT_AFTER=SECS   exit (status 0) SECS seconds after the ready line (for tests of a target
                         that ends during a recording).

On a free-threaded build run it with PYTHON_GIL=1 (with the GIL disabled there is no GIL to hold).
"""

import ctypes
import os
import threading
import time

import sample_support as S

HOLD_US = 200_000
RELEASE_US = 200_000
RELEASER_US = 10_000


def duty(report):
    hold = ctypes.PyDLL(None).usleep  # PyDLL: the GIL stays held during the call
    release = ctypes.CDLL(None).usleep  # CDLL: the GIL is released during the call
    report()
    while True:
        hold(HOLD_US)  # LINE:hold
        release(RELEASE_US)  # LINE:release


def releaser(report):
    usleep = ctypes.CDLL(None).usleep
    report()
    while True:
        usleep(RELEASER_US)  # LINE:releaser


def main_idle(fd):
    os.read(fd, 1)  # LINE:main


def exit_later(report, seconds):
    report()
    time.sleep(seconds)
    os._exit(0)


def main():
    watcher = S.guard_against_orphans()
    main_tid = threading.get_native_id()
    main_fd = S.block_forever()
    duty_tid = S.start_thread("duty", duty)
    releaser_tid = S.start_thread("releaser", releaser)
    threads = [
        S.thread_entry(main_tid, threading.current_thread().name, "main", "main_idle", S.marker_line("main")),
        S.thread_entry(duty_tid, "duty", "duty", "duty", None),
        S.thread_entry(releaser_tid, "releaser", "releaser", "releaser", S.marker_line("releaser")),
        watcher,
    ]
    exit_after = os.environ.get("DUTY_EXIT_AFTER")
    obj = S.ready_object("duty_cycle", threads)
    obj.update(hold_us=HOLD_US, release_us=RELEASE_US, releaser_us=RELEASER_US)
    if exit_after:
        tid = S.start_thread("exit-later", exit_later, float(exit_after))
        obj["threads"].append(S.thread_entry(tid, "exit-later", "exit-later", "exit_later", None))
        obj["exit_after"] = float(exit_after)
    S.print_ready(obj)
    main_idle(main_fd)


if __name__ == "__main__":
    main()
