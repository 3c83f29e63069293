//! `gilscope record`: the sampling loop, independent of how snapshots are
//! taken. The CLI passes the live reader as a [`SnapshotSource`]; tests pass
//! scripted snapshots and a virtual [`Clock`].
//!
//! Scheduling uses absolute deadlines on CLOCK_MONOTONIC (`start + k·period`),
//! so it never drifts; a sample that takes longer than a period makes the
//! loop skip to the current slot, and the skipped ticks are counted and
//! reported ("asked 1000 Hz, achieved 612 Hz (39% behind)").

mod clock;
mod progress;
mod stop;

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

use crate::model::timeline::{Event, Source, ThreadIdx};
use crate::model::Snapshot;
use crate::trace::{EventTap, Metadata, OptionsMeta, TraceWriter};

pub use clock::{Clock, MonotonicClock};
use progress::behind_pct;
pub use progress::{
    behind_message, human_bytes, rate_text, Progress, ProgressPrinter, BEHIND_WARN_PCT, RATE_MAX,
};
pub use stop::install_stop_handler;

/// Anything that can read the target once.
pub trait SnapshotSource {
    fn snapshot(&mut self) -> Result<Snapshot>;

    /// What an error from [`snapshot`](Self::snapshot) means for the
    /// recording. The default counts it and goes on.
    fn classify(&self, _err: &anyhow::Error) -> ErrorClass {
        ErrorClass::Transient
    }

    /// Which mode produced the GIL states (the trace header's `mode`).
    fn mode(&self) -> Source {
        Source::Sampled
    }

    /// Events the source has besides snapshots (exact mode: exact runs,
    /// warnings), asked for before each flush and once at the end
    /// (`end_ns`: the end of the recording; close everything there).
    /// `thread_of(tid)` is the thread number the trace gave a kernel thread;
    /// runs may only name threads it knows.
    fn extra_events(
        &mut self,
        _thread_of: &dyn Fn(u32) -> Option<ThreadIdx>,
        _end_ns: Option<u64>,
        _out: &mut Vec<Event>,
    ) {
    }

    /// The time the source's probes have cost the target so far, ns (exact mode; `None`
    /// without probes).
    fn probe_cost_ns(&self) -> Option<u64> {
        None
    }

    /// What one probe hit costs the target, ns (for the trace header).
    fn probe_ns_per_event(&self) -> Option<u64> {
        None
    }

    /// Where the threads' on/off-CPU state comes from (for the trace header).
    fn oncpu_source(&self) -> Option<String> {
        None
    }

    /// Detach the probes at `at_ns` (over the overhead budget) and hand out every exact run
    /// up to there; sampling goes on.
    fn detach_exact(
        &mut self,
        _at_ns: u64,
        _thread_of: &dyn Fn(u32) -> Option<ThreadIdx>,
        _out: &mut Vec<Event>,
    ) {
    }
}

/// gilscope's own CPU time so far (every thread: user + system), ns.
pub fn own_cpu_ns() -> u64 {
    // SAFETY: getrusage fills the struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0;
    }
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1_000;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The overhead budget's bookkeeping: costs per window, what was done about them.
#[derive(Debug, Clone)]
struct Budget {
    /// Fraction of one CPU (`None`: measured, never acted on).
    limit: Option<f64>,
    /// (time, own CPU ns, probe cost ns) at the last check and at the last COST record.
    last: (u64, u64, u64),
    last_cost: (u64, u64, u64),
    /// At the start: for the averages.
    first: (u64, u64, u64),
    /// Fractions of one CPU over the last window.
    own: f64,
    probes: f64,
    /// Consecutive windows in which gilscope's own CPU was over the budget.
    own_over: u32,
    exact: bool,
    rate_hz: f64,
    changes: Vec<String>,
    floor_said: bool,
    /// The current window was looked at early (at [`BUDGET_EARLY_NS`]).
    early_looked: bool,
}

/// How often the budget is checked (a switch happens within about two of these).
const BUDGET_WINDOW_NS: u64 = 250_000_000;
/// A window ten times over the budget ends early, this far into it: exact mode's probes on a
/// server that switches its GIL all the time, or sampling a server with a new thread at every
/// sample, cost it ~15 % of a CPU for every window gilscope waits. (Not the first window of a
/// recording for gilscope's own CPU: the first samples read every code object's names.)
const BUDGET_EARLY_NS: u64 = 100_000_000;
/// The budget never lowers the sampling rate below this: fewer samples than that say too
/// little about a recording of seconds. (Then gilscope stays over the budget and says so.)
pub const MIN_BUDGET_RATE_HZ: f64 = 50.0;

