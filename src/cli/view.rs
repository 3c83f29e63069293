//! `gilscope view FILE` and `gilscope top`: maps the analysis model (events
//! and the [`Timeline`]) into the UI crate's view types. Part of the CLI: the
//! model knows nothing of the UI, and the UI nothing of the model.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;

use gilscope::model::timeline::{Event, GilIdx, Timeline};
use gilscope::model::{GilState, Snapshot};
use gilscope::reader::{Reader, ReaderOptions};
use gilscope::trace::{Metadata, SnapshotEncoder, TraceReader, TraceWriter};
use gilscope_ui::{
    GilLock, GilSegment, GilTrack, GilView, HotStack, InterpView, Lane, LaneState, ParallelSegment,
    ParallelTrack, Segment, ThreadKey, ThreadView, TimeRange, ViewModel, WaitedFor,
};

use super::parse_rate;

#[derive(Args)]
pub struct ViewArgs {
    /// A trace written by `gilscope record` (or saved from `gilscope top`).
    file: std::path::PathBuf,
}

#[derive(Args)]
pub struct TopArgs {
    /// The process to watch.
    #[arg(long, short)]
    pid: u32,
    /// Samples per second.
    #[arg(long, default_value_t = 200.0, value_parser = parse_rate)]
    rate: f64,
    /// Pause the target while reading each sample (ptrace).
    #[arg(long)]
    blocking: bool,
    /// The overhead budget, in percent of one CPU (`1`, `0.5%`), or `none`: gilscope's own
    /// CPU (sampling and drawing) is measured all the time, and over the budget the sampling
    /// rate is lowered (never below 50 Hz); the notice line says so.
    #[arg(long, default_value = "1", value_name = "PCT|none", value_parser = super::record::parse_overhead)]
    max_overhead: super::record::Overhead,
    #[command(flatten)]
    push: super::push::PushArgs,
}

pub fn run_view_args(args: &ViewArgs) -> Result<u8> {
    run_view(&args.file).map(|()| 0)
}

pub fn run_top_args(args: &TopArgs) -> Result<u8> {
    let opts = ReaderOptions {
        blocking: args.blocking,
        ..ReaderOptions::default()
    };
    // The pusher's messages go to the notice line: stderr belongs to the TUI.
    let notice: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let n2 = notice.clone();
    let report: gilscope::push::Reporter = Arc::new(move |m: &str| {
        if let Ok(mut n) = n2.lock() {
            *n = Some(format!("pyroscope: {m}"));
        }
    });
    let pusher = args.push.start_with(args.rate, report)?;
    run_top(
        args.pid,
        args.rate,
        args.max_overhead.0,
        opts,
        pusher,
        notice,
    )
    .map(|()| 0)
}

fn lane_state(s: GilState) -> LaneState {
    match s {
        GilState::Held => LaneState::Held,
        GilState::Waiting => LaneState::Waiting,
        GilState::Released => LaneState::Released,
        GilState::Idle => LaneState::Idle,
        GilState::Attached => LaneState::Attached,
        GilState::Unknown => LaneState::Unknown,
    }
}

/// Hottest stacks listed per thread and state in the stacks panel.
const HOT_STACKS: usize = 5;

/// Builds a [`ViewModel`] from model events, incrementally (a file is
/// streamed through it; a live session feeds it as it samples).
///
/// Everything it shows comes from the [`Timeline`]: a thread's lane is the model's state
/// intervals (exact ones for a thread with exact runs, with their on-CPU time from the
/// sampled runs), so the view's shares are the model's, as `summary` prints them.
#[derive(Default)]
pub struct ViewBuilder {
    timeline: Timeline,
    gil_tracks: HashMap<GilIdx, GilTrack>,
    /// Blame and the parallelism strip, with the model end they were computed at: a live
    /// view recomputes them once a second of new data (they walk every interval).
    derived: std::cell::RefCell<Option<Derived>>,
}

#[derive(Clone)]
struct Derived {
    at_end_ns: u64,
    waited: HashMap<u32, Vec<WaitedFor>>,
    parallel: ParallelTrack,
    parallel_max: u32,
}

/// How much newer the model must be before a live view recomputes [`Derived`].
const DERIVED_EVERY_NS: u64 = 1_000_000_000;

