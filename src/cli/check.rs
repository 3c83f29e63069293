//! `gilscope check -- CMD ARGS...`: the CI gate. Runs the command, records every Python
//! process it starts (the command itself and its descendants), finds native code that held a
//! GIL longer than the limit, names it, and ends with 0 (clean), 1 (findings) or 2 (could not
//! run) — or the command's own non-zero status.
//!
//! Part of the CLI: wires the reader, the recorder, the native unwinder and the pure
//! [`gilscope::check`] report together.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;

use gilscope::analysis::holds::{
    self, Episode, ExactHold, GcPause, HoldConfig, HoldDetector, NativeProbe, NoProbe,
};
use gilscope::check::config::AllowRule;
use gilscope::check::{self, ExtensionModule, GilReenabled, ProcessRun, Report, SubinterpProblem};
use gilscope::model::timeline::{Event, Source, ThreadIdx};
use gilscope::model::GilState;
use gilscope::model::Snapshot;
use gilscope::reader::exit_watch::{ExitWatch, Watch};
use gilscope::reader::native::NativeUnwinder;
use gilscope::reader::{Reader, ReaderOptions};
use gilscope::sampler::{
    self, ErrorClass, MonotonicClock, ProgressPrinter, RecordOptions, SnapshotSource,
};

use super::parse_rate;
use super::record::{self as cli_record, LiveSource, Mode};

#[derive(Args)]
pub struct CheckArgs {
    /// Report native code that holds a GIL continuously for longer than this
    /// (e.g. 50ms, 0.2s; a bare number is milliseconds). Default 50ms, or
    /// `max-hold` in [tool.gilscope].
    #[arg(long, value_name = "DURATION", value_parser = gilscope::check::config::parse_duration_ms)]
    max_hold: Option<f64>,
    /// Samples per second (default 1000, or `rate` in [tool.gilscope]).
    #[arg(long, value_parser = parse_rate)]
    rate: Option<f64>,
    /// Write the findings as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<std::path::PathBuf>,
    /// Write a JUnit XML report (one testcase per finding) to this file.
    #[arg(long, value_name = "FILE")]
    junit: Option<std::path::PathBuf>,
    /// Keep the full recording here (FILE.PID for subprocesses), for `gilscope view`.
    #[arg(long, value_name = "FILE")]
    trace: Option<std::path::PathBuf>,
    /// Also try importing every loaded extension module in an own-GIL
    /// sub-interpreter (3.12+) and report those that refuse.
    #[arg(long)]
    subinterpreters: bool,
    /// Exit with the check's status even when the command failed.
    #[arg(long)]
    ignore_command_status: bool,
    /// Also fail on holds while a module is being imported (dlopen, extension init);
    /// by default they are reported as allowed.
    #[arg(long)]
    include_imports: bool,
    /// Also fail on holds in CPython's own code (`sorted`, `str.join`, big deallocations);
    /// by default they are notices: no extension is to blame.
    #[arg(long)]
    include_interpreter: bool,
    /// Fail when a garbage collection holds a GIL longer than this (e.g. 200ms). By default
    /// collections are reported in their own section and never fail (or `max-gc-pause` in
    /// [tool.gilscope]).
    #[arg(long, value_name = "DURATION", value_parser = gilscope::check::config::parse_duration_ms)]
    max_gc_pause: Option<f64>,
    /// Do not unwind native stacks (no ptrace; findings then name no shared object).
    #[arg(long)]
    no_native: bool,
    /// Print GitHub Actions annotations on stdout (default: when GITHUB_ACTIONS=true).
    #[arg(long)]
    github: bool,
    /// How GIL states are obtained (as in `record --mode`). The default `auto` arms the
    /// uprobes at launch, before the command runs Python, so every release is seen from its
    /// first instruction; without the means (root, symbols) it samples.
    #[arg(long, value_enum, default_value = "auto")]
    mode: cli_record::Mode,
    /// The overhead budget in percent of one CPU, or `none` (the default: a CI run wants
    /// every hold seen at the full rate, and its machine is there for the tests; see
    /// `record --max-overhead`).
    #[arg(long, default_value = "none", value_name = "PCT|none", value_parser = cli_record::parse_overhead)]
    max_overhead: cli_record::Overhead,
    /// The configuration file (default: the nearest pyproject.toml from the current directory).
    #[arg(long, value_name = "PYPROJECT")]
    config: Option<std::path::PathBuf>,
    /// The command to check: `gilscope check -- python -m pytest`.
    #[arg(last = true, value_name = "CMD", required = true)]
    command: Vec<String>,
}

