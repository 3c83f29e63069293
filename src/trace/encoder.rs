//! Snapshots → events: turns the sampler's consecutive readings into runs.
//!
//! A thread's run extends while consecutive samples agree on interpreter,
//! GIL state, on-CPU and stack. One sample stands for one sampling period:
//! it lasts until the next sample is taken (or a sample fails, or the
//! recording ends at `last sample + period`). The same holds for each GIL
//! (locked, holder, `switch_number`). Frames and stacks are interned here.
//!
//! Pure: the live recorder and tests both drive it with [`Snapshot`]s.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::model::timeline::{
    Event, Frame, FrameId, GcRun, GilIdx, GilRun, Run, Source, StackId, ThreadIdx,
};
use crate::model::{FrameInfo, GilState, Snapshot};

#[derive(Debug, Clone, PartialEq, Eq)]
struct RunKey {
    interpreter: i64,
    state: GilState,
    on_cpu: bool,
    stack: StackId,
}

/// A run being extended sample by sample: a thread's ([`RunKey`]) or a GIL's ([`GilKey`]).
#[derive(Debug, Clone)]
struct Open<K> {
    start_ns: u64,
    samples: u32,
    key: K,
}

/// The key of a run: what consecutive samples must agree on, and the event a closed run is.
trait RunKind: Clone + PartialEq {
    /// The thread's or GIL's number.
    type Idx: Copy + Ord;
    fn event(self, idx: Self::Idx, start_ns: u64, end_ns: u64, samples: u32) -> Event;
}

impl<K: RunKind> Open<K> {
    /// The run as an event, ending at `end_ns` (not before it started).
    fn close(self, idx: K::Idx, end_ns: u64, out: &mut Vec<Event>) {
        let end_ns = end_ns.max(self.start_ns);
        out.push(self.key.event(idx, self.start_ns, end_ns, self.samples));
    }
}

/// Extend `open` if `key` agrees, else close it and open a new one.
fn advance<K: RunKind>(
    open: &mut Option<Open<K>>,
    idx: K::Idx,
    key: K,
    now: u64,
    out: &mut Vec<Event>,
) {
    match open {
        Some(o) if o.key == key && o.samples < u32::MAX => o.samples += 1,
        _ => {
            if let Some(o) = open.take() {
                o.close(idx, now, out);
            }
            *open = Some(Open {
                start_ns: now,
                samples: 1,
                key,
            });
        }
    }
}

