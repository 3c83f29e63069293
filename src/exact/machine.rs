//! Pure state machine: a time-ordered stream of [`ExactEvent`]s → per-thread intervals.
//!
//! Per thread: waiting `[TakeEnter, TakeReturn)`, held `[TakeReturn, Drop)`, not holding
//! otherwise. "Not holding" is not split into released (on CPU) / idle (off CPU): probes on
//! the GIL cannot tell; the caller combines it with sampled on-CPU information
//! ([`IntervalKind::gil_state`]).
//!
//! Imperfect input is expected and handled:
//! - attach mid-hold: a thread's first event is a `Drop` → held since attach start
//!   (`from_attach`);
//! - a thread's first event is `TakeEnter` → not holding since attach start;
//! - a `TakeEnter` without its return at the end → waiting until the end (`open`);
//! - duplicate drops (an inlined `drop_gil` that calls an out-of-line helper, `drop_gil` on a
//!   thread that does not hold the GIL) → ignored;
//! - lost records (ring buffer overflow) → the next event resynchronises the thread, counted
//!   in [`Anomalies`];
//! - free-threaded builds with the GIL disabled: `take_gil` returns at once and means
//!   "attached", not "acquired": such time is [`IntervalKind::Attached`], never waiting.

use std::collections::{BTreeMap, HashMap};

use super::{EventKind, ExactEvent};
use crate::model::GilState;

/// What the memory reader knows about a thread state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TstateInfo {
    /// Interpreter id (`tstate->interp->id`).
    pub interp: i64,
    /// Address of the GIL the interpreter uses (`interp->ceval.gil`, or the runtime GIL ≤3.11).
    pub gil: u64,
    /// False on a free-threaded build whose GIL is disabled.
    pub gil_enabled: bool,
}

/// Thread state → interpreter and GIL, from one reading of the target's memory.
pub fn tstate_map_from_snapshot(snap: &crate::model::Snapshot) -> HashMap<u64, TstateInfo> {
    let mut map = HashMap::new();
    for t in &snap.threads {
        for ts in &t.thread_states {
            if let Some(interp) = snap.interpreter(ts.interpreter) {
                map.insert(
                    ts.address,
                    TstateInfo {
                        interp: interp.id,
                        gil: interp.gil.address,
                        gil_enabled: interp.gil.enabled,
                    },
                );
            }
        }
    }
    map
}

/// Thread state address → what it belongs to (built by the caller from a snapshot).
pub trait TstateMap {
    fn lookup(&self, tstate: u64) -> Option<TstateInfo>;
}

impl TstateMap for HashMap<u64, TstateInfo> {
    fn lookup(&self, tstate: u64) -> Option<TstateInfo> {
        self.get(&tstate).copied()
    }
}

