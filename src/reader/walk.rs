//! One reading of the whole process: interpreters, GILs, thread states,
//! stacks, turned into a [`Snapshot`].
//!
//! Nothing is read atomically with respect to the target. Each GIL is read
//! once before and once after the walk; if any changed hands in between, or
//! a list was torn (a back-pointer that does not point back, a cycle), the
//! reading is retried. A GIL that never settles is reported with an unknown
//! holder and a warning, never a guess.

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;

// Maps keyed by target addresses and TIDs, on every sample: a fast hash (no DoS to fear).
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use crate::model::{
    FrameInfo, GilInfo, GilState, InterpreterInfo, PythonInfo, Snapshot, ThreadInfo, ThreadStateRef,
};

use super::debug_offsets::DebugOffsets;
use super::error::{ReadError, ReadErrorKind};
use super::layout::{HoldsGil, Layout};
use super::memory::{Bytes, Gather, Memory, MemoryExt, ProcessMem};
use super::oncpu::{OnCpu, OnCpuSource};
use super::procfs::{self, SyscallState, TaskStat};
use super::runtime;
use super::stack::{StackLayout, StackReader};

/// Samples a read-ahead plan is kept while every walk stays within it.
const REPLAN_EVERY: u32 = 64;
/// A thread state's frame field is read with the state when it lies within this many bytes
/// of the start of the struct (it always does, on every version known).
const FRAME_FIELD_REACH: u64 = 512;
/// Upper bounds on list walks: a torn list must not loop forever.
const MAX_INTERPRETERS: usize = 4096;
const MAX_THREAD_STATES: usize = 100_000;
/// `SYS_futex` on x86_64.
const SYS_FUTEX: i64 = 202;
/// `INT_MAX`: a free-threaded GIL enabled for good.
const GIL_PERMANENT: i32 = i32::MAX;

#[derive(Debug, Clone)]
pub struct ReaderOptions {
    /// Pause the target (ptrace) while reading.
    pub blocking: bool,
    /// Read Python stacks.
    pub stacks: bool,
    /// Read `threading` names (from the target's `threading._active`).
    pub thread_names: bool,
    /// Re-read this many times when the target changed during a reading.
    pub max_retries: u32,
    /// Follow each thread's on/off-CPU state through perf context-switch records where
    /// permitted (else `/proc/TID/stat` at every sample; see [`super::oncpu`]). Default on,
    /// unless the environment says `GILSCOPE_ONCPU=stat`.
    pub switch_records: bool,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        Self {
            blocking: false,
            stacks: true,
            thread_names: true,
            max_retries: 8,
            switch_records: std::env::var("GILSCOPE_ONCPU").map_or(true, |v| v != "stat"),
        }
    }
}

/// A process we can read snapshots from.
pub struct Reader {
    pid: u32,
    mem: ProcessMem,
    runtime: u64,
    layout: Layout,
    stacks: Option<StackReader>,
    python: PythonInfo,
    opts: ReaderOptions,
    /// ≤3.10: offset of `tid` inside glibc's `struct pthread`.
    pthread_tid_offset: Option<u64>,
    /// `threading` names of the live threads (see [`Reader::thread_names`]).
    names: HashMap<NameKey, String>,
    /// Threads an interpreter's `threading` did not know at the last look (not registered
    /// yet, or threads that entered it from another interpreter), and when to look again.
    name_misses: HashMap<NameKey, NameMiss>,
    /// When each interpreter's `threading._active` was last read.
    names_read_at: HashMap<u64, std::time::Instant>,
    /// `/proc/PID/task/*` files kept open between samples.
    task_files: std::cell::RefCell<procfs::TaskFiles>,
    /// The lists as last read (None: discover them at the next reading).
    plan: Option<Plan>,
    /// Reused buffers of the gather reads.
    gather: Gather,
    /// What the last sample's stack walks read, to read ahead in one go at the next.
    stack_plan: Vec<(u64, usize)>,
    stack_plan_age: u32,
    stack_buf: Vec<u8>,
    /// Each thread's on/off-CPU state.
    oncpu: OnCpu,
}

/// A thread unknown to an interpreter's `threading` is looked for again at every reading for
/// [`NAME_MISS_EAGER`] after it was first missed (a new thread registers in `threading._active`
/// only once it has run a little Python: on a busy GIL that can take a switch interval or
/// more), then every [`NAME_MISS_RETRY`] (threads that entered from another interpreter, C
/// threads).
const NAME_MISS_EAGER: std::time::Duration = std::time::Duration::from_millis(250);
const NAME_MISS_RETRY: std::time::Duration = std::time::Duration::from_secs(1);
/// How often an interpreter's `threading._active` is read again anyway (renamed threads).
const NAME_REFRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// Whose name a cached `threading` name is: a thread state's interpreter and ident, and the
/// OS thread (TID + start time, which no later thread shares).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct NameKey {
    interp: u64,
    ident: u64,
    tid: u32,
    start_ticks: u64,
}

