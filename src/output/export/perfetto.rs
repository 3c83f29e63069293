//! Chrome trace-event JSON, the format Perfetto (ui.perfetto.dev) and
//! chrome://tracing open.
//!
//! * one process per interpreter (`pid` = interpreter id + 1, named
//!   `Interpreter N (main|sub-interpreter, own|shared GIL)`);
//! * one thread track per thread and interpreter it ran in (`tid` = the
//!   kernel TID, named after the thread), holding a flame chart: the GIL
//!   state (`held`, `waiting`, `released`, `attached`, `unknown`) is the
//!   outermost slice and the sampled Python stack is nested inside it, one
//!   slice per frame, merged across consecutive samples. Idle time (no GIL,
//!   off CPU) is left empty, as are gaps in the recording;
//! * one counter per GIL, `GIL N busy %`: the share of each 10 ms window the
//!   lock was taken, on the process of the lowest interpreter using it;
//! * one counter `threads holding a GIL` (`holding`, `on_cpu`) on the main interpreter's
//!   process: how many threads held a GIL (free-threaded, GIL off: were attached) and how many
//!   were on a CPU, at each change (the model's parallelism curve);
//! * garbage collections as `GC` slices on a `garbage collector` track in the interpreter's
//!   process (`tid` = [`GC_TID`] + interpreter id), with the thread that ran each and the line
//!   that triggered it;
//! * exact mode: a flow arrow (`hand-over`) from the thread that dropped a GIL while another
//!   waited to the thread that took it next;
//! * the recording's periods (the overhead budget's switches: `exact`, `sampled 50 Hz`) as
//!   slices on a `gilscope recording` track of the main interpreter's process (`tid` =
//!   [`MODE_TID`]), each with the reason it began; `otherData.periods` says the same in one line;
//! * sample errors as global instant events.
//!
//! Times (`ts`, `dur`) are microseconds since the trace's first sample.
//! Events are streamed: a thread's slices are held only until its state
//! slice closes, then written parent-first.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};

use anyhow::Result;

use super::{json_str, micros};
use crate::model::snapshot::GilState;
use crate::model::timeline::{Event, GilIdx, GilRun, Run, Source, ThreadIdx, Timeline, STATES};
use crate::output::flame::{Symbols, NO_FRAMES};
use crate::trace::periods::Period;
use crate::trace::TraceReader;

/// Width of the GIL busy-% windows.
pub const BUSY_WINDOW_NS: u64 = 10_000_000;

/// `tid` of the garbage-collector track of an interpreter (plus its id).
pub const GC_TID: i64 = 1 << 40;

/// `tid` of the track holding the recording's periods (exact / sampled at a rate).
pub const MODE_TID: i64 = 1 << 41;

/// The `pid` of an interpreter's process track.
pub fn pid_of(interpreter: i64) -> i64 {
    interpreter.saturating_add(1)
}

struct Open {
    key: u64,
    start: u64,
    samples: u64,
}

struct Closed {
    start: u64,
    end: u64,
    depth: usize,
    key: u64,
    samples: u64,
}

#[derive(Default)]
struct Track {
    pid: i64,
    open: Vec<Open>,
    closed: Vec<Closed>,
    last_end: u64,
    /// Processes this thread has a named track in.
    named_in: BTreeSet<i64>,
}

#[derive(Default)]
struct Busy {
    window: u64,
    observed: u64,
    locked: u64,
}

struct Out<'a> {
    w: &'a mut dyn Write,
    first: bool,
    base: u64,
}

impl Out<'_> {
    fn event(&mut self, body: &str) -> io::Result<()> {
        if self.first {
            self.first = false;
            self.w.write_all(b"\n")?;
        } else {
            self.w.write_all(b",\n")?;
        }
        self.w.write_all(body.as_bytes())
    }

    fn ts(&self, ns: u64) -> String {
        micros(ns.saturating_sub(self.base))
    }
}

