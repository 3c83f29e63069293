//! Shared harness of the integration tests: the CPython interpreters to test against, the
//! sample workloads in `samples/` (started as real processes) and `gilscope` itself.
//!
//! Interpreters come from the manifest written by `scripts/provision-pythons`
//! (`$GILSCOPE_PYTHONS_MANIFEST`, default `/var/cache/gilscope-pythons/manifest.json`). When the
//! variable is set explicitly (scripts/test and CI do) the file must exist. Without it and
//! without the default file, the pyenv builds under `~/.pyenv/versions/` are used.
//!
//! Every test runs on each applicable interpreter ([`for_each_python`]), prints which ones it
//! ran on, and fails at the end with the failures of all of them.

#![allow(dead_code)] // each test binary uses its own subset

use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use gilscope::model::Snapshot;
use serde::Deserialize;

mod recording;
#[allow(unused_imports)] // each test binary uses its own subset
pub use recording::*;

pub const MANIFEST_ENV: &str = "GILSCOPE_PYTHONS_MANIFEST";
pub const DEFAULT_MANIFEST: &str = "/var/cache/gilscope-pythons/manifest.json";
/// pyenv builds used when there is no manifest.
pub const FALLBACK_PYENV: &[&str] = &["3.9.18", "3.10.13", "3.11.7", "3.12.1", "3.13.0"];

/// How long a sample may take to print its ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one `gilscope` run may take before the test gives up on it.
pub const GILSCOPE_TIMEOUT: Duration = Duration::from_secs(60);

pub fn repo_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn samples_dir() -> PathBuf {
    repo_dir().join("samples")
}

pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// The file every skip is appended to (set by scripts/test, which counts and lists them).
pub const SKIP_LOG_ENV: &str = "GILSCOPE_SKIP_LOG";

/// The running test's full name, `binary::test` (libtest names each test's thread after it).
pub fn test_name(fallback: &str) -> String {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|s| match s.rsplit_once('-') {
            // Cargo names test binaries `NAME-HASH`.
            Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_string(),
            _ => s,
        })
        .unwrap_or_default();
    let test = thread::current()
        .name()
        .filter(|n| *n != "main")
        .map(str::to_string)
        .unwrap_or_else(|| fallback.to_string());
    format!("{binary}::{test}")
}

/// Skip the running test: what it needs (`why`) is missing on this machine.
///
/// Every precondition of the suite is one CI provides (root, the uprobe PMU, tmux, setpriv, the
/// provisioned interpreters), so under `CI` a skip is a failure: this panics. Otherwise it
/// prints `NAME: SKIPPED: why` and appends the same line to `$GILSCOPE_SKIP_LOG`, from which
/// scripts/test counts and lists the skips (libtest hides the output of passing tests). The
/// caller returns right after.
pub fn skip(fallback_name: &str, why: &str) {
    let name = test_name(fallback_name);
    let line = format!("{name}: SKIPPED: {}", why.replace('\n', " "));
    if in_ci() {
        panic!("{line} (CI is set: CI provides this precondition, so the skip fails the run)");
    }
    println!("{line}");
    if let Some(path) = std::env::var_os(SKIP_LOG_ENV).filter(|p| !p.is_empty()) {
        use std::io::Write as _;
        // One write(2) of one short line to an O_APPEND file: test processes running in
        // parallel do not interleave.
        let r = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
        if let Err(e) = r {
            panic!(
                "{line}; and cannot record it in {}: {e}",
                Path::new(&path).display()
            );
        }
    }
}

// ------------------------------------------------------------------------------ interpreters

/// One interpreter of the manifest.
#[derive(Debug, Clone, Deserialize)]
pub struct Python {
    /// "pyenv-3.12.1", "sid-3.14", "freethreaded-3.13t".
    pub name: String,
    /// "3.12.1"
    pub version: String,
    pub minor: u32,
    pub free_threaded: bool,
    /// The command line that starts the interpreter (may begin with `chroot ROOT`).
    pub argv: Vec<String>,
    /// Where to copy `samples/` on the host so that the interpreter sees it at
    /// `samples_target_dir` (chroot builds).
    pub samples_host_dir: Option<PathBuf>,
    pub samples_target_dir: Option<String>,
    pub chroot: Option<PathBuf>,
    pub stripped: bool,
}

