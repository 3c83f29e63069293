//! Parallelism (how many threads hold a GIL at once, how many run on a CPU) and GIL
//! hand-over latency, from the [`Timeline`] model. Pure.
//!
//! A thread *holds* while its state is held, or attached (free-threaded, GIL disabled: no
//! lock, the thread runs Python code in parallel). A holder that the kernel preempted still
//! holds its GIL, so holders can exceed the CPUs; `on_cpu` counts the threads running or
//! runnable.

use std::collections::{BTreeMap, HashMap};

use crate::model::timeline::{GilIdx, Source, ThreadIdx, Timeline};
use crate::model::GilState;

/// One step of the parallelism curve: from `time_ns` on (until the next step), `holders`
/// threads held a GIL (or were attached) and `on_cpu` threads were on a CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub time_ns: u64,
    pub holders: u32,
    pub on_cpu: u32,
}

/// The parallelism curve: change points in time order (the last one is the end, both 0).
pub fn steps(tl: &Timeline) -> Vec<Step> {
    // (time, Δholders, Δon_cpu), sorted by time (a sort beats a map on millions of
    // intervals).
    let mut d: Vec<(u64, i32, i32)> = Vec::new();
    for t in &tl.threads {
        for i in &t.intervals {
            if i.end_ns <= i.start_ns {
                continue;
            }
            let h = i32::from(matches!(i.state, GilState::Held | GilState::Attached));
            let c = i32::from(i.on_cpu);
            if h == 0 && c == 0 {
                continue;
            }
            d.push((i.start_ns, h, c));
            d.push((i.end_ns, -h, -c));
        }
    }
    d.sort_unstable_by_key(|x| x.0);
    let (mut h, mut c) = (0i64, 0i64);
    let mut out: Vec<Step> = Vec::new();
    let mut k = 0;
    while k < d.len() {
        let time_ns = d[k].0;
        while k < d.len() && d[k].0 == time_ns {
            h += i64::from(d[k].1);
            c += i64::from(d[k].2);
            k += 1;
        }
        let step = Step {
            time_ns,
            holders: h.max(0) as u32,
            on_cpu: c.max(0) as u32,
        };
        match out.last() {
            Some(l) if l.holders == step.holders && l.on_cpu == step.on_cpu => {}
            _ => out.push(step),
        }
    }
    out
}

/// Time averages over the recording and the most holders at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Parallelism {
    pub holders_mean: f64,
    pub holders_max: u32,
    pub on_cpu_mean: f64,
}

/// Averages of [`steps`] over `[tl.start_ns, tl.end_ns)`.
pub fn parallelism(tl: &Timeline) -> Parallelism {
    let steps = steps(tl);
    let dur = tl.duration_ns();
    let (mut h, mut c) = (0u128, 0u128);
    for w in steps.windows(2) {
        let dt = u128::from(w[1].time_ns.saturating_sub(w[0].time_ns));
        h += dt * u128::from(w[0].holders);
        c += dt * u128::from(w[0].on_cpu);
    }
    let mean = |x: u128| {
        if dur == 0 {
            0.0
        } else {
            x as f64 / dur as f64
        }
    };
    Parallelism {
        holders_mean: mean(h),
        holders_max: steps.iter().map(|s| s.holders).max().unwrap_or(0),
        on_cpu_mean: mean(c),
    }
}

/// The mean number of holders in each of `n` equal buckets of `[from_ns, to_ns)` (the TUI
/// strip).
pub fn holders_per_bucket(steps: &[Step], from_ns: u64, to_ns: u64, n: usize) -> Vec<f64> {
    let mut out = vec![0.0; n];
    if n == 0 || to_ns <= from_ns {
        return out;
    }
    let width = (to_ns - from_ns) as f64 / n as f64;
    for w in steps.windows(2) {
        let (s, e) = (w[0].time_ns.max(from_ns), w[1].time_ns.min(to_ns));
        if e <= s || w[0].holders == 0 {
            continue;
        }
        let (mut a, h) = (s, f64::from(w[0].holders));
        while a < e {
            let b = ((a - from_ns) as f64 / width).floor() as usize;
            let b = b.min(n - 1);
            let bucket_end = (from_ns as f64 + (b + 1) as f64 * width).ceil() as u64;
            let seg_end = e.min(bucket_end.max(a + 1));
            out[b] += (seg_end - a) as f64 * h / width;
            a = seg_end;
        }
    }
    out
}

/// Hand-overs of one GIL in exact mode: a thread dropped it while another waited, and the
/// next thread took it `latency` later.
#[derive(Debug, Clone, PartialEq)]
pub struct Handovers {
    pub count: u64,
    pub latency_p50_ns: u64,
    pub latency_p99_ns: u64,
    /// Every hand-over: (drop time, latency, from, to).
    pub each: Vec<(u64, u64, ThreadIdx, ThreadIdx)>,
}

