//! Flame graphs by GIL state, and the folded stacks behind them.
//!
//! A trace is streamed (never held whole): every [`Event::Run`] that passes
//! the filters ([`FoldOptions`]: one GIL state or all, one interpreter, one
//! thread) adds its weight — the run's duration in ns, or its sample count —
//! to its stack. The result is the classic folded format (`root;...;leaf
//! weight`, one line per stack, sorted) that [`write_collapsed`] prints and
//! [`write_svg`] draws with inferno.
//!
//! Output is deterministic: lines are sorted, colours come from a hash of the
//! frame name, and titles are built from the options (never from argv), so
//! golden files stay stable.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;
use std::str::FromStr;

use anyhow::{bail, Context, Result};

use crate::model::snapshot::GilState;
use crate::model::timeline::{Event, Frame, FrameId, Source, StackId, ThreadIdx, STATES};
use crate::trace::TraceReader;

/// Label of the frame standing for a run with no Python stack (native code,
/// or a recording made with `--no-stacks`).
pub const NO_FRAMES: &str = "[no Python frames]";

/// Which GIL state(s) to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateFilter {
    One(GilState),
    /// Every state; the state becomes the root frame (`[held]`, `[idle]`, ...).
    All,
}

impl StateFilter {
    pub fn matches(self, s: GilState) -> bool {
        match self {
            StateFilter::One(one) => one == s,
            StateFilter::All => true,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StateFilter::One(s) => s.as_str(),
            StateFilter::All => "all",
        }
    }
}

impl Default for StateFilter {
    fn default() -> Self {
        StateFilter::One(GilState::Held)
    }
}

impl FromStr for StateFilter {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "all" {
            return Ok(StateFilter::All);
        }
        STATES
            .iter()
            .find(|st| st.as_str() == s)
            .map(|st| StateFilter::One(*st))
            .ok_or_else(|| {
                format!(
                    "{s:?} is not a GIL state: held, waiting, released, idle, attached, unknown or all"
                )
            })
    }
}

impl fmt::Display for StateFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A thread, by kernel TID or by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThreadSelector {
    Tid(u32),
    Name(String),
}

impl FromStr for ThreadSelector {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("empty thread".into());
        }
        Ok(match s.parse::<u32>() {
            Ok(tid) => ThreadSelector::Tid(tid),
            Err(_) => ThreadSelector::Name(s.to_string()),
        })
    }
}

impl fmt::Display for ThreadSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ThreadSelector::Tid(t) => write!(f, "{t}"),
            ThreadSelector::Name(n) => f.write_str(n),
        }
    }
}

/// What a stack is weighted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Weight {
    /// Nanoseconds of the runs (works for sampled and exact traces).
    #[default]
    Time,
    /// Samples of the runs (sampled traces only; exact-mode runs count 0).
    Samples,
}

impl Weight {
    /// The unit inferno shows in tooltips.
    pub fn unit(self) -> &'static str {
        match self {
            Weight::Time => "ns",
            Weight::Samples => "samples",
        }
    }
}

impl FromStr for Weight {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "time" | "ns" => Ok(Weight::Time),
            "samples" => Ok(Weight::Samples),
            _ => Err(format!("{s:?}: the weight is `time` or `samples`")),
        }
    }
}

/// Which runs to keep and how to label their frames.
#[derive(Debug, Clone, Default)]
pub struct FoldOptions {
    pub state: StateFilter,
    /// Only runs in this interpreter.
    pub interpreter: Option<i64>,
    /// Only this thread.
    pub thread: Option<ThreadSelector>,
    /// Add ` [interp N]` to every frame (the interpreter the frame runs in).
    pub annotate_interpreter: bool,
    /// Leave line numbers out of frame labels (merges a function's lines).
    pub no_lines: bool,
    /// Put a `thread NAME (TID)` frame at the root of every stack.
    pub thread_roots: bool,
    pub weight: Weight,
    /// Blame: the stacks of the threads *holding* the GIL, weighted by the waiting they
    /// caused others (`flame --blame`); `thread` then selects the waiter, `state` is unused.
    pub blame: bool,
}