/// A thread's lane: its model intervals, the time it ran garbage collections (inside its
/// held or attached intervals) in the `gc` state.
pub fn lane_of(tl: &Timeline, thread: &gilscope::model::timeline::Thread) -> Lane {
    let mut segs = Vec::with_capacity(thread.intervals.len());
    for i in &thread.intervals {
        let state = lane_state(i.state);
        let seg = |s: u64, e: u64, st: LaneState| Segment::new(s, e, st).with_on_cpu(i.on_cpu);
        if !matches!(i.state, GilState::Held | GilState::Attached) {
            segs.push(seg(i.start_ns, i.end_ns, state));
            continue;
        }
        let mut at = i.start_ns;
        for g in tl.gc_of_thread(thread.idx, i.start_ns, i.end_ns) {
            let (gs, ge) = (g.start_ns.max(at), g.end_ns.min(i.end_ns));
            if ge <= gs {
                continue;
            }
            if gs > at {
                segs.push(seg(at, gs, state));
            }
            segs.push(seg(gs, ge, LaneState::Gc));
            at = ge;
        }
        if i.end_ns > at {
            segs.push(seg(at, i.end_ns, state));
        }
    }
    Lane::from_segments(segs)
}

/// Holders listed per waiting thread in the stacks panel.
const WAITED_FOR: usize = 5;

fn frame_text(f: &gilscope::model::timeline::Frame) -> String {
    let file = f.file.rsplit('/').next().unwrap_or(&f.file);
    format!("{} ({file}:{})", f.function, f.line)
}

/// Who held the GIL while each thread waited (the whole model), by waiter.
fn waited_for(tl: &Timeline) -> HashMap<u32, Vec<WaitedFor>> {
    let mut by_waiter: HashMap<u32, Vec<(u64, WaitedFor)>> = HashMap::new();
    for b in gilscope::analysis::blame::blame(tl) {
        let holder = b
            .holder
            .and_then(|h| tl.threads.get(h as usize))
            .map_or_else(
                || "(unknown)".to_string(),
                |h| format!("{} ({})", h.name, h.tid),
            );
        let frames = b.stacks.first().map_or_else(Vec::new, |(hs, _)| {
            let mut f: Vec<String> = Vec::new();
            if hs.gc {
                f.push("<GC>".to_string());
            }
            f.extend(tl.stack_frames(hs.stack).into_iter().map(frame_text));
            if f.is_empty() {
                f.push("(no Python frames)".to_string());
            }
            f
        });
        by_waiter.entry(b.waiter).or_default().push((
            b.ns,
            WaitedFor {
                holder,
                pct: 0.0,
                seconds: b.ns as f64 / 1e9,
                frames,
            },
        ));
    }
    by_waiter
        .into_iter()
        .map(|(w, mut v)| {
            let total: u64 = v.iter().map(|(ns, _)| ns).sum();
            v.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.holder.cmp(&b.1.holder)));
            v.truncate(WAITED_FOR);
            let list = v
                .into_iter()
                .map(|(ns, mut x)| {
                    x.pct = if total == 0 {
                        0.0
                    } else {
                        ns as f64 * 100.0 / total as f64
                    };
                    x
                })
                .collect();
            (w, list)
        })
        .collect()
}

/// The parallelism strip: the model's curve as segments.
fn parallel_track(tl: &Timeline) -> (ParallelTrack, u32) {
    let steps = gilscope::analysis::parallel::steps(tl);
    let max = steps.iter().map(|s| s.holders).max().unwrap_or(0);
    let track = ParallelTrack::from_segments(steps.windows(2).map(|w| ParallelSegment {
        start_ns: w[0].time_ns,
        end_ns: w[1].time_ns,
        holders: w[0].holders,
    }));
    (track, max)
}

impl ViewBuilder {
    pub fn apply(&mut self, e: &Event) {
        self.timeline.apply(e);
        if let Event::GilRun(g) = e {
            let lock = if !g.enabled {
                GilLock::Disabled
            } else if g.locked {
                GilLock::Busy
            } else {
                GilLock::Free
            };
            self.gil_tracks
                .entry(g.gil)
                .or_default()
                .push(GilSegment::new(g.start_ns, g.end_ns, lock));
        }
    }

    /// The model fed so far.
    #[cfg(test)]
    pub fn timeline(&self) -> &Timeline {
        &self.timeline
    }

    /// Drops lane data older than `t_ns` (bounded memory in live sessions).
    pub fn trim_before(&mut self, t_ns: u64) {
        self.timeline.trim_intervals_before(t_ns);
        for g in self.gil_tracks.values_mut() {
            g.trim_before(t_ns);
        }
    }

