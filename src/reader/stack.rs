//! Python stacks: frames, code objects, line tables, strings (per version).
//!
//! [`StackLayout`] holds every offset (built-in tables for 3.9–3.12,
//! `_Py_DebugOffsets` for 3.13+); [`StackReader`] walks a thread state's frame
//! chain and reads `threading` thread names. Use one reader per target
//! process: its caches are keyed by addresses in that process.
//!
//! Frame chains per version:
//! - 3.9/3.10: `tstate->frame` → `PyFrameObject` (`f_back`, `f_code`,
//!   `f_lasti`: bytes in 3.9, code units in 3.10).
//! - 3.11/3.12: `tstate->cframe->current_frame` → `_PyInterpreterFrame`
//!   (`previous`, `f_code`, `prev_instr`); 3.12 C-stack shims (owner 3) skipped.
//! - 3.13+: `tstate->current_frame` (debug offsets), `f_executable` (a tagged
//!   `_PyStackRef` from 3.14), `instr_ptr`; shim owners skipped, and frames
//!   whose executable is not a code object.
//!
//! Verified against live processes (each thread's stack compared with the
//! target's own `sys._current_frames()`, names with `threading.enumerate()`)
//! on pyenv 3.9.18, 3.10.13, 3.11.7, 3.12.1, 3.13.0, free-threaded 3.13.15t
//! and Debian 3.13.18, 3.14.10, 3.15.2.
//!
//! Known gaps:
//! - Free-threaded 3.14+ (thread-local bytecode, `unsigned char interned`
//!   in the str state) is implemented from the headers and unit-tested on
//!   synthetic memory only; no such binary was available.
//! - 3.11/3.12 "incomplete" frames (a function still in its prologue) are
//!   reported, while CPython's own introspection hides them.
//! - 3.10 reuses frame objects, so sampling a thread that calls and returns
//!   rapidly fails with a "cycle" error in a few per cent of reads (torn
//!   reads; retry).
//! - `line` is 0 for instructions CPython gives no line (artificial code).

mod ccall;
mod layout;
mod linetable;
mod objects;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};

use anyhow::{bail, Context, Result};

pub use ccall::{current_call, CallReader, RawCall};
pub use layout::StackLayout;
pub use linetable::LineTableFormat;
pub use objects::MAX_STR_CHARS;

use layout::{FrameChain, InstrField};
use objects::check_ptr;

use super::memory::{Bytes, Memory, MemoryExt, PageCache};

/// One Python frame.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RawFrame {
    /// `co_qualname` (3.11+) or `co_name`.
    pub function: Arc<str>,
    /// `co_filename`.
    pub file: Arc<str>,
    /// Line being executed; 0 when unknown (an instruction without a line).
    pub line: i32,
    /// Address of the frame (`_PyInterpreterFrame` or frame object) and the byte offset of
    /// its current instruction: together they tell one call in progress from the next.
    pub position: (u64, Option<i64>),
}

/// Default bound on frames per stack; deeper stacks are cut (innermost kept).
pub const DEFAULT_MAX_DEPTH: usize = 1024;
/// Code objects cached before the cache is emptied.
const CODE_CACHE_LIMIT: usize = 16384;
/// Looked-up lines cached before that cache is emptied.
const LINE_CACHE_LIMIT: usize = 1 << 16;

/// What a code object contributes to every frame, cached by address and
/// revalidated against the header fields it was built from.
#[derive(Debug, Clone)]
struct CodeInfo {
    /// (filename, name, qualname, linetable) pointers and firstlineno, as read.
    key: [u64; 5],
    function: Arc<str>,
    file: Arc<str>,
    firstlineno: i32,
    table: Vec<u8>,
    /// Python 3.12+ shim code (`<shim>` file): not a user frame.
    shim: bool,
    /// Which read of a code object this is (a key of the line cache).
    serial: u64,
}

/// A frame as [`StackReader::known`] remembers it.
#[derive(Debug, Clone)]
struct KnownFrame {
    function: Arc<str>,
    file: Arc<str>,
    line: i32,
    offset: Option<i64>,
}