impl FoldOptions {
    /// A deterministic title for a flame graph of these options.
    pub fn title(&self) -> String {
        if self.blame {
            return "Stacks holding the GIL, weighted by the waiting they caused".to_string();
        }
        match self.state {
            StateFilter::One(GilState::Held) => "Python stacks holding the GIL",
            StateFilter::One(GilState::Waiting) => "Python stacks waiting for the GIL",
            StateFilter::One(GilState::Released) => "Python stacks running without the GIL",
            StateFilter::One(GilState::Idle) => "Idle Python stacks (no GIL, off CPU)",
            StateFilter::One(GilState::Attached) => {
                "Python stacks attached to a free-threaded interpreter (GIL disabled)"
            }
            StateFilter::One(GilState::Unknown) => "Python stacks in an unknown GIL state",
            StateFilter::All => "Python stacks in every GIL state",
        }
        .to_string()
    }

    /// A deterministic subtitle: the trace's file name and the filters.
    pub fn subtitle(&self, trace_name: &str) -> String {
        let interp = self
            .interpreter
            .map_or_else(|| "all".to_string(), |i| i.to_string());
        let thread = self
            .thread
            .as_ref()
            .map_or_else(|| "all".to_string(), |t| t.to_string());
        let weight = match self.weight {
            Weight::Time => "time (ns)",
            Weight::Samples => "samples",
        };
        format!(
            "{trace_name} · state {} · interpreter {interp} · thread {thread} · weighted by {weight}",
            self.state
        )
    }
}

/// A thread as the stream has named it so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ThreadInfo {
    pub tid: u32,
    pub name: String,
}

/// The interning tables of a trace being streamed: frames, stacks, threads.
/// Feed it every event with [`observe`](Self::observe).
#[derive(Debug, Clone, Default)]
pub struct Symbols {
    frames: Vec<Frame>,
    stacks: Vec<(StackId, FrameId)>,
    threads: Vec<ThreadInfo>,
}

impl Symbols {
    pub fn observe(&mut self, e: &Event) {
        match e {
            Event::Frame { id, frame } if *id as usize == self.frames.len() + 1 => {
                self.frames.push(frame.clone());
            }
            Event::Stack { id, parent, frame } if *id as usize == self.stacks.len() + 1 => {
                self.stacks.push((*parent, *frame));
            }
            Event::ThreadStart {
                thread, tid, name, ..
            } => {
                let i = *thread as usize;
                if i >= self.threads.len() {
                    self.threads.resize(i + 1, ThreadInfo::default());
                }
                self.threads[i] = ThreadInfo {
                    tid: *tid,
                    name: name.clone(),
                };
            }
            Event::ThreadName { thread, name, .. } => {
                if let Some(t) = self.threads.get_mut(*thread as usize) {
                    t.name = name.clone();
                }
            }
            _ => {}
        }
    }

    pub fn frame(&self, id: FrameId) -> Option<&Frame> {
        id.checked_sub(1).and_then(|i| self.frames.get(i as usize))
    }

    /// Every frame defined so far, by id (id 1 first).
    pub fn frames(&self) -> &[Frame] {
        &self.frames
    }

    pub fn thread(&self, idx: ThreadIdx) -> Option<&ThreadInfo> {
        self.threads.get(idx as usize)
    }

    /// The frame ids of a stack, outermost (root) first.
    pub fn stack_root_first(&self, mut id: StackId) -> Vec<FrameId> {
        let mut out = Vec::new();
        for _ in 0..=self.stacks.len() {
            let Some(&(parent, frame)) =
                id.checked_sub(1).and_then(|i| self.stacks.get(i as usize))
            else {
                break;
            };
            out.push(frame);
            id = parent;
        }
        out.reverse();
        out
    }

    /// Does thread `idx` match `sel` (by TID, or by its current name)?
    pub fn thread_matches(&self, idx: ThreadIdx, sel: &ThreadSelector) -> bool {
        let Some(t) = self.thread(idx) else {
            return false;
        };
        match sel {
            ThreadSelector::Tid(tid) => t.tid == *tid,
            ThreadSelector::Name(n) => &t.name == n,
        }
    }
}