impl Python {
    pub fn at_least(&self, minor: u32) -> bool {
        self.minor >= minor
    }

    /// "pyenv-3.12.1 (3.12.1)"
    pub fn label(&self) -> String {
        format!("{} ({})", self.name, self.version)
    }

    /// The path of `samples/<file>` as the interpreter sees it (copying the samples into the
    /// chroot first, once per test process).
    pub fn script_path(&self, file: &str) -> Result<String> {
        match (&self.samples_host_dir, &self.samples_target_dir) {
            (Some(host), Some(target)) => {
                copy_samples_once(host)?;
                Ok(format!("{}/{}", target.trim_end_matches('/'), file))
            }
            (None, None) => Ok(samples_dir().join(file).to_string_lossy().into_owned()),
            _ => bail!(
                "{}: samples_host_dir and samples_target_dir must both be set or both be null",
                self.name
            ),
        }
    }

    /// A command starting this interpreter with `args` (e.g. a script path, or `-c SRC`).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..]).args(args);
        // Keep __pycache__ out of samples/ and the chroot copy.
        cmd.env("PYTHONDONTWRITEBYTECODE", "1");
        cmd
    }
}

#[derive(Debug)]
pub enum Source {
    /// The manifest file, and whether its path was given explicitly in the environment.
    Manifest { path: PathBuf, explicit: bool },
    /// No manifest: pyenv builds found on the machine.
    Pyenv,
}

#[derive(Debug)]
pub struct Pythons {
    pub list: Vec<Python>,
    pub source: Source,
}

impl Pythons {
    pub fn have_manifest(&self) -> bool {
        matches!(self.source, Source::Manifest { .. })
    }

    pub fn describe(&self) -> String {
        let names: Vec<&str> = self.list.iter().map(|p| p.name.as_str()).collect();
        match &self.source {
            Source::Manifest { path, .. } => {
                format!("[{}] from {}", names.join(", "), path.display())
            }
            Source::Pyenv => format!("[{}] (pyenv fallback: no manifest)", names.join(", ")),
        }
    }
}

/// The interpreters to test against (loaded once per test process).
pub fn pythons() -> &'static Pythons {
    static PYTHONS: OnceLock<Pythons> = OnceLock::new();
    PYTHONS.get_or_init(|| match load_pythons() {
        Ok(p) => p,
        Err(e) => panic!("{e:#}"),
    })
}

fn load_pythons() -> Result<Pythons> {
    let explicit = std::env::var_os(MANIFEST_ENV).filter(|v| !v.is_empty());
    let (path, explicit) = match explicit {
        Some(p) => (PathBuf::from(p), true),
        None => (PathBuf::from(DEFAULT_MANIFEST), false),
    };
    if path.exists() {
        let text = fs::read_to_string(&path)
            .with_context(|| format!("reading the interpreter manifest {}", path.display()))?;
        let list: Vec<Python> = serde_json::from_str(&text)
            .with_context(|| format!("parsing the interpreter manifest {}", path.display()))?;
        for p in &list {
            ensure!(
                !p.argv.is_empty(),
                "{}: manifest entry {} has an empty argv",
                path.display(),
                p.name
            );
        }
        return Ok(Pythons {
            list,
            source: Source::Manifest { path, explicit },
        });
    }
    if in_ci() {
        bail!(
            "CI is set but there is no interpreter manifest ({}): run scripts/provision-pythons \
             and set {MANIFEST_ENV} (scripts/test does both); without it the tests would skip \
             every interpreter the pyenv fallback lacks",
            path.display()
        );
    }
    if explicit {
        bail!(
            "{MANIFEST_ENV}={} does not exist: run scripts/provision-pythons (or unset \
             {MANIFEST_ENV} to use the pyenv builds under ~/.pyenv)",
            path.display()
        );
    }
    let list = pyenv_builds(FALLBACK_PYENV);
    Ok(Pythons {
        list,
        source: Source::Pyenv,
    })
}

/// The old pyenv builds gilscope must refuse with exit 5 (2.7, 3.6, 3.7, 3.8).
pub const OLD_PYENV: &[&str] = &["2.7.18", "3.6.15", "3.7.16", "3.8.18"];

