#!/usr/bin/env python3
"""gilscope benchmarks: gilscope beside py-spy and CPython 3.15's own sampler, same run, same
targets. Regenerates docs/benchmarks.md. Entry point: scripts/bench (see --help).

Every measurement starts real CPython processes (benches/*.py, samples/duty_cycle.py), attaches
the profilers to them and reads what each profiler reports. Targets run pinned to one CPU and
profilers to the other (taskset), so a profiler never steals the target's core.

Interpreters come from scripts/provision-pythons' manifest: pyenv 3.12.1 (the common ground
with py-spy, which does not read 3.15) and Debian sid 3.15 in a chroot (the only version
CPython's `profiling.sampling` reads is its own). py-spy is installed, pinned, into a venv
under $GILSCOPE_BENCH_DIR (default /var/cache/gilscope-bench), outside the repository.

Python 3.9+ standard library only (the host's python3 runs it).
"""

import argparse
import atexit
import collections
import json
import os
import platform
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCHES = REPO / "benches"
SAMPLES = REPO / "samples"
CACHE = Path(os.environ.get("GILSCOPE_BENCH_DIR", "/var/cache/gilscope-bench"))
MANIFEST = Path(os.environ.get("GILSCOPE_PYTHONS_MANIFEST",
                               "/var/cache/gilscope-pythons/manifest.json"))
PYSPY_VERSION = "0.4.1"
TARGET_CPU = "1"
PROFILER_CPU = "0"
CHROOT_DIR = "/opt/gilscope-bench"  # where benches/ and samples/ are copied inside the chroot
ASKED_MAX = 1_000_000  # the rate the peers are asked for in the max-rate runs (gilscope: `--rate max`)
CPY_MODES = ("cpu", "wall", "gil")  # profiling.sampling modes, like-for-like (cpu) first

RESULTS = {"rate": {}, "slowdown": {}, "size": [], "tui": None, "duty": {}, "exact": {},
           "server": {}}
LIVE = []  # every process started, killed on the way out
LEFTOVERS = []  # files written inside the chroot, removed on the way out
VERBOSE = False
TMP = None


def note(msg):
    sys.stderr.write("bench: %s\n" % msg)
    sys.stderr.flush()


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


# ----------------------------------------------------------------------------- processes

def _cleanup():
    for p in LIVE:
        if p.returncode is None:
            try:
                p.kill()
            except OSError:
                pass
            try:
                p.wait(timeout=5)
            except Exception:
                pass
    for f in LEFTOVERS:
        try:
            f.unlink()
        except OSError:
            pass
    if TMP and not os.environ.get("GILSCOPE_BENCH_KEEP"):
        shutil.rmtree(TMP, ignore_errors=True)


def _on_signal(sig, _frame):
    raise KeyboardInterrupt("signal %d" % sig)


def spawn(argv, **kw):
    argv = [str(a) for a in argv]
    if VERBOSE:
        note("$ " + " ".join(argv))
    p = subprocess.Popen(argv, **kw)
    LIVE.append(p)
    return p


def reap(p, timeout):
    """Wait for `p` with os.wait4 (to get its rusage). On timeout: SIGINT, then SIGKILL.
    Returns (returncode, cpu seconds, timed_out)."""
    deadline = time.monotonic() + timeout
    timed_out = False
    escalate = [signal.SIGINT, signal.SIGKILL]
    while True:
        try:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        except ChildProcessError:
            return p.returncode, 0.0, timed_out
        if pid:
            p.returncode = os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") \
                else status
            return p.returncode, ru.ru_utime + ru.ru_stime, timed_out
        if time.monotonic() > deadline:
            timed_out = True
            if not escalate:
                deadline = time.monotonic() + 5
                continue
            try:
                p.send_signal(escalate.pop(0))
            except OSError:
                pass
            deadline = time.monotonic() + 5
        time.sleep(0.01)


class Lines:
    """Line reader over a pipe with timeouts."""

    def __init__(self, f):
        self.fd = f.fileno()
        self.buf = b""

    def line(self, timeout):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                return None
            chunk = os.read(self.fd, 65536)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()


class Target:
    """A workload process (benches/ protocol): ready line with its pid, exits at stdin EOF."""

    def __init__(self, py, script, args=(), cpu=TARGET_CPU, env=None):
        self.py = py
        e = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        e.update(env or {})
        self.err = open(TMP / ("target-%d.err" % len(LIVE)), "w+")
        argv = (["taskset", "-c", cpu] if cpu else []) + py.argv + [py.path(script)] + list(args)
        self.p = spawn(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err,
                       env=e)
        self.out = Lines(self.p.stdout)
        line = self.out.line(60)
        if line is None:
            self.close()
            self.err.seek(0)
            raise RuntimeError("%s %s on %s: no ready line; stderr: %s"
                               % (script, " ".join(map(str, args)), py.name, self.err.read()[-500:]))
        self.ready = json.loads(line)
        self.pid = self.ready["pid"]

    def go(self):
        self.p.stdin.write(b"go\n")
        self.p.stdin.flush()

    def result(self, timeout):
        line = self.out.line(timeout)
        if line is None:
            raise RuntimeError("target %s gave no result within %ss" % (self.py.name, timeout))
        return json.loads(line)

    def close(self):
        try:
            self.p.stdin.close()
        except OSError:
            pass
        try:
            self.p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait(timeout=10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Prof:
    """A profiler process, pinned to PROFILER_CPU, stderr (and stdout) to a file."""

    def __init__(self, argv, cpu=PROFILER_CPU, name="prof"):
        self.name = name
        n = len(LIVE)
        self.err_path = TMP / ("%s-%d.err" % (name, n))
        self.out_path = TMP / ("%s-%d.out" % (name, n))
        self.errf = open(self.err_path, "w")
        self.outf = open(self.out_path, "w")
        self.p = spawn((["taskset", "-c", cpu] if cpu else []) + list(argv),
                       stdout=self.outf, stderr=self.errf, stdin=subprocess.DEVNULL)
        self.t0 = time.monotonic()
        self.rc = None
        self.cpu = None

    def text(self):
        return self.err_path.read_text(errors="replace") + self.out_path.read_text(errors="replace")

    def wait_for(self, pattern, timeout):
        """Wait until `pattern` shows in its output; returns the time it did (None: never)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if rx.search(self.text()):
                return time.monotonic()
            if self.p.poll() is not None:
                return time.monotonic() if rx.search(self.text()) else None
            time.sleep(0.01)
        return None

    def interrupt(self):
        try:
            self.p.send_signal(signal.SIGINT)
        except OSError:
            pass

    def finish(self, timeout):
        self.rc, self.cpu, self.timed_out = reap(self.p, timeout)
        self.errf.close()
        self.outf.close()
        return self.text()


# ----------------------------------------------------------------------------- interpreters

class Py:
    def __init__(self, entry):
        self.name = entry["name"]
        self.version = entry["version"]
        self.minor = entry["minor"]
        self.argv = entry["argv"]
        self.chroot = entry.get("chroot")

    def path(self, script):
        """Where `script` (a file of benches/ or samples/) is, as this interpreter sees it."""
        if self.chroot:
            return "%s/%s" % (CHROOT_DIR, script)
        if (BENCHES / script).exists():
            return str(BENCHES / script)
        return str(SAMPLES / script)

    def host_path(self, path):
        """A path inside this interpreter's root, as the host sees it."""
        return Path(self.chroot + path) if self.chroot else Path(path)


def load_pythons():
    entries = json.loads(MANIFEST.read_text())
    return {e["name"]: Py(e) for e in entries}


# ----------------------------------------------------------------------------- tools

class Tools:
    gilscope = str(REPO / "target/release/gilscope")
    pyspy = str(CACHE / "venv/bin/py-spy")
    py315 = None  # Py of sid-3.15, for `python3.15 -m profiling.sampling`


def gilscope_record(pid, out, rate, seconds, mode="sampling", stacks=True, extra=(),
                    budget="none"):
    """budget: `--max-overhead` (default "none": the benchmarks measure the mode and rate
    they name; None leaves gilscope's own default)."""
    argv = [Tools.gilscope, "record", "--pid", pid, "--mode", mode,
            "-o", out] + (["--rate", rate] if rate else []) + \
        (["--duration", seconds] if seconds else []) + \
        ([] if stacks else ["--no-stacks"]) + \
        (["--max-overhead", budget] if budget else []) + list(extra)
    return Prof(argv, name="gilscope")


STRACE_TOTAL = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d*\s+(\d+)\s+(?:\d+\s+)?total\s*$", re.M)
STRACE_ROW = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d*\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$", re.M)


def syscalls_per_sample(pid, stacks, rate=1000, seconds=2):
    """System calls gilscope makes per sample (sleeps between samples left out), counted with
    `strace -c -f` over a short recording at `rate` Hz (strace slows it; the count is what
    matters). None when strace is missing."""
    if not shutil.which("strace"):
        return None
    out = TMP / "strace.txt"
    argv = ["strace", "-c", "-f", "-o", str(out), Tools.gilscope, "record", "--pid", pid,
            "--mode", "sampling", "--rate", rate, "--duration", seconds, "--max-overhead", "none",
            "-o", str(TMP / "strace.trace")] + ([] if stacks else ["--no-stacks"])
    r = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=120)
    g = parse_gilscope(r.stderr)
    text = out.read_text()
    calls = sum(int(n) for n, name in STRACE_ROW.findall(text)
                if name not in ("total", "clock_nanosleep", "nanosleep"))
    return calls / g["samples"] if g["samples"] else None


