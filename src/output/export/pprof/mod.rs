//! pprof (`profile.proto`, gzip'd): the stacks of the model with their GIL state as labels,
//! for `go tool pprof`, Grafana Pyroscope and Parca.
//!
//! One pprof sample per (thread, GIL state, interpreter, stack) of the model
//! ([`Thread::stacks`], what `flame` and `collapsed` fold and `summary` counts), valued
//! `samples/count` and `wall/nanoseconds`, labelled `gil_state` (the model's state names:
//! held, waiting, released, idle, attached, unknown, and any the model adds), `interpreter`
//! and `thread_name` — `thread_id` only when asked (cardinality). Python frames are
//! functions (name, file) and locations (function, line), innermost first.
//!
//! A window of a live recording (`--pyroscope`) is the difference of two [`StackTotals`] of
//! the same model, so what a backend shows adds up to what the trace file says.
//!
//! [`Thread::stacks`]: crate::model::timeline::Thread::stacks

pub mod proto;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use prost::Message;

use crate::model::snapshot::GilState;
use crate::model::timeline::{Frame, StackId, ThreadIdx, Timeline, Totals};
use crate::output::flame::{FoldOptions, ThreadSelector, NO_FRAMES};

/// What goes into a profile besides the model.
#[derive(Debug, Clone, Default)]
pub struct PprofOptions {
    /// Label every sample with `thread_id` (the kernel TID) too.
    pub thread_id: bool,
    /// The sampling rate the states were read at (the profile's period is 1e9 / rate ns).
    pub rate_hz: f64,
    /// Wall-clock time of the profile's start (Unix ns), when known.
    pub start_unix_ns: Option<u64>,
    pub duration_ns: u64,
    /// Free text carried in the profile (`comment`), e.g. that states are sampled estimates.
    pub comments: Vec<String>,
    /// Leave line numbers out (every location of a function is one).
    pub no_lines: bool,
}

/// One thread's stack time, cumulative, per (GIL state, interpreter, stack).
type Key = (ThreadIdx, GilState, i64, StackId);

/// The stack totals of a model at one moment: a window is the difference of two.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StackTotals(HashMap<Key, Totals>);

impl StackTotals {
    pub fn of(tl: &Timeline) -> Self {
        let mut m = HashMap::new();
        for t in &tl.threads {
            for (&(state, interp, stack), tot) in &t.stacks {
                m.insert((t.idx, state, interp, stack), *tot);
            }
        }
        StackTotals(m)
    }

    /// Samples and ns in all.
    pub fn total(&self) -> Totals {
        let mut out = Totals::default();
        for v in self.0.values() {
            out.ns = out.ns.saturating_add(v.ns);
            out.samples = out.samples.saturating_add(v.samples);
        }
        out
    }
}

/// Interned strings, functions and locations of a profile being built.
#[derive(Default)]
struct Tables {
    strings: Vec<String>,
    string_ids: HashMap<String, i64>,
    functions: Vec<proto::Function>,
    function_ids: HashMap<(String, String), u64>,
    locations: Vec<proto::Location>,
    location_ids: HashMap<(u64, i64), u64>,
}

impl Tables {
    fn new() -> Self {
        let mut t = Tables::default();
        t.s("");
        t
    }

    fn s(&mut self, s: &str) -> i64 {
        if let Some(&id) = self.string_ids.get(s) {
            return id;
        }
        let id = self.strings.len() as i64;
        self.strings.push(s.to_owned());
        self.string_ids.insert(s.to_owned(), id);
        id
    }