/// One frame of a walk: where it was, what it ran, where, and its caller; `out_before`: how
/// many frames the walk had put out before it.
#[derive(Debug, Clone, Copy)]
struct ChainLink {
    frame: u64,
    previous: u64,
    code: u64,
    instr: u64,
    out_before: usize,
}

impl PartialEq for ChainLink {
    fn eq(&self, o: &Self) -> bool {
        (self.frame, self.previous, self.code, self.instr) == (o.frame, o.previous, o.code, o.instr)
    }
}

#[derive(Debug, Clone)]
struct LastWalk {
    chain: Vec<ChainLink>,
    out: Vec<RawFrame>,
    /// Walks that took frames from an earlier one since the last full walk, and when that was.
    walks_since_full: u32,
    full_at: std::time::Instant,
}

impl LastWalk {
    fn full_walk_due(&self) -> bool {
        self.walks_since_full + 1 >= FULL_WALK_EVERY || self.full_at.elapsed() >= FULL_WALK_AFTER
    }
}

/// Every this many walks of a thread, and at least every [`FULL_WALK_AFTER`], the whole stack
/// is read again (what the shortcut cannot see: a caller re-entered at the same slot, code
/// and instruction). 64 walks at 1 kHz, 200 ms below 320 Hz: at the rates the overhead
/// budget lowers sampling to (50 Hz on a busy server), a full walk at every sample would
/// cost a page read per frame page of every thread each time.
const FULL_WALK_EVERY: u32 = 64;
const FULL_WALK_AFTER: std::time::Duration = std::time::Duration::from_millis(200);
/// Thread states whose last walk is kept, at most.
const CHAINS_LIMIT: usize = 1 << 14;

/// How long [`StackReader::known`] frames are trusted (without code-object generations),
/// and how many are kept.
const KNOWN_FRAMES_FOR: std::time::Duration = std::time::Duration::from_secs(1);
const KNOWN_FRAMES_LIMIT: usize = 1 << 16;

/// One entry of `threading._active`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadingName {
    /// `Thread._name`.
    pub name: String,
    /// `Thread._native_id`: the kernel TID of the thread the object belongs to.
    pub native_id: Option<u64>,
}

/// Walks frame chains and reads thread names; bounded caches inside.
#[derive(Debug)]
pub struct StackReader {
    layout: StackLayout,
    max_depth: usize,
    code_cache: FxHashMap<u64, Arc<CodeInfo>>,
    /// (code object, instruction field) → what such a frame is (None: a shim), from walks
    /// of the last [`KNOWN_FRAMES_FOR`]: a stack mostly the same from one sample to the next
    /// costs one lookup per frame, not a code-object read. A frame refers to its code
    /// object, so the code at that address is alive while any frame names it; the whole map
    /// is dropped when one may have died and another taken its address in between: when an
    /// interpreter's `_code_object_generation` moves (3.14+), else every [`KNOWN_FRAMES_FOR`].
    known: FxHashMap<(u64, u64), Option<KnownFrame>>,
    known_since: std::time::Instant,
    /// Each thread state's last walk (see [`ChainLink`]).
    chains: FxHashMap<u64, LastWalk>,
    /// The cycle check's set, kept between walks (no allocation per walk).
    seen: FxHashSet<u64>,
    /// Lines already looked up: (code info serial, instruction offset) → line. A stack that
    /// stays where it was would otherwise decode the same line tables at every sample.
    lines: FxHashMap<(u64, i64), i32>,
    next_serial: u64,
    /// Addresses of the `code` type and (3.9/3.10) the `frame` type, once seen.
    code_type: Option<u64>,
    frame_type: Option<u64>,
    /// The interpreters' `_code_object_generation`s at the last sample (3.14+), sorted; None
    /// where the build has none (the known frames then expire every [`KNOWN_FRAMES_FOR`]).
    code_gens: Option<Vec<(u64, u64)>>,
    /// Interpreter state → its `threading._active` dict, and when it was found.
    active_dicts: FxHashMap<u64, (u64, std::time::Instant)>,
}

/// How long a found `threading._active` address is used before it is looked up again
/// (`importlib.reload(threading)` binds a new dict).
const ACTIVE_DICT_FOR: std::time::Duration = std::time::Duration::from_secs(1);

