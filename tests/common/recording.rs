//! The steps the real-process tests share around a sample: its environment, a scratch folder,
//! `gilscope record` of it, and `gilscope summary` of the trace. A test states its workload (a
//! sample and how to record it) and its assertions; [`record_sample`] does the rest, and
//! [`record_gated`] for a workload recorded whole (from before its work starts to its exit).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde::de::DeserializeOwned;

use super::{
    gilscope, output_with_timeout, short, Python, Target, GILSCOPE_TIMEOUT, READY_TIMEOUT,
};

/// Free-threaded builds run the GIL samples with the GIL forced on (`PYTHON_GIL=1`).
pub fn gil_env(py: &Python) -> Vec<(&'static str, &'static str)> {
    if py.free_threaded {
        vec![("PYTHON_GIL", "1")]
    } else {
        Vec::new()
    }
}

/// Held by [`serial`]: the lock is released when it is dropped (its file closed).
#[must_use = "the lock is released when the guard is dropped"]
pub struct Serial(#[allow(dead_code)] std::fs::File);

/// One lock per test file (test binary), for the tests whose workloads must not overlap
/// (they spin the CPUs, or measure shares a neighbour would disturb): an exclusive `flock` of
/// `$TMPDIR/gilscope-tests-serial-<binary>.lock`, so it holds across processes as well as
/// threads — cargo-nextest (scripts/test) runs every test in a process of its own, and test
/// files side by side. A failed or killed test leaves nothing locked (its file is closed).
pub fn serial() -> Serial {
    let exe = std::env::current_exe().unwrap_or_default();
    let stem = exe
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    // target/debug/deps/record-1c712aa9efba0adb: the test file's name before cargo's hash.
    let name = match stem.rsplit_once('-') {
        Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_owned(),
        _ => stem,
    };
    let path = std::env::temp_dir().join(format!("gilscope-tests-serial-{name}.lock"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("cannot open the test lock {}: {e}", path.display()));
    use std::os::fd::AsRawFd as _;
    loop {
        // SAFETY: flock on a file descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Serial(file);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            panic!("cannot lock {}: {e}", path.display());
        }
    }
}

/// A scratch directory for trace files and exports, removed on drop.
pub struct Scratch(PathBuf);

impl Scratch {
    /// `$TMPDIR/gilscope-TEST-PID-PYTHON-N`, empty.
    pub fn new(test: &str, py: &Python) -> Result<Scratch> {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "gilscope-{test}-{}-{}-{}",
            std::process::id(),
            py.name,
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Scratch(dir))
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `gilscope record --mode MODE --pid PID -o TRACE` and whatever else a test asks for.
#[derive(Debug, Clone)]
pub struct Record {
    mode: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Record {
    /// `--mode sampling`: the sampler whatever the machine allows (on a root machine `auto`
    /// would pick exact mode, tested on its own).
    pub fn sampling(pid: u32, trace: &Path) -> Record {
        Record::mode("sampling", pid, trace)
    }

    pub fn mode(mode: &str, pid: u32, trace: &Path) -> Record {
        Record {
            mode: mode.to_owned(),
            args: vec![
                "--pid".into(),
                pid.to_string(),
                "-o".into(),
                trace.to_string_lossy().into_owned(),
            ],
            env: Vec::new(),
        }
    }

    /// `--rate HZ`.
    pub fn rate(self, hz: u32) -> Record {
        self.args(&["--rate", &hz.to_string()])
    }

    /// `--duration SECS`.
    pub fn secs(self, secs: f64) -> Record {
        self.args(&["--duration", &secs.to_string()])
    }

    pub fn args(mut self, args: &[&str]) -> Record {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// An environment variable of gilscope.
    pub fn env(mut self, key: &str, value: &str) -> Record {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The command line, for messages.
    pub fn describe(&self) -> String {
        format!(
            "gilscope record --mode {} {}",
            self.mode,
            self.args.join(" ")
        )
    }

    /// Run it to its end, whatever its exit (the caller checks).
    pub fn output(&self) -> Result<Output> {
        let mut argv = vec!["record", "--mode", &self.mode];
        argv.extend(self.args.iter().map(String::as_str));
        let mut cmd = gilscope(&argv);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        output_with_timeout(cmd, GILSCOPE_TIMEOUT)
    }

    /// Run it: it must exit 0 without a panic and, in sampling mode, say it samples.
    pub fn run(&self) -> Result<Output> {
        let out = self.output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.success(),
            "{} failed ({}): {}",
            self.describe(),
            out.status,
            stderr.trim_end()
        );
        ensure!(!stderr.contains("panicked"), "gilscope panicked: {stderr}");
        if self.mode == "sampling" {
            check_sampling_line(&stderr)?;
        }
        Ok(out)
    }
}

/// The line `gilscope: mode: sampling (--mode sampling)` is on `stderr`.
pub fn check_sampling_line(stderr: &str) -> Result<()> {
    ensure!(
        stderr
            .lines()
            .any(|l| l.starts_with("gilscope: mode: sampling (--mode sampling)")),
        "stderr does not say `gilscope: mode: sampling (--mode sampling)`: {stderr}"
    );
    Ok(())
}

/// `gilscope summary TRACE --json`, parsed as `T` (the fields a test reads, or a
/// `serde_json::Value`); must exit 0 without a panic.
pub fn summary_json<T: DeserializeOwned>(trace: &Path) -> Result<T> {
    let p = trace.to_string_lossy().into_owned();
    let out = output_with_timeout(gilscope(&["summary", &p, "--json"]), GILSCOPE_TIMEOUT)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success(),
        "gilscope summary {p} --json failed ({}): {}",
        out.status,
        stderr.trim_end()
    );
    ensure!(
        !stderr.contains("panicked"),
        "gilscope summary panicked: {stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&stdout).with_context(|| {
        format!(
            "gilscope summary --json output is not the documented shape: {}",
            short(&stdout, 2000)
        )
    })
}

/// `gilscope summary TRACE` (text; then its stderr), for failure messages; must exit 0.
pub fn summary_text(trace: &Path) -> Result<String> {
    let p = trace.to_string_lossy().into_owned();
    let out = output_with_timeout(gilscope(&["summary", &p]), GILSCOPE_TIMEOUT)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success(),
        "gilscope summary {p} failed ({}): {}",
        out.status,
        stderr.trim_end()
    );
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr
    ))
}