    fn hot_stacks(
        &self,
        thread: &gilscope::model::timeline::Thread,
        state: GilState,
    ) -> Vec<HotStack> {
        let total: u64 = thread.state(state).ns;
        if total == 0 {
            return Vec::new();
        }
        let mut v: Vec<(u64, Vec<String>)> = thread
            .stacks
            .iter()
            .filter(|((s, _, _), _)| *s == state)
            .map(|((_, _, stack), t)| {
                let frames = self
                    .timeline
                    .stack_frames(*stack)
                    .iter()
                    .map(|f| {
                        let file = f.file.rsplit('/').next().unwrap_or(&f.file);
                        format!("{} ({file}:{})", f.function, f.line)
                    })
                    .collect();
                (t.ns, frames)
            })
            .collect();
        // Deterministic: by time, then by the frames themselves.
        v.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        v.truncate(HOT_STACKS);
        v.into_iter()
            .map(|(ns, frames)| HotStack {
                frames: if frames.is_empty() {
                    vec!["(no Python frames)".into()]
                } else {
                    frames
                },
                pct: ns as f64 * 100.0 / total as f64,
            })
            .collect()
    }

    pub fn view(&self, title: &str, live: bool) -> ViewModel {
        let tl = &self.timeline;
        let start = tl.start_ns.unwrap_or(0);
        let end = tl.end_ns.unwrap_or(start).max(start);
        let gils: Vec<GilView> = tl
            .gils
            .iter()
            .map(|g| GilView {
                id: g.idx,
                track: self.gil_tracks.get(&g.idx).cloned().unwrap_or_default(),
            })
            .collect();
        let mut interpreters: Vec<InterpView> = tl
            .interpreters
            .values()
            .map(|i| InterpView {
                id: i.id,
                main: i.main,
                own_gil: i.own_gil,
                gil: gils.iter().position(|g| g.id == i.gil),
                threads: Vec::new(),
            })
            .collect();
        let now = tl.end_ns.unwrap_or(0);
        let cached = self
            .derived
            .borrow()
            .as_ref()
            .filter(|d| {
                live && now.saturating_sub(d.at_end_ns) < DERIVED_EVERY_NS && now >= d.at_end_ns
            })
            .cloned();
        let d = cached.unwrap_or_else(|| {
            let (parallel, parallel_max) = parallel_track(tl);
            let d = Derived {
                at_end_ns: now,
                waited: waited_for(tl),
                parallel,
                parallel_max,
            };
            *self.derived.borrow_mut() = Some(d.clone());
            d
        });
        let Derived {
            mut waited,
            parallel,
            parallel_max,
            ..
        } = d;
        let mut threads: Vec<&gilscope::model::timeline::Thread> = tl.threads.iter().collect();
        threads.sort_by_key(|t| (t.tid, t.start_ticks));
        for t in threads {
            let Some(home) = t.main_interpreter() else {
                continue;
            };
            let Some(iv) = interpreters.iter_mut().find(|i| i.id == home) else {
                continue;
            };
            iv.threads.push(ThreadView {
                key: ThreadKey {
                    tid: t.tid,
                    start_ticks: t.start_ticks,
                },
                name: if t.ended_ns.is_some() {
                    format!("{} (ended)", t.name)
                } else {
                    t.name.clone()
                },
                lane: lane_of(tl, t),
                hot_stacks_held: self.hot_stacks(t, GilState::Held),
                hot_stacks_waiting: self.hot_stacks(t, GilState::Waiting),
                waited_for: waited.remove(&t.idx).unwrap_or_default(),
            });
        }
        interpreters.sort_by_key(|i| i.id);
        ViewModel {
            title: title.to_string(),
            time_range: TimeRange::new(start, end),
            live,
            recording: None,
            notice: None,
            gils,
            interpreters,
            parallel,
            parallel_max,
        }
    }
}

/// Reads a whole trace into a view model (streaming the events).
pub fn view_of_file(path: &Path) -> Result<ViewModel> {
    let reader = TraceReader::open(path)?;
    let mut b = ViewBuilder::default();
    let mut reader = reader;
    // The overhead budget's switches (MODE records), and the span of the recording.
    let mut modes = Vec::new();
    let (mut first, mut last) = (None::<u64>, 0u64);
    while let Some(e) = reader.next_event()? {
        b.apply(&e);
        modes.extend(gilscope::model::timeline::ModeChange::of(&e));
        if let gilscope::model::timeline::Event::Run(r) = &e {
            first = Some(first.map_or(r.start_ns, |f| f.min(r.start_ns)));
            last = last.max(r.end_ns);
        }
    }
    let mut title = path.display().to_string();
    if let Some(py) = reader.metadata().python.as_ref() {
        title.push_str(&format!(" — Python {}", py.version));
    }
    // Which periods were exact and at what rate they were sampled, when that changed.
    if let Some(first) = first {
        let p = gilscope::trace::periods::periods_of(reader.metadata(), first, last, &modes);
        if p.len() > 1 {
            title.push_str(&format!(" — {}", gilscope::trace::periods::describe(&p)));
        }
    }
    let mut vm = b.view(&title, false);
    if let Some(d) = reader.damage() {
        vm.notice = Some(format!("trace cut short: {d}"));
    }
    Ok(vm)
}