/// The unsupported old interpreters, from `old-pythons.json` beside the manifest (written by
/// scripts/provision-pythons). With a manifest that file must exist and list every one of
/// [`OLD_PYENV`]; without a manifest (a plain `cargo test` off the project's machines) the
/// pyenv builds of [`OLD_PYENV`] found under `~/.pyenv/versions` are used.
pub fn old_pythons() -> Result<Vec<Python>> {
    let list = match &pythons().source {
        Source::Manifest { path, .. } => {
            let old = path.with_file_name("old-pythons.json");
            let text = fs::read_to_string(&old).with_context(|| {
                format!(
                    "reading {} (the old interpreters of the exit-5 test): run \
                     scripts/provision-pythons",
                    old.display()
                )
            })?;
            let list: Vec<Python> = serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", old.display()))?;
            let names: HashSet<&str> = list.iter().map(|p| p.version.as_str()).collect();
            let missing: Vec<&&str> = OLD_PYENV.iter().filter(|v| !names.contains(**v)).collect();
            ensure!(
                missing.is_empty(),
                "{} lacks the old builds {missing:?}: install them with pyenv and rerun \
                 scripts/provision-pythons",
                old.display()
            );
            list
        }
        Source::Pyenv => pyenv_builds(OLD_PYENV),
    };
    Ok(list)
}

/// The builds of `versions` found under `$(pyenv root)/versions/`.
fn pyenv_builds(versions: &[&str]) -> Vec<Python> {
    let root = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".pyenv")))
        .unwrap_or_else(|| PathBuf::from("/root/.pyenv"));
    let mut list = Vec::new();
    for v in versions {
        let mm = v.rsplit_once('.').map(|(mm, _)| mm).unwrap_or(v);
        let exe = root
            .join("versions")
            .join(v)
            .join("bin")
            .join(format!("python{mm}"));
        if exe.is_file() {
            let minor = mm
                .split('.')
                .nth(1)
                .and_then(|m| m.parse().ok())
                .unwrap_or(0);
            list.push(Python {
                name: format!("pyenv-{v}"),
                version: v.to_string(),
                minor,
                free_threaded: false,
                argv: vec![exe.to_string_lossy().into_owned()],
                samples_host_dir: None,
                samples_target_dir: None,
                chroot: None,
                stripped: false,
            });
        }
    }
    list
}

/// Copy every `samples/*.py` into `host_dir` (atomically per file), once per test process.
fn copy_samples_once(host_dir: &Path) -> Result<()> {
    static DONE: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    let done = done.get_or_insert_with(HashSet::new);
    if done.contains(host_dir) {
        return Ok(());
    }
    fs::create_dir_all(host_dir).with_context(|| format!("creating {}", host_dir.display()))?;
    for entry in fs::read_dir(samples_dir()).context("listing samples/")? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("py") {
            continue;
        }
        let name = path.file_name().expect("file name");
        let tmp = host_dir.join(format!(
            ".{}.tmp{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        fs::copy(&path, &tmp)
            .with_context(|| format!("copying {} to {}", path.display(), tmp.display()))?;
        fs::rename(&tmp, host_dir.join(name))
            .with_context(|| format!("renaming {}", tmp.display()))?;
    }
    done.insert(host_dir.to_path_buf());
    Ok(())
}

/// Run `body` on every interpreter `applies` accepts; `need` says in words which ones those
/// are. Prints which interpreters it ran on and the outcome of each, and panics at the end
/// with every failure (a failure or panic on one interpreter does not stop the others).
///
/// When no interpreter applies the test is skipped ([`skip`]: a failure under `CI`).
pub fn for_each_python(
    test: &str,
    need: &str,
    applies: impl Fn(&Python) -> bool,
    body: impl Fn(&Python) -> Result<()>,
) {
    let all = pythons();
    // GILSCOPE_TEST_PYTHONS=name,name…: only those (to repeat a test quickly by hand).
    let only: Option<Vec<String>> = std::env::var("GILSCOPE_TEST_PYTHONS")
        .ok()
        .filter(|v| !v.is_empty())
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    let selected: Vec<&Python> = all
        .list
        .iter()
        .filter(|p| applies(p))
        .filter(|p| only.as_ref().is_none_or(|o| o.contains(&p.name)))
        .collect();
    if selected.is_empty() {
        skip(
            test,
            &format!(
                "no interpreter for {need} among {} (fix the provisioning)",
                all.describe()
            ),
        );
        return;
    }
    let mut failures = Vec::new();
    let mut passed = Vec::new();
    for py in &selected {
        let started = Instant::now();
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| body(py)));
        let took = started.elapsed().as_secs_f64();
        match outcome {
            Ok(Ok(())) => {
                println!("{test}: ok on {} ({took:.1}s)", py.label());
                passed.push(py.name.clone());
            }
            Ok(Err(e)) => {
                println!("{test}: FAILED on {} ({took:.1}s): {e:#}", py.label());
                failures.push(format!("{}: {e:#}", py.label()));
            }
            Err(p) => {
                let msg = panic_message(&p);
                println!("{test}: PANICKED on {} ({took:.1}s): {msg}", py.label());
                failures.push(format!("{}: panicked: {msg}", py.label()));
            }
        }
    }
    println!(
        "{test}: ran on {} interpreter(s): passed [{}]",
        selected.len(),
        passed.join(", ")
    );
    if !failures.is_empty() {
        panic!(
            "{test} failed on {} of {} interpreter(s):\n  {}",
            failures.len(),
            selected.len(),
            failures.join("\n  ")
        );
    }
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}

