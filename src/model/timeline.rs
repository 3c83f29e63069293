//! The analysis model: what happened over time, built from trace events.
//!
//! Every source produces the same [`Event`]s — the live sampler (through
//! [`crate::trace::SnapshotEncoder`]), a trace file being replayed
//! ([`crate::trace::TraceReader`]) and exact-mode probes (`gilscope record --mode exact`) — and
//! [`Timeline::apply`] folds them into one model. So everything downstream
//! (summary, UI, exports) is tested from recorded files, without root.
//!
//! Pure: no IO, no OS, no output formatting.
//!
//! Identities:
//! * threads are numbered ([`ThreadIdx`]) in order of appearance; one number is
//!   one kernel thread `(tid, start_ticks)`, so a reused TID is a new thread;
//! * interpreters by CPython's id (never reused within a process);
//! * GILs are numbered ([`GilIdx`]) per distinct lock address: interpreters
//!   that share a GIL point at the same number;
//! * frames and stacks are interned: [`FrameId`] and [`StackId`] start at 1,
//!   stack 0 is the empty stack. A stack is a node `(parent, frame)` of a
//!   prefix tree rooted at the outermost frame, so its frame is the innermost.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::snapshot::GilState;

pub type ThreadIdx = u32;
pub type GilIdx = u32;
pub type FrameId = u32;
/// 0 is the empty (or unknown) stack.
pub type StackId = u32;

/// How a piece of timeline was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// From periodic snapshots: a run covers whole sampling periods.
    #[default]
    Sampled,
    /// From exact take/drop events (exact mode): boundaries are real timestamps.
    Exact,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Frame {
    pub function: String,
    pub file: String,
    /// 0 when not known.
    pub line: i32,
    pub interpreter: i64,
}

/// A stretch of time during which one thread was in one interpreter, in one
/// GIL state, with one stack. Sampled runs cover `samples` consecutive samples,
/// each lasting until the next sample was taken. Runs of one thread never
/// overlap; consecutive runs may be identical (a file is cut into chunks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub thread: ThreadIdx,
    pub start_ns: u64,
    pub end_ns: u64,
    /// Samples taken in this run (0 for exact-mode runs).
    pub samples: u32,
    pub interpreter: i64,
    pub state: GilState,
    pub on_cpu: bool,
    pub stack: StackId,
    pub source: Source,
}

/// A stretch of time during which one GIL looked the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GilRun {
    pub gil: GilIdx,
    pub start_ns: u64,
    pub end_ns: u64,
    pub samples: u32,
    /// False on free-threaded builds while the GIL is disabled.
    pub enabled: bool,
    pub locked: bool,
    pub holder_tid: Option<u32>,
    /// CPython's `switch_number` at the first sample of the run.
    pub switch_number: u64,
}

/// A garbage collection seen running in one interpreter (its `gc.collecting` flag set)
/// during `[start_ns, end_ns)`: sampled, it covers `samples` consecutive samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcRun {
    pub interpreter: i64,
    pub start_ns: u64,
    pub end_ns: u64,
    pub samples: u32,
    /// The thread that ran it (its GIL's holder at the first sample), when known.
    pub thread: Option<ThreadIdx>,
    /// That thread's stack at the first sample: the Python line that triggered it.
    pub stack: StackId,
}

/// Collections of one interpreter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcStats {
    pub collections: u64,
    pub total: Totals,
    /// The longest collection seen (the first one on ties).
    pub longest: Option<GcRun>,
}

/// Everything a source can tell the model. Times are CLOCK_MONOTONIC ns.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Defines frame `id` (ids are given out 1, 2, 3, ...).
    Frame {
        id: FrameId,
        frame: Frame,
    },
    /// Defines stack `id`: `frame` called from stack `parent` (0 = outermost).
    Stack {
        id: StackId,
        parent: StackId,
        frame: FrameId,
    },
    /// Defines GIL number `gil` (0, 1, 2, ...) at `address` in the target.
    Gil {
        gil: GilIdx,
        address: u64,
    },
    /// An interpreter appeared, or its GIL arrangement changed.
    Interpreter {
        time_ns: u64,
        id: i64,
        main: bool,
        own_gil: bool,
        gil: GilIdx,
        address: u64,
    },
    InterpreterEnd {
        time_ns: u64,
        id: i64,
    },
    /// A thread was first seen; `thread` numbers are given out 0, 1, 2, ...
    /// A thread found gone and then seen again (a reading missed it) starts
    /// again under its old number.
    ThreadStart {
        time_ns: u64,
        thread: ThreadIdx,
        tid: u32,
        start_ticks: u64,
        name: String,
        os_name: String,
    },
    ThreadName {
        time_ns: u64,
        thread: ThreadIdx,
        name: String,
        os_name: String,
    },
    /// The thread was gone at `time_ns` (it ended since its last sample).
    ThreadEnd {
        time_ns: u64,
        thread: ThreadIdx,
    },
    Run(Run),
    GilRun(GilRun),
    /// A garbage collection (one whole collection: it is written when it ends).
    Gc(GcRun),
    /// A sample could not be taken; the time until the next sample is a gap.
    SampleError {
        time_ns: u64,
        message: String,
    },
    /// Something the reader could not establish (each text once per trace).
    Warning {
        time_ns: u64,
        message: String,
    },
    /// From `time_ns` on, GIL states come from `mode` (exact mode detached because it went
    /// over the overhead budget: `Sampled`), sampled at `rate_hz`; `own_ppm` / `probes_ppm`
    /// are the costs measured then (gilscope's CPU, the probes' traps in the target; parts
    /// per million of one CPU); `reason` says why, with the figure.
    Mode {
        time_ns: u64,
        mode: Source,
        rate_hz: f64,
        own_ppm: u64,
        probes_ppm: u64,
        reason: String,
    },
    /// What the recording cost over the time since the previous COST record: gilscope's own
    /// CPU and the probes' traps in the target, parts per million of one CPU.
    Cost {
        time_ns: u64,
        own_ppm: u64,
        probes_ppm: u64,
    },
    /// The recording finished cleanly (absent when it was cut).
    End {
        time_ns: u64,
        samples: u64,
        missed: u64,
    },
}

