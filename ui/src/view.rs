//! The view model: everything the UI shows, as plain data owned by the UI
//! crate. The CLI builds it from gilscope's analysis model (a trace file for
//! `view`, the live sampler for `top`); the UI only reads it.
//!
//! Times are nanoseconds on one clock (gilscope uses CLOCK_MONOTONIC); only
//! differences from [`ViewModel::time_range`]'s start are ever displayed.

use crate::track::{Span, Track};

/// What a thread was doing, as drawn in its lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LaneState {
    /// Holds its interpreter's GIL.
    Held = 0,
    /// Wants the GIL and does not have it.
    Waiting = 1,
    /// Released the GIL and runs on a CPU (native code).
    Released = 2,
    /// Not running (sleeping, blocked in I/O).
    Idle = 3,
    /// Free-threaded build with the GIL disabled: running Python code.
    Attached = 4,
    /// Could not be determined.
    Unknown = 5,
    /// Holds the GIL (or is attached) and runs a garbage collection.
    Gc = 6,
}

impl LaneState {
    /// Display order (legend, tables). The legend shows [`LaneState::Gc`] only when some
    /// lane has it.
    pub const ALL: [LaneState; 7] = [
        LaneState::Held,
        LaneState::Waiting,
        LaneState::Released,
        LaneState::Idle,
        LaneState::Attached,
        LaneState::Unknown,
        LaneState::Gc,
    ];

    /// Which state a cell shows when several take exactly as long in it.
    pub const PRIORITY: [LaneState; 7] = [
        LaneState::Gc,
        LaneState::Held,
        LaneState::Attached,
        LaneState::Waiting,
        LaneState::Released,
        LaneState::Idle,
        LaneState::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LaneState::Held => "held",
            LaneState::Waiting => "waiting",
            LaneState::Released => "released",
            LaneState::Idle => "idle",
            LaneState::Attached => "attached",
            LaneState::Unknown => "unknown",
            LaneState::Gc => "gc",
        }
    }

    /// Whether a thread in this state is normally on a CPU; the default for
    /// [`Segment::new`]. Held is counted on-CPU (a holder usually runs).
    pub fn usually_on_cpu(self) -> bool {
        matches!(
            self,
            LaneState::Held | LaneState::Released | LaneState::Attached | LaneState::Gc
        )
    }
}

/// One stretch of a lane: `[start_ns, end_ns)` in one state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub start_ns: u64,
    pub end_ns: u64,
    pub state: LaneState,
    /// Whether the thread was on a CPU (used for the on-CPU % column only).
    pub on_cpu: bool,
}

impl Segment {
    /// A segment whose `on_cpu` is guessed from the state
    /// ([`LaneState::usually_on_cpu`]); use [`Segment::with_on_cpu`] when known.
    pub fn new(start_ns: u64, end_ns: u64, state: LaneState) -> Self {
        Segment {
            start_ns,
            end_ns,
            state,
            on_cpu: state.usually_on_cpu(),
        }
    }

    pub fn with_on_cpu(self, on_cpu: bool) -> Self {
        Segment { on_cpu, ..self }
    }
}

/// Category indices in a lane's track: the seven states, then on-CPU time.
const STATE_COUNT: usize = 7;
const ON_CPU: usize = STATE_COUNT;
const LANE_CATS: usize = STATE_COUNT + 1;

impl Span<LANE_CATS> for Segment {
    fn start(&self) -> u64 {
        self.start_ns
    }
    fn end(&self) -> u64 {
        self.end_ns
    }
    fn set_start(&mut self, t: u64) {
        self.start_ns = t;
    }
    fn set_end(&mut self, t: u64) {
        self.end_ns = t;
    }
    fn add(&self, acc: &mut [u64; LANE_CATS], ns: u64) {
        acc[self.state as usize] += ns;
        if self.on_cpu {
            acc[ON_CPU] += ns;
        }
    }
    fn same_kind(&self, next: &Self) -> bool {
        self.state == next.state && self.on_cpu == next.on_cpu
    }
}

/// Time spent in each state over some window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StateTimes {
    /// Indexed by `LaneState as usize`.
    pub ns: [u64; STATE_COUNT],
    pub on_cpu_ns: u64,
}

impl StateTimes {
    fn from_cats(c: &[u64; LANE_CATS]) -> Self {
        let mut ns = [0; STATE_COUNT];
        ns.copy_from_slice(&c[..STATE_COUNT]);
        StateTimes {
            ns,
            on_cpu_ns: c[ON_CPU],
        }
    }

    pub fn get(&self, s: LaneState) -> u64 {
        self.ns[s as usize]
    }

    /// All time with a known or unknown state (gaps excluded).
    pub fn observed(&self) -> u64 {
        self.ns.iter().sum()
    }