/// Per GIL, from the exact intervals only (`None` for a GIL without any).
pub fn handovers(tl: &Timeline) -> BTreeMap<GilIdx, Handovers> {
    let gil_of: HashMap<i64, GilIdx> = tl.interpreters.values().map(|i| (i.id, i.gil)).collect();
    let mut holds: BTreeMap<GilIdx, Vec<(u64, u64, ThreadIdx)>> = BTreeMap::new();
    let mut waits: BTreeMap<GilIdx, Vec<(u64, u64, ThreadIdx)>> = BTreeMap::new();
    for t in &tl.threads {
        for i in &t.intervals {
            if i.source != Source::Exact {
                continue;
            }
            let Some(&g) = gil_of.get(&i.interpreter) else {
                continue;
            };
            let into = match i.state {
                GilState::Held => holds.entry(g).or_default(),
                GilState::Waiting => waits.entry(g).or_default(),
                _ => continue,
            };
            // Pieces of one hold (cut where the thread left its CPU) are one hold.
            match into.last_mut() {
                Some(l) if l.2 == t.idx && l.1 == i.start_ns => l.1 = i.end_ns,
                _ => into.push((i.start_ns, i.end_ns, t.idx)),
            }
        }
    }
    let mut out = BTreeMap::new();
    for (g, mut hs) in holds {
        hs.sort_unstable();
        let mut ws = waits.remove(&g).unwrap_or_default();
        ws.sort_unstable();
        let mut each = Vec::new();
        for pair in hs.windows(2) {
            let (drop, from) = (pair[0].1, pair[0].2);
            let (take, to) = (pair[1].0, pair[1].2);
            if take < drop {
                continue;
            }
            // Someone else was waiting at the drop.
            let first = ws.partition_point(|w| w.0 <= drop);
            let waited = ws[..first]
                .iter()
                .rev()
                .take(64)
                .any(|w| w.1 > drop && w.2 != from);
            if waited {
                each.push((drop, take - drop, from, to));
            }
        }
        let mut lat: Vec<u64> = each.iter().map(|e| e.1).collect();
        lat.sort_unstable();
        out.insert(
            g,
            Handovers {
                count: each.len() as u64,
                latency_p50_ns: percentile(&lat, 50),
                latency_p99_ns: percentile(&lat, 99),
                each,
            },
        );
    }
    out
}

/// Nearest-rank percentile of sorted values (0 when empty).
fn percentile(sorted: &[u64], p: u64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p as usize * sorted.len()).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::timeline::{Event, Run};

    fn run(thread: u32, s: u64, e: u64, state: GilState, on_cpu: bool, source: Source) -> Event {
        Event::Run(Run {
            thread,
            start_ns: s,
            end_ns: e,
            samples: 0,
            interpreter: 0,
            state,
            on_cpu,
            stack: 0,
            source,
        })
    }

    fn timeline(runs: Vec<Event>) -> Timeline {
        let mut ev = crate::model::timeline::one_gil_main_interpreter();
        for t in 0..3 {
            ev.push(Event::ThreadStart {
                time_ns: 0,
                thread: t,
                tid: 100 + t,
                start_ticks: 1,
                name: String::new(),
                os_name: String::new(),
            });
        }
        ev.extend(runs);
        Timeline::from_events(&ev)
    }

    #[test]
    fn holders_and_cpus_over_time() {
        use GilState::*;
        let s = Source::Sampled;
        let tl = timeline(vec![
            run(0, 0, 100, Held, true, s),
            run(1, 0, 50, Attached, false, s),
            run(2, 50, 100, Released, true, s),
        ]);
        let p = parallelism(&tl);
        assert_eq!(p.holders_max, 2);
        assert!((p.holders_mean - 1.5).abs() < 1e-9, "{p:?}");
        assert!((p.on_cpu_mean - 1.5).abs() < 1e-9, "{p:?}");
        let b = holders_per_bucket(&steps(&tl), 0, 100, 4);
        assert_eq!(b, vec![2.0, 2.0, 1.0, 1.0]);
    }

    #[test]
    fn handover_latency_from_exact_drops_to_takes() {
        use GilState::*;
        let x = Source::Exact;
        let tl = timeline(vec![
            run(0, 0, 10, Held, true, x),
            run(0, 10, 20, Held, false, x), // one hold, cut by the CPU
            run(1, 5, 23, Waiting, false, x),
            run(1, 23, 40, Held, true, x),  // 3 after the drop
            run(0, 20, 30, Idle, false, x), // nobody waits at 40
            run(0, 50, 60, Held, true, x),
        ]);
        let h = &handovers(&tl)[&0];
        assert_eq!(h.count, 1);
        assert_eq!(h.each, vec![(20, 3, 0, 1)]);
        assert_eq!((h.latency_p50_ns, h.latency_p99_ns), (3, 3));
        assert_eq!(percentile(&[1, 2, 3, 4], 50), 2);
        assert_eq!(percentile(&[1, 2, 3, 4], 99), 4);
        // Sampled only: none.
        let tl = timeline(vec![run(0, 0, 10, Held, true, Source::Sampled)]);
        assert!(handovers(&tl).is_empty());
    }
}
