//! One consistent reading of a CPython process: every interpreter, its GIL,
//! and every OS thread with the interpreter it is in and its Python stack.
//!
//! Pure data. The serde shape of [`Snapshot`] *is* the `gilscope dump --json`
//! format documented in docs/cli.md; change both together.

use serde::{Deserialize, Serialize};

/// The Python build the target runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PythonInfo {
    /// "3.13.0", "3.15.2", "3.14.0rc1".
    pub version: String,
    /// `PY_VERSION_HEX` when known (3.11+ or debug offsets), else built from the version.
    pub version_hex: u32,
    /// Free-threaded (`Py_GIL_DISABLED`, "3.13t") build.
    pub free_threaded: bool,
    /// The ELF file holding `_PyRuntime` (as seen from the target's root).
    pub binary: String,
    /// How the runtime was located: "symbol", "section".
    pub runtime_found_by: String,
    /// Where the structure offsets came from: "debug_offsets" (3.13+) or "builtin".
    pub offsets_from: String,
}

/// State of one GIL (a lock that may be shared by several interpreters).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GilInfo {
    /// False only on free-threaded builds while the GIL is disabled.
    pub enabled: bool,
    /// Lock word says taken. Meaningless (false) while `enabled` is false.
    pub locked: bool,
    /// Kernel TID of the thread holding it, when it is locked and the holder is known.
    pub holder_tid: Option<u32>,
    /// Incremented by CPython on every hand-over to a different thread.
    pub switch_number: u64,
    /// Address of the GIL structure; interpreters sharing a GIL share this.
    pub address: u64,
    /// Free-threaded builds: "disabled", "transient" (enabled while an
    /// extension module is being imported) or "permanent" (re-enabled, or
    /// forced by PYTHON_GIL=1). None on default builds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub free_threaded_state: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterpreterInfo {
    /// CPython's interpreter id: 0 is the main interpreter; ids are never reused.
    pub id: i64,
    pub main: bool,
    /// Has its own GIL (PEP 684). Always true for the main interpreter; false
    /// for every sub-interpreter before 3.12 (one GIL per process).
    pub own_gil: bool,
    pub gil: GilInfo,
    /// Address of the `PyInterpreterState`.
    pub address: u64,
    /// Its garbage collector was running at the reading (`gc.collecting`); None when the
    /// layout does not say where the flag is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gc_collecting: Option<bool>,
}

/// What a thread is doing with respect to its interpreter's GIL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GilState {
    /// Holds its interpreter's GIL (on or off CPU).
    Held,
    /// Wants the GIL and does not have it (known on 3.15+, or from exact mode).
    Waiting,
    /// Does not hold the GIL and runs on a CPU (native code that released it).
    Released,
    /// Does not hold the GIL and is not running (sleeping, blocked in I/O).
    Idle,
    /// Free-threaded build with the GIL disabled: attached to the interpreter
    /// and running Python code (no lock to hold).
    Attached,
    /// Could not be determined from this reading.
    Unknown,
}

impl GilState {
    pub fn as_str(self) -> &'static str {
        match self {
            GilState::Held => "held",
            GilState::Waiting => "waiting",
            GilState::Released => "released",
            GilState::Idle => "idle",
            GilState::Attached => "attached",
            GilState::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameInfo {
    /// Qualified name where the version has one (3.11+), else the plain name. Shared, not
    /// copied: the reader hands out the same name for every sample of a frame.
    pub function: std::sync::Arc<str>,
    pub file: std::sync::Arc<str>,
    /// 0 when the line is not known.
    pub line: i32,
    /// The interpreter this frame runs in (a thread can cross interpreters).
    pub interpreter: i64,
}

/// One `PyThreadState` found for a thread.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadStateRef {
    pub interpreter: i64,
    pub address: u64,
    /// This is the thread state the thread is running in now (best evidence).
    pub current: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadInfo {
    /// Kernel thread id (what `/proc/PID/task/TID` and `threading.get_native_id()` show).
    pub tid: u32,
    /// Kernel start time of the thread (clock ticks since boot, `/proc/PID/task/TID/stat`
    /// field 22). `(tid, start_ticks)` names one thread even when the kernel reuses TIDs.
    pub start_ticks: u64,
    /// The `threading` name where one exists, else the OS name.
    pub name: String,
    /// The OS thread name (`/proc/PID/task/TID/comm`).
    pub os_name: String,
    /// The interpreter the thread is currently in.
    pub interpreter: i64,
    /// Holds the GIL of `interpreter`.
    pub holds_gil: bool,
    pub gil_state: GilState,
    /// Running or runnable on a CPU (`R` in `/proc/PID/task/TID/stat`).
    pub on_cpu: bool,
    /// Innermost frame first, across interpreters.
    pub frames: Vec<FrameInfo>,
    /// Every thread state of this thread (one per interpreter it has entered).
    pub thread_states: Vec<ThreadStateRef>,
    /// How `interpreter` was decided ("attached", "holds_gil", "exec", "only", ...).
    pub interpreter_evidence: String,
    /// Where the innermost frame is: its address and current instruction offset. Equal in two
    /// samples ⇒ (almost surely) the same call still in progress. In memory only: not in
    /// `dump --json`, not in traces.
    #[serde(skip)]
    pub position: Option<(u64, Option<i64>)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub pid: u32,
    /// CLOCK_MONOTONIC nanoseconds when the reading started.
    pub time_ns: u64,
    pub python: PythonInfo,
    /// Main interpreter first, then by id.
    pub interpreters: Vec<InterpreterInfo>,
    /// Sorted by interpreter, then TID.
    pub threads: Vec<ThreadInfo>,
    /// Torn reads retried before this reading was accepted.
    pub retries: u32,
    /// Things the reader could not establish, said plainly.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl Snapshot {
    pub fn interpreter(&self, id: i64) -> Option<&InterpreterInfo> {
        self.interpreters.iter().find(|i| i.id == id)
    }

    pub fn thread(&self, tid: u32) -> Option<&ThreadInfo> {
        self.threads.iter().find(|t| t.tid == tid)
    }
}