/// [`summary_json`] and [`summary_text`].
pub fn summarize<T: DeserializeOwned>(trace: &Path) -> Result<(T, String)> {
    Ok((summary_json(trace)?, summary_text(trace)?))
}

/// A sample recorded by [`record_sample`]: still running, its trace in a scratch folder.
pub struct Recorded {
    pub target: Target,
    pub trace: PathBuf,
    /// What `record` printed.
    pub output: Output,
    /// Holds the trace; removed on drop.
    pub dir: Scratch,
}

/// Start `samples/FILE` on `py` (with [`gil_env`]) and record it in sampling mode for `secs`
/// at `rate` Hz ([`Record::run`]).
pub fn record_sample(py: &Python, file: &str, rate: u32, secs: f64) -> Result<Recorded> {
    record_sample_with(py, file, &gil_env(py), |r| r.rate(rate).secs(secs))
}

/// Start `samples/FILE` on `py` with `env` and record it ([`Record::run`]) as `how` makes the
/// recording from `--mode sampling --pid PID -o TRACE`.
pub fn record_sample_with(
    py: &Python,
    file: &str,
    env: &[(&str, &str)],
    how: impl FnOnce(Record) -> Record,
) -> Result<Recorded> {
    let name = file.trim_end_matches(".py");
    let dir = Scratch::new(name, py)?;
    let target = Target::start_with_env(py, file, env)?;
    let trace = dir.path(&format!("{name}.trace"));
    let output = how(Record::sampling(target.pid(), &trace)).run()?;
    Ok(Recorded {
        target,
        trace,
        output,
        dir,
    })
}

// ------------------------------------------------------------------- gated workloads