/// The rate to go down to when sampling at `rate` cost `own` (fraction of a CPU) against a
/// budget of `limit`: 80 % of what would just fit (cost is about linear in the rate), at most
/// a third lower than now at each step (a burst of new threads is dearer than what follows),
/// never below [`MIN_BUDGET_RATE_HZ`].
pub fn lowered_rate(rate: f64, limit: f64, own: f64) -> f64 {
    (rate * limit / own.max(1e-9) * 0.8)
        .clamp(MIN_BUDGET_RATE_HZ, (rate / 1.5).max(MIN_BUDGET_RATE_HZ))
}

fn ppm(f: f64) -> u64 {
    (f.max(0.0) * 1e6).round() as u64
}

/// Asks `source` for its extra events and writes them (in time order).
fn write_extra(
    source: &mut dyn SnapshotSource,
    w: &mut TraceWriter,
    end_ns: Option<u64>,
    buf: &mut Vec<Event>,
) -> std::io::Result<()> {
    buf.clear();
    source.extra_events(&|tid| w.thread_of_tid(tid), end_ns, buf);
    buf.sort_by_key(|e| e.time_ns().unwrap_or(0));
    for e in buf.iter() {
        w.write_event(e)?;
    }
    Ok(())
}

/// How the recorder treats a failed snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Count it, note it in the trace, keep sampling (a torn read, a thread
    /// that vanished mid-read).
    Transient,
    /// The target is gone: finish the file and end normally.
    TargetExited,
    /// Nothing more can be read (permissions lost, not Python any more):
    /// finish the file and return the error.
    Fatal,
}

/// What `gilscope record` was asked to do.
#[derive(Debug, Clone)]
pub struct RecordOptions {
    /// The trace file to write (created or truncated).
    pub output: PathBuf,
    /// Samples per second (state and stacks). Default 1000.
    pub rate_hz: f64,
    /// Stop after this long; `None` = until stopped or the target exits.
    pub duration: Option<Duration>,
    /// Write a chunk at least this often (default 1 s).
    pub flush_interval: Duration,
    /// Call the progress callback at most this often (default 250 ms).
    pub progress_interval: Duration,
    /// The command gilscope launched, for the header.
    pub command: Option<Vec<String>>,
    /// Recorded in the header; the source implements them.
    pub blocking: bool,
    pub subprocesses: bool,
    /// The overhead budget, a fraction of one CPU (`--max-overhead`): over it, exact mode's
    /// probes are detached and then the sampling rate lowered. `None`: no budget.
    pub max_overhead: Option<f64>,
}

impl RecordOptions {
    pub fn new(output: impl Into<PathBuf>) -> Self {
        RecordOptions {
            output: output.into(),
            rate_hz: 1000.0,
            duration: None,
            flush_interval: Duration::from_secs(1),
            progress_interval: Duration::from_millis(250),
            command: None,
            blocking: false,
            subprocesses: false,
            max_overhead: None,
        }
    }

    fn period_ns(&self) -> u64 {
        if self.rate_hz.is_finite() && self.rate_hz > 0.0 {
            ((1e9 / self.rate_hz) as u64).max(1)
        } else {
            1_000_000
        }
    }
}

/// Why a recording ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The stop flag was set (Ctrl-C, SIGTERM).
    Stopped,
    /// `--duration` elapsed.
    Duration,
    /// The target exited.
    TargetExited,
}

/// What a finished recording did.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordStats {
    pub output: PathBuf,
    pub end: EndReason,
    pub samples: u64,
    pub sample_errors: u64,
    /// The last sample error, if any.
    pub last_error: Option<String>,
    pub missed_ticks: u64,
    pub elapsed: Duration,
    pub asked_hz: f64,
    pub achieved_hz: f64,
    pub bytes: u64,
    /// Over the whole recording, fractions of one CPU: gilscope's own CPU, and the time the
    /// probes cost the target (exact mode).
    pub own_cpu: f64,
    pub probes_cpu: f64,
    /// What the overhead budget did, one line each (also MODE records in the trace).
    pub budget_changes: Vec<String>,
    /// The sampling rate at the end (lower than asked when the budget lowered it).
    pub final_rate_hz: f64,
}

impl RecordStats {
    pub fn behind_pct(&self) -> f64 {
        behind_pct(self.asked_hz, self.achieved_hz)
    }

    /// The falling-behind warning, when it applies (not when the budget lowered the rate).
    pub fn behind_message(&self) -> Option<String> {
        if self.final_rate_hz < self.asked_hz - 0.5 {
            return None;
        }
        behind_message(self.asked_hz, self.achieved_hz)
    }
}

/// Record until stopped, `opts.duration` elapses or the target exits.
/// The file is written as samples come and finished on every way out.
pub fn record(
    source: &mut dyn SnapshotSource,
    opts: &RecordOptions,
    stop: &AtomicBool,
    progress: impl FnMut(&Progress),
) -> Result<RecordStats> {
    record_with(source, opts, stop, &mut MonotonicClock, progress, None)
}