impl Event {
    /// The time the event is filed under: its end for runs, `None` for
    /// definitions.
    pub fn time_ns(&self) -> Option<u64> {
        match self {
            Event::Frame { .. } | Event::Stack { .. } | Event::Gil { .. } => None,
            Event::Interpreter { time_ns, .. }
            | Event::InterpreterEnd { time_ns, .. }
            | Event::ThreadStart { time_ns, .. }
            | Event::ThreadName { time_ns, .. }
            | Event::ThreadEnd { time_ns, .. }
            | Event::SampleError { time_ns, .. }
            | Event::Warning { time_ns, .. }
            | Event::Mode { time_ns, .. }
            | Event::Cost { time_ns, .. }
            | Event::End { time_ns, .. } => Some(*time_ns),
            Event::Run(r) => Some(r.end_ns),
            Event::GilRun(g) => Some(g.end_ns),
            Event::Gc(g) => Some(g.end_ns),
        }
    }
}

/// Every [`GilState`], in display order.
pub const STATES: [GilState; 6] = [
    GilState::Held,
    GilState::Waiting,
    GilState::Released,
    GilState::Idle,
    GilState::Attached,
    GilState::Unknown,
];

/// A state interval: consecutive runs of one thread that agree on
/// interpreter, state, on-CPU and source, merged. A thread's intervals are what its
/// totals (`by_state`, `on_cpu`) add up: every view of the model draws them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateInterval {
    pub start_ns: u64,
    pub end_ns: u64,
    pub interpreter: i64,
    pub state: GilState,
    /// On a CPU: from the run itself (sampled), or from the sampled runs over the same
    /// time (exact runs).
    pub on_cpu: bool,
    pub samples: u64,
    pub source: Source,
}

/// How long sampled on-CPU spans are kept for exact runs still to come (exact runs of a
/// thread arrive when their interval ends, at most a couple of seconds after the samples).
const CPU_SPANS_KEPT_NS: u64 = 10_000_000_000;

/// Time and samples spent somewhere.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub ns: u64,
    pub samples: u64,
}

impl Totals {
    fn add(&mut self, ns: u64, samples: u64) {
        self.ns = self.ns.saturating_add(ns);
        self.samples = self.samples.saturating_add(samples);
    }

    fn sub(&mut self, other: Totals) {
        self.ns = self.ns.saturating_sub(other.ns);
        self.samples = self.samples.saturating_sub(other.samples);
    }
}

/// Takes `taken` back out of `from`, dropping entries left empty.
fn subtract_all<K: Ord>(from: &mut BTreeMap<K, Totals>, taken: BTreeMap<K, Totals>) {
    for (k, v) in taken {
        if let Some(x) = from.get_mut(&k) {
            x.sub(v);
        }
    }
    from.retain(|_, v| v.ns > 0 || v.samples > 0);
}

#[derive(Debug, Clone, PartialEq)]
pub struct Thread {
    pub idx: ThreadIdx,
    pub tid: u32,
    pub start_ticks: u64,
    pub name: String,
    pub os_name: String,
    pub first_seen_ns: u64,
    /// End of the last run seen.
    pub last_seen_ns: u64,
    /// When the thread was found gone.
    pub ended_ns: Option<u64>,
    /// State intervals in time order.
    pub intervals: Vec<StateInterval>,
    /// Time per state (all interpreters).
    pub by_state: BTreeMap<GilState, Totals>,
    /// Time per interpreter the thread ran in.
    pub by_interpreter: BTreeMap<i64, Totals>,
    /// Time on a CPU (any state).
    pub on_cpu: Totals,
    /// Time per (state, interpreter, stack): the flame graph by GIL state.
    pub stacks: HashMap<(GilState, i64, StackId), Totals>,
    /// Time it spent running garbage collections (inside its held time): the `gc` state.
    pub gc: Totals,
    /// Its stacks over time, from the sampled runs: `(start, end, stack)`, in time order,
    /// adjacent equal ones merged (trimmed with `intervals`). Blame reads the holder's stack
    /// at the time from them.
    pub stack_spans: Vec<(u64, u64, StackId)>,
    /// The thread has exact-mode runs: its states (`intervals`, `by_state`,
    /// `by_interpreter`) come from them only; sampled runs still give `stacks`
    /// and `on_cpu`.
    pub exact: bool,
    /// What sampled runs added to `by_state` / `by_interpreter` before the
    /// first exact run (taken back out when it comes).
    sampled_by_state: BTreeMap<GilState, Totals>,
    sampled_by_interpreter: BTreeMap<i64, Totals>,
    sampled_on_cpu: Totals,
    /// On-CPU spans of the sampled runs (merged, in time order, the last
    /// [`CPU_SPANS_KEPT_NS`]): exact runs take their on-CPU time from them.
    cpu_spans: Vec<(u64, u64)>,
    /// The sampled runs of the last [`CPU_SPANS_KEPT_NS`] (start, end, state, interpreter,
    /// stack, samples): an exact run moves their stack time over its span to its own state.
    stack_log: Vec<(u64, u64, GilState, i64, StackId, u32)>,
}

/// `samples` of a run of `run_ns` that fall in `part_ns` of it.
fn samples_in(samples: u32, part_ns: u64, run_ns: u64) -> u64 {
    if run_ns == 0 {
        return 0;
    }
    (u128::from(samples) * u128::from(part_ns) / u128::from(run_ns)) as u64
}