/// A frame's label: `function (file:line)`, or `function (file)` without
/// lines, plus ` [interp N]` when annotating. `;` (the folded separator) and
/// line breaks are replaced.
pub fn frame_label(f: &Frame, no_lines: bool, annotate_interpreter: bool) -> String {
    let mut s = if f.file.is_empty() {
        f.function.clone()
    } else if no_lines || f.line <= 0 {
        format!("{} ({})", f.function, f.file)
    } else {
        format!("{} ({}:{})", f.function, f.file, f.line)
    };
    if annotate_interpreter {
        s.push_str(&format!(" [interp {}]", f.interpreter));
    }
    sanitize(&s)
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            ';' => ',',
            '\n' | '\r' | '\t' => ' ',
            c => c,
        })
        .collect()
}

/// Folded stacks: `root;...;leaf` → weight, sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Folded {
    pub stacks: BTreeMap<String, u64>,
    /// Sum of all weights.
    pub total: u64,
    /// Runs that matched the filters.
    pub runs: u64,
    /// Runs read in all.
    pub runs_seen: u64,
}

/// Fold a stream of events (e.g. a [`TraceReader`]).
pub fn fold<I, E>(events: I, opts: &FoldOptions) -> Result<Folded, E>
where
    I: IntoIterator<Item = Result<Event, E>>,
{
    type Key = (Option<ThreadIdx>, Option<GilState>, StackId);
    let mut syms = Symbols::default();
    let mut acc: HashMap<Key, u64> = HashMap::new();
    let mut out = Folded::default();
    for e in events {
        let e = e?;
        syms.observe(&e);
        let Event::Run(r) = &e else {
            continue;
        };
        if r.source == Source::Exact {
            continue; // exact runs carry no stacks (the sampled runs have them)
        }
        out.runs_seen += 1;
        if !opts.state.matches(r.state)
            || opts.interpreter.is_some_and(|i| i != r.interpreter)
            || opts
                .thread
                .as_ref()
                .is_some_and(|sel| !syms.thread_matches(r.thread, sel))
        {
            continue;
        }
        let w = match opts.weight {
            Weight::Time => r.end_ns.saturating_sub(r.start_ns),
            Weight::Samples => u64::from(r.samples),
        };
        out.runs += 1;
        if w == 0 {
            continue;
        }
        let key = (
            opts.thread_roots.then_some(r.thread),
            matches!(opts.state, StateFilter::All).then_some(r.state),
            r.stack,
        );
        let v = acc.entry(key).or_insert(0);
        *v = v.saturating_add(w);
    }
    for ((thread, state, stack), w) in acc {
        let mut parts: Vec<String> = Vec::new();
        if let Some(t) = thread {
            let info = syms.thread(t).cloned().unwrap_or_default();
            parts.push(sanitize(&format!("thread {} ({})", info.name, info.tid)));
        }
        if let Some(s) = state {
            parts.push(format!("[{}]", s.as_str()));
        }
        let frames = syms.stack_root_first(stack);
        if frames.is_empty() {
            parts.push(NO_FRAMES.to_string());
        }
        for f in frames {
            match syms.frame(f) {
                Some(fr) => parts.push(frame_label(fr, opts.no_lines, opts.annotate_interpreter)),
                None => parts.push("[unknown frame]".to_string()),
            }
        }
        let v = out.stacks.entry(parts.join(";")).or_insert(0);
        *v = v.saturating_add(w);
        out.total = out.total.saturating_add(w);
    }
    Ok(out)
}

/// Fold a trace file.
pub fn fold_file(path: &Path, opts: &FoldOptions) -> Result<Folded> {
    let reader = TraceReader::open(path)?;
    fold_reader(reader, opts)
}

/// Fold a trace through the model ([`crate::trace::replay_reader`] → [`fold_timeline`]), so
/// a flame graph weighs stacks exactly as `summary` and `view` count states: on an
/// exact-mode trace by the exact state at each moment.
pub fn fold_reader<R: Read>(reader: TraceReader<R>, opts: &FoldOptions) -> Result<Folded> {
    let replay = crate::trace::replay_reader(reader)?;
    Ok(fold_timeline(&replay.timeline, opts))
}

