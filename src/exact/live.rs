//! Exact mode inside `gilscope record`: probe events → exact runs for the trace.
//!
//! The recorder keeps sampling (stacks, on-CPU, the GIL's own fields); this part drains the
//! probes after every snapshot into the [`Machine`] and, when the recorder asks (before each
//! flush and at the end), turns the finished intervals into [`Event::Run`]s with
//! `source: Exact`. Held / waiting boundaries are the probes' timestamps; "not holding" is
//! split into released / idle at the samples where the thread's on-CPU state changed. Before
//! a thread's first event, when that event is a drop ("held since attach"), the samples say
//! whether it was waiting first (a `take_gil` already running at attach has no uretprobe).
//! The [`ProbeSet`] is dropped with this value: every way out of the recorder removes the
//! probes.

use std::collections::{HashMap, HashSet};

use super::{
    cost_warning, tstate_map_from_snapshot, Interval, IntervalKind, Machine, ProbeSet, TstateInfo,
};
use crate::model::timeline::{Event, Run, Source, ThreadIdx};
use crate::model::{GilState, Snapshot};

/// Pending intervals of a thread no snapshot has shown are dropped after this long.
const PENDING_MAX_NS: u64 = 2_000_000_000;

#[derive(Debug, Default)]
struct SeenThread {
    /// First snapshot that showed it.
    first_seen: u64,
    /// When its probes were enabled (a thread that started after the attach is probed once
    /// the snapshots have shown it for a while; before that only the samples know).
    probed_since: Option<u64>,
    interp: i64,
    /// (time, sampled state, on_cpu) at the samples where either changed, oldest first.
    hist: Vec<(u64, GilState, bool)>,
    /// First snapshot that no longer showed it.
    gone_at: Option<u64>,
}

/// What the samples said at `t`: the last change at or before `t`, else the first.
fn sampled_at(hist: &[(u64, GilState, bool)], t: u64) -> Option<(GilState, bool)> {
    let i = hist.partition_point(|&(ht, _, _)| ht <= t);
    match i {
        0 => hist.first().map(|h| (h.1, h.2)),
        _ => Some((hist[i - 1].1, hist[i - 1].2)),
    }
}

/// `[start, end)` cut where `key` of the sampled (state, on_cpu) changes inside it:
/// `(start, end, key)` pieces (`None`: no sample at all).
pub fn split_sampled<K: PartialEq + Copy>(
    hist: &[(u64, GilState, bool)],
    start: u64,
    end: u64,
    key: impl Fn(GilState, bool) -> K,
) -> Vec<(u64, u64, Option<K>)> {
    let mut out = Vec::new();
    let mut s = start;
    let mut cur = sampled_at(hist, start).map(|(g, c)| key(g, c));
    for &(t, g, c) in hist.iter().filter(|&&(t, _, _)| t > start && t < end) {
        let k = Some(key(g, c));
        if k != cur {
            out.push((s, t, cur));
            s = t;
            cur = k;
        }
    }
    out.push((s, end, cur));
    out
}

/// Probes, machine and what the samples said, for one recorded process.
pub struct LiveExact {
    set: ProbeSet,
    machine: Machine,
    map: HashMap<u64, TstateInfo>,
    threads: HashMap<u32, SeenThread>,
    pending: Vec<Interval>,
    first_ns: Option<u64>,
    last_ns: u64,
    rate_check: Option<(u64, u64)>,
    cost_warned: bool,
    lost_warned: bool,
    /// What one probe hit costs the target (calibrated at start, else the built-in figures).
    cost: super::HitCost,
    detached_at: Option<u64>,
}

impl LiveExact {
    /// `gil_enabled`: false only on a free-threaded build (the machine's assumption for
    /// thread states no snapshot has mapped).
    pub fn new(set: ProbeSet, gil_enabled: bool) -> LiveExact {
        let machine = Machine::new(set.stats().enabled_ns, gil_enabled);
        LiveExact {
            set,
            machine,
            map: HashMap::new(),
            threads: HashMap::new(),
            pending: Vec::new(),
            first_ns: None,
            last_ns: 0,
            rate_check: None,
            cost_warned: false,
            lost_warned: false,
            cost: super::HitCost::FALLBACK,
            detached_at: None,
        }
    }

