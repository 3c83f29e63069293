//! gilext: a CPython extension whose functions hold or release the GIL for a known time.
//!
//! Test fixture for `gilscope check`. One shared object defines three modules; the build
//! script (scripts/build-gilext) copies it under three file names and CPython calls
//! `PyInit_<file name stem>`:
//!
//! | module          | Py_mod_multiple_interpreters (3.12+)   | Py_mod_gil (3.13+)   |
//! |-----------------|----------------------------------------|----------------------|
//! | `gilext`        | PER_INTERPRETER_GIL_SUPPORTED (2)      | NOT_USED (1)         |
//! | `gilext_gil`    | PER_INTERPRETER_GIL_SUPPORTED (2)      | absent (= GIL_USED)  |
//! | `gilext_legacy` | NOT_SUPPORTED (0)                      | NOT_USED (1)         |
//!
//! All three use multi-phase init (`PyModuleDef_Init`), no module state, and the same
//! functions, each taking one int (milliseconds) and returning None:
//!
//! | Python function     | native symbol (no_mangle) | GIL during the work |
//! |---------------------|---------------------------|---------------------|
//! | `hold_spin(ms)`     | `gilext_hold_spin`        | held, on CPU        |
//! | `hold_sleep(ms)`    | `gilext_hold_sleep`       | held, off CPU       |
//! | `release_spin(ms)`  | `gilext_release_spin`     | released, on CPU    |
//! | `release_sleep(ms)` | `gilext_release_sleep`    | released, off CPU   |
//! | `hold_chunked(ms)`  | `gilext_hold_chunked`     | held, released for microseconds every 1 ms |
//!
//! plus the plain C export `gilext_c_spin(uint64_t ms)` for ctypes: through
//! `ctypes.PyDLL(path)` the GIL stays held, through `ctypes.CDLL(path)` it is released
//! (set `argtypes = [ctypes.c_uint64]`).
//!
//! Bad arguments raise TypeError (not an int) or ValueError (negative); nothing panics
//! (and the release profile aborts on panic anyway).

#![allow(non_snake_case)]

use core::ffi::{c_int, c_void};
use core::ptr;
use std::time::{Duration, Instant};

use pyo3_ffi::*;

// ---------------------------------------------------------------------------------------
// The work. Each exported function contains its own loop (the helpers are inline(always)),
// so a sampled instruction pointer lands in the named symbol most of the time.

/// Now + `ms` milliseconds, saturating at about a year (Instant + Duration panics on
/// overflow, and a panic must not cross the FFI boundary).
fn deadline_after(ms: u64) -> Instant {
    let now = Instant::now();
    now.checked_add(Duration::from_millis(ms.min(365 * 86_400_000)))
        .unwrap_or(now)
}

/// Busy-waits until `ms` milliseconds have passed on the monotonic clock. The clock is read
/// every 256 pause instructions (a few microseconds), so nearly all samples land in the
/// caller's own code rather than in clock_gettime. `tag` (distinct per caller, kept by
/// black_box) stops LLVM/the linker from folding identical functions into one address,
/// which would make the symbol of a sampled address ambiguous.
#[inline(always)]
fn spin_for(ms: u64, tag: u32) {
    core::hint::black_box(tag);
    let deadline = deadline_after(ms);
    loop {
        for _ in 0..256 {
            core::hint::spin_loop();
        }
        if Instant::now() >= deadline {
            break;
        }
    }
}

/// Sleeps (nanosleep) until `ms` milliseconds have passed on the monotonic clock.
#[inline(always)]
fn sleep_for(ms: u64, tag: u32) {
    core::hint::black_box(tag);
    let deadline = deadline_after(ms);
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        std::thread::sleep(deadline - now);
    }
}

/// Spins `ms` milliseconds. Called with the GIL held (by `hold_spin`).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn gilext_hold_spin(ms: u64) {
    spin_for(ms, 1);
}

/// Sleeps `ms` milliseconds. Called with the GIL held (by `hold_sleep`).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn gilext_hold_sleep(ms: u64) {
    sleep_for(ms, 2);
}

/// Releases the GIL (PyEval_SaveThread), spins `ms` milliseconds, takes it back.
/// Must be called with an attached thread state (it is, from `release_spin`).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn gilext_release_spin(ms: u64) {
    unsafe {
        let ts = PyEval_SaveThread();
        spin_for(ms, 3);
        PyEval_RestoreThread(ts);
    }
}

/// Releases the GIL (PyEval_SaveThread), sleeps `ms` milliseconds, takes it back.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn gilext_release_sleep(ms: u64) {
    unsafe {
        let ts = PyEval_SaveThread();
        sleep_for(ms, 4);
        PyEval_RestoreThread(ts);
    }
}

/// Spins `ms` milliseconds holding the GIL, except for a release (PyEval_SaveThread +
/// PyEval_RestoreThread, a few microseconds when nobody waits) after every millisecond: no
/// hold lasts longer than 1 ms, but samples taken every millisecond almost never see the
/// releases. Ground truth for exact mode (uprobes see every release).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn gilext_hold_chunked(ms: u64) {
    for _ in 0..ms {
        spin_for(1, 6);
        unsafe {
            let ts = PyEval_SaveThread();
            PyEval_RestoreThread(ts);
        }
    }
}

