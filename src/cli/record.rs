//! `gilscope record`: wiring the live reader into the recorder — attaching to
//! a PID or launching a command, following Python subprocesses, Ctrl-C.
//!
//! Part of the CLI (`src/cli/`, the only layer that wires the reader, the recorder and the
//! outputs together).

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;

use gilscope::exact::{self, LiveExact, NoExactReason, Prearmed, ProbeOptions, ProbeSet};
use gilscope::model::timeline::{Event, Source, ThreadIdx};
use gilscope::model::Snapshot;
use gilscope::reader::{self, ReadError, ReadErrorKind, Reader, ReaderOptions};
use gilscope::sampler::{
    self, EndReason, ErrorClass, ProgressPrinter, RecordOptions, RecordStats, SnapshotSource,
};

use super::{parse_rate, parse_secs};
use gilscope::output;

#[derive(Args)]
// Neither a PID nor a command is bad usage: clap says so, exit code 2 (docs/cli.md).
#[command(group(clap::ArgGroup::new("what").required(true).args(["pid", "command"])))]
pub struct RecordArgs {
    /// Record this running process.
    #[arg(long, short, conflicts_with = "command")]
    pid: Option<u32>,
    /// The trace file to write.
    #[arg(long, short, default_value = "gilscope.trace")]
    output: std::path::PathBuf,
    /// Samples per second (GIL and thread state and stacks).
    #[arg(long, default_value_t = 1000.0, value_parser = parse_rate)]
    rate: f64,
    /// Stop after this many seconds (default: until Ctrl-C or the target exits).
    #[arg(long, value_parser = parse_secs)]
    duration: Option<std::time::Duration>,
    /// Pause the target while reading each sample (ptrace). Slower; off by default.
    #[arg(long)]
    blocking: bool,
    /// Also record Python processes started by the target, each into
    /// FILE.PID (e.g. gilscope.12345.trace).
    #[arg(long)]
    subprocesses: bool,
    /// Do not read Python stacks (state only; cheaper).
    #[arg(long)]
    no_stacks: bool,
    /// How GIL states are obtained: `exact` (uprobes on take_gil/drop_gil: exact
    /// boundaries; needs root and CPython's symbols), `sampling`, or `auto`
    /// (exact where possible, else sampling; says which and why).
    #[arg(long, value_enum, default_value = "auto")]
    mode: Mode,
    /// The overhead budget, in percent of one CPU (`1`, `0.5%`), or `none`. gilscope's own
    /// CPU and the traps exact mode puts on the target are measured all the time; over the
    /// budget exact mode detaches its probes (the recording goes on sampled), then the
    /// sampling rate is lowered. Each switch is said once and recorded in the trace.
    #[arg(long, default_value = "1", value_name = "PCT|none", value_parser = parse_overhead)]
    max_overhead: Overhead,
    /// After recording, also draw the flame graph of the GIL-holding stacks
    /// into this SVG (as `gilscope flame FILE -o SVG` would).
    #[arg(long, value_name = "SVG")]
    flame: Option<std::path::PathBuf>,
    /// Write no local trace file (with --pyroscope: only push). Without it the trace is
    /// written as always, whatever happens to the push.
    #[arg(long, requires = "pyroscope", conflicts_with_all = ["flame", "subprocesses", "output"])]
    no_trace: bool,
    #[command(flatten)]
    push: super::push::PushArgs,
    /// Launch this command and record it until it exits: `gilscope record -- python app.py`.
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
}

/// `--max-overhead`: a fraction of one CPU, or no budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Overhead(pub Option<f64>);

/// Parses `1`, `1%`, `0.5 %` (percent of one CPU) or `none`/`off`.
pub fn parse_overhead(s: &str) -> std::result::Result<Overhead, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("none") || t.eq_ignore_ascii_case("off") {
        return Ok(Overhead(None));
    }
    let num = t.trim_end_matches('%').trim();
    match num.parse::<f64>() {
        Ok(p) if p.is_finite() && p > 0.0 && p <= 10_000.0 => Ok(Overhead(Some(p / 100.0))),
        _ => Err(format!(
            "`{s}` is not a budget: give a percentage of one CPU (e.g. 1 or 0.5%) or `none`"
        )),
    }
}