struct Exporter<'a> {
    out: Out<'a>,
    syms: Symbols,
    tracks: BTreeMap<ThreadIdx, Track>,
    processes: BTreeMap<i64, String>,
    gil_owner: BTreeMap<GilIdx, i64>,
    busy: BTreeMap<GilIdx, Busy>,
}

/// State keys sort before frame keys (frame ids start at 1).
const STATE_KEY: u64 = 1 << 40;

fn state_key(s: GilState) -> u64 {
    STATE_KEY + STATES.iter().position(|x| *x == s).unwrap_or(5) as u64
}

impl Exporter<'_> {
    fn process(&mut self, interpreter: i64, label: Option<String>) -> io::Result<()> {
        let pid = pid_of(interpreter);
        let name = label.unwrap_or_else(|| format!("Interpreter {interpreter}"));
        if self.processes.get(&pid) == Some(&name) {
            return Ok(());
        }
        let first = !self.processes.contains_key(&pid);
        self.processes.insert(pid, name.clone());
        self.out.event(&format!(
            r#"{{"ph":"M","name":"process_name","pid":{pid},"tid":0,"args":{{"name":{}}}}}"#,
            json_str(&name)
        ))?;
        if first {
            self.out.event(&format!(
                r#"{{"ph":"M","name":"process_sort_index","pid":{pid},"tid":0,"args":{{"sort_index":{interpreter}}}}}"#
            ))?;
        }
        Ok(())
    }

    fn thread_name(&mut self, thread: ThreadIdx, pid: i64) -> io::Result<()> {
        let info = self.syms.thread(thread).cloned().unwrap_or_default();
        let name = if info.name.is_empty() {
            format!("thread {}", info.tid)
        } else {
            format!("{} ({})", info.name, info.tid)
        };
        self.out.event(&format!(
            r#"{{"ph":"M","name":"thread_name","pid":{pid},"tid":{},"args":{{"name":{}}}}}"#,
            info.tid,
            json_str(&name)
        ))?;
        self.out.event(&format!(
            r#"{{"ph":"M","name":"thread_sort_index","pid":{pid},"tid":{},"args":{{"sort_index":{thread}}}}}"#,
            info.tid
        ))
    }

    fn close_to(&mut self, thread: ThreadIdx, depth: usize, at: u64) -> io::Result<()> {
        let Some(t) = self.tracks.get_mut(&thread) else {
            return Ok(());
        };
        while t.open.len() > depth {
            let o = t.open.pop().expect("non-empty");
            t.closed.push(Closed {
                start: o.start,
                end: at,
                depth: t.open.len(),
                key: o.key,
                samples: o.samples,
            });
        }
        if !t.open.is_empty() || t.closed.is_empty() {
            return Ok(());
        }
        let mut closed = std::mem::take(&mut t.closed);
        let pid = t.pid;
        closed.sort_by_key(|c| (c.start, c.depth));
        let tid = self.syms.thread(thread).map_or(0, |i| i.tid);
        for c in &closed {
            let (name, cat, args) = if c.key >= STATE_KEY {
                let s = STATES[(c.key - STATE_KEY) as usize];
                (
                    s.as_str().to_string(),
                    "gil",
                    format!(r#"{{"samples":{}}}"#, c.samples),
                )
            } else if c.key == 0 {
                (NO_FRAMES.to_string(), "stack", "{}".to_string())
            } else {
                match self.syms.frame(c.key as u32) {
                    Some(f) => (
                        f.function.clone(),
                        "stack",
                        format!(
                            r#"{{"file":{},"line":{},"interpreter":{}}}"#,
                            json_str(&f.file),
                            f.line,
                            f.interpreter
                        ),
                    ),
                    None => ("[unknown frame]".to_string(), "stack", "{}".to_string()),
                }
            };
            let body = format!(
                r#"{{"ph":"X","cat":"{cat}","name":{},"pid":{pid},"tid":{tid},"ts":{},"dur":{},"args":{args}}}"#,
                json_str(&name),
                self.out.ts(c.start),
                micros(c.end.saturating_sub(c.start)),
            );
            self.out.event(&body)?;
        }
        Ok(())
    }

    fn run(&mut self, r: &Run) -> io::Result<()> {
        let pid = pid_of(r.interpreter);
        if !self.processes.contains_key(&pid) {
            self.process(r.interpreter, None)?;
        }
        let t = self.tracks.entry(r.thread).or_default();
        let broken = t.pid != pid || t.last_end != r.start_ns;
        if broken || r.state == GilState::Idle {
            let end = t.last_end;
            self.close_to(r.thread, 0, end)?;
        }
        let t = self.tracks.entry(r.thread).or_default();
        t.pid = pid;
        t.last_end = r.end_ns;
        if r.state == GilState::Idle {
            return Ok(());
        }
        if t.named_in.insert(pid) {
            self.thread_name(r.thread, pid)?;
        }
        let mut path = vec![state_key(r.state)];
        path.extend(
            self.syms
                .stack_root_first(r.stack)
                .into_iter()
                .map(u64::from),
        );
        let t = self.tracks.entry(r.thread).or_default();
        let common = t
            .open
            .iter()
            .zip(&path)
            .take_while(|(o, k)| o.key == **k)
            .count();
        self.close_to(r.thread, common, r.start_ns)?;
        let t = self.tracks.entry(r.thread).or_default();
        for &key in &path[common..] {
            t.open.push(Open {
                key,
                start: r.start_ns,
                samples: 0,
            });
        }
        t.open[0].samples += u64::from(r.samples);
        Ok(())
    }

    fn emit_busy(&mut self, gil: GilIdx) -> io::Result<()> {
        let Some(b) = self.busy.get(&gil) else {
            return Ok(());
        };
        if b.observed == 0 {
            return Ok(());
        }
        let tenths =
            (u128::from(b.locked) * 1000 + u128::from(b.observed) / 2) / u128::from(b.observed);
        let ts = micros(b.window * BUSY_WINDOW_NS);
        let pid = pid_of(self.gil_owner.get(&gil).copied().unwrap_or(0));
        self.out.event(&format!(
            r#"{{"ph":"C","name":"GIL {gil} busy %","pid":{pid},"tid":0,"ts":{ts},"args":{{"busy":{}.{}}}}}"#,
            tenths / 10,
            tenths % 10
        ))
    }

    fn gil_run(&mut self, g: &GilRun) -> io::Result<()> {
        let mut s = g.start_ns.saturating_sub(self.out.base);
        let e = g.end_ns.saturating_sub(self.out.base);
        while s < e {
            let window = s / BUSY_WINDOW_NS;
            let piece_end = e.min((window + 1) * BUSY_WINDOW_NS);
            let cur = self.busy.get(&g.gil).map(|b| b.window);
            if cur != Some(window) {
                self.emit_busy(g.gil)?;
                self.busy.insert(
                    g.gil,
                    Busy {
                        window,
                        ..Busy::default()
                    },
                );
            }
            let b = self.busy.get_mut(&g.gil).expect("inserted");
            b.observed += piece_end - s;
            if g.enabled && g.locked {
                b.locked += piece_end - s;
            }
            s = piece_end;
        }
        Ok(())
    }

    fn event(&mut self, e: &Event) -> io::Result<()> {
        self.syms.observe(e);
        match e {
            Event::Interpreter {
                id,
                main,
                own_gil,
                gil,
                ..
            } => {
                let owner = self.gil_owner.entry(*gil).or_insert(*id);
                *owner = (*owner).min(*id);
                let kind = if *main { "main" } else { "sub-interpreter" };
                let g = if *own_gil { "own GIL" } else { "shared GIL" };
                self.process(*id, Some(format!("Interpreter {id} ({kind}, {g} {gil})")))?;
            }
            Event::ThreadName { thread, .. } => {
                let pids: Vec<i64> = self
                    .tracks
                    .get(thread)
                    .map(|t| t.named_in.iter().copied().collect())
                    .unwrap_or_default();
                for pid in pids {
                    self.thread_name(*thread, pid)?;
                }
            }
            Event::ThreadEnd { thread, .. } => {
                let end = self.tracks.get(thread).map_or(0, |t| t.last_end);
                self.close_to(*thread, 0, end)?;
            }
            // State slices nest stacks, which only sampled runs have: exact runs are
            // left out (one source per track).
            Event::Run(r) if r.source == Source::Exact => {}
            Event::Run(r) => self.run(r)?,
            Event::GilRun(g) => self.gil_run(g)?,
            Event::SampleError { time_ns, message } => {
                let body = format!(
                    r#"{{"ph":"i","s":"g","cat":"error","name":"sample error","pid":1,"tid":0,"ts":{},"args":{{"message":{}}}}}"#,
                    self.out.ts(*time_ns),
                    json_str(message)
                );
                self.out.event(&body)?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// The tracks drawn from the model: the recording's periods, the parallelism counter, GC
/// slices, hand-over flows.
fn write_model_tracks(out: &mut Out<'_>, tl: &Timeline, periods: &[Period]) -> io::Result<()> {
    let main_pid = pid_of(
        tl.interpreters
            .values()
            .find(|i| i.main)
            .map_or(0, |i| i.id),
    );
    out.event(&format!(
        r#"{{"ph":"M","name":"thread_name","pid":{main_pid},"tid":{MODE_TID},"args":{{"name":"gilscope recording"}}}}"#
    ))?;
    for p in periods {
        let name = match p.mode {
            Source::Exact => "exact".to_string(),
            Source::Sampled => format!("sampled {:.0} Hz", p.rate_hz),
        };
        out.event(&format!(
            r#"{{"ph":"X","cat":"gilscope","name":{},"pid":{main_pid},"tid":{MODE_TID},"ts":{},"dur":{},"args":{{"rate_hz":{},"reason":{}}}}}"#,
            json_str(&name),
            out.ts(p.start_ns),
            micros(p.end_ns.saturating_sub(p.start_ns)),
            p.rate_hz,
            json_str(&p.reason)
        ))?;
    }
    for st in crate::analysis::parallel::steps(tl) {
        let body = format!(
            r#"{{"ph":"C","name":"threads holding a GIL","pid":{main_pid},"tid":0,"ts":{},"args":{{"holding":{},"on_cpu":{}}}}}"#,
            out.ts(st.time_ns),
            st.holders,
            st.on_cpu
        );
        out.event(&body)?;
    }
    let mut gc_tracks = BTreeSet::new();
    for g in &tl.gc_runs {
        let (pid, tid) = (pid_of(g.interpreter), GC_TID + g.interpreter);
        if gc_tracks.insert(g.interpreter) {
            out.event(&format!(
                r#"{{"ph":"M","name":"thread_name","pid":{pid},"tid":{tid},"args":{{"name":"garbage collector"}}}}"#
            ))?;
        }
        let thread = g.thread.and_then(|t| tl.threads.get(t as usize));
        let trigger = tl
            .stack_frames(g.stack)
            .first()
            .map_or_else(String::new, |f| {
                format!("{} ({}:{})", f.function, f.file, f.line)
            });
        let body = format!(
            r#"{{"ph":"X","cat":"gc","name":"GC","pid":{pid},"tid":{tid},"ts":{},"dur":{},"args":{{"thread":{},"tid":{},"triggered_at":{}}}}}"#,
            out.ts(g.start_ns),
            micros(g.end_ns.saturating_sub(g.start_ns)),
            json_str(thread.map_or("", |t| t.name.as_str())),
            thread.map_or_else(|| "null".to_string(), |t| t.tid.to_string()),
            json_str(&trigger)
        );
        out.event(&body)?;
    }
    // Hand-over flows: from the dropping thread's slice to the taking thread's.
    let interp_at = |t: ThreadIdx, at: u64| -> i64 {
        tl.threads.get(t as usize).map_or(0, |th| {
            let i = th.intervals.partition_point(|i| i.end_ns <= at);
            th.intervals
                .get(i)
                .or(th.intervals.last())
                .map_or(0, |iv| iv.interpreter)
        })
    };
    let mut id = 0u64;
    for h in crate::analysis::parallel::handovers(tl).values() {
        for &(drop, latency, from, to) in &h.each {
            let (Some(f), Some(t)) = (tl.threads.get(from as usize), tl.threads.get(to as usize))
            else {
                continue;
            };
            id += 1;
            let take = drop + latency;
            out.event(&format!(
                r#"{{"ph":"s","cat":"handover","name":"hand-over","id":{id},"pid":{},"tid":{},"ts":{}}}"#,
                pid_of(interp_at(from, drop.saturating_sub(1))),
                f.tid,
                out.ts(drop.saturating_sub(1_000))
            ))?;
            out.event(&format!(
                r#"{{"ph":"f","bp":"e","cat":"handover","name":"hand-over","id":{id},"pid":{},"tid":{},"ts":{}}}"#,
                pid_of(interp_at(to, take)),
                t.tid,
                out.ts(take)
            ))?;
        }
    }
    Ok(())
}

/// Write the whole trace as Chrome trace-event JSON. `name` (the trace's
/// file name) goes into `otherData`.
///
/// With `model` (the same trace replayed), the state slices of a thread with exact runs
/// show the model's (exact) states ([`Timeline::as_modelled`]).
pub fn write<R: Read>(
    mut reader: TraceReader<R>,
    name: &str,
    model: Option<&Timeline>,
    out: &mut dyn Write,
) -> Result<()> {
    let meta = reader.metadata().clone();
    out.write_all(b"{\"displayTimeUnit\":\"ms\",\"traceEvents\":[")?;
    let mut ex = Exporter {
        out: Out {
            w: out,
            first: true,
            base: meta.clock.start_ns,
        },
        syms: Symbols::default(),
        tracks: BTreeMap::new(),
        processes: BTreeMap::new(),
        gil_owner: BTreeMap::new(),
        busy: BTreeMap::new(),
    };
    let mut first_time = true;
    while let Some(e) = reader.next_event()? {
        if first_time && meta.clock.start_ns == 0 {
            if let Some(t) = e.time_ns() {
                let start = match &e {
                    Event::Run(r) => r.start_ns,
                    Event::GilRun(g) => g.start_ns,
                    _ => t,
                };
                ex.out.base = start;
                first_time = false;
            }
        }
        match (&e, model) {
            (Event::Run(r), Some(tl)) => {
                for piece in tl.as_modelled(r) {
                    ex.event(&Event::Run(piece))?;
                }
            }
            _ => ex.event(&e)?,
        }
    }
    let threads: Vec<ThreadIdx> = ex.tracks.keys().copied().collect();
    for t in threads {
        let end = ex.tracks[&t].last_end;
        ex.close_to(t, 0, end)?;
    }
    let gils: Vec<GilIdx> = ex.busy.keys().copied().collect();
    for g in gils {
        ex.emit_busy(g)?;
    }
    let mut periods_text = String::new();
    if let Some(tl) = model {
        let periods = crate::trace::periods::periods(&meta, tl);
        periods_text = crate::trace::periods::describe(&periods);
        write_model_tracks(&mut ex.out, tl, &periods)?;
    }
    let python = meta.python.as_ref().map_or("", |p| p.version.as_str());
    let w = ex.out.w;
    write!(
        w,
        "\n],\"otherData\":{{\"exporter\":{},\"trace\":{},\"pid\":\"{}\",\"python\":{},\"periods\":{},\"complete\":\"{}\"}}}}\n",
        json_str(&format!("gilscope {}", env!("CARGO_PKG_VERSION"))),
        json_str(name),
        meta.target.pid,
        json_str(python),
        json_str(&periods_text),
        reader.complete()
    )?;
    Ok(())
}