#[derive(Debug, Clone, Copy)]
struct NameMiss {
    /// Look again at the first reading from then on.
    next: std::time::Instant,
    /// When the thread was first missed.
    since: std::time::Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct GilWord {
    enabled: Option<i32>,
    locked: i32,
    last_holder: u64,
    switch_number: u64,
}

#[derive(Debug, Clone)]
struct RawInterp {
    addr: u64,
    id: i64,
    gil_addr: u64,
    own_gil: bool,
    threads_main: u64,
    /// `gc.collecting` was non-zero: its garbage collector was running.
    gc_collecting: Option<bool>,
    /// `_code_object_generation` (3.14+).
    code_gen: Option<u64>,
}

#[derive(Debug, Clone)]
struct RawTstate {
    addr: u64,
    interp_addr: u64,
    interp_id: i64,
    thread_id: u64,
    tid: u32,
    active: Option<bool>,
    holds_flag: Option<bool>,
    gil_requested: Option<bool>,
    state: Option<i32>,
    whence: Option<i32>,
    /// The stack layout's frame field of the thread state (`current_frame`, `cframe` or
    /// `frame`), read with the state.
    frame_field: Option<u64>,
}

/// Where the lists were at the last reading: [`Reader::read_planned`] reads exactly these
/// addresses in one gather read and checks every link against them; any difference (a thread
/// or interpreter came or went) sends it back to [`Reader::discover`].
#[derive(Debug, Default, Clone)]
struct Plan {
    interps: Vec<PlanInterp>,
    /// Every distinct GIL, in first-seen order.
    gils: Vec<u64>,
}

#[derive(Debug, Clone)]
struct PlanInterp {
    addr: u64,
    gil_addr: u64,
    tstates: Vec<PlanTstate>,
}

#[derive(Debug, Clone)]
struct PlanTstate {
    addr: u64,
    /// ≤3.10: the `pthread_t` the thread state named, and where its TID is read.
    pthread: u64,
    tid_at: Option<u64>,
}

struct RawReading {
    interps: Vec<RawInterp>,
    tstates: Vec<RawTstate>,
    gils: BTreeMap<u64, GilWord>,
    tstate_current: u64,
    /// GILs whose word changed between the first and the last part of the reading.
    moved: Vec<u64>,
}

impl Reader {
    /// Attaches to `pid`: checks access, finds the runtime, picks a layout.
    /// Never pauses the target (unless `opts.blocking`, and then only while reading).
    pub fn attach(pid: u32, opts: ReaderOptions) -> Result<Reader> {
        runtime::check_process(pid)?;
        // Whatever went wrong, a process that is gone (or became a zombie)
        // meanwhile is reported as such, not as the symptom it caused.
        Self::attach_inner(pid, opts).map_err(|e| match runtime::check_process(pid) {
            Err(gone) => gone,
            Ok(()) => e,
        })
    }