    /// Share of observed time in `s`, in percent (0 when nothing observed).
    pub fn pct(&self, s: LaneState) -> f64 {
        pct(self.get(s), self.observed())
    }

    pub fn on_cpu_pct(&self) -> f64 {
        pct(self.on_cpu_ns, self.observed())
    }

    /// The state covering most time; ties go by [`LaneState::PRIORITY`].
    pub fn dominant(&self) -> Option<LaneState> {
        let mut best: Option<(LaneState, u64)> = None;
        for s in LaneState::PRIORITY {
            let t = self.get(s);
            if t > 0 && best.is_none_or(|(_, b)| t > b) {
                best = Some((s, t));
            }
        }
        best.map(|(s, _)| s)
    }
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// One thread's timeline: sorted, non-overlapping segments with an index
/// that answers "time per state between a and b" in O(log n).
///
/// Gaps between segments mean "not observed" (thread not alive yet, or a
/// failed sample) and are drawn blank.
pub type Lane = Track<Segment, LANE_CATS>;

impl Track<Segment, LANE_CATS> {
    /// The state at the lane's end (the "now" of a live view).
    pub fn last_state(&self) -> Option<LaneState> {
        self.segments().last().map(|s| s.state)
    }

    /// Time per state within `[from_ns, to_ns)`.
    pub fn times(&self, from_ns: u64, to_ns: u64) -> StateTimes {
        StateTimes::from_cats(&self.sum(from_ns, to_ns))
    }

    /// For each of `cols` equal cells covering `[from_ns, to_ns)`, the state
    /// drawn there (`None` where nothing was observed).
    pub fn cells(&self, from_ns: u64, to_ns: u64, cols: usize) -> Vec<Option<LaneState>> {
        let mut out = vec![None; cols];
        self.cells_with(from_ns, to_ns, cols, |c, t| {
            out[c] = StateTimes::from_cats(t).dominant();
        });
        out
    }
}

/// What a GIL looked like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GilLock {
    /// Enabled and locked by some thread.
    Busy = 0,
    /// Enabled and unlocked.
    Free = 1,
    /// Disabled (free-threaded build).
    Disabled = 2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GilSegment {
    pub start_ns: u64,
    pub end_ns: u64,
    pub lock: GilLock,
}

impl GilSegment {
    pub fn new(start_ns: u64, end_ns: u64, lock: GilLock) -> Self {
        GilSegment {
            start_ns,
            end_ns,
            lock,
        }
    }
}

impl Span<3> for GilSegment {
    fn start(&self) -> u64 {
        self.start_ns
    }
    fn end(&self) -> u64 {
        self.end_ns
    }
    fn set_start(&mut self, t: u64) {
        self.start_ns = t;
    }
    fn set_end(&mut self, t: u64) {
        self.end_ns = t;
    }
    fn add(&self, acc: &mut [u64; 3], ns: u64) {
        acc[self.lock as usize] += ns;
    }
    fn same_kind(&self, next: &Self) -> bool {
        self.lock == next.lock
    }
}

/// Time a GIL spent busy, free and disabled over some window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GilTimes {
    pub busy_ns: u64,
    pub free_ns: u64,
    pub disabled_ns: u64,
}

impl GilTimes {
    fn from_cats(c: &[u64; 3]) -> Self {
        GilTimes {
            busy_ns: c[0],
            free_ns: c[1],
            disabled_ns: c[2],
        }
    }

    /// Busy share of the time the GIL was enabled; `None` if it never was.
    pub fn busy_fraction(&self) -> Option<f64> {
        let enabled = self.busy_ns + self.free_ns;
        (enabled > 0).then(|| self.busy_ns as f64 / enabled as f64)
    }

    /// Disabled for most of the observed time.
    pub fn mostly_disabled(&self) -> bool {
        self.disabled_ns > 0 && self.disabled_ns >= self.busy_ns + self.free_ns
    }
}

/// One GIL's busy/free timeline, indexed like [`Lane`].
pub type GilTrack = Track<GilSegment, 3>;

impl Track<GilSegment, 3> {
    pub fn times(&self, from_ns: u64, to_ns: u64) -> GilTimes {
        GilTimes::from_cats(&self.sum(from_ns, to_ns))
    }

    /// Per-cell times, `None` where nothing was observed.
    pub fn cells(&self, from_ns: u64, to_ns: u64, cols: usize) -> Vec<Option<GilTimes>> {
        let mut out = vec![None; cols];
        self.cells_with(from_ns, to_ns, cols, |c, t| {
            out[c] = Some(GilTimes::from_cats(t));
        });
        out
    }
}

/// A GIL: one per distinct lock; interpreters sharing one point at the same.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GilView {
    /// gilscope's GIL number (0, 1, ...), shown as `#id`.
    pub id: u32,
    pub track: GilTrack,
}

