"""gilscope check workload for a free-threaded build (3.13t+): an import re-enables the GIL.

    GILEXT_DIR=DIR python3.13t samples/check_ft_reenable.py

Runs to completion (no ready line) and exits 0. GILEXT_DIR is the directory
scripts/build-gilext wrote the extension into (put first on sys.path).

Timeline (main thread only):
  t=0      sleep 0.3 s (time for the profiler to attach)
  t~0.3    import gilext       declares Py_mod_gil = Py_MOD_GIL_NOT_USED: the GIL stays disabled
           sleep 0.3 s, then check sys._is_gil_enabled() is False
  t~0.6    import gilext_gil   no Py_mod_gil slot: CPython enables the GIL for good and emits
             RuntimeWarning: The global interpreter lock (GIL) has been enabled to load module
             'gilext_gil', which has not declared that it can run safely without the GIL. To
             override this behavior and keep the GIL disabled (at your own risk), run with
             PYTHON_GIL=0 or -Xgil=0.
           (3.13.15t prints it on stderr as `<frozen importlib._bootstrap>:488: RuntimeWarning: ...`;
           this script never turns it into an error, whatever -W / PYTHONWARNINGS say), then
           check sys._is_gil_enabled() is True
  t~0.6    sleep 0.5 s, exit 0

So a check must report exactly one re-enabling module, gilext_gil (and not gilext). Under
PYTHON_GIL=0 / -X gil=0 the import does not re-enable the GIL and the second check fails on
purpose (exit 1); under PYTHON_GIL=1 the first one fails. On a default (GIL) build the
script exits 3 with a message: there is nothing to re-enable.

stdout: one final line `check_ft_reenable: done`. A failed check: AssertionError traceback, exit 1
(raised explicitly, so it also works under -O).
"""

import os
import sys
import sysconfig
import time
import warnings

from gilext_support import import_gilext


def main():
    if not sysconfig.get_config_var("Py_GIL_DISABLED"):
        sys.stderr.write("check_ft_reenable.py: needs a free-threaded build (3.13t+)\n")
        sys.exit(3)
    # Whatever -W error / PYTHONWARNINGS say, the re-enable warning must stay a warning
    # (printed once on stderr), or the import below would fail.
    warnings.filterwarnings("default", category=RuntimeWarning)

    time.sleep(0.3)
    import_gilext("gilext")  # Py_MOD_GIL_NOT_USED

    time.sleep(0.3)
    if sys._is_gil_enabled() is not False:
        raise AssertionError("GIL enabled after importing gilext")
    import_gilext("gilext_gil")  # no Py_mod_gil slot: re-enables the GIL

    if sys._is_gil_enabled() is not True:
        raise AssertionError("GIL still disabled after importing gilext_gil")
    time.sleep(0.5)
    sys.stdout.write("check_ft_reenable: done\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