// ---------------------------------------------------------------------------------- samples

/// The ready line of a sample (see samples/sample_support.py).
#[derive(Debug, Clone, Deserialize)]
pub struct Ready {
    pub pid: u32,
    #[serde(default)]
    pub sample: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub free_threaded: bool,
    #[serde(default = "yes")]
    pub gil_enabled: bool,
    #[serde(default)]
    pub threads: Vec<ReadyThread>,
    #[serde(default)]
    pub interpreters: Vec<ReadyInterpreter>,
    /// The sub-interpreter API the sample used.
    #[serde(default)]
    pub api: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
pub struct ReadyThread {
    pub native_id: u32,
    pub name: String,
    pub role: String,
    pub interpreter: i64,
    /// Innermost Python function expected on the stack, when deterministic.
    pub function: Option<String>,
    /// Line that function is blocked on, when deterministic.
    pub line: Option<i32>,
    /// `co_filename` of that frame.
    pub file: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ReadyInterpreter {
    pub id: i64,
    pub own_gil: bool,
}

impl Ready {
    /// The only thread with `role`.
    pub fn role(&self, role: &str) -> Result<&ReadyThread> {
        let found = self.with_role(role);
        match found.as_slice() {
            [one] => Ok(one),
            _ => bail!("ready line has {} threads with role {role:?}", found.len()),
        }
    }

