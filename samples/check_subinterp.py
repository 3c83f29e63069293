"""gilscope check workload (3.12+): one extension that supports own-GIL sub-interpreters and
one that does not, both imported in the main interpreter.

    GILEXT_DIR=DIR python3.12 samples/check_subinterp.py

Runs to completion (no ready line): imports gilext and gilext_legacy (from GILEXT_DIR, put
first on sys.path), sleeps 0.5 s, exits 0.

Ground truth (slots of samples/gilext, multi-phase init both):
  gilext         Py_mod_multiple_interpreters = Py_MOD_PER_INTERPRETER_GIL_SUPPORTED (2)
                 -> importable in an own-GIL sub-interpreter
  gilext_legacy  Py_mod_multiple_interpreters = Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED (0)
                 -> not importable in an own-GIL sub-interpreter: ImportError "module
                 gilext_legacy does not support loading in subinterpreters"
Both import in a shared-GIL ("legacy") sub-interpreter. So `gilscope check --subinterpreters`
must flag gilext_legacy and not gilext.

Checked by hand (3.12.1, 3.13.0, 3.13t): in the own-GIL sub-interpreter of
  3.12:  _xxsubinterpreters.run_string(_xxsubinterpreters.create(), "import gilext_legacy")
         raises RunFailedError("<class 'ImportError'>: module gilext_legacy does not support
         loading in subinterpreters"); the same with "import gilext" succeeds;
  3.13+: _interpreters.exec(_interpreters.create('isolated'), "import gilext_legacy") returns an
         exception summary with that ImportError; "import gilext" returns None;
with _xxsubinterpreters.create(isolated=False) / _interpreters.create('legacy') both import on
GIL builds. On the free-threaded 3.13t even 'legacy' (shared GIL) refuses gilext_legacy: there
the config has check_multi_interp_extensions=True whatever is asked. (The sub-interpreter needs
GILEXT_DIR on its own sys.path first.)

stdout: one final line `check_subinterp: done`.
"""

import os
import sys
import time

from gilext_support import import_gilext


def main():
    import_gilext("gilext")
    import_gilext("gilext_legacy")

    time.sleep(0.5)
    sys.stdout.write("check_subinterp: done\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