impl Thread {
    /// A sampled run's stack time: under the state of the exact intervals already over it
    /// (exact threads), the rest under its own state (moved when an exact run covers it).
    fn add_sampled_stack(&mut self, r: &Run) {
        let run_ns = r.end_ns.saturating_sub(r.start_ns);
        let mut left = run_ns;
        let mut left_samples = u64::from(r.samples);
        if self.exact {
            let first = self.intervals.partition_point(|i| i.end_ns <= r.start_ns);
            for i in self.intervals[first..]
                .iter()
                .take_while(|i| i.start_ns < r.end_ns)
            {
                let o = i
                    .end_ns
                    .min(r.end_ns)
                    .saturating_sub(i.start_ns.max(r.start_ns));
                let n = samples_in(r.samples, o, run_ns).min(left_samples);
                self.stacks
                    .entry((i.state, r.interpreter, r.stack))
                    .or_default()
                    .add(o, n);
                left = left.saturating_sub(o);
                left_samples -= n;
            }
        }
        if left > 0 || left_samples > 0 {
            self.stacks
                .entry((r.state, r.interpreter, r.stack))
                .or_default()
                .add(left, left_samples);
        }
        if run_ns > 0 {
            self.stack_log.push((
                r.start_ns,
                r.end_ns,
                r.state,
                r.interpreter,
                r.stack,
                r.samples,
            ));
            let keep_after = r.end_ns.saturating_sub(CPU_SPANS_KEPT_NS);
            let drop = self.stack_log.partition_point(|l| l.1 < keep_after);
            self.stack_log.drain(..drop);
        }
    }

    /// Exact run `r` came: the stack time sampled runs put under their own state over its
    /// span moves to its state (exact runs of a thread never overlap, so no time moves
    /// twice).
    fn relabel_stacks(&mut self, r: &Run) {
        let first = self.stack_log.partition_point(|l| l.1 <= r.start_ns);
        for &(s, e, state, interp, stack, samples) in self.stack_log[first..]
            .iter()
            .take_while(|l| l.0 < r.end_ns)
        {
            if state == r.state {
                continue;
            }
            let o = e.min(r.end_ns).saturating_sub(s.max(r.start_ns));
            if o == 0 {
                continue;
            }
            let n = samples_in(samples, o, e - s);
            let Some(from) = self.stacks.get_mut(&(state, interp, stack)) else {
                continue;
            };
            let moved = Totals {
                ns: o.min(from.ns),
                samples: n.min(from.samples),
            };
            from.sub(moved);
            if from.ns == 0 && from.samples == 0 {
                self.stacks.remove(&(state, interp, stack));
            }
            self.stacks
                .entry((r.state, interp, stack))
                .or_default()
                .add(moved.ns, moved.samples);
        }
    }

    /// Adds `[start, end)` of run `r` to the totals and the intervals.
    fn add_piece(&mut self, r: &Run, start: u64, end: u64, on_cpu: bool, samples: u64) {
        let ns = end.saturating_sub(start);
        self.by_state.entry(r.state).or_default().add(ns, samples);
        self.by_interpreter
            .entry(r.interpreter)
            .or_default()
            .add(ns, samples);
        if on_cpu {
            self.on_cpu.add(ns, samples);
        }
        match self.intervals.last_mut() {
            Some(last)
                if last.end_ns == start
                    && last.interpreter == r.interpreter
                    && last.state == r.state
                    && last.on_cpu == on_cpu
                    && last.source == r.source =>
            {
                last.end_ns = end;
                last.samples = last.samples.saturating_add(samples);
            }
            _ => self.intervals.push(StateInterval {
                start_ns: start,
                end_ns: end,
                interpreter: r.interpreter,
                state: r.state,
                on_cpu,
                samples,
                source: r.source,
            }),
        }
    }

    /// All observed time (sum over states).
    pub fn observed(&self) -> Totals {
        let mut t = Totals::default();
        for v in self.by_state.values() {
            t.add(v.ns, v.samples);
        }
        t
    }

    pub fn state(&self, s: GilState) -> Totals {
        self.by_state.get(&s).copied().unwrap_or_default()
    }

    /// The interpreter the thread spent most time in (lowest id on ties).
    pub fn main_interpreter(&self) -> Option<i64> {
        let mut best: Option<(i64, u64)> = None;
        for (&id, t) in &self.by_interpreter {
            if best.is_none_or(|(_, ns)| t.ns > ns) {
                best = Some((id, t.ns));
            }
        }
        best.map(|(id, _)| id)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interpreter {
    pub id: i64,
    pub main: bool,
    pub own_gil: bool,
    pub gil: GilIdx,
    pub address: u64,
    pub first_seen_ns: u64,
    pub ended_ns: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Gil {
    pub idx: GilIdx,
    pub address: u64,
    /// Time the GIL was observed (sum of its runs).
    pub observed: Totals,
    /// Observed while enabled.
    pub enabled: Totals,
    /// Observed locked (busy).
    pub locked: Totals,
    /// Hand-overs counted from `switch_number` increments between samples.
    pub switches: u64,
    /// Hand-overs seen as a change of holder between samples (a lower bound).
    pub holder_changes: u64,
    last_switch: Option<u64>,
    last_holder: Option<u32>,
}

impl Gil {
    /// Best hand-over count: `switch_number` increments when the target
    /// maintains it, else holder changes.
    pub fn handovers(&self) -> u64 {
        if self.switches > 0 {
            self.switches
        } else {
            self.holder_changes
        }
    }
}

/// The model. Feed it events with [`Timeline::apply`]; read its public fields.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    frames: Vec<Frame>,
    stacks: Vec<(StackId, FrameId)>,
    pub threads: Vec<Thread>,
    pub interpreters: BTreeMap<i64, Interpreter>,
    pub gils: Vec<Gil>,
    /// Earliest and latest time seen in any event.
    pub start_ns: Option<u64>,
    pub end_ns: Option<u64>,
    /// Sample errors by message.
    pub sample_errors: BTreeMap<String, u64>,
    pub warnings: Vec<String>,
    /// `(samples, missed)` from the end record of a cleanly finished trace.
    pub end: Option<(u64, u64)>,
    /// Runs or GIL runs in each source seen.
    pub sources: BTreeMap<&'static str, u64>,
    /// Events that referred to something never defined (ignored).
    pub inconsistent_events: u64,
    /// Mode and rate changes (overhead budget), in file order.
    pub modes: Vec<ModeChange>,
    /// Exact mode was detached here: sampled runs after it give states again.
    pub exact_until: Option<u64>,
    /// COST records: (time, gilscope's CPU, the probes' traps), ppm of one CPU.
    pub costs: Vec<(u64, u64, u64)>,
    /// Garbage collections in time order (kept like `intervals`: trimmed by
    /// [`Timeline::trim_intervals_before`]); `gc` keeps the totals.
    pub gc_runs: Vec<GcRun>,
    /// Collections per interpreter (cumulative).
    pub gc: BTreeMap<i64, GcStats>,
}

/// A MODE record: from `time_ns` on, states come from `mode` at `rate_hz`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModeChange {
    pub time_ns: u64,
    pub mode: Source,
    pub rate_hz: f64,
    pub own_ppm: u64,
    pub probes_ppm: u64,
    pub reason: String,
}

impl ModeChange {
    /// The switch a MODE record says (None for any other event).
    pub fn of(e: &Event) -> Option<ModeChange> {
        match e {
            Event::Mode {
                time_ns,
                mode,
                rate_hz,
                own_ppm,
                probes_ppm,
                reason,
            } => Some(ModeChange {
                time_ns: *time_ns,
                mode: *mode,
                rate_hz: *rate_hz,
                own_ppm: *own_ppm,
                probes_ppm: *probes_ppm,
                reason: reason.clone(),
            }),
            _ => None,
        }
    }
}

impl Timeline {
    pub fn new() -> Self {
        Self::default()
    }

