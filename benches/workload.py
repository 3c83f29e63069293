"""gilscope benchmark target: N threads over M interpreters, busy or idle (CPython 3.9+).

    workload.py busy|idle THREADS [INTERPRETERS] [DEPTH]

Threads are spread round-robin over the main interpreter and INTERPRETERS-1 own-GIL
sub-interpreters (3.12+). Every thread first recurses DEPTH Python frames (default 16), so a
stack sample has something to walk, then
  busy: spins in pure Python (`x += 1`), holding its interpreter's GIL whenever it runs;
  idle: blocks in os.read() on a pipe of its own (no GIL, off CPU).
The main thread itself only waits (os.read on stdin): it is not one of THREADS.

Protocol (like samples/sample_support.py): one JSON line on stdout once every thread has
reached its loop, {"pid", "version", "threads": [native ids], "interpreters"}; the process
exits when stdin reaches EOF or its parent dies.
"""

import json
import os
import select
import sys
import threading

SUB_SOURCE = """\
import os, threading

def nest(n, leaf):
    if n > 0:
        return nest(n - 1, leaf)
    return leaf()

def busy():
    x = 0
    while True:
        x += 1

def idle():
    r, w = os.pipe()
    os.write({fd}, ("%d\\n" % threading.get_native_id()).encode())
    os.read(r, 1)

def run():
    if {busy}:
        os.write({fd}, ("%d\\n" % threading.get_native_id()).encode())
        nest({depth}, busy)
    else:
        nest({depth}, idle)

for _ in range({extra}):
    threading.Thread(target=run).start()
run()
"""


def die_with_parent():
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL
    except Exception:
        pass


def nest(n, leaf, *args):
    if n > 0:
        return nest(n - 1, leaf, *args)
    return leaf(*args)


def busy(fd):
    os.write(fd, ("%d\n" % threading.get_native_id()).encode())
    x = 0
    while True:
        x += 1


def idle(fd):
    r, w = os.pipe()
    os.write(fd, ("%d\n" % threading.get_native_id()).encode())
    os.read(r, 1)


class Sub:
    """Create an own-GIL sub-interpreter and run source in it (3.12, 3.13, 3.14+)."""

    def __init__(self):
        if sys.version_info < (3, 12):
            raise SystemExit("own-GIL sub-interpreters need CPython 3.12+")
        if sys.version_info < (3, 13):
            import _xxsubinterpreters as mod
        elif sys.version_info < (3, 14):
            import _interpreters as mod
        else:
            import concurrent.interpreters as mod
        self.mod = mod

    def run(self, source):
        v = sys.version_info
        if v < (3, 13):
            self.mod.run_string(self.mod.create(), source)
        elif v < (3, 14):
            err = self.mod.exec(self.mod.create("isolated"), source)
            if err is not None:
                raise RuntimeError(err)
        else:
            self.mod.create().exec(source)


def main():
    die_with_parent()
    kind = sys.argv[1]
    nthreads = int(sys.argv[2])
    ninterp = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    depth = int(sys.argv[4]) if len(sys.argv) > 4 else 16
    assert kind in ("busy", "idle") and nthreads >= ninterp >= 1
    leaf = busy if kind == "busy" else idle
    r, w = os.pipe()
    per = [nthreads // ninterp + (1 if i < nthreads % ninterp else 0) for i in range(ninterp)]
    for _ in range(per[0]):
        threading.Thread(target=nest, args=(depth, leaf, w), daemon=True).start()
    if ninterp > 1:
        sub = Sub()
        for i in range(1, ninterp):
            src = SUB_SOURCE.format(fd=w, busy=kind == "busy", depth=depth, extra=per[i] - 1)
            threading.Thread(target=sub.run, args=(src,), daemon=True).start()
    got = b""
    while got.count(b"\n") < nthreads:
        if not select.select([r], [], [], 60)[0]:
            sys.stderr.write("workload: threads did not start within 60 s\n")
            os._exit(3)
        got += os.read(r, 4096)
    tids = [int(x) for x in got.split()]
    v = sys.version_info
    sys.stdout.write(json.dumps({"pid": os.getpid(), "version": "%d.%d.%d" % v[:3],
                                 "threads": tids, "interpreters": ninterp}) + "\n")
    sys.stdout.flush()
    while os.read(0, 4096):
        pass
    os._exit(0)


if __name__ == "__main__":
    main()
