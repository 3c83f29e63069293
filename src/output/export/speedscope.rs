//! speedscope's file format (<https://www.speedscope.app/file-format-schema.json>):
//! one `sampled` profile per thread.
//!
//! Each run of a thread is one sample, weighted by its duration in ns (or by
//! its sample count with `--weight samples`); consecutive identical runs are
//! merged. Stacks are listed root first. With `--state all` (the default
//! here) the outermost frame is the GIL state (`[held]`, `[idle]`, ...); runs
//! the filters leave out, and gaps in the recording, become samples with an
//! empty stack, so the "Time Order" view keeps real time and each profile's
//! `startValue`/`endValue` are the thread's first and last observed
//! instants (ns since the trace's first sample).
//!
//! Only the interning tables and, per thread, one `(stack, weight)` pair per
//! change of stack are held while streaming.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};

use anyhow::Result;

use super::json_str;
use crate::model::snapshot::GilState;
use crate::model::timeline::{Event, Source, StackId, ThreadIdx, Timeline, STATES};
use crate::output::flame::{FoldOptions, StateFilter, Symbols, Weight, NO_FRAMES};
use crate::trace::TraceReader;

pub const SCHEMA: &str = "https://www.speedscope.app/file-format-schema.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Gap,
    Stack(Option<GilState>, StackId),
}

#[derive(Default)]
struct Profile {
    start: Option<u64>,
    end: u64,
    samples: Vec<(Key, u64)>,
}

impl Profile {
    fn push(&mut self, key: Key, weight: u64) {
        if weight == 0 {
            return;
        }
        match self.samples.last_mut() {
            Some((k, w)) if *k == key => *w = w.saturating_add(weight),
            _ => self.samples.push((key, weight)),
        }
    }
}

