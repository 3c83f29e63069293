//! "Who made me wait?": for every stretch of time a thread waited for a GIL, who held that
//! GIL meanwhile and in what code.
//!
//! Pure, from the [`Timeline`] model: a waiter's waiting intervals are overlapped with the
//! held intervals of the other threads on the same GIL (exact intervals in exact mode, so
//! the overlap is exact; sample-aligned runs when sampled, so each sample counts once), and
//! each overlap is cut by the holder's stacks over time ([`Thread::stack_spans`]) and its
//! garbage collections (a holder collecting shows a `<GC>` frame on top of its stack). Time
//! no holder covers is blamed on an unknown holder.

use std::collections::{BTreeMap, HashMap};

use crate::model::timeline::{GilIdx, StackId, StateInterval, Thread, ThreadIdx, Timeline};
use crate::model::GilState;

/// One holder stack: `stack` (the holder's Python stack, innermost frame its own) and
/// whether the holder was running a garbage collection then.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HolderStack {
    pub stack: StackId,
    pub gc: bool,
}

/// Waiting one waiter did while one holder held the GIL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blame {
    /// The interpreter the waiter waited in.
    pub interpreter: i64,
    pub waiter: ThreadIdx,
    /// `None`: no thread was seen holding the GIL then.
    pub holder: Option<ThreadIdx>,
    pub ns: u64,
    /// The holder's stacks over that time, most time first (ties: lower stack first).
    pub stacks: Vec<(HolderStack, u64)>,
}

/// Blame over the whole model (as far as it keeps intervals), most waiting first.
pub fn blame(tl: &Timeline) -> Vec<Blame> {
    blame_between(tl, 0, u64::MAX)
}

/// Blame for the waiting done in `[from_ns, to_ns)`.
pub fn blame_between(tl: &Timeline, from_ns: u64, to_ns: u64) -> Vec<Blame> {
    let gil_of: HashMap<i64, GilIdx> = tl.interpreters.values().map(|i| (i.id, i.gil)).collect();
    // Held intervals per GIL: (start, end, holder), sorted by start.
    let mut holds: BTreeMap<GilIdx, Vec<(u64, u64, ThreadIdx)>> = BTreeMap::new();
    for t in &tl.threads {
        for i in &t.intervals {
            if i.state != GilState::Held {
                continue;
            }
            if let Some(&g) = gil_of.get(&i.interpreter) {
                holds
                    .entry(g)
                    .or_default()
                    .push((i.start_ns, i.end_ns, t.idx));
            }
        }
    }
    let holds: BTreeMap<GilIdx, Holds> = holds
        .into_iter()
        .map(|(g, mut v)| {
            v.sort_unstable();
            (g, Holds::new(v))
        })
        .collect();
    let mut acc: BTreeMap<(i64, ThreadIdx, Option<ThreadIdx>), BTreeMap<HolderStack, u64>> =
        BTreeMap::new();
    for w in &tl.threads {
        for i in waiting(w, from_ns, to_ns) {
            let (s, e) = (i.start_ns.max(from_ns), i.end_ns.min(to_ns));
            if e <= s {
                continue;
            }
            let empty = Holds::new(Vec::new());
            let hs = gil_of
                .get(&i.interpreter)
                .and_then(|g| holds.get(g))
                .unwrap_or(&empty);
            let mut covered = 0u64;
            for &(hs_, he, h) in hs.overlapping(s, e) {
                if h == w.idx {
                    continue;
                }
                let (a, b) = (hs_.max(s), he.min(e));
                if b <= a {
                    continue;
                }
                covered += b - a;
                let Some(holder) = tl.threads.get(h as usize) else {
                    continue;
                };
                let into = acc.entry((i.interpreter, w.idx, Some(h))).or_default();
                holder_stacks(tl, holder, a, b, into);
            }
            let rest = (e - s).saturating_sub(covered);
            if rest > 0 {
                *acc.entry((i.interpreter, w.idx, None))
                    .or_default()
                    .entry(HolderStack {
                        stack: 0,
                        gc: false,
                    })
                    .or_default() += rest;
            }
        }
    }
    let mut out: Vec<Blame> = acc
        .into_iter()
        .map(|((interpreter, waiter, holder), stacks)| {
            let ns = stacks.values().sum();
            let mut stacks: Vec<(HolderStack, u64)> = stacks.into_iter().collect();
            stacks.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            Blame {
                interpreter,
                waiter,
                holder,
                ns,
                stacks,
            }
        })
        .filter(|b| b.ns > 0)
        .collect();
    out.sort_by(|a, b| {
        b.ns.cmp(&a.ns)
            .then(a.waiter.cmp(&b.waiter))
            .then(a.holder.cmp(&b.holder))
    });
    out
}

fn waiting(t: &Thread, from_ns: u64, to_ns: u64) -> impl Iterator<Item = &StateInterval> {
    let first = t.intervals.partition_point(|i| i.end_ns <= from_ns);
    t.intervals[first..]
        .iter()
        .take_while(move |i| i.start_ns < to_ns)
        .filter(|i| i.state == GilState::Waiting)
}