/// Plain C entry point for ctypes: spins `ms` milliseconds. Whether the GIL is held is up
/// to the caller (ctypes.PyDLL: held; ctypes.CDLL: released).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn gilext_c_spin(ms: u64) {
    spin_for(ms, 5);
}

// ---------------------------------------------------------------------------------------
// Python wrappers (METH_O).

/// The milliseconds argument: a non-negative int (bool allowed, it is an int). None with an
/// exception set otherwise.
unsafe fn ms_arg(arg: *mut PyObject, fname: &core::ffi::CStr) -> Option<u64> {
    unsafe {
        if arg.is_null() || PyLong_Check(arg) == 0 {
            PyErr_Format(
                PyExc_TypeError,
                c"%s() argument must be an int (milliseconds)".as_ptr(),
                fname.as_ptr(),
            );
            return None;
        }
        let v = PyLong_AsLongLong(arg);
        if v == -1 && !PyErr_Occurred().is_null() {
            return None; // OverflowError
        }
        if v < 0 {
            PyErr_Format(
                PyExc_ValueError,
                c"%s() argument must be >= 0".as_ptr(),
                fname.as_ptr(),
            );
            return None;
        }
        Some(v as u64)
    }
}

unsafe fn none() -> *mut PyObject {
    unsafe {
        let none = Py_None();
        Py_IncRef(none);
        none
    }
}

macro_rules! wrapper {
    ($py:ident, $native:ident, $name:literal) => {
        unsafe extern "C" fn $py(_module: *mut PyObject, arg: *mut PyObject) -> *mut PyObject {
            unsafe {
                match ms_arg(arg, $name) {
                    Some(ms) => {
                        $native(ms);
                        none()
                    }
                    None => ptr::null_mut(),
                }
            }
        }
    };
}

wrapper!(py_hold_spin, gilext_hold_spin, c"hold_spin");
wrapper!(py_hold_sleep, gilext_hold_sleep, c"hold_sleep");
wrapper!(py_release_spin, gilext_release_spin, c"release_spin");
wrapper!(py_release_sleep, gilext_release_sleep, c"release_sleep");
wrapper!(py_hold_chunked, gilext_hold_chunked, c"hold_chunked");

const fn method(
    name: &'static core::ffi::CStr,
    f: unsafe extern "C" fn(*mut PyObject, *mut PyObject) -> *mut PyObject,
    doc: &'static core::ffi::CStr,
) -> PyMethodDef {
    PyMethodDef {
        ml_name: name.as_ptr(),
        ml_meth: PyMethodDefPointer { PyCFunction: f },
        ml_flags: METH_O,
        ml_doc: doc.as_ptr(),
    }
}

static mut METHODS: [PyMethodDef; 6] = [
    method(
        c"hold_spin",
        py_hold_spin,
        c"hold_spin(ms)\n--\n\nBusy-spin ms milliseconds in gilext_hold_spin, GIL held.",
    ),
    method(
        c"hold_sleep",
        py_hold_sleep,
        c"hold_sleep(ms)\n--\n\nSleep ms milliseconds in gilext_hold_sleep, GIL held.",
    ),
    method(
        c"release_spin",
        py_release_spin,
        c"release_spin(ms)\n--\n\nBusy-spin ms milliseconds in gilext_release_spin, GIL released.",
    ),
    method(
        c"release_sleep",
        py_release_sleep,
        c"release_sleep(ms)\n--\n\nSleep ms milliseconds in gilext_release_sleep, GIL released.",
    ),
    method(
        c"hold_chunked",
        py_hold_chunked,
        c"hold_chunked(ms)\n--\n\nSpin ms milliseconds in gilext_hold_chunked, releasing the GIL briefly every millisecond.",
    ),
    PyMethodDef::zeroed(),
];

// ---------------------------------------------------------------------------------------
// Module definitions. Slot ids and values are the stable-ABI numbers every version accepts
// in PyModuleDef.m_slots (3.15 renumbers slots only for its new PySlot arrays); a slot is
// only listed on versions that know it (older ones reject unknown slot ids).

const MOD_EXEC: c_int = 2; // Py_mod_exec
#[cfg(Py_3_12)]
const MOD_MULTIPLE_INTERPRETERS: c_int = 3; // Py_mod_multiple_interpreters
#[cfg(Py_3_13)]
const MOD_GIL: c_int = 4; // Py_mod_gil
#[cfg(Py_3_12)]
const MULTIPLE_INTERPRETERS_NOT_SUPPORTED: *mut c_void = ptr::null_mut();
#[cfg(Py_3_12)]
const PER_INTERPRETER_GIL_SUPPORTED: *mut c_void = 2 as *mut c_void;
#[cfg(Py_3_13)]
#[allow(clippy::manual_dangling_ptr, reason = "a slot value, not a pointer")]
const GIL_NOT_USED: *mut c_void = 1 as *mut c_void;

const fn slot(slot: c_int, value: *mut c_void) -> PyModuleDef_Slot {
    PyModuleDef_Slot { slot, value }
}

