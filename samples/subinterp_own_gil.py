"""gilscope sample: two own-GIL sub-interpreters burning CPU in parallel (CPython 3.12+).

Threads:
  MainThread     interpreter 0      blocked in os.read() on a pipe in `main_idle`
  spinner        interpreter 0      pure-Python loop in `spin`
  sub-worker-1   sub-interpreter A  runs `sub_spin` (defined in the sub-interpreter's source)
  sub-worker-2   sub-interpreter B  runs `sub_spin`
  stdin-watch    interpreter 0      blocked in os.read(0)

Each worker thread creates its interpreter itself (on 3.12 the thread state of
`_xxsubinterpreters.run_string` names the creating thread) and then runs the busy loop in it:
3.12 `_xxsubinterpreters.create()` + `run_string`, 3.13 `_interpreters.create('isolated')` +
`exec`, 3.14+ `concurrent.interpreters.create()` + `Interpreter.exec`. The frames of
`sub_spin` belong to the sub-interpreter; the worker's outer frames (`sub_worker`, the
threading bootstrap) to interpreter 0.

Every interpreter has its own GIL ("own_gil" in the ready line comes from
`_interpreters.get_config(id).gil` on 3.13+, and from how it was created on 3.12). The ready line
is printed once both sub-interpreters have signalled (through a pipe, sending the file name of
their code: "<string>", or "<script>" on 3.14+) that they entered `sub_spin`. Each sub-interpreter's GIL can only ever be held by its own worker.
"""

import os
import select
import sys
import threading

import sample_support as S

SUB_SOURCE = """\
import os


def sub_spin():
    x = 0
    while True:
        x += 1


os.write({fd}, sub_spin.__code__.co_filename.encode() + b"\\n")  # "<string>", 3.14+: "<script>"
sub_spin()
"""


class Api:
    """The per-version way to create an own-GIL sub-interpreter and run source in it."""

    def __init__(self):
        if sys.version_info < (3, 12):
            S.fail("own-GIL sub-interpreters need CPython 3.12+ (this is %s)" % S.version_string())
        if sys.version_info < (3, 13):
            import _xxsubinterpreters as mod

            self.kind = "_xxsubinterpreters"
        elif sys.version_info < (3, 14):
            import _interpreters as mod

            self.kind = "_interpreters"
        else:
            import concurrent.interpreters as mod

            self.kind = "concurrent.interpreters"
        self.mod = mod

    def create(self):
        """-> (handle, id, own_gil)"""
        if self.kind == "_xxsubinterpreters":
            h = self.mod.create()  # isolated=True: own GIL
            return h, int(h), True
        if self.kind == "_interpreters":
            h = self.mod.create("isolated")
            return h, int(h), self.mod.get_config(h).gil == "own"
        import _interpreters

        h = self.mod.create()
        return h, h.id, _interpreters.get_config(h.id).gil == "own"

    def run(self, handle, source):
        if self.kind == "_xxsubinterpreters":
            self.mod.run_string(handle, source)
        elif self.kind == "_interpreters":
            err = self.mod.exec(handle, source)
            if err is not None:
                raise RuntimeError("exec failed: %r" % (err,))
        else:
            handle.exec(source)


def spin(report):
    report()
    x = 0
    while True:
        x += 1


def sub_worker(report, api, fd, out):
    handle, iid, own = api.create()
    out.update(id=iid, own_gil=own)
    report()
    try:
        api.run(handle, SUB_SOURCE.format(fd=fd))
    except BaseException as e:  # the loop never ends: anything here is a setup failure
        S.fail("sub-interpreter %s: %r" % (iid, e))


def main_idle(fd):
    os.read(fd, 1)  # LINE:main


def main():
    watcher = S.guard_against_orphans()
    api = Api()
    r, w = os.pipe()
    spinner = S.start_thread("spinner", spin)
    workers = []
    for n in (1, 2):
        out = {}
        tid = S.start_thread("sub-worker-%d" % n, sub_worker, api, w, out)
        workers.append((tid, "sub-worker-%d" % n, out))
    got = b""
    while got.count(b"\n") < 2:  # each sub-interpreter writes its code's file name
        if not select.select([r], [], [], 30)[0]:
            S.fail("the sub-interpreters did not start their loops within 30 s")
        got += os.read(r, 4096)
    sub_file = got.decode().splitlines()[0]

    threads = [
        S.thread_entry(threading.get_native_id(), threading.current_thread().name, "main", "main_idle",
                       S.marker_line("main")),
        S.thread_entry(spinner, "spinner", "spinner", "spin", None),
    ]
    interpreters = [{"id": 0, "own_gil": True}]
    for tid, name, out in workers:
        threads.append(S.thread_entry(tid, name, "sub-spinner", "sub_spin", None, file=sub_file,
                                      interpreter=out["id"]))
        interpreters.append({"id": out["id"], "own_gil": out["own_gil"]})
    threads.append(watcher)
    obj = S.ready_object("subinterp_own_gil", threads, interpreters)
    obj["api"] = api.kind
    S.print_ready(obj)
    main_idle(S.block_forever())


if __name__ == "__main__":
    main()
