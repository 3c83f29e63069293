//! Long GIL holds by native code, found in a stream of snapshots (`gilscope check`).
//!
//! A *hold episode* is a run of consecutive snapshots in which one thread holds its
//! interpreter's GIL while its innermost Python frame stays at the same address and the same
//! instruction: one call, in progress the whole time. Python code that keeps running moves its
//! instruction between samples and so never makes a long episode; a C function (an extension,
//! a builtin, a ctypes call) that runs without releasing the GIL does.
//!
//! Once an episode is older than [`HoldConfig::unwind_after_ns`], the detector asks a
//! [`NativeProbe`] to capture the thread's native stack, once; when the recording ends, the
//! captures of the long episodes are walked and [`attribute`]d: the innermost
//! frame outside the C library and the dynamic loader, preferring an extension's frame over the
//! interpreter's own. An episode attributed to the bytecode loop itself is Python code, not a
//! finding.
//!
//! Pure: snapshots in, episodes out. The probe (ptrace + .eh_frame unwinding, src/reader/native.rs)
//! is handed in by the CLI.
//!
//! Limits (documented in docs/ci.md): a release shorter than the sampling period goes unseen
//! (the episode looks continuous), and back-to-back calls of one C function from one Python
//! instruction, with no bytecode caught between them, count as one call.

use std::collections::HashMap;

use serde::Serialize;

use crate::model::{FrameInfo, GilState, Snapshot};

/// One native frame of a thread, innermost first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NativeFrame {
    /// The instruction address.
    pub addr: u64,
    /// Path of the mapped file ("" when the address is in no file).
    pub object: String,
    /// Demangled symbol, when the object has one for the address.
    pub symbol: Option<String>,
    /// The address as an offset into the object's file (what `addr2line -e OBJECT` and gdb
    /// take), when the address is in a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_offset: Option<u64>,
    /// `symbol` is only the nearest exported symbol before the address (a stripped object
    /// keeps just its `.dynsym`): the code is at or after it, not surely in it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub approximate: bool,
}

impl NativeFrame {
    /// "heavy::crunch(long)", "~dumps" (nearest exported symbol), or "orjson.so+0x1a2b3"
    /// (no symbol: the file offset), "0x7f…" outside any file.
    pub fn label(&self) -> String {
        let obj = basename(&self.object);
        match (&self.symbol, self.file_offset) {
            (Some(s), _) if self.approximate => format!("~{s}"),
            (Some(s), _) => s.clone(),
            (None, Some(off)) if !obj.is_empty() => format!("{obj}+{off:#x}"),
            _ => format!("{:#x}", self.addr),
        }
    }
}

/// Where a native stack says the thread is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Attribution {
    /// Running native code: this object and symbol.
    Native {
        object: String,
        symbol: Option<String>,
        /// The frame is in the interpreter (libpython or the python executable): a builtin,
        /// not an extension.
        interpreter: bool,
    },
    /// Running bytecode: not a native hold.
    Python,
    /// The stack could not be read (the reason).
    Unknown { reason: String },
}

/// The C function a thread's innermost Python frame is calling, read from the frame's value
/// stack (no unwinding): a hold is still named by it when its native stack cannot be walked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CCall {
    /// `ml_name` (`Type.name` for a method of a C type, the `__name__` of a ctypes function).
    pub name: String,
    /// The module it belongs to, when memory says (`m_module`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// The file mapped at its machine code (`ml_meth`), "" when in none.
    pub object: String,
    /// The machine code's address.
    pub addr: u64,
}

/// Reads a thread's native stack, in two steps so that sampling is never held up by the slow
/// one: [`capture`](Self::capture) stops the thread for a moment and keeps what an unwind needs
/// (registers, the top of the stack); [`resolve`](Self::resolve) walks and names it later —
/// when the hold has ended — possibly loading object files. Implemented over ptrace +
/// .eh_frame by src/reader/native.rs; tests script it.
pub trait NativeProbe {
    /// Returns a token for [`resolve`](Self::resolve), or why the thread could not be read.
    fn capture(&mut self, pid: u32, tid: u32) -> Result<u64, String>;

    /// The native stack captured under `token`, innermost first (the capture is freed).
    fn resolve(&mut self, token: u64) -> Result<Vec<NativeFrame>, String>;

    /// Frees a capture that will not be resolved.
    fn discard(&mut self, _token: u64) {}

