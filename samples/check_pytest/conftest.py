"""Puts $GILEXT_DIR (the directory scripts/build-gilext wrote the gilext extension into) first
on sys.path, so the tests import the built extension (and checks that they do: samples/gilext,
the source directory, would otherwise import as an empty namespace package)."""

import importlib
import os
import sys

_dir = os.environ.get("GILEXT_DIR")
if not _dir or not os.path.isdir(_dir):
    raise RuntimeError("set GILEXT_DIR to the directory scripts/build-gilext wrote")
_dir = os.path.abspath(_dir)
if _dir not in sys.path:
    sys.path.insert(0, _dir)

_mod = importlib.import_module("gilext")
_file = getattr(_mod, "__file__", None)
if not _file or os.path.dirname(os.path.abspath(_file)) != _dir:
    raise RuntimeError("gilext was not imported from GILEXT_DIR=%s (got %r); run "
                       "scripts/build-gilext for this python" % (_dir, _file))
