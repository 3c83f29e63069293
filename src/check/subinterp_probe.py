# gilscope check --subinterpreters: tries to import extension modules, given by file, each in
# a fresh own-GIL sub-interpreter of this Python (3.12+). Reads [[name, path], ...] as JSON on
# stdin; writes [{"name", "path", "error"}] (error null when the import worked) on stdout.
import json
import sys

try:
    import _interpreters as _i  # 3.13+

    def _run(src):
        iid = _i.create("isolated")
        try:
            exc = _i.exec(iid, src)
            if exc is None:
                return None
            return getattr(exc, "formatted", None) or str(exc)
        finally:
            _i.destroy(iid)

except ImportError:
    import _xxsubinterpreters as _i  # 3.12

    def _run(src):
        iid = _i.create()  # isolated: own GIL, extensions checked
        try:
            _i.run_string(iid, src)
            return None
        except Exception as e:  # RunFailedError carries "ImportError: ..."
            return str(e)
        finally:
            _i.destroy(iid)

SRC = """
import importlib.util as _u
_s = _u.spec_from_file_location(%r, %r)
_m = _u.module_from_spec(_s)
_s.loader.exec_module(_m)
"""

out = []
for name, path in json.load(sys.stdin):
    try:
        err = _run(SRC % (name, path))
    except Exception as e:  # the sub-interpreter itself could not be made
        err = "%s: %s" % (type(e).__name__, e)
    out.append({"name": name, "path": path, "error": err})
json.dump(out, sys.stdout)