impl StackReader {
    pub fn new(layout: StackLayout) -> Self {
        Self {
            layout,
            max_depth: DEFAULT_MAX_DEPTH,
            code_cache: FxHashMap::default(),
            known: FxHashMap::default(),
            known_since: std::time::Instant::now(),
            chains: FxHashMap::default(),
            seen: FxHashSet::default(),
            lines: FxHashMap::default(),
            next_serial: 0,
            code_type: None,
            frame_type: None,
            code_gens: None,
            active_dicts: FxHashMap::default(),
        }
    }

    /// The interpreters' code-object generations (address, `_code_object_generation`) read
    /// with this sample, or None when the build does not publish them (before 3.14). A
    /// change from the last sample, or interpreters coming or going, drop the known frames
    /// (keyed by code-object address: a freed code object's address may hold another one
    /// now). While they stand still, known frames are kept without expiry.
    pub fn code_generations(&mut self, gens: Option<&[(u64, u64)]>) {
        let mut now = gens.map(<[_]>::to_vec);
        if let Some(v) = now.as_mut() {
            v.sort_unstable();
        }
        if now != self.code_gens {
            // (The code cache itself checks each entry's names and line table against the
            // object at that address whenever a frame is not a known one.)
            self.known.clear();
            self.known_since = std::time::Instant::now();
            self.code_gens = now;
        }
    }

    /// Changes the depth bound (at least 1).
    pub fn with_max_depth(mut self, max_depth: usize) -> Self {
        self.max_depth = max_depth.max(1);
        self
    }

    pub fn layout(&self) -> &StackLayout {
        &self.layout
    }

    /// The Python stack of the thread state at `tstate`, innermost frame
    /// first. An empty vector for a thread with no Python frames.
    ///
    /// Stacks deeper than the depth bound are cut (the innermost frames are
    /// kept). A cycle, an unreadable frame or code object, or a pointer that
    /// cannot be one is an error: the caller should treat it as a torn read
    /// and retry.
    pub fn read_stack(&mut self, mem: &dyn Memory, tstate: u64) -> Result<Vec<RawFrame>> {
        self.read_stack_from(mem, tstate, None)
    }