/// When a gated workload ([`record_gated`]) is ready to be attached to.
pub enum ReadyWhen {
    /// Its first line on stdout (a ready line) has come.
    StdoutLine,
    /// A line on its stderr starting with this has come.
    StderrLine(&'static str),
}

/// What a gated workload and its recorder wrote.
#[derive(Debug)]
pub struct Gated {
    pub pid: u32,
    /// The workload's first stdout line, with [`ReadyWhen::StdoutLine`].
    pub ready_line: Option<String>,
    /// The rest of the workload's stdout.
    pub stdout: String,
    pub stderr: String,
    /// `gilscope record`'s stderr.
    pub recorder: String,
}

impl Gated {
    /// The workload's last line of JSON on stdout: what it measured.
    pub fn result<T: DeserializeOwned>(&self) -> Result<T> {
        let line = self
            .stdout
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .with_context(|| {
                format!(
                    "the workload printed no JSON line; stdout {:?}, stderr:\n{}",
                    self.stdout, self.stderr
                )
            })?;
        serde_json::from_str(line).with_context(|| format!("the workload's line {line:?}"))
    }
}

/// A process group, killed on drop.
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            // SAFETY: kill(2) of the process group this harness created for the child.
            unsafe {
                libc::kill(-(self.0.id() as libc::pid_t), libc::SIGKILL);
            }
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

impl Group {
    fn wait_exit(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.0.try_wait()? {
                return Ok(Some(s));
            }
            if Instant::now() > deadline {
                return Ok(None);
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The lines of a pipe, on a channel: a thread reads them until EOF.
fn line_channel(r: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Lines from `rx` into `kept` until one satisfies `until` (returned, and kept too) or
/// `deadline`.
fn line_until(
    rx: &mpsc::Receiver<String>,
    kept: &mut Vec<String>,
    deadline: Instant,
    until: impl Fn(&str) -> bool,
) -> Option<String> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).ok()?;
        kept.push(line.clone());
        if until(&line) {
            return Some(line);
        }
    }
}

/// The lines left in `rx` once its writer exited (bounded, should a grandchild keep the pipe).
fn rest(rx: &mpsc::Receiver<String>, kept: &mut Vec<String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Ok(l) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        kept.push(l);
    }
    kept.join("\n")
}

/// Records a gated workload, whole: a program that starts its work when a line comes on its
/// stdin (`go`) and exits when done. `workload` is started (its own process group, killed if
/// the test fails); once it is `ready`, `gilscope record --pid PID RECORD…` attaches; once
/// record says it is recording (it samples from then on), the workload is told to go; record
/// stops when the workload exits. Fails when either does not finish in time, or record fails
/// or panics.
pub fn record_gated(
    mut workload: Command,
    what: &str,
    ready: ReadyWhen,
    record: &[&str],
) -> Result<Gated> {
    workload
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = workload
        .spawn()
        .with_context(|| format!("{what}: spawning {workload:?}"))?;
    let mut go = child.stdin.take().context("the workload's stdin")?;
    let out = line_channel(child.stdout.take().context("the workload's stdout")?);
    let err = line_channel(child.stderr.take().context("the workload's stderr")?);
    let mut w = Group(child);
    let pid = w.0.id();
    let (mut stdout, mut stderr, mut recorder) = (Vec::new(), Vec::new(), Vec::new());
    let deadline = Instant::now() + READY_TIMEOUT;
    let ready_line = match ready {
        ReadyWhen::StdoutLine => {
            let l = line_until(&out, &mut Vec::new(), deadline, |_| true);
            if l.is_none() {
                bail!(
                    "{what}: no ready line; stderr:\n{}",
                    rest(&err, &mut stderr)
                );
            }
            l
        }
        ReadyWhen::StderrLine(prefix) => {
            if line_until(&err, &mut stderr, deadline, |l| l.starts_with(prefix)).is_none() {
                bail!(
                    "{what}: never said {prefix:?}; stderr:\n{}",
                    stderr.join("\n")
                );
            }
            None
        }
    };

    let pid_arg = pid.to_string();
    let mut argv = vec!["record", "--pid", &pid_arg];
    argv.extend(record);
    let mut rec = gilscope(&argv);
    rec.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut rchild = rec.spawn().context("spawning gilscope record")?;
    let rerr = line_channel(rchild.stderr.take().context("gilscope record's stderr")?);
    let mut r = Group(rchild);
    let recording = line_until(
        &rerr,
        &mut recorder,
        Instant::now() + GILSCOPE_TIMEOUT,
        |l| l.starts_with("gilscope: recording process"),
    );
    if recording.is_none() {
        bail!(
            "gilscope {} never said it records; its stderr:\n{}",
            argv.join(" "),
            rest(&rerr, &mut recorder)
        );
    }
    go.write_all(b"go\n")
        .and_then(|()| go.flush())
        .with_context(|| format!("telling {what} to go"))?;
    let status = r.wait_exit(GILSCOPE_TIMEOUT)?;
    let recorder = rest(&rerr, &mut recorder);
    drop(go);
    let exited = w.wait_exit(Duration::from_secs(10))?;
    drop(w);
    let gated = Gated {
        pid,
        ready_line,
        stdout: rest(&out, &mut stdout),
        stderr: rest(&err, &mut stderr),
        recorder,
    };
    let Some(status) = status else {
        bail!(
            "gilscope record did not stop within {} s after the go ({what} {}); its stderr:\n{}",
            GILSCOPE_TIMEOUT.as_secs(),
            if exited.is_some() {
                "exited"
            } else {
                "still ran"
            },
            gated.recorder
        );
    };
    ensure!(
        status.success() && !gated.recorder.contains("panicked"),
        "gilscope record exited {status}; its stderr:\n{}",
        gated.recorder
    );
    Ok(gated)
}