    /// Build a model from a sequence of events.
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a Event>) -> Self {
        let mut t = Timeline::new();
        for e in events {
            t.apply(e);
        }
        t
    }

    pub fn frame(&self, id: FrameId) -> Option<&Frame> {
        id.checked_sub(1).and_then(|i| self.frames.get(i as usize))
    }

    /// The frames of a stack, innermost first.
    pub fn stack_frames(&self, mut id: StackId) -> Vec<&Frame> {
        let mut out = Vec::new();
        // Parents are always defined before children, but guard anyway.
        for _ in 0..=self.stacks.len() {
            let Some(&(parent, frame)) =
                id.checked_sub(1).and_then(|i| self.stacks.get(i as usize))
            else {
                break;
            };
            if let Some(f) = self.frame(frame) {
                out.push(f);
            }
            id = parent;
        }
        out
    }

    pub fn frame_count(&self) -> usize {
        self.frames.len()
    }

    pub fn stack_count(&self) -> usize {
        self.stacks.len()
    }

    /// The thread a kernel thread `(tid, start_ticks)` was given.
    pub fn thread_by_key(&self, tid: u32, start_ticks: u64) -> Option<&Thread> {
        self.threads
            .iter()
            .find(|t| t.tid == tid && t.start_ticks == start_ticks)
    }

    /// Total samples: from the end record when present, else the most
    /// samples any GIL (or thread) was seen in.
    pub fn samples(&self) -> u64 {
        if let Some((samples, _)) = self.end {
            return samples;
        }
        let gil = self.gils.iter().map(|g| g.observed.samples).max();
        let thr = self.threads.iter().map(|t| t.observed().samples).max();
        gil.unwrap_or(0).max(thr.unwrap_or(0))
    }

    pub fn duration_ns(&self) -> u64 {
        match (self.start_ns, self.end_ns) {
            (Some(s), Some(e)) => e.saturating_sub(s),
            _ => 0,
        }
    }

    /// Sampled run `r` as the model sees it: for a thread with exact runs, cut at its exact
    /// intervals and each piece given their state and on-CPU time (what no exact interval
    /// covers keeps the sampled state); for other threads `r` itself. Samples are shared
    /// out in proportion (rounded down, the rest to the last piece). Streaming exports
    /// use it to show the states `summary` counts.
    pub fn as_modelled(&self, r: &Run) -> Vec<Run> {
        let Some(t) = self.threads.get(r.thread as usize) else {
            return vec![r.clone()];
        };
        if !t.exact || r.source == Source::Exact || r.end_ns <= r.start_ns {
            return vec![r.clone()];
        }
        let run_ns = r.end_ns - r.start_ns;
        let mut out: Vec<Run> = Vec::new();
        let mut at = r.start_ns;
        let piece = |s: u64, e: u64, state: GilState, on_cpu: bool| Run {
            start_ns: s,
            end_ns: e,
            samples: samples_in(r.samples, e - s, run_ns) as u32,
            state,
            on_cpu,
            ..r.clone()
        };
        let first = t.intervals.partition_point(|i| i.end_ns <= r.start_ns);
        for i in t.intervals[first..]
            .iter()
            .take_while(|i| i.start_ns < r.end_ns)
        {
            let (s, e) = (i.start_ns.max(r.start_ns), i.end_ns.min(r.end_ns));
            if s > at {
                out.push(piece(at, s, r.state, r.on_cpu));
            }
            if e > s {
                out.push(piece(s, e, i.state, i.on_cpu));
            }
            at = at.max(e);
        }
        if at < r.end_ns {
            out.push(piece(at, r.end_ns, r.state, r.on_cpu));
        }
        let given: u32 = out.iter().map(|p| p.samples).sum();
        if let Some(last) = out.last_mut() {
            last.samples += r.samples.saturating_sub(given);
        }
        out
    }

    /// Drops state intervals that ended before `t_ns`, so a live session
    /// keeps bounded memory; totals and stacks stay cumulative.
    pub fn trim_intervals_before(&mut self, t_ns: u64) {
        for t in &mut self.threads {
            let keep_from = t.intervals.partition_point(|i| i.end_ns < t_ns);
            t.intervals.drain(..keep_from);
            let keep_from = t.stack_spans.partition_point(|s| s.1 < t_ns);
            t.stack_spans.drain(..keep_from);
        }
        let keep_from = self.gc_runs.partition_point(|g| g.end_ns < t_ns);
        self.gc_runs.drain(..keep_from);
    }

    /// Interpreters that use GIL `gil`, by id.
    pub fn interpreters_on_gil(&self, gil: GilIdx) -> Vec<i64> {
        self.interpreters
            .values()
            .filter(|i| i.gil == gil)
            .map(|i| i.id)
            .collect()
    }

    fn see_time(&mut self, start: u64, end: u64) {
        self.start_ns = Some(self.start_ns.map_or(start, |s| s.min(start)));
        self.end_ns = Some(self.end_ns.map_or(end, |e| e.max(end)));
    }

    fn thread_mut(&mut self, idx: ThreadIdx) -> Option<&mut Thread> {
        match self.threads.get_mut(idx as usize) {
            Some(t) => Some(t),
            None => {
                self.inconsistent_events += 1;
                None
            }
        }
    }

