//! Where the fields gilscope reads live, per CPython version.
//!
//! 3.9–3.12: built-in tables, measured with gdb on the unstripped pyenv
//! builds 3.9.18, 3.10.13, 3.11.7, 3.12.1 (x86_64, glibc; default builds) and
//! cross-checked by reading live processes (shared/docs/cpython-internals.md
//! §2.2). 3.13+: from the target's own `_Py_DebugOffsets`, with the few fields
//! the table lacks derived from fields it has (each derivation is commented).

use anyhow::{bail, Result};

use super::debug_offsets::DebugOffsets;

/// How a thread state says "I hold my interpreter's GIL".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldsGil {
    /// No flag: compare with the GIL's `last_holder` / `tstate_current` (≤3.12).
    FromGil,
    /// A bit of the `_status` bitfield word at `tstate.status` (3.13).
    StatusBit(u32),
    /// An `int` field at this offset (3.14+).
    Int(u64),
}

#[derive(Debug, Clone)]
pub struct RuntimeOffsets {
    pub interpreters_head: u64,
    pub interpreters_main: u64,
    /// `pthread_t` of the main thread (used to calibrate pthread → TID on ≤3.10).
    pub main_thread: u64,
    /// ≤3.11: the one GIL, embedded in `_PyRuntime.ceval`.
    pub runtime_gil: Option<u64>,
    /// ≤3.11: `gilstate.tstate_current`.
    pub tstate_current: Option<u64>,
    /// `_finalizing` (non-NULL while the runtime shuts down).
    pub finalizing: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct InterpOffsets {
    pub next: u64,
    pub id: u64,
    pub threads_head: u64,
    /// 3.13+: `threads.main`, the thread state running `__main__` code.
    pub threads_main: Option<u64>,
    /// 3.12+: `ceval.gil`, a pointer to the GIL this interpreter uses.
    pub ceval_gil: Option<u64>,
    /// 3.12+: `ceval.own_gil` (int).
    pub own_gil: Option<u64>,
    /// 3.12+: the embedded `_gil` (used to cross-check `own_gil`).
    pub embedded_gil: Option<u64>,
    /// Back-pointer to `_PyRuntime`, for validation.
    pub runtime: Option<u64>,
    /// `gc.collecting` (int): non-zero while this interpreter's garbage collector runs
    /// (`interp->gc`, per interpreter since 3.9).
    pub gc_collecting: Option<u64>,
    /// 3.14+ (debug offsets): `_code_object_generation` (uint64), bumped whenever one of the
    /// interpreter's code objects is freed: the stack reader's caches by code-object address
    /// stay valid while it stands still.
    pub code_object_generation: Option<u64>,
    /// Bytes to read to cover every field above.
    pub read_size: u64,
}

#[derive(Debug, Clone)]
pub struct TstateOffsets {
    pub next: u64,
    pub interp: u64,
    /// `thread_id`: the `pthread_t`.
    pub thread_id: u64,
    /// `native_thread_id` (3.11+): the kernel TID.
    pub native_thread_id: Option<u64>,
    /// `_status` bitfield word (3.12+).
    pub status: Option<u64>,
    /// Bit of `_status.active` (3.12+).
    pub active_bit: Option<u32>,
    pub holds_gil: HoldsGil,
    /// 3.15+: `gil_requested` (int).
    pub gil_requested: Option<u64>,
    /// 3.13+: `state` (int): 0 detached, 1 attached, 2 suspended.
    pub state: Option<u64>,
    /// 3.13+: `_whence` (int): 5 = created by `_interpreters.exec`.
    pub whence: Option<u64>,
    /// Bytes to read to cover every field above.
    pub read_size: u64,
}

/// `struct _gil_runtime_state`, relative to the GIL's address.
#[derive(Debug, Clone)]
pub struct GilOffsets {
    /// Free-threaded builds: `int enabled`.
    pub enabled: Option<u64>,
    pub last_holder: u64,
    pub locked: u64,
    pub switch_number: u64,
    /// The condition variable waiters sleep on in `take_gil`, and the mutex;
    /// a futex address in `[wait_begin, wait_end)` means "waiting for the GIL".
    pub wait_begin: u64,
    pub wait_end: u64,
    /// `switch_cond` and `switch_mutex` follow, up to `switch_end`: a thread asked to drop
    /// the GIL sleeps there in `drop_gil` until another thread has taken it.
    pub switch_end: u64,
    /// Bytes to read to cover `enabled`..`switch_number`.
    pub read_size: u64,
}

#[derive(Debug, Clone)]
pub struct Layout {
    pub minor: u32,
    pub version_hex: u32,
    pub free_threaded: bool,
    pub runtime: RuntimeOffsets,
    pub interp: InterpOffsets,
    pub tstate: TstateOffsets,
    pub gil: GilOffsets,
    /// "debug_offsets" or "builtin".
    pub source: &'static str,
}

/// Default-build GIL: interval 0, last_holder 8, locked 16, switch_number 24,
/// cond 32, mutex 80, switch_cond 120, switch_mutex 168 (glibc x86_64).
fn default_gil() -> GilOffsets {
    GilOffsets {
        enabled: None,
        last_holder: 8,
        locked: 16,
        switch_number: 24,
        wait_begin: 32,
        wait_end: 120,
        switch_end: 208,
        read_size: 32,
    }
}

fn read_size(offsets: &[Option<u64>], width: u64) -> u64 {
    offsets.iter().flatten().max().copied().unwrap_or(0) + width
}

impl Layout {
    /// Built-in layout for 3.9–3.12.
    pub fn builtin(minor: u32, version_hex: u32) -> Result<Layout> {
        let (runtime, interp, tstate) = match minor {
            9 | 10 => (
                RuntimeOffsets {
                    interpreters_head: 32,
                    interpreters_main: 40,
                    main_thread: 72,
                    runtime_gil: Some(352),
                    tstate_current: Some(568),
                    finalizing: Some(24),
                },
                InterpOffsets {
                    next: 0,
                    id: 24,
                    threads_head: 8,
                    threads_main: None,
                    ceval_gil: None,
                    own_gil: None,
                    embedded_gil: None,
                    runtime: Some(16),
                    // gdb: &((PyInterpreterState*)0)->gc.collecting (3.9.18, 3.10.13)
                    gc_collecting: Some(816),
                    code_object_generation: None,
                    read_size: 32,
                },
                TstateOffsets {
                    next: 8,
                    interp: 16,
                    thread_id: 176,
                    native_thread_id: None,
                    status: None,
                    active_bit: None,
                    holds_gil: HoldsGil::FromGil,
                    gil_requested: None,
                    state: None,
                    whence: None,
                    read_size: 184,
                },
            ),
            11 => (
                RuntimeOffsets {
                    interpreters_head: 40,
                    interpreters_main: 48,
                    main_thread: 80,
                    runtime_gil: Some(360),
                    tstate_current: Some(576),
                    finalizing: Some(24),
                },
                InterpOffsets {
                    next: 0,
                    id: 48,
                    threads_head: 16,
                    threads_main: None,
                    ceval_gil: None,
                    own_gil: None,
                    embedded_gil: None,
                    runtime: Some(40),
                    // gdb: &((PyInterpreterState*)0)->gc.collecting (3.11.7)
                    gc_collecting: Some(848),
                    code_object_generation: None,
                    read_size: 56,
                },
                TstateOffsets {
                    next: 8,
                    interp: 16,
                    thread_id: 152,
                    native_thread_id: Some(160),
                    status: None,
                    active_bit: None,
                    holds_gil: HoldsGil::FromGil,
                    gil_requested: None,
                    state: None,
                    whence: None,
                    read_size: 168,
                },
            ),
            12 => (
                RuntimeOffsets {
                    interpreters_head: 40,
                    interpreters_main: 48,
                    main_thread: 64,
                    runtime_gil: None,
                    tstate_current: None,
                    finalizing: Some(24),
                },
                InterpOffsets {
                    next: 0,
                    id: 8,
                    threads_head: 72,
                    threads_main: None,
                    ceval_gil: Some(384),
                    own_gil: Some(392),
                    embedded_gil: Some(1040),
                    runtime: Some(96),
                    // gdb: &((PyInterpreterState*)0)->gc.collecting (3.12.1)
                    gc_collecting: Some(312),
                    code_object_generation: None,
                    read_size: 400,
                },
                TstateOffsets {
                    next: 8,
                    interp: 16,
                    thread_id: 136,
                    native_thread_id: Some(144),
                    status: Some(24),
                    // initialized, bound, unbound, bound_gilstate, active, ...
                    active_bit: Some(4),
                    holds_gil: HoldsGil::FromGil,
                    gil_requested: None,
                    state: None,
                    whence: None,
                    read_size: 152,
                },
            ),
            _ => bail!("no built-in layout for Python 3.{minor}"),
        };
        Ok(Layout {
            minor,
            version_hex,
            free_threaded: false,
            runtime,
            interp,
            tstate,
            gil: default_gil(),
            source: "builtin",
        })
    }