GS_LINE = re.compile(r"recorded process \d+ for ([\d.]+) s \(([^)]*)\): (\d+) samples at (\d+) Hz, "
                     r"(\d+) failed")
GS_EXACT = re.compile(r"exact mode: (\d+) GIL events .*?, (\d+) lost")


def parse_gilscope(text):
    m = GS_LINE.search(text)
    if not m:
        raise RuntimeError("no 'recorded process' line from gilscope: %s" % text[-800:])
    r = {"elapsed": float(m.group(1)), "end": m.group(2), "samples": int(m.group(3)),
         "hz": float(m.group(4)), "failed": int(m.group(5))}
    e = GS_EXACT.search(text)
    if e:
        r["events"], r["lost"] = int(e.group(1)), int(e.group(2))
    return r


def pyspy_record(pid, out, rate, seconds=None, gil=False, idle=True):
    # py-spy's --duration counts samples (rate x seconds), not seconds, so a run that falls
    # behind lasts longer: the max-rate runs stop it with SIGINT instead.
    argv = [Tools.pyspy, "record", "--pid", pid, "--rate", rate, "--format", "raw", "-o", out,
            "--nonblocking", "--threads", "--duration", seconds or 3600]
    argv += ["--gil"] if gil else []
    argv += ["--idle"] if idle else []
    return Prof(argv, name="py-spy")


PYSPY_THREAD = re.compile(r"^thread \((?:0x)?([0-9a-fA-F]+)\)")


def parse_raw_by_thread(path, tid_rx):
    """{tid: samples} from a collapsed-stack file whose first frame names the thread."""
    counts = {}
    if not Path(path).exists():
        return counts
    for line in Path(path).read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        m = tid_rx.match(stack)
        if not m or not n.isdigit():
            continue
        tid = int(m.group(1))
        counts[tid] = counts.get(tid, 0) + int(n)
    return counts


CPY_THREAD = re.compile(r"^tid:(\d+)")
CPY_CAPTURED = re.compile(r"Captured (\d+) samples in ([\d.]+) seconds")
CPY_RATE = re.compile(r"Sample rate: ([\d.]+)")
CPY_ERR = re.compile(r"Error rate: ([\d.]+)")


def cpython_sampler(pid, out_in_root, rate, seconds, mode="wall"):
    py = Tools.py315
    LEFTOVERS.append(py.host_path(out_in_root))
    argv = py.argv + ["-m", "profiling.sampling", "attach", "-a", "-r", rate, "--mode", mode,
                      "--collapsed", "-o", out_in_root, pid] + (["-d", seconds] if seconds else [])
    return Prof(argv, name="cpython-sampler")


def parse_cpython(text):
    m = CPY_CAPTURED.search(text)
    if not m:
        raise RuntimeError("no 'Captured N samples' from profiling.sampling: %s" % text[-800:])
    r = {"samples": int(m.group(1)), "elapsed": float(m.group(2))}
    rm = CPY_RATE.search(text)
    r["hz"] = float(rm.group(1)) if rm else r["samples"] / max(r["elapsed"], 1e-9)
    em = CPY_ERR.search(text)
    r["error_rate"] = float(em.group(1)) if em else None
    return r


def gilscope_summary(trace):
    out = subprocess.run([Tools.gilscope, "summary", "--json", trace], capture_output=True,
                         timeout=300, text=True)
    if out.returncode != 0:
        raise RuntimeError("gilscope summary %s: %s" % (trace, out.stderr[-500:]))
    return json.loads(out.stdout)


# ----------------------------------------------------------------------------- formatting

def fmt_hz(x):
    if x is None:
        return "—"
    return "{:,.0f}".format(x)


def fmt_ratio(a, b):
    if a is None or not b:
        return "—"
    return "%.1f×" % (a / b)


def fmt_us(x):
    return "—" if x is None else ("%.1f µs" % x if x < 100 else "%.0f µs" % x)


def med_spread(xs):
    xs = sorted(xs)
    return statistics.median(xs), xs[0], xs[-1]


def table(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


class Section:
    def __init__(self, title):
        self.title = title
        self.start_load = loadavg()
        self.t0 = time.monotonic()
        self.body = []
        note("== %s (load %s)" % (title, self.start_load))

    def add(self, text):
        self.body.append(text)

    def render(self):
        secs = time.monotonic() - self.t0
        return "## %s\n\n_Load average (1/5/15 min) at start %s, at end %s; took %.0f s._\n\n%s\n" % (
            self.title, self.start_load, loadavg(), secs, "\n\n".join(self.body))


# ----------------------------------------------------------------------------- setup

def run_quiet(argv, timeout, **kw):
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout, **kw)


def setup(args):
    global TMP
    TMP = Path(tempfile.mkdtemp(prefix="gilscope-bench-"))
    if not args.no_provision:
        note("provisioning interpreters (scripts/provision-pythons --with-dbg --no-freethreaded)")
        r = subprocess.run([str(REPO / "scripts/provision-pythons"), "--with-dbg", "--no-freethreaded"],
                           timeout=3600)
        if r.returncode != 0:
            note("warning: provision-pythons failed (exit %d); using what the manifest lists"
                 % r.returncode)
    if not args.no_build:
        note("building gilscope (cargo build --release)")
        r = subprocess.run(["cargo", "build", "--release", "--bin", "gilscope"], cwd=REPO, timeout=1800)
        if r.returncode != 0:
            if Path(Tools.gilscope).exists():
                note("warning: cargo build failed; using the existing target/release/gilscope")
            else:
                raise SystemExit("bench: cargo build failed")
    if not Path(Tools.gilscope).exists():
        raise SystemExit("bench: no %s (build it, or drop --no-build)" % Tools.gilscope)
    # py-spy, pinned, in our own venv outside the repository.
    want = "py-spy %s" % PYSPY_VERSION
    have = ""
    if Path(Tools.pyspy).exists():
        have = run_quiet([Tools.pyspy, "--version"], 30).stdout.strip()
    if have != want:
        note("installing %s into %s/venv" % (want, CACHE))
        CACHE.mkdir(parents=True, exist_ok=True)
        if not (CACHE / "venv/bin/pip").exists():
            subprocess.run([sys.executable, "-m", "venv", str(CACHE / "venv")], check=True, timeout=300)
        subprocess.run([str(CACHE / "venv/bin/pip"), "install", "-q", "py-spy==%s" % PYSPY_VERSION],
                       check=True, timeout=600)
    pythons = load_pythons()
    for p in pythons.values():
        if p.chroot:
            dst = Path(p.chroot + CHROOT_DIR)
            dst.mkdir(parents=True, exist_ok=True)
            for src in list(BENCHES.glob("*.py")) + list(SAMPLES.glob("*.py")):
                shutil.copy(src, dst / src.name)
    return pythons


def machine_info(pythons, used):
    lscpu = run_quiet(["lscpu"], 30).stdout
    model = re.search(r"Model name:\s*(.*)", lscpu)
    hyp = re.search(r"Hypervisor vendor:\s*(.*)", lscpu)
    rev = run_quiet(["git", "describe", "--always", "--dirty", "--abbrev=12"], 30, cwd=REPO).stdout.strip()
    dirty_src = run_quiet(["git", "status", "--porcelain", "--", "src", "ui", "Cargo.toml", "Cargo.lock"], 30,
                          cwd=REPO).stdout.strip()
    if dirty_src:
        rev += " (with uncommitted changes to the gilscope sources)"
    gs_ver = run_quiet([Tools.gilscope, "--version"], 30).stdout.strip()
    pyspy_ver = run_quiet([Tools.pyspy, "--version"], 30).stdout.strip()
    rows = [
        ("CPU", "%s%s" % (model.group(1).strip() if model else "?",
                          " (%s guest)" % hyp.group(1).strip() if hyp else "")),
        ("cores", str(os.cpu_count())),
        ("kernel", platform.release()),
        ("gilscope", "%s, git %s" % (gs_ver or "?", rev)),
        ("py-spy", "%s (PyPI, in %s/venv)" % (pyspy_ver, CACHE)),
    ]
    for p in used:
        rows.append((p.name, "CPython %s%s" % (p.version, " (Debian sid chroot)" if p.chroot else "")))
    return table(["", ""], rows)