    /// How long threads were stopped in all (ptrace), for the report.
    fn paused(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    /// The C function the Python frame at `frame` (the innermost one of thread `tid`) is
    /// calling, read from memory while the call is in progress: the name a hold gets when its
    /// native stack says nothing. None by default.
    fn current_call(&mut self, _pid: u32, _tid: u32, _frame: u64) -> Option<CCall> {
        None
    }
}

/// A probe that never unwinds (native attribution off).
pub struct NoProbe(pub String);

impl NativeProbe for NoProbe {
    fn capture(&mut self, _pid: u32, _tid: u32) -> Result<u64, String> {
        Err(self.0.clone())
    }

    fn resolve(&mut self, _token: u64) -> Result<Vec<NativeFrame>, String> {
        Err(self.0.clone())
    }
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The C library, the loader, the vDSO, libffi and the C++/gcc runtimes: frames a hold passes
/// through but is never *about*.
pub fn is_system_object(path: &str) -> bool {
    let b = basename(path);
    path.is_empty()
        || b.starts_with('[')
        || b.contains("vdso")
        || [
            "libc.so",
            "libc-",
            "libpthread",
            "ld-linux",
            "ld-musl",
            "libm.so",
            "libm-",
            "libdl",
            "librt",
            "libgcc_s",
            "libstdc++",
        ]
        .iter()
        .any(|p| b.starts_with(p))
}

/// libpython, the python executable, or one of the standard library's own extension modules
/// (`lib-dynload/_random…so`, `_json`, `_pickle`: CPython's code, shipped with it).
pub fn is_interpreter_object(path: &str, python_binary: &str) -> bool {
    let b = basename(path);
    b.starts_with("libpython")
        || b.starts_with("python")
        || path.contains("/lib-dynload/")
        || (!path.is_empty() && path == python_binary)
}

/// The bytecode loop: a frame here means Python code is running.
fn is_eval_loop(symbol: Option<&str>) -> bool {
    symbol.is_some_and(|s| {
        s.contains("_PyEval_EvalFrameDefault")
            || s == "_PyEval_EvalFrame"
            || s.contains("PyEval_EvalFrameEx")
    })
}

/// CPython's call machinery: the frames between the bytecode loop and the C function it calls.
fn is_call_machinery(symbol: Option<&str>) -> bool {
    symbol.is_some_and(|s| {
        let l = s.to_ascii_lowercase();
        l.contains("vectorcall")
            || l.starts_with("_pyobject_call")
            || l.starts_with("pyobject_call")
            || l.starts_with("_pyfunction_")
            || l.starts_with("cfunction_call")
            || l.starts_with("method_vectorcall")
            || l.starts_with("slot_tp_call")
            || l.starts_with("_py_call")
    })
}

/// Rust's and C++'s standard libraries, as compiled into an extension.
fn is_language_runtime(symbol: Option<&str>) -> bool {
    symbol.is_some_and(|s| {
        let s = s.trim_start_matches('<');
        [
            "std::",
            "core::",
            "alloc::",
            "__rust",
            "__gnu_cxx::",
            "__cxxabiv1::",
        ]
        .iter()
        .any(|p| s.starts_with(p))
    })
}

/// ctypes' way into a foreign function: the frame just inside it is the function called.
fn is_ctypes_trampoline(path: &str) -> bool {
    let b = basename(path);
    b.starts_with("libffi") || b.starts_with("_ctypes.")
}

fn native(f: &NativeFrame, interpreter: bool) -> Attribution {
    Attribution::Native {
        object: f.object.clone(),
        // "~dumps": only the nearest exported symbol before the code (a stripped object).
        symbol: f.symbol.as_ref().map(|s| {
            if f.approximate {
                format!("~{s}")
            } else {
                s.clone()
            }
        }),
        interpreter,
    }
}

/// Which native code a stack is in (see the module docs): the innermost extension frame; for a
/// foreign function called through ctypes, that function (even in the C library); for code of
/// the interpreter itself, the C function the bytecode loop called (`builtin_sum`, not the
/// deallocator it happens to be in).
pub fn attribute(frames: &[NativeFrame], python_binary: &str) -> Attribution {
    let mut interp_frames: Vec<&NativeFrame> = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        if is_ctypes_trampoline(&f.object) {
            if let Some(callee) = i.checked_sub(1).and_then(|j| frames.get(j)) {
                if interp_frames.is_empty() {
                    return native(callee, false);
                }
            }
            continue;
        }
        if is_system_object(&f.object) {
            continue;
        }
        if is_interpreter_object(&f.object, python_binary) {
            if is_eval_loop(f.symbol.as_deref()) {
                // Reached the bytecode loop without passing an extension.
                return match interp_frames
                    .iter()
                    .rev()
                    .find(|g| !is_call_machinery(g.symbol.as_deref()))
                    .or(interp_frames.first())
                {
                    Some(g) => native(g, true),
                    None => Attribution::Python,
                };
            }
            interp_frames.push(f);
            continue;
        }
        // In the extension: its innermost frame that is not the language runtime compiled
        // into it (std::thread::sleep in a Rust extension, std:: algorithms in C++).
        // The innermost named one: a stripped object's unnamed frames are passed for the
        // first frame with a name (exact, else the nearest exported symbol).
        let own_frames = || frames[i..].iter().take_while(|g| g.object == f.object);
        let own = own_frames()
            .find(|g| {
                g.symbol.is_some() && !g.approximate && !is_language_runtime(g.symbol.as_deref())
            })
            .or_else(|| {
                own_frames()
                    .find(|g| g.symbol.is_some() && !is_language_runtime(g.symbol.as_deref()))
            })
            .unwrap_or(f);
        return native(own, false);
    }
    match interp_frames.first() {
        Some(g) => native(g, true),
        None if frames.is_empty() => Attribution::Unknown {
            reason: "empty native stack".into(),
        },
        None => Attribution::Unknown {
            reason: "only C-library frames".into(),
        },
    }
}

/// Snapshots a long episode needs at the least (see [`HoldConfig::max_gap_ns`]).
pub const MIN_EPISODE_SAMPLES: u32 = 3;

/// Thresholds of the detector.
#[derive(Debug, Clone, Copy)]
pub struct HoldConfig {
    /// Episodes at least this long are reported.
    pub max_hold_ns: u64,
    /// Unwind the native stack once an episode is this old (before the call can end).
    pub unwind_after_ns: u64,
    /// The sampling period: an episode's ends are extended by half the distance to the
    /// neighbouring snapshots, but by at most this much (a starved sampler's hole is not
    /// credited as a hold).
    pub period_ns: u64,
    /// A gap between two snapshots of an episode counts at most this much towards the limit,
    /// and a long episode needs at least [`MIN_EPISODE_SAMPLES`] snapshots: when the sampler
    /// is starved (a loaded CI machine), two or three snapshots far apart that happen to see
    /// the same instruction of a loop are not taken for one long call. Half the limit: a
    /// real hold is still found by a sampler that manages one snapshot per quarter limit.
    pub max_gap_ns: u64,
}

impl HoldConfig {
    /// `period_ns`: the sampling period asked for.
    pub fn new(max_hold_ns: u64, period_ns: u64) -> Self {
        HoldConfig {
            max_hold_ns,
            // Half the threshold: early enough to catch a call that just passes it.
            unwind_after_ns: (max_hold_ns / 2).max(1),
            period_ns: period_ns.max(1),
            max_gap_ns: (4 * period_ns).max(max_hold_ns / 2),
        }
    }
}

/// One long native hold, as found.
#[derive(Debug, Clone, Serialize)]
pub struct Episode {
    pub pid: u32,
    pub tid: u32,
    pub thread_name: String,
    /// The interpreter whose GIL was held.
    pub interpreter: i64,
    /// The GIL's address (interpreters sharing a GIL share it).
    pub gil_address: u64,
    /// First and last snapshot that saw the call (monotonic ns).
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    /// Estimated length: from midway between the snapshot before and the first one, to midway
    /// between the last one and the snapshot after.
    pub duration_ns: u64,
    /// The Python stack, innermost first.
    pub python_stack: Vec<FrameInfo>,
    pub native_stack: Vec<NativeFrame>,
    pub attribution: Attribution,
    /// The share (0–1) of the episode's snapshots in which its interpreter's garbage collector
    /// was running (`gc.collecting`, read from the interpreter): 1 for a collection that held
    /// the GIL from start to end.
    pub gc_share: f64,
    /// The C function the innermost Python frame was calling (read from memory when the
    /// native stack was captured).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub c_call: Option<CCall>,
    /// The hold is named after [`c_call`](Self::c_call) because the native stack could not
    /// name it: where the walk stopped and why ("native stack stopped at clock_gettime
    /// ([vdso]): only C-library frames").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub named_from_call: Option<String>,
}

impl Episode {
    /// The part of the episode the garbage collector ran.
    pub fn gc_ns(&self) -> u64 {
        (self.duration_ns as f64 * self.gc_share.clamp(0.0, 1.0)) as u64
    }
}

/// One garbage collection seen in an interpreter: a run of consecutive snapshots in which its
/// `gc.collecting` flag was set. Collections shorter than the sampling period are mostly not
/// seen; the count is of collections *seen*.
#[derive(Debug, Clone, Serialize)]
pub struct GcPause {
    pub pid: u32,
    pub interpreter: i64,
    /// The thread that held the interpreter's GIL meanwhile — the one collecting — when known.
    pub tid: Option<u32>,
    pub thread_name: String,
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    /// Estimated as for [`Episode::duration_ns`].
    pub duration_ns: u64,
    /// The collecting thread's Python stack when the collection was first seen, innermost
    /// first: its first frame is the line whose allocation (or `gc.collect()`) started it.
    pub python_stack: Vec<FrameInfo>,
}

#[derive(Debug)]
struct OpenGc {
    before_ns: Option<u64>,
    first_ns: u64,
    last_ns: u64,
    tid: Option<u32>,
    thread_name: String,
    stack: Vec<FrameInfo>,
}

/// Estimated extent of a run of snapshots from `first` to `last`: each end is extended by half
/// the distance to the neighbouring snapshot (`before`, `after`), by at most `period`.
fn run_extent(before: Option<u64>, first: u64, last: u64, after: Option<u64>, period: u64) -> u64 {
    let start = match before {
        Some(b) => first - ((first - b.min(first)) / 2).min(period),
        None => first,
    };
    let end = match after {
        Some(a) => last + ((a.max(last) - last) / 2).min(period),
        None => last,
    };
    end.saturating_sub(start)
}

#[derive(Debug)]
struct Open {
    key: (i64, u64, (u64, Option<i64>)),
    before_ns: Option<u64>,
    first_ns: u64,
    last_ns: u64,
    thread_name: String,
    stack: Vec<FrameInfo>,
    /// The capture's token, or why there is none.
    native: Option<Result<u64, String>>,
    /// The C function the frame was calling when the capture was made.
    call: Option<CCall>,
    /// Snapshots seen, and those of them in which the interpreter's GC was running.
    samples: u32,
    gc_samples: u32,
    /// The time between first and last snapshot that samples actually cover: each gap
    /// between two snapshots counts at most [`HoldConfig::max_gap_ns`].
    covered_ns: u64,
}

/// Finds long native holds in one process's snapshots.
#[derive(Debug)]
pub struct HoldDetector {
    cfg: HoldConfig,
    pid: Option<u32>,
    python_binary: String,
    open: HashMap<u32, Open>,
    last_snapshot_ns: Option<u64>,
    /// Long episodes, with their captures still to be walked.
    found: Vec<(Episode, Option<Result<u64, String>>)>,
    /// Open garbage collections, by interpreter.
    open_gc: HashMap<i64, OpenGc>,
    gc_found: Vec<GcPause>,
    /// Native unwinds asked for (each pauses one thread briefly).
    pub unwinds: u64,
}

/// What a [`HoldDetector`] found in a process.
#[derive(Debug, Default)]
pub struct Found {
    /// Long holds, in time order.
    pub episodes: Vec<Episode>,
    /// Every garbage collection seen, in time order.
    pub gc_pauses: Vec<GcPause>,
}

impl HoldDetector {
    pub fn new(cfg: HoldConfig) -> Self {
        HoldDetector {
            cfg,
            pid: None,
            python_binary: String::new(),
            open: HashMap::new(),
            last_snapshot_ns: None,
            found: Vec::new(),
            open_gc: HashMap::new(),
            gc_found: Vec::new(),
            unwinds: 0,
        }
    }

