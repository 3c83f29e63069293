"""gilscope check workload: native calls that hold or release the GIL for MS milliseconds.

    GILEXT_DIR=DIR python samples/check_holds.py MS [CALLS]

Not a ready-line sample: it runs to completion (under `gilscope check -- python ...`) and
exits 0. GILEXT_DIR is the directory scripts/build-gilext wrote the extension into (it is
put first on sys.path). CALLS is an optional comma-separated subset of the names below, in
any order (they always run in the order of the table); default: all six.

Timeline (main thread only, no other Python threads):
  import gilext, wait for the profiler (below), then each selected call,
  each followed by 0.1 s of time.sleep (GIL released), then exit 0.

Ground truth, per call (MS milliseconds each; the native frame is the named symbol in the
gilext shared object, innermost, called from the Python function `main` of this file):

  name           Python call                                   native symbol          GIL
  hold_spin      gilext.hold_spin(MS)                          gilext_hold_spin       HELD, on CPU
  release_spin   gilext.release_spin(MS)                       gilext_release_spin    released, on CPU
  hold_sleep     gilext.hold_sleep(MS)                         gilext_hold_sleep      HELD, off CPU (nanosleep)
  release_sleep  gilext.release_sleep(MS)                      gilext_release_sleep   released, off CPU
  pydll          ctypes.PyDLL(gilext.__file__).gilext_c_spin(MS) gilext_c_spin         HELD, on CPU
  cdll           ctypes.CDLL(gilext.__file__).gilext_c_spin(MS)  gilext_c_spin         released, on CPU

Each call is on its own line of `main`, marked with a `# LINE:<name>` comment (find it with
sample_support.marker_line's pattern, or grep).

So a check with a threshold below MS must flag exactly hold_spin, hold_sleep and pydll
(three holds of ~MS ms: gilext_hold_spin, gilext_hold_sleep, gilext_c_spin via ctypes) and
none of the others. Everything else in the process holds the GIL only briefly (imports
before the 0.3 s sleep take a few ms).

On a free-threaded build the GIL is disabled (gilext declares Py_MOD_GIL_NOT_USED) unless the
interpreter runs with PYTHON_GIL=1 / -X gil=1; then nothing holds a GIL.

Waiting for the profiler: with GILSCOPE_TEST_ATTACHED=PATH (tests/check.rs passes the trace
file it asked `gilscope check --trace` for, whose header is written with check's first
sample of this process and its first chunk within a second after; PATH.PID.EXT when this
process is a descendant of check's command) it waits until that file has grown past its header (at most 60 s, else exit 3); without it, it sleeps GILEXT_ATTACH_S
seconds (default 1.0), for runs by hand.

stdout: one final line `check_holds: done` (nothing else). Errors: traceback on stderr,
exit status 1; bad arguments or no GILEXT_DIR exit with status 2.
"""

import ctypes
import os
import sys
import time

from gilext_support import import_gilext

CALLS = ("hold_spin", "release_spin", "hold_sleep", "release_sleep", "pydll", "cdll")
# Without GILSCOPE_TEST_ATTACHED (a run by hand): time for the profiler to attach.
ATTACH_S = float(os.environ.get("GILEXT_ATTACH_S") or 1.0)
GAP_S = 0.1


def c_spin(lib_class, path):
    fn = lib_class(path).gilext_c_spin
    fn.argtypes = [ctypes.c_uint64]
    fn.restype = None
    return fn


def wait_for_profiler():
    path = os.environ.get("GILSCOPE_TEST_ATTACHED")
    if not path:
        time.sleep(ATTACH_S)
        return
    # gilscope check records the command into PATH, a descendant of it into PATH.PID.EXT.
    base, ext = os.path.splitext(path)
    paths = [path, "%s.%d%s" % (base, os.getpid(), ext)]
    start = time.time()
    first = 0
    # The header comes with check's first sample, the first chunk within a second after it.
    while not first or os.path.getsize(path) <= first:
        if time.time() - start > 60:
            sys.stderr.write("check_holds.py: no first chunk in %s within 60 s\n" % paths)
            sys.exit(3)
        if not first:
            for p in paths:
                if os.path.exists(p) and os.path.getsize(p) > 0:
                    path, first = p, os.path.getsize(p)
        time.sleep(0.005)


def main():
    if len(sys.argv) not in (2, 3):
        sys.stderr.write("usage: check_holds.py MS [CALLS]\n")
        sys.exit(2)
    ms = int(sys.argv[1])
    wanted = CALLS
    if len(sys.argv) == 3:
        wanted = [c.strip() for c in sys.argv[2].split(",") if c.strip()]
        unknown = [c for c in wanted if c not in CALLS]
        if unknown:
            sys.stderr.write("check_holds.py: unknown call(s) %s; known: %s\n"
                             % (",".join(unknown), ",".join(CALLS)))
            sys.exit(2)
    gilext = import_gilext("gilext")

    pydll_spin = c_spin(ctypes.PyDLL, gilext.__file__)  # the GIL stays held during the call
    cdll_spin = c_spin(ctypes.CDLL, gilext.__file__)  # the GIL is released during the call
    wait_for_profiler()
    if "hold_spin" in wanted:
        gilext.hold_spin(ms)  # LINE:hold_spin
        time.sleep(GAP_S)
    if "release_spin" in wanted:
        gilext.release_spin(ms)  # LINE:release_spin
        time.sleep(GAP_S)
    if "hold_sleep" in wanted:
        gilext.hold_sleep(ms)  # LINE:hold_sleep
        time.sleep(GAP_S)
    if "release_sleep" in wanted:
        gilext.release_sleep(ms)  # LINE:release_sleep
        time.sleep(GAP_S)
    if "pydll" in wanted:
        pydll_spin(ms)  # LINE:pydll
        time.sleep(GAP_S)
    if "cdll" in wanted:
        cdll_spin(ms)  # LINE:cdll
        time.sleep(GAP_S)
    sys.stdout.write("check_holds: done\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
