"""A tiny pytest suite for `gilscope check -- python -m pytest samples/check_pytest`.

    pytest_dir=$(scripts/build-gilext --pytest PYTHON)
    GILEXT_DIR=DIR PYTHONPATH=$pytest_dir PYTHON -m pytest -p no:cacheprovider samples/check_pytest

Ground truth (main thread; test order as in this file):
  test_fast_call    gilext.release_spin(20): 20 ms in gilext_release_spin, GIL released
  test_native_call  GILEXT_HOLD=1: gilext.hold_spin(N)   -> N ms in gilext_hold_spin, GIL HELD
                    otherwise:     gilext.release_spin(N) -> N ms, GIL released
                    N = int(GILEXT_MS), default 150
So with GILEXT_HOLD=1 a check with a threshold below N flags test_native_call (and only it);
without it nothing native holds the GIL long (pytest's own work holds it in short stretches:
collection and imports take tens of ms of pure-Python work, interleaved with nothing else, so
a threshold should be set well above a few ms per stretch or target native frames only).
"""

import os

import gilext

HOLD = os.environ.get("GILEXT_HOLD") == "1"
MS = int(os.environ.get("GILEXT_MS") or 150)


def test_fast_call():
    gilext.release_spin(20)


def test_native_call():
    if HOLD:
        gilext.hold_spin(MS)
    else:
        gilext.release_spin(MS)