    pub fn with_role(&self, role: &str) -> Vec<&ReadyThread> {
        self.threads.iter().filter(|t| t.role == role).collect()
    }
}

/// A running sample. Killed (with its process group) and reaped on drop.
pub struct Target {
    child: Child,
    /// Kept open: the sample exits at EOF on stdin.
    stdin: Option<ChildStdin>,
    pub ready: Ready,
    pub ready_line: String,
    stderr_path: PathBuf,
    what: String,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl Target {
    /// Start `samples/<file>` on `py` and wait for its ready line.
    pub fn start(py: &Python, file: &str) -> Result<Target> {
        Self::start_with_env(py, file, &[])
    }

    pub fn start_with_env(py: &Python, file: &str, env: &[(&str, &str)]) -> Result<Target> {
        let script = py.script_path(file)?;
        let mut cmd = py.command(&[&script]);
        cmd.envs(env.iter().copied());
        let envs: String = env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
        Self::spawn(cmd, format!("{envs}{} {file}", py.name))
    }

    /// Start `py -c SRC`; SRC must print a ready line (at least `{"pid": ...}`).
    pub fn start_code(py: &Python, src: &str, what: &str) -> Result<Target> {
        Self::spawn(py.command(&["-c", src]), format!("{} {what}", py.name))
    }

    /// Spawn `cmd` (stdin and stdout piped, stderr to a file, own process group) and wait up to
    /// [`READY_TIMEOUT`] for one line of JSON on its stdout.
    ///
    /// The child must be spawned by the thread that keeps it: the samples set
    /// PR_SET_PDEATHSIG, which fires when the spawning *thread* exits.
    pub fn spawn(mut cmd: Command, what: String) -> Result<Target> {
        let stderr_path = std::env::temp_dir().join(format!(
            "gilscope-test-{}-{}.stderr",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let stderr = fs::File::create(&stderr_path)
            .with_context(|| format!("creating {}", stderr_path.display()))?;
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .process_group(0);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("{what}: spawning {cmd:?}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let r = BufReader::new(stdout).read_line(&mut line).map(|_| line);
            let _ = tx.send(r);
        });
        let mut target = Target {
            child,
            stdin,
            ready: Ready {
                pid: 0,
                sample: String::new(),
                version: String::new(),
                free_threaded: false,
                gil_enabled: true,
                threads: Vec::new(),
                interpreters: Vec::new(),
                api: None,
            },
            ready_line: String::new(),
            stderr_path,
            what,
        };
        let line = match rx.recv_timeout(READY_TIMEOUT) {
            Ok(Ok(line)) if !line.is_empty() => line,
            Ok(Ok(_)) => {
                let status = target.wait_exit(Duration::from_secs(5));
                bail!(
                    "{}: exited before its ready line ({}); stderr:\n{}",
                    target.what,
                    status.map_or("still running".to_string(), |s| s.to_string()),
                    target.stderr()
                );
            }
            Ok(Err(e)) => bail!(
                "{}: reading its stdout: {e}; stderr:\n{}",
                target.what,
                target.stderr()
            ),
            Err(_) => {
                target.kill();
                bail!(
                    "{}: no ready line within {}s; stderr:\n{}",
                    target.what,
                    READY_TIMEOUT.as_secs(),
                    target.stderr()
                );
            }
        };
        target.ready = serde_json::from_str(&line).with_context(|| {
            format!(
                "{}: ready line is not the expected JSON: {line:?}; stderr:\n{}",
                target.what,
                target.stderr()
            )
        })?;
        target.ready_line = line;
        // chroot(1) execs the interpreter: the PID we spawned must be the Python process.
        ensure!(
            target.ready.pid == target.pid(),
            "{}: ready line says pid {} but the spawned process is {} (a wrapper that forks?)",
            target.what,
            target.ready.pid,
            target.pid()
        );
        Ok(target)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the sample wrote to stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path)
            .unwrap_or_else(|e| format!("(cannot read stderr: {e})"))
    }

    /// Whether the process has exited (reaping it: after `true`, its PID is gone).
    pub fn try_exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The process has exited but was not reaped (it is a zombie), checked without reaping.
    pub fn is_zombie(&self) -> bool {
        process_state(self.pid()) == Some('Z')
    }

    /// Wait up to `timeout` for the process to exit, reaping it.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_exited() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Close the sample's stdin: it exits (status 0) at EOF (samples/sample_support.py).
    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }

    pub fn kill(&mut self) {
        self.stdin.take();
        if self.child.try_wait().ok().flatten().is_none() {
            // The whole process group (the sample made none of its own); then the PID itself.
            // SAFETY: kill(2) with a negative pid signals that process group; no memory involved.
            unsafe {
                libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL);
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.kill();
        let _ = fs::remove_file(&self.stderr_path);
    }
}

/// The state letter of `/proc/PID/stat` ('R', 'S', 'Z', ...).
pub fn process_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

// --------------------------------------------------------------------------------- gilscope

pub fn gilscope_bin() -> &'static str {
    env!("CARGO_BIN_EXE_gilscope")
}

/// A command running the gilscope binary with `args`.
pub fn gilscope(args: &[&str]) -> Command {
    let mut cmd = Command::new(gilscope_bin());
    cmd.args(args);
    cmd
}

/// Run `cmd` with stdin closed, collecting its output; kill it after `timeout`.
pub fn output_with_timeout(mut cmd: Command, timeout: Duration) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_t = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_t = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = err_t.join().unwrap_or_default();
            bail!(
                "{cmd:?} did not finish within {}s; stderr so far:\n{}",
                timeout.as_secs(),
                String::from_utf8_lossy(&stderr)
            );
        }
        thread::sleep(Duration::from_millis(5));
    };
    Ok(Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    })
}

/// `gilscope ARGS` with the default timeout.
pub fn dump_raw(args: &[&str]) -> Output {
    output_with_timeout(gilscope(args), GILSCOPE_TIMEOUT).unwrap_or_else(|e| panic!("{e:#}"))
}

