//! `gilscope summary`: per-interpreter GIL use and per-thread state shares,
//! computed from the [`Timeline`] model. The serde form of [`Summary`] is the
//! `summary --json` output documented in docs/cli-summary.md.
//!
//! Percentages are of *observed* time: a thread's shares add up to 100% of
//! the time it was sampled (gaps from failed samples are left out), a GIL's
//! busy share is of the time it was sampled while enabled. Everything is
//! sorted, so the output is deterministic for a given trace.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::model::timeline::{Frame, GilIdx, StackId, Timeline, Totals};
use crate::model::GilState;
use crate::trace::{Metadata, Replay};

/// Knobs for [`summarize`].
#[derive(Debug, Clone)]
pub struct SummaryOptions {
    /// Hottest stacks listed per GIL.
    pub top_stacks: usize,
}

impl Default for SummaryOptions {
    fn default() -> Self {
        SummaryOptions { top_stacks: 5 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// The trace file, when summarizing one.
    pub file: Option<String>,
    pub format_version: Option<u16>,
    /// The recording finished cleanly (false: cut by a crash or kill).
    pub complete: bool,
    /// Where reading stopped early, when it did.
    pub damage: Option<DamageSummary>,
    pub target: TargetSummary,
    pub python: Option<PythonSummary>,
    /// "sampled" or "exact".
    pub mode: String,
    pub rate_hz: f64,
    pub achieved_hz: Option<f64>,
    pub duration_s: f64,
    pub samples: u64,
    /// Sampling ticks skipped for being late (known for finished recordings).
    pub missed_ticks: Option<u64>,
    pub sample_errors: u64,
    /// Distinct sample errors, most frequent first.
    pub errors: Vec<ErrorSummary>,
    pub warnings: Vec<String>,
    /// Whether "waiting for the GIL" can be told apart from idle (Python 3.15+
    /// or exact mode); when false, `waiting_pct` is null and waiting threads
    /// show as idle or released.
    pub waiting_known: bool,
    pub interpreters: Vec<InterpreterSummary>,
    pub gils: Vec<GilSummary>,
    pub threads: Vec<ThreadSummary>,
    /// Threads not listed in `threads` ([`Summary::keep_most_active`]); 0 when all are.
    pub threads_left_out: usize,
    /// Who held the GIL while others waited: waiter → holder, most waiting first.
    pub blame: Vec<BlameSummary>,
    pub parallelism: ParallelismSummary,
}

/// Waiting one thread did while another held the GIL, and the holder's code then.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BlameSummary {
    pub interpreter: i64,
    pub waiter_tid: u32,
    pub waiter_name: String,
    /// Null: no thread was seen holding the GIL while it waited.
    pub holder_tid: Option<u32>,
    pub holder_name: Option<String>,
    pub seconds: f64,
    /// The holder's stacks over that time, most first (at most `top_stacks`).
    pub holder_stacks: Vec<BlameStack>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BlameStack {
    pub seconds: f64,
    /// Innermost first; `<GC>` on top while the holder ran a garbage collection.
    pub frames: Vec<BlameFrame>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BlameFrame {
    pub function: String,
    pub file: String,
    pub line: i32,
}

/// How many threads ran Python at once.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParallelismSummary {
    /// Time average of the threads holding a GIL (free-threaded, GIL off: attached).
    pub gil_holders_mean: f64,
    pub gil_holders_max: u32,
    /// Time average of the target's threads on a CPU (running or runnable).
    pub on_cpu_mean: f64,
}

/// Garbage collections of one interpreter.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GcSummary {
    pub collections: u64,
    pub seconds: f64,
    pub longest_seconds: f64,
    /// The thread that ran the longest one, and the Python line it was at (what triggered
    /// it), when known.
    pub longest_tid: Option<u32>,
    pub longest_thread_name: Option<String>,
    pub longest_trigger: Option<BlameFrame>,
}

/// GIL hand-overs seen by exact mode.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HandoverSummary {
    /// Drops while another thread waited.
    pub count: u64,
    /// From the drop to the next take.
    pub latency_p50_s: f64,
    pub latency_p99_s: f64,
}

