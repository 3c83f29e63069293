"""gilscope sample: GIL contention with a known answer, for exact mode (CPython 3.9+).

    contention.py [threads]     (default)
Threads (all in the main interpreter):
  MainThread   role main      blocked in os.read() on a pipe (no GIL)
  holder       role holder    loop: ctypes.PyDLL(None).usleep(HOLD_US) -> holds the GIL off CPU
                              for HOLD_US, then time.sleep(GAP_S) -> releases it
  spinner      role spinner   pure-Python loop: wants the GIL all the time
  stdin-watch  role watchdog  blocked in os.read(0)
Ground truth: the spinner waits for the GIL exactly while the holder holds it (it is the only
other thread that wants it), so over any window the spinner's waiting time equals the holder's
holding time; the holder's own waits (after its gap, until the spinner's switch interval ends)
are short (<= one switch interval, 5 ms) per cycle.

    contention.py subinterp     (CPython 3.12+)
Two own-GIL sub-interpreters A and B, each with two threads: the worker thread that created it
(role "sub-holder-a"/"sub-holder-b") holds the GIL for ~SUB_HOLD_S in one C call, then
`time.sleep(SUB_GAP_S)` (releases it), in a loop. The C call is `ctypes.PyDLL(None).usleep`
(off CPU) where ctypes loads in an own-GIL interpreter (3.13+), else samples/gilext's
`hold_sleep` (off CPU too) when $GILEXT_DIR names a gilext build (scripts/build-gilext), else
`sum(range(n))` calibrated to SUB_HOLD_S (on CPU); the ready line says which in "sub_hold"
("pydll", "gilext" or "sum").
A thread started inside the
sub-interpreter (role "sub-spinner-a"/"sub-spinner-b") spins in pure Python. Ground truth: each
spinner waits for its interpreter's GIL exactly while that interpreter's holder holds it, and
never for the other interpreter's threads (had the two interpreters shared a GIL, a spinner
would also wait while the other interpreter's threads hold it).  "interpreter" in each thread entry is
the sub-interpreter's id.

On a free-threaded build run it with PYTHON_GIL=1.
The ready line is the usual one (samples/sample_support.py), plus "hold_us" and "gap_s".
"""

import ctypes
import os
import select
import sys
import threading
import time

import sample_support as S

HOLD_US = 200_000
GAP_S = 0.02


def hold_loop(report):
    usleep = ctypes.PyDLL(None).usleep  # PyDLL: the GIL stays held during the call
    report()
    while True:
        usleep(HOLD_US)  # LINE:hold
        time.sleep(GAP_S)  # releases the GIL


def spin(report):
    report()
    x = 0
    while True:
        x += 1


def main_threads(watcher):
    holder = S.start_thread("holder", hold_loop)
    spinner = S.start_thread("spinner", spin)
    threads = [
        S.thread_entry(threading.get_native_id(), threading.current_thread().name, "main", None, None),
        S.thread_entry(holder, "holder", "holder", None, None),
        S.thread_entry(spinner, "spinner", "spinner", None, None),
        watcher,
    ]
    obj = S.ready_object("contention", threads)
    obj["hold_us"] = HOLD_US
    obj["gap_s"] = GAP_S
    S.print_ready(obj)
    os.read(S.block_forever(), 1)


# Runs inside each sub-interpreter: start a spinner thread there, report both native ids
# through the pipe, then hold the GIL in C calls with gaps.
SUB_HOLD_S = 0.1
SUB_GAP_S = 0.1
SUB_SOURCE = """\
import os
import sys
import threading
import time

try:
    import ctypes

    _usleep = ctypes.PyDLL(None).usleep  # the GIL stays held, off CPU

    def hold():
        _usleep(int({hold} * 1e6))

    kind = "pydll"
except ImportError:  # 3.12: _ctypes does not load in own-GIL interpreters
    _dir = os.environ.get("GILEXT_DIR")
    if _dir:  # samples/gilext supports a per-interpreter GIL: held, off CPU, as with ctypes
        sys.path.insert(0, _dir)
        import gilext

        def hold():
            gilext.hold_sleep(int({hold} * 1e3))

        kind = "gilext"
    else:
        best = 1.0
        for _ in range(5):  # the fastest of 5: calibrating on a busy machine must not shrink n
            t0 = time.perf_counter()
            sum(range(200_000))
            best = min(best, time.perf_counter() - t0)
        n = int(200_000 * {hold} / max(best, 1e-6))

        def hold():
            sum(range(n))  # one C call: holds the GIL, on CPU

        kind = "sum"


def sub_spin():
    x = 0
    while True:
        x += 1


t = threading.Thread(target=sub_spin)
t.start()
os.write({fd}, ("%d %d %s\\n" % (threading.get_native_id(), t.native_id, kind)).encode())
while True:
    hold()
    time.sleep({gap})  # releases the GIL
"""


def sub_worker(report, api, fd, out):
    handle, iid, own = api.create()
    out.update(id=iid, own_gil=own)
    report()
    try:
        api.run(handle, SUB_SOURCE.format(fd=fd, hold=SUB_HOLD_S, gap=SUB_GAP_S))
    except BaseException as e:  # the loop never ends: anything here is a setup failure
        S.fail("sub-interpreter %s: %r" % (iid, e))


def main_subinterp(watcher):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from subinterp_own_gil import Api

    api = Api()
    r, w = os.pipe()
    workers = []
    for tag in ("a", "b"):
        out = {}
        tid = S.start_thread("sub-worker-" + tag, sub_worker, api, w, out)
        workers.append((tag, tid, out))
    got = b""
    while got.count(b"\n") < 2:
        if not select.select([r], [], [], 30)[0]:
            S.fail("the sub-interpreters did not start their spinners within 30 s")
        got += os.read(r, 4096)
    inner = {}
    kinds = set()
    for line in got.decode().splitlines():
        outer_tid, inner_tid, kind = line.split()
        inner[int(outer_tid)] = int(inner_tid)
        kinds.add(kind)
    threads = [
        S.thread_entry(threading.get_native_id(), threading.current_thread().name, "main", None, None),
        watcher,
    ]
    interpreters = [{"id": 0, "own_gil": True}]
    for tag, tid, out in workers:
        if tid not in inner:
            S.fail("no report from the sub-interpreter of thread %d" % tid)
        threads.append(S.thread_entry(tid, "sub-worker-" + tag, "sub-holder-" + tag, None, None,
                                      interpreter=out["id"]))
        threads.append(S.thread_entry(inner[tid], "Thread", "sub-spinner-" + tag, None, None,
                                      interpreter=out["id"]))
        interpreters.append({"id": out["id"], "own_gil": out["own_gil"]})
    obj = S.ready_object("contention-subinterp", threads, interpreters)
    obj["api"] = api.kind
    obj["sub_hold"] = kinds.pop() if len(kinds) == 1 else "mixed"
    obj["sub_hold_s"] = SUB_HOLD_S
    obj["sub_gap_s"] = SUB_GAP_S
    S.print_ready(obj)
    os.read(S.block_forever(), 1)


def main():
    watcher = S.guard_against_orphans()
    mode = sys.argv[1] if len(sys.argv) > 1 else "threads"
    if mode == "threads":
        main_threads(watcher)
    elif mode == "subinterp":
        main_subinterp(watcher)
    else:
        S.fail("unknown mode %r" % mode)


if __name__ == "__main__":
    main()