/// [`record`] with an explicit clock, and an optional tap that receives every
/// event written (to feed a live [`Timeline`](crate::model::timeline::Timeline)).
pub fn record_with(
    source: &mut dyn SnapshotSource,
    opts: &RecordOptions,
    stop: &AtomicBool,
    clock: &mut dyn Clock,
    mut progress: impl FnMut(&Progress),
    tap: Option<EventTap>,
) -> Result<RecordStats> {
    // Open first: an unwritable path fails before any sampling.
    let file = File::create(&opts.output)
        .with_context(|| format!("cannot create trace file {}", opts.output.display()))?;
    let mut rec = Recording::new(opts, clock, file, tap);
    let end = loop {
        match rec.wait_for_tick(stop, clock) {
            Tick::Due => {}
            Tick::Again => continue,
            Tick::End(why) => break why,
        }
        if let Some(why) = rec.take_sample(source, clock)? {
            break why;
        }
        let now = rec.advance_tick(clock);
        rec.check_budget(source, now)?;
        rec.flush_if_due(source, now)?;
        rec.report_if_due(now, &mut progress);
    };
    rec.finish(source, clock, end)
}

/// What the loop decided while waiting for the next tick.
enum Tick {
    /// Sample now.
    Due,
    /// Woken early (a signal): wait again.
    Again,
    End(EndReason),
}

/// The state of one recording, advanced by the steps of [`record_with`]'s loop.
struct Recording<'a> {
    opts: &'a RecordOptions,
    path: &'a std::path::Path,
    /// The trace file until the first sample makes a writer of it (its header needs the
    /// first snapshot).
    file: Option<File>,
    tap: Option<EventTap>,
    writer: Option<TraceWriter>,
    period: u64,
    start: u64,
    /// Ticks count from here (moved when the budget lowers the rate).
    sched_start: u64,
    budget: Budget,
    start_unix: Option<u64>,
    end_at: Option<u64>,
    flush_every: u64,
    progress_every: u64,
    samples: u64,
    errors: u64,
    last_error: Option<String>,
    /// The kind of the last failed sample's error, when it has one (its exit code).
    last_error_kind: Option<crate::reader::ReadErrorKind>,
    missed: u64,
    tick: u64,
    last_sample_ns: Option<u64>,
    last_flush: u64,
    /// (time, samples) at the last progress report.
    last_progress: (u64, u64),
    exit_at: Option<u64>,
    fatal: Option<anyhow::Error>,
    extra: Vec<Event>,
}

impl<'a> Recording<'a> {
    fn new(
        opts: &'a RecordOptions,
        clock: &mut dyn Clock,
        file: File,
        tap: Option<EventTap>,
    ) -> Self {
        let start = clock.now_ns();
        let cpu = own_cpu_ns();
        Recording {
            sched_start: start,
            budget: Budget {
                limit: opts.max_overhead,
                last: (start, cpu, 0),
                last_cost: (start, cpu, 0),
                first: (start, cpu, 0),
                own: 0.0,
                probes: 0.0,
                own_over: 0,
                exact: false,
                rate_hz: opts.rate_hz,
                changes: Vec::new(),
                floor_said: false,
                early_looked: false,
            },
            opts,
            path: &opts.output,
            file: Some(file),
            tap,
            writer: None,
            period: opts.period_ns(),
            start,
            start_unix: clock.unix_now_ns(),
            end_at: opts
                .duration
                .map(|d| start.saturating_add(d.as_nanos().min(u64::MAX as u128) as u64)),
            flush_every: opts.flush_interval.as_nanos().max(1) as u64,
            progress_every: opts.progress_interval.as_nanos().max(1) as u64,
            samples: 0,
            errors: 0,
            last_error: None,
            last_error_kind: None,
            missed: 0,
            tick: 0,
            last_sample_ns: None,
            last_flush: start,
            last_progress: (start, 0),
            exit_at: None,
            fatal: None,
            extra: Vec::new(),
        }
    }

    fn io_context(&self) -> String {
        format!("writing trace file {}", self.path.display())
    }

    /// Sleep until this tick's absolute deadline, unless the recording is over.
    fn wait_for_tick(&self, stop: &AtomicBool, clock: &mut dyn Clock) -> Tick {
        if stop.load(Ordering::SeqCst) {
            return Tick::End(EndReason::Stopped);
        }
        let deadline = self
            .sched_start
            .saturating_add(self.tick.saturating_mul(self.period));
        if self.end_at.is_some_and(|e| deadline >= e) {
            return Tick::End(EndReason::Duration);
        }
        if clock.now_ns() < deadline {
            clock.sleep_until(deadline);
            if stop.load(Ordering::SeqCst) {
                return Tick::End(EndReason::Stopped);
            }
            if clock.now_ns() < deadline {
                return Tick::Again;
            }
        }
        Tick::Due
    }