impl Summary {
    /// Keeps the `n` most active threads (most seconds holding, waiting for, running
    /// without or attached to a GIL: not idle) in `threads`, in their usual order, and
    /// counts the others in `threads_left_out`. Ties go to the lower (interpreter, TID).
    pub fn keep_most_active(&mut self, n: usize) {
        if self.threads.len() <= n {
            return;
        }
        let mut ranked: Vec<(u64, usize)> = self
            .threads
            .iter()
            .enumerate()
            .map(|(i, t)| (t.active_ns, i))
            .collect();
        ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut keep: Vec<usize> = ranked.iter().take(n).map(|&(_, i)| i).collect();
        keep.sort_unstable();
        let before = self.threads.len();
        let mut all = std::mem::take(&mut self.threads).into_iter().enumerate();
        let mut kept = Vec::with_capacity(n);
        for i in keep {
            for (j, t) in all.by_ref() {
                if j == i {
                    kept.push(t);
                    break;
                }
            }
        }
        self.threads_left_out += before - kept.len();
        self.threads = kept;
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DamageSummary {
    pub offset: u64,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetSummary {
    pub pid: u32,
    pub command: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PythonSummary {
    pub version: String,
    pub free_threaded: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorSummary {
    pub message: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InterpreterSummary {
    pub id: i64,
    pub main: bool,
    pub own_gil: bool,
    /// Index into `gils`.
    pub gil: GilIdx,
    /// Other interpreters on the same GIL, by id.
    pub shares_gil_with: Vec<i64>,
    /// Busy share of its GIL (null while the GIL was never enabled).
    pub gil_busy_pct: Option<f64>,
    /// Exact mode: hand-overs of its GIL and their latency (shared GILs: the same for each);
    /// null without exact mode (`gils[].handovers` counts them from samples).
    pub handovers: Option<HandoverSummary>,
    /// Its garbage collections (`collections` 0 when none was seen).
    pub gc: GcSummary,
    /// Threads whose main interpreter this is.
    pub threads: usize,
    pub first_seen_s: f64,
    pub ended_s: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GilSummary {
    pub index: GilIdx,
    /// Address in the target, "0x…".
    pub address: String,
    pub interpreters: Vec<i64>,
    /// Share of observed time the GIL was enabled (100 except free-threaded).
    pub enabled_pct: f64,
    pub busy_pct: Option<f64>,
    pub handovers: u64,
    pub handovers_per_s: f64,
    /// Seconds threads held it (summed over threads, from thread states).
    pub held_s: f64,
    pub hot_stacks: Vec<HotStack>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HotStack {
    /// Share of all time threads held this GIL.
    pub pct: f64,
    pub seconds: f64,
    pub samples: u64,
    /// Innermost first.
    pub frames: Vec<FrameSummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FrameSummary {
    pub function: String,
    pub file: String,
    pub line: i32,
    pub interpreter: i64,
}

impl From<&Frame> for FrameSummary {
    fn from(f: &Frame) -> Self {
        FrameSummary {
            function: f.function.clone(),
            file: f.file.clone(),
            line: f.line,
            interpreter: f.interpreter,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThreadSummary {
    pub tid: u32,
    /// With `tid`, names the kernel thread (TIDs get reused).
    pub start_ticks: u64,
    pub name: String,
    pub os_name: String,
    /// The interpreter it spent most time in.
    pub interpreter: Option<i64>,
    /// Every interpreter it was seen in.
    pub interpreters: Vec<i64>,
    pub held_pct: f64,
    pub waiting_pct: Option<f64>,
    pub released_pct: f64,
    pub idle_pct: f64,
    /// Free-threaded builds with the GIL disabled: running Python code.
    pub attached_pct: f64,
    pub unknown_pct: f64,
    pub on_cpu_pct: f64,
    /// Running a garbage collection (part of `held_pct`, or `attached_pct`).
    pub gc_pct: f64,
    pub samples: u64,
    pub observed_s: f64,
    pub first_seen_s: f64,
    pub ended_s: Option<f64>,
    /// Nanoseconds held, waiting, released or attached (not idle, not unknown): what
    /// [`Summary::keep_most_active`] ranks by.
    #[serde(skip)]
    pub active_ns: u64,
}

fn frame_of(f: &Frame) -> BlameFrame {
    BlameFrame {
        function: f.function.clone(),
        file: f.file.clone(),
        line: f.line,
    }
}

fn gc_summary(tl: &Timeline, interpreter: i64) -> GcSummary {
    let st = tl.gc.get(&interpreter).cloned().unwrap_or_default();
    let longest = st.longest.as_ref();
    let thread = longest
        .and_then(|l| l.thread)
        .and_then(|t| tl.threads.get(t as usize));
    GcSummary {
        collections: st.collections,
        seconds: secs(st.total.ns),
        longest_seconds: longest.map_or(0.0, |l| secs(l.end_ns.saturating_sub(l.start_ns))),
        longest_tid: thread.map(|t| t.tid),
        longest_thread_name: thread.map(|t| t.name.clone()),
        longest_trigger: longest
            .and_then(|l| tl.stack_frames(l.stack).first().map(|f| frame_of(f))),
    }
}

/// Frames of a holder stack, innermost first, `<GC>` on top while it collected.
pub fn blame_frames(tl: &Timeline, hs: crate::analysis::blame::HolderStack) -> Vec<BlameFrame> {
    let mut frames = Vec::new();
    if hs.gc {
        frames.push(BlameFrame {
            function: "<GC>".into(),
            file: String::new(),
            line: 0,
        });
    }
    frames.extend(tl.stack_frames(hs.stack).into_iter().map(frame_of));
    frames
}

fn blame_summary(tl: &Timeline, opts: &SummaryOptions) -> Vec<BlameSummary> {
    crate::analysis::blame::blame(tl)
        .into_iter()
        .map(|b| {
            let waiter = tl.threads.get(b.waiter as usize);
            let holder = b.holder.and_then(|h| tl.threads.get(h as usize));
            BlameSummary {
                interpreter: b.interpreter,
                waiter_tid: waiter.map_or(0, |t| t.tid),
                waiter_name: waiter.map_or_else(String::new, |t| t.name.clone()),
                holder_tid: holder.map(|t| t.tid),
                holder_name: holder.map(|t| t.name.clone()),
                seconds: secs(b.ns),
                holder_stacks: b
                    .stacks
                    .iter()
                    .take(opts.top_stacks)
                    .map(|&(hs, ns)| BlameStack {
                        seconds: secs(ns),
                        frames: blame_frames(tl, hs),
                    })
                    .collect(),
            }
        })
        .collect()
}

fn round(v: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (v * m).round() / m
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        round(part as f64 * 100.0 / whole as f64, 2)
    }
}

fn secs(ns: u64) -> f64 {
    round(ns as f64 / 1e9, 6)
}

/// Summarize a replayed trace file.
pub fn summarize_replay(replay: &Replay, opts: &SummaryOptions) -> Summary {
    let mut s = summarize(&replay.metadata, &replay.timeline, opts);
    s.file = Some(replay.file.clone());
    s.format_version = Some(replay.version);
    s.complete = replay.complete;
    s.damage = replay.damage.as_ref().map(|d| DamageSummary {
        offset: d.offset,
        reason: d.reason.clone(),
    });
    s
}

/// Summarize a model (from a file or fed live).
pub fn summarize(meta: &Metadata, tl: &Timeline, opts: &SummaryOptions) -> Summary {
    let origin = tl.start_ns.unwrap_or(meta.clock.start_ns);
    let rel = |t: u64| secs(t.saturating_sub(origin));
    let duration_ns = tl.duration_ns();
    let samples = tl.samples();
    let waiting_known = meta.python_reports_waiting()
        || tl.sources.contains_key("exact")
        || tl.threads.iter().any(|t| t.state(GilState::Waiting).ns > 0);

    let mut errors: Vec<ErrorSummary> = tl
        .sample_errors
        .iter()
        .map(|(m, &n)| ErrorSummary {
            message: m.clone(),
            count: n,
        })
        .collect();
    errors.sort_by(|a, b| b.count.cmp(&a.count).then(a.message.cmp(&b.message)));

    // Threads.
    let mut threads: Vec<ThreadSummary> = tl
        .threads
        .iter()
        .map(|t| {
            let obs = t.observed();
            let share = |s: GilState| pct(t.state(s).ns, obs.ns);
            ThreadSummary {
                tid: t.tid,
                start_ticks: t.start_ticks,
                name: t.name.clone(),
                os_name: t.os_name.clone(),
                interpreter: t.main_interpreter(),
                interpreters: t.by_interpreter.keys().copied().collect(),
                held_pct: share(GilState::Held),
                waiting_pct: waiting_known.then(|| share(GilState::Waiting)),
                released_pct: share(GilState::Released),
                idle_pct: share(GilState::Idle),
                attached_pct: share(GilState::Attached),
                unknown_pct: share(GilState::Unknown),
                on_cpu_pct: pct(t.on_cpu.ns, obs.ns),
                gc_pct: pct(t.gc.ns, obs.ns),
                // Exact runs carry no samples: count the sampled ones (stacks).
                samples: if t.exact {
                    t.stacks.values().map(|v| v.samples).sum()
                } else {
                    obs.samples
                },
                observed_s: secs(obs.ns),
                first_seen_s: rel(t.first_seen_ns),
                ended_s: t.ended_ns.map(rel),
                active_ns: [
                    GilState::Held,
                    GilState::Waiting,
                    GilState::Released,
                    GilState::Attached,
                ]
                .iter()
                .map(|&s| t.state(s).ns)
                .sum(),
            }
        })
        .collect();
    threads.sort_by(|a, b| {
        (a.interpreter.unwrap_or(i64::MAX), a.tid, a.start_ticks).cmp(&(
            b.interpreter.unwrap_or(i64::MAX),
            b.tid,
            b.start_ticks,
        ))
    });

    // Held time and stacks per GIL, from the threads' states.
    let gil_of: HashMap<i64, GilIdx> = tl.interpreters.values().map(|i| (i.id, i.gil)).collect();
    let mut held: BTreeMap<GilIdx, BTreeMap<StackId, Totals>> = BTreeMap::new();
    for t in &tl.threads {
        for (&(state, interp, stack), tot) in &t.stacks {
            if state != GilState::Held {
                continue;
            }
            let Some(&g) = gil_of.get(&interp) else {
                continue;
            };
            let e = held.entry(g).or_default().entry(stack).or_default();
            e.ns = e.ns.saturating_add(tot.ns);
            e.samples = e.samples.saturating_add(tot.samples);
        }
    }

    let gils: Vec<GilSummary> = tl
        .gils
        .iter()
        .map(|g| {
            let stacks = held.remove(&g.idx).unwrap_or_default();
            let held_ns = stacks.values().fold(0u64, |a, t| a.saturating_add(t.ns));
            let mut ranked: Vec<(StackId, Totals)> = stacks.into_iter().collect();
            ranked.sort_by(|a, b| b.1.ns.cmp(&a.1.ns).then(a.0.cmp(&b.0)));
            let hot_stacks = ranked
                .into_iter()
                .take(opts.top_stacks)
                .map(|(id, t)| HotStack {
                    pct: pct(t.ns, held_ns),
                    seconds: secs(t.ns),
                    samples: t.samples,
                    frames: tl.stack_frames(id).into_iter().map(Into::into).collect(),
                })
                .collect();
            let handovers = g.handovers();
            GilSummary {
                index: g.idx,
                address: format!("{:#x}", g.address),
                interpreters: tl.interpreters_on_gil(g.idx),
                enabled_pct: pct(g.enabled.ns, g.observed.ns),
                busy_pct: (g.enabled.ns > 0).then(|| pct(g.locked.ns, g.enabled.ns)),
                handovers,
                handovers_per_s: if g.observed.ns > 0 {
                    round(handovers as f64 / (g.observed.ns as f64 / 1e9), 1)
                } else {
                    0.0
                },
                held_s: secs(held_ns),
                hot_stacks,
            }
        })
        .collect();

    let handovers = crate::analysis::parallel::handovers(tl);
    let interpreters = tl
        .interpreters
        .values()
        .map(|i| {
            let g = gils.get(i.gil as usize);
            InterpreterSummary {
                id: i.id,
                main: i.main,
                own_gil: i.own_gil,
                gil: i.gil,
                shares_gil_with: g
                    .map(|g| {
                        g.interpreters
                            .iter()
                            .copied()
                            .filter(|&o| o != i.id)
                            .collect()
                    })
                    .unwrap_or_default(),
                gil_busy_pct: g.and_then(|g| g.busy_pct),
                handovers: handovers.get(&i.gil).map(|h| HandoverSummary {
                    count: h.count,
                    latency_p50_s: secs(h.latency_p50_ns),
                    latency_p99_s: secs(h.latency_p99_ns),
                }),
                gc: gc_summary(tl, i.id),
                threads: threads
                    .iter()
                    .filter(|t| t.interpreter == Some(i.id))
                    .count(),
                first_seen_s: rel(i.first_seen_ns),
                ended_s: i.ended_ns.map(rel),
            }
        })
        .collect();

    let duration_s = secs(duration_ns);
    Summary {
        file: None,
        format_version: None,
        complete: tl.end.is_some(),
        damage: None,
        target: TargetSummary {
            pid: meta.target.pid,
            command: meta.target.command.clone(),
        },
        python: meta.python.as_ref().map(|p| PythonSummary {
            version: p.version.clone(),
            free_threaded: p.free_threaded,
        }),
        mode: match meta.mode {
            crate::model::timeline::Source::Sampled => "sampled".to_owned(),
            crate::model::timeline::Source::Exact => "exact".to_owned(),
        },
        rate_hz: meta.options.rate_hz,
        achieved_hz: (duration_ns > 0)
            .then(|| round(samples as f64 / (duration_ns as f64 / 1e9), 1)),
        duration_s,
        samples,
        missed_ticks: tl.end.map(|(_, missed)| missed),
        sample_errors: tl.sample_errors.values().sum(),
        errors,
        warnings: tl.warnings.clone(),
        waiting_known,
        interpreters,
        gils,
        threads,
        threads_left_out: 0,
        blame: blame_summary(tl, opts),
        parallelism: {
            let p = crate::analysis::parallel::parallelism(tl);
            ParallelismSummary {
                gil_holders_mean: round(p.holders_mean, 3),
                gil_holders_max: p.holders_max,
                on_cpu_mean: round(p.on_cpu_mean, 3),
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::timeline::{Event, Frame, GilRun, Run, Source};
    use crate::trace::PythonMeta;

    fn run(thread: u32, interp: i64, start: u64, end: u64, state: GilState, stack: u32) -> Event {
        Event::Run(Run {
            thread,
            start_ns: start,
            end_ns: end,
            samples: ((end - start) / 10) as u32,
            interpreter: interp,
            state,
            on_cpu: state == GilState::Held,
            stack,
            source: Source::Sampled,
        })
    }

    fn events() -> Vec<Event> {
        let frame = |id: u32, name: &str| Event::Frame {
            id,
            frame: Frame {
                function: name.into(),
                file: "/x/app.py".into(),
                line: id as i32,
                interpreter: 0,
            },
        };
        let interp = |id: i64, own_gil: bool| Event::Interpreter {
            time_ns: 0,
            id,
            main: id == 0,
            own_gil,
            gil: 0,
            address: 0x100 + id as u64,
        };
        let thread = |thread: u32, tid: u32| Event::ThreadStart {
            time_ns: 0,
            thread,
            tid,
            start_ticks: 1,
            name: format!("t{tid}"),
            os_name: String::new(),
        };
        vec![
            frame(1, "main"),
            frame(2, "spin"),
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
            Event::Gil {
                gil: 0,
                address: 0x1000,
            },
            interp(0, true),
            interp(1, false),
            thread(0, 20),
            thread(1, 10),
            run(0, 0, 0, 30, GilState::Held, 2),
            run(0, 0, 30, 70, GilState::Idle, 1),
            run(1, 1, 0, 60, GilState::Waiting, 1),
            run(1, 1, 60, 70, GilState::Held, 1),
            Event::GilRun(GilRun {
                gil: 0,
                start_ns: 0,
                end_ns: 40,
                samples: 4,
                enabled: true,
                locked: true,
                holder_tid: Some(20),
                switch_number: 3,
            }),
            Event::GilRun(GilRun {
                gil: 0,
                start_ns: 40,
                end_ns: 80,
                samples: 4,
                enabled: true,
                locked: false,
                holder_tid: None,
                switch_number: 5,
            }),
        ]
    }

    #[test]
    fn most_active_threads_kept_in_row_order() {
        let tl = Timeline::from_events(&events());
        let meta = Metadata::default();
        let mut s = summarize(&meta, &tl, &SummaryOptions::default());
        assert_eq!(s.threads_left_out, 0);
        let all = s.clone();
        s.keep_most_active(5);
        assert_eq!(s, all, "nothing to leave out");
        // t10 was active (waiting, then held) all its 70 ns, t20 30 of 70.
        s.keep_most_active(1);
        assert_eq!(s.threads.iter().map(|t| t.tid).collect::<Vec<_>>(), [10]);
        assert_eq!(s.threads_left_out, 1);
        let mut s = all.clone();
        s.keep_most_active(0);
        assert!(s.threads.is_empty());
        assert_eq!(s.threads_left_out, 2);
    }

    #[test]
    fn shared_gil_threads_and_hot_stacks() {
        let tl = Timeline::from_events(&events());
        let meta = Metadata {
            python: Some(PythonMeta {
                version: "3.15.0".into(),
                version_hex: 0x030F00F0,
                ..PythonMeta::default()
            }),
            ..Metadata::default()
        };
        let s = summarize(&meta, &tl, &SummaryOptions::default());
        assert!(s.waiting_known);
        assert_eq!(tl.duration_ns(), 80);
        // Threads sorted by interpreter, then TID.
        let t: Vec<_> = s
            .threads
            .iter()
            .map(|t| (t.tid, t.interpreter, t.held_pct, t.waiting_pct, t.idle_pct))
            .collect();
        assert_eq!(
            t,
            vec![
                (20, Some(0), 42.86, Some(0.0), 57.14),
                (10, Some(1), 14.29, Some(85.71), 0.0),
            ]
        );
        assert_eq!(s.interpreters[1].shares_gil_with, vec![0]);
        assert!(!s.interpreters[1].own_gil);
        assert_eq!(s.interpreters[0].gil_busy_pct, Some(50.0));
        assert_eq!(s.gils[s.interpreters[1].gil as usize].handovers, 2);
        assert_eq!(s.interpreters[1].handovers, None);
        // Held 30 ns in spin←main (interp 0) and 10 ns in main (interp 1),
        // both on GIL 0.
        let hot: Vec<_> = s.gils[0]
            .hot_stacks
            .iter()
            .map(|h| {
                (
                    h.pct,
                    h.frames
                        .iter()
                        .map(|f| f.function.as_str())
                        .collect::<Vec<_>>(),
                )
            })
            .collect();
        assert_eq!(
            hot,
            vec![(75.0, vec!["spin", "main"]), (25.0, vec!["main"])]
        );

        // Before 3.15 and with no waiting seen, waiting is unknown.
        let mut no_wait = events();
        no_wait.retain(|e| !matches!(e, Event::Run(r) if r.state == GilState::Waiting));
        let tl = Timeline::from_events(&no_wait);
        let s = summarize(&Metadata::default(), &tl, &SummaryOptions::default());
        assert!(!s.waiting_known);
        assert_eq!(s.threads[0].waiting_pct, None);
    }
}