    fn location(&mut self, f: &Frame, no_lines: bool) -> u64 {
        let key = (f.function.clone(), f.file.clone());
        let function_id = match self.function_ids.get(&key) {
            Some(&id) => id,
            None => {
                let id = self.functions.len() as u64 + 1;
                let name = self.s(&f.function);
                let filename = self.s(&f.file);
                // No system name: pprof then takes the name as it is (it would strip
                // `<...>` from `<module>` or `<lambda>` as C++ template arguments).
                self.functions.push(proto::Function {
                    id,
                    name,
                    system_name: 0,
                    filename,
                    start_line: 0,
                });
                self.function_ids.insert(key, id);
                id
            }
        };
        let line = if no_lines { 0 } else { i64::from(f.line) };
        *self
            .location_ids
            .entry((function_id, line))
            .or_insert_with(|| {
                let id = self.locations.len() as u64 + 1;
                self.locations.push(proto::Location {
                    id,
                    line: vec![proto::Line { function_id, line }],
                    ..Default::default()
                });
                id
            })
    }
}

/// Which of the model's stacks a profile keeps.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only these states (`None`: all).
    pub states: Option<Vec<GilState>>,
    pub interpreter: Option<i64>,
    pub thread: Option<ThreadSelector>,
}

impl Selection {
    pub fn from_fold(opts: &FoldOptions) -> Self {
        let states = crate::model::timeline::STATES
            .into_iter()
            .filter(|s| opts.state.matches(*s))
            .collect::<Vec<_>>();
        Selection {
            states: (states.len() < crate::model::timeline::STATES.len()).then_some(states),
            interpreter: opts.interpreter,
            thread: opts.thread.clone(),
        }
    }
}

/// The profile of model `tl`: everything (`since` = `None`), or what it gained since
/// `since` (a window of a live recording).
pub fn profile(
    tl: &Timeline,
    since: Option<&StackTotals>,
    sel: &Selection,
    opts: &PprofOptions,
) -> proto::Profile {
    let mut tb = Tables::new();
    let sample_type = vec![
        proto::ValueType {
            r#type: tb.s("samples"),
            unit: tb.s("count"),
        },
        proto::ValueType {
            r#type: tb.s("wall"),
            unit: tb.s("nanoseconds"),
        },
    ];
    let period_type = proto::ValueType {
        r#type: tb.s("wall"),
        unit: tb.s("nanoseconds"),
    };
    let k_state = tb.s("gil_state");
    let k_interp = tb.s("interpreter");
    let k_name = tb.s("thread_name");
    let k_tid = tb.s("thread_id");
    // Sorted: the same model always gives the same bytes.
    let mut entries: BTreeMap<Key, Totals> = BTreeMap::new();
    for t in &tl.threads {
        let selected = match &sel.thread {
            None => true,
            Some(ThreadSelector::Tid(tid)) => t.tid == *tid,
            Some(ThreadSelector::Name(n)) => &t.name == n,
        };
        if !selected {
            continue;
        }
        for (&(state, interp, stack), tot) in &t.stacks {
            if sel.states.as_ref().is_some_and(|s| !s.contains(&state))
                || sel.interpreter.is_some_and(|i| i != interp)
            {
                continue;
            }
            let key = (t.idx, state, interp, stack);
            let before = since
                .and_then(|s| s.0.get(&key))
                .copied()
                .unwrap_or_default();
            let d = Totals {
                ns: tot.ns.saturating_sub(before.ns),
                samples: tot.samples.saturating_sub(before.samples),
            };
            if d.ns > 0 || d.samples > 0 {
                entries.insert(key, d);
            }
        }
    }
    let mut samples = Vec::with_capacity(entries.len());
    for ((thread, state, interp, stack), tot) in entries {
        let Some(t) = tl.threads.get(thread as usize) else {
            continue;
        };
        let frames = tl.stack_frames(stack);
        let location_id: Vec<u64> = if frames.is_empty() {
            let none = Frame {
                function: NO_FRAMES.to_owned(),
                file: String::new(),
                line: 0,
                interpreter: interp,
            };
            vec![tb.location(&none, true)]
        } else {
            frames
                .into_iter()
                .map(|f| tb.location(f, opts.no_lines))
                .collect()
        };
        let mut label = vec![
            proto::Label {
                key: k_state,
                str: tb.s(state.as_str()),
                ..Default::default()
            },
            proto::Label {
                key: k_interp,
                str: tb.s(&interp.to_string()),
                ..Default::default()
            },
            proto::Label {
                key: k_name,
                str: tb.s(&t.name),
                ..Default::default()
            },
        ];
        if opts.thread_id {
            label.push(proto::Label {
                key: k_tid,
                str: tb.s(&t.tid.to_string()),
                ..Default::default()
            });
        }
        samples.push(proto::Sample {
            location_id,
            value: vec![
                i64::try_from(tot.samples).unwrap_or(i64::MAX),
                i64::try_from(tot.ns).unwrap_or(i64::MAX),
            ],
            label,
        });
    }
    let period = if opts.rate_hz.is_finite() && opts.rate_hz > 0.0 {
        (1e9 / opts.rate_hz).round() as i64
    } else {
        0
    };
    let comment = opts.comments.iter().map(|c| tb.s(c)).collect();
    let default_sample_type = tb.s("wall");
    proto::Profile {
        sample_type,
        sample: samples,
        mapping: Vec::new(),
        location: std::mem::take(&mut tb.locations),
        function: std::mem::take(&mut tb.functions),
        string_table: std::mem::take(&mut tb.strings),
        drop_frames: 0,
        keep_frames: 0,
        time_nanos: opts
            .start_unix_ns
            .and_then(|n| i64::try_from(n).ok())
            .unwrap_or(0),
        duration_nanos: i64::try_from(opts.duration_ns).unwrap_or(i64::MAX),
        period_type: Some(period_type),
        period,
        comment,
        default_sample_type,
    }
}