/// `gilscope dump --pid PID --json`, parsed. Fails with gilscope's exit code and stderr.
pub fn dump(pid: u32) -> Result<Snapshot> {
    let pid_s = pid.to_string();
    let out = output_with_timeout(
        gilscope(&["dump", "--pid", &pid_s, "--json"]),
        GILSCOPE_TIMEOUT,
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success(),
        "gilscope dump --pid {pid} --json failed ({}): {}",
        out.status,
        stderr.trim_end()
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let snap: Snapshot = serde_json::from_str(&stdout).with_context(|| {
        format!(
            "gilscope dump --json output is not a Snapshot: {}",
            stdout.chars().take(2000).collect::<String>()
        )
    })?;
    ensure!(
        snap.pid == pid,
        "snapshot is of pid {}, asked for {pid}",
        snap.pid
    );
    Ok(snap)
}

pub fn exit_code(out: &Output) -> Option<i32> {
    out.status.code()
}

/// Check a failed gilscope run: exit code `code`, no panic, and exactly one line on stderr
/// starting with `gilscope: error: ` that contains one of `any_of` (case-insensitively; empty:
/// anything).
pub fn check_error(out: &Output, code: i32, any_of: &[&str]) -> Result<()> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let ctx = || {
        format!(
            "status {}, stderr {:?}, stdout {:?}",
            out.status,
            stderr,
            short(&stdout, 300)
        )
    };
    ensure!(!stderr.contains("panicked"), "gilscope panicked: {}", ctx());
    ensure!(
        exit_code(out) == Some(code),
        "expected exit code {code}: {}",
        ctx()
    );
    let lines: Vec<&str> = stderr.lines().collect();
    ensure!(
        lines.len() == 1,
        "expected exactly one line on stderr: {}",
        ctx()
    );
    ensure!(
        lines[0].starts_with("gilscope: error: "),
        "stderr does not start with `gilscope: error: `: {}",
        ctx()
    );
    let lower = lines[0].to_lowercase();
    ensure!(
        any_of.is_empty() || any_of.iter().any(|w| lower.contains(&w.to_lowercase())),
        "the message mentions none of {any_of:?}: {}",
        ctx()
    );
    Ok(())
}

pub fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}...", s.chars().take(n).collect::<String>())
    }
}

// ------------------------------------------------------------------------- snapshot helpers

/// The last component of a (qualified) function name: "Thread.run" -> "run".
pub fn base_name(function: &str) -> &str {
    function.rsplit('.').next().unwrap_or(function)
}

/// One line per thread, for failure messages.
pub fn describe(snap: &Snapshot) -> String {
    let mut s = String::new();
    for i in &snap.interpreters {
        let _ = writeln!(
            s,
            "    interp {} main={} own_gil={} gil@{:#x} enabled={} locked={} holder={:?} switches={} ft={:?}",
            i.id,
            i.main,
            i.own_gil,
            i.gil.address,
            i.gil.enabled,
            i.gil.locked,
            i.gil.holder_tid,
            i.gil.switch_number,
            i.gil.free_threaded_state
        );
    }
    for t in &snap.threads {
        let frames: Vec<String> = t
            .frames
            .iter()
            .map(|f| {
                format!(
                    "{}@{}:{}[i{}]",
                    f.function,
                    f.file.rsplit('/').next().unwrap_or(&f.file),
                    f.line,
                    f.interpreter
                )
            })
            .collect();
        let _ = writeln!(
            s,
            "    tid {} {:?} interp={} holds_gil={} state={} on_cpu={} ({}) frames: {}",
            t.tid,
            t.name,
            t.interpreter,
            t.holds_gil,
            t.gil_state.as_str(),
            t.on_cpu,
            t.interpreter_evidence,
            frames.join(" < ")
        );
    }
    if !snap.warnings.is_empty() {
        let _ = writeln!(s, "    warnings: {:?}", snap.warnings);
    }
    s
}