/// `gilscope view FILE`.
pub fn run_view(path: &Path) -> Result<()> {
    let mut vm = view_of_file(path)?;
    gilscope_ui::run_in_terminal(&mut vm, gilscope_ui::Options::default())
}

/// Live source for `gilscope top`: a sampler thread sends snapshots; the UI
/// thread encodes them into events for the view and, while recording (`r`),
/// into a trace file.
pub struct LiveView {
    rx: mpsc::Receiver<Result<Snapshot, String>>,
    stop: Arc<AtomicBool>,
    encoder: SnapshotEncoder,
    builder: ViewBuilder,
    vm: ViewModel,
    title: String,
    writer: Option<TraceWriter>,
    last: Option<Snapshot>,
    save_dir: PathBuf,
    ended: Option<String>,
    window_ns: u64,
    /// `--pyroscope`: every event also goes to the pusher, whose last message is shown.
    push_tap: Option<gilscope::trace::EventTap>,
    push_notice: Option<Arc<std::sync::Mutex<Option<String>>>>,
    /// The overhead budget's message when it lowered the rate.
    budget_notice: Arc<std::sync::Mutex<Option<String>>>,
}

/// `top`'s overhead budget: gilscope's own CPU (getrusage) over windows of 250 ms; four
/// windows over the budget in a row lower the rate as `record` does
/// ([`gilscope::sampler::lowered_rate`], never below 50 Hz).
struct TopBudget {
    rate_hz: f64,
    limit: Option<f64>,
    window: (std::time::Instant, u64),
    over: u32,
    floor_said: bool,
}

impl TopBudget {
    const WINDOW: Duration = Duration::from_millis(250);

    fn new(rate_hz: f64, limit: Option<f64>) -> Self {
        TopBudget {
            rate_hz,
            limit,
            window: (std::time::Instant::now(), gilscope::sampler::own_cpu_ns()),
            over: 0,
            floor_said: false,
        }
    }

    /// After each sample: a message when the rate was lowered (or cannot be lowered more).
    fn check(&mut self) -> Option<String> {
        let limit = self.limit?;
        let dt = self.window.0.elapsed();
        if dt < Self::WINDOW {
            return None;
        }
        let cpu = gilscope::sampler::own_cpu_ns();
        let own = cpu.saturating_sub(self.window.1) as f64 / dt.as_nanos().max(1) as f64;
        self.window = (std::time::Instant::now(), cpu);
        if own <= limit {
            self.over = 0;
            return None;
        }
        self.over += 1;
        if self.over < 4 {
            return None;
        }
        self.over = 0;
        let pct = |f: f64| format!("{:.1}%", f * 100.0);
        let min = gilscope::sampler::MIN_BUDGET_RATE_HZ;
        if self.rate_hz <= min {
            if self.floor_said {
                return None;
            }
            self.floor_said = true;
            return Some(format!(
                "still over the overhead budget ({} of a CPU) at the lowest rate ({min:.0} Hz): gilscope uses {}",
                pct(limit),
                pct(own)
            ));
        }
        let new_rate = gilscope::sampler::lowered_rate(self.rate_hz, limit, own);
        let msg = format!(
            "over the overhead budget ({} of a CPU): gilscope used {} sampling at {:.0} Hz; sampling at {new_rate:.0} Hz from here on",
            pct(limit),
            pct(own),
            self.rate_hz
        );
        self.rate_hz = new_rate;
        Some(msg)
    }
}

/// How much history `top` keeps in its lanes.
const TOP_HISTORY_NS: u64 = 10 * 60 * 1_000_000_000;