    /// Feeds one snapshot (in time order).
    pub fn observe(&mut self, snap: &Snapshot, probe: &mut dyn NativeProbe) {
        self.pid = Some(snap.pid);
        if self.python_binary.is_empty() {
            self.python_binary = snap.python.binary.clone();
        }
        let now = snap.time_ns;
        let mut seen: Vec<u32> = Vec::new();
        for t in &snap.threads {
            if t.gil_state != GilState::Held {
                continue;
            }
            let Some(position) = t.position else {
                continue;
            };
            let gil = snap
                .interpreter(t.interpreter)
                .map(|i| i.gil.address)
                .unwrap_or(0);
            let key = (t.interpreter, gil, position);
            seen.push(t.tid);
            let same = self.open.get(&t.tid).is_some_and(|o| o.key == key);
            if !same {
                if let Some(old) = self.open.remove(&t.tid) {
                    self.close(t.tid, old, Some(now), probe);
                }
                self.open.insert(
                    t.tid,
                    Open {
                        key,
                        before_ns: self.last_snapshot_ns,
                        first_ns: now,
                        last_ns: now,
                        thread_name: t.name.clone(),
                        stack: t.frames.clone(),
                        native: None,
                        call: None,
                        samples: 0,
                        gc_samples: 0,
                        covered_ns: 0,
                    },
                );
            }
            let gc = snap
                .interpreter(t.interpreter)
                .is_some_and(|i| i.gc_collecting == Some(true));
            let Some(o) = self.open.get_mut(&t.tid) else {
                continue;
            };
            o.covered_ns += now.saturating_sub(o.last_ns).min(self.cfg.max_gap_ns);
            o.last_ns = now;
            o.samples += 1;
            o.gc_samples += u32::from(gc);
            if o.native.is_none() && now.saturating_sub(o.first_ns) >= self.cfg.unwind_after_ns {
                self.unwinds += 1;
                o.native = Some(probe.capture(snap.pid, t.tid));
                o.call = probe.current_call(snap.pid, t.tid, position.0);
            }
        }
        let ended: Vec<u32> = self
            .open
            .keys()
            .copied()
            .filter(|tid| !seen.contains(tid))
            .collect();
        for tid in ended {
            if let Some(o) = self.open.remove(&tid) {
                self.close(tid, o, Some(now), probe);
            }
        }
        self.observe_gc(snap);
        self.last_snapshot_ns = Some(now);
    }