    /// [`StackReader::read_stack`], given the thread state's frame field (`current_frame`,
    /// `cframe` or `frame`, at `layout().frame.tstate_frame`) when it was read already.
    pub fn read_stack_from(
        &mut self,
        mem: &dyn Memory,
        tstate: u64,
        frame_field: Option<u64>,
    ) -> Result<Vec<RawFrame>> {
        check_ptr(tstate, "thread state")?;
        let fl = self.layout.frame.clone();
        if self.code_gens.is_none() && self.known_since.elapsed() >= KNOWN_FRAMES_FOR {
            self.known.clear();
            self.known_since = std::time::Instant::now();
        }
        let mut frame = match frame_field {
            Some(f) => f,
            None => mem
                .read_ptr(tstate + fl.tstate_frame)
                .context("reading the current frame of the thread state")?,
        };
        if let FrameChain::CFrame { current_frame } = fl.chain {
            if frame == 0 {
                return Ok(Vec::new());
            }
            check_ptr(frame, "cframe")?;
            frame = mem
                .read_ptr(frame + current_frame)
                .context("reading cframe->current_frame")?;
        }

        let mut out = Vec::with_capacity(32);
        let mut seen = std::mem::take(&mut self.seen);
        seen.clear();
        let last = self.chains.remove(&tstate);
        let full_walk = last.as_ref().is_none_or(LastWalk::full_walk_due);
        let mut chain: Vec<ChainLink> = Vec::with_capacity(32);
        let mut buf = [0u8; 512];
        let buf = buf
            .get_mut(..usize::try_from(fl.read_size)?)
            .context("frame layout reads more than 512 bytes")?;
        while frame != 0 {
            if out.len() >= self.max_depth {
                break;
            }
            check_ptr(frame, "frame")?;
            if !seen.insert(frame) {
                bail!("frame chain has a cycle at {frame:#x}");
            }
            if seen.len() > self.max_depth.saturating_mul(4) {
                bail!("frame chain is implausibly long (mostly shim frames)");
            }
            mem.read(frame, buf)
                .with_context(|| format!("reading frame at {frame:#x}"))?;
            let b = Bytes(buf);
            let previous = b.u64(fl.previous)?;

            if let Some(off) = fl.frame_ob_type {
                let tp = b.u64(off)?;
                if !self.is_type(mem, tp, "frame", |s| &mut s.frame_type) {
                    bail!("object at {frame:#x} in the frame chain is not a frame");
                }
            }
            if let Some(off) = fl.owner {
                if fl.skip_owners.contains(&b.u8(off)?) {
                    frame = previous;
                    continue;
                }
            }
            let mut code = b.u64(fl.code)?;
            if fl.tagged_executable {
                code &= !7;
            }
            let lenient = fl.chain == FrameChain::Direct;
            if code == 0 && lenient {
                frame = previous;
                continue;
            }
            check_ptr(code, "code object")?;
            // The same code object at the same instruction as a walk not long ago: the same
            // frame as then, without reading the code object again.
            let instr_raw = match fl.instr_field {
                InstrField::LastiBytes | InstrField::LastiUnits => b.i32(fl.instr)? as u64,
                InstrField::Pointer => b.u64(fl.instr)?,
            };
            let link = ChainLink {
                frame,
                previous,
                code,
                instr: instr_raw,
                out_before: out.len(),
            };
            // A caller frame exactly as the last walk found it (same slot, code, instruction
            // and caller): the frames below it are as they were too, as a frame's callers
            // cannot move while it runs. Taken from the last walk without reading them.
            if !chain.is_empty() && !full_walk {
                if let Some(l) = &last {
                    let k = chain.len();
                    let j = (k.saturating_sub(2)..(k + 3).min(l.chain.len()))
                        .find(|&j| l.chain[j] == link);
                    if let Some(j) = j {
                        let from = l.chain[j].out_before;
                        let delta = out.len() as isize - from as isize;
                        out.extend(l.out[from..].iter().cloned());
                        out.truncate(self.max_depth);
                        chain.extend(l.chain[j..].iter().map(|c| ChainLink {
                            out_before: (c.out_before as isize + delta) as usize,
                            ..*c
                        }));
                        frame = 0;
                        continue;
                    }
                }
            }
            chain.push(link);
            if let Some(k) = self.known.get(&(code, instr_raw)) {
                if let Some(k) = k {
                    out.push(RawFrame {
                        function: k.function.clone(),
                        file: k.file.clone(),
                        line: k.line,
                        position: (frame, k.offset),
                    });
                }
                frame = previous;
                continue;
            }

            let read = self
                .code_info(mem, code)
                .with_context(|| format!("code object of frame at {frame:#x}"))?;
            let (info, code_bytes) = match read {
                Some(x) => x,
                // 3.13+: the executable may legitimately be a non-code object.
                None if lenient => {
                    frame = previous;
                    continue;
                }
                None => {
                    bail!("frame at {frame:#x} points at {code:#x}, which is not a code object")
                }
            };
            if info.shim {
                self.remember(code, instr_raw, None);
                frame = previous;
                continue;
            }

            let offset: Option<i64> = match fl.instr_field {
                InstrField::LastiBytes => Some(i64::from(b.i32(fl.instr)?)),
                InstrField::LastiUnits => Some(i64::from(b.i32(fl.instr)?) * 2),
                InstrField::Pointer => {
                    let ip = b.u64(fl.instr)?;
                    self.instr_offset(mem, &b, code, code_bytes, ip)
                }
            };
            let line = match offset {
                Some(o) => match self.lines.get(&(info.serial, o)) {
                    Some(&line) => line,
                    None => {
                        let line = self
                            .layout
                            .code
                            .format
                            .line_for(&info.table, info.firstlineno, o)
                            .unwrap_or(0);
                        if self.lines.len() >= LINE_CACHE_LIMIT {
                            self.lines.clear();
                        }
                        self.lines.insert((info.serial, o), line);
                        line
                    }
                },
                None => 0,
            };
            out.push(RawFrame {
                function: info.function.clone(),
                file: info.file.clone(),
                line,
                position: (frame, offset),
            });
            self.remember(
                code,
                instr_raw,
                Some(KnownFrame {
                    function: info.function.clone(),
                    file: info.file.clone(),
                    line,
                    offset,
                }),
            );
            frame = previous;
        }
        self.seen = seen;
        let (walks_since_full, full_at) = match (&last, full_walk) {
            (Some(l), false) => (l.walks_since_full + 1, l.full_at),
            _ => (0, std::time::Instant::now()),
        };
        if self.chains.len() >= CHAINS_LIMIT {
            self.chains.clear();
        }
        self.chains.insert(
            tstate,
            LastWalk {
                chain,
                out: out.clone(),
                walks_since_full,
                full_at,
            },
        );
        Ok(out)
    }