    /// Fold one event into the model. Never panics; events that refer to
    /// undefined things are counted in `inconsistent_events` and ignored.
    pub fn apply(&mut self, event: &Event) {
        if let Some(t) = event.time_ns() {
            let start = match event {
                Event::Run(r) => r.start_ns,
                Event::GilRun(g) => g.start_ns,
                Event::Gc(g) => g.start_ns,
                _ => t,
            };
            self.see_time(start, t);
        }
        match event {
            Event::Frame { id, frame } => {
                if *id as usize == self.frames.len() + 1 {
                    self.frames.push(frame.clone());
                } else {
                    self.inconsistent_events += 1;
                }
            }
            Event::Stack { id, parent, frame } => {
                if *id as usize == self.stacks.len() + 1 && parent < id {
                    self.stacks.push((*parent, *frame));
                } else {
                    self.inconsistent_events += 1;
                }
            }
            Event::Gil { gil, address } => {
                if *gil as usize == self.gils.len() {
                    self.gils.push(Gil {
                        idx: *gil,
                        address: *address,
                        ..Gil::default()
                    });
                } else {
                    self.inconsistent_events += 1;
                }
            }
            Event::Interpreter {
                time_ns,
                id,
                main,
                own_gil,
                gil,
                address,
            } => {
                let first_seen_ns = self
                    .interpreters
                    .get(id)
                    .map_or(*time_ns, |i| i.first_seen_ns);
                self.interpreters.insert(
                    *id,
                    Interpreter {
                        id: *id,
                        main: *main,
                        own_gil: *own_gil,
                        gil: *gil,
                        address: *address,
                        first_seen_ns,
                        ended_ns: None,
                    },
                );
            }
            Event::InterpreterEnd { time_ns, id } => match self.interpreters.get_mut(id) {
                Some(i) => i.ended_ns = Some(*time_ns),
                None => self.inconsistent_events += 1,
            },
            Event::ThreadStart {
                time_ns,
                thread,
                tid,
                start_ticks,
                name,
                os_name,
            } => {
                if let Some(t) = self.threads.get_mut(*thread as usize) {
                    if t.tid == *tid && t.start_ticks == *start_ticks {
                        t.ended_ns = None;
                        t.name = name.clone();
                        t.os_name = os_name.clone();
                    } else {
                        self.inconsistent_events += 1;
                    }
                } else if *thread as usize == self.threads.len() {
                    self.threads.push(Thread {
                        idx: *thread,
                        tid: *tid,
                        start_ticks: *start_ticks,
                        name: name.clone(),
                        os_name: os_name.clone(),
                        first_seen_ns: *time_ns,
                        last_seen_ns: *time_ns,
                        ended_ns: None,
                        intervals: Vec::new(),
                        by_state: BTreeMap::new(),
                        by_interpreter: BTreeMap::new(),
                        on_cpu: Totals::default(),
                        stacks: HashMap::new(),
                        exact: false,
                        sampled_by_state: BTreeMap::new(),
                        sampled_by_interpreter: BTreeMap::new(),
                        sampled_on_cpu: Totals::default(),
                        cpu_spans: Vec::new(),
                        stack_log: Vec::new(),
                        gc: Totals::default(),
                        stack_spans: Vec::new(),
                    });
                } else {
                    self.inconsistent_events += 1;
                }
            }
            Event::ThreadName {
                thread,
                name,
                os_name,
                ..
            } => {
                if let Some(t) = self.thread_mut(*thread) {
                    t.name = name.clone();
                    t.os_name = os_name.clone();
                }
            }
            Event::ThreadEnd { time_ns, thread } => {
                if let Some(t) = self.thread_mut(*thread) {
                    t.ended_ns = Some(*time_ns);
                }
            }
            Event::Run(r) => self.apply_run(r),
            Event::GilRun(g) => self.apply_gil_run(g),
            Event::Gc(g) => self.apply_gc(g),
            Event::SampleError { message, .. } => {
                *self.sample_errors.entry(message.clone()).or_insert(0) += 1;
            }
            Event::Warning { message, .. } => {
                if !self.warnings.contains(message) {
                    self.warnings.push(message.clone());
                }
            }
            Event::Mode { time_ns, mode, .. } => {
                if *mode == Source::Sampled && self.exact_until.is_none() {
                    let had_exact = self.sources.contains_key("exact");
                    if had_exact {
                        self.exact_until = Some(*time_ns);
                    }
                }
                self.modes.extend(ModeChange::of(event));
            }
            Event::Cost {
                time_ns,
                own_ppm,
                probes_ppm,
            } => self.costs.push((*time_ns, *own_ppm, *probes_ppm)),
            Event::End {
                samples, missed, ..
            } => self.end = Some((*samples, *missed)),
        }
    }

    fn source_seen(&mut self, s: Source) {
        let key = match s {
            Source::Sampled => "sampled",
            Source::Exact => "exact",
        };
        *self.sources.entry(key).or_insert(0) += 1;
    }