    /// Sets what one probe hit costs the target (see [`super::calibrate`]).
    pub fn set_hit_cost(&mut self, cost: super::HitCost) {
        self.cost = super::HitCost {
            emulated_ns: cost.emulated_ns.max(1),
            stepped_ns: cost.stepped_ns.max(1),
        };
    }

    /// What one event has cost the target on average so far (the emulated figure before any
    /// event): the hits' mix of emulated and single-stepped ones.
    pub fn ns_per_event(&self) -> u64 {
        let s = self.set.stats();
        if s.events == 0 {
            return self.cost.emulated_ns;
        }
        let delivered = super::ProbeStats {
            lost: 0,
            ..s.clone()
        };
        (self.cost.of(&delivered) / s.events).max(1)
    }

    /// The time the probes have cost the target so far: every hit at its own cost (lost
    /// records were hits too).
    pub fn probe_cost_ns(&self) -> u64 {
        self.cost.of(self.set.stats())
    }

    /// Detaches the probes at `at_ns` (over the overhead budget): every interval is closed
    /// there and handed out as runs; the events are closed (by the probe threads) and the
    /// recording goes on sampled.
    pub fn detach(
        &mut self,
        at_ns: u64,
        thread_of: &dyn Fn(u32) -> Option<ThreadIdx>,
        out: &mut Vec<Event>,
    ) {
        let rest = self.set.detach();
        self.machine.feed_all(&rest, &self.map);
        self.extra_events(thread_of, Some(at_ns), out);
        self.detached_at = Some(at_ns);
    }

    pub fn detached_at(&self) -> Option<u64> {
        self.detached_at
    }

    pub fn stats(&self) -> &super::ProbeStats {
        self.set.stats()
    }

    /// After each snapshot: learn thread states, interpreters and on-CPU changes, then feed
    /// the probe events that arrived.
    pub fn on_snapshot(&mut self, snap: &Snapshot) {
        let now = snap.time_ns;
        self.first_ns.get_or_insert(now);
        self.last_ns = self.last_ns.max(now);
        self.map.extend(tstate_map_from_snapshot(snap));
        let mut present = HashSet::new();
        for th in &snap.threads {
            present.insert(th.tid);
            let st = self.threads.entry(th.tid).or_insert_with(|| SeenThread {
                first_seen: now,
                ..SeenThread::default()
            });
            st.interp = th.interpreter;
            st.gone_at = None;
            if st.hist.last().map(|h| (h.1, h.2)) != Some((th.gil_state, th.on_cpu)) {
                st.hist.push((now, th.gil_state, th.on_cpu));
            }
        }
        for (tid, st) in &mut self.threads {
            if !present.contains(tid) && st.gone_at.is_none() {
                st.gone_at = Some(now);
            }
        }
        let present: Vec<(u32, u64)> = snap
            .threads
            .iter()
            .map(|t| (t.tid, t.start_ticks))
            .collect();
        self.set.sync_threads(&present);
        for th in &snap.threads {
            if let Some(st) = self.threads.get_mut(&th.tid) {
                if st.probed_since.is_none() {
                    st.probed_since = self.set.probed_since(th.tid);
                }
            }
        }
        let events = self.set.drain();
        self.machine.feed_all(&events, &self.map);
        if self.set.stats().lost > 0 && !self.lost_warned {
            self.lost_warned = true;
            eprintln!(
                "gilscope: warning: exact mode: probe records lost (ring buffer full); \
                 states resynchronise at the next event"
            );
        }
    }