    /// Whether the next walk of `tstate` reads its whole stack (no last walk, or due).
    pub fn next_walk_is_full(&self, tstate: u64) -> bool {
        self.chains.get(&tstate).is_none_or(LastWalk::full_walk_due)
    }

    /// How many thread states' last walks are kept.
    pub fn walks_kept(&self) -> usize {
        self.chains.len()
    }

    /// Forgets the last walks of thread states not in `live` (gone threads).
    pub fn retain_walks(&mut self, live: impl Fn(u64) -> bool) {
        self.chains.retain(|ts, _| live(*ts));
    }

    fn remember(&mut self, code: u64, instr: u64, frame: Option<KnownFrame>) {
        if self.known.len() >= KNOWN_FRAMES_LIMIT {
            self.known.clear();
        }
        self.known.insert((code, instr), frame);
    }

    /// Byte offset of `ip` in the bytecode of `code` (3.11+), choosing the
    /// thread-local copy in free-threaded 3.14+. `None` if `ip` is nowhere near.
    fn instr_offset(
        &self,
        mem: &dyn Memory,
        frame: &Bytes<'_>,
        code: u64,
        code_bytes: u64,
        ip: u64,
    ) -> Option<i64> {
        let cl = &self.layout.code;
        let base = code + cl.code_adaptive?;
        let within = |base: u64| {
            let off = ip.wrapping_sub(base) as i64;
            (-2..=code_bytes as i64).contains(&off).then_some(off)
        };
        if let Some(off) = within(base) {
            return Some(off);
        }
        // Free-threaded 3.14+: `instr_ptr` points into co_tlbc->entries[tlbc_index].
        let (idx_off, tlbc_off) = (self.layout.frame.tlbc_index?, cl.tlbc?);
        let idx = frame.i32(idx_off).ok()?;
        if !(0..4096).contains(&idx) {
            return None;
        }
        let tlbc = mem.read_ptr(code + tlbc_off).ok()?;
        if !objects::plausible_ptr(tlbc) {
            return None;
        }
        let size = mem.read_i64(tlbc).ok()?;
        if i64::from(idx) >= size {
            return None;
        }
        let entry = mem.read_ptr(tlbc + 8 + 8 * idx as u64).ok()?;
        within(entry)
    }

    /// Whether `tp` is the type named `name`, remembering the first match.
    fn is_type(
        &mut self,
        mem: &dyn Memory,
        tp: u64,
        name: &str,
        slot: fn(&mut Self) -> &mut Option<u64>,
    ) -> bool {
        if let Some(known) = *slot(self) {
            return known == tp;
        }
        if objects::plausible_ptr(tp) && objects::type_named(&self.layout, mem, tp, name) {
            *slot(self) = Some(tp);
            return true;
        }
        false
    }