    /// Opens, extends and closes each interpreter's garbage collections.
    fn observe_gc(&mut self, snap: &Snapshot) {
        let now = snap.time_ns;
        for i in &snap.interpreters {
            let collecting = i.gc_collecting == Some(true);
            match (collecting, self.open_gc.contains_key(&i.id)) {
                (true, true) => {
                    if let Some(g) = self.open_gc.get_mut(&i.id) {
                        g.last_ns = now;
                    }
                }
                (true, false) => {
                    let holder = i.gil.holder_tid.and_then(|tid| snap.thread(tid));
                    self.open_gc.insert(
                        i.id,
                        OpenGc {
                            before_ns: self.last_snapshot_ns,
                            first_ns: now,
                            last_ns: now,
                            tid: holder.map(|t| t.tid),
                            thread_name: holder.map(|t| t.name.clone()).unwrap_or_default(),
                            stack: holder.map(|t| t.frames.clone()).unwrap_or_default(),
                        },
                    );
                }
                (false, true) => {
                    if let Some(g) = self.open_gc.remove(&i.id) {
                        self.close_gc(i.id, g, Some(now));
                    }
                }
                (false, false) => {}
            }
        }
        // An interpreter that went away mid-collection.
        let gone: Vec<i64> = self
            .open_gc
            .keys()
            .copied()
            .filter(|id| snap.interpreter(*id).is_none())
            .collect();
        for id in gone {
            if let Some(g) = self.open_gc.remove(&id) {
                self.close_gc(id, g, Some(now));
            }
        }
    }