/// The lanes (threads or GILs, from a hash map) by number: events come out in the same order
/// every time.
fn in_order<'a, K: RunKind + 'a>(
    lanes: impl Iterator<Item = (K::Idx, &'a mut Option<Open<K>>)>,
) -> Vec<(K::Idx, &'a mut Option<Open<K>>)> {
    let mut lanes: Vec<_> = lanes.collect();
    lanes.sort_unstable_by_key(|(idx, _)| *idx);
    lanes
}

/// Close the open runs of `lanes` (threads or GILs) at `end_ns`, in lane order.
fn close_each<'a, K: RunKind + 'a>(
    lanes: impl Iterator<Item = (K::Idx, &'a mut Option<Open<K>>)>,
    end_ns: u64,
    out: &mut Vec<Event>,
) {
    for (idx, open) in in_order(lanes) {
        if let Some(o) = open.take() {
            o.close(idx, end_ns, out);
        }
    }
}

/// Split the open runs of `lanes` at the last sample `now`, in lane order: all but the last
/// sample is written, the last sample stays open (the model merges the pieces back).
fn checkpoint_each<'a, K: RunKind + 'a>(
    lanes: impl Iterator<Item = (K::Idx, &'a mut Option<Open<K>>)>,
    now: u64,
    out: &mut Vec<Event>,
) {
    for (idx, open) in in_order(lanes) {
        if let Some(o) = open {
            if o.samples > 1 && o.start_ns < now {
                let done = Open {
                    start_ns: o.start_ns,
                    samples: o.samples - 1,
                    key: o.key.clone(),
                };
                o.start_ns = now;
                o.samples = 1;
                done.close(idx, now, out);
            }
        }
    }
}

#[derive(Debug)]
struct ThreadSt {
    idx: ThreadIdx,
    name: String,
    os_name: String,
    last_frames: Vec<FrameInfo>,
    last_stack: StackId,
    open: Option<Open<RunKey>>,
    seen: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct GilKey {
    enabled: bool,
    locked: bool,
    holder_tid: Option<u32>,
    switch_number: u64,
}

#[derive(Debug)]
struct GilSt {
    idx: GilIdx,
    open: Option<Open<GilKey>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct InterpSt {
    main: bool,
    own_gil: bool,
    gil: GilIdx,
    address: u64,
}

/// Stateful converter from [`Snapshot`]s to [`Event`]s. Events come out in
/// non-decreasing time order (definitions, which have no time, come before
/// the first event that uses them).
#[derive(Debug)]
pub struct SnapshotEncoder {
    period_ns: u64,
    last_ns: Option<u64>,
    generation: u64,
    samples: u64,
    strings: HashMap<String, u32>,
    /// The same, by the address of a shared name (the reader hands out one `Arc` per name):
    /// no hashing of the text at every sample. The `Arc` is kept, so its address cannot be
    /// another string's while it is in here.
    shared: FxHashMap<usize, (Arc<str>, u32)>,
    frames: FxHashMap<(u32, u32, i32, i64), FrameId>,
    stacks: FxHashMap<(StackId, FrameId), StackId>,
    threads: HashMap<(u32, u64), ThreadSt>,
    /// Threads found gone, by key: if one shows up again (a reading missed
    /// it), it keeps its number.
    retired: HashMap<(u32, u64), ThreadIdx>,
    next_thread: ThreadIdx,
    interps: BTreeMap<i64, InterpSt>,
    gils: HashMap<u64, GilSt>,
    warnings: HashSet<String>,
    /// Collections in progress, by interpreter (written whole, when they end).
    gc: BTreeMap<i64, GcRun>,
}

impl RunKind for RunKey {
    type Idx = ThreadIdx;
    fn event(self, thread: ThreadIdx, start_ns: u64, end_ns: u64, samples: u32) -> Event {
        Event::Run(Run {
            thread,
            start_ns,
            end_ns,
            samples,
            interpreter: self.interpreter,
            state: self.state,
            on_cpu: self.on_cpu,
            stack: self.stack,
            source: Source::Sampled,
        })
    }
}

impl RunKind for GilKey {
    type Idx = GilIdx;
    fn event(self, gil: GilIdx, start_ns: u64, end_ns: u64, samples: u32) -> Event {
        Event::GilRun(GilRun {
            gil,
            start_ns,
            end_ns,
            samples,
            enabled: self.enabled,
            locked: self.locked,
            holder_tid: self.holder_tid,
            switch_number: self.switch_number,
        })
    }
}

impl SnapshotEncoder {
    /// `period_ns`: the nominal sampling period, used for the last sample.
    pub fn new(period_ns: u64) -> Self {
        SnapshotEncoder {
            period_ns: period_ns.max(1),
            last_ns: None,
            generation: 0,
            samples: 0,
            strings: HashMap::new(),
            shared: FxHashMap::default(),
            frames: FxHashMap::default(),
            stacks: FxHashMap::default(),
            threads: HashMap::new(),
            retired: HashMap::new(),
            next_thread: 0,
            interps: BTreeMap::new(),
            gils: HashMap::new(),
            warnings: HashSet::new(),
            gc: BTreeMap::new(),
        }
    }

    /// Samples pushed so far.
    /// The thread number of kernel thread `tid`: the live thread with that
    /// TID, else the highest-numbered one that ended.
    pub fn thread_of_tid(&self, tid: u32) -> Option<ThreadIdx> {
        let live = self
            .threads
            .iter()
            .filter(|((t, _), _)| *t == tid)
            .map(|(_, st)| st.idx)
            .max();
        live.or_else(|| {
            self.retired
                .iter()
                .filter(|((t, _), _)| *t == tid)
                .map(|(_, &idx)| idx)
                .max()
        })
    }

    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Time of the last sample (or failed sample).
    pub fn last_ns(&self) -> Option<u64> {
        self.last_ns
    }

    fn string(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.strings.get(s) {
            return id;
        }
        let id = self.strings.len() as u32 + 1;
        self.strings.insert(s.to_owned(), id);
        id
    }

    fn shared_string(&mut self, s: &Arc<str>) -> u32 {
        let key = Arc::as_ptr(s) as *const u8 as usize;
        if let Some((_, id)) = self.shared.get(&key) {
            return *id;
        }
        let id = self.string(s);
        self.shared.insert(key, (s.clone(), id));
        id
    }

    fn intern_stack(&mut self, frames: &[FrameInfo], out: &mut Vec<Event>) -> StackId {
        let mut parent: StackId = 0;
        for f in frames.iter().rev() {
            let key = (
                self.shared_string(&f.function),
                self.shared_string(&f.file),
                f.line,
                f.interpreter,
            );
            let frame = match self.frames.get(&key) {
                Some(&id) => id,
                None => {
                    let id = self.frames.len() as FrameId + 1;
                    self.frames.insert(key, id);
                    out.push(Event::Frame {
                        id,
                        frame: Frame {
                            function: f.function.to_string(),
                            file: f.file.to_string(),
                            line: f.line,
                            interpreter: f.interpreter,
                        },
                    });
                    id
                }
            };
            parent = match self.stacks.get(&(parent, frame)) {
                Some(&id) => id,
                None => {
                    let id = self.stacks.len() as StackId + 1;
                    self.stacks.insert((parent, frame), id);
                    out.push(Event::Stack { id, parent, frame });
                    id
                }
            };
        }
        parent
    }

    fn gil_idx(&mut self, address: u64, out: &mut Vec<Event>) -> GilIdx {
        if let Some(g) = self.gils.get(&address) {
            return g.idx;
        }
        let idx = self.gils.len() as GilIdx;
        self.gils.insert(address, GilSt { idx, open: None });
        out.push(Event::Gil { gil: idx, address });
        idx
    }

    /// Fold in one successful reading.
    pub fn push(&mut self, snap: &Snapshot, out: &mut Vec<Event>) {
        let now = snap.time_ns.max(self.last_ns.unwrap_or(0));
        self.generation += 1;
        let generation = self.generation;

        // Interpreters and their GILs.
        let mut present = HashSet::new();
        let mut gil_keys: Vec<(u64, GilKey)> = Vec::new();
        for i in &snap.interpreters {
            present.insert(i.id);
            let gil = self.gil_idx(i.gil.address, out);
            let st = InterpSt {
                main: i.main,
                own_gil: i.own_gil,
                gil,
                address: i.address,
            };
            if self.interps.get(&i.id) != Some(&st) {
                out.push(Event::Interpreter {
                    time_ns: now,
                    id: i.id,
                    main: st.main,
                    own_gil: st.own_gil,
                    gil,
                    address: st.address,
                });
                self.interps.insert(i.id, st);
            }
            if !gil_keys.iter().any(|(a, _)| *a == i.gil.address) {
                gil_keys.push((
                    i.gil.address,
                    GilKey {
                        enabled: i.gil.enabled,
                        locked: i.gil.enabled && i.gil.locked,
                        holder_tid: i.gil.holder_tid,
                        switch_number: i.gil.switch_number,
                    },
                ));
            }
        }
        let gone: Vec<i64> = self
            .interps
            .keys()
            .copied()
            .filter(|id| !present.contains(id))
            .collect();
        for id in gone {
            self.interps.remove(&id);
            out.push(Event::InterpreterEnd { time_ns: now, id });
        }
        let mut gils_seen = HashSet::new();
        for (address, key) in gil_keys {
            gils_seen.insert(address);
            if let Some(g) = self.gils.get_mut(&address) {
                advance(&mut g.open, g.idx, key, now, out);
            }
        }
        for (address, g) in self.gils.iter_mut() {
            if !gils_seen.contains(address) {
                if let Some(o) = g.open.take() {
                    o.close(g.idx, now, out);
                }
            }
        }

        // Threads.
        for th in &snap.threads {
            let key = (th.tid, th.start_ticks);
            if !self.threads.contains_key(&key) {
                let idx = match self.retired.remove(&key) {
                    Some(idx) => idx,
                    None => {
                        self.next_thread += 1;
                        self.next_thread - 1
                    }
                };
                out.push(Event::ThreadStart {
                    time_ns: now,
                    thread: idx,
                    tid: th.tid,
                    start_ticks: th.start_ticks,
                    name: th.name.clone(),
                    os_name: th.os_name.clone(),
                });
                self.threads.insert(
                    key,
                    ThreadSt {
                        idx,
                        name: th.name.clone(),
                        os_name: th.os_name.clone(),
                        last_frames: Vec::new(),
                        last_stack: 0,
                        open: None,
                        seen: generation,
                    },
                );
            }
            let stack = match self.threads.get(&key) {
                Some(st) if st.last_frames == th.frames => st.last_stack,
                _ => self.intern_stack(&th.frames, out),
            };
            let Some(st) = self.threads.get_mut(&key) else {
                continue;
            };
            st.seen = generation;
            if st.name != th.name || st.os_name != th.os_name {
                st.name = th.name.clone();
                st.os_name = th.os_name.clone();
                out.push(Event::ThreadName {
                    time_ns: now,
                    thread: st.idx,
                    name: th.name.clone(),
                    os_name: th.os_name.clone(),
                });
            }
            if st.last_stack != stack || st.last_frames != th.frames {
                st.last_frames = th.frames.clone();
                st.last_stack = stack;
            }
            let run_key = RunKey {
                interpreter: th.interpreter,
                state: th.gil_state,
                on_cpu: th.on_cpu,
                stack,
            };
            advance(&mut st.open, st.idx, run_key, now, out);
        }
        let mut ended: Vec<(u32, u64)> = self
            .threads
            .iter()
            .filter(|(_, st)| st.seen != generation)
            .map(|(k, _)| *k)
            .collect();
        ended.sort_unstable();
        for key in ended {
            if let Some(mut st) = self.threads.remove(&key) {
                if let Some(o) = st.open.take() {
                    o.close(st.idx, now, out);
                }
                out.push(Event::ThreadEnd {
                    time_ns: now,
                    thread: st.idx,
                });
                self.retired.insert(key, st.idx);
            }
        }

        self.push_gc(snap, now, out);

        for w in &snap.warnings {
            if self.warnings.insert(w.clone()) {
                out.push(Event::Warning {
                    time_ns: now,
                    message: w.clone(),
                });
            }
        }
        self.samples += 1;
        self.last_ns = Some(now);
    }

    /// Garbage collections: a run per interpreter while its `gc.collecting` flag stays set,
    /// named after the thread running it (its GIL's holder; free-threaded: the attached thread
    /// on a CPU with Python frames) and that thread's stack at the first sample.
    ///
    /// A collection starts and ends midway between the sample that saw the flag change and
    /// the one before it. Taking the later sample for both would be unbiased only if the
    /// sampler's delays were the same at both ends, and they are not on a busy machine: a
    /// collection keeps the target on a CPU, so the sampler's wake-up that first sees it is
    /// late (a long gap before it), while the one that sees it end is prompt (the target
    /// goes on to other work, often a sleep). Seen as collections 1-10 % shorter than the
    /// workload's own `gc.callbacks` timing on a loaded 2-core machine (tests/blame.rs).
    fn push_gc(&mut self, snap: &Snapshot, now: u64, out: &mut Vec<Event>) {
        let changed_at = self
            .last_ns
            .filter(|&prev| prev <= now)
            .map_or(now, |prev| prev + (now - prev) / 2);
        for i in &snap.interpreters {
            if i.gc_collecting != Some(true) {
                if let Some(mut g) = self.gc.remove(&i.id) {
                    g.end_ns = changed_at.max(g.start_ns);
                    out.push(Event::Gc(g));
                }
                continue;
            }
            if let Some(g) = self.gc.get_mut(&i.id) {
                g.samples = g.samples.saturating_add(1);
                continue;
            }
            let runner = i
                .gil
                .holder_tid
                .filter(|_| i.gil.enabled)
                .and_then(|tid| snap.thread(tid))
                .or_else(|| {
                    snap.threads.iter().find(|t| {
                        t.interpreter == i.id
                            && matches!(t.gil_state, GilState::Attached | GilState::Held)
                            && t.on_cpu
                            && !t.frames.is_empty()
                    })
                });
            let (thread, stack) = runner
                .and_then(|t| self.threads.get(&(t.tid, t.start_ticks)))
                .map_or((None, 0), |st| (Some(st.idx), st.last_stack));
            self.gc.insert(
                i.id,
                GcRun {
                    interpreter: i.id,
                    start_ns: changed_at,
                    end_ns: changed_at,
                    samples: 1,
                    thread,
                    stack,
                },
            );
        }
        let gone: Vec<i64> = self
            .gc
            .keys()
            .copied()
            .filter(|id| snap.interpreter(*id).is_none())
            .collect();
        for id in gone {
            if let Some(mut g) = self.gc.remove(&id) {
                g.end_ns = now.max(g.start_ns);
                out.push(Event::Gc(g));
            }
        }
    }

    fn close_all(&mut self, end_ns: u64, out: &mut Vec<Event>) {
        for (_, mut g) in std::mem::take(&mut self.gc) {
            g.end_ns = end_ns.max(g.start_ns);
            out.push(Event::Gc(g));
        }
        close_each(
            self.threads.values_mut().map(|t| (t.idx, &mut t.open)),
            end_ns,
            out,
        );
        close_each(
            self.gils.values_mut().map(|g| (g.idx, &mut g.open)),
            end_ns,
            out,
        );
    }

    /// A sample attempted at `time_ns` failed: the previous sample ends there
    /// and the time until the next good sample is a gap.
    pub fn sample_error(&mut self, time_ns: u64, message: &str, out: &mut Vec<Event>) {
        let now = time_ns.max(self.last_ns.unwrap_or(0));
        self.close_all(now, out);
        out.push(Event::SampleError {
            time_ns: now,
            message: message.to_owned(),
        });
        self.last_ns = Some(now);
    }

    /// Emit everything known up to the last sample, so a file flushed now
    /// holds all but the last sample period: open runs are split at the last
    /// sample's time (the model merges the pieces back).
    pub fn checkpoint(&mut self, out: &mut Vec<Event>) {
        let Some(now) = self.last_ns else { return };
        checkpoint_each(
            self.threads.values_mut().map(|t| (t.idx, &mut t.open)),
            now,
            out,
        );
        checkpoint_each(
            self.gils.values_mut().map(|g| (g.idx, &mut g.open)),
            now,
            out,
        );
    }

    /// Close everything at `end_ns` (default: last sample + one period) and
    /// emit the end record. `missed`: sampling ticks skipped for being late.
    pub fn finish(&mut self, end_ns: Option<u64>, missed: u64, out: &mut Vec<Event>) {
        let last = self.last_ns.unwrap_or(0);
        let end = end_ns
            .unwrap_or_else(|| last.saturating_add(self.period_ns))
            .max(last);
        self.close_all(end, out);
        out.push(Event::End {
            time_ns: end,
            samples: self.samples,
            missed,
        });
        self.last_ns = Some(end);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! Timelines drawn as ASCII: one column per sample, one row per thread.
    use super::*;
    use crate::model::timeline::Timeline;
    use crate::model::{GilInfo, InterpreterInfo, PythonInfo, ThreadInfo};

    pub fn python() -> PythonInfo {
        PythonInfo {
            version: "3.13.1".into(),
            version_hex: 0x030D01F0,
            free_threaded: false,
            binary: "/usr/bin/python3.13".into(),
            runtime_found_by: "symbol".into(),
            offsets_from: "debug_offsets".into(),
        }
    }

    pub fn interp(id: i64, gil_address: u64, holder: Option<u32>, switch: u64) -> InterpreterInfo {
        InterpreterInfo {
            id,
            main: id == 0,
            own_gil: true,
            gil: GilInfo {
                enabled: true,
                locked: holder.is_some(),
                holder_tid: holder,
                switch_number: switch,
                address: gil_address,
                free_threaded_state: None,
            },
            address: 0x5000 + id as u64,
            gc_collecting: None,
        }
    }

    pub fn frame(function: &str, line: i32) -> FrameInfo {
        FrameInfo {
            function: function.into(),
            file: "app.py".into(),
            line,
            interpreter: 0,
        }
    }

    pub fn thread(tid: u32, state: GilState, frames: Vec<FrameInfo>) -> ThreadInfo {
        ThreadInfo {
            tid,
            start_ticks: 1000 + tid as u64,
            name: format!("T{tid}"),
            os_name: format!("python{tid}"),
            interpreter: 0,
            holds_gil: state == GilState::Held,
            gil_state: state,
            on_cpu: matches!(state, GilState::Held | GilState::Released),
            frames,
            thread_states: Vec::new(),
            interpreter_evidence: "attached".into(),
            position: None,
        }
    }

    pub fn snapshot(time_ns: u64, threads: Vec<ThreadInfo>) -> Snapshot {
        let holder = threads
            .iter()
            .find(|t| t.gil_state == GilState::Held)
            .map(|t| t.tid);
        Snapshot {
            pid: 42,
            time_ns,
            python: python(),
            interpreters: vec![interp(0, 0x1000, holder, 0)],
            threads,
            retries: 0,
            warnings: Vec::new(),
        }
    }

    fn state_of(c: char) -> Option<GilState> {
        Some(match c {
            'H' => GilState::Held,
            'W' => GilState::Waiting,
            'R' => GilState::Released,
            'I' => GilState::Idle,
            'A' => GilState::Attached,
            '?' => GilState::Unknown,
            _ => return None,
        })
    }

    fn char_of(s: GilState) -> char {
        match s {
            GilState::Held => 'H',
            GilState::Waiting => 'W',
            GilState::Released => 'R',
            GilState::Idle => 'I',
            GilState::Attached => 'A',
            GilState::Unknown => '?',
        }
    }

    /// Rows like `"1 HHHW.II"`: TID, then one state per sample taken every
    /// 10 ns; `.` = thread absent; a row of `x` in column `c` of the special
    /// TID 0 row marks a failed sample.
    pub fn snapshots_from_ascii(rows: &[&str]) -> Vec<Result<Snapshot, u64>> {
        let parsed: Vec<(u32, Vec<char>)> = rows
            .iter()
            .map(|r| {
                let (tid, cells) = r.split_once(' ').expect("row: TID CELLS");
                (tid.parse().expect("tid"), cells.chars().collect())
            })
            .collect();
        let width = parsed.iter().map(|(_, c)| c.len()).max().unwrap_or(0);
        (0..width)
            .map(|col| {
                let t = col as u64 * 10;
                if parsed
                    .iter()
                    .any(|(tid, c)| *tid == 0 && c.get(col) == Some(&'x'))
                {
                    return Err(t);
                }
                let threads = parsed
                    .iter()
                    .filter(|(tid, _)| *tid != 0)
                    .filter_map(|(tid, c)| {
                        let s = state_of(*c.get(col)?)?;
                        Some(thread(*tid, s, vec![frame("main", 1)]))
                    })
                    .collect();
                Ok(snapshot(t, threads))
            })
            .collect()
    }

    /// Draw a model back: same layout, from the state intervals.
    pub fn ascii_from_timeline(t: &Timeline, width: usize) -> Vec<String> {
        let mut rows = Vec::new();
        for th in &t.threads {
            let mut cells = vec!['.'; width];
            for iv in &th.intervals {
                let from = (iv.start_ns / 10) as usize;
                let to = (iv.end_ns.div_ceil(10) as usize).min(width);
                for c in cells.iter_mut().take(to).skip(from) {
                    *c = char_of(iv.state);
                }
            }
            rows.push(format!("{} {}", th.tid, cells.iter().collect::<String>()));
        }
        rows
    }

    fn encode_all(rows: &[&str], checkpoint_every: Option<usize>) -> Vec<Event> {
        let mut enc = SnapshotEncoder::new(10);
        let mut out = Vec::new();
        for (i, s) in snapshots_from_ascii(rows).into_iter().enumerate() {
            match s {
                Ok(s) => enc.push(&s, &mut out),
                Err(t) => enc.sample_error(t, "boom", &mut out),
            }
            if checkpoint_every.is_some_and(|n| i % n == n - 1) {
                enc.checkpoint(&mut out);
            }
        }
        enc.finish(None, 0, &mut out);
        out
    }

    #[test]
    fn ascii_timelines_round_trip() {
        let rows = ["1 HHHWWWHHIIII", "2 WWWHHHWW....", "3 ...RRRR?AAII"];
        for checkpoint in [None, Some(1), Some(3)] {
            let events = encode_all(&rows, checkpoint);
            let t = Timeline::from_events(&events);
            assert_eq!(
                ascii_from_timeline(&t, 12),
                rows,
                "checkpoint {checkpoint:?}"
            );
            assert_eq!(t.samples(), 12);
        }
    }

    #[test]
    fn collections_start_and_end_midway_between_samples() {
        // Samples at 0, 10, 30, 34, 40 ns (a sampler starved while the target collects);
        // the flag is set in the samples at 10 and 30.
        let mut enc = SnapshotEncoder::new(10);
        let mut out = Vec::new();
        for (t, collecting) in [(0, false), (10, true), (30, true), (34, false), (40, false)] {
            let mut s = snapshot(t, vec![thread(1, GilState::Held, vec![frame("f", 1)])]);
            s.interpreters[0].gc_collecting = Some(collecting);
            enc.push(&s, &mut out);
        }
        enc.finish(None, 0, &mut out);
        let gc: Vec<(u64, u64, u32, Option<u32>)> = out
            .iter()
            .filter_map(|e| match e {
                Event::Gc(g) => Some((g.start_ns, g.end_ns, g.samples, g.thread)),
                _ => None,
            })
            .collect();
        assert_eq!(gc, [(5, 32, 2, Some(0))]);
    }

    #[test]
    fn failed_samples_leave_gaps() {
        let rows = ["0 ...x...", "1 HHHHHHH"];
        let events = encode_all(&rows, None);
        let t = Timeline::from_events(&events);
        assert_eq!(ascii_from_timeline(&t, 7), ["1 HHH.HHH"]);
        assert_eq!(t.sample_errors.get("boom"), Some(&1));
    }

    #[test]
    fn events_are_time_ordered_and_runs_cover_periods() {
        let rows = ["1 HHIIHH", "2 II..HH"];
        let events = encode_all(&rows, Some(2));
        let mut last = 0;
        for e in &events {
            if let Some(t) = e.time_ns() {
                assert!(t >= last, "{e:?} before {last}");
                last = t;
            }
        }
        // TID 2 was missed by two readings and came back with the same
        // start_ticks: the same kernel thread, so the same thread number.
        let starts: Vec<u32> = events
            .iter()
            .filter_map(|e| match e {
                Event::ThreadStart { thread, .. } => Some(*thread),
                _ => None,
            })
            .collect();
        assert_eq!(starts, [0, 1, 1]);
        let t = Timeline::from_events(&events);
        assert_eq!(t.threads.len(), 2);
        assert_eq!(t.threads[0].observed().ns, 60);
        assert_eq!(t.threads[1].observed().ns, 40);
        assert_eq!(t.threads[1].ended_ns, None);
        assert_eq!(ascii_from_timeline(&t, 6), rows);
    }

    #[test]
    fn stacks_are_interned_as_a_prefix_tree() {
        let mut enc = SnapshotEncoder::new(10);
        let mut out = Vec::new();
        let a = vec![frame("leaf", 3), frame("mid", 2), frame("main", 1)];
        let b = vec![frame("other", 9), frame("mid", 2), frame("main", 1)];
        for (i, frames) in [a.clone(), a.clone(), b, a].into_iter().enumerate() {
            let s = snapshot(i as u64 * 10, vec![thread(1, GilState::Held, frames)]);
            enc.push(&s, &mut out);
        }
        enc.finish(None, 0, &mut out);
        let frames = out
            .iter()
            .filter(|e| matches!(e, Event::Frame { .. }))
            .count();
        let stacks = out
            .iter()
            .filter(|e| matches!(e, Event::Stack { .. }))
            .count();
        assert_eq!((frames, stacks), (4, 4));
        let t = Timeline::from_events(&out);
        let runs: Vec<_> = out
            .iter()
            .filter_map(|e| match e {
                Event::Run(r) => Some((r.start_ns, r.end_ns, r.samples, r.stack)),
                _ => None,
            })
            .collect();
        assert_eq!(runs, vec![(0, 20, 2, 3), (20, 30, 1, 4), (30, 40, 1, 3)]);
        let names: Vec<_> = t
            .stack_frames(4)
            .iter()
            .map(|f| f.function.clone())
            .collect();
        assert_eq!(names, ["other", "mid", "main"]);
    }

    #[test]
    fn gil_runs_track_holder_and_switches() {
        let mut enc = SnapshotEncoder::new(10);
        let mut out = Vec::new();
        for (i, (holder, sw)) in [(Some(1), 5), (Some(1), 5), (Some(2), 6), (None, 6)]
            .into_iter()
            .enumerate()
        {
            let mut s = snapshot(i as u64 * 10, vec![]);
            s.interpreters = vec![interp(0, 0x1000, holder, sw)];
            enc.push(&s, &mut out);
        }
        enc.finish(None, 0, &mut out);
        let t = Timeline::from_events(&out);
        let g = &t.gils[0];
        assert_eq!(g.observed.ns, 40);
        assert_eq!(g.locked.ns, 30);
        assert_eq!(g.handovers(), 1);
    }
}