    /// Read the target once and write what came back; `Some` when that ends the recording.
    fn take_sample(
        &mut self,
        source: &mut dyn SnapshotSource,
        clock: &mut dyn Clock,
    ) -> Result<Option<EndReason>> {
        let attempt = clock.now_ns();
        match source.snapshot() {
            Ok(snap) => {
                if self.writer.is_none() {
                    self.open_writer(source, &snap)?;
                }
                if let Some(w) = &mut self.writer {
                    w.write_snapshot(&snap)
                        .with_context(|| format!("writing trace file {}", self.path.display()))?;
                }
                self.samples += 1;
                self.last_sample_ns = Some(snap.time_ns);
                Ok(None)
            }
            Err(e) => match source.classify(&e) {
                ErrorClass::TargetExited => {
                    self.exit_at = Some(attempt);
                    Ok(Some(EndReason::TargetExited))
                }
                ErrorClass::Fatal => {
                    self.fatal = Some(e);
                    Ok(Some(EndReason::Stopped))
                }
                ErrorClass::Transient => {
                    self.errors += 1;
                    let msg = format!("{e:#}");
                    if let Some(w) = &mut self.writer {
                        w.write_sample_error(attempt, &msg).with_context(|| {
                            format!("writing trace file {}", self.path.display())
                        })?;
                    }
                    self.last_error = Some(msg);
                    self.last_error_kind = crate::reader::classify(&e);
                    Ok(None)
                }
            },
        }
    }

    /// The header is written with the first snapshot (it names the target's version and
    /// interpreters).
    fn open_writer(&mut self, source: &dyn SnapshotSource, snap: &Snapshot) -> Result<()> {
        let opts = self.opts;
        let mut meta = Metadata::from_snapshot(snap);
        meta.mode = source.mode();
        meta.target.command = opts.command.clone();
        meta.options = OptionsMeta {
            rate_hz: opts.rate_hz,
            duration_s: opts.duration.map(|d| d.as_secs_f64()),
            blocking: opts.blocking,
            subprocesses: opts.subprocesses,
            max_overhead_pct: opts.max_overhead.map(|f| f * 100.0),
            probe_ns_per_event: source.probe_ns_per_event(),
            oncpu_source: source.oncpu_source(),
        };
        self.budget.exact = source.mode() == Source::Exact;
        // Wall-clock time of the first sample (same monotonic clock).
        meta.clock.start_unix_ns = self
            .start_unix
            .map(|u| u.saturating_add(snap.time_ns.saturating_sub(self.start)));
        let f = self
            .file
            .take()
            .ok_or_else(|| anyhow!("trace file already used"))?;
        let mut w = TraceWriter::new(f, self.path, &meta).with_context(|| self.io_context())?;
        if let Some(t) = self.tap.take() {
            w.set_tap(t);
        }
        self.writer = Some(w);
        Ok(())
    }

    /// Next slot: the one after this tick or, when late, the slot we are in (the skipped
    /// ticks are counted as missed). Returns the time now.
    fn advance_tick(&mut self, clock: &mut dyn Clock) -> u64 {
        let now = clock.now_ns();
        let current_slot = now.saturating_sub(self.sched_start) / self.period;
        let next = (self.tick + 1).max(current_slot);
        self.missed += next - (self.tick + 1);
        self.tick = next;
        now
    }

    /// Write a chunk (with the source's extra events) when the flush interval has passed.
    fn flush_if_due(&mut self, source: &mut dyn SnapshotSource, now: u64) -> Result<()> {
        if now.saturating_sub(self.last_flush) < self.flush_every {
            return Ok(());
        }
        let cost = self.cost_event(source, now);
        if let Some(w) = &mut self.writer {
            write_extra(source, w, None, &mut self.extra)
                .with_context(|| format!("writing trace file {}", self.path.display()))?;
            w.write_event(&cost)
                .with_context(|| format!("writing trace file {}", self.path.display()))?;
            w.flush()
                .with_context(|| format!("writing trace file {}", self.path.display()))?;
        }
        self.last_flush = now;
        Ok(())
    }

    /// A COST record for the time since the previous one.
    fn cost_event(&mut self, source: &dyn SnapshotSource, now: u64) -> Event {
        let cpu = own_cpu_ns();
        let probe = source.probe_cost_ns().unwrap_or(0);
        let (t0, c0, p0) = self.budget.last_cost;
        let dt = now.saturating_sub(t0).max(1) as f64;
        self.budget.last_cost = (now, cpu, probe);
        Event::Cost {
            time_ns: now,
            own_ppm: ppm(cpu.saturating_sub(c0) as f64 / dt),
            probes_ppm: ppm(probe.saturating_sub(p0) as f64 / dt),
        }
    }