/// A kernel thread: a reused TID is a new thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ThreadKey {
    pub tid: u32,
    pub start_ticks: u64,
}

/// How many threads held a GIL at once over `[start_ns, end_ns)` (free-threaded, GIL off:
/// were attached).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParallelSegment {
    pub start_ns: u64,
    pub end_ns: u64,
    pub holders: u32,
}

impl Span<2> for ParallelSegment {
    fn start(&self) -> u64 {
        self.start_ns
    }
    fn end(&self) -> u64 {
        self.end_ns
    }
    fn set_start(&mut self, t: u64) {
        self.start_ns = t;
    }
    fn set_end(&mut self, t: u64) {
        self.end_ns = t;
    }
    fn add(&self, acc: &mut [u64; 2], ns: u64) {
        acc[0] += ns * u64::from(self.holders);
        acc[1] += ns;
    }
    fn same_kind(&self, next: &Self) -> bool {
        self.holders == next.holders
    }
}

/// The parallelism strip: threads holding a GIL at once, over time.
pub type ParallelTrack = Track<ParallelSegment, 2>;

impl Track<ParallelSegment, 2> {
    /// The time-average number of holders in each of `cols` cells (`None`: not observed).
    pub fn cells(&self, from_ns: u64, to_ns: u64, cols: usize) -> Vec<Option<f64>> {
        let mut out = vec![None; cols];
        self.cells_with(from_ns, to_ns, cols, |c, t| {
            if t[1] > 0 {
                out[c] = Some(t[0] as f64 / t[1] as f64);
            }
        });
        out
    }

    /// The time-average over `[from_ns, to_ns)`.
    pub fn mean(&self, from_ns: u64, to_ns: u64) -> Option<f64> {
        let t = self.sum(from_ns, to_ns);
        (t[1] > 0).then(|| t[0] as f64 / t[1] as f64)
    }
}

/// Who held the GIL while a thread waited for it, and in what code.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WaitedFor {
    /// `name (tid)`, or `(unknown)`.
    pub holder: String,
    /// Share of the thread's waiting, percent.
    pub pct: f64,
    pub seconds: f64,
    /// The holder's hottest stack then, innermost first, formatted like [`HotStack`]'s
    /// (`<GC>` on top when it was collecting).
    pub frames: Vec<String>,
}