/// Returns the exit code: the launched command's when there was one.
pub fn run(args: &RecordArgs) -> Result<u8> {
    // Checked before anything is attached or launched.
    args.push.config()?;
    let plan = RecordPlan {
        output: if args.no_trace {
            PathBuf::from("/dev/null")
        } else {
            args.output.clone()
        },
        rate_hz: args.rate,
        duration: args.duration,
        blocking: args.blocking,
        subprocesses: args.subprocesses,
        stacks: !args.no_stacks,
        mode: args.mode,
        max_overhead: args.max_overhead.0,
        push: args.push.clone(),
    };
    match (args.pid, args.command.is_empty()) {
        (Some(pid), true) => {
            record_pid(pid, &plan)?;
            flame_after_record(args)?;
            Ok(0)
        }
        (None, false) => {
            let launched = record_command(&args.command, &plan)?;
            flame_after_record(args)?;
            if launched.status_code != 0 {
                eprintln!(
                    "gilscope: the command exited with status {}",
                    launched.status_code
                );
            }
            Ok(0)
        }
        _ => anyhow::bail!(
            "say what to record: `gilscope record --pid PID` or `gilscope record -- CMD ARGS...`"
        ),
    }
}

/// `record --flame SVG`: draw the held-GIL flame graph of the trace just written.
fn flame_after_record(args: &RecordArgs) -> Result<()> {
    if let Some(svg) = &args.flame {
        let opts = output::flame::FoldOptions::default();
        output::flame::flame_file(&args.output, svg, &opts)
            .with_context(|| format!("drawing the flame graph {}", svg.display()))?;
        eprintln!("gilscope: flame graph → {}", svg.display());
    }
    Ok(())
}

/// `record --mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Exact where it can, else sampling (says which and why).
    Auto,
    /// GIL transitions from uprobes (root, symbols); states sampled only for on/off CPU.
    Exact,
    /// Sample everything.
    #[value(alias = "sample")]
    Sampling,
}

/// The live reader as a snapshot source for the recorder, with the exact-mode probes when
/// they are on (dropping it removes them).
pub struct LiveSource {
    pub reader: Reader,
    pub exact: Option<LiveExact>,
    /// Exact mode after it was detached (over budget): kept for its final counts.
    pub detached: Option<LiveExact>,
}

impl LiveSource {
    pub fn sampling(reader: Reader) -> Self {
        LiveSource {
            reader,
            exact: None,
            detached: None,
        }
    }
}

impl SnapshotSource for LiveSource {
    fn snapshot(&mut self) -> Result<Snapshot> {
        let snap = self.reader.snapshot()?;
        if let Some(ex) = &mut self.exact {
            ex.on_snapshot(&snap);
        }
        Ok(snap)
    }

    fn mode(&self) -> Source {
        if self.exact.is_some() {
            Source::Exact
        } else {
            Source::Sampled
        }
    }

    fn oncpu_source(&self) -> Option<String> {
        Some(self.reader.oncpu_source().0.describe().to_string())
    }

    fn extra_events(
        &mut self,
        thread_of: &dyn Fn(u32) -> Option<ThreadIdx>,
        end_ns: Option<u64>,
        out: &mut Vec<Event>,
    ) {
        if let Some(ex) = &mut self.exact {
            ex.extra_events(thread_of, end_ns, out);
        }
    }

    fn probe_cost_ns(&self) -> Option<u64> {
        self.exact
            .as_ref()
            .or(self.detached.as_ref())
            .map(|e| e.probe_cost_ns())
    }

    fn probe_ns_per_event(&self) -> Option<u64> {
        self.exact.as_ref().map(|e| e.ns_per_event())
    }

    fn detach_exact(
        &mut self,
        at_ns: u64,
        thread_of: &dyn Fn(u32) -> Option<ThreadIdx>,
        out: &mut Vec<Event>,
    ) {
        if let Some(mut ex) = self.exact.take() {
            ex.detach(at_ns, thread_of, out);
            self.detached = Some(ex);
        }
    }

    fn classify(&self, err: &anyhow::Error) -> ErrorClass {
        match reader::classify(err) {
            Some(ReadErrorKind::NoProcess | ReadErrorKind::Zombie) => ErrorClass::TargetExited,
            Some(
                ReadErrorKind::PermissionDenied
                | ReadErrorKind::NotPython
                | ReadErrorKind::Unsupported,
            ) => ErrorClass::Fatal,
            Some(ReadErrorKind::Inconsistent) | None => ErrorClass::Transient,
        }
    }
}

