"""Helpers shared by the gilscope test workloads in this directory (CPython 3.9+, stdlib only).

Protocol of every sample (tests/common/mod.rs relies on it):

* It writes exactly ONE line of JSON to stdout once the ground truth it describes holds,
  then keeps running until killed. Nothing else is ever written to stdout.
* It exits on its own when its parent dies (PR_SET_PDEATHSIG, at once) or when its stdin
  reaches EOF (the harness keeps stdin as a pipe; a sample whose thread sleeps holding the GIL
  exits once that sleep ends, within 30 s), so a crashed test leaves no orphans behind.
  Run one by hand with e.g. `sleep 600 | python3.12 samples/threads.py` (not with stdin at
  /dev/null: it would exit at once).
* Threads that must be seen blocked without the GIL block in read(2) on a pipe of their own
  (`block_forever`); the sample checks in /proc/self/task/TID/syscall that they got there.
* Failures while setting up go to stderr and exit with status 3 before the ready line.

The ready line:
    {"sample": str, "pid": int, "version": "3.12.1" | "3.14.0rc1",
     "free_threaded": bool, "gil_enabled": bool,
     "threads": [{"native_id", "name", "role", "interpreter", "function", "line", "file"}],
     "interpreters": [{"id": int, "own_gil": bool}]}
`function` is the innermost Python function expected on that thread's stack (null when not
deterministic), `line` the line it is blocked on (null when not deterministic), `file` the
code object's file name of that frame.
"""

import json
import os
import re
import sys
import sysconfig
import threading
import time

# x86_64 system call numbers, as shown in /proc/PID/task/TID/syscall.
SYS_READ = 0
SYS_NANOSLEEP = 35
SYS_FUTEX = 202
SYS_CLOCK_NANOSLEEP = 230
SLEEPING = (SYS_NANOSLEEP, SYS_CLOCK_NANOSLEEP)

_LEVELS = {"alpha": "a", "beta": "b", "candidate": "rc", "final": ""}


def fail(msg):
    sys.stderr.write("sample setup failed: %s\n" % msg)
    sys.stderr.flush()
    os._exit(3)


def version_string():
    """The version the way PY_VERSION spells it: "3.12.1", "3.14.0rc1", "3.15.0a2"."""
    v = sys.version_info
    s = "%d.%d.%d" % (v.major, v.minor, v.micro)
    if v.releaselevel != "final":
        s += "%s%d" % (_LEVELS[v.releaselevel], v.serial)
    return s


def free_threaded():
    return bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


def gil_enabled():
    f = getattr(sys, "_is_gil_enabled", None)
    return bool(f()) if f is not None else True


def marker_line(tag, text=None):
    """1-based number of the only line of `text` (default: the calling sample's source) that
    carries the comment `# LINE:<tag>`."""
    if text is None:
        with open(sys.modules["__main__"].__file__) as f:
            text = f.read()
    pattern = re.compile(r"#\s*LINE:%s(\s|$)" % re.escape(tag))
    hits = [i + 1 for i, line in enumerate(text.splitlines()) if pattern.search(line)]
    if len(hits) != 1:
        fail("marker LINE:%s found %d times" % (tag, len(hits)))
    return hits[0]


def main_file():
    return sys.modules["__main__"].__file__


def thread_entry(native_id, name, role, function, line, file=None, interpreter=0):
    return {
        "native_id": native_id,
        "name": name,
        "role": role,
        "interpreter": interpreter,
        "function": function,
        "line": line,
        "file": file if file is not None else (main_file() if function else None),
    }


def ready_object(sample, threads, interpreters=None):
    return {
        "sample": sample,
        "pid": os.getpid(),
        "version": version_string(),
        "free_threaded": free_threaded(),
        "gil_enabled": gil_enabled(),
        "threads": threads,
        "interpreters": interpreters if interpreters is not None else [{"id": 0, "own_gil": True}],
    }


def ready_bytes(obj):
    return (json.dumps(obj, sort_keys=True) + "\n").encode()


def print_ready(obj):
    """Write the ready line through sys.stdout (for samples whose ground truth does not depend
    on which thread holds the GIL after this point)."""
    sys.stdout.write(ready_bytes(obj).decode())
    sys.stdout.flush()


def in_syscall(tid):
    """(system call number, first argument) of the call thread `tid` of this process is blocked
    in, or None while it runs."""
    try:
        with open("/proc/self/task/%d/syscall" % tid) as f:
            fields = f.read().split()
    except OSError:
        return None
    try:
        return int(fields[0]), int(fields[1], 16)
    except (ValueError, IndexError):  # "running"
        return None


def blocked_in(tid, syscalls, fd=None):
    """Thread `tid` is blocked in one of `syscalls` (on file descriptor `fd`, when given).
    Blocking on a lock and waiting for the GIL are both futex(2): tell threads apart by
    blocking them in read(2) on a pipe of their own instead."""
    now = in_syscall(tid)
    return now is not None and now[0] in syscalls and (fd is None or now[1] == fd)


def wait_in_syscall(tid, syscalls, what, fd=None, timeout=20.0):
    """Wait until thread `tid` is blocked in one of `syscalls` (on `fd`, when given): it has
    reached the blocking call the ground truth describes."""
    deadline = time.monotonic() + timeout
    while not blocked_in(tid, syscalls, fd):
        if time.monotonic() > deadline:
            fail("%s (tid %d) did not block in syscall %s (fd %s) within %ss (now %s)"
                 % (what, tid, syscalls, fd, timeout, in_syscall(tid)))
        time.sleep(0.002)


def block_forever():
    """A pipe nobody writes to: read(2) on it blocks forever, without the GIL.
    Returns the read end (the write end stays open)."""
    r, w = os.pipe()
    _KEEP.append(w)
    return r


_KEEP = []


def acquired_lock():
    lock = threading.Lock()
    lock.acquire()
    return lock


def watch_stdin(report, fd):
    report()
    while True:
        if not os.read(fd, 4096):  # LINE:watch
            os._exit(0)


def guard_against_orphans():
    """Die with the parent (PR_SET_PDEATHSIG) and on EOF on stdin. Returns the thread entry of
    the stdin watcher ("stdin-watch", blocked in read(2) without the GIL)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL
    except Exception:  # best effort: the stdin watcher is the main mechanism
        pass
    tid = start_thread("stdin-watch", watch_stdin, 0)
    wait_in_syscall(tid, (SYS_READ,), "stdin-watch", fd=0)
    with open(__file__) as f:
        line = marker_line("watch", f.read())
    return thread_entry(tid, "stdin-watch", "watchdog", "watch_stdin", line, file=__file__)


def start_thread(name, target, *args):
    """Start daemon threading.Thread `name` running `target(report, *args)` and return its
    native id. `target` must call `report()` first. The target is the Thread's own target, so
    its stack is exactly target <- Thread.run <- _bootstrap_inner <- _bootstrap."""
    tid = []
    started = acquired_lock()

    def report():
        tid.append(threading.get_native_id())
        started.release()

    threading.Thread(target=target, args=(report,) + args, name=name, daemon=True).start()
    started.acquire()
    return tid[0]