pub fn run(args: &CheckArgs) -> Result<u8> {
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let file = gilscope::check::config::load(args.config.as_deref(), &cwd)?;
    if let Some(p) = &file.path {
        if file != gilscope::check::config::FileConfig::default() {
            eprintln!("gilscope check: configuration from {}", p.display());
        }
    }
    let github = args.github
        || std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    let plan = CheckPlan {
        command: args.command.clone(),
        max_hold_ms: args.max_hold.or(file.max_hold_ms).unwrap_or(50.0),
        rate_hz: args.rate.or(file.rate_hz).unwrap_or(1000.0),
        mode: args.mode,
        trace: args.trace.clone(),
        json: args.json.clone(),
        junit: args.junit.clone(),
        github,
        ignore_command_status: args.ignore_command_status,
        subinterpreters: args.subinterpreters || file.subinterpreters.unwrap_or(false),
        native: !args.no_native,
        include_imports: args.include_imports || file.include_imports.unwrap_or(false),
        include_interpreter: args.include_interpreter || file.include_interpreter.unwrap_or(false),
        max_gc_pause_ms: args.max_gc_pause.or(file.max_gc_pause_ms),
        allow: file.allow,
        max_overhead: args.max_overhead.0,
    };
    run_check(&plan)
}

/// What `gilscope check` was asked to do (command line merged over `[tool.gilscope]`).
#[derive(Clone)]
pub struct CheckPlan {
    pub command: Vec<String>,
    pub max_hold_ms: f64,
    pub rate_hz: f64,
    pub mode: Mode,
    pub trace: Option<PathBuf>,
    pub json: Option<PathBuf>,
    pub junit: Option<PathBuf>,
    pub github: bool,
    pub ignore_command_status: bool,
    pub subinterpreters: bool,
    pub native: bool,
    pub include_imports: bool,
    pub include_interpreter: bool,
    pub max_gc_pause_ms: Option<f64>,
    pub allow: Vec<AllowRule>,
    /// Fraction of one CPU (`--max-overhead`); `None`: no budget.
    pub max_overhead: Option<f64>,
}

/// How often /proc/PID/maps is read to see which extension modules are loaded.
const MAPS_EVERY_FT: Duration = Duration::from_millis(20);
const MAPS_EVERY: Duration = Duration::from_millis(250);

/// For this long after the first read, the maps are read every MAPS_EVERY_FT.
const MAPS_FAST_FOR: Duration = Duration::from_secs(2);

/// Extension files loaded by one process, with when each was first seen.
#[derive(Default)]
struct MapsWatch {
    first_seen: BTreeMap<String, u64>,
    last_read: Option<Instant>,
    first_read: Option<Instant>,
}

impl MapsWatch {
    /// Time since the first read (zero before it).
    fn age(&self) -> Duration {
        self.first_read.map_or(Duration::ZERO, |t| t.elapsed())
    }

    fn read(&mut self, pid: u32, now_ns: u64) {
        self.last_read = Some(Instant::now());
        self.first_read.get_or_insert_with(Instant::now);
        let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
            return;
        };
        for line in maps.lines() {
            // "start-end perms offset dev inode   /path"
            let Some(path) = line.split_whitespace().nth(5) else {
                continue;
            };
            if check::is_extension_file(path) && !self.first_seen.contains_key(path) {
                self.first_seen.insert(path.to_string(), now_ns);
            }
        }
    }

    fn due(&self, every: Duration) -> bool {
        self.last_read.is_none_or(|t| t.elapsed() >= every)
    }
}

