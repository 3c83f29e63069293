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

import importlib
import os
import sys
import time


def import_gilext(name):
    """Import extension module `name` from $GILEXT_DIR (first on sys.path), making sure it is
    the built extension and not e.g. the samples/gilext source directory (which Python would
    happily import as a namespace package)."""
    d = os.environ.get("GILEXT_DIR")
    if not d or not os.path.isdir(d):
        sys.stderr.write("%s: set GILEXT_DIR to the directory scripts/build-gilext wrote\n"
                         % os.path.basename(__file__))
        sys.exit(2)
    d = os.path.abspath(d)
    if sys.path[0] != d:
        sys.path.insert(0, d)
    mod = importlib.import_module(name)
    f = getattr(mod, "__file__", None)
    if not f or os.path.dirname(os.path.abspath(f)) != d:
        sys.stderr.write("%s: %s was not imported from GILEXT_DIR=%s (got %r); run "
                         "scripts/build-gilext for this python\n"
                         % (os.path.basename(__file__), name, d, f))
        sys.exit(2)
    return mod


def main():
    import_gilext("gilext")
    import_gilext("gilext_legacy")

    time.sleep(0.5)
    sys.stdout.write("check_subinterp: done\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