/// Write the trace in speedscope's format.
///
/// With `model` (the same trace replayed), the runs of a thread with exact runs carry the
/// model's (exact) states ([`Timeline::as_modelled`]), so `--state` filters by them.
pub fn write<R: Read>(
    mut reader: TraceReader<R>,
    name: &str,
    opts: &FoldOptions,
    model: Option<&Timeline>,
    out: &mut dyn Write,
) -> Result<()> {
    let base_meta = reader.metadata().clock.start_ns;
    let mut base: Option<u64> = (base_meta != 0).then_some(base_meta);
    let mut syms = Symbols::default();
    let mut profiles: BTreeMap<ThreadIdx, Profile> = BTreeMap::new();
    while let Some(e) = reader.next_event()? {
        syms.observe(&e);
        let Event::Run(run) = &e else {
            continue;
        };
        if run.source == Source::Exact {
            continue; // exact runs carry no stacks (the sampled runs have them)
        }
        let pieces = match model {
            Some(tl) => tl.as_modelled(run),
            None => vec![run.clone()],
        };
        for r in &pieces {
            let base = *base.get_or_insert(r.start_ns);
            if opts
                .thread
                .as_ref()
                .is_some_and(|sel| !syms.thread_matches(r.thread, sel))
            {
                continue;
            }
            let p = profiles.entry(r.thread).or_default();
            let start = r.start_ns.saturating_sub(base);
            let end = r.end_ns.saturating_sub(base);
            let keep =
                opts.state.matches(r.state) && opts.interpreter.is_none_or(|i| i == r.interpreter);
            let key = if keep {
                let state = matches!(opts.state, StateFilter::All).then_some(r.state);
                Key::Stack(state, r.stack)
            } else {
                Key::Gap
            };
            match opts.weight {
                Weight::Time => {
                    if p.start.is_none() {
                        p.start = Some(start);
                    } else if start > p.end {
                        p.push(Key::Gap, start - p.end);
                    }
                    let from = start.max(p.end);
                    if end > from {
                        p.push(key, end - from);
                    }
                }
                Weight::Samples => {
                    p.start.get_or_insert(0);
                    if key != Key::Gap {
                        p.push(key, u64::from(r.samples));
                    }
                }
            }
            p.end = p.end.max(end);
        }
    }

    // A recording whose mode or rate changed (the overhead budget) says so in its name.
    let periods = model.map_or_else(String::new, |tl| {
        let p = crate::trace::periods::periods(reader.metadata(), tl);
        if p.len() > 1 {
            format!(" — {}", crate::trace::periods::describe(&p))
        } else {
            String::new()
        }
    });
    // Frame indices: our frames (id - 1), then the state roots, then "no frames".
    let n = syms.frames().len();
    let state_idx = |s: GilState| n + STATES.iter().position(|x| *x == s).unwrap_or(5);
    let no_frames_idx = n + STATES.len();
    writeln!(
        out,
        "{{\"$schema\":{},\"exporter\":{},\"name\":{},\"activeProfileIndex\":0,",
        json_str(SCHEMA),
        json_str(&format!("gilscope {}", env!("CARGO_PKG_VERSION"))),
        json_str(&format!("{name} (state {}){periods}", opts.state)),
    )?;
    writeln!(out, "\"shared\":{{\"frames\":[")?;
    let mut first = true;
    let mut frame_line = |out: &mut dyn Write, body: String| -> std::io::Result<()> {
        if !first {
            out.write_all(b",\n")?;
        }
        first = false;
        out.write_all(body.as_bytes())
    };
    for f in syms.frames() {
        let mut label = f.function.clone();
        if opts.annotate_interpreter {
            label.push_str(&format!(" [interp {}]", f.interpreter));
        }
        let mut body = format!("{{\"name\":{}", json_str(&label));
        if !f.file.is_empty() {
            body.push_str(&format!(",\"file\":{}", json_str(&f.file)));
        }
        if f.line > 0 && !opts.no_lines {
            body.push_str(&format!(",\"line\":{}", f.line));
        }
        body.push('}');
        frame_line(out, body)?;
    }
    for s in STATES {
        frame_line(out, format!("{{\"name\":\"[{}]\"}}", s.as_str()))?;
    }
    frame_line(out, format!("{{\"name\":{}}}", json_str(NO_FRAMES)))?;
    writeln!(out, "\n]}},\n\"profiles\":[")?;
    let mut cache: HashMap<StackId, String> = HashMap::new();
    let mut first_profile = true;
    for (thread, p) in &profiles {
        if p.samples.iter().all(|(k, _)| *k == Key::Gap) {
            continue;
        }
        let info = syms.thread(*thread).cloned().unwrap_or_default();
        let start = p.start.unwrap_or(0);
        let total: u64 = p.samples.iter().map(|(_, w)| *w).sum();
        let (unit, end) = match opts.weight {
            Weight::Time => ("nanoseconds", p.end),
            Weight::Samples => ("none", start + total),
        };
        if !first_profile {
            out.write_all(b",\n")?;
        }
        first_profile = false;
        write!(
            out,
            "{{\"type\":\"sampled\",\"name\":{},\"unit\":\"{unit}\",\"startValue\":{start},\"endValue\":{end},\n\"samples\":[",
            json_str(&format!("{} ({})", info.name, info.tid))
        )?;
        for (i, (k, _)) in p.samples.iter().enumerate() {
            if i > 0 {
                out.write_all(b",")?;
            }
            let stack = match k {
                Key::Gap => String::new(),
                Key::Stack(state, stack) => {
                    let frames = cache.entry(*stack).or_insert_with(|| {
                        let ids = syms.stack_root_first(*stack);
                        if ids.is_empty() {
                            no_frames_idx.to_string()
                        } else {
                            ids.iter()
                                .map(|id| (*id as usize - 1).to_string())
                                .collect::<Vec<_>>()
                                .join(",")
                        }
                    });
                    match state {
                        Some(s) => format!("{},{frames}", state_idx(*s)),
                        None => frames.clone(),
                    }
                }
            };
            write!(out, "[{stack}]")?;
        }
        out.write_all(b"],\n\"weights\":[")?;
        for (i, (_, w)) in p.samples.iter().enumerate() {
            if i > 0 {
                out.write_all(b",")?;
            }
            write!(out, "{w}")?;
        }
        out.write_all(b"]}")?;
    }
    out.write_all(b"\n]}\n")?;
    Ok(())
}