/// Structural invariants every snapshot must satisfy, whatever the target does.
pub fn check_invariants(snap: &Snapshot) -> Result<()> {
    let main = snap
        .interpreters
        .first()
        .ok_or_else(|| anyhow!("no interpreters"))?;
    ensure!(
        main.id == 0 && main.main && main.own_gil,
        "first interpreter is not the main one (id 0, own GIL)"
    );
    ensure!(
        snap.interpreters.iter().filter(|i| i.main).count() == 1,
        "not exactly one main interpreter"
    );
    let ids: Vec<i64> = snap.interpreters.iter().map(|i| i.id).collect();
    ensure!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "interpreters not sorted by id: {ids:?}"
    );
    let keys: Vec<(i64, u32)> = snap
        .threads
        .iter()
        .map(|t| (t.interpreter, t.tid))
        .collect();
    ensure!(
        keys.windows(2).all(|w| w[0] < w[1]),
        "threads not sorted by (interpreter, tid) or duplicated: {keys:?}"
    );
    let tids: HashSet<u32> = snap.threads.iter().map(|t| t.tid).collect();
    ensure!(tids.len() == snap.threads.len(), "a TID appears twice");
    for t in &snap.threads {
        ensure!(
            snap.interpreter(t.interpreter).is_some(),
            "thread {} is in unknown interpreter {}",
            t.tid,
            t.interpreter
        );
        ensure!(
            t.holds_gil == (t.gil_state == gilscope::model::GilState::Held),
            "thread {}: holds_gil {} but gil_state {}",
            t.tid,
            t.holds_gil,
            t.gil_state.as_str()
        );
        for f in &t.frames {
            ensure!(
                snap.interpreter(f.interpreter).is_some(),
                "thread {}: frame {} in unknown interpreter {}",
                t.tid,
                f.function,
                f.interpreter
            );
        }
    }
    for i in &snap.interpreters {
        if let Some(h) = i.gil.holder_tid {
            ensure!(
                tids.contains(&h),
                "interpreter {}: GIL holder {h} is not among the threads",
                i.id
            );
            ensure!(
                i.gil.locked,
                "interpreter {}: GIL has a holder ({h}) but is not locked",
                i.id
            );
        }
        if !i.gil.enabled {
            ensure!(
                !i.gil.locked && i.gil.holder_tid.is_none(),
                "interpreter {}: disabled GIL reads locked/held",
                i.id
            );
        }
        // One reading per GIL: interpreters sharing a GIL see the same state.
        for j in &snap.interpreters {
            if j.id > i.id && j.gil.address == i.gil.address {
                ensure!(
                    (
                        i.gil.locked,
                        i.gil.holder_tid,
                        i.gil.switch_number,
                        i.gil.enabled
                    ) == (
                        j.gil.locked,
                        j.gil.holder_tid,
                        j.gil.switch_number,
                        j.gil.enabled
                    ),
                    "interpreters {} and {} share GIL {:#x} but read it differently",
                    i.id,
                    j.id,
                    i.gil.address
                );
            }
        }
    }
    Ok(())
}

/// What every snapshot of a sample must agree with in its ready line: PID, version, build,
/// and each listed thread present in its interpreter with its `threading` name.
pub fn check_against_ready(snap: &Snapshot, ready: &Ready) -> Result<()> {
    ensure!(
        snap.pid == ready.pid,
        "pid {} != ready pid {}",
        snap.pid,
        ready.pid
    );
    ensure!(
        snap.python.version == ready.version,
        "python.version {:?} != {:?} (sys.version_info)",
        snap.python.version,
        ready.version
    );
    ensure!(
        snap.python.free_threaded == ready.free_threaded,
        "python.free_threaded {} != {}",
        snap.python.free_threaded,
        ready.free_threaded
    );
    let got: HashSet<i64> = snap.interpreters.iter().map(|i| i.id).collect();
    let want: HashSet<i64> = ready.interpreters.iter().map(|i| i.id).collect();
    ensure!(
        got == want,
        "interpreter ids {got:?}, the sample has {want:?}"
    );
    for ri in &ready.interpreters {
        let i = snap.interpreter(ri.id).expect("checked above");
        ensure!(
            i.own_gil == ri.own_gil,
            "interpreter {}: own_gil {} but the sample says {}",
            ri.id,
            i.own_gil,
            ri.own_gil
        );
    }
    let got: HashSet<u32> = snap.threads.iter().map(|t| t.tid).collect();
    let want: HashSet<u32> = ready.threads.iter().map(|t| t.native_id).collect();
    ensure!(
        got == want,
        "thread TIDs {got:?}, the sample has exactly {want:?}"
    );
    for rt in &ready.threads {
        let t = snap.thread(rt.native_id).expect("checked above");
        ensure!(
            t.name == rt.name,
            "thread {} ({}): name {:?}, want {:?}",
            rt.native_id,
            rt.role,
            t.name,
            rt.name
        );
        ensure!(
            t.interpreter == rt.interpreter,
            "thread {} ({}): interpreter {} ({}), want {}",
            rt.native_id,
            rt.role,
            t.interpreter,
            t.interpreter_evidence,
            rt.interpreter
        );
    }
    Ok(())
}