    /// Exact and sampled runs of one thread cover the same time: once a thread
    /// has an exact run, its states come from exact runs only (what sampled
    /// runs said before is taken back), and sampled runs only add stacks (by
    /// their sampled state) and the on-CPU spans exact runs are cut by: an exact
    /// run's time is on a CPU where a sampled run said so. Exact runs carry no stacks.
    fn apply_run(&mut self, r: &Run) {
        self.source_seen(r.source);
        let exact_until = self.exact_until;
        let Some(t) = self.thread_mut(r.thread) else {
            return;
        };
        let exact = r.source == Source::Exact;
        if exact && !t.exact {
            t.exact = true;
            subtract_all(&mut t.by_state, std::mem::take(&mut t.sampled_by_state));
            subtract_all(
                &mut t.by_interpreter,
                std::mem::take(&mut t.sampled_by_interpreter),
            );
            t.on_cpu.sub(std::mem::take(&mut t.sampled_on_cpu));
            t.intervals.retain(|i| i.source == Source::Exact);
        }
        let ns = r.end_ns.saturating_sub(r.start_ns);
        let samples = u64::from(r.samples);
        t.last_seen_ns = t.last_seen_ns.max(r.end_ns);
        t.first_seen_ns = t.first_seen_ns.min(r.start_ns);
        if !exact {
            t.add_sampled_stack(r);
            if r.end_ns > r.start_ns {
                match t.stack_spans.last_mut() {
                    Some(last) if last.1 == r.start_ns && last.2 == r.stack => last.1 = r.end_ns,
                    _ => t.stack_spans.push((r.start_ns, r.end_ns, r.stack)),
                }
            }
            if r.on_cpu && r.end_ns > r.start_ns {
                match t.cpu_spans.last_mut() {
                    Some(last) if last.1 >= r.start_ns => last.1 = last.1.max(r.end_ns),
                    _ => t.cpu_spans.push((r.start_ns, r.end_ns)),
                }
                let keep_after = r.end_ns.saturating_sub(CPU_SPANS_KEPT_NS);
                let drop = t.cpu_spans.partition_point(|s| s.1 < keep_after);
                t.cpu_spans.drain(..drop);
            }
            if t.exact {
                // After exact mode was detached the samples are the states again: the part
                // of the run after the switch counts.
                if let Some(x) = exact_until.filter(|&x| r.end_ns > x) {
                    let from = r.start_ns.max(x);
                    let part = r.end_ns - from;
                    let part_samples = if ns == 0 {
                        samples
                    } else {
                        (samples as u128 * part as u128 / ns as u128) as u64
                    };
                    t.add_piece(r, from, r.end_ns, r.on_cpu, part_samples);
                }
                return;
            }
            t.sampled_by_state
                .entry(r.state)
                .or_default()
                .add(ns, samples);
            t.sampled_by_interpreter
                .entry(r.interpreter)
                .or_default()
                .add(ns, samples);
            if r.on_cpu {
                t.sampled_on_cpu.add(ns, samples);
            }
            t.add_piece(r, r.start_ns, r.end_ns, r.on_cpu, samples);
            return;
        }
        t.relabel_stacks(r);
        // Exact: cut at the sampled on-CPU spans.
        let mut at = r.start_ns;
        let first = t.cpu_spans.partition_point(|s| s.1 <= r.start_ns);
        let mut pieces = Vec::new();
        for &(cs, ce) in t.cpu_spans[first..].iter().take_while(|s| s.0 < r.end_ns) {
            let (cs, ce) = (cs.max(r.start_ns), ce.min(r.end_ns));
            if cs > at {
                pieces.push((at, cs, false));
            }
            if ce > cs {
                pieces.push((cs, ce, true));
            }
            at = at.max(ce);
        }
        if at < r.end_ns || pieces.is_empty() {
            pieces.push((at, r.end_ns, false));
        }
        for (s, e, on_cpu) in pieces {
            t.add_piece(r, s, e, on_cpu, 0);
        }
    }

    fn apply_gc(&mut self, g: &GcRun) {
        if let Some(t) = g.thread {
            match self.threads.get_mut(t as usize) {
                Some(th) => th
                    .gc
                    .add(g.end_ns.saturating_sub(g.start_ns), u64::from(g.samples)),
                None => {
                    self.inconsistent_events += 1;
                    return;
                }
            }
        }
        let ns = g.end_ns.saturating_sub(g.start_ns);
        let st = self.gc.entry(g.interpreter).or_default();
        st.collections += 1;
        st.total.add(ns, u64::from(g.samples));
        if st
            .longest
            .as_ref()
            .is_none_or(|l| ns > l.end_ns.saturating_sub(l.start_ns))
        {
            st.longest = Some(g.clone());
        }
        let at = self.gc_runs.partition_point(|r| r.start_ns <= g.start_ns);
        self.gc_runs.insert(at, g.clone());
    }

    /// The collections overlapping `[start_ns, end_ns)` that thread `thread` ran.
    pub fn gc_of_thread(&self, thread: ThreadIdx, start_ns: u64, end_ns: u64) -> Vec<&GcRun> {
        // Sorted by start; none is longer than the longest.
        let longest = self
            .gc
            .values()
            .filter_map(|s| s.longest.as_ref())
            .map(|l| l.end_ns.saturating_sub(l.start_ns))
            .max()
            .unwrap_or(0);
        let from = start_ns.saturating_sub(longest);
        let first = self.gc_runs.partition_point(|r| r.start_ns < from);
        self.gc_runs[first..]
            .iter()
            .take_while(|r| r.start_ns < end_ns)
            .filter(|r| r.thread == Some(thread) && r.end_ns > start_ns)
            .collect()
    }

    fn apply_gil_run(&mut self, g: &GilRun) {
        self.source_seen(Source::Sampled);
        let Some(gil) = self.gils.get_mut(g.gil as usize) else {
            self.inconsistent_events += 1;
            return;
        };
        let ns = g.end_ns.saturating_sub(g.start_ns);
        let samples = u64::from(g.samples);
        gil.observed.add(ns, samples);
        if g.enabled {
            gil.enabled.add(ns, samples);
            if g.locked {
                gil.locked.add(ns, samples);
            }
        }
        if let Some(prev) = gil.last_switch {
            if g.switch_number > prev {
                gil.switches = gil.switches.saturating_add(g.switch_number - prev);
            }
        }
        gil.last_switch = Some(g.switch_number);
        if let Some(h) = g.holder_tid {
            if gil.last_holder.is_some_and(|p| p != h) {
                gil.holder_changes += 1;
            }
            gil.last_holder = Some(h);
        }
    }
}

/// Test fixture: the events that open a trace with one GIL (0x1000) and the main interpreter
/// (id 0, 0x2000) owning it.
#[cfg(test)]
pub(crate) fn one_gil_main_interpreter() -> Vec<Event> {
    vec![
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
    ]
}

