"""gilscope sample: a sub-interpreter sharing the main GIL, holding it (CPython 3.9+).

Threads:
  MainThread    interpreter 0    blocked in os.read() on a pipe in `main_idle` (no GIL)
  sub-worker    sub-interpreter  in `sub_hold_gil` (defined in the sub-interpreter's source, file
                                 "<string>", "<script>" on 3.14+): ctypes.PyDLL(None).usleep(30 s)
                                 -> holds the shared GIL, off CPU
  stdin-watch   interpreter 0    blocked in os.read(0)

The worker thread creates the interpreter itself (on <= 3.12 the sub-interpreter's thread state
is reused by run_string and its thread ids name the creating thread):
3.9-3.11 `_xxsubinterpreters.create(isolated=False)` (one GIL per process anyway),
3.12 `_xxsubinterpreters.create(isolated=False)`, 3.13+ `_interpreters.create('legacy')`.

Deterministic timing: main builds the ready line and blocks in read(2). The sub-interpreter
waits (reading /proc/self/task/TID/syscall) until main is blocked there, then writes the ready
line itself (filling in the file name of its code) with a libc write() called through PyDLL,
immediately before its PyDLL usleep. Every other thread is blocked without the GIL and does not
want it, so nothing can take the GIL from the worker afterwards.
"""

import os
import sys
import threading
import time

import sample_support as S

HOLD_US = 30_000_000

SUB_SOURCE = """\
import ctypes
import json
import time

_write = ctypes.PyDLL(None).write
_usleep = ctypes.PyDLL(None).usleep


def sub_hold_gil():
    _write(1, READY, len(READY))
    while True:
        _usleep({hold_us})  # LINE:sub_hold


def main_blocked():
    try:
        with open("/proc/self/task/{main_tid}/syscall") as f:
            fields = f.read().split()
        return fields[0] == "0" and int(fields[1], 16) == {main_fd}
    except (OSError, ValueError, IndexError):
        return False


# The file name of this code: "<string>", or "<script>" on 3.14+.
READY = {ready!r}.replace(b'"@SUB_FILE@"', json.dumps(sub_hold_gil.__code__.co_filename).encode())
while not main_blocked():  # main: blocked in read(2) on its pipe, without the GIL
    time.sleep(0.001)
sub_hold_gil()
"""


class Api:
    """The per-version way to create a shared-GIL sub-interpreter and run source in it."""

    def __init__(self):
        if sys.version_info < (3, 13):
            import _xxsubinterpreters as mod

            self.kind = "_xxsubinterpreters"
        else:
            import _interpreters as mod

            self.kind = "_interpreters"
        self.mod = mod

    def create(self):
        """-> (handle, id, own_gil)"""
        if self.kind == "_xxsubinterpreters":
            h = self.mod.create(isolated=False)
            return h, int(h), False
        h = self.mod.create("legacy")
        return h, int(h), self.mod.get_config(h).gil == "own"

    def run(self, handle, source):
        if self.kind == "_xxsubinterpreters":
            self.mod.run_string(handle, source)
        else:
            err = self.mod.exec(handle, source)
            if err is not None:
                raise RuntimeError("exec failed: %r" % (err,))


def sub_worker(report, api, out):
    handle, iid, own = api.create()
    out.update(id=iid, own_gil=own)
    report()
    while "source" not in out:
        time.sleep(0.001)
    try:
        api.run(handle, out["source"])
    except BaseException as e:  # the loop never ends: anything here is a setup failure
        S.fail("sub-interpreter %s: %r" % (iid, e))


def main_idle(fd):
    os.read(fd, 1)  # LINE:main


def main():
    watcher = S.guard_against_orphans()
    api = Api()
    main_tid = threading.get_native_id()
    main_fd = S.block_forever()
    out = {}
    worker = S.start_thread("sub-worker", sub_worker, api, out)

    threads = [
        S.thread_entry(main_tid, threading.current_thread().name, "main", "main_idle", S.marker_line("main")),
        S.thread_entry(worker, "sub-worker", "sub-holder", "sub_hold_gil", S.marker_line("sub_hold", SUB_SOURCE),
                       file="@SUB_FILE@", interpreter=out["id"]),
        watcher,
    ]
    interpreters = [{"id": 0, "own_gil": True}, {"id": out["id"], "own_gil": out["own_gil"]}]
    obj = S.ready_object("subinterp_shared_gil", threads, interpreters)
    obj["api"] = api.kind
    source = SUB_SOURCE.format(ready=S.ready_bytes(obj), hold_us=HOLD_US, main_tid=main_tid, main_fd=main_fd)
    if S.marker_line("sub_hold", source) != S.marker_line("sub_hold", SUB_SOURCE):
        S.fail("formatting moved the marker")
    out["source"] = source
    main_idle(main_fd)


if __name__ == "__main__":
    main()