/// Held intervals of one GIL, sorted by start, with the running maximum of their ends (so
/// the first one that may overlap a time is found by bisection even if some overlap).
struct Holds {
    v: Vec<(u64, u64, ThreadIdx)>,
    max_end: Vec<u64>,
}

impl Holds {
    fn new(v: Vec<(u64, u64, ThreadIdx)>) -> Self {
        let mut m = 0;
        let max_end = v
            .iter()
            .map(|h| {
                m = m.max(h.1);
                m
            })
            .collect();
        Holds { v, max_end }
    }

    fn overlapping(&self, s: u64, e: u64) -> impl Iterator<Item = &(u64, u64, ThreadIdx)> {
        let first = self.max_end.partition_point(|&m| m <= s);
        self.v[first..]
            .iter()
            .take_while(move |h| h.0 < e)
            .filter(move |h| h.1 > s)
    }
}

/// Adds the holder's stacks over `[a, b)` to `into`: its sampled stack spans, the time no
/// span covers under stack 0; time it ran a collection marked `gc`.
fn holder_stacks(
    tl: &Timeline,
    holder: &Thread,
    a: u64,
    b: u64,
    into: &mut BTreeMap<HolderStack, u64>,
) {
    let gcs: Vec<(u64, u64)> = tl
        .gc_of_thread(holder.idx, a, b)
        .iter()
        .map(|g| (g.start_ns.max(a), g.end_ns.min(b)))
        .collect();
    let mut add = |s: u64, e: u64, stack: StackId| {
        // Cut [s, e) by the collections.
        let mut at = s;
        for &(gs, ge) in &gcs {
            let (gs, ge) = (gs.max(at), ge.min(e));
            if ge <= gs {
                continue;
            }
            if gs > at {
                *into.entry(HolderStack { stack, gc: false }).or_default() += gs - at;
            }
            *into.entry(HolderStack { stack, gc: true }).or_default() += ge - gs;
            at = ge;
        }
        if e > at {
            *into.entry(HolderStack { stack, gc: false }).or_default() += e - at;
        }
    };
    let spans = &holder.stack_spans;
    let first = spans.partition_point(|sp| sp.1 <= a);
    let mut at = a;
    for &(ss, se, stack) in spans[first..].iter().take_while(|sp| sp.0 < b) {
        let (ss, se) = (ss.max(at), se.min(b));
        if se <= ss {
            continue;
        }
        if ss > at {
            add(at, ss, 0);
        }
        add(ss, se, stack);
        at = se;
    }
    if b > at {
        add(at, b, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::timeline::{Event, GcRun, Run, Source};

    fn start(thread: u32) -> Event {
        Event::ThreadStart {
            time_ns: 0,
            thread,
            tid: 100 + thread,
            start_ticks: 1,
            name: format!("t{thread}"),
            os_name: String::new(),
        }
    }

    fn run(thread: u32, s: u64, e: u64, state: GilState, stack: StackId, source: Source) -> Event {
        Event::Run(Run {
            thread,
            start_ns: s,
            end_ns: e,
            samples: if source == Source::Exact { 0 } else { 1 },
            interpreter: 0,
            state,
            on_cpu: true,
            stack,
            source,
        })
    }

    fn base() -> Vec<Event> {
        let mut ev = crate::model::timeline::one_gil_main_interpreter();
        ev.extend([start(0), start(1), start(2)]);
        ev
    }

    #[test]
    fn waiting_is_blamed_on_the_holder_and_its_stacks() {
        use GilState::*;
        let s = Source::Sampled;
        let mut ev = base();
        ev.extend([
            // Holder 0: stack 1 for 0..40, stack 2 for 40..100 (collecting 60..70).
            run(0, 0, 40, Held, 1, s),
            run(0, 40, 100, Held, 2, s),
            // Waiter 1 waits 10..90; waiter 2 waits 80..120 (nobody holds after 100).
            run(1, 0, 10, Idle, 0, s),
            run(1, 10, 90, Waiting, 0, s),
            run(2, 80, 120, Waiting, 0, s),
            Event::Gc(GcRun {
                interpreter: 0,
                start_ns: 60,
                end_ns: 70,
                samples: 1,
                thread: Some(0),
                stack: 2,
            }),
        ]);
        let tl = Timeline::from_events(&ev);
        let b = blame(&tl);
        let hs = |stack, gc| HolderStack { stack, gc };
        assert_eq!(
            b,
            vec![
                Blame {
                    interpreter: 0,
                    waiter: 1,
                    holder: Some(0),
                    ns: 80,
                    stacks: vec![(hs(2, false), 40), (hs(1, false), 30), (hs(2, true), 10)],
                },
                Blame {
                    interpreter: 0,
                    waiter: 2,
                    holder: None,
                    ns: 20,
                    stacks: vec![(hs(0, false), 20)],
                },
                Blame {
                    interpreter: 0,
                    waiter: 2,
                    holder: Some(0),
                    ns: 20,
                    stacks: vec![(hs(2, false), 20)],
                },
            ]
        );
        // A window: only the waiting inside it.
        let w = blame_between(&tl, 0, 20);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].ns, 10);
    }
}