    fn attach_inner(pid: u32, opts: ReaderOptions) -> Result<Reader> {
        let process = remoteprocess::Process::new(pid as remoteprocess::Pid)
            .with_context(|| format!("opening process {pid}"))?;
        let loc = runtime::locate(pid, &process)?;
        let mem = ProcessMem { process };

        // Reading the runtime's first bytes doubles as the permission check
        // for memory reads (maps may be readable when memory is not).
        let mut probe = [0u8; 8];
        if let Err(e) = mem.read(loc.address, &mut probe) {
            if let Some(ReadErrorKind::PermissionDenied) = super::error::classify(&e) {
                return Err(runtime::permission_denied(pid));
            }
            if runtime::check_process(pid).is_err() {
                return Err(ReadError::new(
                    ReadErrorKind::NoProcess,
                    format!("process {pid} exited"),
                )
                .into());
            }
            return Err(e.context("reading _PyRuntime"));
        }

        let debug = DebugOffsets::read(&mem, loc.address).context("reading _Py_DebugOffsets")?;
        let (layout, stack_layout) = match &debug {
            Some(d) => {
                let minor = (d.header.version_hex >> 16) & 0xff;
                let layout = Layout::from_debug_offsets(d)
                    .map_err(|e| unsupported(format!("Python 3.{minor}: {e:#}")))?;
                let sl = StackLayout::from_debug_offsets(minor, d)
                    .map_err(|e| unsupported(format!("Python 3.{minor} stacks: {e:#}")))?;
                (layout, sl)
            }
            None => {
                let Some((major, minor, micro, flags)) = loc.version.clone() else {
                    return Err(unsupported(format!(
                        "could not tell which CPython version {} is (no debug offsets, \
                         no version string found)",
                        loc.binary
                    )));
                };
                if major != 3 || !(9..=12).contains(&minor) {
                    return Err(unsupported(format!(
                        "Python {major}.{minor}.{micro}{flags} is not supported \
                         (gilscope supports CPython 3.9 to 3.15)"
                    )));
                }
                let hex = runtime::version_hex(major, minor, micro, &flags);
                let layout = Layout::builtin(minor, hex)?;
                let Some(sl) = StackLayout::builtin(minor) else {
                    return Err(unsupported(format!("no stack layout for Python 3.{minor}")));
                };
                (layout, sl)
            }
        };
        let version = runtime::version_string(layout.version_hex);
        let python = PythonInfo {
            version: version.clone(),
            version_hex: layout.version_hex,
            free_threaded: layout.free_threaded,
            binary: loc.binary.clone(),
            runtime_found_by: loc.found_by.to_string(),
            offsets_from: layout.source.to_string(),
        };
        let mut reader = Reader {
            pid,
            mem,
            runtime: loc.address,
            layout,
            stacks: Some(StackReader::new(stack_layout)),
            python,
            opts: opts.clone(),
            pthread_tid_offset: None,
            names: HashMap::default(),
            name_misses: HashMap::default(),
            names_read_at: HashMap::default(),
            task_files: Default::default(),
            plan: None,
            gather: Gather::default(),
            stack_plan: Vec::new(),
            stack_plan_age: 0,
            stack_buf: Vec::new(),
            oncpu: OnCpu::new(opts.switch_records),
        };
        reader.validate().map_err(|e| {
            unsupported(format!(
                "the memory of {} (Python {version}) does not match gilscope's layout for it: {e:#}",
                loc.binary
            ))
        })?;
        if reader.layout.tstate.native_thread_id.is_none() {
            reader.pthread_tid_offset = Some(reader.calibrate_pthread_tid()?);
        }
        // Open the main thread's switch events now: whether perf is permitted is known (and
        // said) before the first sample.
        let now = monotonic_ns();
        let _ = reader
            .oncpu
            .stat(reader.task_files.get_mut(), pid, pid, now);
        Ok(reader)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn python(&self) -> &PythonInfo {
        &self.python
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// A reader of the C function each Python frame is calling (its own handle on the
    /// process, so it can be used beside this reader); None when stacks are not read.
    pub fn call_reader(&self) -> Option<super::stack::CallReader> {
        let layout = self.stacks.as_ref()?.layout().clone();
        super::stack::CallReader::new(self.pid, layout).ok()
    }

    /// Where the threads' on/off-CPU state comes from, and why not from switch records when
    /// they were asked for and refused.
    pub fn oncpu_source(&self) -> (OnCpuSource, Option<&str>) {
        (self.oncpu.source(), self.oncpu.refused())
    }

    /// Checks that the main interpreter is where the layout says, with id 0
    /// and pointing back at the runtime.
    fn validate(&self) -> Result<()> {
        let l = &self.layout;
        let main = self
            .mem
            .read_ptr(self.runtime + l.runtime.interpreters_main)
            .context("reading interpreters.main")?;
        if main == 0 {
            bail!("the runtime has no main interpreter yet (still starting, or finalized)");
        }
        let id = self
            .mem
            .read_i64(main + l.interp.id)
            .context("reading the main interpreter's id")?;
        if id != 0 {
            bail!("main interpreter id reads {id}, expected 0");
        }
        if let Some(off) = l.interp.runtime {
            let back = self.mem.read_ptr(main + off)?;
            if back != self.runtime {
                bail!(
                    "main interpreter's runtime pointer {back:#x} is not _PyRuntime {:#x}",
                    self.runtime
                );
            }
        }
        if let Some(off) = l.interp.ceval_gil {
            let gil = self.mem.read_ptr(main + off)?;
            if gil == 0 {
                bail!("main interpreter has no GIL pointer");
            }
        }
        Ok(())
    }

    /// ≤3.10 record only the `pthread_t`; the kernel TID is inside glibc's
    /// `struct pthread`. Find that offset: in the main thread's struct the
    /// TID equals the PID.
    fn calibrate_pthread_tid(&self) -> Result<u64> {
        let main_pthread = self
            .mem
            .read_u64(self.runtime + self.layout.runtime.main_thread)
            .context("reading _PyRuntime.main_thread")?;
        if main_pthread == 0 {
            bail!("_PyRuntime.main_thread is not set");
        }
        let bytes = self
            .mem
            .read_vec(main_pthread, 2048)
            .context("reading the main thread's struct pthread")?;
        let b = Bytes(&bytes);
        let pid = self.pid;
        // glibc 2.x x86_64 keeps `tid` at 0x2d0 (720); try that first.
        let mut candidates: Vec<u64> = vec![0x2d0];
        candidates.extend((0..2048u64 - 4).step_by(4).filter(|&o| o != 0x2d0));
        for off in candidates {
            if b.u32(off).ok() == Some(pid) {
                return Ok(off);
            }
        }
        Err(unsupported(
            "could not find the thread id inside the C library's thread structure \
             (gilscope knows glibc on x86_64)"
                .to_string(),
        ))
    }

    fn parse_gil(&self, b: Bytes<'_>) -> Result<GilWord> {
        let g = &self.layout.gil;
        Ok(GilWord {
            enabled: match g.enabled {
                Some(o) => Some(b.i32(o)?),
                None => None,
            },
            locked: b.i32(g.locked)?,
            last_holder: b.u64(g.last_holder)?,
            switch_number: b.u64(g.switch_number)?,
        })
    }

    /// Walks the interpreter and thread-state lists pointer by pointer, to learn where
    /// everything is (see [`Plan`]). Only when the last plan no longer matches.
    /// Walks the interpreter and thread lists through `mem` (the process, or a reading that
    /// found them changed in front of it).
    fn discover(&self, mem: &dyn Memory) -> Result<Plan> {
        let l = &self.layout;
        let mut plan = Plan::default();
        let mut seen = HashSet::default();
        let mut total = 0usize;
        let mut addr = mem.read_ptr(self.runtime + l.runtime.interpreters_head)?;
        while addr != 0 {
            if !seen.insert(addr) || plan.interps.len() >= MAX_INTERPRETERS {
                bail!("interpreter list loops (torn read)");
            }
            let gil_addr = match (
                l.interp.ceval_gil.zip(l.interp.own_gil),
                l.runtime.runtime_gil,
            ) {
                (Some((g, _)), _) => {
                    let ptr = mem.read_ptr(addr + g)?;
                    if ptr == 0 {
                        bail!("interpreter at {addr:#x} has no GIL pointer (being created or destroyed)");
                    }
                    ptr
                }
                (None, Some(g)) => self.runtime + g,
                (None, None) => bail!("layout has no GIL"),
            };
            let mut tstates = Vec::new();
            let mut ts_seen = HashSet::default();
            let mut ts = mem.read_ptr(addr + l.interp.threads_head)?;
            while ts != 0 {
                total += 1;
                if !ts_seen.insert(ts) || total > MAX_THREAD_STATES {
                    bail!("thread list of the interpreter at {addr:#x} loops (torn read)");
                }
                let (pthread, tid_at) = match (l.tstate.native_thread_id, self.pthread_tid_offset) {
                    (None, Some(off)) => {
                        let pthread = mem.read_u64(ts + l.tstate.thread_id)?;
                        // A thread whose `struct pthread` is gone (or not there yet) has no
                        // TID to read: its thread state names no live thread.
                        let at = (pthread != 0 && mem.read_u32(pthread + off).is_ok())
                            .then_some(pthread + off);
                        (pthread, at)
                    }
                    _ => (0, None),
                };
                tstates.push(PlanTstate {
                    addr: ts,
                    pthread,
                    tid_at,
                });
                ts = mem.read_ptr(ts + l.tstate.next)?;
            }
            if !plan.gils.contains(&gil_addr) {
                plan.gils.push(gil_addr);
            }
            plan.interps.push(PlanInterp {
                addr,
                gil_addr,
                tstates,
            });
            addr = mem.read_ptr(addr + l.interp.next)?;
        }
        Ok(plan)
    }

    /// Reads everything the plan names in one gather read, and checks every link against
    /// it. `Ok(None)`: the lists changed since the plan was made (discover again).
    fn read_planned(&self, plan: &Plan, gather: &mut Gather) -> Result<Option<RawReading>> {
        let l = &self.layout;
        let (ri, t) = (&l.interp, &l.tstate);
        gather.clear();
        let head = gather.add(self.runtime + l.runtime.interpreters_head, 8);
        let current = l
            .runtime
            .tstate_current
            .map(|o| gather.add(self.runtime + o, 8));
        let opt = |g: &mut Gather, base: u64, off: Option<u64>, len: u64| {
            off.map(|o| g.add(base + o, len))
        };
        struct Parts {
            id: usize,
            runtime: Option<usize>,
            gil: Option<usize>,
            own: Option<usize>,
            main: Option<usize>,
            gc: Option<usize>,
            code_gen: Option<usize>,
            next: usize,
            threads: usize,
        }
        let mut iparts = Vec::with_capacity(plan.interps.len());
        for i in &plan.interps {
            let a = i.addr;
            iparts.push(Parts {
                id: gather.add(a + ri.id, 8),
                runtime: opt(gather, a, ri.runtime, 8),
                gil: opt(gather, a, ri.ceval_gil, 8),
                own: opt(gather, a, ri.own_gil, 4),
                main: opt(gather, a, ri.threads_main, 8),
                gc: opt(gather, a, ri.gc_collecting, 4),
                code_gen: opt(gather, a, ri.code_object_generation, 8),
                next: gather.add(a + ri.next, 8),
                threads: gather.add(a + ri.threads_head, 8),
            });
        }
        let gparts: Vec<usize> = plan
            .gils
            .iter()
            .map(|&g| gather.add(g, l.gil.read_size))
            .collect();
        // The thread state's frame pointer is read with it (one part, not another read per
        // stack), unless it lies too far into the struct.
        let frame_field = self
            .stacks
            .as_ref()
            .filter(|_| self.opts.stacks)
            .map(|s| s.layout().frame.tstate_frame)
            .filter(|&o| o + 8 <= t.read_size.max(FRAME_FIELD_REACH));
        let ts_size = match frame_field {
            Some(o) => t.read_size.max(o + 8),
            None => t.read_size,
        };
        let mut tparts = Vec::new();
        for i in &plan.interps {
            for ts in &i.tstates {
                let tid = ts.tid_at.map(|at| gather.add(at, 4));
                tparts.push((gather.add(ts.addr, ts_size), tid));
            }
        }
        // Every GIL again, last: the kernel copies the parts in order, so a GIL whose two
        // copies agree did not move while the lists were read.
        let gparts_after: Vec<usize> = plan
            .gils
            .iter()
            .map(|&g| gather.add(g, l.gil.read_size))
            .collect();
        if let Err(e) = gather.run(&self.mem) {
            if super::error::classify(&e) == Some(ReadErrorKind::NoProcess) {
                return Err(e);
            }
            // Freed memory where a planned structure was: the lists changed.
            return Ok(None);
        }

        if gather.get(head).u64(0)? != plan.interps.first().map_or(0, |i| i.addr) {
            return Ok(None);
        }
        let tstate_current = match current {
            Some(c) => gather.get(c).u64(0)?,
            None => 0,
        };
        let mut gils = BTreeMap::new();
        let mut moved = Vec::new();
        for ((&addr, &p), &after) in plan.gils.iter().zip(&gparts).zip(&gparts_after) {
            let word = self.parse_gil(gather.get(p))?;
            if self.parse_gil(gather.get(after))? != word {
                moved.push(addr);
            }
            gils.insert(addr, word);
        }
        let mut interps = Vec::with_capacity(plan.interps.len());
        let mut tstates = Vec::new();
        let mut tparts = tparts.into_iter();
        for (n, (i, p)) in plan.interps.iter().zip(&iparts).enumerate() {
            let addr = i.addr;
            let next_planned = plan.interps.get(n + 1).map_or(0, |x| x.addr);
            if gather.get(p.next).u64(0)? != next_planned
                || gather.get(p.threads).u64(0)? != i.tstates.first().map_or(0, |x| x.addr)
            {
                return Ok(None);
            }
            let id = gather.get(p.id).i64(0)?;
            if id < 0 {
                bail!("interpreter at {addr:#x} has id {id} (torn read)");
            }
            if let Some(r) = p.runtime {
                if gather.get(r).u64(0)? != self.runtime {
                    bail!(
                        "interpreter at {addr:#x} does not point back to the runtime (torn read)"
                    );
                }
            }
            let own_gil = match (p.gil, p.own) {
                (Some(g), Some(o)) => {
                    let ptr = gather.get(g).u64(0)?;
                    if ptr != i.gil_addr {
                        return Ok(None);
                    }
                    let own = gather.get(o).i32(0)?;
                    let own_by_ptr = ri.embedded_gil.map(|e| addr + e) == Some(ptr);
                    if !(own == 0 || own == 1) || (own == 1) != own_by_ptr {
                        bail!("interpreter {id}: own_gil {own} disagrees with its GIL pointer");
                    }
                    own_by_ptr
                }
                // ≤3.11: the main interpreter (id 0) owns the single GIL.
                _ => id == 0,
            };
            interps.push(RawInterp {
                addr,
                id,
                gil_addr: i.gil_addr,
                own_gil,
                threads_main: match p.main {
                    Some(m) => gather.get(m).u64(0)?,
                    None => 0,
                },
                gc_collecting: match p.gc {
                    Some(g) => Some(gather.get(g).i32(0)? != 0),
                    None => None,
                },
                code_gen: match p.code_gen {
                    Some(g) => Some(gather.get(g).u64(0)?),
                    None => None,
                },
            });
            for (k, planned) in i.tstates.iter().enumerate() {
                let ts = planned.addr;
                let Some((part, tid_part)) = tparts.next() else {
                    bail!("thread-state parts out of step with the plan");
                };
                let b = gather.get(part);
                let next_planned = i.tstates.get(k + 1).map_or(0, |x| x.addr);
                if b.u64(t.next)? != next_planned {
                    return Ok(None);
                }
                let interp_addr = b.u64(t.interp)?;
                if interp_addr != addr {
                    bail!(
                        "thread state {ts:#x} in interpreter {id} points to another interpreter (torn read)"
                    );
                }
                let thread_id = b.u64(t.thread_id)?;
                let tid = match (t.native_thread_id, tid_part) {
                    (Some(o), _) => b.u64(o)? as u32,
                    // A thread state that took another pthread since: plan again.
                    (None, _) if thread_id != planned.pthread => return Ok(None),
                    (None, Some(tp)) => gather.get(tp).u32(0)?,
                    (None, None) => 0,
                };
                let mut raw = self.parse_tstate(ts, b, interp_addr, id, thread_id, tid)?;
                raw.frame_field = match frame_field {
                    Some(o) => Some(b.u64(o)?),
                    None => None,
                };
                tstates.push(raw);
            }
        }
        if !interps.iter().any(|i| i.id == 0) {
            bail!("no main interpreter in the interpreter list");
        }
        Ok(Some(RawReading {
            interps,
            tstates,
            gils,
            tstate_current,
            moved,
        }))
    }

    fn parse_tstate(
        &self,
        addr: u64,
        b: Bytes<'_>,
        interp_addr: u64,
        interp_id: i64,
        thread_id: u64,
        tid: u32,
    ) -> Result<RawTstate> {
        let t = &self.layout.tstate;
        let status = match t.status {
            Some(o) => Some(b.u32(o)?),
            None => None,
        };
        let active = match (status, t.active_bit) {
            (Some(s), Some(bit)) => Some(s & (1 << bit) != 0),
            _ => None,
        };
        let holds_flag = match t.holds_gil {
            HoldsGil::FromGil => None,
            HoldsGil::StatusBit(bit) => status.map(|s| s & (1 << bit) != 0),
            HoldsGil::Int(o) => Some(b.i32(o)? != 0),
        };
        let opt_i32 = |off: Option<u64>| -> Result<Option<i32>> {
            Ok(match off {
                Some(o) => Some(b.i32(o)?),
                None => None,
            })
        };
        Ok(RawTstate {
            addr,
            interp_addr,
            interp_id,
            thread_id,
            tid,
            active,
            holds_flag,
            gil_requested: opt_i32(t.gil_requested)?.map(|v| v != 0),
            state: opt_i32(t.state)?,
            whence: opt_i32(t.whence)?,
            frame_field: None,
        })
    }

    /// One consistent-or-not reading of the lists and GILs: through the plan when it still
    /// matches (one system call), else after discovering the lists again.
    fn read_all(&mut self) -> Result<RawReading> {
        let mut gather = std::mem::take(&mut self.gather);
        let out = (|| {
            if let Some(plan) = &self.plan {
                if let Some(r) = self.read_planned(plan, &mut gather)? {
                    return Ok(r);
                }
                // The lists changed (a thread came or went): find them again through what
                // that reading holds, reading only what it does not (a new thread state).
                let again = gather
                    .as_memory(&self.mem)
                    .and_then(|m| self.discover(&m).ok());
                if let Some(plan) = again {
                    if let Some(r) = self.read_planned(&plan, &mut gather)? {
                        self.plan = Some(plan);
                        return Ok(r);
                    }
                }
            }
            self.plan = None;
            let plan = self.discover(&self.mem)?;
            let r = self.read_planned(&plan, &mut gather)?;
            self.plan = Some(plan);
            r.context("the interpreter or thread lists changed while being read (torn read)")
        })();
        if out.is_err() {
            self.plan = None;
        }
        self.gather = gather;
        out
    }

    /// Takes one snapshot. Retries torn readings; see the module docs.
    pub fn snapshot(&mut self) -> Result<Snapshot> {
        let _lock = if self.opts.blocking {
            Some(
                self.mem
                    .process
                    .lock()
                    .map_err(anyhow::Error::new)
                    .context("pausing the target (--blocking)")?,
            )
        } else {
            None
        };
        let mut last_err = None;
        let mut unsettled: Vec<u64> = Vec::new();
        for attempt in 0..=self.opts.max_retries {
            let time_ns = monotonic_ns();
            let raw = match self.read_all() {
                Ok(r) => r,
                Err(e) => {
                    // ESRCH: the process is exiting (its memory is gone even
                    // if /proc still shows it). Retrying cannot help.
                    if super::error::classify(&e) == Some(ReadErrorKind::NoProcess) {
                        return Err(ReadError::new(
                            ReadErrorKind::NoProcess,
                            format!("process {} exited", self.pid),
                        )
                        .into());
                    }
                    last_err = Some(e);
                    continue;
                }
            };
            // A reading is consistent only if no GIL moved while it was read (each GIL is read
            // first and last). Stacks are read once, after a consistent reading: retrying them
            // with the states made a busy many-thread target, whose GIL changes hands every
            // 5 ms, retry for ever.
            let moved = raw.moved.clone();
            if !moved.is_empty() && attempt < self.opts.max_retries {
                unsettled = moved;
                continue;
            }
            // The kernel's view of the threads the lists name (no listing of /proc/PID/task:
            // the interpreters' own lists say which threads there are).
            let tasks = self.task_stats(&raw)?;
            unsettled = moved;
            let frames = self.read_frames(&raw);
            return Ok(self.build(time_ns, attempt, &raw, &tasks, frames, &unsettled));
        }
        // Every attempt failed to read the lists.
        runtime::check_process(self.pid)?;
        let e = last_err.unwrap_or_else(|| anyhow::anyhow!("no reading"));
        let _ = unsettled;
        Err(anyhow::Error::new(ReadError::new(
            ReadErrorKind::Inconsistent,
            format!(
                "could not get a consistent reading of process {} after {} attempts: {e:#}",
                self.pid,
                self.opts.max_retries + 1
            ),
        )))
    }

    /// `/proc/PID/task/TID/stat` of every thread a thread state names, through kept handles.
    fn task_stats(&mut self, raw: &RawReading) -> Result<Vec<TaskStat>> {
        let files = self.task_files.get_mut();
        let now = monotonic_ns();
        let oncpu = &mut self.oncpu;
        let mut tids: Vec<u32> = raw
            .tstates
            .iter()
            .map(|t| t.tid)
            .filter(|&t| t != 0)
            .collect();
        tids.sort_unstable();
        tids.dedup();
        let out: Vec<TaskStat> = tids
            .iter()
            .filter_map(|&tid| oncpu.stat(files, self.pid, tid, now))
            .collect();
        if out.is_empty() && !raw.tstates.is_empty() {
            runtime::check_process(self.pid)?;
        }
        files.retain(|tid| out.binary_search_by_key(&tid, |t| t.tid).is_ok());
        oncpu.retain(|tid| out.binary_search_by_key(&tid, |t| t.tid).is_ok());
        Ok(out)
    }

    /// Python stacks of every thread state (innermost first), by address.
    fn read_frames(&mut self, raw: &RawReading) -> HashMap<u64, Vec<super::stack::RawFrame>> {
        let mut out = HashMap::default();
        if !self.opts.stacks {
            return out;
        }
        let Some(stacks) = self.stacks.as_mut() else {
            return out;
        };
        // 3.14+: a code object freed since the last sample (its address may hold another
        // now) drops what was cached by code-object address; while no interpreter's
        // generation moves, the cache needs no expiry by time.
        let gens: Option<Vec<(u64, u64)>> = raw
            .interps
            .iter()
            .map(|i| i.code_gen.map(|g| (i.addr, g)))
            .collect();
        stacks.code_generations(gens.as_deref());
        // One cache for every thread (they share code objects), reading ahead what the last
        // sample's walks read; a thread whose frames changed under us is read again a
        // little, each time with fresh pages.
        let shared = super::memory::ReadAhead::with_buffer(
            &self.mem,
            &self.stack_plan,
            std::mem::take(&mut self.stack_buf),
        );
        // A full walk (every so often per thread) reads the whole stack through pages of its
        // own: what only it reads is not read ahead at every sample.
        let pages = super::memory::PageCache::new(&self.mem);
        for ts in &raw.tstates {
            let mem: &dyn Memory = if stacks.next_walk_is_full(ts.addr) {
                &pages
            } else {
                &shared
            };
            if let Ok(f) = stacks.read_stack_from(mem, ts.addr, ts.frame_field) {
                out.insert(ts.addr, f);
                continue;
            }
            for _ in 0..2 {
                let fresh = super::memory::PageCache::new(&self.mem);
                if let Ok(f) = stacks.read_stack(&fresh, ts.addr) {
                    out.insert(ts.addr, f);
                    break;
                }
            }
        }
        if let Some(st) = self.stacks.as_mut() {
            if st.walks_kept() > raw.tstates.len() {
                let live: HashSet<u64> = raw.tstates.iter().map(|t| t.addr).collect();
                st.retain_walks(|ts| live.contains(&ts));
            }
        }
        // A walk served whole from what was read ahead keeps the plan (no sorting of what it
        // read); a new plan at least every REPLAN_EVERY samples drops spans no longer read.
        self.stack_plan_age += 1;
        if shared.all_read_ahead() && self.stack_plan_age < REPLAN_EVERY {
            self.stack_buf = shared.into_buffer();
        } else {
            (self.stack_plan, self.stack_buf) = shared.into_parts();
            self.stack_plan_age = 0;
        }
        out
    }

    /// The `threading` name of every thread of the reading: TID → name.
    ///
    /// Names are cached per (interpreter, ident, TID, start time): a pthread ident and even a
    /// TID are reused once their thread is gone, the pair of TID and start time is not. An
    /// interpreter's `threading._active` is read again when one of its threads has no cached
    /// name (see [`NAME_MISS_EAGER`] for how often) and at least every
    /// [`NAME_REFRESH`] (renamed threads). An entry whose `Thread._native_id` is not this
    /// TID belongs to another thread with the same ident (or was read while its object was
    /// being reused) and is not used. Entries of threads that are gone are dropped.
    fn thread_names(
        &mut self,
        raw: &RawReading,
        tasks: &HashMap<u32, &TaskStat>,
    ) -> HashMap<u32, String> {
        let mut out = HashMap::default();
        if !self.opts.thread_names {
            return out;
        }
        let now = std::time::Instant::now();
        let keys: Vec<(NameKey, &RawTstate)> = raw
            .tstates
            .iter()
            .filter_map(|t| {
                let task = tasks.get(&t.tid)?;
                Some((
                    NameKey {
                        interp: t.interp_addr,
                        ident: t.thread_id,
                        tid: t.tid,
                        start_ticks: task.start_ticks,
                    },
                    t,
                ))
            })
            .collect();
        for i in &raw.interps {
            let mine = || keys.iter().filter(|(k, _)| k.interp == i.addr);
            let refresh_due = self
                .names_read_at
                .get(&i.addr)
                .is_none_or(|at| now.duration_since(*at) >= NAME_REFRESH);
            let missing = mine().any(|(k, _)| {
                !self.names.contains_key(k) && self.name_misses.get(k).is_none_or(|m| now >= m.next)
            });
            if !(missing || (refresh_due && mine().next().is_some())) {
                continue;
            }
            let Some(stacks) = self.stacks.as_mut() else {
                continue;
            };
            // Between refreshes, only the threads still without a name are read.
            let wanted: Option<HashSet<u64>> = (!refresh_due).then(|| {
                mine()
                    .filter(|(k, _)| !self.names.contains_key(k))
                    .map(|(k, _)| k.ident)
                    .collect()
            });
            let active = stacks.threading_names_where(&self.mem, i.addr, |ident| {
                wanted.as_ref().is_none_or(|w| w.contains(&ident))
            });
            let Ok(active) = active else {
                continue;
            };
            if wanted.is_none() {
                self.names_read_at.insert(i.addr, now);
            }
            for (k, _) in mine() {
                // The entry must name this TID. One without a native id is not taken either:
                // every thread in `_active` has set it (3.8+ on Linux) before it is entered
                // there, so none means the object was read mid-change — a thread-per-request
                // server frees an ended thread's `Thread` and allocates the next one at the same
                // address, and the next one, not started yet, has `_native_id` None and the
                // next name (seen: Thread-98's name on Thread-97's TID).
                let found = active
                    .get(&k.ident)
                    .filter(|e| e.native_id == Some(u64::from(k.tid)));
                match found {
                    Some(e) => {
                        self.name_misses.remove(k);
                        self.names.insert(*k, e.name.clone());
                    }
                    // An ending thread leaves `_active` before its thread state goes: it
                    // keeps the name it had.
                    None if self.names.contains_key(k) => {}
                    None => {
                        // Not in `_active` under this thread: a thread that has not
                        // registered yet, or is not a `threading` thread of this interpreter.
                        let since = self.name_misses.get(k).map_or(now, |m| m.since);
                        let next = if now.duration_since(since) < NAME_MISS_EAGER {
                            now
                        } else {
                            now + NAME_MISS_RETRY
                        };
                        self.name_misses.insert(*k, NameMiss { next, since });
                    }
                }
            }
        }
        // Names from the main interpreter win (that is where `threading`
        // started the thread); sub-interpreters fill in the rest.
        let mut ordered: Vec<&(NameKey, &RawTstate)> = keys.iter().collect();
        let id_of: HashMap<u64, i64> = raw.interps.iter().map(|i| (i.addr, i.id)).collect();
        ordered.sort_by_key(|(k, _)| {
            std::cmp::Reverse(id_of.get(&k.interp).copied().unwrap_or(i64::MAX))
        });
        for (k, _) in ordered {
            if let Some(n) = self.names.get(k) {
                out.insert(k.tid, n.clone());
            }
        }
        // Forget threads (and interpreters) that are gone.
        let live: HashSet<NameKey> = keys.iter().map(|(k, _)| *k).collect();
        self.names.retain(|k, _| live.contains(k));
        self.name_misses.retain(|k, _| live.contains(k));
        let interps: HashSet<u64> = raw.interps.iter().map(|i| i.addr).collect();
        self.names_read_at.retain(|k, _| interps.contains(k));
        out
    }

    fn build(
        &mut self,
        time_ns: u64,
        retries: u32,
        raw: &RawReading,
        tasks: &[TaskStat],
        mut frames: HashMap<u64, Vec<super::stack::RawFrame>>,
        unsettled: &[u64],
    ) -> Snapshot {
        let l = &self.layout;
        let mut warnings = Vec::new();
        let task_by_tid: HashMap<u32, &TaskStat> = tasks.iter().map(|t| (t.tid, t)).collect();
        let interp_by_addr: HashMap<u64, &RawInterp> =
            raw.interps.iter().map(|i| (i.addr, i)).collect();
        let main_addr = raw
            .interps
            .iter()
            .find(|i| i.id == 0)
            .map(|i| i.addr)
            .unwrap_or(0);

        // Which thread state holds each GIL.
        let mut holder_of_gil: HashMap<u64, u64> = HashMap::default();
        for (&gil_addr, g) in &raw.gils {
            if unsettled.contains(&gil_addr) {
                continue;
            }
            if g.enabled == Some(0) || g.locked != 1 {
                continue;
            }
            let users: Vec<&RawTstate> = raw
                .tstates
                .iter()
                .filter(|t| {
                    interp_by_addr
                        .get(&t.interp_addr)
                        .is_some_and(|i| i.gil_addr == gil_addr)
                })
                .collect();
            let holder = match l.tstate.holds_gil {
                HoldsGil::FromGil => {
                    if raw.tstate_current != 0 && users.iter().any(|t| t.addr == raw.tstate_current)
                    {
                        Some(raw.tstate_current)
                    } else if users.iter().any(|t| t.addr == g.last_holder) {
                        Some(g.last_holder)
                    } else {
                        None
                    }
                }
                _ => {
                    let flagged: Vec<&&RawTstate> = users
                        .iter()
                        .filter(|t| t.holds_flag == Some(true))
                        .collect();
                    match flagged.as_slice() {
                        [one] => Some(one.addr),
                        // Between `locked = 1` and `holds_gil = 1`: the taker is `last_holder`.
                        [] if users.iter().any(|t| t.addr == g.last_holder) => Some(g.last_holder),
                        _ => None,
                    }
                }
            };
            if let Some(h) = holder {
                holder_of_gil.insert(gil_addr, h);
            }
        }
        let holder_tstates: HashSet<u64> = holder_of_gil.values().copied().collect();

        // Group thread states by OS thread.
        let mut by_tid: BTreeMap<u32, Vec<&RawTstate>> = BTreeMap::new();
        let mut dangling = 0usize;
        for ts in &raw.tstates {
            if ts.tid == 0 || !task_by_tid.contains_key(&ts.tid) {
                dangling += 1;
                continue;
            }
            by_tid.entry(ts.tid).or_default().push(ts);
        }
        if dangling > 0 {
            warnings.push(format!(
                "{dangling} thread state(s) name no live thread (exited, or not yet bound); not shown"
            ));
        }
        let names = self.thread_names(raw, &task_by_tid);

        let mut threads = Vec::new();
        for (tid, states) in &by_tid {
            let task = task_by_tid[tid];
            let has_frames = |t: &RawTstate| frames.get(&t.addr).is_some_and(|f| !f.is_empty());
            // Pick the thread state the thread is running in now.
            let pick = |pred: &dyn Fn(&RawTstate) -> bool| -> Option<&RawTstate> {
                let mut c: Vec<&RawTstate> = states.iter().copied().filter(|t| pred(t)).collect();
                c.sort_by_key(|t| std::cmp::Reverse(t.interp_id));
                c.first().copied()
            };
            let (current, evidence) = if let Some(t) = pick(&|t| holder_tstates.contains(&t.addr)) {
                (t, "holds_gil")
            } else if let Some(t) = pick(&|t| t.state == Some(1)) {
                (t, "attached")
            } else if let Some(t) = pick(&|t| t.active == Some(true)) {
                (t, "active")
            } else if states.len() == 1 {
                (states[0], "only")
            } else if let Some(t) = pick(&|t| t.interp_addr != main_addr && t.whence == Some(5)) {
                (t, "exec")
            } else if let Some(t) = pick(&|t| {
                t.interp_addr != main_addr
                    && interp_by_addr
                        .get(&t.interp_addr)
                        .is_some_and(|i| i.threads_main == t.addr)
            }) {
                (t, "runs_main")
            } else if let Some(t) = pick(&|t| t.interp_addr != main_addr && has_frames(t)) {
                (t, "innermost_stack")
            } else if let Some(t) = pick(&|t| t.interp_addr == main_addr) {
                (t, "main")
            } else {
                (states[0], "first")
            };
            let interp = interp_by_addr.get(&current.interp_addr).copied();
            let interp_id = current.interp_id;
            let gil_addr = interp.map(|i| i.gil_addr).unwrap_or(0);
            let gil = raw.gils.get(&gil_addr);
            let gil_unsettled = unsettled.contains(&gil_addr);
            let holds = holder_of_gil.get(&gil_addr) == Some(&current.addr);
            let gil_enabled = gil.is_none_or(|g| g.enabled != Some(0));

            let gil_state = if gil_unsettled {
                GilState::Unknown
            } else if !gil_enabled {
                if current.state == Some(1) {
                    GilState::Attached
                } else if task.on_cpu() {
                    GilState::Released
                } else {
                    GilState::Idle
                }
            } else if holds {
                GilState::Held
            } else if current.gil_requested == Some(true) {
                // 3.15 says so itself.
                GilState::Waiting
            } else {
                self.not_holding(*tid, task, gil_addr)
            };

            // Frames: current thread state first, then the others
            // (sub-interpreters newest first, main interpreter last).
            let mut order: Vec<&RawTstate> = states.clone();
            order.sort_by_key(|t| {
                (
                    t.addr != current.addr,
                    t.interp_addr == main_addr,
                    std::cmp::Reverse(t.interp_id),
                )
            });
            let mut thread_frames = Vec::new();
            let mut position = None;
            for t in &order {
                if let Some(fs) = frames.remove(&t.addr) {
                    if position.is_none() {
                        position = fs.first().map(|f| f.position);
                    }
                    thread_frames.extend(fs.into_iter().map(|f| FrameInfo {
                        function: f.function,
                        file: f.file,
                        line: f.line,
                        interpreter: t.interp_id,
                    }));
                }
            }
            let name = names.get(tid).cloned().unwrap_or_else(|| task.comm.clone());
            threads.push(ThreadInfo {
                tid: *tid,
                start_ticks: task.start_ticks,
                name,
                os_name: task.comm.clone(),
                interpreter: interp_id,
                holds_gil: holds,
                gil_state,
                on_cpu: task.on_cpu(),
                frames: thread_frames,
                thread_states: order
                    .iter()
                    .map(|t| ThreadStateRef {
                        interpreter: t.interp_id,
                        address: t.addr,
                        current: t.addr == current.addr,
                    })
                    .collect(),
                interpreter_evidence: evidence.to_string(),
                position,
            });
        }
        threads.sort_by_key(|t| (t.interpreter, t.tid));

        let tid_of: HashMap<u64, u32> = raw.tstates.iter().map(|t| (t.addr, t.tid)).collect();
        let mut interpreters: Vec<InterpreterInfo> = raw
            .interps
            .iter()
            .map(|i| {
                let g = raw.gils.get(&i.gil_addr).copied();
                let unsettled_gil = unsettled.contains(&i.gil_addr);
                let enabled = g.is_none_or(|g| g.enabled != Some(0));
                let ft_state = g.and_then(|g| g.enabled).map(|e| {
                    match e {
                        0 => "disabled",
                        GIL_PERMANENT => "permanent",
                        _ => "transient",
                    }
                    .to_string()
                });
                let holder_tid = holder_of_gil
                    .get(&i.gil_addr)
                    .and_then(|h| tid_of.get(h).copied())
                    .filter(|t| *t != 0);
                InterpreterInfo {
                    id: i.id,
                    main: i.id == 0,
                    own_gil: i.own_gil,
                    gil: GilInfo {
                        enabled,
                        locked: enabled && g.is_some_and(|g| g.locked == 1),
                        holder_tid: if unsettled_gil { None } else { holder_tid },
                        switch_number: g.map(|g| g.switch_number).unwrap_or(0),
                        address: i.gil_addr,
                        free_threaded_state: ft_state,
                    },
                    address: i.addr,
                    gc_collecting: i.gc_collecting,
                }
            })
            .collect();
        interpreters.sort_by_key(|i| i.id);
        for &g in unsettled {
            let ids: Vec<String> = interpreters
                .iter()
                .filter(|i| i.gil.address == g)
                .map(|i| i.id.to_string())
                .collect();
            warnings.push(format!(
                "the GIL of interpreter(s) {} changed hands during every reading; its holder is unknown",
                ids.join(", ")
            ));
        }
        Snapshot {
            pid: self.pid,
            time_ns,
            python: self.python.clone(),
            interpreters,
            threads,
            retries,
            warnings,
        }
    }

    /// The state of a thread that does not hold its (enabled) GIL, from its on-CPU state
    /// (switch records or `stat`) and, for a thread asleep by that, its
    /// `/proc/PID/task/TID/syscall` (read again only when the thread ran since; when the two
    /// disagree the later one wins):
    ///
    /// - asleep on a futex inside this GIL's condition variable or mutex (`take_gil`), or its
    ///   switch condition (`drop_gil`, asked to drop it and waiting until another thread
    ///   took it, before going for it again or on without it): waiting;
    /// - asleep in any other system call: idle;
    /// - runnable (`running`): released if its on-CPU state says runnable too (then
    ///   `syscall` is not read at all: it would say `running`). A runnable thread may be
    ///   on a CPU or queued for one, and the kernel shows neither its system call nor its
    ///   program counter then, so a preempted waiter cannot be told from a thread running C
    ///   code without the GIL; if it read asleep the thread woke between the two reads
    ///   (microseconds apart; from what, nothing tells): unknown;
    /// - not runnable and outside a system call (stopped, faulting a page in): unknown;
    /// - unreadable: from `stat` alone, released when runnable, idle when not.
    fn not_holding(&self, tid: u32, task: &TaskStat, gil_addr: u64) -> GilState {
        let g = &self.layout.gil;
        let in_gil = |addr: u64| {
            gil_addr != 0 && addr >= gil_addr + g.wait_begin && addr < gil_addr + g.switch_end
        };
        // A runnable thread's `syscall` file says `running`, whatever it does: no need to ask.
        let now = if task.on_cpu() {
            Some(SyscallState::Running)
        } else {
            self.task_files
                .borrow_mut()
                .syscall_unless_unchanged(self.pid, tid, task.switch_ins)
        };
        match now {
            Some(SyscallState::Blocked { nr, arg0 }) if nr == SYS_FUTEX && in_gil(arg0) => {
                GilState::Waiting
            }
            Some(SyscallState::Blocked { .. }) => GilState::Idle,
            Some(SyscallState::Running) if task.on_cpu() => GilState::Released,
            Some(SyscallState::Running) | Some(SyscallState::Outside { .. }) => GilState::Unknown,
            None if task.on_cpu() => GilState::Released,
            None => GilState::Idle,
        }
    }
}

fn unsupported(msg: String) -> anyhow::Error {
    ReadError::new(ReadErrorKind::Unsupported, msg).into()
}

/// CLOCK_MONOTONIC in nanoseconds (the clock exact-mode probes use too).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
