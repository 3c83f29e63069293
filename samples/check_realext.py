"""Holds and releases of the GIL by extensions built with real toolchains (samples/realext:
pybind11 3.1 and Cython 3.3, built by scripts/build-realext), for `gilscope check`.

    python check_realext.py DIR [MS]

DIR holds the built modules. After `ready`, and a pause long enough for `check` to attach,
each call lasts MS milliseconds (default 300): three hold the GIL, two release it.
"""

import sys
import time

sys.path.insert(0, sys.argv[1])
MS = int(sys.argv[2]) if len(sys.argv) > 2 else 300

import cyext  # noqa: E402
import pbext  # noqa: E402

print("ready", flush=True)
time.sleep(1.5)
pbext.chrono_spin(MS)  # LINE:chrono
pbext.crunch(MS)  # LINE:crunch
pbext.release_spin(MS)  # LINE:release
cyext.spin_gil(MS)  # LINE:cy_gil
cyext.spin_nogil(MS)  # LINE:cy_nogil