# ----------------------------------------------------------------------------- sections

def wait_started(prof, pattern, what, timeout=60):
    t = prof.wait_for(pattern, timeout)
    if t is None:
        prof.interrupt()
        text = prof.finish(10)
        raise RuntimeError("%s did not start: %s" % (what, text[-800:]))
    return t


def cpu_seconds(pid):
    """user + system CPU time of process `pid` so far (all its threads)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def steady_cpu(prof, t_start, window):
    """CPU seconds `prof` used between t_start and t_start + window (its steady state, without
    start-up), and the actual window."""
    time.sleep(max(0.0, t_start - time.monotonic()))
    a, ta = cpu_seconds(prof.p.pid), time.monotonic()
    time.sleep(window)
    b, tb = cpu_seconds(prof.p.pid), time.monotonic()
    if a is None or b is None:
        return None, None
    return b - a, tb - ta


def bench_max_rate(cfg, py, peer):
    """One target per (threads, interpreters, busy/idle); gilscope state, gilscope stacks and
    the peer in turn, each for cfg.dur seconds asked to sample at ASKED_MAX Hz. CPU per sample
    is measured in the steady state: the profiler's CPU time over a window that starts after
    its start-up (from /proc/PID/stat), divided by the samples it takes in that window."""
    rows = []
    window = cfg.dur - 0.5
    for kind, threads, interps in cfg.rate_matrix:
        if interps > 1 and py.minor < 12:
            continue
        row = {"kind": kind, "threads": threads, "interps": interps}
        try:
            with Target(py, "workload.py", [kind, threads, interps]) as t:
                time.sleep(0.2)
                for label, stacks in (("state", False), ("stacks", True)):
                    pr = gilscope_record(t.pid, TMP / "max.trace", "max", cfg.dur, stacks=stacks)
                    t0 = wait_started(pr, r"gilscope: mode:", "gilscope")
                    cpu, win = steady_cpu(pr, t0 + 0.2, window)
                    text = pr.finish(cfg.dur + 60)
                    g = parse_gilscope(text)
                    row[label] = g["hz"]
                    row[label + "_cpu_us"] = cpu / (g["hz"] * win) * 1e6 if cpu is not None and g["hz"] else None
                    row[label + "_failed"] = g["failed"]
                    row[label + "_syscalls"] = syscalls_per_sample(t.pid, stacks)
                if peer == "py-spy":
                    out = TMP / "pyspy-max.txt"
                    pr = pyspy_record(t.pid, out, ASKED_MAX)
                    t0 = wait_started(pr, r"Sampling process", "py-spy")
                    cpu, win = steady_cpu(pr, t0 + 0.2, window)
                    time.sleep(max(0.0, t0 + cfg.dur - time.monotonic()))
                    pr.interrupt()
                    span = time.monotonic() - t0
                    text = pr.finish(60)
                    counts = parse_raw_by_thread(out, PYSPY_THREAD)
                    n = max(counts.values()) if counts else 0
                    row["peer"] = n / span
                    row["peer_cpu_us"] = cpu / (row["peer"] * win) * 1e6 if cpu is not None and n else None
                    m = re.search(r"Errors: (\d+)", text)
                    row["peer_failed"] = int(m.group(1)) if m else None
                else:
                    for mode in CPY_MODES:
                        out = "/tmp/gilscope-bench-cpy-max.txt"
                        pr = cpython_sampler(t.pid, out, ASKED_MAX, cfg.dur, mode=mode)
                        # It prints nothing until it is done: allow 0.8 s for its start-up
                        # (an interpreter, then attaching), measured at 0.3-0.5 s here.
                        cpu, win = steady_cpu(pr, pr.t0 + 0.8, window - 0.3)
                        text = pr.finish(cfg.dur + 60)
                        c = parse_cpython(text)
                        key = "peer" if mode == CPY_MODES[0] else "peer_" + mode
                        row[key] = c["hz"]
                        row[key + "_cpu_us"] = cpu / (c["hz"] * win) * 1e6 if cpu is not None and c["hz"] else None
                        row[key + "_failed"] = c["error_rate"]
                        py.host_path(out).unlink(missing_ok=True)
        except Exception as e:  # keep going: one failed row must not lose the page
            row["error"] = str(e).splitlines()[0][:200]
            note("max rate %s %s: %s" % (py.name, row, e))
        rows.append(row)
    return rows


def render_max_rate(py, peer, rows):
    cpy = peer != "py-spy"
    pname = "CPython --mode cpu" if cpy else peer
    head = ["target", "threads × interp.", "gilscope state only", "gilscope state + stacks", pname]
    if cpy:
        head += ["CPython --mode wall", "CPython --mode gil", "stacks ÷ cpu", "stacks ÷ wall",
                 "state ÷ gil"]
    else:
        head += ["state ÷ %s" % peer, "stacks ÷ %s" % peer]
    body = []
    cost = []
    for r in rows:
        label = "%s" % r["kind"]
        ti = "%d × %d" % (r["threads"], r["interps"])
        if "error" in r and "state" not in r:
            body.append([label, ti, "error: " + r["error"]] + [""] * (len(head) - 3))
            continue
        if "error" in r and "peer" not in r:
            r["peer_note"] = "error: " + r["error"]
        line = [label, ti, fmt_hz(r.get("state")), fmt_hz(r.get("stacks")),
                r.get("peer_note") or fmt_hz(r.get("peer"))]
        if cpy:
            line += [fmt_hz(r.get("peer_wall")), fmt_hz(r.get("peer_gil")),
                     fmt_ratio(r.get("stacks"), r.get("peer")),
                     fmt_ratio(r.get("stacks"), r.get("peer_wall")),
                     fmt_ratio(r.get("state"), r.get("peer_gil"))]
        else:
            line += [fmt_ratio(r.get("state"), r.get("peer")), fmt_ratio(r.get("stacks"), r.get("peer"))]
        body.append(line)
        sc = lambda k: "%.1f" % r[k] if r.get(k) is not None else "–"
        cost.append([label, ti, fmt_us(r.get("state_cpu_us")), fmt_us(r.get("stacks_cpu_us")),
                     fmt_us(r.get("peer_cpu_us")),
                     fmt_ratio(r.get("peer_cpu_us"), r.get("stacks_cpu_us")),
                     sc("state_syscalls"), sc("stacks_syscalls")])
    out = "### %s: gilscope vs %s, samples/s achieved (gilscope `--rate max`, %s asked for %s Hz)\n\n%s" % (
        py.name, peer, peer, "{:,}".format(ASKED_MAX), table(head, body))
    out += "\n\n### %s: CPU time of the profiler process per sample, and gilscope's system calls per sample\n\n%s" % (
        py.name, table(["target", "threads × interp.", "gilscope state only", "gilscope state + stacks",
                        pname, "%s ÷ gilscope stacks" % pname, "gilscope state syscalls/sample",
                        "gilscope stacks syscalls/sample"], cost))
    slope = per_thread_cost(rows)
    if slope:
        out += "\n\nCost per extra thread (busy rows, 1 interpreter, least-squares over thread counts): " + \
            "; ".join("%s %s per sample + %s per thread" % (k, fmt_us(a), fmt_us(b)) for k, (a, b) in slope.items())
    fails = [(r["kind"], r["threads"], r["interps"], r.get("state_failed"), r.get("stacks_failed"),
              r.get("peer_failed")) for r in rows if "error" not in r]
    bad = [f for f in fails if any(x for x in f[3:])]
    if bad:
        out += "\n\nFailed samples (gilscope state, gilscope stacks, %s%s): %s." % (
            pname, " error rate" if cpy else " errors",
            "; ".join("%s %d×%d: %s, %s, %s" % f for f in bad))
    return out


def per_thread_cost(rows):
    """Least-squares line of CPU µs per sample over thread count, busy rows with one
    interpreter: {label: (µs at 0 threads, µs per thread)}."""
    out = {}
    for key, label in (("state_cpu_us", "state"), ("stacks_cpu_us", "stacks")):
        pts = [(r["threads"], r[key]) for r in rows
               if r.get("kind") == "busy" and r.get("interps") == 1 and r.get(key)]
        if len(pts) < 2 or len({x for x, _ in pts}) < 2:
            continue
        mx = statistics.mean(x for x, _ in pts)
        my = statistics.mean(y for _, y in pts)
        b = sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)
        out[label] = (my - b * mx, b)
    return out


def pinned_prof_start(tool, t, rate, py, cfg, mode="sampling"):
    """Start a profiler on target `t` for a timed run; returns the Prof and a finisher that
    returns (cpu, samples, extra)."""
    if tool == "gilscope":
        pr = gilscope_record(t.pid, TMP / "slow.trace", rate, None, mode=mode)
        wait_started(pr, r"gilscope: mode:", "gilscope")
    elif tool == "py-spy":
        pr = pyspy_record(t.pid, TMP / "pyspy-slow.txt", rate, idle=False)
        wait_started(pr, r"Sampling process", "py-spy")
    else:
        pr = cpython_sampler(t.pid, "/tmp/gilscope-bench-cpy-slow.txt", rate, None)
        # It prints nothing before it starts sampling; give it its start-up time.
        time.sleep(1.0)
    time.sleep(0.2)
    return pr


def timed_runs(cfg, py, script, args, configs, reps, timeout):
    """configs: [(label, tool|None, rate, mode)]; each rep runs every config once, in turn
    (interleaved, so drifting load hits all alike). Returns {label: [elapsed...]} and extras."""
    times = {c[0]: [] for c in configs}
    extra = {c[0]: [] for c in configs}
    cpu = {c[0]: [] for c in configs}
    for rep in range(reps):
        for label, tool, rate, mode in configs:
            try:
                with Target(py, script, args) as t:
                    pr = pinned_prof_start(tool, t, rate, py, cfg, mode) if tool else None
                    t.go()
                    res = t.result(timeout)
                    times[label].append(res["elapsed"])
                    cpu[label].append(res["cpu"])
                    t.close()
                    if pr:  # every profiler stops by itself when the target exits
                        text = pr.finish(30)
                        if tool == "gilscope":
                            try:
                                extra[label].append(parse_gilscope(text))
                            except RuntimeError as e:
                                note("%s: %s" % (label, e))
                        elif tool == "cpython":
                            try:
                                extra[label].append(parse_cpython(text))
                            except RuntimeError as e:
                                note("%s: %s" % (label, e))
            except Exception as e:
                note("timed run %s %s: %s" % (py.name, label, e))
    extra["_cpu"] = cpu
    return times, extra


def calibrate(py, script, make_args, want_s):
    """Scale the work so that one run alone takes about want_s seconds."""
    n = 50
    for _ in range(4):
        with Target(py, script, make_args(n)) as t:
            t.go()
            el = t.result(120)["elapsed"]
        if el > 0.2:
            break
        n *= 8
    return max(1, int(n * want_s / el))


def render_timed(times, extra, base_label, note_hz=True):
    cpu = extra.get("_cpu", {})
    base = statistics.median(times[base_label]) if times[base_label] else None
    cbase = statistics.median(cpu[base_label]) if cpu.get(base_label) else None
    rows = []
    for label, xs in times.items():
        if not xs:
            rows.append([label, "failed", "", "", "", "", ""])
            continue
        m, lo, hi = med_spread(xs)
        slow = "—" if label == base_label or not base else "%+.1f %%" % ((m / base - 1) * 100)
        cm = statistics.median(cpu[label]) if cpu.get(label) else None
        cslow = "—" if label == base_label or not cbase or cm is None else "%+.1f %%" % ((cm / cbase - 1) * 100)
        hz = ""
        ex = extra.get(label) or []
        if ex and note_hz:
            hz = "%s Hz" % fmt_hz(statistics.median(e["hz"] for e in ex))
        rows.append([label, "%.3f s" % m, "%.3f – %.3f s" % (lo, hi), slow,
                     "—" if cm is None else "%.3f s" % cm, cslow, hz or "—"])
    return table(["run", "median wall time", "spread (min – max)", "wall slowdown vs alone",
                  "median CPU time of the target", "CPU slowdown", "profiler's achieved rate"],
                 rows) + "\n\n_%d runs each._" % len(next(iter(times.values())))


def bench_slowdown(cfg, py, peer, exact_ok):
    rounds = calibrate(py, "cpu_work.py", lambda n: [n], cfg.work_s)
    configs = [("alone", None, 0, None)]
    for rate in cfg.slow_rates:
        configs.append(("gilscope sampling %d Hz" % rate, "gilscope", rate, "sampling"))
    if exact_ok:
        for rate in cfg.slow_rates:
            configs.append(("gilscope exact %d Hz" % rate, "gilscope", rate, "exact"))
    for rate in cfg.slow_rates:
        configs.append(("%s %d Hz" % (peer, rate), "py-spy" if peer == "py-spy" else "cpython",
                        rate, None))
    times, extra = timed_runs(cfg, py, "cpu_work.py", [rounds], configs, cfg.reps, cfg.work_s * 20 + 30)
    return times, extra, rounds


def bench_exact(cfg, py, peer):
    """Release-heavy workload: alone, gilscope sampling, gilscope exact, the peer; per-event
    cost = (exact - sampling at the same rate) / events."""
    out = []
    for threads in cfg.switchy_threads:
        calls = cfg.switchy_calls
        configs = [("alone", None, 0, None),
                   ("gilscope sampling 1000 Hz", "gilscope", 1000, "sampling"),
                   ("gilscope exact 1000 Hz", "gilscope", 1000, "exact"),
                   ("%s 1000 Hz" % peer, "py-spy" if peer == "py-spy" else "cpython", 1000, None)]
        times, extra = timed_runs(cfg, py, "switchy.py", [calls, threads], configs, cfg.reps,
                                  120)
        ex = extra["gilscope exact 1000 Hz"]
        ev = statistics.median(e.get("events", 0) for e in ex) if ex else None
        lost = max((e.get("lost", 0) for e in ex), default=None)
        per = None
        if ev and times["gilscope exact 1000 Hz"] and times["gilscope sampling 1000 Hz"]:
            per = (statistics.median(times["gilscope exact 1000 Hz"])
                   - statistics.median(times["gilscope sampling 1000 Hz"])) / ev * 1e6
        base = statistics.median(times["alone"]) if times["alone"] else None
        out.append({"threads": threads, "calls": calls, "times": times, "extra": extra,
                    "events": ev, "lost": lost, "per_event_us": per,
                    "events_per_s": ev / base if ev and base else None})
    return out


def bench_duty(cfg, py, peer, exact_ok):
    """samples/duty_cycle.py: gilscope (sampling, exact) and the peer on the same run."""
    d = cfg.duty_s
    res = {}
    with Target(py, "duty_cycle.py") as t:
        roles = {th["role"]: th["native_id"] for th in t.ready["threads"]}
        time.sleep(0.3)
        profs = {"gilscope sampling 1000 Hz": gilscope_record(t.pid, TMP / "duty-s.trace", 1000, d)}
        if exact_ok:
            profs["gilscope exact 1000 Hz"] = gilscope_record(t.pid, TMP / "duty-e.trace", 1000, d,
                                                              mode="exact")
        if peer == "py-spy":
            pl = "py-spy --gil 1000 Hz"
            profs[pl] = pyspy_record(t.pid, TMP / "duty-pyspy.txt", 1000, seconds=d, gil=True,
                                     idle=True)
        else:
            pl = "CPython --mode gil 1000 Hz"
            profs[pl] = cpython_sampler(t.pid, "/tmp/gilscope-bench-duty.txt", 1000, d, mode="gil")
        texts = {k: p.finish(d + 60) for k, p in profs.items()}
    for k in profs:
        if k.startswith("gilscope"):
            try:
                s = gilscope_summary(str(TMP / ("duty-e.trace" if "exact" in k else "duty-s.trace")))
                by = {th["tid"]: th for th in s["threads"]}
                res[k] = {role: by.get(tid) for role, tid in roles.items()}
                res[k]["_hz"] = s.get("achieved_hz")
            except Exception as e:
                res[k] = {"error": str(e)[:200]}
        elif peer == "py-spy":
            counts = parse_raw_by_thread(TMP / "duty-pyspy.txt", PYSPY_THREAD)
            total = 1000 * d  # py-spy's --duration is a sample count: rate x seconds
            res[k] = {role: {"held_pct": 100.0 * counts.get(tid, 0) / total}
                      for role, tid in roles.items()}
            res[k]["_hz"] = None
        else:
            try:
                c = parse_cpython(texts[k])
                counts = parse_raw_by_thread(py.host_path("/tmp/gilscope-bench-duty.txt"), CPY_THREAD)
                res[k] = {role: {"held_pct": 100.0 * counts.get(tid, 0) / max(c["samples"], 1)}
                          for role, tid in roles.items()}
                res[k]["_hz"] = c["hz"]
            except Exception as e:
                res[k] = {"error": str(e)[:200]}
    return res


def render_duty(py, res, d):
    truth = {"duty": (50.0, 0.0), "releaser": (0.0, 48.75), "main": (0.0, 0.0)}
    head = ["thread (role)", "truth held / waiting"] + list(res)
    rows = []
    for role in ("duty", "releaser", "main"):
        row = [role, "%.1f %% / %.2f %%" % truth[role]]
        for k, r in res.items():
            if "error" in r:
                row.append("error")
                continue
            th = r.get(role)
            if not th:
                row.append("not seen")
                continue
            held = th.get("held_pct")
            w = th.get("waiting_pct")
            row.append("%.1f %%%s" % (held, "" if w is None else " / %.1f %%" % w))
        rows.append(row)
    return table(head, rows) + (
        "\n\n_%s, one run of samples/duty_cycle.py, all profilers attached at once for %g s "
        "(the ground truth holds over whole 400 ms periods: up to ±%.1f points over %g s)._"
        % (py.name, d, 100 * 0.1 / d, d))


def size_row(label, mode, tr, g):
    s = gilscope_summary(str(tr))
    n = len(s["threads"])
    size = tr.stat().st_size
    minutes = s["duration_s"] / 60
    measured = size / n / minutes / 1e6
    # What a minute of one thread costs at 1 kHz if gilscope kept up: bytes per sample per
    # thread x 60,000. Honest only as a projection: a sampler that falls behind writes less.
    projected = size / n / max(g["samples"], 1) * 60_000 / 1e6
    RESULTS["size"].append(("%s %s" % (label, mode), measured, projected, g["hz"]))
    return [label, mode, n, "%.1f s" % s["duration_s"], "{:,}".format(g["samples"]),
            "%s Hz" % fmt_hz(g["hz"]), "{:,}".format(size), "%.3f MB" % measured, "%.3f MB" % projected]


def bench_trace_size(cfg, py):
    rows = []
    cases = [("busy", 4, 1), ("idle", 16, 1)]
    if py.minor >= 12:
        cases.append(("busy", 4, 4))
    for kind, threads, interps in cases:
        with Target(py, "workload.py", [kind, threads, interps]) as t:
            tr = TMP / "size.trace"
            pr = gilscope_record(t.pid, tr, 1000, cfg.size_s)
            g = parse_gilscope(pr.finish(cfg.size_s + 60))
        rows.append(size_row("%s, %d threads × %d interp." % (kind, threads, interps), "sampling", tr, g))
    # exact mode on a contended workload: every GIL hand-over becomes an event
    try:
        with Target(py, "contention.py") as t:
            tr = TMP / "size-exact.trace"
            pr = gilscope_record(t.pid, tr, 1000, cfg.size_s, mode="exact")
            g = parse_gilscope(pr.finish(cfg.size_s + 60))
        rows.append(size_row("samples/contention.py (holder + spinner)", "exact", tr, g))
    except Exception as e:
        note("exact trace size: %s" % e)
    return table(["target", "mode", "Python threads", "recorded", "samples", "achieved",
                  "bytes", "per thread-minute", "per thread-minute at 1 kHz (projected)"], rows)


def bench_summary_time(cfg, py):
    """A trace as large as gilscope records in cfg.big_s seconds of samples/duty_cycle.py
    (mostly idle threads: cheap samples, so the rate stays high) asked for 10 kHz, then
    `gilscope summary` on it, 3 times."""
    with Target(py, "duty_cycle.py") as t:
        tr = TMP / "big.trace"
        pr = gilscope_record(t.pid, tr, 10000, cfg.big_s)
        g = parse_gilscope(pr.finish(cfg.big_s + 120))
    times = []
    for _ in range(3):
        t0 = time.monotonic()
        r = run_quiet(["taskset", "-c", PROFILER_CPU, Tools.gilscope, "summary", str(tr)], 600)
        times.append(time.monotonic() - t0)
        if r.returncode != 0:
            raise RuntimeError("summary failed: %s" % r.stderr[-300:])
    m, lo, hi = med_spread(times)
    RESULTS["summary"] = (g["samples"], m)
    return table(["trace", "samples", "size", "`gilscope summary` wall time (median of 3)", "spread",
                  "per million samples"],
                 [["%s, samples/duty_cycle.py (4 threads), %.0f s asked 10 kHz (achieved %s Hz)"
                   % (py.name, g["elapsed"], fmt_hz(g["hz"])),
                   "{:,}".format(g["samples"]), "%.2f MB" % (tr.stat().st_size / 1e6), "%.3f s" % m,
                   "%.3f – %.3f s" % (lo, hi), "%.2f s" % (m / max(g["samples"], 1) * 1e6)]])


def bench_synthetic_size():
    """The deterministic size test of tests/trace_format.rs (synthetic snapshots through the
    real encoder, 4 threads x 60 s at 1 kHz)."""
    r = run_quiet(["cargo", "test", "--release", "--test", "trace_format", "size_per_thread_minute",
                   "--", "--nocapture"], 1200, cwd=REPO)
    rows = []
    for m in re.finditer(r"size: 4 threads, 60 s at 1 kHz, (\S+) stack churn: (\d+) bytes = (\d+) bytes per "
                         r"thread-minute", r.stdout):
        rows.append([m.group(1), "{:,}".format(int(m.group(2))), "%.3f MB" % (int(m.group(3)) / 1e6)])
        RESULTS["size"].append(("synthetic %s churn" % m.group(1), int(m.group(3)) / 1e6,
                                int(m.group(3)) / 1e6, 1000))
    if not rows:
        return "_`cargo test --release --test trace_format size_per_thread_minute` did not run: %s_" % (
            (r.stderr.strip().splitlines() or ["?"])[-1][:200])
    return ("Deterministic, from `cargo test --release --test trace_format size_per_thread_minute -- "
            "--nocapture` (synthetic snapshots of 4 threads through the real encoder, 60 s at 1 kHz, "
            "every sample taken):\n\n" + table(["stack churn", "bytes", "per thread-minute"], rows))


def bench_tui(cfg):
    exe = REPO / "target/release/examples/frame_time"
    if not cfg.no_build and not (cfg.quick and exe.exists()):  # --quick: reuse a built one
        # --workspace: the same feature set as a workspace build, so no rebuild ping-pong.
        r = run_quiet(["cargo", "build", "--release", "--workspace", "--example", "frame_time"], 1800,
                      cwd=REPO)
        if r.returncode != 0:
            note("building frame_time failed: %s" % r.stderr[-300:])
    exe = REPO / "target/release/examples/frame_time"
    if not exe.exists():
        return "_frame_time example not built (`cargo build --release -p gilscope-ui --example frame_time`)._"
    r = run_quiet(["taskset", "-c", PROFILER_CPU, exe], 600)
    lines = r.stdout.strip().splitlines()
    rows = []
    built = ""
    for line in lines:
        m = re.match(r"(.+?)\s+median\s+(\S+)\s+max\s+(\S+)\s+\((.*)\)", line)
        if m:
            rows.append([m.group(1).strip(), m.group(2), m.group(3)])
            RESULTS.setdefault("tui_rows", []).append((m.group(1).strip(), m.group(2)))
        elif line.startswith("built"):
            built = line
    return "%s\n\n_`frame_time` (ui/examples/frame_time.rs): %s. Target: ≤ 16 ms per frame._" % (
        table(["screen", "median frame", "worst frame"], rows), built)


# ----------------------------------------------------------------------------- main

class Cfg:
    def __init__(self, quick, no_build):
        self.quick = quick
        self.no_build = no_build
        if quick:
            self.dur = 2  # whole seconds: profiling.sampling's -d takes an int
            self.rate_matrix = [("busy", 1, 1), ("busy", 4, 4)]
            self.work_s = 0.3
            self.reps = 3
            self.slow_rates = (1000,)
            self.switchy_threads = [2]
            self.switchy_calls = 10_000
            self.duty_s = 2
            self.size_s = 2
            self.big_s = 3
            self.server_s = 2
            self.server_reps = 2
            self.server_warmup_s = 3
        else:
            self.dur = 3
            self.rate_matrix = [(k, t, i) for k in ("busy", "idle")
                                for t, i in ((1, 1), (4, 1), (16, 1), (4, 4), (16, 4))]
            self.work_s = 1.0
            self.reps = 5
            self.slow_rates = (1000, 10000)
            self.switchy_threads = [1, 2]
            self.switchy_calls = 100_000
            self.duty_s = 8
            self.size_s = 10
            self.big_s = 45
            self.server_s = 4
            self.server_reps = 7
            self.server_warmup_s = 20


def bench_server(cfg, py):
    """benches/http_server.py under a client loop (benches/http_client.py, another process):
    requests/s alone and under each gilscope configuration. One server per round; in it the
    runs go in a palindrome, alone, default, sampling, exact, exact, sampling, default, alone,
    so that a drift of the machine's speed during the round (here it swings by 2-5x within
    seconds, with nothing else running) weighs the same on both halves. A configuration's
    figure for the round is the sum of its two runs over the sum of the two runs alone; the
    page gives the median of those ratios, with their spread. The default `record`, the one
    the target is about, runs next to the runs alone."""
    configs = [("alone", None),
               ("`gilscope record` (defaults: --mode auto, --max-overhead 1)",
                dict(mode="auto", rate=None, budget=None)),
               ("`--mode sampling` (1000 Hz, --max-overhead 1)",
                dict(mode="sampling", rate=1000, budget=None)),
               ("`--mode exact --max-overhead none` (1000 Hz)",
                dict(mode="exact", rate=1000, budget="none"))]
    order = configs + configs[::-1]
    rps = {c[0]: [] for c in configs}
    ratios = {c[0]: [] for c in configs}
    per_round = []  # [(label, rps)] in the order run
    notes = {c[0]: [] for c in configs}
    for rnd in range(cfg.server_reps):
        got = []
        try:
            with Target(py, "http_server.py") as t:
                # Warm the server up (first requests import and compile what they use), and
                # before the first round the machine too: after an idle minute this VM ran the
                # same server at a fifth of its speed for 20-30 s.
                run_quiet(["taskset", "-c", PROFILER_CPU, "python3", str(BENCHES / "http_client.py"),
                           t.ready["port"], 1 if rnd else cfg.server_warmup_s], 60)
                for label, g in order:
                    # gilscope attaches to a busy server, as to one in production: the load
                    # starts first, and gilscope 0.5 s into the client's window, which then
                    # holds the whole of gilscope's start (attach, mode choice, any probes).
                    client = subprocess.Popen(
                        ["taskset", "-c", PROFILER_CPU, "python3", str(BENCHES / "http_client.py"),
                         str(t.ready["port"]), str(cfg.server_s)],
                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                    pr = None
                    if g:
                        time.sleep(0.5)
                        pr = gilscope_record(t.pid, TMP / "server.trace", g["rate"], None,
                                             mode=g["mode"], budget=g["budget"])
                        wait_started(pr, r"gilscope: recording", "gilscope")
                    out, _ = client.communicate(timeout=cfg.server_s + 60)
                    res = json.loads(out.strip().splitlines()[-1])
                    got.append((label, res["rps"]))
                    rps[label].append(res["rps"])
                    if pr:
                        pr.interrupt()
                        text = pr.finish(60)
                        m = re.search(r"gilscope: mode: (\w+)", text)
                        sw = "detached" if "probes detached" in text else ""
                        low = re.search(r"sampling at (\d+) Hz from here on", text)
                        cost = re.search(r"gilscope: cost: ([^\n]*)", text)
                        priced = re.search(r"at the (\d+) GIL hand-overs/s it makes, exact mode's "
                                           r"probes would cost the target at least ([\d.]+)%", text)
                        notes[label].append("%s%s%s%s%s" % (
                            m.group(1) if m else "?",
                            " (auto: %s GIL hand-overs/s, probes priced at %s%% of a CPU)"
                            % priced.groups() if priced else "",
                            ", probes %s" % sw if sw else "",
                            ", rate lowered to %s Hz" % low.group(1) if low else "",
                            "; " + cost.group(1) if cost else ""))
        except Exception as e:
            note("server %s round %d: %s" % (py.name, rnd, e))
        per_round.append(got)
        if len(got) == len(order):
            sums = collections.Counter()
            for label, v in got:
                sums[label] += v
            for label, v in sums.items():
                ratios[label].append(v / sums["alone"])
    rows = []
    for label, xs in rps.items():
        if not xs:
            rows.append([label, "failed", "", "", "", ""])
            continue
        m, lo, hi = med_spread(xs)
        if label == "alone" or not ratios[label]:
            vs, vs_spread = "—", "—"
        else:
            rm, rlo, rhi = med_spread(ratios[label])
            vs = "%.1f %%" % (rm * 100)
            vs_spread = "%.1f – %.1f %%" % (rlo * 100, rhi * 100)
        # The notes differ in their figures only: show the first and say how many.
        ns = notes[label]
        said = (ns[0] + (" (and %d more runs alike)" % (len(ns) - 1) if len(ns) > 1 else "")) \
            if ns else "—"
        rows.append([label, "{:,.0f}".format(m), "{:,.0f} – {:,.0f}".format(lo, hi), vs,
                     vs_spread, said])
    RESULTS["server"][py.name] = {k: statistics.median(v) for k, v in ratios.items() if v}
    short = {c[0]: ("alone" if c[1] is None else "default" if c[1]["mode"] == "auto"
                    else c[1]["mode"]) for c in configs}
    raw = "\n\nEvery round, in the order run (requests/s): " + "; ".join(
        "%d: %s" % (k + 1, ", ".join("%s %s" % (short[lab], "{:,.0f}".format(v)) for lab, v in got))
        for k, got in enumerate(per_round)) + "."
    return table(["run", "median requests/s", "spread (min – max)",
                  "throughput vs alone (median of per-round ratios)", "ratio spread",
                  "what gilscope did (first run)"], rows) + raw + \
        "\n\n_%d rounds, one server each (warmed up by 1 s of load, the first by %g s), of 8 runs of %g s in a " \
        "palindrome (alone, default, sampling, exact, exact, sampling, default, alone); a " \
        "configuration's ratio in a round is its two runs' requests over the two runs alone. " \
        "gilscope attaches to the server under load, 0.5 s into the client's run, whose " \
        "requests/s therefore include gilscope's whole start._" % (cfg.server_reps, cfg.server_warmup_s, cfg.server_s)


def exact_possible(py):
    """Can gilscope use exact mode on this interpreter? (one short recording to find out)"""
    try:
        with Target(py, "workload.py", ["idle", 1, 1]) as t:
            pr = gilscope_record(t.pid, TMP / "probe.trace", 100, 1, mode="exact")
            text = pr.finish(60)
            if pr.rc == 0:
                return True, ""
            m = re.search(r"gilscope: error: (.*)", text)
            return False, m.group(1) if m else text[-200:]
    except Exception as e:
        return False, str(e)


def pyspy_support(pythons):
    """Which interpreters py-spy can read (one `py-spy dump` each)."""
    out = []
    for p in pythons.values():
        try:
            with Target(p, "workload.py", ["idle", 1, 1], cpu=None) as t:
                r = run_quiet([Tools.pyspy, "dump", "--pid", t.pid, "--nonblocking"], 60)
                ok = r.returncode == 0 and "Thread" in r.stdout
                why = "" if ok else (r.stderr.strip() or r.stdout.strip()).splitlines()[-1][:120] \
                    if (r.stderr.strip() or r.stdout.strip()) else "exit %d" % r.returncode
                out.append((p.name, p.version, "yes" if ok else "no: " + why))
        except Exception as e:
            out.append((p.name, p.version, "target failed: %s" % str(e)[:80]))
    return out


def main():
    global VERBOSE
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short runs, fewer cases (< 2 min)")
    ap.add_argument("-o", "--out", default=str(REPO / "docs/benchmarks.md"),
                    help="the page to write (default docs/benchmarks.md)")
    ap.add_argument("--no-build", action="store_true", help="use target/release/gilscope as it is")
    ap.add_argument("--no-provision", action="store_true",
                    help="do not run scripts/provision-pythons (use the manifest as it is)")
    ap.add_argument("--only", default="", help="comma-separated sections: support,rate,slowdown,"
                    "exact,server,correct,size,summary,tui (default: all)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every command run")
    args = ap.parse_args()
    VERBOSE = args.verbose
    only = set(filter(None, args.only.split(",")))
    want = (lambda s: not only or s in only)
    t_start = time.monotonic()
    signal.signal(signal.SIGTERM, _on_signal)
    atexit.register(_cleanup)

    pythons = setup(args)
    setup_s = time.monotonic() - t_start
    cfg = Cfg(args.quick, args.no_build)
    p312 = pythons.get("pyenv-3.12.1")
    p315 = pythons.get("sid-3.15")
    Tools.py315 = p315
    used = [p for p in (p312, p315) if p]
    pairs = []  # (python, peer)
    if p312:
        pairs.append((p312, "py-spy"))
    else:
        note("warning: no pyenv-3.12.1 in %s: no py-spy comparison" % MANIFEST)
    if p315:
        pairs.append((p315, "CPython 3.15 sampler"))
    else:
        note("warning: no sid-3.15 in %s: no comparison with CPython's sampler" % MANIFEST)

    cmd = "scripts/bench" + (" --quick" if args.quick else "")
    sections = []
    exact = {p.name: exact_possible(p) for p, _ in pairs}

    if want("support"):
        s = Section("Who can read what")
        sup = pyspy_support(pythons)
        s.add("py-spy %s against every provisioned interpreter (`py-spy dump --nonblocking`); "
              "CPython's `profiling.sampling` reads only its own version (3.15 here), gilscope "
              "reads 3.9–3.15 and 3.13t.\n\n" % PYSPY_VERSION +
              table(["interpreter", "version", "py-spy can read it"], sup))
        s.add("gilscope exact mode (uprobes) on the benchmark interpreters: " + "; ".join(
            "%s: %s" % (k, "yes" if ok else "no (%s)" % why) for k, (ok, why) in exact.items()))
        sections.append(s.render())

    if want("rate"):
        s = Section("Maximum sampling rate and cost per sample")
        s.add("Each profiler samples as fast as it can for %g s (`gilscope record --rate max "
              "--duration %g --mode sampling [--no-stacks]`; `py-spy record --rate %d --nonblocking "
              "--threads --idle --format raw`, stopped with SIGINT, samples counted from its output; "
              "`python3.15 -m profiling.sampling attach -a -r %d -d %g --mode cpu|wall|gil --collapsed`, "
              "its own \"Sample rate\" line; `cpu` reads stacks and each thread's on-CPU state, "
              "like gilscope's full sample, `wall` stacks only, `gil` only the GIL holder's stack). "
              "One target per row, the runs one after the other on it. gilscope's system calls per "
              "sample are counted with `strace -c -f` in a separate 2 s run at 1000 Hz (sleeps left "
              "out). "
              "busy: every thread spins in pure Python under a 16-frame stack; idle: every thread "
              "blocks in read(2) under it. `T × I`: T threads spread over I interpreters (the main "
              "one and I−1 own-GIL sub-interpreters). py-spy has no state-only mode, so both "
              "gilscope columns are compared with its one mode; CPython's `gil` mode is the peer of "
              "gilscope's state-only sample. CPU per sample is the "
              "profiler process's user + system time in its steady state (a window after its start-up, "
              "from /proc/PID/stat) over the samples it took in that window."
              % (cfg.dur, cfg.dur, ASKED_MAX, ASKED_MAX, cfg.dur))
        for py, peer in pairs:
            rows = bench_max_rate(cfg, py, "py-spy" if peer == "py-spy" else "cpython")
            RESULTS["rate"][(py.name, peer)] = rows
            s.add(render_max_rate(py, peer, rows))
        sections.append(s.render())

    if want("slowdown"):
        s = Section("Target slowdown")
        s.add("`benches/cpu_work.py`: a fixed amount of pure-Python work (recursive `fib(18)` in a "
              "loop, one thread), timed by the target itself from the moment the profiler is "
              "attached and sampling; target pinned to CPU %s, profiler to CPU %s. Runs interleaved "
              "(alone, each profiler, alone, ...). Two numbers: the wall time, which includes "
              "waiting for a CPU (on a busy machine the CPU a profiler burns on its core pushes "
              "other work onto the target's core, so the wall slowdown there mostly measures the "
              "profiler's CPU appetite), and the target's own CPU time (`time.process_time()`), "
              "which shows the direct cost: cache and TLB pollution, and in exact mode the "
              "uprobe traps, which the kernel charges to the target." % (TARGET_CPU, PROFILER_CPU))
        for py, peer in pairs:
            ok = exact[py.name][0]
            times, extra, rounds = bench_slowdown(cfg, py, "py-spy" if peer == "py-spy" else peer, ok)
            RESULTS["slowdown"][py.name] = {k: statistics.median(v) for k, v in times.items() if v}
            RESULTS.setdefault("slowdown_cpu", {})[py.name] = {
                k: statistics.median(v) for k, v in extra["_cpu"].items() if v}
            s.add("### %s (%d rounds)\n\n%s" % (py.name, rounds, render_timed(times, extra, "alone")))
        sections.append(s.render())

    if want("exact"):
        s = Section("Exact mode on a release-heavy workload")
        s.add("`benches/switchy.py`: threads calling `os.lseek` on /dev/null in a loop; CPython "
              "drops and re-takes the GIL around each call (3 probe hits: take_gil entry and "
              "return, drop_gil), so this is close to the worst case for exact mode. Cost per GIL "
              "event = (wall time under exact mode − wall time under sampling at the same rate) ÷ "
              "events, the method of the ignored test `overhead_per_event_is_measured` in "
              "tests/exact.rs (which measures the probes alone).")
        for py, peer in pairs:
            if not exact[py.name][0]:
                s.add("### %s\n\nexact mode unavailable: %s" % (py.name, exact[py.name][1]))
                continue
            for r in bench_exact(cfg, py, "py-spy" if peer == "py-spy" else peer):
                RESULTS["exact"][(py.name, r["threads"])] = r
                s.add("### %s, %d thread(s) × %s calls\n\n%s\n\nGIL events per run (exact): %s "
                      "(%s/s of the run alone), %s lost; cost per event: **%s**." % (
                          py.name, r["threads"], "{:,}".format(r["calls"]),
                          render_timed(r["times"], r["extra"], "alone"),
                          fmt_hz(r["events"]), fmt_hz(r["events_per_s"]),
                          r["lost"], "%.2f µs" % r["per_event_us"] if r["per_event_us"] is not None else "—"))
        sections.append(s.render())

    if want("server"):
        s = Section("A threaded server under load")
        s.add("`benches/http_server.py`: the stdlib `ThreadingHTTPServer` on 127.0.0.1 (a thread "
              "per connection, a small JSON body built in Python per GET), loaded by "
              "`benches/http_client.py` in another process (one connection per request, closed with a "
              "reset so that no TIME_WAIT sockets pile up, as fast as it can, for a fixed time). "
              "The server is pinned to CPU 1 and the client to CPU 0 (unpinned, the same run "
              "alone swung from 310 to 1,350 requests/s with where the scheduler put them); "
              "gilscope is not pinned: what it takes, it takes from one of them. Throughput is the client's requests/s. This VM's speed drifts on its own: the server alone, measured second by second, went from 250 to 1,500 requests/s and back within a minute with nothing else running. Each round therefore starts one server and runs the configurations on it in a palindrome (alone, default, sampling, exact, exact, sampling, default, alone), the default next to the runs alone; gilscope attaches while the server is under load (0.5 s into the client's run, so the run holds gilscope's whole start), and a configuration's ratio in the round is the sum of its two runs over the sum of the two runs alone; the page gives the median of those ratios. "
              "Issue 19's target: the default "
              "`record` keeps >= 97 % of the throughput.")
        for py, _peer in pairs:
            s.add("### %s\n\n%s" % (py.name, bench_server(cfg, py)))
        sections.append(s.render())

    if want("correct"):
        s = Section("Correctness on the same run: held % against ground truth")
        s.add("`samples/duty_cycle.py`: thread `duty` holds the GIL 50 % of the time (off CPU, "
              "in a C call under `ctypes.PyDLL`), `releaser` waits for it 48.75 % of the time, "
              "`main` is idle. All profilers attach to the same process at the same time. "
              "gilscope: held % / waiting % from `gilscope summary --json`; py-spy: samples "
              "of the thread with `--gil` (only GIL-holding samples are kept) ÷ samples taken; "
              "CPython: samples of the thread with `--mode gil` ÷ samples captured. Neither peer "
              "reports waiting.")
        for py, peer in pairs:
            try:
                res = bench_duty(cfg, py, "py-spy" if peer == "py-spy" else peer, exact[py.name][0])
                RESULTS["duty"][py.name] = res
                s.add("### %s\n\n%s" % (py.name, render_duty(py, res, cfg.duty_s)))
            except Exception as e:
                s.add("### %s\n\nfailed: %s" % (py.name, e))
        sections.append(s.render())

    if want("size"):
        s = Section("Trace size")
        if p312:
            s.add("`gilscope record --rate 1000` (stacks on, the default) for %d s on %s; "
                  "per thread-minute = file bytes ÷ (Python threads × minutes recorded)."
                  % (cfg.size_s, p312.name))
            s.add(bench_trace_size(cfg, p312))
        if not cfg.quick:
            s.add(bench_synthetic_size())
        sections.append(s.render())

    if want("summary"):
        s = Section("`gilscope summary` on the largest trace this run records")
        if p312:
            try:
                s.add(bench_summary_time(cfg, p312))
            except Exception as e:
                s.add("failed: %s" % e)
        sections.append(s.render())

    if want("tui"):
        s = Section("TUI frame time")
        s.add(bench_tui(cfg))
        sections.append(s.render())

    total = time.monotonic() - t_start
    page = render_page(args, cmd, machine_info(pythons, used), sections, total - setup_s, setup_s)
    Path(args.out).write_text(page)
    note("wrote %s in %.0f s" % (args.out, total))


def render_page(args, cmd, machine, sections, total, setup_s):
    head = """# Benchmarks

