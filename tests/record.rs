//! `gilscope record` and `gilscope summary` against real CPython processes whose GIL behaviour
//! is guaranteed by the workload (the samples in `samples/`, see samples/sample_support.py): the
//! fractions `summary --json` reports must match what the workload guarantees, on every
//! applicable interpreter of the manifest (tests/common/mod.rs). Also: launching the command
//! (`record -- CMD`), following subprocesses, a recorder killed by SIGKILL or stopped by SIGINT,
//! and a target that exits during the recording.
//!
//! Recordings are short (2-4 s at 200-500 Hz). Each test prints, per interpreter, what it
//! checked and the measured numbers (`cargo test --test record -- --nocapture`).

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use common::*;
use serde::Deserialize;

// ----------------------------------------------------------------------------- summary JSON

/// The parts of `gilscope summary --json` (docs/cli.md) these tests read.
#[derive(Debug, Clone, Deserialize)]
struct Summary {
    /// "sampled" or "exact".
    mode: String,
    complete: bool,
    damage: Option<serde_json::Value>,
    target: SummaryTarget,
    python: Option<SummaryPython>,
    rate_hz: f64,
    achieved_hz: Option<f64>,
    duration_s: f64,
    samples: u64,
    missed_ticks: Option<u64>,
    sample_errors: u64,
    errors: Vec<SummaryError>,
    waiting_known: bool,
    interpreters: Vec<SummaryInterpreter>,
    gils: Vec<SummaryGil>,
    threads: Vec<SummaryThread>,
}

#[derive(Debug, Clone, Deserialize)]
struct SummaryTarget {
    pid: u32,
    command: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
struct SummaryPython {
    version: String,
    free_threaded: bool,
}

#[derive(Debug, Clone, Deserialize)]
struct SummaryError {
    message: String,
    count: u64,
}

#[derive(Debug, Clone, Deserialize)]
struct SummaryInterpreter {
    id: i64,
    own_gil: bool,
    gil: usize,
    shares_gil_with: Vec<i64>,
    gil_busy_pct: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
struct SummaryGil {
    index: usize,
    interpreters: Vec<i64>,
    /// Counted from samples (`interpreters[].handovers` is exact mode's, null here).
    handovers: u64,
    held_s: f64,
    hot_stacks: Vec<SummaryStack>,
}

#[derive(Debug, Clone, Deserialize)]
struct SummaryStack {
    frames: Vec<SummaryFrame>,
}

#[derive(Debug, Clone, Deserialize)]
struct SummaryFrame {
    function: String,
    interpreter: i64,
}

#[derive(Debug, Clone, Deserialize)]
struct SummaryThread {
    tid: u32,
    name: String,
    interpreter: Option<i64>,
    held_pct: f64,
    waiting_pct: Option<f64>,
    released_pct: f64,
    idle_pct: f64,
    on_cpu_pct: f64,
    samples: u64,
    observed_s: f64,
}

impl Summary {
    fn thread(&self, tid: u32) -> Result<&SummaryThread> {
        let found: Vec<&SummaryThread> = self.threads.iter().filter(|t| t.tid == tid).collect();
        match found.as_slice() {
            [one] => Ok(one),
            [] => bail!("thread {tid} is not in the summary"),
            _ => bail!("thread {tid} appears {} times in the summary", found.len()),
        }
    }

    fn interpreter(&self, id: i64) -> Result<&SummaryInterpreter> {
        self.interpreters
            .iter()
            .find(|i| i.id == id)
            .ok_or_else(|| anyhow!("interpreter {id} is not in the summary"))
    }

    fn hz(&self) -> f64 {
        self.achieved_hz.unwrap_or(self.rate_hz)
    }

    /// One line: duration, samples, rate, errors, completeness.
    fn headline(&self) -> String {
        format!(
            "{:.3} s, {} samples, {:.0}/{:.0} Hz, {} missed ticks, {} failed samples, complete {}",
            self.duration_s,
            self.samples,
            self.hz(),
            self.rate_hz,
            self.missed_ticks.map_or("?".to_string(), |m| m.to_string()),
            self.sample_errors,
            self.complete
        )
    }
}

impl SummaryThread {
    fn waiting(&self) -> f64 {
        self.waiting_pct.unwrap_or(f64::NAN)
    }