/// Where the recording goes and how.
pub struct RecordPlan {
    pub output: PathBuf,
    pub rate_hz: f64,
    pub duration: Option<Duration>,
    pub blocking: bool,
    pub subprocesses: bool,
    pub stacks: bool,
    pub mode: Mode,
    /// Fraction of one CPU; `None`: no budget.
    pub max_overhead: Option<f64>,
    /// `--pyroscope` and its options (the target only, not followed subprocesses).
    pub push: super::push::PushArgs,
}

/// Why exact mode is off: the reason, and whether it is a missing privilege (exit code 6)
/// rather than something unsupported (5).
///
/// `--mode auto` under a budget does not open probes whose cost is over it before the first
/// hit: see [`probes_over_budget`].
fn exact_unavailable(
    reader: &mut Reader,
    budget: Option<f64>,
) -> Result<(ProbeSet, (usize, usize)), (NoExactReason, ReadErrorKind)> {
    // check_support's only privilege failure is the missing CAP_SYS_ADMIN ("need root").
    exact::check_support().map_err(|r| {
        let kind = if r.reason.contains("root") {
            ReadErrorKind::PermissionDenied
        } else {
            ReadErrorKind::Unsupported
        };
        (r, kind)
    })?;
    let before = budget.and_then(|_| handovers(reader));
    let layout = reader.layout();
    let plan = exact::resolve_gil_probes(
        reader.pid(),
        &reader.python().binary,
        layout.minor,
        layout.free_threaded,
    )
    .map_err(|r| (r, ReadErrorKind::Unsupported))?;
    if let (Some(budget), Some(before)) = (budget, before) {
        if let Some(why) = probes_over_budget(reader, &plan, budget, before) {
            return Err((why, ReadErrorKind::Unsupported));
        }
    }
    // Every thread there now; later ones are added as the snapshots show them.
    let threads: Vec<(u32, u64)> = reader::procfs::tasks(reader.pid())
        .map(|ts| ts.iter().map(|t| (t.tid, t.start_ticks)).collect())
        .unwrap_or_default();
    let stepped_points = exact::stepped_points(&plan);
    ProbeSet::open(&plan, reader.pid(), &threads, ProbeOptions::default())
        .map(|s| (s, stepped_points))
        .map_err(|e| {
            let denied = e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .and_then(|io| io.raw_os_error())
                    .is_some_and(|n| n == libc::EACCES || n == libc::EPERM)
            });
            (
                NoExactReason {
                    reason: format!("exact mode unavailable: cannot open the uprobes: {e:#}"),
                    enable: if denied {
                        "run gilscope as root (CAP_SYS_ADMIN and CAP_SYS_PTRACE)".into()
                    } else {
                        "see docs/exact-mode.md (What it needs)".into()
                    },
                },
                if denied {
                    ReadErrorKind::PermissionDenied
                } else {
                    ReadErrorKind::Unsupported
                },
            )
        })
}

/// (CLOCK_MONOTONIC ns, GIL hand-overs so far summed over the process's GILs) from one
/// reading; `None` when it fails or no GIL counts them (free-threaded, GIL disabled).
fn handovers(reader: &mut Reader) -> Option<(u64, u64)> {
    let snap = reader.snapshot().ok()?;
    let mut seen = std::collections::HashSet::new();
    let mut total = 0u64;
    for i in &snap.interpreters {
        if i.gil.enabled && seen.insert(i.gil.address) {
            total = total.saturating_add(i.gil.switch_number);
        }
    }
    (!seen.is_empty()).then_some((snap.time_ns, total))
}

/// The least the probes of `plan` would cost the target, from its GIL hand-over rate
/// between `before` and a reading at least 150 ms later (the symbol lookup in between
/// usually takes that long), priced per hit at the calibrated cost: `Some(reason)` when that
/// floor alone is over `budget` (with every thread probed: exact mode probes the threads the
/// sampler has seen, and a thread-per-request server's live for under a sample). A busy
/// server hands the GIL over thousands of times a second; opening probes there only to
/// detach them a window later cost it its throughput while they were open and while the
/// kernel closed them one grace period at a time (2 s on sid 3.15, 11 probe points on two
/// threads).
fn probes_over_budget(
    reader: &mut Reader,
    plan: &exact::ProbePlan,
    budget: f64,
    before: (u64, u64),
) -> Option<NoExactReason> {
    const SPAN_NS: u64 = 150_000_000;
    let now = reader::monotonic_ns();
    if now < before.0 + SPAN_NS {
        std::thread::sleep(Duration::from_nanos(before.0 + SPAN_NS - now));
    }
    let after = handovers(reader)?;
    let span_s = after.0.checked_sub(before.0)? as f64 / 1e9;
    let rate = after.1.saturating_sub(before.1) as f64 / span_s;
    let cost = exact::calibrated().unwrap_or(exact::HitCost::FALLBACK);
    let share = exact::handover_cost_share(&plan.points, cost, rate);
    (share > budget).then(|| NoExactReason {
        reason: format!(
            "at the {rate:.0} GIL hand-overs/s it makes, exact mode's probes would cost the \
             target at least {:.1}% of a CPU, over the --max-overhead budget of {:.1}%",
            share * 100.0,
            budget * 100.0
        ),
        enable: "--mode exact --max-overhead none (or a larger --max-overhead)".into(),
    })
}

