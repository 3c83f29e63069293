"""Shared by the `gilscope check` workloads: importing the gilext test extension.

scripts/build-gilext writes the extension into a directory; the workloads find it through
$GILEXT_DIR.
"""

import importlib
import os
import sys


def import_gilext(name):
    """Import extension module `name` from $GILEXT_DIR (first on sys.path), making sure it is
    the built extension and not e.g. the samples/gilext source directory (which Python would
    happily import as a namespace package)."""
    d = os.environ.get("GILEXT_DIR")
    if not d or not os.path.isdir(d):
        sys.stderr.write("%s: set GILEXT_DIR to the directory scripts/build-gilext wrote\n"
                         % os.path.basename(sys.argv[0]))
        sys.exit(2)
    d = os.path.abspath(d)
    if sys.path[0] != d:
        sys.path.insert(0, d)
    mod = importlib.import_module(name)
    f = getattr(mod, "__file__", None)
    if not f or os.path.dirname(os.path.abspath(f)) != d:
        sys.stderr.write("%s: %s was not imported from GILEXT_DIR=%s (got %r); run "
                         "scripts/build-gilext for this python\n"
                         % (os.path.basename(sys.argv[0]), name, d, f))
        sys.exit(2)
    return mod