    /// "held 49.9 waiting 0.0 released 0.1 idle 50.0"
    fn shares(&self) -> String {
        format!(
            "held {:.1} waiting {:.1} released {:.1} idle {:.1} (on cpu {:.1}, {} samples, {:.2} s)",
            self.held_pct,
            self.waiting(),
            self.released_pct,
            self.idle_pct,
            self.on_cpu_pct,
            self.samples,
            self.observed_s
        )
    }
}

/// Run `check` on a summary, attaching the text summary to a failure.
fn with_summary<T>(text: &str, r: Result<T>) -> Result<T> {
    r.with_context(|| format!("summary:\n{text}"))
}

/// Checks every recording of a sample must pass: the file is of the target, with its Python,
/// waiting measured, and no failed samples.
fn check_basics(s: &Summary, ready: &Ready) -> Result<()> {
    // Every recording here is made with `--mode sampling` (exact mode: tests/record_exact.rs),
    // so the numbers below are the sampler's whatever the machine could do.
    ensure!(
        s.mode == "sampled",
        "mode {:?}: these tests record with --mode sampling",
        s.mode
    );
    ensure!(
        s.target.pid == ready.pid,
        "target.pid {} != the sample's pid {}",
        s.target.pid,
        ready.pid
    );
    let python = s.python.as_ref().ok_or_else(|| anyhow!("python is null"))?;
    ensure!(
        python.version == ready.version && python.free_threaded == ready.free_threaded,
        "python {:?} free_threaded {}, the sample is {:?} free_threaded {}",
        python.version,
        python.free_threaded,
        ready.version,
        ready.free_threaded
    );
    ensure!(
        s.waiting_known,
        "waiting_known false for a trace with Python metadata"
    );
    ensure!(
        s.sample_errors == 0,
        "{} failed samples: {:?}",
        s.sample_errors,
        s.errors
            .iter()
            .map(|e| format!("{} x{}", e.message, e.count))
            .collect::<Vec<_>>()
    );
    ensure!(s.samples > 0, "no samples");
    for rt in &ready.threads {
        let t = s.thread(rt.native_id)?;
        ensure!(
            t.name == rt.name,
            "thread {} ({}): name {:?}, want {:?}",
            rt.native_id,
            rt.role,
            t.name,
            rt.name
        );
        ensure!(
            t.interpreter == Some(rt.interpreter),
            "thread {} ({}): interpreter {:?}, want {}",
            rt.native_id,
            rt.role,
            t.interpreter,
            rt.interpreter
        );
    }
    Ok(())
}

fn within(what: &str, got: f64, want: f64, tol: f64) -> Result<()> {
    ensure!(
        (got - want).abs() <= tol,
        "{what} = {got:.2}, want {want:.2} ± {tol:.2}"
    );
    Ok(())
}

// -------------------------------------------------------------------------------- helpers

/// Wait until gilscope has taken its first sample: the trace file's header is written with it.
fn wait_recording_started(trace: &Path, rec: &mut Recorder) -> Result<Instant> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if fs::metadata(trace).is_ok_and(|m| m.len() > 0) {
            return Ok(Instant::now());
        }
        if let Some(st) = rec.child.try_wait()? {
            bail!(
                "gilscope exited ({st}) before its first sample; stderr:\n{}",
                rec.stderr_text(Duration::from_secs(2))
            );
        }
        ensure!(
            Instant::now() < deadline,
            "no first sample in {} within {}s",
            trace.display(),
            READY_TIMEOUT.as_secs()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// A `gilscope` process started by a test: own process group (killed with everything it
/// launched on drop), stdin a pipe kept open until it exits (a launched sample inherits it and
/// exits at EOF), stdout read line by line, stderr collected.
struct Recorder {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    stdout_lines: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<Vec<u8>>,
}

impl Recorder {
    fn spawn(args: &[&str], env: &[(&str, &str)]) -> Result<Recorder> {
        let mut cmd = gilscope(args);
        cmd.envs(env.iter().copied())
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let (tx, stdout_lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (tx, stderr_rx) = mpsc::channel();
        thread::spawn(move || {
            let mut v = Vec::new();
            let _ = stderr.read_to_end(&mut v);
            let _ = tx.send(v);
        });
        Ok(Recorder {
            child,
            stdin,
            stdout_lines,
            stderr: stderr_rx,
        })
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own, not yet reaped, child.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, sig);
        }
    }

    /// The first line the recorded command wrote to stdout (a sample's ready line).
    fn first_line(&self, timeout: Duration) -> Result<String> {
        self.stdout_lines
            .recv_timeout(timeout)
            .map_err(|_| anyhow!("no line on stdout within {}s", timeout.as_secs()))
    }

    /// Wait up to `timeout` for gilscope to exit; then its stderr (the launched command may keep
    /// the pipe open a little longer: it is read for at most 5 s more).
    fn wait(&mut self, timeout: Duration) -> Result<(ExitStatus, String)> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait()? {
                break s;
            }
            if Instant::now() > deadline {
                self.kill_all();
                let err = self.stderr_text(Duration::from_secs(2));
                bail!(
                    "gilscope did not exit within {}s; stderr:\n{err}",
                    timeout.as_secs()
                );
            }
            thread::sleep(Duration::from_millis(10));
        };
        self.stdin.take();
        Ok((status, self.stderr_text(Duration::from_secs(5))))
    }

    fn stderr_text(&self, timeout: Duration) -> String {
        match self.stderr.recv_timeout(timeout) {
            Ok(v) => String::from_utf8_lossy(&v).into_owned(),
            Err(_) => "(stderr still open: something gilscope launched is still running)".into(),
        }
    }