/// Picks the mode for `reader`'s process and says which on stderr (one line), then where
/// on-CPU states come from (one line). `--mode exact` without the means is an error (exit
/// code 5, or 6 for a missing privilege).
///
/// `budget` (`--max-overhead`): `--mode auto` samples from the start when the probes would
/// be over it anyway ([`probes_over_budget`]).
pub fn live_source(reader: Reader, mode: Mode, budget: Option<f64>) -> Result<LiveSource> {
    live_source_armed(reader, mode, None, budget)
}

/// [`live_source`], with the probes `prearmed` at launch when they are for this process's
/// Python (`check` and `record -- CMD`, see [`spawn_prearmed`]).
pub fn live_source_armed(
    reader: Reader,
    mode: Mode,
    prearmed: Option<Prearmed>,
    budget: Option<f64>,
) -> Result<LiveSource> {
    let source = pick_source(reader, mode, prearmed, budget)?;
    match source.reader.oncpu_source() {
        (src, None) => eprintln!("gilscope: on-CPU state: {}", src.describe()),
        (src, Some(why)) => eprintln!(
            "gilscope: on-CPU state: {} (perf context-switch records refused: {why})",
            src.describe()
        ),
    }
    Ok(source)
}

fn pick_source(
    mut reader: Reader,
    mode: Mode,
    prearmed: Option<Prearmed>,
    budget: Option<f64>,
) -> Result<LiveSource> {
    if mode == Mode::Sampling {
        eprintln!("gilscope: mode: sampling (--mode sampling)");
        return Ok(LiveSource::sampling(reader));
    }
    let (minor, free_threaded) = (reader.layout().minor, reader.layout().free_threaded);
    let armed = prearmed.and_then(|p| {
        if p.matches(&reader.python().binary, minor, free_threaded) {
            Some(p)
        } else {
            eprintln!(
                "gilscope: the probes armed at launch were for {} (3.{}), not this process's \
                 {} (3.{}): set up again",
                p.file.binary,
                p.file.minor,
                reader.python().binary,
                minor
            );
            None
        }
    });
    let opened = match armed {
        Some(p) => {
            eprintln!(
                "gilscope: mode: exact from the first instruction ({} probe events armed at \
                 launch, the command held {:.0} ms for it; GIL states from uprobes on \
                 take_gil/drop_gil, stacks and on-CPU from sampling)",
                p.set.stats().perf_fds,
                p.held.as_secs_f64() * 1e3,
            );
            Ok((p.set, p.stepped_points))
        }
        None => exact_unavailable(&mut reader, budget.filter(|_| mode == Mode::Auto)).inspect(
            |(set, _)| {
                eprintln!(
                "gilscope: mode: exact ({} probe events on {} thread(s) of process {}, more as \
                 threads start; GIL states from uprobes on take_gil/drop_gil, stacks and on-CPU \
                 from sampling)",
                set.stats().perf_fds,
                set.stats().threads_probed,
                set.pid(),
            );
            },
        ),
    };
    match opened {
        Ok((set, (stepped, points))) => {
            let gil_enabled = !free_threaded;
            let mut ex = LiveExact::new(set, gil_enabled);
            match exact::calibrated() {
                Ok(cost) => {
                    ex.set_hit_cost(cost);
                    eprintln!(
                        "gilscope: exact mode: one probe hit costs the target ~{:.1} µs here, \
                         ~{:.1} µs where the kernel single-steps the instruction ({stepped} of \
                         {points} probe points; calibrated)",
                        cost.emulated_ns as f64 / 1000.0,
                        cost.stepped_ns as f64 / 1000.0,
                    );
                }
                Err(e) => eprintln!(
                    "gilscope: exact mode: could not calibrate the cost of a probe hit ({e:#}); \
                     assuming {:.1} µs",
                    exact::MEASURED_NS_PER_EVENT as f64 / 1000.0
                ),
            }
            Ok(LiveSource {
                reader,
                exact: Some(ex),
                detached: None,
            })
        }
        Err((why, kind)) if mode == Mode::Exact => {
            Err(ReadError::new(kind, format!("--mode exact: {why}")).into())
        }
        Err((why, _)) => {
            eprintln!("gilscope: mode: sampling (auto: {why})");
            Ok(LiveSource::sampling(reader))
        }
    }
}