/// A stack seen while holding (or waiting for) the GIL.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HotStack {
    /// Innermost first, each already formatted (e.g. `work (app.py:12)`).
    pub frames: Vec<String>,
    /// Share of the thread's time in that state spent in this stack, percent.
    pub pct: f64,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ThreadView {
    pub key: ThreadKey,
    /// Python thread name, else the OS name, else empty.
    pub name: String,
    pub lane: Lane,
    /// Hottest stacks while holding the GIL (or attached, GIL disabled),
    /// hottest first. Over the whole trace (or live session).
    pub hot_stacks_held: Vec<HotStack>,
    /// Hottest stacks while waiting for the GIL, hottest first.
    pub hot_stacks_waiting: Vec<HotStack>,
    /// Who held the GIL while it waited, most first.
    pub waited_for: Vec<WaitedFor>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct InterpView {
    /// CPython's interpreter id (0 is the main interpreter).
    pub id: i64,
    pub main: bool,
    /// Has a GIL of its own (PEP 684) rather than sharing the main one.
    pub own_gil: bool,
    /// Index into [`ViewModel::gils`]; `None` when the GIL is not known.
    pub gil: Option<usize>,
    /// Threads grouped under this interpreter, in display order.
    pub threads: Vec<ThreadView>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TimeRange {
    pub start_ns: u64,
    pub end_ns: u64,
}

impl TimeRange {
    pub fn new(start_ns: u64, end_ns: u64) -> Self {
        TimeRange {
            start_ns,
            end_ns: end_ns.max(start_ns),
        }
    }

    pub fn duration_ns(&self) -> u64 {
        self.end_ns - self.start_ns
    }
}

/// Everything one frame shows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ViewModel {
    /// What is being looked at: a file name, `pid 1234 (python app.py)`, ...
    pub title: String,
    /// The whole trace (or live session so far).
    pub time_range: TimeRange,
    /// Fed live (`gilscope top`): the window follows the end, `space`
    /// pauses, `r` records.
    pub live: bool,
    /// Where the live session is being saved, while it is.
    pub recording: Option<String>,
    /// A one-line message for the status line (errors, "saved to ...").
    pub notice: Option<String>,
    pub gils: Vec<GilView>,
    pub interpreters: Vec<InterpView>,
    /// Threads holding a GIL at once; drawn (a strip above the lanes) when more than one
    /// ever did.
    pub parallel: ParallelTrack,
    /// The most threads that held a GIL at once.
    pub parallel_max: u32,
}

impl ViewModel {
    /// All threads in display order with their interpreter's index.
    pub fn threads(&self) -> impl Iterator<Item = (usize, &ThreadView)> {
        self.interpreters
            .iter()
            .enumerate()
            .flat_map(|(i, it)| it.threads.iter().map(move |t| (i, t)))
    }

    /// The parallelism strip is shown.
    pub fn shows_parallel(&self) -> bool {
        self.parallel_max > 1
    }

    /// Some lane has garbage-collection time (the legend then shows it).
    pub fn has_gc(&self) -> bool {
        self.threads().any(|(_, t)| {
            t.lane
                .times(
                    self.time_range.start_ns,
                    self.time_range.end_ns.saturating_add(1),
                )
                .get(LaneState::Gc)
                > 0
        })
    }

    pub fn thread_count(&self) -> usize {
        self.interpreters.iter().map(|i| i.threads.len()).sum()
    }

    pub fn thread(&self, key: ThreadKey) -> Option<(usize, &ThreadView)> {
        self.threads().find(|(_, t)| t.key == key)
    }

    pub fn gil_of(&self, interp: &InterpView) -> Option<&GilView> {
        interp.gil.and_then(|g| self.gils.get(g))
    }

    /// Ids of the other interpreters on the same GIL as `interp`.
    pub fn sharing_gil_with(&self, interp: &InterpView) -> Vec<i64> {
        match interp.gil {
            None => Vec::new(),
            Some(g) => self
                .interpreters
                .iter()
                .filter(|o| o.gil == Some(g) && o.id != interp.id)
                .map(|o| o.id)
                .collect(),
        }
    }

    /// Forgets lane and GIL data before `t_ns`: call it from a live source
    /// now and then (e.g. once a second, keeping the last 10 minutes) so
    /// memory stays bounded however long the session runs.
    /// [`ViewModel::time_range`] is left alone: times are still shown from
    /// the session's start, and the forgotten part is drawn blank.
    pub fn trim_before(&mut self, t_ns: u64) {
        self.parallel.trim_before(t_ns);
        for g in &mut self.gils {
            g.track.trim_before(t_ns);
        }
        for i in &mut self.interpreters {
            for t in &mut i.threads {
                t.lane.trim_before(t_ns);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dominant_uses_time_then_priority() {
        let lane = Lane::from_segments([
            Segment::new(0, 10, LaneState::Idle),
            Segment::new(10, 16, LaneState::Waiting),
            Segment::new(16, 20, LaneState::Held),
            Segment::new(20, 30, LaneState::Released),
            Segment::new(30, 40, LaneState::Held),
        ]);
        assert_eq!(lane.times(0, 20).dominant(), Some(LaneState::Idle));
        assert_eq!(lane.times(10, 20).dominant(), Some(LaneState::Waiting));
        assert_eq!(lane.times(20, 40).dominant(), Some(LaneState::Held));
        assert_eq!(lane.times(40, 50).dominant(), None);
        assert_eq!(
            lane.cells(0, 40, 4),
            vec![
                Some(LaneState::Idle),
                Some(LaneState::Waiting),
                Some(LaneState::Released),
                Some(LaneState::Held)
            ]
        );
        let t = lane.times(0, 40);
        assert_eq!(t.observed(), 40);
        assert_eq!(t.on_cpu_ns, 24);
        assert_eq!(t.pct(LaneState::Held), 35.0);
    }

    #[test]
    fn parallel_track_averages_holders() {
        let p = ParallelTrack::from_segments([
            ParallelSegment {
                start_ns: 0,
                end_ns: 10,
                holders: 3,
            },
            ParallelSegment {
                start_ns: 10,
                end_ns: 20,
                holders: 1,
            },
        ]);
        assert_eq!(p.mean(0, 20), Some(2.0));
        assert_eq!(p.cells(0, 20, 2), vec![Some(3.0), Some(1.0)]);
        assert_eq!(p.mean(30, 40), None);
        // gc is held time drawn apart: it wins ties.
        let lane = Lane::from_segments([
            Segment::new(0, 5, LaneState::Held),
            Segment::new(5, 10, LaneState::Gc),
        ]);
        assert_eq!(lane.times(0, 10).dominant(), Some(LaneState::Gc));
        assert!(lane.times(0, 10).on_cpu_ns == 10);
    }

    #[test]
    fn gil_busy_fraction() {
        let g = GilTrack::from_segments([
            GilSegment::new(0, 30, GilLock::Busy),
            GilSegment::new(30, 40, GilLock::Free),
            GilSegment::new(40, 100, GilLock::Disabled),
        ]);
        assert_eq!(g.times(0, 40).busy_fraction(), Some(0.75));
        assert_eq!(g.times(40, 100).busy_fraction(), None);
        assert!(g.times(0, 100).mostly_disabled());
    }
}