/// The comment every gilscope profile carries: how its states were obtained.
pub fn estimate_comment(rate_hz: f64, exact: bool) -> String {
    if exact {
        format!(
            "gilscope: GIL states of threads with exact runs from uprobes on take_gil/drop_gil; \
             stacks sampled at {rate_hz} Hz, each sample standing for the time to the next"
        )
    } else {
        format!(
            "gilscope: GIL states and stacks sampled at {rate_hz} Hz: shares are estimates, \
             each sample standing for the time to the next"
        )
    }
}

/// The profile serialized and gzip'd (what a .pb.gz file holds and Pyroscope takes).
pub fn encode_gz(p: &proto::Profile) -> Vec<u8> {
    let raw = p.encode_to_vec();
    let mut gz = flate2::write::GzEncoder::new(
        Vec::with_capacity(raw.len() / 3 + 64),
        flate2::Compression::default(),
    );
    // Writing into a Vec cannot fail.
    let _ = gz.write_all(&raw);
    gz.finish().unwrap_or_default()
}

/// Read a .pb.gz (or a raw, not gzip'd, profile).
pub fn decode(bytes: &[u8]) -> Result<proto::Profile> {
    let raw = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(bytes), &mut out)
            .context("gunzipping the profile")?;
        out
    } else {
        bytes.to_vec()
    };
    proto::Profile::decode(raw.as_slice()).context("decoding profile.proto")
}