gilscope beside what users would pick instead: py-spy (pinned, from PyPI) and CPython 3.15's own sampling profiler (`python3.15 -m
profiling.sampling`), measured in the same run, on the same targets, on the same machine.
py-spy does not read 3.15 and CPython's sampler reads nothing but its own version, so each
peer is compared on the interpreter it supports: py-spy on pyenv CPython 3.12.1, CPython's
sampler on Debian sid CPython 3.15.

This page is generated: `%s` (measurements %.0f s this time, after %.0f s of set-up: provisioning
check, `cargo build --release`, py-spy install%s) rewrites it. The workloads are in
`benches/`; the driver is `benches/run.py`. Numbers move from run to run, and this is a
2-core virtual machine: each section gives the load average when it started and ended, and
the timed runs give their spread.

%s

%s

%s
""" % (cmd, total, setup_s, "; `scripts/bench` without `--quick` is the full run" if args.quick else
       "; `scripts/bench --quick` is a shorter version", "## Reading\n\n" + reading(), "## Machine\n\n" + machine,
       "\n".join(sections))
    return head


def ratios(rows, key):
    return [r[key] / r["peer"] for r in rows if r.get(key) and r.get("peer")]


def reading():
    """The targets of issue #8 and where gilscope stands, computed from this run's numbers,
    then the places where it loses."""
    rows = []
    losses = []
    for (name, peer), rs in RESULTS["rate"].items():
        if peer == "py-spy":
            goals = [("state", "peer", 10.0, "state sampling ≥ 10× py-spy"),
                     ("stacks", "peer", 10.0, "state + stacks sampling ≥ 10× py-spy")]
        else:
            goals = [("stacks", "peer", 2.0, "state + stacks ≥ 2× CPython 3.15 sampler --mode cpu"),
                     ("stacks", "peer_wall", 1.0, "state + stacks ≥ 1× CPython 3.15 sampler --mode wall"),
                     ("state", "peer_gil", 2.0, "--no-stacks ≥ 2× CPython 3.15 sampler --mode gil")]
        for key, pkey, want, what in goals:
            rr = [r.get(key) / r[pkey] for r in rs if r.get(key) and r.get(pkey)]
            if rr:
                rows.append(["%s (max rate, every row)" % what,
                             "%.1f× – %.1f× (median %.1f×) on %s" % (min(rr), max(rr), statistics.median(rr), name),
                             "met" if min(rr) >= want else ("met on %d of %d rows" % (sum(x >= want for x in rr), len(rr)))])
            short = [r for r in rs if r.get(key) and r.get(pkey) and r[key] < want * r[pkey]]
            if short:
                worst = min(short, key=lambda r: r[key] / r[pkey])
                losses.append("%s: missed on %d of %d targets (%s), worst %s %d×%d: %s vs %s samples/s"
                              % (what, len(short), len(rs), name, worst["kind"], worst["threads"],
                                 worst["interps"], fmt_hz(worst[key]), fmt_hz(worst[pkey])))
        dearer = [r for r in rs if r.get("stacks_cpu_us") and r.get("peer_cpu_us")
                  and r["stacks_cpu_us"] > r["peer_cpu_us"]]
        if dearer:
            worst = max(dearer, key=lambda r: r["stacks_cpu_us"] / r["peer_cpu_us"])
            losses.append("a sample with stacks costs more CPU than one of %s on %d of %d targets (%s), "
                          "worst %s %d×%d: %s vs %s" % (peer, len(dearer), len(rs), name, worst["kind"],
                                                       worst["threads"], worst["interps"],
                                                       fmt_us(worst["stacks_cpu_us"]), fmt_us(worst["peer_cpu_us"])))
    for name, med in RESULTS["slowdown"].items():
        base = med.get("alone")
        g = med.get("gilscope sampling 1000 Hz")
        cmed = RESULTS.get("slowdown_cpu", {}).get(name, {})
        if base and g:
            pct = (g / base - 1) * 100
            cb, cg = cmed.get("alone"), cmed.get("gilscope sampling 1000 Hz")
            cpct = (cg / cb - 1) * 100 if cb and cg else None
            rows.append(["≤ 1 %% target slowdown sampling at 1 kHz (%s)" % name,
                         "wall %+.1f %%%s" % (pct, "" if cpct is None else ", target CPU time %+.1f %%" % cpct),
                         "met" if pct <= 1.0 else ("missed (wall)" + (
                             "; met on CPU time" if cpct is not None and cpct <= 1.0 else ""))])
        for rate in (1000, 10000):
            g = med.get("gilscope sampling %d Hz" % rate)
            for k, v in med.items():
                if k.endswith(" %d Hz" % rate) and not k.startswith("gilscope") and g and base and v < g:
                    losses.append("%s slows the CPU-bound target less than gilscope sampling at %d Hz on %s "
                                  "(wall %+.1f %% vs %+.1f %%)" % (k.rsplit(" ", 2)[0], rate, name,
                                                                  (v / base - 1) * 100, (g / base - 1) * 100))
    for name, ratios in RESULTS["server"].items():
        r = ratios.get("`gilscope record` (defaults: --mode auto, --max-overhead 1)")
        if r is not None:
            rows.append(["≥ 97 %% of a threaded server's throughput under the default `record` (%s)"
                         % name, "%.1f %% (median of per-round ratios)" % (r * 100),
                         "met" if r >= 0.97 else "missed"])
    if RESULTS["size"]:
        worst = max(RESULTS["size"], key=lambda x: x[2])
        rows.append(["≤ 1 MB per thread-minute (1 kHz, stacks)",
                     "largest %.3f MB measured, %.3f MB projected to a full 1 kHz (%s, achieved %s Hz)"
                     % (worst[1], worst[2], worst[0], fmt_hz(worst[3])),
                     "met" if worst[2] <= 1.0 else "missed"])
    if RESULTS.get("summary"):
        n, secs = RESULTS["summary"]
        rows.append(["`gilscope summary` on the largest trace recorded here", "%.3f s for %s samples" % (secs, "{:,}".format(n)),
                     "(no target)"])
    if RESULTS.get("tui_rows"):
        def ms(s):
            m = re.match(r"([\d.]+)(µs|ms|s|ns)", s)
            if not m:
                return None
            return float(m.group(1)) * {"ns": 1e-6, "µs": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
        worst = max(RESULTS["tui_rows"], key=lambda x: ms(x[1]) or 0)
        rows.append(["TUI frame ≤ 16 ms (64 threads × 10 min)", "slowest median %s (%s)" % (worst[1], worst[0]),
                     "met" if (ms(worst[1]) or 1e9) <= 16 else "missed"])
    for (name, threads), r in RESULTS["exact"].items():
        if r.get("per_event_us") is not None:
            rows.append(["exact mode cost per GIL event (%s, %d thread%s)" % (name, threads, "s" * (threads > 1)),
                         "%.2f µs" % r["per_event_us"], "(no target; docs/exact-mode.md says ~4 µs)"])
    for name, res in RESULTS["duty"].items():
        for k, r in res.items():
            d = (r.get("duty") or {}).get("held_pct") if "error" not in r else None
            if d is not None:
                rows.append(["duty thread held %% (truth 50 %%): %s, %s" % (k, name), "%.1f %%" % d,
                             "within ±3 points" if abs(d - 50) <= 3 else "off by %.1f points" % (d - 50)])
    out = table(["target", "this run", "status"], rows) if rows else "_no results_"
    if losses:
        out += "\n\nWhere gilscope loses in this run:\n\n" + "\n".join("- " + l for l in losses)
    else:
        out += "\n\nIn this run gilscope lost no pairwise comparison above."
    out += "\n\n" + CAVEATS
    return out


CAVEATS = """Caveats that hold for every run:

- The peers are not doing the same work. gilscope's state-only mode (`--no-stacks`) reads every
  interpreter's GIL and every thread's state and nothing else; py-spy has no such mode, so it is
  compared with its stack sampling, and CPython's `--mode gil` (the holder's stack only) is its
  nearest peer. gilscope with stacks also reads every GIL, every
  thread's GIL state (held / waiting / released / idle) and the on-CPU state (perf
  context-switch records here, as root); py-spy
  reads stacks and (with `--idle` off) the on-CPU state; CPython's sampler reads stacks and, per
  its `--mode`, GIL / CPU status.
- py-spy stops a `--duration` run after rate × duration samples, not after that many seconds;
  the max-rate runs therefore stop it with SIGINT and divide its samples by the wall time.
- CPython's sampler is a Python program that prints nothing until it is done: its CPU per
  sample is measured from 0.8 s after it was started (its start-up takes 0.3–0.5 s here), and
  in the slowdown runs it is given 1 s to attach before the work begins (gilscope and py-spy
  say when they have attached).
- Target slowdown is measured on a CPU-bound single thread; wall times on this machine swing
  with whatever else runs (see each section's load), the target's own CPU time less so.
- A 2-core VM: the target runs on one core, the profiler on the other; anything else running
  (the load averages are given) competes with both."""

if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        note("interrupted")
        sys.exit(130)