#[cfg(test)]
mod tests {
    #[test]
    fn trimming_keeps_totals_and_recent_intervals() {
        let mut tl = Timeline::new();
        tl.apply(&Event::ThreadStart {
            time_ns: 0,
            thread: 0,
            tid: 7,
            start_ticks: 1,
            name: "t".into(),
            os_name: "t".into(),
        });
        for (i, state) in [GilState::Held, GilState::Idle, GilState::Held]
            .into_iter()
            .enumerate()
        {
            let i = i as u64;
            tl.apply(&Event::Run(Run {
                thread: 0,
                start_ns: i * 10,
                end_ns: i * 10 + 10,
                samples: 10,
                interpreter: 0,
                state,
                on_cpu: true,
                stack: 0,
                source: Source::Sampled,
            }));
        }
        let before = tl.threads[0].state(GilState::Held);
        assert_eq!(tl.threads[0].intervals.len(), 3);
        tl.trim_intervals_before(15);
        assert_eq!(tl.threads[0].intervals.len(), 2);
        assert_eq!(tl.threads[0].intervals[0].start_ns, 10);
        assert_eq!(tl.threads[0].state(GilState::Held), before);
    }

    use super::*;

    #[test]
    fn sampled_runs_count_again_after_exact_mode_is_detached() {
        let exact = |start: u64, end: u64, state: GilState| {
            Event::Run(Run {
                thread: 0,
                start_ns: start,
                end_ns: end,
                samples: 0,
                interpreter: 0,
                state,
                on_cpu: false,
                stack: 0,
                source: Source::Exact,
            })
        };
        let events = vec![
            start(0, 100, 1),
            run(0, 0, 50, GilState::Held, 3),
            exact(0, 30, GilState::Held),
            exact(30, 60, GilState::Waiting),
            Event::Mode {
                time_ns: 60,
                mode: Source::Sampled,
                rate_hz: 1000.0,
                own_ppm: 5_000,
                probes_ppm: 40_000,
                reason: "over budget".into(),
            },
            run(0, 50, 80, GilState::Idle, 0), // 60..80 counts (after the switch)
            run(0, 80, 100, GilState::Held, 3),
        ];
        let t = Timeline::from_events(&events);
        assert_eq!(t.exact_until, Some(60));
        assert_eq!(t.modes.len(), 1);
        let th = &t.threads[0];
        assert!(th.exact);
        assert_eq!(th.state(GilState::Held).ns, 30 + 20);
        assert_eq!(th.state(GilState::Waiting).ns, 30);
        assert_eq!(th.state(GilState::Idle).ns, 20);
        assert_eq!(th.observed().ns, 100);
        assert_eq!(
            th.intervals
                .iter()
                .map(|i| (i.start_ns, i.end_ns, i.state, i.source))
                .collect::<Vec<_>>(),
            // The exact wait is cut where the samples saw the thread leave its CPU (50).
            vec![
                (0, 30, GilState::Held, Source::Exact),
                (30, 50, GilState::Waiting, Source::Exact),
                (50, 60, GilState::Waiting, Source::Exact),
                (60, 80, GilState::Idle, Source::Sampled),
                (80, 100, GilState::Held, Source::Sampled),
            ]
        );
        // A sampled-only trace: a MODE record (a rate change) changes nothing.
        let t = Timeline::from_events(&[
            start(0, 100, 1),
            run(0, 0, 50, GilState::Held, 3),
            Event::Mode {
                time_ns: 50,
                mode: Source::Sampled,
                rate_hz: 400.0,
                own_ppm: 20_000,
                probes_ppm: 0,
                reason: "rate".into(),
            },
            run(0, 50, 100, GilState::Idle, 0),
        ]);
        assert_eq!(t.exact_until, None);
        assert_eq!(t.threads[0].observed().ns, 100);
    }

    fn run(thread: u32, start: u64, end: u64, state: GilState, stack: StackId) -> Event {
        Event::Run(Run {
            thread,
            start_ns: start,
            end_ns: end,
            samples: ((end - start) / 10) as u32,
            interpreter: 0,
            state,
            on_cpu: true,
            stack,
            source: Source::Sampled,
        })
    }

    fn start(thread: u32, tid: u32, ticks: u64) -> Event {
        Event::ThreadStart {
            time_ns: 0,
            thread,
            tid,
            start_ticks: ticks,
            name: format!("t{thread}"),
            os_name: String::new(),
        }
    }

    #[test]
    fn adjacent_runs_merge_into_intervals() {
        let events = vec![
            start(0, 100, 1),
            run(0, 0, 30, GilState::Held, 0),
            run(0, 30, 50, GilState::Held, 0), // chunk split: merges
            run(0, 50, 70, GilState::Idle, 0),
            run(0, 80, 90, GilState::Idle, 0), // after a gap: new interval
        ];
        let t = Timeline::from_events(&events);
        let th = &t.threads[0];
        let iv: Vec<_> = th
            .intervals
            .iter()
            .map(|i| (i.start_ns, i.end_ns, i.state))
            .collect();
        assert_eq!(
            iv,
            vec![
                (0, 50, GilState::Held),
                (50, 70, GilState::Idle),
                (80, 90, GilState::Idle)
            ]
        );
        assert_eq!(th.state(GilState::Held).ns, 50);
        assert_eq!(th.observed().ns, 80);
        assert_eq!(t.duration_ns(), 90);
    }