fn reader_options(plan: &RecordPlan) -> ReaderOptions {
    ReaderOptions {
        blocking: plan.blocking,
        stacks: plan.stacks,
        ..ReaderOptions::default()
    }
}

/// Attaches to a process that may still be starting (a command we just
/// launched): retries while it lives and is not yet a ready CPython, up to
/// `patience`. Returns Ok(None) when it exited or turned out not to be Python
/// within that time.
pub fn attach_when_ready(
    pid: u32,
    opts: &ReaderOptions,
    patience: Duration,
    stop: &AtomicBool,
) -> Result<Option<Reader>> {
    let start = Instant::now();
    loop {
        match Reader::attach(pid, opts.clone()) {
            Ok(r) => return Ok(Some(r)),
            Err(e) => match reader::classify(&e) {
                // A process in the middle of execve (e.g. `chroot ROOT python`) can read as
                // gone for a moment: only a process that is really gone ends the wait.
                Some(ReadErrorKind::NoProcess | ReadErrorKind::Zombie) if !still_running(pid) => {
                    return Ok(None)
                }
                Some(ReadErrorKind::PermissionDenied) => return Err(e),
                _ if start.elapsed() >= patience || stop.load(Ordering::SeqCst) => {
                    return match reader::classify(&e) {
                        Some(ReadErrorKind::NotPython) => Ok(None),
                        _ => Err(e),
                    };
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            },
        }
    }
}

/// The process exists and has not exited (not a zombie, not dead).
fn still_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

fn record_opts(plan: &RecordPlan, output: PathBuf, command: Option<Vec<String>>) -> RecordOptions {
    let mut o = RecordOptions::new(output);
    o.rate_hz = plan.rate_hz;
    o.duration = plan.duration;
    o.command = command;
    o.blocking = plan.blocking;
    o.subprocesses = plan.subprocesses;
    o.max_overhead = plan.max_overhead;
    o
}

/// File name for a followed subprocess: `out.gilscope` → `out.PID.gilscope`.
pub fn child_output(base: &Path, pid: u32) -> PathBuf {
    let stem = base
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "trace".into());
    let name = match base.extension() {
        Some(ext) => format!("{stem}.{pid}.{}", ext.to_string_lossy()),
        None => format!("{stem}.{pid}"),
    };
    base.with_file_name(name)
}

fn describe_stats(pid: u32, s: &RecordStats) -> String {
    let why = match s.end {
        EndReason::Stopped => "stopped",
        EndReason::Duration => "duration reached",
        EndReason::TargetExited => "target exited",
    };
    let mut line = format!(
        "gilscope: recorded process {pid} for {:.1} s ({why}): {} samples at {:.0} Hz, {} failed, {} → {}",
        s.elapsed.as_secs_f64(),
        s.samples,
        s.achieved_hz,
        s.sample_errors,
        sampler::human_bytes(s.bytes),
        s.output.display()
    );
    line.push_str(&format!(
        "\ngilscope: cost: gilscope {:.1}% of a CPU{}",
        s.own_cpu * 100.0,
        if s.probes_cpu > 0.0 {
            format!(
                ", probes {:.1}% of a CPU (charged to the target)",
                s.probes_cpu * 100.0
            )
        } else {
            String::new()
        }
    ));
    if (s.final_rate_hz - s.asked_hz).abs() > 0.5 {
        line.push_str(&format!(
            " (sampling lowered to {:.0} Hz by the budget)",
            s.final_rate_hz
        ));
    }
    if let Some(b) = s.behind_message() {
        line.push_str(&format!(
            "\ngilscope: warning: fell behind the asked rate: {b}"
        ));
    }
    if let (Some(e), true) = (&s.last_error, s.sample_errors > 0) {
        line.push_str(&format!("\ngilscope: last failed sample: {e}"));
    }
    line
}