    fn kill_all(&mut self) {
        self.stdin.take();
        // SAFETY: kill(2) with a negative pid signals the process group this test created
        // (gilscope and whatever it launched); no memory involved.
        unsafe {
            libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// The command line that runs `samples/<file>` on `py`, as strings.
fn sample_argv(py: &Python, file: &str) -> Result<Vec<String>> {
    let mut argv = py.argv.clone();
    argv.push(py.script_path(file)?);
    Ok(argv)
}

// ---------------------------------------------------------------- samples/duty_cycle.py truth

/// samples/duty_cycle.py: the duty thread's period (ms) and halves.
const PERIOD_S: f64 = 0.4;
const HALF_S: f64 = 0.2;
/// Its releaser sleeps 10 ms at a time, so while the duty thread holds the GIL for 200 ms the
/// releaser waits for it for all but (on average) half a sleep: (200 - 5) / 400.
const RELEASER_WAITING_PCT: f64 = 100.0 * (HALF_S - 0.005) / PERIOD_S;

/// Worst-case error, in percentage points, of a share that follows the duty thread's square
/// wave (period P = 400 ms, half H = 200 ms) measured over `window_s` seconds at `hz`:
///
/// * phase: the window is k whole periods (exactly k·H held) plus a remainder r < P whose held
///   part lies between max(0, r - H) and min(r, H); the share is off r/2 by at most H/2 (at
///   r = H), i.e. by H/2 / window: 0.1 s / 4 s = 2.5 points for a 4 s window, 5 for 2 s;
/// * sampling: each sample's state stands for the interval up to the next; a transition
///   between two samples is misattributed for at most one interval, and there are 2/P
///   transitions a second: (2/P) / hz = 5 / hz, 1 point at 500 Hz, 2.5 at 200 Hz;
/// * the workload itself: the microseconds of Python between the two calls, usleep overshoot,
///   re-taking the GIL after the CDLL sleep (the releaser holds it for microseconds): 1 point.
///
/// 4 s at ~490 Hz gives ±4.5 points.
fn duty_tolerance(window_s: f64, hz: f64) -> f64 {
    100.0 * (HALF_S / 2.0) / window_s + 100.0 * (2.0 / PERIOD_S) / hz + 1.0
}

/// The duty_cycle truths on a recording of `s` (whose window for the duty thread is its
/// observed time). Returns a line of measured numbers.
fn check_duty_cycle(s: &Summary, ready: &Ready) -> Result<String> {
    let duty = s.thread(ready.role("duty")?.native_id)?;
    let releaser = s.thread(ready.role("releaser")?.native_id)?;
    let main = s.thread(ready.role("main")?.native_id)?;
    let watch = s.thread(ready.role("watchdog")?.native_id)?;
    let interp = s.interpreter(0)?;
    let tol = duty_tolerance(duty.observed_s, s.hz());
    let line = format!(
        "{}; tolerance ±{tol:.1}\n    duty:     {}\n    releaser: {}\n    main:     {}\n    \
         interpreter 0: GIL busy {:.1}, {} hand-overs",
        s.headline(),
        duty.shares(),
        releaser.shares(),
        main.shares(),
        interp.gil_busy_pct.unwrap_or(f64::NAN),
        s.gils[interp.gil].handovers
    );
    let r = (|| -> Result<()> {
        // The duty thread holds the GIL half the time: PyDLL usleep(200 ms) then CDLL
        // usleep(200 ms).
        within("duty held_pct", duty.held_pct, 50.0, tol)?;
        // Nothing holds the GIL for more than microseconds when the duty thread wants it back.
        ensure!(
            duty.waiting() < 2.0,
            "duty waiting_pct {:.2}, want < 2",
            duty.waiting()
        );
        // The releaser holds the GIL only between two usleep calls (microseconds) ...
        ensure!(
            releaser.held_pct < 2.0,
            "releaser held_pct {:.2}, want < 2 (it holds the GIL for microseconds between \
             sleeps)",
            releaser.held_pct
        );
        // ... and wants it while the duty thread holds it. 3.15 publishes that a thread waits
        // for the GIL: there waiting alone is held to the truth. Older versions are read from
        // the futex the waiter sleeps on, so the moments the waiter is runnable inside take_gil
        // (woken every 5 ms switch interval to set the drop request; long under CPU load) show
        // as "released" (runnable without the GIL). "released" also holds the releaser's own
        // runnable time after each 10 ms sleep, which grows with CPU load too (measured 2-23 %).
        // So: waiting can not exceed the truth, and waiting + released can not fall short of it.
        let minor = s
            .python
            .as_ref()
            .and_then(|p| p.version.split('.').nth(1)?.parse::<u32>().ok())
            .unwrap_or(0);
        if minor >= 15 {
            within(
                "releaser waiting_pct",
                releaser.waiting(),
                RELEASER_WAITING_PCT,
                tol,
            )?;
        } else {
            ensure!(
                releaser.waiting() <= RELEASER_WAITING_PCT + tol
                    && releaser.waiting() + releaser.released_pct >= RELEASER_WAITING_PCT - tol,
                "releaser waiting_pct {:.2} (+ released {:.2}), want waiting <= {:.2} + {tol:.2} \
                 <= waiting + released (waiting read from the futex: a runnable waiter counts as \
                 released)",
                releaser.waiting(),
                releaser.released_pct,
                RELEASER_WAITING_PCT
            );
        }
        for (what, t) in [("main", main), ("stdin-watch", watch)] {
            ensure!(
                t.idle_pct > 99.0 && t.held_pct == 0.0,
                "{what} idle_pct {:.2} held_pct {:.2}, want idle ~100 (blocked in read(2))",
                t.idle_pct,
                t.held_pct
            );
        }
        // The GIL is busy exactly while the duty thread holds it (+ microseconds).
        let busy = interp
            .gil_busy_pct
            .ok_or_else(|| anyhow!("interpreter 0: gil_busy_pct null"))?;
        within(
            "interpreter 0 gil_busy_pct",
            busy,
            50.0,
            duty_tolerance(s.duration_s, s.hz()),
        )?;
        Ok(())
    })();
    r.map(|()| line.clone())
        .with_context(|| format!("measured: {line}"))
}

// ------------------------------------------------------------------------------- the tests

/// samples/duty_cycle.py recorded for 4 s at 500 Hz: duty ~50 % held, releaser ~0 % held and
/// ~49 % waiting, main ~100 % idle, the GIL ~50 % busy.
/// Recording tests measure time shares of real workloads, whose own timing
/// stretches when the machine is overloaded (a 200 ms phase plus scheduling
/// delay). Running them one at a time keeps the load they put on a 2-core
/// machine, and so the ground truth, stable.
fn oncpu_line(stderr: &str) -> Result<String> {
    stderr
        .lines()
        .find(|l| l.starts_with("gilscope: on-CPU state: "))
        .map(str::to_string)
        .with_context(|| format!("stderr does not say where on-CPU states come from: {stderr}"))
}

#[test]
fn duty_cycle_fractions() {
    duty_cycle(false);
}

/// The same figures with on-CPU states from `/proc/TID/stat` at every sample (the fallback
/// where perf events are refused), and the header says so.
#[test]
fn duty_cycle_fractions_from_proc_stat() {
    duty_cycle(true);
}

fn duty_cycle(proc_stat: bool) {
    let _serial = serial();
    let name = if proc_stat {
        "duty_cycle_fractions_from_proc_stat"
    } else {
        "duty_cycle_fractions"
    };
    for_each_python(
        name,
        "any CPython 3.9+",
        |_| true,
        |py| {
            let rec = record_sample_with(py, "duty_cycle.py", &gil_env(py), |r| {
                let r = r.rate(500).secs(4.0);
                if proc_stat {
                    r.env("GILSCOPE_ONCPU", "stat")
                } else {
                    r
                }
            })?;
            let (target, trace, out) = (&rec.target, &rec.trace, &rec.output);
            let line = oncpu_line(&String::from_utf8_lossy(&out.stderr))?;
            // Root may always open switch events (CI runs as root); the fallback says so.
            // SAFETY: geteuid has no preconditions.
            let root = unsafe { libc::geteuid() } == 0;
            if proc_stat {
                ensure!(line == "gilscope: on-CPU state: /proc/TID/stat", "{line}");
            } else if root {
                ensure!(
                    line == "gilscope: on-CPU state: perf context-switch records",
                    "{line}"
                );
            }
            let (s, text) = summarize::<Summary>(trace)?;
            let line = with_summary(&text, {
                check_basics(&s, &target.ready)
                    .and_then(|()| {
                        ensure!(s.complete, "complete false for a finished recording");
                        ensure!(
                            (s.duration_s - 4.0).abs() < 0.25,
                            "duration_s {:.3}, asked 4",
                            s.duration_s
                        );
                        Ok(())
                    })
                    .and_then(|()| check_duty_cycle(&s, &target.ready))
            })?;
            println!("{name} [{}]: {line}", py.name);
            Ok(())
        },
    );
}

/// samples/subinterp_own_gil.py (3.12+) recorded for 3 s: each worker holds its own
/// sub-interpreter's GIL ~100 % and is attributed to that sub-interpreter, whose GIL is ~100 %
/// busy; the main GIL is held by the main interpreter's spinner, and only by main-interpreter
/// threads.
#[test]
fn own_gil_subinterpreters() {
    let _serial = serial();
    for_each_python(
        "own_gil_subinterpreters",
        "CPython 3.12+",
        |p| p.at_least(12),
        |py| {
            // Three spinning threads on this machine's cores: 200 Hz keeps the sampler mostly on
            // time.
            let rec = record_sample(py, "subinterp_own_gil.py", 200, 3.0)?;
            let (target, trace) = (&rec.target, &rec.trace);
            let (s, text) = summarize::<Summary>(trace)?;
            let ready = &target.ready;
            let mut lines = vec![s.headline()];
            let r = (|| -> Result<()> {
                check_basics(&s, ready)?;
                ensure!(s.complete, "complete false");
                let ids: Vec<i64> = s.interpreters.iter().map(|i| i.id).collect();
                let want: Vec<i64> = ready.interpreters.iter().map(|i| i.id).collect();
                ensure!(ids == want, "interpreters {ids:?}, the sample has {want:?}");
                ensure!(
                    s.gils.len() == 3,
                    "{} GILs, want 3 (each interpreter its own)",
                    s.gils.len()
                );
                for i in &s.interpreters {
                    ensure!(
                        i.own_gil && i.shares_gil_with.is_empty(),
                        "interpreter {}: own_gil {} shares_gil_with {:?}",
                        i.id,
                        i.own_gil,
                        i.shares_gil_with
                    );
                }
                let spinner = s.thread(ready.role("spinner")?.native_id)?;
                let main = s.thread(ready.role("main")?.native_id)?;
                let main_interp = s.interpreter(0)?;
                lines.push(format!(
                    "interpreter 0: GIL busy {:.1}; spinner {}; main {}",
                    main_interp.gil_busy_pct.unwrap_or(f64::NAN),
                    spinner.shares(),
                    main.shares()
                ));
                for w in ready.with_role("sub-spinner") {
                    let t = s.thread(w.native_id)?;
                    let i = s.interpreter(w.interpreter)?;
                    lines.push(format!(
                        "interpreter {} ({}): GIL busy {:.1}; worker {}",
                        i.id,
                        w.name,
                        i.gil_busy_pct.unwrap_or(f64::NAN),
                        t.shares()
                    ));
                }
                // The spinner is the only main-interpreter thread that wants the main GIL.
                ensure!(
                    spinner.held_pct > 90.0,
                    "main spinner held_pct {:.2}, want > 90",
                    spinner.held_pct
                );
                let busy0 = main_interp.gil_busy_pct.unwrap_or(f64::NAN);
                ensure!(
                    busy0 > 90.0,
                    "interpreter 0 gil_busy_pct {busy0:.2}, want > 90"
                );
                for w in ready.with_role("sub-spinner") {
                    let t = s.thread(w.native_id)?;
                    let i = s.interpreter(w.interpreter)?;
                    ensure!(
                        t.held_pct > 90.0,
                        "{} ({}) held_pct {:.2} of its own interpreter's GIL, want > 90",
                        w.name,
                        w.native_id,
                        t.held_pct
                    );
                    let busy = i.gil_busy_pct.unwrap_or(f64::NAN);
                    ensure!(
                        busy > 90.0,
                        "interpreter {} gil_busy_pct {busy:.2}, want > 90",
                        i.id
                    );
                    // Its GIL's hottest stack is the sub-interpreter's loop, in that interpreter.
                    let gil = &s.gils[i.gil];
                    ensure!(
                        gil.interpreters == [i.id],
                        "GIL #{} serves interpreters {:?}, want [{}]",
                        gil.index,
                        gil.interpreters,
                        i.id
                    );
                    let top = gil
                        .hot_stacks
                        .first()
                        .and_then(|h| h.frames.first())
                        .ok_or_else(|| anyhow!("GIL #{}: no hot stacks", gil.index))?;
                    ensure!(
                        base_name(&top.function) == "sub_spin" && top.interpreter == i.id,
                        "GIL #{}: hottest frame {} in interpreter {}, want sub_spin in {}",
                        gil.index,
                        top.function,
                        top.interpreter,
                        i.id
                    );
                }
                // Each GIL's held time is the held time of the threads of its interpreter(s):
                // no worker is counted on the main GIL, no main thread on a sub GIL.
                for gil in &s.gils {
                    let of_threads: f64 = s
                        .threads
                        .iter()
                        .filter(|t| t.interpreter.is_some_and(|i| gil.interpreters.contains(&i)))
                        .map(|t| t.held_pct / 100.0 * t.observed_s)
                        .sum();
                    ensure!(
                        (of_threads - gil.held_s).abs() <= 0.02 * s.duration_s,
                        "GIL #{} (interpreters {:?}) held {:.3} s, its threads held {:.3} s",
                        gil.index,
                        gil.interpreters,
                        gil.held_s,
                        of_threads
                    );
                }
                // After its ready line the main thread still needs the GIL a few times (to
                // create its pipe and call read), each time waiting up to a switch interval
                // (5 ms) for the spinner: measured up to 0.9 % waiting + 0.9 % released on a
                // loaded machine. Then it is blocked in read(2) for good.
                for t in [main, s.thread(ready.role("watchdog")?.native_id)?] {
                    ensure!(
                        t.held_pct < 1.0 && t.idle_pct > 95.0,
                        "{} held_pct {:.2} idle_pct {:.2}, want idle ~100",
                        t.name,
                        t.held_pct,
                        t.idle_pct
                    );
                }
                Ok(())
            })();
            let lines = lines.join("\n    ");
            with_summary(&text, r.with_context(|| format!("measured: {lines}")))?;
            println!("own_gil_subinterpreters [{}]: {lines}", py.name);
            Ok(())
        },
    );
}

/// samples/threads.py recorded for 3 s: the gil-holder (PyDLL usleep of 30 s) holds the GIL
/// ~100 %, the spinner waits for it (> 50 %: it cannot run at all) and never holds it; the
/// others are idle.
#[test]
fn threads_holder_and_waiter() {
    let _serial = serial();
    for_each_python(
        "threads_holder_and_waiter",
        "any CPython 3.9+",
        |_| true,
        |py| {
            let rec = record_sample(py, "threads.py", 500, 3.0)?;
            let (target, trace) = (&rec.target, &rec.trace);
            let (s, text) = summarize::<Summary>(trace)?;
            let ready = &target.ready;
            let holder = s.thread(ready.role("holder")?.native_id)?;
            let spinner = s.thread(ready.role("spinner")?.native_id)?;
            let busy = s.interpreter(0)?.gil_busy_pct.unwrap_or(f64::NAN);
            let line = format!(
                "{}\n    holder:  {}\n    spinner: {}\n    GIL busy {busy:.1}",
                s.headline(),
                holder.shares(),
                spinner.shares()
            );
            let r = (|| -> Result<()> {
                check_basics(&s, ready)?;
                ensure!(s.complete, "complete false");
                ensure!(
                    holder.held_pct > 99.0,
                    "gil-holder held_pct {:.2}, want ~100",
                    holder.held_pct
                );
                ensure!(busy > 99.0, "GIL busy {busy:.2}, want ~100");
                ensure!(
                    spinner.waiting() > 50.0,
                    "spinner waiting_pct {:.2}, want > 50",
                    spinner.waiting()
                );
                ensure!(
                    spinner.held_pct < 5.0,
                    "spinner held_pct {:.2}, want < 5",
                    spinner.held_pct
                );
                for role in ["releaser", "idle", "main", "watchdog"] {
                    let t = s.thread(ready.role(role)?.native_id)?;
                    ensure!(
                        t.held_pct == 0.0 && t.idle_pct > 99.0,
                        "{role} {}: held_pct {:.2} idle_pct {:.2}, want idle ~100",
                        t.tid,
                        t.held_pct,
                        t.idle_pct
                    );
                }
                Ok(())
            })();
            with_summary(&text, r.with_context(|| format!("measured: {line}")))?;
            println!("threads_holder_and_waiter [{}]: {line}", py.name);
            Ok(())
        },
    );
}

/// The first child process of `pid` (from /proc), waiting up to 10 s for one.
fn first_child(pid: u32) -> Result<u32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let children =
            fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        if let Some(c) = children.split_whitespace().next() {
            return c.parse().context("parsing /proc/PID/task/PID/children");
        }
        ensure!(
            Instant::now() < deadline,
            "process {pid} started no child within 10 s"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// `gilscope record --mode sampling -o F --duration 4 -- PYTHON samples/duty_cycle.py`: exits
/// 0, ending the command (SIGTERM: status 143 on stderr); the file is complete, of the launched
/// PID (read from /proc while gilscope runs), with the command line; the sample printed its
/// ready line during the recording, its threads are there, and the duty thread's share over
/// the time it was seen is right, within the tolerance that window gives (a slow start leaves a
/// shorter window and a wider tolerance, never a skipped check).
#[test]
fn launch_command() {
    let _serial = serial();
    for_each_python(
        "launch_command",
        "any CPython 3.9+",
        |_| true,
        |py| {
            let dir = Scratch::new("launch", py)?;
            let trace = dir.path("launch.trace");
            let argv = sample_argv(py, "duty_cycle.py")?;
            let o = trace.to_string_lossy().into_owned();
            let mut args = vec![
                "record",
                "--mode",
                "sampling",
                "-o",
                &o,
                "--rate",
                "500",
                "--duration",
                "4",
                "--",
            ];
            args.extend(argv.iter().map(String::as_str));
            // stdin stays an open pipe: the sample inherits it and exits at EOF.
            let mut rec = Recorder::spawn(&args, &gil_env(py))?;
            let launched = first_child(rec.child.id());
            let (status, stderr) = rec.wait(GILSCOPE_TIMEOUT)?;
            let ready_line = rec.first_line(Duration::from_millis(500)).ok();
            let r = (|| -> Result<String> {
                let launched = launched?;
                ensure!(status.success(), "gilscope record -- ... exited {status}");
                ensure!(!stderr.contains("panicked"), "gilscope panicked");
                ensure!(
                    stderr.contains("status 143"),
                    "stderr does not report the command's exit status 143 (ended by SIGTERM)"
                );
                check_sampling_line(&stderr)?;
                let (s, text) = summarize::<Summary>(&trace)?;
                with_summary(&text, {
                    (|| -> Result<String> {
                        ensure!(
                            s.target.pid == launched,
                            "target.pid {}, the launched process is {launched}",
                            s.target.pid
                        );
                        ensure!(s.complete, "complete false");
                        ensure!(
                            s.target.command.as_ref() == Some(&argv),
                            "target.command {:?}, want {argv:?}",
                            s.target.command
                        );
                        ensure!(
                            (s.duration_s - 4.0).abs() < 0.25,
                            "duration_s {:.3}, asked 4",
                            s.duration_s
                        );
                        let line = ready_line.as_ref().context(
                            "the sample printed no ready line during the 4 s it was recorded",
                        )?;
                        let ready: Ready = serde_json::from_str(line)
                            .with_context(|| format!("ready line {line:?}"))?;
                        ensure!(
                            ready.pid == launched,
                            "the sample's pid {} is not the launched process {launched}",
                            ready.pid
                        );
                        check_basics(&s, &ready)?;
                        let duty = s.thread(ready.role("duty")?.native_id)?;
                        // Two whole periods at least, or the share means little.
                        ensure!(
                            duty.observed_s >= 2.0 * PERIOD_S,
                            "the duty thread was seen for {:.2} s only (the sample started late)",
                            duty.observed_s
                        );
                        let tol = duty_tolerance(duty.observed_s, s.hz());
                        within("duty held_pct", duty.held_pct, 50.0, tol)?;
                        Ok(format!(
                            "pid {launched} ok; {}; duty {} (±{tol:.1})",
                            s.headline(),
                            duty.shares()
                        ))
                    })()
                })
            })();
            let line = r.with_context(|| format!("gilscope stderr:\n{stderr}"))?;
            println!("launch_command [{}]: {line}", py.name);
            Ok(())
        },
    );
}

/// The ready line of samples/parent_child.py: the parent's, plus the child's.
#[derive(Debug, Deserialize)]
struct ParentReady {
    #[serde(flatten)]
    parent: Ready,
    child: Ready,
}

/// `gilscope record -o D/P.trace --subprocesses -- PYTHON samples/parent_child.py`, stopped by
/// SIGINT 2 s after the parent's ready line (so after the child is ready, however long the
/// interpreter takes to start): gilscope exits 0; the parent is recorded into P.trace and its
/// Python child into P.<childpid>.trace; both are complete, and the child's spinner mostly holds
/// the child's GIL and is never idle.
#[test]
fn launch_subprocesses() {
    let _serial = serial();
    for_each_python(
        "launch_subprocesses",
        "any CPython 3.9+",
        |_| true,
        |py| {
            let dir = Scratch::new("subproc", py)?;
            let trace = dir.path("P.trace");
            let argv = sample_argv(py, "parent_child.py")?;
            let o = trace.to_string_lossy().into_owned();
            let mut args = vec![
                "record",
                // Sampling: the 2 s window must not be eaten by exact mode's symbol
                // resolution (up to ~1.7 s in a debug build).
                "--mode",
                "sampling",
                "-o",
                &o,
                "--rate",
                "500",
                "--duration",
                "60",
                "--subprocesses",
                "--",
            ];
            args.extend(argv.iter().map(String::as_str));
            let mut rec = Recorder::spawn(&args, &gil_env(py))?;
            let ready_line = rec.first_line(READY_TIMEOUT);
            if ready_line.is_ok() {
                thread::sleep(Duration::from_secs(2));
            }
            rec.signal(libc::SIGINT);
            let (status, stderr) = rec.wait(GILSCOPE_TIMEOUT)?;
            let ready_line = ready_line.with_context(|| format!("gilscope stderr:\n{stderr}"))?;
            let ready: ParentReady = serde_json::from_str(&ready_line)
                .with_context(|| format!("ready line {ready_line:?}"))?;
            let r = (|| -> Result<String> {
                ensure!(status.success(), "gilscope exited {status}");
                ensure!(!stderr.contains("panicked"), "gilscope panicked");
                let child_trace = dir.path(&format!("P.{}.trace", ready.child.pid));
                let mut names: Vec<String> = fs::read_dir(dir.root())?
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                ensure!(
                    trace.exists() && child_trace.exists(),
                    "files {names:?}, want P.trace and P.{}.trace",
                    ready.child.pid
                );
                let (s, text) = summarize::<Summary>(&trace)?;
                with_summary(&text, {
                    check_basics(&s, &ready.parent).and_then(|()| {
                        ensure!(s.complete, "parent file: complete false");
                        ensure!(
                            s.target.command.as_ref() == Some(&argv),
                            "target.command {:?}, want {argv:?}",
                            s.target.command
                        );
                        Ok(())
                    })
                })
                .context("parent file")?;
                let (c, ctext) = summarize::<Summary>(&child_trace)?;
                let spinner = c.thread(ready.child.role("spinner")?.native_id)?;
                with_summary(&ctext, {
                    check_basics(&c, &ready.child).and_then(|()| {
                        ensure!(c.complete, "child file: complete false");
                        ensure!(
                            c.target.command.is_none(),
                            "child file: target.command {:?}, want null (not launched)",
                            c.target.command
                        );
                        // The spinner wants the GIL all the time (so it is never idle) and
                        // gets it whenever the child's main thread, still starting up when the
                        // child's recording began, does not hold it. (The child's GIL busy
                        // share is not 100: before the spinner starts, the main thread releases
                        // the GIL for its file reads.)
                        ensure!(
                            spinner.held_pct > 50.0 && spinner.idle_pct < 3.0,
                            "child spinner held_pct {:.2} idle_pct {:.2}, want mostly held, \
                             never idle",
                            spinner.held_pct,
                            spinner.idle_pct
                        );
                        Ok(())
                    })
                })
                .context("child file")?;
                Ok(format!(
                    "files {names:?}; parent {}; child {}; child spinner {}",
                    s.headline(),
                    c.headline(),
                    spinner.shares()
                ))
            })();
            let line = r.with_context(|| format!("gilscope stderr:\n{stderr}"))?;
            println!("launch_subprocesses [{}]: {line}", py.name);
            Ok(())
        },
    );
}

/// `gilscope record --pid P` on duty_cycle, SIGKILLed 2.5 s after its first sample (the trace's
/// header is written with it): `summary` exits 0, reports at least 1.5 s (chunks are written at
/// least once a second), says the recording did not finish cleanly, and the duty fractions
/// over what was written are right. Then SIGINT 2.5 s after the first sample: gilscope exits 0,
/// the file is complete and covers those 2.5 s, and no more than gilscope ran.
#[test]
fn killed_and_interrupted_recorder() {
    let _serial = serial();
    for_each_python(
        "killed_and_interrupted_recorder",
        "any CPython 3.9+",
        |_| true,
        |py| {
            let dir = Scratch::new("kill", py)?;
            let target = Target::start_with_env(py, "duty_cycle.py", &gil_env(py))?;
            let pid = target.pid().to_string();
            let mut lines = Vec::new();
            for (sig, name) in [(libc::SIGKILL, "SIGKILL"), (libc::SIGINT, "SIGINT")] {
                let trace = dir.path(&format!("{name}.trace"));
                let o = trace.to_string_lossy().into_owned();
                let mut rec =
                    // Sampling: exact mode's setup (symbol resolution, up to ~1.7 s in a debug
                    // build) would eat into the 2.5 s this test times.
                    Recorder::spawn(
                        &[
                            "record", "--mode", "sampling", "--pid", &pid, "-o", &o, "--rate",
                            "500",
                        ],
                        &[],
                    )?;
                let spawned = Instant::now();
                // Timed from the first sample, however long gilscope took to attach.
                let started = wait_recording_started(&trace, &mut rec)?;
                thread::sleep(Duration::from_millis(2500));
                let recorded = started.elapsed().as_secs_f64();
                rec.signal(sig);
                let (status, stderr) = rec.wait(Duration::from_secs(20))?;
                let ran = spawned.elapsed().as_secs_f64();
                let (s, text) = summarize::<Summary>(&trace)
                    .with_context(|| format!("after {name}; gilscope stderr:\n{stderr}"))?;
                let r = (|| -> Result<String> {
                    check_basics(&s, &target.ready)?;
                    if sig == libc::SIGKILL {
                        ensure!(
                            !s.complete,
                            "complete true for a file whose recorder was SIGKILLed"
                        );
                        ensure!(
                            text.contains("did not finish cleanly"),
                            "the text summary does not say the recording did not finish cleanly"
                        );
                        ensure!(
                            s.duration_s >= recorded - 1.0,
                            "duration_s {:.3} after {recorded:.2} s of recording, want >= {:.2} \
                             (a chunk at least once a second)",
                            s.duration_s,
                            recorded - 1.0
                        );
                    } else {
                        ensure!(status.success(), "gilscope exited {status} on SIGINT");
                        ensure!(s.complete, "complete false after SIGINT");
                        ensure!(s.damage.is_none(), "damage {:?} after SIGINT", s.damage);
                        check_sampling_line(&stderr)?;
                        // The first sample came before `started`; the last one just before
                        // the signal (a loaded machine can delay it: 0.25 s allowed). The
                        // last sample stands for one period after it: up to 20 ms once the
                        // overhead budget has lowered the rate to its floor (50 Hz).
                        ensure!(
                            s.duration_s >= recorded - 0.25 && s.duration_s <= ran + 0.02,
                            "duration_s {:.3} for a recording stopped {recorded:.2} s after its \
                             first sample, by a gilscope that ran {ran:.2} s",
                            s.duration_s
                        );
                    }
                    let m = check_duty_cycle(&s, &target.ready)?;
                    Ok(format!(
                        "{name}: gilscope {status}, damage {:?}, {m}",
                        s.damage
                    ))
                })();
                lines.push(with_summary(
                    &text,
                    r.with_context(|| format!("after {name}; gilscope stderr:\n{stderr}")),
                )?);
            }
            println!(
                "killed_and_interrupted_recorder [{}]: {}",
                py.name,
                lines.join("\n  ")
            );
            Ok(())
        },
    );
}

/// duty_cycle ended by the test (EOF on its stdin: it exits 0) 1.5 s after gilscope's first
/// sample: `record --pid P --duration 60` ends by itself when the target exits, exits 0, says
/// so, and the file is complete and covers at least those 1.5 s, and at most what gilscope ran.
#[test]
fn target_exits_during_recording() {
    let _serial = serial();
    for_each_python(
        "target_exits_during_recording",
        "any CPython 3.9+",
        |_| true,
        |py| {
            let dir = Scratch::new("exit", py)?;
            let mut target = Target::start_with_env(py, "duty_cycle.py", &gil_env(py))?;
            let trace = dir.path("exit.trace");
            let o = trace.to_string_lossy().into_owned();
            let pid = target.pid().to_string();
            let spawned = Instant::now();
            let mut rec = Recorder::spawn(
                &[
                    "record",
                    "--mode",
                    "sampling",
                    "--pid",
                    &pid,
                    "-o",
                    &o,
                    "--rate",
                    "500",
                    "--duration",
                    "60",
                ],
                &[],
            )?;
            let started = wait_recording_started(&trace, &mut rec)?;
            thread::sleep(Duration::from_millis(1500));
            let recorded = started.elapsed().as_secs_f64();
            let closed = Instant::now();
            target.close_stdin();
            let (status, stderr) = rec.wait(GILSCOPE_TIMEOUT)?;
            let took = closed.elapsed().as_secs_f64();
            let ran = spawned.elapsed().as_secs_f64();
            let exited = target.wait_exit(Duration::from_secs(5));
            let (s, text) = summarize::<Summary>(&trace)?;
            let r = (|| -> Result<String> {
                ensure!(
                    exited.is_some_and(|st| st.success()),
                    "the sample did not exit 0 at EOF on its stdin: {exited:?}"
                );
                ensure!(status.success(), "gilscope exited {status}");
                check_sampling_line(&stderr)?;
                ensure!(
                    took < 10.0,
                    "gilscope ran {took:.1} s after the target's exit: it did not stop by itself"
                );
                ensure!(
                    stderr.contains("target exited"),
                    "stderr does not say the target exited"
                );
                ensure!(s.complete, "complete false");
                ensure!(s.damage.is_none(), "damage {:?}", s.damage);
                // The first sample came before `started`, the last one after the EOF (0.25 s
                // allowed for a sample delayed on a loaded machine).
                ensure!(
                    s.duration_s >= recorded - 0.25 && s.duration_s <= ran,
                    "duration_s {:.3}: the target was recorded {recorded:.2} s before it was \
                     told to exit, by a gilscope that ran {ran:.2} s",
                    s.duration_s
                );
                // The one reading that races the exit may fail (counted, not a torn file).
                if s.sample_errors > 0 {
                    println!(
                        "target_exits_during_recording [{}]: note: {} failed sample(s) at the \
                         exit: {:?}",
                        py.name,
                        s.sample_errors,
                        s.errors
                            .iter()
                            .map(|e| e.message.as_str())
                            .collect::<Vec<_>>()
                    );
                }
                ensure!(s.sample_errors <= 1, "{} failed samples", s.sample_errors);
                let mut quiet = s.clone();
                quiet.sample_errors = 0;
                check_basics(&quiet, &target.ready)?;
                Ok(format!(
                    "recorded {}, gilscope stopped {took:.2} s after the exit",
                    s.headline()
                ))
            })();
            let line = with_summary(
                &text,
                r.with_context(|| format!("gilscope stderr:\n{stderr}")),
            )?;
            println!("target_exits_during_recording [{}]: {line}", py.name);
            Ok(())
        },
    );
}

/// samples/threads.py recorded for 1.5 s with `--blocking` (the target paused for each
/// sample) and with `--no-stacks`: the same truths (the holder holds the GIL throughout, the
/// idle thread never does); with stacks the hottest one is the holder's `hold_gil`, without
/// no stack has a frame; after `--blocking` no thread of the target is left stopped.
#[test]
fn record_blocking_and_no_stacks() {
    let _serial = serial();
    for_each_python(
        "record_blocking_and_no_stacks",
        "any CPython 3.9+",
        |_| true,
        |py| {
            let dir = Scratch::new("opts", py)?;
            let target = Target::start_with_env(py, "threads.py", &gil_env(py))?;
            let ready = &target.ready;
            let holder = ready.role("holder")?;
            let idle = ready.role("idle")?;
            let pid = target.pid();
            let mut lines = Vec::new();
            for opt in ["--blocking", "--no-stacks"] {
                let trace = dir.path(&format!("{opt}.trace"));
                Record::sampling(pid, &trace)
                    .args(&[opt])
                    .rate(200)
                    .secs(1.5)
                    .run()?;
                let (s, text) = summarize::<Summary>(&trace)?;
                let r = (|| -> Result<String> {
                    check_basics(&s, ready)?;
                    let h = s.thread(holder.native_id)?;
                    let i = s.thread(idle.native_id)?;
                    ensure!(h.held_pct > 95.0, "{opt}: holder {}", h.shares());
                    ensure!(i.held_pct == 0.0, "{opt}: idle thread {}", i.shares());
                    let stacks: Vec<&SummaryStack> =
                        s.gils.iter().flat_map(|g| &g.hot_stacks).collect();
                    if opt == "--no-stacks" {
                        // Held time is still there, under "(no Python frames)".
                        ensure!(
                            stacks.iter().all(|st| st.frames.is_empty()),
                            "{opt}: hot stacks with frames: {:?}",
                            stacks.iter().map(|st| st.frames.len()).collect::<Vec<_>>()
                        );
                    } else {
                        let top = stacks
                            .first()
                            .and_then(|st| st.frames.first())
                            .map(|f| base_name(&f.function).to_string());
                        ensure!(
                            top.as_deref() == holder.function.as_deref(),
                            "{opt}: hottest held stack starts {top:?}, want {:?}",
                            holder.function
                        );
                        for t in &ready.threads {
                            let st = fs::read_to_string(format!(
                                "/proc/{pid}/task/{}/stat",
                                t.native_id
                            ))
                            .unwrap_or_default();
                            let state = st
                                .rfind(')')
                                .and_then(|i| st[i + 1..].split_whitespace().next());
                            ensure!(
                                !matches!(state, Some("t" | "T")),
                                "{opt}: thread {} ({}) left stopped: {state:?}",
                                t.native_id,
                                t.role
                            );
                        }
                    }
                    Ok(format!("{opt}: {}; holder {}", s.headline(), h.shares()))
                })();
                lines.push(with_summary(&text, r)?);
            }
            println!(
                "record_blocking_and_no_stacks [{}]: {}",
                py.name,
                lines.join("\n  ")
            );
            Ok(())
        },
    );
}