/// The dotted name `path` is imported by in process `pid` (packages seen from its root, so a
/// chroot or container target is read with its own files).
fn module_name(pid: u32, path: &str) -> String {
    check::dotted_module_name(path, |dir| {
        Path::new(&format!("/proc/{pid}/root{dir}/__init__.py")).is_file()
            || Path::new(&format!("{dir}/__init__.py")).is_file()
    })
}

/// The live source, watched: holds go to the detector, GIL re-enables are noted.
struct CheckSource {
    inner: LiveSource,
    exit_watch: Option<Arc<Mutex<ExitWatch>>>,
    detector: HoldDetector,
    probe: Box<dyn NativeProbe>,
    pid: u32,
    free_threaded: bool,
    want_extensions: bool,
    maps: MapsWatch,
    /// Per interpreter: the last free-threaded GIL state seen, and when.
    ft_state: BTreeMap<i64, (String, u64)>,
    reenabled: Vec<(i64, u64, Vec<ExtensionModule>)>,
    /// Exact mode: threads seen holding a GIL, and their exact holds of at least the limit.
    held_tids: BTreeSet<u32>,
    exact_holds: Vec<ExactHold>,
    max_hold_ns: u64,
}

impl CheckSource {
    fn watch_gil_state(&mut self, snap: &Snapshot) {
        if !self.free_threaded {
            return;
        }
        let any_not_permanent = snap
            .interpreters
            .iter()
            .any(|i| i.gil.free_threaded_state.as_deref() != Some("permanent"));
        if any_not_permanent && self.maps.due(MAPS_EVERY_FT) {
            self.maps.read(self.pid, snap.time_ns);
        }
        for i in &snap.interpreters {
            let Some(state) = i.gil.free_threaded_state.clone() else {
                continue;
            };
            let prev = self.ft_state.insert(i.id, (state.clone(), snap.time_ns));
            let Some((prev_state, prev_ns)) = prev else {
                continue; // first sight: enabled from the start (PYTHON_GIL=1) is no finding
            };
            if state == "permanent" && prev_state != "permanent" {
                // Read the maps now too: the module loaded since the last read is the one.
                self.maps.read(self.pid, snap.time_ns);
                let since = prev_ns.saturating_sub(MAPS_EVERY_FT.as_nanos() as u64 * 2);
                let mut mods: Vec<(u64, ExtensionModule)> = self
                    .maps
                    .first_seen
                    .iter()
                    .filter(|(_, &t)| t >= since)
                    .map(|(p, &t)| {
                        (
                            t,
                            ExtensionModule {
                                name: module_name(self.pid, p),
                                path: p.clone(),
                            },
                        )
                    })
                    .collect();
                mods.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
                self.reenabled.push((
                    i.id,
                    snap.time_ns,
                    mods.into_iter().map(|(_, m)| m).collect(),
                ));
            }
        }
    }
}

impl SnapshotSource for CheckSource {
    fn snapshot(&mut self) -> Result<Snapshot> {
        if let Some(w) = &self.exit_watch {
            let mut w = w
                .lock()
                .map_err(|_| anyhow::anyhow!("exit watch poisoned"))?;
            if w.poll() == Watch::AtExit {
                // Its last moment: memory still there.
                self.maps.read(self.pid, now_ns());
                w.release();
            }
        }
        let snap = match self.inner.snapshot() {
            Ok(s) => s,
            Err(e) => {
                // Often the process is exiting (its runtime finalizing): the last look at its
                // maps, so a short-lived process's extensions are all seen.
                if self.want_extensions || self.free_threaded {
                    self.maps.read(self.pid, now_ns());
                }
                return Err(e);
            }
        };
        self.detector.observe(&snap, self.probe.as_mut());
        self.watch_gil_state(&snap);
        if self.inner.exact.is_some() {
            self.held_tids.extend(
                snap.threads
                    .iter()
                    .filter(|t| t.gil_state == GilState::Held)
                    .map(|t| t.tid),
            );
        }
        // Often at first (imports happen early, and a short process may be gone in 0.2 s),
        // then every MAPS_EVERY.
        let every = if self.maps.age() < MAPS_FAST_FOR {
            MAPS_EVERY_FT
        } else {
            MAPS_EVERY
        };
        if self.want_extensions && self.maps.due(every) {
            self.maps.read(self.pid, snap.time_ns);
        }
        Ok(snap)
    }