/// `gilscope export TRACE -f pprof`: the whole trace as one profile.
pub fn write_file(
    trace: &Path,
    sel: &Selection,
    thread_id: bool,
    no_lines: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let replay = crate::trace::replay(trace)?;
    let tl = &replay.timeline;
    let meta = &replay.metadata;
    let start_unix_ns = match (meta.clock.start_unix_ns, tl.start_ns) {
        (Some(u), Some(s)) => Some(u.saturating_add(s.saturating_sub(meta.clock.start_ns))),
        (u, _) => u,
    };
    let exact = tl.sources.contains_key("exact");
    let mut comments = vec![estimate_comment(meta.options.rate_hz, exact)];
    for m in &tl.modes {
        comments.push(format!(
            "gilscope: from {:.3} s in: {} at {} Hz ({})",
            m.time_ns.saturating_sub(tl.start_ns.unwrap_or(m.time_ns)) as f64 / 1e9,
            match m.mode {
                crate::model::timeline::Source::Exact => "exact",
                crate::model::timeline::Source::Sampled => "sampled",
            },
            m.rate_hz,
            m.reason
        ));
    }
    let opts = PprofOptions {
        thread_id,
        rate_hz: meta.options.rate_hz,
        start_unix_ns,
        duration_ns: tl.duration_ns(),
        comments,
        no_lines,
    };
    let p = profile(tl, None, sel, &opts);
    out.write_all(&encode_gz(&p))
        .context("writing the profile")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::timeline::{Event, Run, Source};

    fn model() -> Timeline {
        let ev = vec![
            Event::Frame {
                id: 1,
                frame: Frame {
                    function: "main".into(),
                    file: "app.py".into(),
                    line: 3,
                    interpreter: 0,
                },
            },
            Event::Frame {
                id: 2,
                frame: Frame {
                    function: "spin".into(),
                    file: "app.py".into(),
                    line: 9,
                    interpreter: 0,
                },
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
            Event::ThreadStart {
                time_ns: 0,
                thread: 0,
                tid: 100,
                start_ticks: 1,
                name: "worker".into(),
                os_name: "python".into(),
            },
        ];
        let mut tl = Timeline::from_events(&ev);
        for (s, e, state) in [(0, 30, GilState::Held), (30, 40, GilState::Waiting)] {
            tl.apply(&Event::Run(Run {
                thread: 0,
                start_ns: s,
                end_ns: e,
                samples: ((e - s) / 10) as u32,
                interpreter: 0,
                state,
                on_cpu: true,
                stack: 2,
                source: Source::Sampled,
            }));
        }
        tl
    }

    #[test]
    fn samples_carry_the_model_and_labels() {
        let tl = model();
        let opts = PprofOptions {
            rate_hz: 100.0,
            ..Default::default()
        };
        let p = decode(&encode_gz(&profile(
            &tl,
            None,
            &Selection::default(),
            &opts,
        )))
        .unwrap();
        let s = |i: i64| p.string_table[i as usize].as_str();
        assert_eq!(p.sample.len(), 2);
        assert_eq!(p.period, 10_000_000);
        let held = &p.sample[0];
        assert_eq!(held.value, vec![3, 30]);
        let labels: Vec<(&str, &str)> = held.label.iter().map(|l| (s(l.key), s(l.str))).collect();
        assert_eq!(
            labels,
            vec![
                ("gil_state", "held"),
                ("interpreter", "0"),
                ("thread_name", "worker")
            ]
        );
        // Innermost first: spin (line 9) then main (line 3).
        let names: Vec<(&str, i64)> = held
            .location_id
            .iter()
            .map(|id| {
                let l = &p.location[*id as usize - 1];
                let f = &p.function[l.line[0].function_id as usize - 1];
                (s(f.name), l.line[0].line)
            })
            .collect();
        assert_eq!(names, vec![("spin", 9), ("main", 3)]);
        assert_eq!(p.sample[1].value, vec![1, 10]);
    }

    #[test]
    fn a_window_is_the_difference() {
        let mut tl = model();
        let before = StackTotals::of(&tl);
        tl.apply(&Event::Run(Run {
            thread: 0,
            start_ns: 40,
            end_ns: 60,
            samples: 2,
            interpreter: 0,
            state: GilState::Held,
            on_cpu: true,
            stack: 2,
            source: Source::Sampled,
        }));
        let opts = PprofOptions {
            thread_id: true,
            ..Default::default()
        };
        let p = profile(&tl, Some(&before), &Selection::default(), &opts);
        assert_eq!(p.sample.len(), 1);
        assert_eq!(p.sample[0].value, vec![2, 20]);
        assert_eq!(p.sample[0].label.len(), 4);
        let after = StackTotals::of(&tl);
        assert!(profile(&tl, Some(&after), &Selection::default(), &opts)
            .sample
            .is_empty());
    }
}
