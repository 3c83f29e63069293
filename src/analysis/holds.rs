//! Long GIL holds by native code, found in a stream of snapshots (`gilscope check`).
//!
//! A *hold episode* is a run of consecutive snapshots in which one thread holds its
//! interpreter's GIL while its innermost Python frame stays at the same address and the same
//! instruction: one call, in progress the whole time. Python code that keeps running moves its
//! instruction between samples and so never makes a long episode; a C function (an extension,
//! a builtin, a ctypes call) that runs without releasing the GIL does.
//!
//! Once an episode is older than [`HoldConfig::unwind_after_ns`], the detector asks a
//! [`NativeProbe`] to capture the thread's native stack, once; when the episode ends (and only
//! if it was long) the capture is walked and [`attribute`]d: the innermost
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

/// libpython or the python executable.
pub fn is_interpreter_object(path: &str, python_binary: &str) -> bool {
    let b = basename(path);
    b.starts_with("libpython")
        || b.starts_with("python")
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
        symbol: f.symbol.clone(),
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
        let own = frames[i..]
            .iter()
            .take_while(|g| g.object == f.object)
            .find(|g| !is_language_runtime(g.symbol.as_deref()))
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
}

impl HoldConfig {
    /// `period_ns`: the sampling period asked for.
    pub fn new(max_hold_ns: u64, period_ns: u64) -> Self {
        HoldConfig {
            max_hold_ns,
            // Half the threshold: early enough to catch a call that just passes it.
            unwind_after_ns: (max_hold_ns / 2).max(1),
            period_ns: period_ns.max(1),
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
}

/// Finds long native holds in one process's snapshots.
#[derive(Debug)]
pub struct HoldDetector {
    cfg: HoldConfig,
    pid: Option<u32>,
    python_binary: String,
    open: HashMap<u32, Open>,
    last_snapshot_ns: Option<u64>,
    found: Vec<Episode>,
    /// Native unwinds asked for (each pauses one thread briefly).
    pub unwinds: u64,
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
                    },
                );
            }
            let Some(o) = self.open.get_mut(&t.tid) else {
                continue;
            };
            o.last_ns = now;
            if o.native.is_none() && now.saturating_sub(o.first_ns) >= self.cfg.unwind_after_ns {
                self.unwinds += 1;
                o.native = Some(probe.capture(snap.pid, t.tid));
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
        self.last_snapshot_ns = Some(now);
    }

    fn close(&mut self, tid: u32, o: Open, after_ns: Option<u64>, probe: &mut dyn NativeProbe) {
        let p = self.cfg.period_ns;
        let start = match o.before_ns {
            Some(b) => o.first_ns - ((o.first_ns - b.min(o.first_ns)) / 2).min(p),
            None => o.first_ns,
        };
        let end = match after_ns {
            Some(a) => o.last_ns + ((a.max(o.last_ns) - o.last_ns) / 2).min(p),
            None => o.last_ns,
        };
        let duration = end.saturating_sub(start);
        if duration < self.cfg.max_hold_ns {
            if let Some(Ok(token)) = o.native {
                probe.discard(token);
            }
            return;
        }
        let (native_stack, attribution) = match o.native {
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
            return;
        }
        self.found.push(Episode {
            pid: self.pid.unwrap_or(0),
            tid,
            thread_name: o.thread_name,
            interpreter: o.key.0,
            gil_address: o.key.1,
            first_seen_ns: o.first_ns,
            last_seen_ns: o.last_ns,
            duration_ns: duration,
            python_stack: o.stack,
            native_stack,
            attribution,
        });
    }

    /// Ends every open episode (the recording stopped) and returns all long ones found.
    pub fn finish(mut self, probe: &mut dyn NativeProbe) -> Vec<Episode> {
        let open: Vec<(u32, Open)> = self.open.drain().collect();
        for (tid, o) in open {
            self.close(tid, o, None, probe);
        }
        self.found.sort_by_key(|e| (e.first_seen_ns, e.tid));
        self.found
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