impl TstateMap for BTreeMap<u64, TstateInfo> {
    fn lookup(&self, tstate: u64) -> Option<TstateInfo> {
        self.get(&tstate).copied()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IntervalKind {
    /// In `take_gil`, before it returns.
    Waiting,
    /// Between the return of `take_gil` and `drop_gil`.
    Held,
    /// Outside both (released or idle: on/off CPU is not known here).
    NotHolding,
    /// Free-threaded with the GIL disabled: attached to the interpreter (no lock held).
    Attached,
}

impl IntervalKind {
    /// The model's state; `on_cpu` (from sampling) splits "not holding" into released/idle.
    pub fn gil_state(self, on_cpu: Option<bool>) -> GilState {
        match self {
            IntervalKind::Waiting => GilState::Waiting,
            IntervalKind::Held => GilState::Held,
            IntervalKind::Attached => GilState::Attached,
            IntervalKind::NotHolding => match on_cpu {
                Some(true) => GilState::Released,
                Some(false) => GilState::Idle,
                None => GilState::Unknown,
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interval {
    pub pid: u32,
    pub tid: u32,
    pub kind: IntervalKind,
    pub start_ns: u64,
    pub end_ns: u64,
    /// The thread state of the `take_gil` (or `drop_gil`) call, when known.
    pub tstate: Option<u64>,
    /// Resolved through the caller's map, when the tstate was known to it.
    pub interp: Option<i64>,
    pub gil: Option<u64>,
    /// Began before the probes were attached: `start_ns` is the attach time.
    pub from_attach: bool,
    /// Still going when the stream ended: `end_ns` is the end of the recording.
    pub open: bool,
}

impl Interval {
    pub fn duration_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }
}

/// Counts of input that did not follow the expected grammar.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Anomalies {
    /// `Drop` on a thread that was not holding (duplicate probe point, or a no-op drop).
    pub redundant_drops: u64,
    /// `TakeEnter` while already waiting (a lost `TakeReturn`).
    pub enter_while_waiting: u64,
    /// `TakeEnter` while holding (a lost or unprobed `Drop`).
    pub enter_while_holding: u64,
    /// `TakeReturn` without a `TakeEnter` (a lost entry record).
    pub return_without_enter: u64,
    /// Events older than the thread's current state (out-of-order input).
    pub out_of_order: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    NotHolding {
        since: u64,
        from_attach: bool,
    },
    /// `counts`: false when the GIL is disabled (free-threaded): not a real wait.
    Waiting {
        since: u64,
        tstate: u64,
        counts: bool,
    },
    Holding {
        since: u64,
        tstate: Option<u64>,
        from_attach: bool,
    },
    Attached {
        since: u64,
        tstate: u64,
    },
}

impl State {
    fn since(&self) -> u64 {
        match *self {
            State::NotHolding { since, .. }
            | State::Waiting { since, .. }
            | State::Holding { since, .. }
            | State::Attached { since, .. } => since,
        }
    }
}

#[derive(Debug, Clone)]
struct Thread {
    state: State,
    /// Last thread state seen on this thread (for attributing "not holding").
    tstate: Option<u64>,
}

/// The state machine. Feed events in time order (per thread at least).
#[derive(Debug)]
pub struct Machine {
    start_ns: u64,
    /// Used when a thread state is unknown to the map.
    assume_gil_enabled: bool,
    threads: HashMap<(u32, u32), Thread>,
    out: Vec<Interval>,
    anomalies: Anomalies,
}

impl Machine {
    /// `start_ns`: when the probes were enabled. `assume_gil_enabled`: for thread states the
    /// map does not know (true for GIL builds; a free-threaded target's current setting).
    pub fn new(start_ns: u64, assume_gil_enabled: bool) -> Machine {
        Machine {
            start_ns,
            assume_gil_enabled,
            threads: HashMap::new(),
            out: Vec::new(),
            anomalies: Anomalies::default(),
        }
    }

    pub fn anomalies(&self) -> &Anomalies {
        &self.anomalies
    }

    fn gil_enabled(&self, tstate: Option<u64>, map: &dyn TstateMap) -> bool {
        tstate
            .and_then(|t| map.lookup(t))
            .map_or(self.assume_gil_enabled, |i| i.gil_enabled)
    }

    #[allow(clippy::too_many_arguments)]
    fn emit(
        out: &mut Vec<Interval>,
        map: &dyn TstateMap,
        (pid, tid): (u32, u32),
        kind: IntervalKind,
        start_ns: u64,
        end_ns: u64,
        tstate: Option<u64>,
        from_attach: bool,
        open: bool,
    ) {
        if end_ns <= start_ns {
            return;
        }
        let info = tstate.and_then(|t| map.lookup(t));
        out.push(Interval {
            pid,
            tid,
            kind,
            start_ns,
            end_ns,
            tstate,
            interp: info.map(|i| i.interp),
            gil: info.map(|i| i.gil),
            from_attach,
            open,
        });
    }

    /// Closes the thread's current state at `t` (emitting its interval).
    fn close(
        out: &mut Vec<Interval>,
        map: &dyn TstateMap,
        key: (u32, u32),
        th: &Thread,
        t: u64,
        open: bool,
    ) {
        match th.state {
            State::NotHolding { since, from_attach } => Self::emit(
                out,
                map,
                key,
                IntervalKind::NotHolding,
                since,
                t,
                th.tstate,
                from_attach,
                open,
            ),
            State::Waiting {
                since,
                tstate,
                counts,
            } => Self::emit(
                out,
                map,
                key,
                if counts {
                    IntervalKind::Waiting
                } else {
                    IntervalKind::NotHolding
                },
                since,
                t,
                Some(tstate),
                false,
                open,
            ),
            State::Holding {
                since,
                tstate,
                from_attach,
            } => Self::emit(
                out,
                map,
                key,
                IntervalKind::Held,
                since,
                t,
                tstate,
                from_attach,
                open,
            ),
            State::Attached { since, tstate } => Self::emit(
                out,
                map,
                key,
                IntervalKind::Attached,
                since,
                t,
                Some(tstate),
                false,
                open,
            ),
        }
    }

    pub fn feed(&mut self, ev: &ExactEvent, map: &dyn TstateMap) {
        let key = (ev.pid, ev.tid);
        let mut t = ev.time_ns.max(self.start_ns);
        let Some(th) = self.threads.get(&key).cloned() else {
            // First event of this thread.
            let th = match ev.kind {
                EventKind::TakeEnter { tstate } => {
                    Self::emit(
                        &mut self.out,
                        map,
                        key,
                        IntervalKind::NotHolding,
                        self.start_ns,
                        t,
                        Some(tstate),
                        true,
                        false,
                    );
                    Thread {
                        state: State::Waiting {
                            since: t,
                            tstate,
                            counts: self.gil_enabled(Some(tstate), map),
                        },
                        tstate: Some(tstate),
                    }
                }
                EventKind::TakeReturn => {
                    self.anomalies.return_without_enter += 1;
                    Thread {
                        state: State::Holding {
                            since: t,
                            tstate: None,
                            from_attach: false,
                        },
                        tstate: None,
                    }
                }
                EventKind::Drop { tstate } => {
                    let kind = if self.gil_enabled(tstate, map) {
                        IntervalKind::Held
                    } else {
                        IntervalKind::Attached
                    };
                    Self::emit(
                        &mut self.out,
                        map,
                        key,
                        kind,
                        self.start_ns,
                        t,
                        tstate,
                        true,
                        false,
                    );
                    Thread {
                        state: State::NotHolding {
                            since: t,
                            from_attach: false,
                        },
                        tstate,
                    }
                }
            };
            self.threads.insert(key, th);
            return;
        };
        if t < th.state.since() {
            self.anomalies.out_of_order += 1;
            t = th.state.since();
        }
        let next = match (th.state, ev.kind) {
            (State::NotHolding { .. }, EventKind::TakeEnter { tstate }) => {
                Self::close(&mut self.out, map, key, &th, t, false);
                Some(Thread {
                    state: State::Waiting {
                        since: t,
                        tstate,
                        counts: self.gil_enabled(Some(tstate), map),
                    },
                    tstate: Some(tstate),
                })
            }
            (State::Waiting { .. }, EventKind::TakeEnter { tstate }) => {
                self.anomalies.enter_while_waiting += 1;
                Self::close(&mut self.out, map, key, &th, t, false);
                Some(Thread {
                    state: State::Waiting {
                        since: t,
                        tstate,
                        counts: self.gil_enabled(Some(tstate), map),
                    },
                    tstate: Some(tstate),
                })
            }
            (State::Holding { .. } | State::Attached { .. }, EventKind::TakeEnter { tstate }) => {
                if matches!(th.state, State::Holding { .. }) {
                    self.anomalies.enter_while_holding += 1;
                }
                Self::close(&mut self.out, map, key, &th, t, false);
                Some(Thread {
                    state: State::Waiting {
                        since: t,
                        tstate,
                        counts: self.gil_enabled(Some(tstate), map),
                    },
                    tstate: Some(tstate),
                })
            }
            (State::Waiting { tstate, counts, .. }, EventKind::TakeReturn) => {
                Self::close(&mut self.out, map, key, &th, t, false);
                let state = if counts {
                    State::Holding {
                        since: t,
                        tstate: Some(tstate),
                        from_attach: false,
                    }
                } else {
                    State::Attached { since: t, tstate }
                };
                Some(Thread {
                    state,
                    tstate: Some(tstate),
                })
            }
            (State::NotHolding { .. }, EventKind::TakeReturn) => {
                self.anomalies.return_without_enter += 1;
                Self::close(&mut self.out, map, key, &th, t, false);
                Some(Thread {
                    state: State::Holding {
                        since: t,
                        tstate: th.tstate,
                        from_attach: false,
                    },
                    tstate: th.tstate,
                })
            }
            (State::Holding { .. } | State::Attached { .. }, EventKind::TakeReturn) => {
                self.anomalies.return_without_enter += 1;
                None
            }
            (
                State::Holding { .. } | State::Attached { .. } | State::Waiting { .. },
                EventKind::Drop { tstate },
            ) => {
                // Waiting → Drop: take_gil acquired and released at once (finalisation path).
                // A hold whose take_gil began before the probes were in (its first event was
                // the return, so no thread state) learns its thread state from the drop.
                let mut th = th.clone();
                if let (
                    State::Holding {
                        tstate: held @ None,
                        ..
                    },
                    Some(d),
                ) = (&mut th.state, tstate)
                {
                    *held = Some(d);
                }
                Self::close(&mut self.out, map, key, &th, t, false);
                Some(Thread {
                    state: State::NotHolding {
                        since: t,
                        from_attach: false,
                    },
                    tstate: tstate.or(th.tstate),
                })
            }
            (State::NotHolding { .. }, EventKind::Drop { .. }) => {
                self.anomalies.redundant_drops += 1;
                None
            }
        };
        if let Some(next) = next {
            self.threads.insert(key, next);
        }
    }

    pub fn feed_all<'a>(
        &mut self,
        events: impl IntoIterator<Item = &'a ExactEvent>,
        map: &dyn TstateMap,
    ) {
        for e in events {
            self.feed(e, map);
        }
    }

    /// Completed intervals so far (removed from the machine).
    pub fn take_intervals(&mut self) -> Vec<Interval> {
        std::mem::take(&mut self.out)
    }

    /// Closes every thread at `end_ns` (open intervals) and returns the remaining intervals,
    /// sorted by (pid, tid, start).
    pub fn finish(&mut self, end_ns: u64, map: &dyn TstateMap) -> Vec<Interval> {
        let mut keys: Vec<_> = self.threads.keys().copied().collect();
        keys.sort_unstable();
        for key in keys {
            let Some(th) = self.threads.remove(&key) else {
                continue;
            };
            let end = end_ns.max(th.state.since());
            Self::close(&mut self.out, map, key, &th, end, true);
        }
        let mut out = std::mem::take(&mut self.out);
        out.sort_by_key(|i| (i.pid, i.tid, i.start_ns, i.end_ns));
        out
    }

    /// The thread's current state, if it produced any event.
    pub fn current(&self, pid: u32, tid: u32) -> Option<IntervalKind> {
        self.threads.get(&(pid, tid)).map(|th| match th.state {
            State::NotHolding { .. } => IntervalKind::NotHolding,
            State::Waiting { counts: true, .. } => IntervalKind::Waiting,
            State::Waiting { counts: false, .. } => IntervalKind::NotHolding,
            State::Holding { .. } => IntervalKind::Held,
            State::Attached { .. } => IntervalKind::Attached,
        })
    }
}

/// Time per kind for one thread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub waiting_ns: u64,
    pub held_ns: u64,
    pub not_holding_ns: u64,
    pub attached_ns: u64,
    /// Number of waiting intervals.
    pub waits: u64,
}

/// Totals per (pid, tid), restricted to `[from, to)`.
pub fn totals_by_thread(
    intervals: &[Interval],
    from: u64,
    to: u64,
) -> BTreeMap<(u32, u32), Totals> {
    let mut out: BTreeMap<(u32, u32), Totals> = BTreeMap::new();
    for i in intervals {
        let s = i.start_ns.max(from);
        let e = i.end_ns.min(to);
        if e < s {
            continue;
        }
        let d = e - s;
        let t = out.entry((i.pid, i.tid)).or_default();
        match i.kind {
            IntervalKind::Waiting => {
                t.waiting_ns += d;
                t.waits += 1;
            }
            IntervalKind::Held => t.held_ns += d,
            IntervalKind::NotHolding => t.not_holding_ns += d,
            IntervalKind::Attached => t.attached_ns += d,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    //! Timelines drawn in ASCII, one column per microsecond. Input rows are events
    //! (`e` take_gil entry, `r` take_gil return, `d` drop_gil entry, `.` nothing); expected
    //! rows are states (`W` waiting, `H` held, `.` not holding, `A` attached, ` ` unknown).
    use super::*;

    const US: u64 = 1000;

    /// Events from rows like `"T1: ..e.r..d"`; thread N's tstate is `0x1000 * N`.
    fn events(rows: &[&str]) -> (Vec<ExactEvent>, usize) {
        let mut out = Vec::new();
        let mut width = 0;
        for row in rows {
            let (name, cols) = row.split_once(": ").expect("row format");
            let tid: u32 = name.trim().trim_start_matches('T').parse().expect("thread");
            width = width.max(cols.len());
            for (i, c) in cols.chars().enumerate() {
                let kind = match c {
                    'e' => EventKind::TakeEnter {
                        tstate: 0x1000 * tid as u64,
                    },
                    'r' => EventKind::TakeReturn,
                    'd' => EventKind::Drop {
                        tstate: Some(0x1000 * tid as u64),
                    },
                    '.' => continue,
                    other => panic!("unknown event {other:?}"),
                };
                out.push(ExactEvent {
                    time_ns: i as u64 * US,
                    pid: 1,
                    tid,
                    cpu: tid % 2,
                    kind,
                });
            }
        }
        out.sort_by_key(|e| (e.time_ns, e.tid));
        (out, width)
    }

    fn render(intervals: &[Interval], tids: &[u32], width: usize) -> Vec<String> {
        tids.iter()
            .map(|&tid| {
                let mut row = vec![' '; width];
                for i in intervals.iter().filter(|i| i.tid == tid) {
                    let c = match i.kind {
                        IntervalKind::Waiting => 'W',
                        IntervalKind::Held => 'H',
                        IntervalKind::NotHolding => '.',
                        IntervalKind::Attached => 'A',
                    };
                    for slot in row
                        .iter_mut()
                        .take((i.end_ns / US) as usize)
                        .skip((i.start_ns / US) as usize)
                    {
                        *slot = c;
                    }
                }
                format!("T{tid}: {}", row.iter().collect::<String>())
            })
            .collect()
    }

    fn run(
        rows: &[&str],
        map: &dyn TstateMap,
        assume_enabled: bool,
    ) -> (Vec<Interval>, Vec<String>, Anomalies) {
        let (evs, width) = events(rows);
        let mut m = Machine::new(0, assume_enabled);
        m.feed_all(&evs, map);
        let intervals = m.finish(width as u64 * US, map);
        let tids: Vec<u32> = rows
            .iter()
            .map(|r| r[1..r.find(':').expect(":")].parse().expect("tid"))
            .collect();
        let drawn = render(&intervals, &tids, width);
        (intervals, drawn, m.anomalies().clone())
    }

    fn check(rows: &[&str], expect: &[&str]) -> Anomalies {
        let (_, drawn, anomalies) = run(rows, &HashMap::new(), true);
        assert_eq!(drawn, expect, "\nevents:\n  {}\n", rows.join("\n  "));
        anomalies
    }

    #[test]
    fn contention_hand_off() {
        // T1 holds from before attach; T2 waits for it, gets it, hands it back.
        let a = check(
            &["T1: ....d.....e....r...", "T2: .e..r.....d........"],
            &["T1: HHHH......WWWWWHHHH", "T2: .WWWHHHHHH........."],
        );
        assert_eq!(a, Anomalies::default());
    }

    #[test]
    fn the_brief_example() {
        // T1: ..WWHHHH..   T2: HH....HHH
        check(
            &["T1: ..e.r...d..", "T2: ..d...e.r.."],
            &["T1: ..WWHHHH...", "T2: HH....WWHHH"],
        );
    }

    #[test]
    fn unmatched_at_both_ends() {
        // T1 waits forever (never returns): open waiting to the end.
        // T2 returns without an entry (lost record): held from the return.
        let a = check(
            &["T1: ...e.....", "T2: ..r..d..."],
            &["T1: ...WWWWWW", "T2:   HHH...."],
        );
        assert_eq!(a.return_without_enter, 1);
    }

    #[test]
    fn a_hold_begun_before_the_probes_takes_its_thread_state_from_the_drop() {
        // T2 was inside take_gil when the probes went in: its first event is the return.
        let (intervals, _, _) = run(&["T2: ..r..d..."], &HashMap::new(), true);
        let held = intervals
            .iter()
            .find(|i| i.kind == IntervalKind::Held)
            .expect("a held interval");
        assert_eq!(held.tstate, Some(0x2000), "{held:?}");
    }

    #[test]
    fn duplicate_and_noop_drops_are_ignored() {
        // An inlined drop_gil calling an out-of-line drop_gil_impl reports two drops.
        let a = check(&["T1: .e.r..dd..d"], &["T1: .WWHHH....."]);
        assert_eq!(a.redundant_drops, 2);
    }

    #[test]
    fn lost_records_resynchronise() {
        // Lost drop: a new entry while holding closes the hold there.
        // Lost return: a second entry while waiting restarts the wait.
        let a = check(
            &["T1: e.r...e..r.d", "T2: e...e.r..d.."],
            &["T1: WWHHHHWWWHH.", "T2: WWWWWWHHH..."],
        );
        assert_eq!(a.enter_while_holding, 1);
        assert_eq!(a.enter_while_waiting, 1);
    }

    #[test]
    fn finalisation_drop_while_waiting() {
        // 3.13+: take_gil acquires, sees finalisation, calls drop_gil(NULL) and the thread exits.
        check(&["T1: .e...d..."], &["T1: .WWWW...."]);
    }

    #[test]
    fn free_threaded_gil_disabled_is_attached_not_waiting() {
        let mut map = HashMap::new();
        for tid in [1u64, 2] {
            map.insert(
                0x1000 * tid,
                TstateInfo {
                    interp: 0,
                    gil: 0x9000,
                    gil_enabled: false,
                },
            );
        }
        let (intervals, drawn, _) = run(&["T1: .e.r...d..", "T2: ..e..r.d.."], &map, false);
        assert_eq!(drawn, ["T1: ...AAAA...", "T2: .....AA..."]);
        assert!(intervals.iter().all(|i| i.kind != IntervalKind::Waiting));
        // Unknown tstates follow `assume_gil_enabled`.
        let (_, drawn, _) = run(&["T3: .e.r..d"], &map, false);
        assert_eq!(drawn, ["T3: ...AAA."]);
        let (_, drawn, _) = run(&["T3: .e.r..d"], &map, true);
        assert_eq!(drawn, ["T3: .WWHHH."]);
    }

    #[test]
    fn attribution_through_the_map() {
        let map = HashMap::from([
            (
                0x1000,
                TstateInfo {
                    interp: 0,
                    gil: 0xa000,
                    gil_enabled: true,
                },
            ),
            (
                0x2000,
                TstateInfo {
                    interp: 1,
                    gil: 0xb000,
                    gil_enabled: true,
                },
            ),
        ]);
        let (intervals, _, _) = run(&["T1: e.r..d", "T2: .e.r..d"], &map, true);
        let held: Vec<(u32, Option<i64>, Option<u64>)> = intervals
            .iter()
            .filter(|i| i.kind == IntervalKind::Held)
            .map(|i| (i.tid, i.interp, i.gil))
            .collect();
        assert_eq!(
            held,
            [(1, Some(0), Some(0xa000)), (2, Some(1), Some(0xb000))]
        );
    }

    #[test]
    fn totals_and_states() {
        let (intervals, _, _) = run(
            &["T1: ....d.....e....r...", "T2: .e..r.....d........"],
            &HashMap::new(),
            true,
        );
        let t = totals_by_thread(&intervals, 0, u64::MAX);
        assert_eq!(t[&(1, 1)].held_ns, 8 * US);
        assert_eq!(t[&(1, 1)].waiting_ns, 5 * US);
        assert_eq!(t[&(1, 2)].waiting_ns, 3 * US);
        assert_eq!(t[&(1, 2)].held_ns, 6 * US);
        assert_eq!(
            IntervalKind::NotHolding.gil_state(Some(true)),
            GilState::Released
        );
        assert_eq!(
            IntervalKind::NotHolding.gil_state(Some(false)),
            GilState::Idle
        );
        assert_eq!(IntervalKind::NotHolding.gil_state(None), GilState::Unknown);
        assert_eq!(IntervalKind::Held.gil_state(None), GilState::Held);
    }

    #[test]
    fn merged_cpu_order_is_what_matters() {
        // Events of one thread arriving on two CPUs, fed after a time sort.
        let mut evs = vec![
            ExactEvent {
                time_ns: 30,
                pid: 1,
                tid: 1,
                cpu: 1,
                kind: EventKind::Drop { tstate: None },
            },
            ExactEvent {
                time_ns: 10,
                pid: 1,
                tid: 1,
                cpu: 0,
                kind: EventKind::TakeEnter { tstate: 1 },
            },
            ExactEvent {
                time_ns: 20,
                pid: 1,
                tid: 1,
                cpu: 1,
                kind: EventKind::TakeReturn,
            },
        ];
        let mut merger = super::super::records::Merger::default();
        merger.push(evs.drain(..));
        let ordered = merger.release_all();
        let mut m = Machine::new(0, true);
        m.feed_all(&ordered, &HashMap::new());
        let out = m.finish(40, &HashMap::new());
        let kinds: Vec<_> = out.iter().map(|i| (i.kind, i.start_ns, i.end_ns)).collect();
        assert_eq!(
            kinds,
            [
                (IntervalKind::NotHolding, 0, 10),
                (IntervalKind::Waiting, 10, 20),
                (IntervalKind::Held, 20, 30),
                (IntervalKind::NotHolding, 30, 40)
            ]
        );
    }
}