    fn close_gc(&mut self, interpreter: i64, g: OpenGc, after_ns: Option<u64>) {
        self.gc_found.push(GcPause {
            pid: self.pid.unwrap_or(0),
            interpreter,
            tid: g.tid,
            thread_name: g.thread_name,
            first_seen_ns: g.first_ns,
            last_seen_ns: g.last_ns,
            duration_ns: run_extent(
                g.before_ns,
                g.first_ns,
                g.last_ns,
                after_ns,
                self.cfg.period_ns,
            ),
            python_stack: g.stack,
        });
    }

    fn close(&mut self, tid: u32, o: Open, after_ns: Option<u64>, probe: &mut dyn NativeProbe) {
        let duration = run_extent(
            o.before_ns,
            o.first_ns,
            o.last_ns,
            after_ns,
            self.cfg.period_ns,
        );
        // What the samples cover (gaps capped), with the same ends: the test for "long".
        let covered = o.covered_ns + duration.saturating_sub(o.last_ns - o.first_ns);
        if duration.min(covered) < self.cfg.max_hold_ns || o.samples < MIN_EPISODE_SAMPLES {
            if let Some(Ok(token)) = o.native {
                probe.discard(token);
            }
            return;
        }
        // Walked at the end, not now: loading object files for the walk takes long in a
        // debug build, and the sampler must not miss the next hold meanwhile.
        self.found.push((
            Episode {
                pid: self.pid.unwrap_or(0),
                tid,
                thread_name: o.thread_name,
                interpreter: o.key.0,
                gil_address: o.key.1,
                first_seen_ns: o.first_ns,
                last_seen_ns: o.last_ns,
                duration_ns: duration,
                python_stack: o.stack,
                native_stack: Vec::new(),
                attribution: Attribution::Unknown {
                    reason: "not unwound".into(),
                },
                gc_share: f64::from(o.gc_samples) / f64::from(o.samples.max(1)),
                c_call: o.call,
                named_from_call: None,
            },
            o.native,
        ));
    }