impl LiveView {
    /// `max_overhead`: the budget (fraction of one CPU), over which the rate is lowered.
    pub fn start(
        pid: u32,
        rate_hz: f64,
        max_overhead: Option<f64>,
        opts: ReaderOptions,
    ) -> Result<LiveView> {
        let mut reader = Reader::attach(pid, opts)?;
        let title = format!("pid {pid} — Python {}", reader.python().version);
        let (tx, rx) = mpsc::sync_channel(1024);
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let budget_notice: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
        let notice2 = budget_notice.clone();
        std::thread::Builder::new()
            .name("gilscope-sampler".into())
            .spawn(move || {
                let mut budget = TopBudget::new(rate_hz, max_overhead);
                let mut next = std::time::Instant::now();
                while !stop2.load(Ordering::SeqCst) {
                    let r = reader.snapshot().map_err(|e| format!("{e:#}"));
                    let gone = r.is_err() && gilscope::reader::runtime::check_process(pid).is_err();
                    if tx.send(r).is_err() || gone {
                        break;
                    }
                    if let Some(msg) = budget.check() {
                        if let Ok(mut n) = notice2.lock() {
                            *n = Some(msg);
                        }
                    }
                    let period = Duration::from_secs_f64(1.0 / budget.rate_hz);
                    next += period;
                    let now = std::time::Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    } else {
                        next = now;
                    }
                }
            })
            .context("starting the sampler thread")?;
        let period_ns = (1e9 / rate_hz) as u64;
        Ok(LiveView {
            rx,
            stop,
            encoder: SnapshotEncoder::new(period_ns),
            builder: ViewBuilder::default(),
            vm: ViewModel {
                title: title.clone(),
                live: true,
                ..ViewModel::default()
            },
            title,
            writer: None,
            last: None,
            save_dir: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
            ended: None,
            window_ns: TOP_HISTORY_NS,
            push_tap: None,
            push_notice: None,
            budget_notice,
        })
    }

    fn toggle_recording(&mut self) {
        if let Some(w) = self.writer.take() {
            let path = w.path().display().to_string();
            let end = self.last.as_ref().map(|s| s.time_ns);
            self.vm.notice = Some(match w.finish(end, 0) {
                Ok(_) => format!("saved {path}"),
                Err(e) => format!("could not finish {path}: {e}"),
            });
            self.vm.recording = None;
            return;
        }
        let Some(first) = self.last.as_ref() else {
            self.vm.notice = Some("nothing sampled yet".into());
            return;
        };
        let name = format!(
            "gilscope-top-{}-{}.trace",
            first.pid,
            first.time_ns / 1_000_000
        );
        let path = self.save_dir.join(name);
        match TraceWriter::create(&path, &Metadata::from_snapshot(first)) {
            Ok(w) => {
                self.vm.recording = Some(path.display().to_string());
                self.vm.notice = None;
                self.writer = Some(w);
            }
            Err(e) => self.vm.notice = Some(format!("cannot create {}: {e}", path.display())),
        }
    }
}

impl gilscope_ui::ViewSource for LiveView {
    fn view(&self) -> &ViewModel {
        &self.vm
    }

    fn refresh(&mut self) {
        let mut events = Vec::new();
        let mut changed = false;
        while let Ok(r) = self.rx.try_recv() {
            match r {
                Ok(snap) => {
                    if let Some(w) = self.writer.as_mut() {
                        if let Err(e) = w.write_snapshot(&snap) {
                            self.vm.notice = Some(format!("recording stopped: {e}"));
                            self.writer = None;
                            self.vm.recording = None;
                        }
                    }
                    // Pausing only stops the window following the live
                    // edge (the UI's business); data keeps flowing.
                    self.encoder.push(&snap, &mut events);
                    self.last = Some(snap);
                }
                Err(msg) => {
                    if gilscope::reader::runtime::check_process(
                        self.last.as_ref().map(|s| s.pid).unwrap_or(0),
                    )
                    .is_err()
                    {
                        self.ended = Some("the target exited".into());
                    } else {
                        let t = self.last.as_ref().map(|s| s.time_ns).unwrap_or(0);
                        self.encoder.sample_error(t, &msg, &mut events);
                    }
                }
            }
        }
        if self.last.is_some() {
            // Emit open runs up to the last sample, so threads whose state
            // has not changed yet (an idle thread) show up too.
            self.encoder.checkpoint(&mut events);
        }
        if !events.is_empty() {
            changed = true;
        }
        for e in &events {
            self.builder.apply(e);
        }
        if let Some(tap) = self.push_tap.as_mut() {
            events.iter().for_each(tap);
        }
        let budget = self.budget_notice.lock().ok().and_then(|mut n| n.take());
        if let Some(m) = budget.or_else(|| {
            self.push_notice
                .as_ref()
                .and_then(|n| n.lock().ok().and_then(|mut n| n.take()))
        }) {
            self.vm.notice = Some(m);
            changed = true;
        }
        if let Some(t) = self.last.as_ref().map(|s| s.time_ns) {
            self.builder.trim_before(t.saturating_sub(self.window_ns));
        }
        if changed || self.ended.is_some() {
            let recording = self.vm.recording.clone();
            let notice = self.vm.notice.clone().or_else(|| self.ended.clone());
            self.vm = self.builder.view(&self.title, true);
            self.vm.recording = recording;
            self.vm.notice = notice;
        }
    }