/// Every descendant of `root` (children, grandchildren, ...), from /proc.
pub fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of: Vec<(u32, u32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Ok(st) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                // "pid (comm) S ppid ..."
                if let Some(rest) = st.rfind(')').and_then(|i| st.get(i + 2..)) {
                    if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok())
                    {
                        parent_of.push((pid, ppid));
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(c, pp) in &parent_of {
            if pp == p && !out.contains(&c) {
                out.push(c);
                frontier.push(c);
            }
        }
    }
    out.sort_unstable();
    out
}

/// Records `reader`'s process into `output`, with a progress line; with `push`, every event
/// written also goes to the Pyroscope pusher (its summary line is printed at the end).
fn record_one(
    mut source: LiveSource,
    opts: RecordOptions,
    stop: &AtomicBool,
    progress: bool,
    push: Option<&super::push::PushArgs>,
) -> Result<RecordStats> {
    let mut printer = ProgressPrinter::stderr();
    let mut pusher = match push {
        Some(p) => p.start(opts.rate_hz)?,
        None => None,
    };
    let tap = pusher.as_mut().and_then(|p| p.tap());
    let stats = sampler::record_with(
        &mut source,
        &opts,
        stop,
        &mut sampler::MonotonicClock,
        |p| {
            if progress {
                printer.update(p);
            }
        },
        tap,
    );
    if progress {
        printer.finish();
    }
    if let Some(p) = pusher {
        let url = p.url().to_string();
        eprintln!("{}", p.finish(super::push::FINISH_GRACE).summary_line(&url));
    }
    if let Some(ex) = source.exact.as_ref().or(source.detached.as_ref()) {
        eprintln!("{}", ex.summary_line());
    }
    // Dropping the source closes the probes (also on every error path above).
    drop(source);
    stats
}

/// What each followed subprocess recorded, by PID.
type ChildResults = Vec<(u32, Result<RecordStats>)>;