    /// Finished intervals as exact runs (and warnings). `end_ns`: the recording ends there;
    /// the probes are disabled and every interval closed.
    pub fn extra_events(
        &mut self,
        thread_of: &dyn Fn(u32) -> Option<ThreadIdx>,
        end_ns: Option<u64>,
        out: &mut Vec<Event>,
    ) {
        let mut intervals = std::mem::take(&mut self.pending);
        if let Some(end) = end_ns {
            let rest = self.set.finish();
            self.machine.feed_all(&rest, &self.map);
            intervals.extend(self.machine.take_intervals());
            intervals.extend(self.machine.finish(end, &self.map));
        } else {
            intervals.extend(self.machine.take_intervals());
        }
        intervals.sort_by_key(|i| (i.tid, i.start_ns));
        let mut done_until: HashMap<u32, u64> = HashMap::new();
        for iv in intervals {
            let Some(thread) = thread_of(iv.tid) else {
                if end_ns.is_none() && iv.end_ns + PENDING_MAX_NS > self.last_ns {
                    self.pending.push(iv);
                }
                continue;
            };
            self.push_runs(thread, &iv, end_ns, out);
            let d = done_until.entry(iv.tid).or_insert(0);
            *d = (*d).max(iv.end_ns);
        }
        // Sampled changes before the last interval's end are no longer needed (keep the one
        // in force there).
        for (tid, until) in done_until {
            if let Some(st) = self.threads.get_mut(&tid) {
                let i = st.hist.partition_point(|&(t, _, _)| t <= until);
                st.hist.drain(..i.saturating_sub(1));
            }
        }
        self.warnings(end_ns, out);
    }

    fn push_runs(
        &self,
        thread: ThreadIdx,
        iv: &Interval,
        end_ns: Option<u64>,
        out: &mut Vec<Event>,
    ) {
        let seen = self.threads.get(&iv.tid);
        let mut start = iv.start_ns.max(self.first_ns.unwrap_or(0));
        if iv.from_attach {
            // "Since attach" (not holding, or held: its first event was a drop) of a thread
            // that started later: from its first sample. Before, it did not exist (a new
            // thread's probes open after a snapshot lists it, so its first event can be the
            // drop ending its first hold: without this, that hold covered the time since the
            // probes were attached, overlapping other threads' holds).
            start = start.max(seen.map_or(0, |s| s.first_seen));
        }
        let mut end = iv.end_ns;
        if let Some(e) = end_ns {
            end = end.min(e);
        }
        if let Some(g) = seen.and_then(|s| s.gone_at) {
            end = end.min(g);
        }
        start = start.min(end);
        if start >= end {
            return;
        }
        let interpreter = iv.interp.or(seen.map(|s| s.interp)).unwrap_or(0);
        let hist: &[(u64, GilState, bool)] = seen.map_or(&[], |s| &s.hist);
        let mut pieces: Vec<(u64, u64, GilState, bool)> = Vec::new();
        if iv.from_attach {
            // Before its probes were open, the thread's GIL states are the samples'.
            let probed = seen.and_then(|s| s.probed_since).unwrap_or(start);
            if probed > start {
                let cut = probed.min(end);
                pieces.extend(
                    split_sampled(hist, start, cut, |g, c| (g, c))
                        .into_iter()
                        .map(|(s, e, k)| {
                            let (g, c) = k.unwrap_or((GilState::Unknown, false));
                            (s, e, g, c)
                        }),
                );
                start = cut;
                if start >= end {
                    return self.emit(thread, interpreter, pieces, out);
                }
            }
        }
        pieces.extend(match iv.kind {
            // Held since attach (the thread's first event was a drop): a take_gil already
            // running at attach is invisible to the uretprobe, so the thread may have been
            // waiting first. Until its first event, the samples say which.
            IntervalKind::Held if iv.from_attach => split_sampled(hist, start, end, |g, c| (g, c))
                .into_iter()
                .map(|(s, e, k)| {
                    let (g, c) = k.unwrap_or((GilState::Held, false));
                    (s, e, g, c)
                })
                .collect(),
            IntervalKind::NotHolding => split_sampled(hist, start, end, |_, c| c)
                .into_iter()
                .map(|(s, e, c)| (s, e, iv.kind.gil_state(c), c.unwrap_or(false)))
                .collect(),
            kind => {
                let c = sampled_at(hist, start).is_some_and(|(_, c)| c);
                vec![(start, end, kind.gil_state(Some(c)), c)]
            }
        });
        self.emit(thread, interpreter, pieces, out);
    }

