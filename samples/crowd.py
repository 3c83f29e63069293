"""gilscope sample: 2 pure-Python spinners among 200 threads that sleep in loops (CPython
3.9+), on a machine with far fewer CPUs than runnable threads.

Threads (all in the main interpreter, id 0):
  spinner-0, spinner-1  role spinner   pure-Python loop in `spin`: they never block, never
                                       sleep, never release the GIL of their own accord; the
                                       only time they are not holding it they are waiting for
                                       it (or, for a moment, handing it over)
  sleeper-0 … -199      role sleeper   `time.sleep(0.001)` in a loop in `nap` (wake up, take
                                       the GIL for a moment, sleep again)
  MainThread            role main      blocked in read(2) on a pipe of its own
  stdin-watch           role watchdog  blocked in os.read(0) (exits at EOF)

So a spinner is never idle: every sample of it is held or waiting (a reading that cannot tell
says unknown). The ready line is written once every thread has started.
"""

import os
import threading
import time

import sample_support as S

SLEEPERS = int(os.environ.get("CROWD_SLEEPERS") or 200)


def spin(report):
    report()
    x = 0
    while True:  # LINE:spin
        x += 1


def nap(report):
    report()
    while True:
        time.sleep(0.001)


def main():
    watch = S.guard_against_orphans()
    threads = [watch]
    for i in range(2):
        name = "spinner-%d" % i
        tid = S.start_thread(name, spin)
        threads.append(S.thread_entry(tid, name, "spinner", "spin", None))
    for i in range(SLEEPERS):
        name = "sleeper-%d" % i
        tid = S.start_thread(name, nap)
        threads.append(S.thread_entry(tid, name, "sleeper", None, None))
    r = S.block_forever()
    threads.append(S.thread_entry(threading.get_native_id(), "MainThread", "main", "main", None))
    S.print_ready(S.ready_object("crowd", threads))
    os.read(r, 1)


if __name__ == "__main__":
    main()