/// Follows Python descendants of `root` into their own trace files until
/// `done` is set. Returns what each recorded.
fn follow_subprocesses(
    root: u32,
    plan: &RecordPlan,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
) -> std::thread::JoinHandle<ChildResults> {
    let ropts = reader_options(plan);
    let base = plan.output.clone();
    let plan_rate = plan.rate_hz;
    let plan_duration = plan.duration;
    let blocking = plan.blocking;
    let max_overhead = plan.max_overhead;
    std::thread::spawn(move || {
        let results: Arc<Mutex<ChildResults>> = Arc::default();
        let mut seen = std::collections::HashSet::new();
        let mut workers = Vec::new();
        while !done.load(Ordering::SeqCst) && !stop.load(Ordering::SeqCst) {
            for pid in descendants(root) {
                if !seen.insert(pid) {
                    continue;
                }
                let ropts = ropts.clone();
                let stop = stop.clone();
                let results = results.clone();
                let mut opts = RecordOptions::new(child_output(&base, pid));
                opts.rate_hz = plan_rate;
                opts.duration = plan_duration;
                opts.blocking = blocking;
                opts.subprocesses = true;
                opts.max_overhead = max_overhead;
                workers.push(std::thread::spawn(move || {
                    match attach_when_ready(pid, &ropts, Duration::from_secs(5), &stop) {
                        Ok(Some(reader)) => {
                            eprintln!(
                                "gilscope: following Python subprocess {pid} → {}",
                                opts.output.display()
                            );
                            let r =
                                record_one(LiveSource::sampling(reader), opts, &stop, false, None);
                            if let Ok(mut v) = results.lock() {
                                v.push((pid, r));
                            }
                        }
                        Ok(None) => {} // not Python, or gone
                        Err(e) => {
                            if let Ok(mut v) = results.lock() {
                                v.push((pid, Err(e)));
                            }
                        }
                    }
                }));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for w in workers {
            let _ = w.join();
        }
        let mut v = results
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default();
        v.sort_by_key(|(p, _)| *p);
        v
    })
}

/// `gilscope record --pid PID`.
pub fn record_pid(pid: u32, plan: &RecordPlan) -> Result<()> {
    let stop = sampler::install_stop_handler();
    if plan.mode != Mode::Sampling {
        // Calibrates while the reader attaches and the probes are opened.
        exact::start_calibration();
    }
    let reader = Reader::attach(pid, reader_options(plan))?;
    let version = reader.python().version.clone();
    let source = live_source(reader, plan.mode, plan.max_overhead)?;
    eprintln!(
        "gilscope: recording process {pid} (Python {version}) at {} into {} — Ctrl-C to stop",
        sampler::rate_text(plan.rate_hz),
        plan.output.display()
    );
    let done = Arc::new(AtomicBool::new(false));
    let follower = plan
        .subprocesses
        .then(|| follow_subprocesses(pid, plan, stop.clone(), done.clone()));
    let opts = record_opts(plan, plan.output.clone(), None);
    let stats = record_one(source, opts, &stop, true, Some(&plan.push));
    done.store(true, Ordering::SeqCst);
    report_children(follower);
    let stats = stats?;
    eprintln!("{}", describe_stats(pid, &stats));
    Ok(())
}

fn report_children(follower: Option<std::thread::JoinHandle<ChildResults>>) {
    let Some(f) = follower else { return };
    match f.join() {
        Ok(results) => {
            for (pid, r) in results {
                match r {
                    Ok(s) => eprintln!("{}", describe_stats(pid, &s)),
                    Err(e) => eprintln!("gilscope: warning: subprocess {pid}: {e:#}"),
                }
            }
        }
        Err(_) => eprintln!("gilscope: warning: the subprocess follower failed"),
    }
}

/// The outcome of a launched command: its exit status as a shell reports it.
pub struct Launched {
    pub status_code: i32,
}

pub fn spawn(cmd: &[String]) -> Result<Child> {
    let (prog, mut command) = command_of(cmd)?;
    command.spawn().map_err(|e| spawn_error(prog, e))
}

/// [`spawn`], holding the command at the moment its Python is mapped to arm the GIL probes
/// there (reader::launch, exact::launch), so that exact mode covers it from its first
/// instruction. Says on stderr what it did; when the probes cannot be armed the command
/// runs all the same (and `None` is returned: the probes are then set up once Python runs).
pub fn spawn_prearmed(cmd: &[String]) -> Result<(Child, Option<Prearmed>)> {
    let (prog, mut command) = command_of(cmd)?;
    // Calibrates while the probes are armed (the command waits for those anyway).
    exact::start_calibration();
    match reader::launch::spawn_held(&mut command, Duration::from_secs(10), exact::launch::arm) {
        Ok((child, held)) => match held.value {
            Ok(mut p) => {
                p.held = held.held;
                Ok((child, Some(p)))
            }
            Err(why) => {
                eprintln!(
                    "gilscope: no probes at launch ({why}); they are set up once Python runs"
                );
                Ok((child, None))
            }
        },
        // PTRACE_TRACEME refused (the child reports it as the spawn's error): launch plainly.
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            eprintln!(
                "gilscope: no probes at launch (ptrace refused: {e}); they are set up once \
                 Python runs"
            );
            Ok((spawn(cmd)?, None))
        }
        Err(e) => Err(spawn_error(prog, e)),
    }
}

fn command_of(cmd: &[String]) -> Result<(&str, Command)> {
    let Some((prog, args)) = cmd.split_first() else {
        bail!("no command given after `--`");
    };
    let mut c = Command::new(prog);
    c.args(args);
    Ok((prog.as_str(), c))
}

fn spawn_error(prog: &str, e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        anyhow::anyhow!("cannot run {prog:?}: no such command (not a path, and not found in PATH)")
    } else {
        anyhow::Error::new(e).context(format!("cannot run {prog:?}"))
    }
}