    #[test]
    fn exact_runs_replace_sampled_states_but_not_stacks() {
        let exact = |start: u64, end: u64, state: GilState| {
            Event::Run(Run {
                thread: 0,
                start_ns: start,
                end_ns: end,
                samples: 0,
                interpreter: 0,
                state,
                on_cpu: false,
                stack: 0,
                source: Source::Exact,
            })
        };
        let events = vec![
            start(0, 100, 1),
            start(1, 200, 1),
            // Sampled first (the recorder writes exact runs when they complete).
            run(0, 0, 50, GilState::Held, 3),
            run(0, 50, 100, GilState::Waiting, 4),
            run(1, 0, 100, GilState::Idle, 0), // no exact runs: stays sampled
            exact(0, 37, GilState::Held),
            exact(37, 81, GilState::Waiting),
            run(0, 100, 120, GilState::Held, 3), // after: stacks and on-CPU only
            exact(81, 120, GilState::Held),
        ];
        let t = Timeline::from_events(&events);
        let th = &t.threads[0];
        assert!(th.exact);
        assert_eq!(th.state(GilState::Held).ns, 37 + 39);
        assert_eq!(th.state(GilState::Waiting).ns, 44);
        assert_eq!(th.observed().ns, 120);
        assert_eq!(th.by_interpreter[&0].ns, 120);
        assert_eq!(
            th.intervals
                .iter()
                .map(|i| (i.start_ns, i.end_ns, i.state, i.source))
                .collect::<Vec<_>>(),
            vec![
                (0, 37, GilState::Held, Source::Exact),
                (37, 81, GilState::Waiting, Source::Exact),
                (81, 120, GilState::Held, Source::Exact),
            ]
        );
        // Stacks from the sampled runs, under the exact state at their time (whether
        // the exact run came before or after the sampled one).
        assert_eq!(th.stacks[&(GilState::Held, 0, 3)].ns, 37 + 20);
        assert_eq!(th.stacks[&(GilState::Waiting, 0, 3)].ns, 13);
        assert_eq!(th.stacks[&(GilState::Waiting, 0, 4)].ns, 31);
        assert_eq!(th.stacks[&(GilState::Held, 0, 4)].ns, 19);
        let stack_ns: u64 = th.stacks.values().map(|t| t.ns).sum();
        assert_eq!(stack_ns, 120);
        for st in [GilState::Held, GilState::Waiting] {
            let by_stack: u64 = th
                .stacks
                .iter()
                .filter(|((s, _, _), _)| *s == st)
                .map(|(_, t)| t.ns)
                .sum();
            assert_eq!(
                by_stack,
                th.state(st).ns,
                "{st:?}: stacks add up to the state"
            );
        }
        let samples: u64 = th.stacks.values().map(|t| t.samples).sum();
        // 5 + 5 + 2 samples; a moved part carries its share, rounded down.
        assert!((9..=12).contains(&samples), "{samples}");
        assert!(!th.stacks.contains_key(&(GilState::Held, 0, 0)));
        assert_eq!(th.on_cpu.ns, 120);
        let other = &t.threads[1];
        assert!(!other.exact);
        assert_eq!(other.state(GilState::Idle).ns, 100);
    }

    #[test]
    fn sampled_runs_as_modelled_take_the_exact_states() {
        let exact = |start: u64, end: u64, state: GilState| {
            Event::Run(Run {
                thread: 0,
                start_ns: start,
                end_ns: end,
                samples: 0,
                interpreter: 0,
                state,
                on_cpu: false,
                stack: 0,
                source: Source::Exact,
            })
        };
        let events = vec![
            start(0, 100, 1),
            start(1, 200, 1),
            run(0, 0, 50, GilState::Held, 3),
            run(1, 0, 100, GilState::Idle, 0),
            exact(10, 37, GilState::Held),
            exact(37, 81, GilState::Waiting),
        ];
        let t = Timeline::from_events(&events);
        let Event::Run(sampled) = &events[2] else {
            unreachable!()
        };
        let pieces: Vec<_> = t
            .as_modelled(sampled)
            .iter()
            .map(|p| (p.start_ns, p.end_ns, p.state, p.samples, p.stack))
            .collect();
        // Before the first exact interval the sampled state stays; 5 samples shared out.
        assert_eq!(
            pieces,
            vec![
                (0, 10, GilState::Held, 1, 3),
                (10, 37, GilState::Held, 2, 3),
                (37, 50, GilState::Waiting, 2, 3),
            ]
        );
        // A thread without exact runs: as it is.
        let Event::Run(other) = &events[3] else {
            unreachable!()
        };
        assert_eq!(t.as_modelled(other), vec![other.clone()]);
    }

    #[test]
    fn reused_tid_is_two_threads() {
        let events = vec![start(0, 100, 1), start(1, 100, 2)];
        let t = Timeline::from_events(&events);
        assert_eq!(t.threads.len(), 2);
        assert_eq!(t.thread_by_key(100, 2).map(|t| t.idx), Some(1));
    }

    #[test]
    fn stacks_resolve_innermost_first_and_bad_refs_are_ignored() {
        let f = |n: &str| Frame {
            function: n.into(),
            file: "x.py".into(),
            line: 1,
            interpreter: 0,
        };
        let events = vec![
            Event::Frame {
                id: 1,
                frame: f("main"),
            },
            Event::Frame {
                id: 2,
                frame: f("work"),
            },
            Event::Stack {
                id: 1,
                parent: 0,
                frame: 1,
            },
            Event::Stack {
                id: 2,
                parent: 1,
                frame: 2,
            },
            Event::Stack {
                id: 9,
                parent: 1,
                frame: 2,
            },
            run(7, 0, 10, GilState::Held, 2),
        ];
        let t = Timeline::from_events(&events);
        let names: Vec<_> = t
            .stack_frames(2)
            .iter()
            .map(|f| f.function.as_str())
            .collect();
        assert_eq!(names, ["work", "main"]);
        assert!(t.stack_frames(0).is_empty());
        assert!(t.stack_frames(77).is_empty());
        assert_eq!(t.inconsistent_events, 2);
    }

    #[test]
    fn handovers_from_switch_number_or_holder() {
        let gr = |s: u64, e: u64, holder: u32, sw: u64| {
            Event::GilRun(GilRun {
                gil: 0,
                start_ns: s,
                end_ns: e,
                samples: 1,
                enabled: true,
                locked: true,
                holder_tid: Some(holder),
                switch_number: sw,
            })
        };
        let mut events = vec![Event::Gil {
            gil: 0,
            address: 0x1000,
        }];
        events.extend([gr(0, 1, 1, 10), gr(1, 2, 2, 13), gr(2, 3, 1, 14)]);
        let t = Timeline::from_events(&events);
        assert_eq!(t.gils[0].switches, 4);
        assert_eq!(t.gils[0].holder_changes, 2);
        assert_eq!(t.gils[0].handovers(), 4);
        // No switch_number maintained: fall back to holder changes.
        let mut events = vec![Event::Gil {
            gil: 0,
            address: 0x1000,
        }];
        events.extend([gr(0, 1, 1, 0), gr(1, 2, 2, 0), gr(2, 3, 1, 0)]);
        let t = Timeline::from_events(&events);
        assert_eq!(t.gils[0].handovers(), 2);
    }
}