    fn classify(&self, err: &anyhow::Error) -> ErrorClass {
        self.inner.classify(err)
    }

    fn mode(&self) -> Source {
        self.inner.mode()
    }

    fn probe_cost_ns(&self) -> Option<u64> {
        self.inner.probe_cost_ns()
    }

    fn probe_ns_per_event(&self) -> Option<u64> {
        self.inner.probe_ns_per_event()
    }

    fn detach_exact(
        &mut self,
        at_ns: u64,
        thread_of: &dyn Fn(u32) -> Option<ThreadIdx>,
        out: &mut Vec<Event>,
    ) {
        self.inner.detach_exact(at_ns, thread_of, out);
    }

    fn extra_events(
        &mut self,
        thread_of: &dyn Fn(u32) -> Option<ThreadIdx>,
        end_ns: Option<u64>,
        out: &mut Vec<Event>,
    ) {
        let from = out.len();
        self.inner.extra_events(thread_of, end_ns, out);
        let mut tid_of: Vec<(ThreadIdx, u32)> = Vec::new();
        for e in &out[from..] {
            let Event::Run(r) = e else { continue };
            if r.source != Source::Exact
                || r.state != GilState::Held
                || r.end_ns.saturating_sub(r.start_ns) < self.max_hold_ns
            {
                continue;
            }
            if tid_of.is_empty() {
                tid_of = self
                    .held_tids
                    .iter()
                    .filter_map(|&tid| thread_of(tid).map(|i| (i, tid)))
                    .collect();
            }
            if let Some(&(_, tid)) = tid_of.iter().find(|(i, _)| *i == r.thread) {
                self.exact_holds.push(ExactHold {
                    tid,
                    start_ns: r.start_ns,
                    end_ns: r.end_ns,
                });
            }
        }
    }
}

/// A native probe that also reads the C function the Python frame is calling (the name a
/// hold gets when its native stack cannot be walked, or with `--no-native`).
struct CallingProbe {
    inner: Box<dyn NativeProbe>,
    calls: Option<gilscope::reader::stack::CallReader>,
}

impl NativeProbe for CallingProbe {
    fn capture(&mut self, pid: u32, tid: u32) -> Result<u64, String> {
        self.inner.capture(pid, tid)
    }

    fn resolve(
        &mut self,
        token: u64,
    ) -> Result<Vec<gilscope::analysis::holds::NativeFrame>, String> {
        self.inner.resolve(token)
    }

    fn discard(&mut self, token: u64) {
        self.inner.discard(token);
    }

    fn paused(&self) -> Duration {
        self.inner.paused()
    }

    fn current_call(
        &mut self,
        _pid: u32,
        _tid: u32,
        frame: u64,
    ) -> Option<gilscope::analysis::holds::CCall> {
        self.calls.as_ref()?.read(frame)
    }
}

/// What one process contributed.
struct ProcOutcome {
    run: ProcessRun,
    episodes: Vec<Episode>,
    gc_pauses: Vec<GcPause>,
    reenabled: Vec<GilReenabled>,
    extensions: Vec<String>,
    exe: Option<PathBuf>,
    cwd: Option<PathBuf>,
    minor: u32,
}

fn now_ns() -> u64 {
    use gilscope::sampler::Clock;
    MonotonicClock.now_ns()
}