    /// Reads (or finds in the cache) the code object at `code`, returning
    /// its info and bytecode size in bytes. `Ok(None)` if it is not a code object.
    fn code_info(&mut self, mem: &dyn Memory, code: u64) -> Result<Option<(Arc<CodeInfo>, u64)>> {
        let cl = self.layout.code.clone();
        let o = self.layout.obj.clone();
        let mut raw = [0u8; 512];
        let raw = raw
            .get_mut(..usize::try_from(cl.read_size)?)
            .context("code layout reads more than 512 bytes")?;
        let raw = match mem.read(code, raw) {
            Ok(()) => &*raw,
            Err(e) => {
                // A small non-code object near the end of a mapping (3.13+
                // executables can be anything): decide by its type alone.
                let tp = mem.read_ptr(code + o.ob_type).unwrap_or(0);
                if tp != 0 && !self.is_type(mem, tp, "code", |s| &mut s.code_type) {
                    return Ok(None);
                }
                return Err(e.context(format!("reading code object at {code:#x}")));
            }
        };
        let b = Bytes(raw);
        let tp = b.u64(o.ob_type)?;
        if !self.is_type(mem, tp, "code", |s| &mut s.code_type) {
            return Ok(None);
        }
        let units = b.i64(o.ob_size)?;
        // 3.11+: ob_size counts code units; ≤3.10 it is unused (0).
        let code_bytes = if cl.code_adaptive.is_some() {
            if !(0..=(1 << 26)).contains(&units) {
                bail!("code object at {code:#x} has implausible size {units}");
            }
            units as u64 * 2
        } else {
            0
        };
        let key = [
            b.u64(cl.filename)?,
            b.u64(cl.name)?,
            match cl.qualname {
                Some(q) => b.u64(q)?,
                None => 0,
            },
            b.u64(cl.linetable)?,
            u64::from(b.u32(cl.firstlineno)?),
        ];
        if let Some(c) = self.code_cache.get(&code) {
            if c.key == key {
                return Ok(Some((c.clone(), code_bytes)));
            }
        }
        {
            let l = &self.layout;
            let file = objects::read_str(l, mem, key[0]).context("co_filename")?;
            let function = match cl.qualname {
                Some(_) => objects::read_str(l, mem, key[2])
                    .or_else(|_| objects::read_str(l, mem, key[1]))
                    .context("co_qualname / co_name")?,
                None => objects::read_str(l, mem, key[1]).context("co_name")?,
            };
            let table = objects::read_bytes(l, mem, key[3]).context("line table")?;
            let shim = l.minor >= 12 && file == "<shim>";
            if self.code_cache.len() >= CODE_CACHE_LIMIT {
                self.code_cache.clear();
                self.lines.clear();
            }
            self.next_serial += 1;
            let info = Arc::new(CodeInfo {
                key,
                function: function.into(),
                file: file.into(),
                firstlineno: key[4] as u32 as i32,
                table,
                shim,
                serial: self.next_serial,
            });
            self.code_cache.insert(code, info.clone());
            Ok(Some((info, code_bytes)))
        }
    }

    /// A `str` object to a `String` (compact ASCII, compact UCS1/2/4 and
    /// legacy strings), at most [`MAX_STR_CHARS`] code points ("…" if cut).
    pub fn read_str(&self, mem: &dyn Memory, addr: u64) -> Result<String> {
        objects::read_str(&self.layout, mem, addr)
    }

    /// `threading` thread names of the interpreter at `interp`: thread ident
    /// (`PyThreadState.thread_id`, the pthread_t) → `Thread._name` and `Thread._native_id`,
    /// from `sys.modules["threading"]._active`. Empty when `threading` is not
    /// imported (or the interpreter has no modules yet). Threads whose name
    /// cannot be read are left out.
    ///
    /// Idents are pthread_t values, which the C library reuses as soon as a thread is gone:
    /// callers match an entry to a thread by its `native_id` (the kernel TID) too.
    pub fn threading_names(
        &mut self,
        mem: &dyn Memory,
        interp: u64,
    ) -> Result<HashMap<u64, ThreadingName>> {
        self.threading_names_where(mem, interp, |_| true)
    }