/// Fold the stacks of a model: every thread's time (or samples) per (GIL state,
/// interpreter, stack), filtered by `opts`. A thread is selected by its TID or its last
/// name.
pub fn fold_timeline(tl: &crate::model::timeline::Timeline, opts: &FoldOptions) -> Folded {
    if opts.blame {
        return fold_blame(tl, opts);
    }
    let mut out = Folded::default();
    // Time each thread ran collections, by (interpreter, stack at the collection's start).
    let mut gc: HashMap<(ThreadIdx, i64, StackId), (u64, u64)> = HashMap::new();
    for g in &tl.gc_runs {
        if let Some(t) = g.thread {
            let e = gc.entry((t, g.interpreter, g.stack)).or_default();
            e.0 += g.end_ns.saturating_sub(g.start_ns);
            e.1 += u64::from(g.samples);
        }
    }
    for t in &tl.threads {
        let selected = match &opts.thread {
            None => true,
            Some(ThreadSelector::Tid(tid)) => t.tid == *tid,
            Some(ThreadSelector::Name(n)) => &t.name == n,
        };
        for (&(state, interp, stack), tot) in &t.stacks {
            out.runs_seen += 1;
            if !selected
                || !opts.state.matches(state)
                || opts.interpreter.is_some_and(|i| i != interp)
            {
                continue;
            }
            out.runs += 1;
            let mut w = match opts.weight {
                Weight::Time => tot.ns,
                Weight::Samples => tot.samples,
            };
            if w == 0 {
                continue;
            }
            // The part of a held (attached) stack spent collecting gets a `<GC>` leaf.
            let mut gc_w = 0;
            if matches!(state, GilState::Held | GilState::Attached) {
                if let Some(g) = gc.get_mut(&(t.idx, interp, stack)) {
                    let left = match opts.weight {
                        Weight::Time => &mut g.0,
                        Weight::Samples => &mut g.1,
                    };
                    gc_w = (*left).min(w);
                    *left -= gc_w;
                    w -= gc_w;
                }
            }
            let mut parts: Vec<String> = Vec::new();
            if opts.thread_roots {
                parts.push(sanitize(&format!("thread {} ({})", t.name, t.tid)));
            }
            if matches!(opts.state, StateFilter::All) {
                parts.push(format!("[{}]", state.as_str()));
            }
            let frames = tl.stack_frames(stack);
            if frames.is_empty() {
                parts.push(NO_FRAMES.to_string());
            }
            for f in frames.into_iter().rev() {
                parts.push(frame_label(f, opts.no_lines, opts.annotate_interpreter));
            }
            if w > 0 {
                let v = out.stacks.entry(parts.join(";")).or_insert(0);
                *v = v.saturating_add(w);
                out.total = out.total.saturating_add(w);
            }
            if gc_w > 0 {
                parts.push(GC_FRAME.to_string());
                let v = out.stacks.entry(parts.join(";")).or_insert(0);
                *v = v.saturating_add(gc_w);
                out.total = out.total.saturating_add(gc_w);
            }
        }
    }
    out
}

/// The leaf frame of time spent in a garbage collection.
pub const GC_FRAME: &str = "<GC>";