/// Records one Python process to `output` and returns what it found.
fn check_process(
    reader: Reader,
    plan: &CheckPlan,
    output: PathBuf,
    stop: &AtomicBool,
    show_progress: bool,
    t0_ns: u64,
    prearmed: Option<gilscope::exact::Prearmed>,
) -> Result<ProcOutcome> {
    let pid = reader.pid();
    let python = reader.python().clone();
    let minor = reader.layout().minor;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok();
    // The last look at a short-lived process: its main thread stops at its exit, memory
    // intact, and the maps are read there (extensions for --subinterpreters and the
    // free-threaded re-enable check).
    let exit_watch = if plan.subinterpreters || python.free_threaded {
        match ExitWatch::seize(pid) {
            Ok(w) => Some(Arc::new(Mutex::new(w))),
            Err(e) => {
                eprintln!("gilscope check: process {pid}: cannot watch for its exit: {e:#}");
                None
            }
        }
    } else {
        None
    };
    let (probe, native_unavailable): (Box<dyn NativeProbe>, Option<String>) = if !plan.native {
        let why = "--no-native".to_string();
        (Box::new(NoProbe(why.clone())), Some(why))
    } else {
        match NativeUnwinder::new(pid) {
            Ok(mut u) => {
                if let Some(w) = &exit_watch {
                    u.set_exit_watch(w.clone());
                }
                (Box::new(u), None)
            }
            Err(e) => {
                let why = format!("{e:#}");
                (Box::new(NoProbe(why.clone())), Some(why))
            }
        }
    };
    let probe: Box<dyn NativeProbe> = Box::new(CallingProbe {
        inner: probe,
        calls: reader.call_reader(),
    });
    let inner = cli_record::live_source_armed(reader, plan.mode, prearmed, plan.max_overhead)?;
    let mut source = CheckSource {
        inner,
        exit_watch,
        detector: HoldDetector::new(HoldConfig::new(
            (plan.max_hold_ms * 1e6) as u64,
            (1e9 / plan.rate_hz) as u64,
        )),
        probe,
        pid,
        free_threaded: python.free_threaded,
        want_extensions: plan.subinterpreters,
        maps: MapsWatch::default(),
        ft_state: BTreeMap::new(),
        reenabled: Vec::new(),
        held_tids: BTreeSet::new(),
        exact_holds: Vec::new(),
        max_hold_ns: (plan.max_hold_ms * 1e6) as u64,
    };
    let mut opts = RecordOptions::new(&output);
    opts.rate_hz = plan.rate_hz;
    opts.command = Some(plan.command.clone());
    opts.subprocesses = true;
    opts.max_overhead = plan.max_overhead;
    let mut printer = ProgressPrinter::stderr();
    let stats = sampler::record(&mut source, &opts, stop, |p| {
        if show_progress {
            printer.update(p);
        }
    });
    printer.finish();
    if let Some(ex) = &source.inner.exact {
        eprintln!("{}", ex.summary_line());
    }
    let stats = stats.with_context(|| format!("recording process {pid}"))?;
    let unwinds = source.detector.unwinds;
    let paused_ms = source.probe.paused().as_secs_f64() * 1e3;
    let exact = source.inner.exact.is_some();
    let CheckSource {
        detector,
        mut probe,
        reenabled,
        maps,
        exact_holds,
        max_hold_ns,
        ..
    } = source;
    let found = detector.finish_all(probe.as_mut());
    let mut episodes = found.episodes;
    if exact {
        episodes = holds::refine_with_exact(episodes, &exact_holds, max_hold_ns);
    }
    Ok(ProcOutcome {
        run: ProcessRun {
            pid,
            python: python.version.clone(),
            free_threaded: python.free_threaded,
            samples: stats.samples,
            achieved_hz: stats.achieved_hz,
            seconds: stats.elapsed.as_secs_f64(),
            unwinds,
            paused_ms,
            native_unavailable,
            trace: plan.trace.as_ref().map(|_| output.display().to_string()),
        },
        episodes,
        gc_pauses: found.gc_pauses,
        reenabled: reenabled
            .into_iter()
            .map(|(interpreter, t, modules)| GilReenabled {
                pid,
                interpreter,
                at_s: t.saturating_sub(t0_ns) as f64 / 1e9,
                modules,
            })
            .collect(),
        extensions: maps.first_seen.into_keys().collect(),
        exe,
        cwd,
        minor,
    })
}