    /// Layout for 3.13+ from the target's `_Py_DebugOffsets`.
    pub fn from_debug_offsets(d: &DebugOffsets) -> Result<Layout> {
        let hex = d.header.version_hex;
        let minor = (hex >> 16) & 0xff;
        let ft = d.header.free_threaded;

        let interp_next = d.field("interpreter_state.next")?;
        let interp_id = d.field("interpreter_state.id")?;
        let threads_head = d.field("interpreter_state.threads_head")?;
        // 3.13's table has no threads_main; `struct pythreads` is
        // {next_unique_id, head, main, ...} there, so main = head + 8.
        let threads_main = match d.get("interpreter_state.threads_main") {
            Some(v) => v,
            None => threads_head + 8,
        };
        let ceval_gil = d.field("interpreter_state.ceval_gil")?;
        // `own_gil` (int) follows the `gil` pointer in `struct _ceval_state`
        // in every 3.12–3.15 layout; validated at run time (must be 0 or 1
        // and agree with the pointer test).
        let own_gil = ceval_gil + 8;
        let embedded_gil = d.field("interpreter_state.gil_runtime_state")?;
        // The table's locked/holder are offsets of the *embedded* GIL's
        // fields inside PyInterpreterState; make them relative to the GIL.
        let locked_abs = d.field("interpreter_state.gil_runtime_state_locked")?;
        let holder_abs = d.field("interpreter_state.gil_runtime_state_holder")?;
        if locked_abs < embedded_gil || holder_abs < embedded_gil {
            bail!("debug offsets: GIL fields lie before the GIL struct");
        }
        let locked = locked_abs - embedded_gil;
        let last_holder = holder_abs - embedded_gil;
        // `unsigned long switch_number` follows `int locked` (8-aligned).
        let switch_number = locked + 8;
        // cond, mutex follow switch_number; switch_cond after them (48 + 40).
        let wait_begin = switch_number + 8;
        let wait_end = wait_begin + 48 + 40;
        let switch_end = wait_end + 48 + 40;
        let enabled = if ft {
            Some(d.need("interpreter_state.gil_runtime_state_enabled")?)
        } else {
            None
        };

        let status = d.field("thread_state.status")?;
        // `_status` is a 32-bit bitfield word. 3.13: bits initialized,
        // bound, unbound, bound_gilstate, active, holds_gil, ... (holds_gil
        // = bit 5). 3.14: the bit is gone and `int holds_gil` follows
        // `_status` (status + 4), not exported. 3.15 exports it.
        let (holds_gil, gil_requested, whence, state) = match minor {
            13 => (HoldsGil::StatusBit(5), None, status + 4, status + 8),
            14 => (HoldsGil::Int(status + 4), None, status + 8, status + 12),
            _ => {
                let hg = d.field("thread_state.holds_gil")?;
                let gr = d.field("thread_state.gil_requested")?;
                // `_whence` and `state` follow `gil_requested`.
                (HoldsGil::Int(hg), Some(gr), gr + 4, gr + 8)
            }
        };
        let tstate = TstateOffsets {
            next: d.field("thread_state.next")?,
            interp: d.field("thread_state.interp")?,
            thread_id: d.field("thread_state.thread_id")?,
            native_thread_id: Some(d.field("thread_state.native_thread_id")?),
            status: Some(status),
            active_bit: Some(4),
            holds_gil,
            gil_requested,
            state: Some(state),
            whence: Some(whence),
            read_size: 0,
        };
        let mut tstate = tstate;
        tstate.read_size = read_size(
            &[
                Some(tstate.next),
                Some(tstate.interp),
                Some(tstate.thread_id),
                tstate.native_thread_id,
                tstate.status,
                tstate.gil_requested,
                tstate.state,
                tstate.whence,
                match tstate.holds_gil {
                    HoldsGil::Int(o) => Some(o),
                    _ => None,
                },
            ],
            8,
        );
        if let Some(size) = d.get("thread_state.size") {
            if tstate.read_size > size {
                bail!(
                    "debug offsets: derived thread-state fields exceed its size ({} > {size})",
                    tstate.read_size
                );
            }
        }

        let mut interp = InterpOffsets {
            next: interp_next,
            id: interp_id,
            threads_head,
            threads_main: Some(threads_main),
            ceval_gil: Some(ceval_gil),
            own_gil: Some(own_gil),
            embedded_gil: Some(embedded_gil),
            runtime: None,
            // `interp->gc` plus `collecting` inside `struct _gc_runtime_state`.
            gc_collecting: match (d.get("interpreter_state.gc"), d.get("gc.collecting")) {
                (Some(gc), Some(c)) => Some(gc + c),
                _ => None,
            },
            code_object_generation: d.get("interpreter_state.code_object_generation"),
            read_size: 0,
        };
        // Read each field on its own for 3.13+ (the struct is ~200 KB and
        // the fields are far apart); read_size covers the small head part.
        interp.read_size = 0;

        let runtime = RuntimeOffsets {
            interpreters_head: d.field("runtime_state.interpreters_head")?,
            // `interpreters.main` follows `interpreters.head`.
            interpreters_main: d.field("runtime_state.interpreters_head")? + 8,
            // `main_thread` is unused on 3.13+ (native_thread_id exists).
            main_thread: 0,
            runtime_gil: None,
            tstate_current: None,
            finalizing: Some(d.field("runtime_state.finalizing")?),
        };

        let gil = GilOffsets {
            enabled,
            last_holder,
            locked,
            switch_number,
            wait_begin,
            wait_end,
            switch_end,
            read_size: switch_number + 8,
        };
        Ok(Layout {
            minor,
            version_hex: hex,
            free_threaded: ft,
            runtime,
            interp,
            tstate,
            gil,
            source: "debug_offsets",
        })
    }
}