/// `flame --blame`: each holder stack weighted by the waiting it caused (time only: waits
/// have no samples); `--thread` picks the waiter, `--thread-roots` starts each stack with
/// `waiter NAME (TID)`, and the holder is the frame below: `holder NAME (TID)`.
fn fold_blame(tl: &crate::model::timeline::Timeline, opts: &FoldOptions) -> Folded {
    let mut out = Folded::default();
    for b in crate::analysis::blame::blame(tl) {
        out.runs_seen += 1;
        let Some(waiter) = tl.threads.get(b.waiter as usize) else {
            continue;
        };
        let selected = match &opts.thread {
            None => true,
            Some(ThreadSelector::Tid(tid)) => waiter.tid == *tid,
            Some(ThreadSelector::Name(n)) => &waiter.name == n,
        };
        if !selected || opts.interpreter.is_some_and(|i| i != b.interpreter) {
            continue;
        }
        out.runs += 1;
        let holder = b.holder.and_then(|h| tl.threads.get(h as usize));
        for (hs, ns) in b.stacks {
            let mut parts: Vec<String> = Vec::new();
            if opts.thread_roots {
                parts.push(sanitize(&format!(
                    "waiter {} ({})",
                    waiter.name, waiter.tid
                )));
            }
            parts.push(match holder {
                Some(h) => sanitize(&format!("holder {} ({})", h.name, h.tid)),
                None => "[holder unknown]".to_string(),
            });
            let frames = tl.stack_frames(hs.stack);
            if frames.is_empty() && !hs.gc {
                parts.push(NO_FRAMES.to_string());
            }
            for f in frames.into_iter().rev() {
                parts.push(frame_label(f, opts.no_lines, opts.annotate_interpreter));
            }
            if hs.gc {
                parts.push(GC_FRAME.to_string());
            }
            let v = out.stacks.entry(parts.join(";")).or_insert(0);
            *v = v.saturating_add(ns);
            out.total = out.total.saturating_add(ns);
        }
    }
    out
}

/// Print folded stacks, one `stack weight` line each, sorted.
pub fn write_collapsed(out: &mut dyn Write, folded: &Folded) -> io::Result<()> {
    for (stack, w) in &folded.stacks {
        writeln!(out, "{stack} {w}")?;
    }
    Ok(())
}

/// Draw `folded` as an SVG flame graph (inferno, deterministic options).
pub fn write_svg(
    out: &mut dyn Write,
    folded: &Folded,
    opts: &FoldOptions,
    trace_name: &str,
) -> Result<()> {
    if folded.stacks.is_empty() && opts.blame {
        bail!(
            "nothing to draw: no thread of {trace_name} was seen waiting for a GIL{} (waits are \
             seen in exact mode, on Python 3.15+, or while a waiter sleeps in take_gil)",
            opts.thread
                .as_ref()
                .map_or_else(String::new, |t| format!(" (waiter {t})")),
        );
    }
    if folded.stacks.is_empty() {
        bail!(
            "nothing to draw: no run of {} matched (state {}, interpreter {}, thread {})",
            trace_name,
            opts.state,
            opts.interpreter
                .map_or_else(|| "any".to_string(), |i| i.to_string()),
            opts.thread
                .as_ref()
                .map_or_else(|| "any".to_string(), |t| t.to_string()),
        );
    }
    let mut o = inferno::flamegraph::Options::default();
    o.title = opts.title();
    o.subtitle = Some(opts.subtitle(trace_name));
    o.count_name = opts.weight.unit().to_string();
    o.name_type = "Frame:".to_string();
    o.colors = inferno::flamegraph::color::Palette::Multi(
        inferno::flamegraph::color::MultiPalette::Python,
    );
    o.hash = true;
    o.deterministic = true;
    o.image_width = Some(1200);
    let lines: Vec<String> = folded
        .stacks
        .iter()
        .map(|(s, w)| format!("{s} {w}"))
        .collect();
    inferno::flamegraph::from_lines(&mut o, lines.iter().map(String::as_str), out)
        .context("drawing the flame graph")?;
    Ok(())
}

/// The file name shown in titles: the trace's base name.
pub fn trace_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// Open an output file (`-` is stdout), buffered.
pub fn create_output(path: &Path) -> Result<Box<dyn Write>> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(BufWriter::new(io::stdout())));
    }
    let f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    Ok(Box::new(BufWriter::new(f)))
}