const END: PyModuleDef_Slot = slot(0, ptr::null_mut());

unsafe fn add_variant(module: *mut PyObject, variant: &core::ffi::CStr) -> c_int {
    unsafe { PyModule_AddStringConstant(module, c"variant".as_ptr(), variant.as_ptr()) }
}

unsafe extern "C" fn exec_gilext(module: *mut PyObject) -> c_int {
    unsafe { add_variant(module, c"gilext: own-GIL sub-interpreters ok, GIL not used") }
}

unsafe extern "C" fn exec_gilext_gil(module: *mut PyObject) -> c_int {
    unsafe {
        add_variant(
            module,
            c"gilext_gil: own-GIL sub-interpreters ok, needs the GIL",
        )
    }
}

unsafe extern "C" fn exec_gilext_legacy(module: *mut PyObject) -> c_int {
    unsafe { add_variant(module, c"gilext_legacy: no sub-interpreters, GIL not used") }
}

const fn exec_slot(f: unsafe extern "C" fn(*mut PyObject) -> c_int) -> PyModuleDef_Slot {
    slot(MOD_EXEC, f as *mut c_void)
}

static mut SLOTS_GILEXT: [PyModuleDef_Slot; 2 + cfg!(Py_3_12) as usize + cfg!(Py_3_13) as usize] = [
    exec_slot(exec_gilext),
    #[cfg(Py_3_12)]
    slot(MOD_MULTIPLE_INTERPRETERS, PER_INTERPRETER_GIL_SUPPORTED),
    #[cfg(Py_3_13)]
    slot(MOD_GIL, GIL_NOT_USED),
    END,
];

static mut SLOTS_GILEXT_GIL: [PyModuleDef_Slot; 2 + cfg!(Py_3_12) as usize] = [
    exec_slot(exec_gilext_gil),
    #[cfg(Py_3_12)]
    slot(MOD_MULTIPLE_INTERPRETERS, PER_INTERPRETER_GIL_SUPPORTED),
    // No Py_mod_gil: a free-threaded interpreter re-enables the GIL when importing it.
    END,
];

static mut SLOTS_GILEXT_LEGACY: [PyModuleDef_Slot;
    2 + cfg!(Py_3_12) as usize + cfg!(Py_3_13) as usize] = [
    exec_slot(exec_gilext_legacy),
    #[cfg(Py_3_12)]
    slot(
        MOD_MULTIPLE_INTERPRETERS,
        MULTIPLE_INTERPRETERS_NOT_SUPPORTED,
    ),
    #[cfg(Py_3_13)]
    slot(MOD_GIL, GIL_NOT_USED),
    END,
];

const fn module_def(
    name: &'static core::ffi::CStr,
    doc: &'static core::ffi::CStr,
    slots: *mut PyModuleDef_Slot,
) -> PyModuleDef {
    PyModuleDef {
        m_base: PyModuleDef_HEAD_INIT,
        m_name: name.as_ptr(),
        m_doc: doc.as_ptr(),
        m_size: 0,
        m_methods: (&raw mut METHODS).cast(),
        m_slots: slots,
        m_traverse: None,
        m_clear: None,
        m_free: None,
    }
}

static mut DEF_GILEXT: PyModuleDef = module_def(
    c"gilext",
    c"Functions that hold or release the GIL for a known time (gilscope test fixture).\n\
      Supports own-GIL sub-interpreters; declares Py_MOD_GIL_NOT_USED.",
    (&raw mut SLOTS_GILEXT).cast(),
);

static mut DEF_GILEXT_GIL: PyModuleDef = module_def(
    c"gilext_gil",
    c"Same functions as gilext, without Py_mod_gil: importing it in a free-threaded\n\
      build re-enables the GIL. Supports own-GIL sub-interpreters.",
    (&raw mut SLOTS_GILEXT_GIL).cast(),
);

static mut DEF_GILEXT_LEGACY: PyModuleDef = module_def(
    c"gilext_legacy",
    c"Same functions as gilext, declaring Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED:\n\
      it cannot be imported in a sub-interpreter with an own GIL. Declares Py_MOD_GIL_NOT_USED.",
    (&raw mut SLOTS_GILEXT_LEGACY).cast(),
);

/// Module init function, called by CPython's import machinery for `gilext.*.so`.
///
/// # Safety
/// Only CPython may call it, with an attached thread state.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn PyInit_gilext() -> *mut PyObject {
    unsafe { PyModuleDef_Init(&raw mut DEF_GILEXT) }
}

/// Module init function, called by CPython's import machinery for `gilext_gil.*.so`.
///
/// # Safety
/// Only CPython may call it, with an attached thread state.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn PyInit_gilext_gil() -> *mut PyObject {
    unsafe { PyModuleDef_Init(&raw mut DEF_GILEXT_GIL) }
}

/// Module init function, called by CPython's import machinery for `gilext_legacy.*.so`.
///
/// # Safety
/// Only CPython may call it, with an attached thread state.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn PyInit_gilext_legacy() -> *mut PyObject {
    unsafe { PyModuleDef_Init(&raw mut DEF_GILEXT_LEGACY) }
}
