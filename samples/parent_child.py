"""gilscope sample: a Python process that starts a Python child (CPython 3.9+), for
`gilscope record --subprocesses`.

    parent_child.py          the parent
    parent_child.py child    the child (started by the parent with sys.executable)

Parent threads: MainThread (role main, blocked in os.read() on a pipe in `main_idle`),
stdin-watch (role watchdog).
Child threads: MainThread (role main, blocked in os.read() on a pipe in `main_idle`),
spinner (role spinner, pure-Python loop in `spin`: holds the child's GIL ~100 % of the time),
stdin-watch (role watchdog).

The child inherits the parent's stdin (it exits at EOF too) and dies with the parent
(PR_SET_PDEATHSIG). Its ready line goes to the parent through a pipe; the parent prints ONE
ready line once the child is ready: the usual object (samples/sample_support.py) plus "child",
the child's ready object.

On a free-threaded build run it with PYTHON_GIL=1 (the child inherits the environment).
"""

import json
import os
import subprocess
import sys
import threading

import sample_support as S


def spin(report):
    report()
    x = 0
    while True:
        x += 1


def main_idle(fd):
    os.read(fd, 1)  # LINE:main


def child():
    watcher = S.guard_against_orphans()
    spinner = S.start_thread("spinner", spin)
    threads = [
        S.thread_entry(threading.get_native_id(), threading.current_thread().name, "main", "main_idle",
                       S.marker_line("main")),
        S.thread_entry(spinner, "spinner", "spinner", "spin", None),
        watcher,
    ]
    S.print_ready(S.ready_object("parent_child.child", threads))
    main_idle(S.block_forever())


def parent():
    watcher = S.guard_against_orphans()
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "child"], stdout=subprocess.PIPE)
    line = proc.stdout.readline()
    if not line:
        S.fail("the child exited before its ready line (status %s)" % proc.wait())
    threads = [
        S.thread_entry(threading.get_native_id(), threading.current_thread().name, "main", "main_idle",
                       S.marker_line("main")),
        watcher,
    ]
    obj = S.ready_object("parent_child", threads)
    obj["child"] = json.loads(line)
    S.print_ready(obj)
    main_idle(S.block_forever())


if __name__ == "__main__":
    if sys.argv[1:] == ["child"]:
        child()
    else:
        parent()