/// The script that tries to import extension files in a fresh own-GIL sub-interpreter.
const SUBINTERP_PROBE: &str = include_str!("../check/subinterp_probe.py");

/// Tries each extension of `p` in an own-GIL sub-interpreter of the same Python.
fn subinterp_problems(p: &ProcOutcome, warnings: &mut Vec<String>) -> Vec<SubinterpProblem> {
    if p.minor < 12 || p.extensions.is_empty() {
        return Vec::new();
    }
    let Some(exe) = &p.exe else {
        warnings.push(format!(
            "--subinterpreters: cannot tell which executable process {} ran",
            p.run.pid
        ));
        return Vec::new();
    };
    let mods: Vec<(String, String)> = p
        .extensions
        .iter()
        .map(|path| (module_name(p.run.pid, path), path.clone()))
        .collect();
    let input = match serde_json::to_string(&mods) {
        Ok(s) => s,
        Err(e) => {
            warnings.push(format!("--subinterpreters: {e}"));
            return Vec::new();
        }
    };
    let run = || -> Result<std::process::Output> {
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("-I")
            .arg("-c")
            .arg(SUBINTERP_PROBE)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if let Some(cwd) = &p.cwd {
            cmd.current_dir(cwd);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("running {}", exe.display()))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(input.as_bytes())
                .context("writing to the probe")?;
        }
        child.wait_with_output().context("waiting for the probe")
    };
    #[derive(serde::Deserialize)]
    struct Res {
        name: String,
        path: String,
        error: Option<String>,
    }
    match run() {
        Ok(out) if out.status.success() => match serde_json::from_slice::<Vec<Res>>(&out.stdout) {
            Ok(list) => list
                .into_iter()
                .filter_map(|r| {
                    let err = r.error?;
                    if err.contains("does not support loading in subinterpreters") {
                        Some(SubinterpProblem {
                            module: ExtensionModule {
                                name: r.name,
                                path: r.path,
                            },
                            error: err,
                        })
                    } else {
                        warnings.push(format!(
                            "--subinterpreters: {} could not be tried on its own: {err}",
                            r.name
                        ));
                        None
                    }
                })
                .collect(),
            Err(e) => {
                warnings.push(format!("--subinterpreters: unreadable probe output: {e}"));
                Vec::new()
            }
        },
        Ok(out) => {
            warnings.push(format!(
                "--subinterpreters: the probe failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            Vec::new()
        }
        Err(e) => {
            warnings.push(format!("--subinterpreters: {e:#}"));
            Vec::new()
        }
    }
}

type Outcomes = Arc<Mutex<Vec<(u32, Result<ProcOutcome>)>>>;

/// `gilscope check -- CMD...`: returns the exit code.
pub fn run_check(plan: &CheckPlan) -> Result<u8> {
    let stop = sampler::install_stop_handler();
    let t0 = now_ns();
    let started = Instant::now();
    let (trace_base, temp_dir) = match &plan.trace {
        Some(t) => (t.clone(), None),
        None => {
            let dir = std::env::temp_dir().join(format!("gilscope-check-{}", std::process::id()));
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("creating the scratch directory {}", dir.display()))?;
            (dir.join("check.trace"), Some(dir))
        }
    };
    eprintln!(
        "gilscope check: running {} (GIL hold limit {} ms)",
        plan.command.join(" "),
        plan.max_hold_ms
    );
    let (mut child, prearmed) = if plan.mode == cli_record::Mode::Sampling {
        (cli_record::spawn(&plan.command)?, None)
    } else {
        cli_record::spawn_prearmed(&plan.command)?
    };
    let root = child.id();
    // The root's recorder takes the probes armed at launch.
    let prearmed = Arc::new(Mutex::new(prearmed));
    let outcomes: Outcomes = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let ropts = ReaderOptions::default();

    // One recorder thread per Python process: the command and each descendant.
    let follower = {
        let outcomes = outcomes.clone();
        let done = done.clone();
        let stop = stop.clone();
        let plan = Arc::new(plan.clone());
        let trace_base = trace_base.clone();
        let prearmed = prearmed.clone();
        std::thread::spawn(move || {
            let mut seen = BTreeSet::new();
            let mut workers = Vec::new();
            loop {
                let finished = done.load(Ordering::SeqCst) || stop.load(Ordering::SeqCst);
                let mut pids = vec![root];
                pids.extend(cli_record::descendants(root));
                for pid in pids {
                    if !seen.insert(pid) {
                        continue;
                    }
                    let outcomes = outcomes.clone();
                    let stop = stop.clone();
                    let ropts = ropts.clone();
                    let plan = plan.clone();
                    let output = if pid == root {
                        trace_base.clone()
                    } else {
                        cli_record::child_output(&trace_base, pid)
                    };
                    let armed = if pid == root {
                        prearmed.lock().ok().and_then(|mut p| p.take())
                    } else {
                        None
                    };
                    workers.push(std::thread::spawn(move || {
                        let patience = Duration::from_secs(if pid == root { 10 } else { 5 });
                        match cli_record::attach_when_ready(pid, &ropts, patience, &stop) {
                            Ok(Some(reader)) => {
                                let r = check_process(
                                    reader,
                                    &plan,
                                    output,
                                    &stop,
                                    pid == root,
                                    t0,
                                    armed,
                                );
                                if let Ok(mut v) = outcomes.lock() {
                                    v.push((pid, r));
                                }
                            }
                            Ok(None) => {}
                            Err(e) => {
                                if let Ok(mut v) = outcomes.lock() {
                                    v.push((pid, Err(e)));
                                }
                            }
                        }
                    }));
                }
                if finished {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            // Descendants still running after the command get a moment to finish, then are
            // no longer recorded.
            let grace = Instant::now();
            while !workers.iter().all(|w| w.is_finished()) {
                if grace.elapsed() >= Duration::from_secs(5) {
                    stop.store(true, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            for w in workers {
                let _ = w.join();
            }
        })
    };

    // Wait for the command (Ctrl-C ends it the usual way: the terminal signals it too).
    let status = loop {
        if let Some(st) = cli_record::try_wait_exited(&mut child)? {
            break Some(st);
        }
        if stop.load(Ordering::SeqCst) {
            // A second look after the signal reached the command as well.
            std::thread::sleep(Duration::from_millis(500));
            break cli_record::try_wait_exited(&mut child).ok().flatten();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    done.store(true, Ordering::SeqCst);
    let _ = follower.join();
    let command_status = status.map(cli_record::exit_code_of);
    let command_signal = status.and_then(|s| {
        use std::os::unix::process::ExitStatusExt;
        s.signal()
    });

    // Gather.
    let mut procs: Vec<(u32, Result<ProcOutcome>)> = outcomes
        .lock()
        .map(|mut v| std::mem::take(&mut *v))
        .unwrap_or_default();
    procs.sort_by_key(|(p, _)| *p);
    let mut warnings = Vec::new();
    let mut processes = Vec::new();
    let mut episodes = Vec::new();
    let mut gc_pauses = Vec::new();
    let mut cwds: BTreeMap<u32, PathBuf> = BTreeMap::new();
    let mut gil_reenabled = Vec::new();
    let mut sub_problems: Option<Vec<SubinterpProblem>> = plan.subinterpreters.then(Vec::new);
    let mut errors = 0usize;
    for (pid, r) in procs {
        match r {
            Ok(p) => {
                if let Some(why) = &p.run.native_unavailable {
                    warnings.push(format!(
                        "process {pid}: native stacks unavailable ({why}); long holds are named by the C function their Python frame called, when memory shows one"
                    ));
                }
                if let Some(b) = sampler::behind_message(plan.rate_hz, p.run.achieved_hz) {
                    warnings.push(format!("process {pid}: sampling fell behind: {b}"));
                }
                if let Some(list) = &mut sub_problems {
                    for prob in subinterp_problems(&p, &mut warnings) {
                        if !list.iter().any(|q| q.module == prob.module) {
                            list.push(prob);
                        }
                    }
                }
                episodes.extend(p.episodes);
                gc_pauses.extend(p.gc_pauses);
                if let Some(c) = &p.cwd {
                    cwds.insert(pid, c.clone());
                }
                gil_reenabled.extend(p.reenabled);
                processes.push(p.run);
            }
            Err(e) => {
                errors += 1;
                warnings.push(format!("process {pid} could not be recorded: {e:#}"));
            }
        }
    }
    if let Some(dir) = temp_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    if processes.is_empty() {
        let why = if errors > 0 {
            warnings.join("; ")
        } else {
            "the command started no CPython process that gilscope could attach to".to_string()
        };
        anyhow::bail!(
            "nothing was checked: {why} (the command exited with {})",
            command_status.map_or("an unknown status".to_string(), |s| format!("status {s}"))
        );
    }
    let mut holds = check::group_holds(
        &episodes,
        &plan.allow,
        &check::GroupOptions {
            max_hold_ns: (plan.max_hold_ms * 1e6) as u64,
            include_imports: plan.include_imports,
            include_interpreter: plan.include_interpreter,
            t0_ns: t0,
        },
    );
    for h in &mut holds {
        if let Some(ex) = h.examples.first() {
            if check::is_extension_file(&h.object) {
                h.module = Some(module_name(ex.pid, &h.object));
            }
        }
        for ex in &mut h.examples {
            let root = cwds.get(&ex.pid).and_then(|c| c.to_str());
            ex.test = check::pytest_node_id(&ex.python_stack, root);
        }
    }
    let report = Report {
        command: plan.command.clone(),
        command_status,
        command_signal,
        ignore_command_status: plan.ignore_command_status,
        max_hold_ms: plan.max_hold_ms,
        rate_hz: plan.rate_hz,
        seconds: started.elapsed().as_secs_f64(),
        processes,
        holds,
        gc: check::summarize_gc(
            &gc_pauses,
            plan.max_gc_pause_ms.map(|m| (m * 1e6) as u64),
            t0,
        ),
        max_gc_pause_ms: plan.max_gc_pause_ms,
        gil_reenabled,
        subinterpreters: sub_problems,
        warnings,
    };
    write_reports(plan, &report)?;
    Ok(report.exit_code())
}

fn write_file(
    path: &Path,
    what: &str,
    f: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let file = std::fs::File::create(path)
        .with_context(|| format!("cannot create the {what} report {}", path.display()))?;
    let mut w = std::io::BufWriter::new(file);
    f(&mut w)
        .and_then(|()| w.flush())
        .with_context(|| format!("writing the {what} report {}", path.display()))
}

fn write_reports(plan: &CheckPlan, report: &Report) -> Result<()> {
    let stderr = std::io::stderr();
    check::report::write_text(&mut stderr.lock(), report).context("writing to stderr")?;
    if let Some(p) = &plan.json {
        write_file(p, "JSON", |w| check::report::write_json(w, report))?;
    }
    if let Some(p) = &plan.junit {
        write_file(p, "JUnit", |w| check::report::write_junit(w, report))?;
    }
    if plan.github {
        let ws = std::env::var("GITHUB_WORKSPACE").ok();
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        check::report::write_github(&mut out, report, ws.as_deref())
            .context("writing to stdout")?;
        out.flush().context("writing to stdout")?;
    }
    if let Some(t) = &plan.trace {
        eprintln!(
            "gilscope check: recording kept in {} (gilscope view {})",
            t.display(),
            t.display()
        );
    }
    Ok(())
}