/// The innermost frame of `rt`'s thread is its expected function (and line and file, when the
/// sample knows them), in the thread's interpreter.
pub fn check_innermost(snap: &Snapshot, rt: &ReadyThread) -> Result<()> {
    let Some(function) = &rt.function else {
        return Ok(());
    };
    let t = snap
        .thread(rt.native_id)
        .ok_or_else(|| anyhow!("thread {} ({}) missing", rt.native_id, rt.role))?;
    let f = t
        .frames
        .first()
        .ok_or_else(|| anyhow!("thread {} ({}): no frames", rt.native_id, rt.role))?;
    ensure!(
        base_name(&f.function) == function,
        "thread {} ({}): innermost frame {:?}, want {function:?}",
        rt.native_id,
        rt.role,
        f.function
    );
    ensure!(
        f.interpreter == rt.interpreter,
        "thread {} ({}): frame {} in interpreter {}, want {}",
        rt.native_id,
        rt.role,
        f.function,
        f.interpreter,
        rt.interpreter
    );
    if let Some(line) = rt.line {
        ensure!(
            f.line == line,
            "thread {} ({}): {} at line {}, want {line}",
            rt.native_id,
            rt.role,
            f.function,
            f.line
        );
    }
    if let Some(file) = &rt.file {
        let base = file.rsplit('/').next().unwrap_or(file);
        ensure!(
            f.file.ends_with(base),
            "thread {} ({}): {} in file {:?}, want …{base}",
            rt.native_id,
            rt.role,
            f.function,
            f.file
        );
    }
    Ok(())
}

/// Why exact mode (uprobes) cannot run here, if it cannot: it needs root and
/// the uprobe PMU.
pub fn exact_possible() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    if !Path::new("/sys/bus/event_source/devices/uprobe/type").exists() {
        return Some("no uprobe PMU".into());
    }
    None
}

/// True (after saying so) when exact mode is impossible here; on CI that is
/// a failure, not a skip.
pub fn skip_unless_possible(test: &str) -> bool {
    if let Some(why) = exact_possible() {
        skip(test, &format!("exact mode impossible: {why}"));
        return true;
    }
    false
}

/// `scripts/build-gilext PYTHON DIR`: samples/gilext (the pyo3-ffi test extension) built for
/// `py`, in a directory of the temp dir (the script reuses a build that is up to date).
#[allow(dead_code)] // not every test binary builds the extension
pub fn build_gilext(py: &Python) -> Result<PathBuf> {
    build_sample_ext(py, "gilext", Duration::from_secs(600))
}

/// `scripts/build-realext PYTHON DIR`: samples/realext (a pybind11 and a Cython module, with
/// PyPI's toolchains) built for `py`; returns the directory holding the modules.
#[allow(dead_code)] // only the check and native tests use them
pub fn build_realext(py: &Python) -> Result<PathBuf> {
    build_sample_ext(py, "realext", Duration::from_secs(900))
}

/// `scripts/build-NAME PYTHON DIR` with DIR `gilscope-NAME-<interpreter>` in the temp dir.
fn build_sample_ext(py: &Python, name: &str, timeout: Duration) -> Result<PathBuf> {
    let out = std::env::temp_dir().join(format!("gilscope-{name}-{}", py.name));
    let script = format!("scripts/build-{name}");
    let mut cmd = Command::new(repo_dir().join(&script));
    cmd.arg(&py.argv[0]).arg(&out);
    let o = output_with_timeout(cmd, timeout)?;
    ensure!(
        o.status.success(),
        "{script} {} failed: {}",
        py.argv[0],
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(out)
}