    fn emit(
        &self,
        thread: ThreadIdx,
        interpreter: i64,
        pieces: Vec<(u64, u64, GilState, bool)>,
        out: &mut Vec<Event>,
    ) {
        for (s, e, state, on_cpu) in pieces {
            out.push(Event::Run(Run {
                thread,
                start_ns: s,
                end_ns: e,
                samples: 0,
                interpreter,
                state,
                on_cpu,
                stack: 0,
                source: Source::Exact,
            }));
        }
    }

    fn warnings(&mut self, end_ns: Option<u64>, out: &mut Vec<Event>) {
        let stats = self.set.stats().clone();
        let now = end_ns.unwrap_or(self.last_ns);
        // Lost records were hits all the same (at a rate that overflows the buffers, most
        // hits are lost ones).
        let events = stats.events + stats.lost;
        let (t0, n0) = *self.rate_check.get_or_insert((stats.enabled_ns, 0));
        if now >= t0 + 1_000_000_000 {
            let rate = events.saturating_sub(n0) as f64 / ((now - t0) as f64 / 1e9);
            self.rate_check = Some((now, events));
            if let (false, Some(w)) = (self.cost_warned, cost_warning(rate, self.ns_per_event())) {
                self.cost_warned = true;
                eprintln!("gilscope: warning: {w}");
                out.push(Event::Warning {
                    time_ns: now,
                    message: w,
                });
            }
        }
        if end_ns.is_some() && stats.lost > 0 {
            out.push(Event::Warning {
                time_ns: now,
                message: format!(
                    "exact mode: {} probe records lost (ring buffer full); the states around \
                     them were resynchronised at the next event",
                    stats.lost
                ),
            });
        }
    }

    /// One line for the end of the recording.
    pub fn summary_line(&self) -> String {
        let s = self.set.stats();
        let a = self.machine.anomalies();
        let mut line = format!(
            "gilscope: exact mode: {} GIL events of process {} ({} take_gil entries, {} take_gil \
             returns, {} drop_gil), {} lost; {} threads probed ({} closed after exit",
            s.events,
            self.set.pid(),
            s.take_enter,
            s.take_return,
            s.drops,
            s.lost,
            s.threads_opened,
            s.threads_closed
        );
        if s.threads_failed > 0 {
            line.push_str(&format!(", {} failed", s.threads_failed));
        }
        line.push(')');
        line.push_str(&format!("; hits by pid: {}", hits_by_pid(&s.hits_by_pid)));
        if s.foreign > 0 {
            line.push_str(&format!(", {} from other processes ignored", s.foreign));
        }
        if a.enter_while_holding + a.enter_while_waiting + a.return_without_enter > 0 {
            line.push_str(&format!(
                ", {} resynchronisations",
                a.enter_while_holding + a.enter_while_waiting + a.return_without_enter
            ));
        }
        line
    }
}

/// `{pid: hits, …}` (`{}` when nothing fired).
pub fn hits_by_pid(m: &std::collections::BTreeMap<u32, u64>) -> String {
    let parts: Vec<String> = m.iter().map(|(p, n)| format!("{p}: {n}")).collect();
    format!("{{{}}}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_are_split_at_sampled_changes() {
        use GilState::*;
        let hist = [
            (10, Idle, true),
            (20, Idle, false),
            (30, Waiting, false),
            (40, Held, true),
        ];
        let cpu = |_, c| c;
        assert_eq!(
            split_sampled(&hist, 15, 50, cpu),
            vec![
                (15, 20, Some(true)),
                (20, 40, Some(false)),
                (40, 50, Some(true))
            ]
        );
        // Before the first sample: the first sample's.
        assert_eq!(split_sampled(&hist, 0, 10, cpu), vec![(0, 10, Some(true))]);
        assert_eq!(split_sampled(&[], 0, 10, cpu), vec![(0, 10, None)]);
        assert_eq!(
            split_sampled(&hist, 25, 45, |g, _| g),
            vec![
                (25, 30, Some(Idle)),
                (30, 40, Some(Waiting)),
                (40, 45, Some(Held))
            ]
        );
        assert_eq!(sampled_at(&hist, 25), Some((Idle, false)));
    }
}