    fn action(&mut self, action: gilscope_ui::Action) {
        // Pause only stops the window following the live edge (the UI's
        // business); data keeps flowing.
        if action == gilscope_ui::Action::ToggleRecording {
            self.toggle_recording();
        }
    }
}

impl Drop for LiveView {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(w) = self.writer.take() {
            let end = self.last.as_ref().map(|s| s.time_ns);
            let _ = w.finish(end, 0);
        }
    }
}

/// `gilscope top --pid PID`.
pub fn run_top(
    pid: u32,
    rate_hz: f64,
    max_overhead: Option<f64>,
    opts: ReaderOptions,
    mut pusher: Option<gilscope::push::Pusher>,
    notice: Arc<std::sync::Mutex<Option<String>>>,
) -> Result<()> {
    let mut live = LiveView::start(pid, rate_hz, max_overhead, opts)?;
    if let Some(p) = pusher.as_mut() {
        live.push_tap = p.tap();
        live.push_notice = Some(notice);
    }
    let shown = gilscope_ui::run_in_terminal(&mut live, gilscope_ui::Options::default());
    live.push_tap = None;
    if let Some(p) = pusher {
        let url = p.url().to_string();
        eprintln!("{}", p.finish(super::push::FINISH_GRACE).summary_line(&url));
    }
    shown?;
    if let Some(path) = live.vm.recording.clone() {
        eprintln!("gilscope: saved the live session to {path}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gilscope_ui::{App, Input, Key, Options, Theme};
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    fn screen_text(vm: &ViewModel, w: u16, h: u16, keys: &str) -> String {
        let opts = Options {
            theme: Theme { color: false },
            ..Options::default()
        };
        let mut app = App::new(opts, (w, h), vm.live);
        for c in keys.chars() {
            app.update(Input::Key(Key::Char(c)), vm);
        }
        let mut term = Terminal::new(TestBackend::new(w, h)).expect("test backend");
        let frame = term.draw(|f| app.draw(f, vm)).expect("draw");
        let buf = frame.buffer.clone();
        let mut out = String::new();
        for y in 0..h {
            let mut line = String::new();
            for x in 0..w {
                line.push_str(buf[(x, y)].symbol());
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// The TUI rendered from a real recording (tests/golden/outputs/threads-3.12.trace,
    /// samples/threads.py on CPython 3.12.1): re-bless with GILSCOPE_BLESS=1.
    #[test]
    fn real_trace_screens_match_goldens() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut vm = view_of_file(&root.join("tests/golden/outputs/threads-3.12.trace"))
            .expect("fixture trace reads");
        // The title holds the file's path, which depends on the checkout.
        assert!(
            vm.title.ends_with("threads-3.12.trace — Python 3.12.1"),
            "{}",
            vm.title
        );
        vm.title = "threads-3.12.trace — Python 3.12.1".into();
        // The holder's lane is all held; the idle thread's has no held cell.
        let holder = vm
            .threads()
            .find(|(_, t)| t.name == "gil-holder")
            .expect("holder");
        let times = holder
            .1
            .lane
            .times(vm.time_range.start_ns, vm.time_range.end_ns);
        assert!(times.pct(LaneState::Held) > 95.0, "{times:?}");
        for (name, w, h, keys) in [
            ("tui-threads-80x24.txt", 80, 24, ""),
            ("tui-threads-table-120x30.txt", 120, 30, "t"),
        ] {
            let got = screen_text(&vm, w, h, keys);
            let path = root.join("tests/golden/tui").join(name);
            if std::env::var_os("GILSCOPE_BLESS").is_some_and(|v| v == "1") {
                std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
                std::fs::write(&path, &got).expect("bless");
            }
            let want = std::fs::read_to_string(&path).unwrap_or_default();
            assert_eq!(
                got, want,
                "{name} changed; if intended, rerun with GILSCOPE_BLESS=1"
            );
        }
    }

    /// Every share of every thread over the whole trace, as the view shows it (from its
    /// lane) and as `summary` computes it, for events `events`.
    fn view_and_summary_agree(events: &[Event], meta: &gilscope::trace::Metadata) -> usize {
        use gilscope::analysis::summary::{summarize, SummaryOptions};
        let mut b = ViewBuilder::default();
        for e in events {
            b.apply(e);
        }
        let vm = b.view("t", false);
        let s = summarize(meta, b.timeline(), &SummaryOptions::default());
        let mut compared = 0;
        for t in &s.threads {
            let (_, th) = vm
                .threads()
                .find(|(_, v)| v.key.tid == t.tid && v.key.start_ticks == t.start_ticks)
                .unwrap_or_else(|| panic!("thread {} not in the view", t.tid));
            let times = th.lane.times(vm.time_range.start_ns, vm.time_range.end_ns);
            // A collection is held (or attached) time in the summary, its own state in lanes.
            let gc = times.pct(LaneState::Gc);
            let (held_gc, attached_gc) = if t.attached_pct > 0.0 {
                (0.0, gc)
            } else {
                (gc, 0.0)
            };
            let pairs = [
                ("held", times.pct(LaneState::Held) + held_gc, t.held_pct),
                ("gc", gc, t.gc_pct),
                (
                    "waiting",
                    times.pct(LaneState::Waiting),
                    t.waiting_pct.unwrap_or(0.0),
                ),
                ("released", times.pct(LaneState::Released), t.released_pct),
                ("idle", times.pct(LaneState::Idle), t.idle_pct),
                (
                    "attached",
                    times.pct(LaneState::Attached) + attached_gc,
                    t.attached_pct,
                ),
                ("unknown", times.pct(LaneState::Unknown), t.unknown_pct),
                ("on CPU", times.on_cpu_pct(), t.on_cpu_pct),
            ];
            for (what, view, summary) in pairs {
                // summary rounds to 2 decimals.
                assert!(
                    (view - summary).abs() <= 0.005 + 1e-9,
                    "thread {} {what}: view {view:.4} %, summary {summary:.2} %",
                    t.tid
                );
            }
            compared += 1;
        }
        compared
    }

    /// A holder in `hog` (collecting for 10 of its 100 ms) and a waiter: the waiter's stacks
    /// panel says who held the GIL while it waited and in what code, the holder's lane shows
    /// the collection in its own state, and the parallelism strip stays hidden (one holder).
    #[test]
    fn waiter_panel_names_the_holder_and_gc_has_its_lane_state() {
        use gilscope::model::timeline::{Frame, GcRun, Run, Source};
        let ms = 1_000_000u64;
        let run = |thread: u32, s: u64, e: u64, state: GilState, stack: u32| {
            Event::Run(Run {
                thread,
                start_ns: s * ms,
                end_ns: e * ms,
                samples: (e - s) as u32,
                interpreter: 0,
                state,
                on_cpu: state == GilState::Held,
                stack,
                source: Source::Sampled,
            })
        };
        let mut events = vec![
            Event::Gil {
                gil: 0,
                address: 0x1000,
            },
            Event::Interpreter {
                time_ns: 0,
                id: 0,
                main: true,
                own_gil: true,
                gil: 0,
                address: 0x2000,
            },
            Event::Frame {
                id: 1,
                frame: Frame {
                    function: "hog".into(),
                    file: "/app/hog.py".into(),
                    line: 7,
                    interpreter: 0,
                },
            },
            Event::Stack {
                id: 1,
                parent: 0,
                frame: 1,
            },
        ];
        for (t, name) in [(0, "gil-hog"), (1, "waiter")] {
            events.push(Event::ThreadStart {
                time_ns: 0,
                thread: t,
                tid: 100 + t,
                start_ticks: 1,
                name: name.into(),
                os_name: String::new(),
            });
        }
        events.extend([
            run(0, 0, 100, GilState::Held, 1),
            run(1, 0, 100, GilState::Waiting, 0),
            Event::Gc(GcRun {
                interpreter: 0,
                start_ns: 50 * ms,
                end_ns: 60 * ms,
                samples: 10,
                thread: Some(0),
                stack: 1,
            }),
        ]);
        let mut b = ViewBuilder::default();
        for e in &events {
            b.apply(e);
        }
        let vm = b.view("t", false);
        assert!(!vm.shows_parallel());
        assert!(vm.has_gc());
        let (_, hog) = vm
            .threads()
            .find(|(_, t)| t.name == "gil-hog")
            .expect("hog");
        let times = hog.lane.times(0, 100 * ms);
        assert_eq!(times.get(LaneState::Gc), 10 * ms);
        assert_eq!(times.get(LaneState::Held), 90 * ms);
        let (_, w) = vm
            .threads()
            .find(|(_, t)| t.name == "waiter")
            .expect("waiter");
        assert_eq!(w.waited_for.len(), 1);
        assert_eq!(w.waited_for[0].holder, "gil-hog (100)");
        assert_eq!(w.waited_for[0].frames, ["hog (hog.py:7)"]);
        assert!((w.waited_for[0].pct - 100.0).abs() < 1e-9);
        // The screen: select the waiter (second thread), open its stacks panel.
        let opts = Options {
            theme: Theme { color: false },
            ..Options::default()
        };
        let (wd, ht) = (100u16, 30u16);
        let mut app = App::new(opts, (wd, ht), false);
        for k in [Key::Down, Key::Down, Key::Enter] {
            app.update(Input::Key(k), &vm);
        }
        let mut term = Terminal::new(TestBackend::new(wd, ht)).expect("test backend");
        let frame = term.draw(|f| app.draw(f, &vm)).expect("draw");
        let buf = frame.buffer.clone();
        let mut text = String::new();
        for y in 0..ht {
            for x in 0..wd {
                text.push_str(buf[(x, y)].symbol());
            }
            text.push('\n');
        }
        assert!(
            text.contains("While it waited, the GIL was held by"),
            "{text}"
        );
        assert!(text.contains("100.0% gil-hog (100)"), "{text}");
        assert!(text.contains("in hog (hog.py:7)"), "{text}");
        assert!(text.contains('▚') && text.contains("gc"), "{text}");
    }

    /// A sampled recording (tests/golden/outputs/threads-3.12.trace).
    #[test]
    fn view_and_summary_agree_on_a_sampled_trace() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut r = TraceReader::open(root.join("tests/golden/outputs/threads-3.12.trace"))
            .expect("fixture trace reads");
        let mut events = Vec::new();
        while let Some(e) = r.next_event().expect("reads") {
            events.push(e);
        }
        assert_eq!(view_and_summary_agree(&events, r.metadata()), 6);
    }

    /// A real exact-mode recording (tests/golden/outputs/contention-exact-3.12.trace,
    /// samples/contention.py): the old view said the spinner was on a CPU 74.75 % of the
    /// time, summary 33.0 %.
    #[test]
    fn view_and_summary_agree_on_an_exact_recording() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut r =
            TraceReader::open(root.join("tests/golden/outputs/contention-exact-3.12.trace"))
                .expect("fixture trace reads");
        let mut events = Vec::new();
        while let Some(e) = r.next_event().expect("reads") {
            events.push(e);
        }
        assert!(events.iter().any(
            |e| matches!(e, Event::Run(r) if r.source == gilscope::model::timeline::Source::Exact)
        ));
        assert_eq!(view_and_summary_agree(&events, r.metadata()), 4);
    }

    /// Exact runs with the sampled runs beside them: states from the exact runs, on-CPU
    /// time from the sampled runs over the same time (the view once took it from the exact
    /// runs' own flags: 4.6 % on CPU where summary said 0.11 %).
    #[test]
    fn view_and_summary_agree_on_an_exact_trace() {
        use gilscope::model::timeline::{Run, Source};
        let run = |start: u64, end: u64, state: GilState, on_cpu: bool, source: Source| {
            Event::Run(Run {
                thread: 0,
                start_ns: start,
                end_ns: end,
                samples: u32::from(source == Source::Sampled),
                interpreter: 0,
                state,
                on_cpu,
                stack: 0,
                source,
            })
        };
        let (s, x) = (Source::Sampled, Source::Exact);
        let events = vec![
            Event::Gil {
                gil: 0,
                address: 0x1000,
            },
            Event::Interpreter {
                time_ns: 0,
                id: 0,
                main: true,
                own_gil: true,
                gil: 0,
                address: 0x2000,
            },
            Event::ThreadStart {
                time_ns: 0,
                thread: 0,
                tid: 7,
                start_ticks: 1,
                name: "worker".into(),
                os_name: "python".into(),
            },
            // Sampled: on a CPU 0-30 and 60-70 (written before the exact runs).
            run(0, 30, GilState::Held, true, s),
            run(30, 60, GilState::Idle, false, s),
            run(60, 70, GilState::Released, true, s),
            run(70, 100, GilState::Idle, false, s),
            // Exact, each claiming to be on a CPU throughout.
            run(0, 20, GilState::Held, true, x),
            run(20, 65, GilState::Waiting, true, x),
            run(65, 100, GilState::Idle, true, x),
        ];
        assert_eq!(
            view_and_summary_agree(&events, &gilscope::trace::Metadata::default()),
            1
        );
        let mut tl = Timeline::default();
        for e in &events {
            tl.apply(e);
        }
        let t = &tl.threads[0];
        assert_eq!(t.on_cpu.ns, 40, "on CPU where the samples said so");
        assert_eq!(t.state(GilState::Waiting).ns, 45);
        assert_eq!(t.observed().ns, 100);
    }
}