    /// Every [`BUDGET_WINDOW_NS`]: what gilscope's CPU and the probes cost over the window;
    /// over the budget, detach the probes when they are the larger part, else (two windows
    /// running) lower the sampling rate. Each switch is a MODE record and one stderr line.
    fn check_budget(&mut self, source: &mut dyn SnapshotSource, now: u64) -> Result<()> {
        let (t0, c0, p0) = self.budget.last;
        let span = now.saturating_sub(t0);
        if span < BUDGET_WINDOW_NS {
            let Some(limit) = self.budget.limit else {
                return Ok(());
            };
            if span < BUDGET_EARLY_NS || self.budget.early_looked {
                return Ok(());
            }
            self.budget.early_looked = true;
            let far = if self.budget.exact {
                let probe = source.probe_cost_ns().unwrap_or(0);
                probe.saturating_sub(p0) as f64 / span as f64 > 10.0 * limit
            } else {
                t0 != self.budget.first.0
                    && own_cpu_ns().saturating_sub(c0) as f64 / span as f64 > 10.0 * limit
            };
            if !far {
                return Ok(());
            }
        }
        self.budget.early_looked = false;
        let cpu = own_cpu_ns();
        let probe = source.probe_cost_ns().unwrap_or(0);
        let dt = (now - t0) as f64;
        self.budget.own = cpu.saturating_sub(c0) as f64 / dt;
        self.budget.probes = probe.saturating_sub(p0) as f64 / dt;
        self.budget.last = (now, cpu, probe);
        let ctx = self.io_context();
        let Some(limit) = self.budget.limit else {
            return Ok(());
        };
        let (own, probes) = (self.budget.own, self.budget.probes);
        if own + probes <= limit {
            self.budget.own_over = 0;
            return Ok(());
        }
        let pct = |f: f64| format!("{:.1}%", f * 100.0);
        if self.budget.exact && (probes > limit || probes >= own) {
            let reason = format!(
                "over the overhead budget ({} of a CPU): exact mode's probes cost the target {} of a CPU (gilscope itself {}); probes detached, GIL states sampled at {:.0} Hz from here on",
                pct(limit),
                pct(probes),
                pct(own),
                self.budget.rate_hz
            );
            if let Some(w) = &mut self.writer {
                self.extra.clear();
                source.detach_exact(now, &|tid| w.thread_of_tid(tid), &mut self.extra);
                self.extra.sort_by_key(|e| e.time_ns().unwrap_or(0));
                for e in &self.extra {
                    w.write_event(e).with_context(|| ctx.clone())?;
                }
                w.write_event(&Event::Mode {
                    time_ns: now,
                    mode: Source::Sampled,
                    rate_hz: self.budget.rate_hz,
                    own_ppm: ppm(own),
                    probes_ppm: ppm(probes),
                    reason: reason.clone(),
                })
                .with_context(|| ctx.clone())?;
            }
            self.budget.exact = false;
            self.budget.own_over = 0;
            eprintln!("\ngilscope: {reason}");
            self.budget.changes.push(reason);
            return Ok(());
        }
        if own <= limit {
            return Ok(());
        }
        self.budget.own_over += 1;
        let rate = self.budget.rate_hz;
        // Four windows running (1 s): not for a burst (the first samples read every code
        // object's names, for one). Two (0.5 s) when far over, three times the budget, and
        // one when ten times over: a busy server pays for every window gilscope waits, and a
        // burst fills part of one window only (a few milliseconds of a 250 ms window).
        let needed = if own > 10.0 * limit {
            1
        } else if own > 3.0 * limit {
            2
        } else {
            4
        };
        if self.budget.own_over < needed {
            return Ok(());
        }
        if rate <= MIN_BUDGET_RATE_HZ {
            if !self.budget.floor_said {
                self.budget.floor_said = true;
                let msg = format!(
                    "still over the overhead budget ({} of a CPU) at the lowest sampling rate \
                     ({MIN_BUDGET_RATE_HZ:.0} Hz): gilscope uses {} of a CPU",
                    pct(limit),
                    pct(own)
                );
                eprintln!("\ngilscope: {msg}");
                self.budget.changes.push(msg);
            }
            return Ok(());
        }
        self.budget.own_over = 0;
        // (rate > MIN_BUDGET_RATE_HZ here, so the bounds are in order.)
        let new_rate = lowered_rate(rate, limit, own);
        let reason = format!(
            "over the overhead budget ({} of a CPU): gilscope used {} of a CPU sampling at {rate:.0} Hz; sampling at {new_rate:.0} Hz from here on",
            pct(limit),
            pct(own)
        );
        if let Some(w) = &mut self.writer {
            w.write_event(&Event::Mode {
                time_ns: now,
                mode: if self.budget.exact {
                    Source::Exact
                } else {
                    Source::Sampled
                },
                rate_hz: new_rate,
                own_ppm: ppm(own),
                probes_ppm: ppm(probes),
                reason: reason.clone(),
            })
            .with_context(|| ctx.clone())?;
        }
        self.budget.rate_hz = new_rate;
        self.period = ((1e9 / new_rate) as u64).max(1);
        self.sched_start = now;
        self.tick = 1;
        eprintln!("\ngilscope: {reason}");
        self.budget.changes.push(reason);
        Ok(())
    }