fn finish_child(
    child: &mut Child,
    end_it: bool,
    stop: &AtomicBool,
) -> Result<std::process::ExitStatus> {
    if end_it {
        if let Ok(None) = try_wait_exited(child) {
            // SAFETY: kill(2) on our own child's PID.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Some(st) = try_wait_exited(child)? {
                    return Ok(st);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
        }
    } else {
        // Following subprocesses only: wait for the command, unless stopped.
        while !stop.load(Ordering::SeqCst) {
            if let Some(st) = try_wait_exited(child)? {
                return Ok(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        return finish_child(child, true, stop);
    }
    child.wait().context("waiting for the command")
}

/// `child.try_wait()` that only ever consumes the child's *exit*. A plain `waitpid` (what
/// `try_wait` calls) also reports — and so takes away — the ptrace stops of a traced child:
/// when another thread of gilscope has stopped the child's main thread with ptrace (`check`'s
/// native stacks, `--blocking`), `try_wait` could take that stop for itself, leaving the
/// tracer waiting for ever and the stopped child looking exited. `waitid(WEXITED | WNOWAIT)`
/// peeks without reaping, and only an exit (by its `si_code`) is then reaped with `wait`.
pub fn try_wait_exited(child: &mut Child) -> Result<Option<std::process::ExitStatus>> {
    // SAFETY: a zeroed siginfo_t is valid for waitid to fill; the pid is our own child's.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let rc = unsafe {
        libc::waitid(
            libc::P_PID,
            child.id() as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ECHILD) {
            // Already reaped.
            return child.try_wait().context("waiting for the command");
        }
        return Err(e).context("waiting for the command");
    }
    // SAFETY: waitid filled `info`; si_pid is 0 when no child has changed state.
    if unsafe { info.si_pid() } == 0 {
        return Ok(None);
    }
    // waitid reports a traced child's ptrace stops even without WSTOPPED (the kernel shows
    // them to every thread of the tracer's process). A stop is not an exit: reaping it here
    // would steal the notification the tracing thread (the native unwinder) is waiting for,
    // leaving it, and the stopped command, hung.
    if !matches!(
        info.si_code,
        libc::CLD_EXITED | libc::CLD_KILLED | libc::CLD_DUMPED
    ) {
        return Ok(None);
    }
    child.wait().map(Some).context("waiting for the command")
}

pub fn exit_code_of(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// `gilscope record -- CMD ARGS...`: launches the command and records it
/// (and, with `--subprocesses`, its Python descendants) until it exits.
pub fn record_command(cmd: &[String], plan: &RecordPlan) -> Result<Launched> {
    let stop = sampler::install_stop_handler();
    // Exact mode from the command's first instruction: the probes are armed at launch.
    let (mut child, prearmed) = if plan.mode == Mode::Sampling {
        (spawn(cmd)?, None)
    } else {
        spawn_prearmed(cmd)?
    };
    let pid = child.id();
    let ropts = reader_options(plan);
    let done = Arc::new(AtomicBool::new(false));
    let follower = plan
        .subprocesses
        .then(|| follow_subprocesses(pid, plan, stop.clone(), done.clone()));

    let outcome = match attach_when_ready(pid, &ropts, Duration::from_secs(10), &stop) {
        Ok(Some(reader)) => {
            eprintln!(
                "gilscope: recording {} (PID {pid}, Python {}) at {} into {}",
                cmd.join(" "),
                reader.python().version,
                sampler::rate_text(plan.rate_hz),
                plan.output.display()
            );
            let source = match live_source_armed(reader, plan.mode, prearmed, plan.max_overhead) {
                Ok(s) => s,
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    done.store(true, Ordering::SeqCst);
                    report_children(follower);
                    return Err(e);
                }
            };
            let opts = record_opts(plan, plan.output.clone(), Some(cmd.to_vec()));
            Some(record_one(source, opts, &stop, true, Some(&plan.push)))
        }
        Ok(None) => {
            if !plan.subprocesses {
                eprintln!(
                    "gilscope: warning: {} (PID {pid}) is not a CPython process; nothing recorded \
                     (use --subprocesses to follow Python processes it starts)",
                    cmd[0]
                );
            }
            None
        }
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            done.store(true, Ordering::SeqCst);
            report_children(follower);
            return Err(e);
        }
    };
    // The recorder returns when the target exits, on Ctrl-C, or when
    // --duration is reached. A command still running then was launched for
    // this recording only: end it (SIGTERM, then SIGKILL after 5 s).
    let status = finish_child(&mut child, outcome.is_some() || !plan.subprocesses, &stop)?;
    done.store(true, Ordering::SeqCst);
    report_children(follower);
    if let Some(stats) = outcome {
        let stats = stats?;
        eprintln!("{}", describe_stats(pid, &stats));
    }
    Ok(Launched {
        status_code: exit_code_of(status),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_file_names() {
        assert_eq!(
            child_output(Path::new("/t/out.gilscope"), 42),
            PathBuf::from("/t/out.42.gilscope")
        );
        assert_eq!(
            child_output(Path::new("trace"), 7),
            PathBuf::from("trace.7")
        );
    }

    #[test]
    fn finds_own_children() {
        let mut c = Command::new("sleep").arg("5").spawn().unwrap();
        let d = descendants(std::process::id());
        let _ = c.kill();
        let _ = c.wait();
        assert!(d.contains(&c.id()));
    }
}
