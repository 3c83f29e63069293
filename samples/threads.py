"""gilscope sample: one interpreter, threads with known GIL behaviour (CPython 3.9+).

Threads (all in the main interpreter, id 0):
  MainThread    role main      blocked in os.read() on a pipe in `main_idle` (no GIL, off CPU)
  spinner       role spinner   pure-Python loop in `spin` (wants the GIL all the time)
  gil-holder    role holder    in `hold_gil`: ctypes.PyDLL(None).usleep(30 s) -> holds the GIL, off CPU
  gil-releaser  role releaser  in `release_gil`: ctypes.CDLL(None).usleep(25 s) loop -> no GIL, off CPU
  idle          role idle      blocked in os.read() on a pipe in `idle` (no GIL, off CPU)
  stdin-watch   role watchdog  blocked in os.read(0) in `watch_stdin` (exits at EOF)

Deterministic timing: main checks (through /proc/self/task/TID/syscall) that the releaser, the
idle thread and the watcher are blocked in their system calls, builds the ready line and blocks
itself in read(2). The holder waits until main is blocked there, then writes the ready line
itself, with a libc write() called through PyDLL (the GIL stays held), immediately before its
PyDLL usleep. So by the time anybody can read the line, the holder holds the GIL and keeps it
for 30 s: a waiter (the spinner) only asks for the GIL after a whole switch interval (5 ms)
without a switch, and the two calls take microseconds. Every thread blocks in read(2) on a pipe
of its own (not on a lock) because a thread blocked on a lock and one waiting for the GIL both
show futex(2) in /proc.

On a free-threaded build run it with PYTHON_GIL=1 (with the GIL disabled there is no GIL to hold).
"""

import ctypes
import os
import threading
import time

import sample_support as S

HOLD_US = 30_000_000
RELEASE_US = 25_000_000


def spin(report):
    report()
    x = 0
    while True:
        x += 1


def hold_gil(report, ready, main_tid, main_fd):
    write = ctypes.PyDLL(None).write  # PyDLL: the GIL stays held during the call
    usleep = ctypes.PyDLL(None).usleep
    report()
    # Until main has built the ready line and is blocked in read(2), without the GIL.
    while not (ready and S.blocked_in(main_tid, (S.SYS_READ,), main_fd)):
        time.sleep(0.001)
    line = ready[0]
    write(1, line, len(line))
    while True:
        usleep(HOLD_US)  # LINE:hold


def release_gil(report):
    usleep = ctypes.CDLL(None).usleep  # CDLL: the GIL is released during the call
    report()
    while True:
        usleep(RELEASE_US)  # LINE:release


def idle(report, fd):
    report()
    os.read(fd, 1)  # LINE:idle


def main_idle(fd):
    os.read(fd, 1)  # LINE:main


def main():
    watcher = S.guard_against_orphans()
    main_tid = threading.get_native_id()
    main_fd = S.block_forever()
    idle_fd = S.block_forever()
    ready = []
    spinner = S.start_thread("spinner", spin)
    holder = S.start_thread("gil-holder", hold_gil, ready, main_tid, main_fd)
    releaser = S.start_thread("gil-releaser", release_gil)
    idler = S.start_thread("idle", idle, idle_fd)
    S.wait_in_syscall(releaser, S.SLEEPING, "gil-releaser")
    S.wait_in_syscall(idler, (S.SYS_READ,), "idle", fd=idle_fd)

    threads = [
        S.thread_entry(main_tid, threading.current_thread().name, "main", "main_idle", S.marker_line("main")),
        S.thread_entry(spinner, "spinner", "spinner", "spin", None),
        S.thread_entry(holder, "gil-holder", "holder", "hold_gil", S.marker_line("hold")),
        S.thread_entry(releaser, "gil-releaser", "releaser", "release_gil", S.marker_line("release")),
        S.thread_entry(idler, "idle", "idle", "idle", S.marker_line("idle")),
        watcher,
    ]
    ready.append(S.ready_bytes(S.ready_object("threads", threads)))
    main_idle(main_fd)


if __name__ == "__main__":
    main()