/// `gilscope flame`: the flame graph of `trace` into `svg`. Returns the
/// folded stacks drawn.
pub fn flame_file(trace: &Path, svg: &Path, opts: &FoldOptions) -> Result<Folded> {
    let folded = fold_file(trace, opts)?;
    let mut out = create_output(svg)?;
    write_svg(&mut out, &folded, opts, &trace_name(trace))?;
    out.flush()
        .with_context(|| format!("writing {}", svg.display()))?;
    Ok(folded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::timeline::{Run, Source};

    fn frame(id: FrameId, f: &str, interp: i64) -> Event {
        Event::Frame {
            id,
            frame: Frame {
                function: f.into(),
                file: "a.py".into(),
                line: id as i32,
                interpreter: interp,
            },
        }
    }

    fn run(thread: u32, s: u64, e: u64, state: GilState, stack: StackId) -> Event {
        Event::Run(Run {
            thread,
            start_ns: s,
            end_ns: e,
            samples: 1,
            interpreter: 0,
            state,
            on_cpu: true,
            stack,
            source: Source::Sampled,
        })
    }

    fn events() -> Vec<Result<Event, ()>> {
        let v = vec![
            frame(1, "main", 0),
            frame(2, "work;x", 1),
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
                tid: 10,
                start_ticks: 1,
                name: "T".into(),
                os_name: String::new(),
            },
            run(0, 0, 10, GilState::Held, 2),
            run(0, 10, 15, GilState::Held, 1),
            run(0, 15, 45, GilState::Idle, 2),
            run(0, 45, 50, GilState::Held, 2),
            run(0, 50, 51, GilState::Held, 0),
        ];
        v.into_iter().map(Ok).collect()
    }

    #[test]
    fn folds_root_first_weighted_by_time_and_sorted() {
        let f = fold(events(), &FoldOptions::default()).unwrap();
        let mut out = Vec::new();
        write_collapsed(&mut out, &f).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "[no Python frames] 1\nmain (a.py:1) 5\nmain (a.py:1);work,x (a.py:2) 15\n"
        );
        assert_eq!(f.total, 21);
    }

    #[test]
    fn all_states_put_the_state_at_the_root_and_annotate() {
        let opts = FoldOptions {
            state: StateFilter::All,
            annotate_interpreter: true,
            no_lines: true,
            thread_roots: true,
            weight: Weight::Samples,
            ..FoldOptions::default()
        };
        let f = fold(events(), &opts).unwrap();
        assert_eq!(
            f.stacks
                .get("thread T (10);[idle];main (a.py) [interp 0];work,x (a.py) [interp 1]"),
            Some(&1)
        );
        assert_eq!(f.total, 5);
    }

    #[test]
    fn filters_by_thread() {
        let opts = FoldOptions {
            thread: Some(ThreadSelector::Tid(11)),
            ..FoldOptions::default()
        };
        assert!(fold(events(), &opts).unwrap().stacks.is_empty());
        let opts = FoldOptions {
            thread: Some("T".parse().unwrap()),
            ..FoldOptions::default()
        };
        assert_eq!(fold(events(), &opts).unwrap().total, 21);
        assert!("bogus".parse::<StateFilter>().is_err());
    }

    /// A flame graph weighs each thread's stacks by the model's state: on a real exact-mode
    /// recording (tests/golden/outputs/contention-exact-3.12.trace) each thread's held
    /// stacks add up to the held time `summary` reports, for every state.
    #[test]
    fn flame_weights_are_the_models_states_on_an_exact_trace() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden/outputs/contention-exact-3.12.trace");
        let replay = crate::trace::replay(&path).expect("fixture reads");
        let tl = &replay.timeline;
        assert!(tl.threads.iter().any(|t| t.exact));
        for state in crate::model::timeline::STATES {
            let opts = FoldOptions {
                state: StateFilter::One(state),
                thread_roots: true,
                ..FoldOptions::default()
            };
            let folded = fold_file(&path, &opts).expect("folds");
            for t in &tl.threads {
                let root = format!("thread {} ({})", t.name, t.tid);
                let flame: u64 = folded
                    .stacks
                    .iter()
                    .filter(|(k, _)| k.split(';').next() == Some(root.as_str()))
                    .map(|(_, w)| *w)
                    .sum();
                assert_eq!(
                    flame,
                    t.state(state).ns,
                    "{} {state:?}: flame graph {flame} ns, model {} ns",
                    t.name,
                    t.state(state).ns
                );
            }
        }
    }
}