    /// [`StackReader::threading_names`] of the threads whose ident `wanted` accepts only.
    ///
    /// What it costs, for a thread-per-request server where a new thread wants its name at
    /// nearly every sample: the `_active` dict's address is kept per interpreter (found
    /// through `sys.modules` at most every [`ACTIVE_DICT_FOR`], or when the kept one is no
    /// dict any more); its entries' int keys are read in one gather read; only the wanted
    /// `Thread` objects are read, through a page cache (an object, its class's shared keys
    /// and its attribute strings sit on a few pages).
    pub fn threading_names_where(
        &mut self,
        mem: &dyn Memory,
        interp: u64,
        wanted: impl Fn(u64) -> bool,
    ) -> Result<HashMap<u64, ThreadingName>> {
        check_ptr(interp, "interpreter state")?;
        let mut names = HashMap::new();
        let pages = PageCache::new(mem);
        let now = std::time::Instant::now();
        let kept = self
            .active_dicts
            .get(&interp)
            .filter(|(_, at)| now.duration_since(*at) < ACTIVE_DICT_FOR)
            .map(|&(d, _)| d)
            .filter(|&d| {
                objects::has_type_flag(&self.layout, mem, d, objects::TPFLAGS_DICT_SUBCLASS)
            });
        let active = match kept {
            Some(d) => d,
            None => {
                self.active_dicts.remove(&interp);
                match self.find_active_dict(&pages, interp)? {
                    Some(d) => {
                        if self.active_dicts.len() >= 4096 {
                            self.active_dicts.clear();
                        }
                        self.active_dicts.insert(interp, (d, now));
                        d
                    }
                    None => return Ok(names),
                }
            }
        };
        let l = &self.layout;
        let threads = objects::dict_items(l, mem, active).context("reading threading._active")?;
        // The int keys, in one gather read (ob_type and the digits of up to 64 bits).
        let span = objects::u64_long_span(l);
        let mut g = super::memory::Gather::default();
        for &(k, _) in &threads {
            g.add(k, span);
        }
        let gathered = g.run(mem).is_ok();
        let mut long_types: FxHashMap<u64, bool> = FxHashMap::default();
        for (i, &(key, thread)) in threads.iter().enumerate() {
            let ident = if gathered {
                let b = g.get(i);
                let Ok(tp) = b.u64(l.obj.ob_type) else {
                    continue;
                };
                let is_long = *long_types.entry(tp).or_insert_with(|| {
                    mem.read_u64(tp + l.obj.tp_flags)
                        .is_ok_and(|f| f & objects::TPFLAGS_LONG_SUBCLASS != 0)
                });
                if !is_long {
                    continue;
                }
                objects::decode_u64_long(l, b, key)
            } else {
                if !objects::has_type_flag(l, mem, key, objects::TPFLAGS_LONG_SUBCLASS) {
                    continue;
                }
                objects::read_u64_long(l, mem, key)
            };
            let Ok(ident) = ident else { continue };
            if !wanted(ident) {
                continue;
            }
            let Ok(attrs) = objects::instance_dict_items(l, &pages, thread) else {
                continue;
            };
            if let Some(name) = objects::lookup(l, &pages, &attrs, "_name") {
                if !objects::has_type_flag(l, &pages, name, objects::TPFLAGS_UNICODE_SUBCLASS) {
                    continue;
                }
                if let Ok(name) = objects::read_str(l, &pages, name) {
                    // `_native_id` is None until the thread has started (and on platforms
                    // without native ids); anything but an int is left as unknown.
                    let native_id = objects::lookup(l, &pages, &attrs, "_native_id")
                        .filter(|&v| {
                            objects::has_type_flag(l, &pages, v, objects::TPFLAGS_LONG_SUBCLASS)
                        })
                        .and_then(|v| objects::read_u64_long(l, &pages, v).ok());
                    names.insert(ident, ThreadingName { name, native_id });
                }
            }
        }
        Ok(names)
    }

    /// `sys.modules["threading"]._active` of the interpreter at `interp`; None when
    /// `threading` is not imported (or there is no `sys.modules` yet).
    fn find_active_dict(&self, mem: &dyn Memory, interp: u64) -> Result<Option<u64>> {
        let l = &self.layout;
        let modules = mem
            .read_ptr(interp + l.interp_modules)
            .context("reading sys.modules of the interpreter")?;
        if modules == 0 {
            return Ok(None);
        }
        if !objects::has_type_flag(l, mem, modules, objects::TPFLAGS_DICT_SUBCLASS) {
            bail!("sys.modules at {modules:#x} is not a dict");
        }
        let items = objects::dict_items(l, mem, modules).context("reading sys.modules")?;
        let Some(threading) = objects::lookup(l, mem, &items, "threading") else {
            return Ok(None);
        };
        let globals = objects::instance_dict_items(l, mem, threading)
            .context("reading the threading module's dict")?;
        let Some(active) = objects::lookup(l, mem, &globals, "_active") else {
            return Ok(None);
        };
        if !objects::has_type_flag(l, mem, active, objects::TPFLAGS_DICT_SUBCLASS) {
            bail!("threading._active at {active:#x} is not a dict");
        }
        Ok(Some(active))
    }
}