    /// Ends every open episode (the recording stopped) and returns all long ones found.
    pub fn finish(self, probe: &mut dyn NativeProbe) -> Vec<Episode> {
        self.finish_all(probe).episodes
    }

    /// Ends every open episode and collection; returns the long holds and the collections.
    pub fn finish_all(mut self, probe: &mut dyn NativeProbe) -> Found {
        let open: Vec<(u32, Open)> = self.open.drain().collect();
        for (tid, o) in open {
            self.close(tid, o, None, probe);
        }
        let open_gc: Vec<(i64, OpenGc)> = self.open_gc.drain().collect();
        for (id, g) in open_gc {
            self.close_gc(id, g, None);
        }
        let mut episodes = Vec::new();
        for (mut e, native) in std::mem::take(&mut self.found) {
            let (native_stack, attribution) = match native {
                Some(Ok(token)) => match probe.resolve(token) {
                    Ok(frames) => {
                        let a = attribute(&frames, &self.python_binary);
                        (frames, a)
                    }
                    Err(reason) => (Vec::new(), Attribution::Unknown { reason }),
                },
                Some(Err(reason)) => (Vec::new(), Attribution::Unknown { reason }),
                None => (
                    Vec::new(),
                    Attribution::Unknown {
                        reason: "not unwound".into(),
                    },
                ),
            };
            if attribution == Attribution::Python {
                continue;
            }
            let attribution = match (attribution, &e.c_call) {
                (Attribution::Unknown { reason }, Some(c)) if !c.object.is_empty() => {
                    e.named_from_call = Some(match native_stack.last() {
                        Some(f) => format!(
                            "native stack stopped at {} ({}): {reason}",
                            f.label(),
                            basename(&f.object)
                        ),
                        None => format!("native stack unavailable: {reason}"),
                    });
                    Attribution::Native {
                        object: c.object.clone(),
                        symbol: Some(c.name.clone()),
                        interpreter: is_interpreter_object(&c.object, &self.python_binary),
                    }
                }
                (a, _) => a,
            };
            e.native_stack = native_stack;
            e.attribution = attribution;
            episodes.push(e);
        }
        episodes.sort_by_key(|e| (e.first_seen_ns, e.tid));
        self.gc_found
            .sort_by_key(|g| (g.first_seen_ns, g.interpreter));
        Found {
            episodes,
            gc_pauses: self.gc_found,
        }
    }
}

/// A GIL hold seen exactly (uprobes on take/drop): `tid` held from `start_ns` to `end_ns`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExactHold {
    pub tid: u32,
    pub start_ns: u64,
    pub end_ns: u64,
}

/// Exact mode's correction of sampled episodes: a release shorter than the sampling period is
/// invisible to samples but not to the probes. Each episode is cut to the exact holds of its
/// thread that overlap it; the longest piece is its duration, and an episode with no piece of
/// at least `max_hold_ns` is dropped. `holds` need only contain holds of at least
/// `max_hold_ns` (shorter ones can never make a finding).
pub fn refine_with_exact(
    episodes: Vec<Episode>,
    holds: &[ExactHold],
    max_hold_ns: u64,
) -> Vec<Episode> {
    episodes
        .into_iter()
        .filter_map(|mut e| {
            // The episode's extent, widened by half its estimated slack on each side.
            let slack = e
                .duration_ns
                .saturating_sub(e.last_seen_ns.saturating_sub(e.first_seen_ns));
            let (a, b) = (
                e.first_seen_ns.saturating_sub(slack / 2),
                e.last_seen_ns.saturating_add(slack / 2),
            );
            let longest = holds
                .iter()
                .filter(|h| h.tid == e.tid)
                .map(|h| b.min(h.end_ns).saturating_sub(a.max(h.start_ns)))
                .max()
                .unwrap_or(0);
            (longest >= max_hold_ns).then(|| {
                e.duration_ns = longest;
                e
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