    fn report_if_due(&mut self, now: u64, progress: &mut impl FnMut(&Progress)) {
        if now.saturating_sub(self.last_progress.0) < self.progress_every {
            return;
        }
        let dt = (now - self.last_progress.0) as f64 / 1e9;
        let recent_hz = (self.samples - self.last_progress.1) as f64 / dt;
        self.last_progress = (now, self.samples);
        progress(&Progress {
            elapsed: Duration::from_nanos(now.saturating_sub(self.start)),
            samples: self.samples,
            errors: self.errors,
            missed_ticks: self.missed,
            asked_hz: self.budget.rate_hz,
            recent_hz,
            own_cpu_pct: self.budget.own * 100.0,
            probes_pct: self.budget.exact.then_some(self.budget.probes * 100.0),
            budget_pct: self.budget.limit.map(|l| l * 100.0),
            bytes: self
                .writer
                .as_ref()
                .map_or(0, |w| w.bytes_written() + w.bytes_pending()),
        });
    }

    /// Close the file on every way out: the last sample lasts one period, or until the
    /// target was found gone. No sample at all: no file, and an error that says why.
    fn finish(
        mut self,
        source: &mut dyn SnapshotSource,
        clock: &mut dyn Clock,
        end: EndReason,
    ) -> Result<RecordStats> {
        let path = self.path;
        let now = clock.now_ns();
        let elapsed_ns = now.saturating_sub(self.start).max(1);
        let Some(mut w) = self.writer.take() else {
            drop(self.file.take());
            let _ = std::fs::remove_file(path);
            let why = match (&self.fatal, &self.last_error, end) {
                (Some(e), _, _) => format!("{e:#}"),
                (None, Some(e), _) => format!("every sample failed; last error: {e}"),
                (None, None, EndReason::TargetExited) => "the target exited".to_owned(),
                (None, None, _) => "stopped before the first sample".to_owned(),
            };
            let msg = format!(
                "no sample was recorded ({why}); {} not written",
                path.display()
            );
            // Every sample failed the same way: exit with that failure's code (e.g. 7, no
            // consistent reading), as `dump` would.
            return Err(match (&self.fatal, self.last_error_kind) {
                (None, Some(kind)) => crate::reader::ReadError::new(kind, msg).into(),
                _ => anyhow!(msg),
            });
        };
        let end_ns = self.last_sample_ns.map(|t| {
            let full = t.saturating_add(self.period);
            match self.exit_at {
                Some(x) => full.min(x.max(t)),
                None => full,
            }
        });
        if let Some(e) = end_ns {
            write_extra(source, &mut w, Some(e), &mut self.extra)
                .with_context(|| self.io_context())?;
        }
        // Filed at the end of the recording (an event later than that would stretch it).
        let cost = self.cost_event(source, end_ns.unwrap_or(now).min(now));
        w.write_event(&cost).with_context(|| self.io_context())?;
        let (t0, c0, p0) = self.budget.first;
        let span = now.saturating_sub(t0).max(1) as f64;
        let own_cpu = own_cpu_ns().saturating_sub(c0) as f64 / span;
        let probes_cpu = source.probe_cost_ns().unwrap_or(0).saturating_sub(p0) as f64 / span;
        let stats = w
            .finish(end_ns, self.missed)
            .with_context(|| format!("finishing trace file {}", path.display()))?;
        if let Some(e) = self.fatal {
            return Err(e.context(format!(
                "sampling failed; the trace up to here is in {}",
                path.display()
            )));
        }
        Ok(RecordStats {
            output: path.to_path_buf(),
            end,
            samples: self.samples,
            sample_errors: self.errors,
            last_error: self.last_error,
            missed_ticks: self.missed,
            elapsed: Duration::from_nanos(elapsed_ns),
            asked_hz: self.opts.rate_hz,
            achieved_hz: self.samples as f64 / (elapsed_ns as f64 / 1e9),
            bytes: stats.bytes,
            own_cpu,
            probes_cpu,
            budget_changes: std::mem::take(&mut self.budget.changes),
            final_rate_hz: self.budget.rate_hz,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::timeline::Event;
    use crate::model::{GilInfo, GilState, InterpreterInfo, PythonInfo, ThreadInfo};
    use crate::trace::{replay, TraceReader};
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;

    struct FakeClock(Rc<Cell<u64>>);

    impl Clock for FakeClock {
        fn now_ns(&mut self) -> u64 {
            self.0.get()
        }
        fn sleep_until(&mut self, deadline_ns: u64) {
            self.0.set(self.0.get().max(deadline_ns));
        }
    }

    #[derive(Clone)]
    enum Step {
        Sample,
        Fail,
        Exit,
        Fatal,
        Stop,
    }

    struct Script {
        now: Rc<Cell<u64>>,
        cost_ns: u64,
        /// Steps by sample index; past the end: `Sample`.
        steps: Vec<Step>,
        i: usize,
        stop: Rc<AtomicBool>,
        on_sample: Option<Box<dyn FnMut(u64)>>,
    }

    impl SnapshotSource for Script {
        fn snapshot(&mut self) -> Result<Snapshot> {
            let t = self.now.get();
            self.now.set(t + self.cost_ns);
            let step = self.steps.get(self.i).cloned().unwrap_or(Step::Sample);
            self.i += 1;
            if let Some(f) = &mut self.on_sample {
                f(t);
            }
            match step {
                Step::Sample => {}
                Step::Fail => return Err(anyhow!("torn read")),
                Step::Exit => return Err(anyhow!("process 42 exited")),
                Step::Fatal => return Err(anyhow!("permission denied")),
                Step::Stop => self.stop.store(true, Ordering::SeqCst),
            }
            let held = (t / 5_000_000).is_multiple_of(2);
            let thread = |tid: u32, state: GilState| ThreadInfo {
                tid,
                start_ticks: 7,
                name: format!("T{tid}"),
                os_name: "python".into(),
                interpreter: 0,
                holds_gil: state == GilState::Held,
                gil_state: state,
                on_cpu: state == GilState::Held,
                frames: vec![crate::model::FrameInfo {
                    function: "work".into(),
                    file: "app.py".into(),
                    line: 1 + (t / 3_000_000 % 7) as i32,
                    interpreter: 0,
                }],
                thread_states: vec![],
                interpreter_evidence: "attached".into(),
                position: None,
            };
            let (a, b) = if held {
                (GilState::Held, GilState::Idle)
            } else {
                (GilState::Idle, GilState::Held)
            };
            Ok(Snapshot {
                pid: 42,
                time_ns: t,
                python: PythonInfo {
                    version: "3.12.4".into(),
                    version_hex: 0x030C04F0,
                    free_threaded: false,
                    binary: "python3.12".into(),
                    runtime_found_by: "symbol".into(),
                    offsets_from: "builtin".into(),
                },
                interpreters: vec![InterpreterInfo {
                    id: 0,
                    main: true,
                    own_gil: true,
                    gil: GilInfo {
                        enabled: true,
                        locked: true,
                        holder_tid: Some(if held { 1 } else { 2 }),
                        switch_number: t / 5_000_000,
                        address: 0xabc0,
                        free_threaded_state: None,
                    },
                    address: 0x1000,
                    gc_collecting: None,
                }],
                threads: vec![thread(1, a), thread(2, b)],
                retries: 0,
                warnings: vec![],
            })
        }

        fn classify(&self, err: &anyhow::Error) -> ErrorClass {
            let m = err.to_string();
            if m.contains("exited") {
                ErrorClass::TargetExited
            } else if m.contains("permission") {
                ErrorClass::Fatal
            } else {
                ErrorClass::Transient
            }
        }
    }

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("gilscope-record-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    fn run(
        name: &str,
        cost_ns: u64,
        steps: Vec<Step>,
        duration: Option<Duration>,
        on_sample: Option<Box<dyn FnMut(u64)>>,
    ) -> (Result<RecordStats>, PathBuf, Vec<Progress>) {
        let now = Rc::new(Cell::new(1_000_000_000));
        let stop = Rc::new(AtomicBool::new(false));
        let mut src = Script {
            now: now.clone(),
            cost_ns,
            steps,
            i: 0,
            stop: stop.clone(),
            on_sample,
        };
        let path = tmp(name);
        let mut opts = RecordOptions::new(&path);
        opts.duration = duration;
        let mut seen = Vec::new();
        let r = record_with(
            &mut src,
            &opts,
            &stop,
            &mut FakeClock(now),
            |p| seen.push(p.clone()),
            None,
        );
        (r, path, seen)
    }

    #[test]
    fn records_exactly_the_asked_rate_without_drift() {
        let (r, path, progress) = run(
            "rate.gilscope",
            100_000,
            vec![],
            Some(Duration::from_secs(2)),
            None,
        );
        let s = r.unwrap();
        assert_eq!(s.end, EndReason::Duration);
        assert_eq!((s.samples, s.missed_ticks), (2000, 0));
        assert!(s.behind_message().is_none());
        assert!(progress.len() >= 7, "{}", progress.len());
        let rp = replay(&path).unwrap();
        assert!(rp.complete);
        assert_eq!(rp.timeline.samples(), 2000);
        assert_eq!(rp.timeline.duration_ns(), 2_000_000_000);
        assert_eq!(rp.metadata.target.pid, 42);
        assert_eq!(rp.metadata.options.rate_hz, 1000.0);
        let t = &rp.timeline.threads[0];
        assert_eq!(t.observed().samples, 2000);
        assert_eq!(rp.timeline.gils[0].handovers(), 399);
    }

    #[test]
    fn falling_behind_is_counted_and_reported() {
        let (r, _, progress) = run(
            "behind.gilscope",
            1_600_000,
            vec![],
            Some(Duration::from_secs(1)),
            None,
        );
        let s = r.unwrap();
        assert_eq!(s.samples, 625);
        assert_eq!(s.samples + s.missed_ticks, 1000);
        assert_eq!(
            s.behind_message().as_deref(),
            Some("asked 1000 Hz, achieved 625 Hz (38% behind)")
        );
        let last = progress.last().unwrap();
        assert!(
            last.line().contains("falling behind: asked 1000 Hz"),
            "{}",
            last.line()
        );
    }

    #[test]
    fn target_exit_finishes_the_file() {
        let mut steps = vec![Step::Sample; 10];
        steps.push(Step::Exit);
        let (r, path, _) = run("exit.gilscope", 200_000, steps, None, None);
        let s = r.unwrap();
        assert_eq!((s.end, s.samples), (EndReason::TargetExited, 10));
        let rp = replay(&path).unwrap();
        assert!(rp.complete);
        // The last sample lasts until the target was found gone.
        assert_eq!(rp.timeline.duration_ns(), 10_000_000);
    }

    #[test]
    fn transient_errors_are_counted_and_kept() {
        let steps = vec![
            Step::Sample,
            Step::Fail,
            Step::Sample,
            Step::Fail,
            Step::Stop,
        ];
        let (r, path, _) = run("errors.gilscope", 10_000, steps, None, None);
        let s = r.unwrap();
        assert_eq!(
            (s.end, s.samples, s.sample_errors),
            (EndReason::Stopped, 3, 2)
        );
        assert_eq!(s.last_error.as_deref(), Some("torn read"));
        let events: Vec<Event> = TraceReader::open(&path)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let errs = events
            .iter()
            .filter(|e| matches!(e, Event::SampleError { .. }))
            .count();
        assert_eq!(errs, 2);
    }

    #[test]
    fn fatal_error_finishes_the_file_and_fails() {
        let steps = vec![Step::Sample, Step::Sample, Step::Fatal];
        let (r, path, _) = run("fatal.gilscope", 10_000, steps, None, None);
        let e = r.unwrap_err();
        assert!(format!("{e:#}").contains("permission denied"), "{e:#}");
        assert!(format!("{e:#}").contains("fatal.gilscope"), "{e:#}");
        assert!(replay(&path).unwrap().complete);
    }

    #[test]
    fn no_sample_no_file() {
        let (r, path, _) = run("none.gilscope", 10_000, vec![Step::Exit], None, None);
        let e = r.unwrap_err().to_string();
        assert!(
            e.contains("no sample was recorded (the target exited)"),
            "{e}"
        );
        assert!(!path.exists());
    }

    #[test]
    fn file_is_readable_while_recording() {
        // Read the file from inside the source at t = 2.5 s: flushed at
        // least every second, so at least 1.5 s must be there.
        let path = tmp("live.gilscope");
        let seen = Rc::new(RefCell::new(None));
        let (p, seen2) = (path.clone(), seen.clone());
        let hook = Box::new(move |t: u64| {
            if t == 1_000_000_000 + 2_500_000_000 {
                let rp = replay(&p).unwrap();
                *seen2.borrow_mut() = Some((rp.complete, rp.timeline.duration_ns()));
            }
        });
        let (r, _, _) = run(
            "live.gilscope",
            10_000,
            vec![],
            Some(Duration::from_secs(3)),
            Some(hook),
        );
        r.unwrap();
        let (complete, covered) = seen.borrow().unwrap();
        assert!(!complete);
        assert!(covered >= 1_500_000_000, "{covered}");
    }

    /// SIGTERM and SIGINT set the stop flag. In a child process (this test binary run again
    /// for this test only): the flag is process-wide and the handlers stay installed, so
    /// raising them here would stop every recording of the tests running alongside.
    #[test]
    fn stop_handler_sets_the_flag() {
        const CHILD: &str = "GILSCOPE_TEST_STOP_HANDLER_CHILD";
        if std::env::var_os(CHILD).is_some() {
            let flag = install_stop_handler();
            assert!(!flag.load(Ordering::SeqCst));
            for sig in [libc::SIGTERM, libc::SIGINT] {
                flag.store(false, Ordering::SeqCst);
                // SAFETY: raising a signal we handle, in this thread, in a process of our own.
                unsafe { libc::raise(sig) };
                assert!(
                    flag.load(Ordering::SeqCst),
                    "signal {sig} did not set the flag"
                );
            }
            println!("STOP-HANDLER-CHILD-OK");
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "sampler::tests::stop_handler_sets_the_flag",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("STOP-HANDLER-CHILD-OK"),
            "{}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn formatting_helpers() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(340_000), "340 kB");
        assert_eq!(human_bytes(1_234_567), "1.2 MB");
        assert_eq!(behind_message(1000.0, 990.0), None);
        assert_eq!(
            behind_message(1000.0, 612.0).as_deref(),
            Some("asked 1000 Hz, achieved 612 Hz (39% behind)")
        );
    }
}
