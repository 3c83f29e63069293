//! The C function a Python frame is calling, read from the frame's value stack: what
//! `gilscope check` names a hold by when the native stack cannot be walked (`--no-native`,
//! no ptrace, or a walk that stopped in code without unwind information).
//!
//! A call keeps its callable on the caller's value stack for as long as it runs: `CALL n`
//! (3.11+) finds `[callable, self_or_null, args…]` (3.13+) or `[NULL_or_method,
//! callable_or_self, args…]` (3.11/3.12) below the stack top, `CALL_FUNCTION n` /
//! `CALL_METHOD n` (3.9/3.10) the same shapes. The stack pointer itself lives in a register
//! of the bytecode loop until 3.14, which saves it in the frame around every call that can
//! escape (`stackpointer`); before 3.14 the whole `co_stacksize` region is scanned. The
//! callable is the highest entry that is a C function object and leaves room for the
//! instruction's `n` arguments above it.
//!
//! Recognised callables (by their type's `tp_name`):
//! - `builtin_function_or_method`, `builtin_method` (`PyCFunctionObject`, `PyCMethodObject`:
//!   C extensions, pybind11, PyO3, the interpreter's builtins), and Cython's
//!   `cython_function_or_method` / `fused_cython_function` (which start with one): the
//!   `PyMethodDef`'s `ml_name` and `ml_meth`, the module from `m_module`;
//! - `method_descriptor`, `classmethod_descriptor` (methods of C types): `Type.ml_name`;
//! - `method`, `instancemethod` around one of these (pybind11's methods);
//! - ctypes' `_FuncPtr`: the function pointer it holds and its `__name__`.
//!
//! Limits: before 3.14, a stale entry above the live stack (a C function a deeper expression
//! called earlier) or an argument that is itself a C function (`sorted(xs, key=len)`) can be
//! taken for the callee when the argument count does not rule it out.

use super::layout::{StackLayout, ValueStack};
use super::objects::{self, plausible_ptr};
use crate::reader::memory::{Memory, MemoryExt};

/// Value-stack entries scanned at most.
const MAX_STACK: u64 = 4096;

/// A C function being called, as read from memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawCall {
    /// `ml_name` (`Type.name` for a method of a C type; the `__name__` of a ctypes function).
    pub name: String,
    /// The module it belongs to, when memory says (`m_module`, or the type's dotted name).
    pub module: Option<String>,
    /// The machine code's address (`ml_meth`, or the ctypes function pointer).
    pub addr: u64,
}

/// Reads a NUL-terminated C string of at most `max` bytes (not crossing into an unmapped
/// page).
fn read_cstr(mem: &dyn Memory, addr: u64, max: usize) -> Option<String> {
    if !(0x1000..(1 << 47)).contains(&addr) {
        return None;
    }
    let to_page_end = (4096 - (addr % 4096)) as usize;
    let mut buf = vec![0u8; max.min(to_page_end)];
    mem.read(addr, &mut buf).ok()?;
    let mut end = buf.iter().position(|&b| b == 0);
    if end.is_none() && buf.len() < max {
        // Continues on the next page.
        let mut more = vec![0u8; max - buf.len()];
        if mem.read(addr + buf.len() as u64, &mut more).is_ok() {
            buf.extend_from_slice(&more);
            end = buf.iter().position(|&b| b == 0);
        }
    }
    let s = &buf[..end?];
    if s.is_empty() || !s.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        return None;
    }
    Some(String::from_utf8_lossy(s).into_owned())
}

/// The type's `tp_name`.
fn type_name(l: &StackLayout, mem: &dyn Memory, obj: u64) -> Option<String> {
    let tp = objects::type_of(l, mem, obj).ok()?;
    let p = mem.read_ptr(tp + l.obj.tp_name).ok()?;
    read_cstr(mem, p, 128)
}

/// `ml_name` and `ml_meth` of the `PyMethodDef` at `ml`.
fn method_def(mem: &dyn Memory, ml: u64) -> Option<(String, u64)> {
    if !plausible_ptr(ml) {
        return None;
    }
    let name = read_cstr(mem, mem.read_ptr(ml).ok()?, 256)?;
    let meth = mem.read_ptr(ml + 8).ok()?;
    (meth >= 0x1000).then_some((name, meth))
}

/// The call `obj` stands for, if it is a C function object (see the module docs).
fn c_callable(l: &StackLayout, mem: &dyn Memory, obj: u64, depth: u32) -> Option<RawCall> {
    if !plausible_ptr(obj) {
        return None;
    }
    // Fields follow the object header (`PyObject_HEAD`: ob_type is its last member).
    let head = l.obj.ob_type + 8;
    let tname = type_name(l, mem, obj)?;
    let t = tname.as_str();
    if t == "builtin_function_or_method"
        || t == "builtin_method"
        || t.ends_with("cython_function_or_method")
        || t.ends_with("fused_cython_function")
    {
        // PyCFunctionObject: m_ml, m_self, m_module, …
        let (name, addr) = method_def(mem, mem.read_ptr(obj + head).ok()?)?;
        let module = mem
            .read_ptr(obj + head + 16)
            .ok()
            .filter(|&m| plausible_ptr(m))
            .filter(|&m| objects::has_type_flag(l, mem, m, objects::TPFLAGS_UNICODE_SUBCLASS))
            .and_then(|m| objects::read_str(l, mem, m).ok());
        return Some(RawCall { name, module, addr });
    }
    if t == "method_descriptor" || t == "classmethod_descriptor" {
        // PyDescr_COMMON (d_type, d_name, d_qualname), then d_method.
        let d_type = mem.read_ptr(obj + head).ok()?;
        let (name, addr) = method_def(mem, mem.read_ptr(obj + head + 24).ok()?)?;
        let tp_name = mem
            .read_ptr(d_type + l.obj.tp_name)
            .ok()
            .and_then(|p| read_cstr(mem, p, 128));
        let (module, class) = match tp_name.as_deref().and_then(|n| n.rsplit_once('.')) {
            Some((m, c)) => (Some(m.to_string()), Some(c.to_string())),
            None => (None, tp_name),
        };
        let name = match class {
            Some(c) => format!("{c}.{name}"),
            None => name,
        };
        return Some(RawCall { name, module, addr });
    }
    if (t == "method" || t == "instancemethod") && depth == 0 {
        // PyMethodObject.im_func / PyInstanceMethodObject.func: the first field.
        return c_callable(l, mem, mem.read_ptr(obj + head).ok()?, depth + 1);
    }
    if t == "_FuncPtr" {
        // ctypes' CDataObject: b_ptr (the first field) points at the function pointer.
        let b_ptr = mem.read_ptr(obj + head).ok()?;
        let addr = mem.read_ptr(b_ptr).ok()?;
        if addr < 0x1000 {
            return None;
        }
        let name = objects::instance_dict_items(l, mem, obj)
            .ok()
            .and_then(|items| objects::lookup(l, mem, &items, "__name__"))
            .and_then(|v| objects::read_str(l, mem, v).ok())
            .unwrap_or_else(|| format!("{addr:#x}"));
        return Some(RawCall {
            name,
            module: Some("ctypes".into()),
            addr,
        });
    }
    None
}

/// The C function the frame at `frame` (a `_PyInterpreterFrame`, or a frame object on
/// 3.9/3.10) is calling, if its value stack says.
pub fn current_call(l: &StackLayout, mem: &dyn Memory, frame: u64) -> Option<RawCall> {
    if !plausible_ptr(frame) {
        return None;
    }
    let c = &l.call;
    let mut code = mem.read_ptr(frame + l.frame.code).ok()?;
    if l.frame.tagged_executable {
        code &= !3;
    }
    if !plausible_ptr(code) {
        return None;
    }
    let stacksize = u64::try_from(mem.read_i32(code + c.co_stacksize).ok()?).ok()?;
    if stacksize == 0 || stacksize > MAX_STACK {
        return None;
    }
    let base = match c.stack {
        ValueStack::Pointer(off) => mem.read_ptr(frame + off).ok()?,
        ValueStack::Inline(off) => {
            let nlocals = u64::try_from(mem.read_i32(code + c.co_nlocalsplus?).ok()?).ok()?;
            if nlocals > MAX_STACK {
                return None;
            }
            frame + off + 8 * nlocals
        }
    };
    if !plausible_ptr(base) {
        return None;
    }
    // The instruction's argument: how many arguments the call passes.
    let instr: Option<u64> = match c.co_code {
        Some(co_code) => {
            let lasti = i64::from(mem.read_i32(frame + l.frame.instr).ok()?);
            let unit = if l.frame.instr_field == super::layout::InstrField::LastiUnits {
                2
            } else {
                1
            };
            let bytes = mem.read_ptr(code + co_code).ok()?;
            u64::try_from(lasti * unit)
                .ok()
                .map(|off| bytes + l.obj.bytes_sval + off)
        }
        None => mem.read_ptr(frame + l.frame.instr).ok(),
    };
    let nargs = instr
        .filter(|&p| p >= 0x1000)
        .and_then(|p| mem.read_vec(p, 2).ok())
        .map_or(0, |b| u64::from(b[1]));
    let raw = mem
        .read_vec(base, usize::try_from(8 * stacksize).ok()?)
        .ok()?;
    let slots: Vec<u64> = raw
        .chunks_exact(8)
        .map(|w| {
            let v = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
            if c.tagged {
                v & !3
            } else {
                v
            }
        })
        .collect();
    let find = |top: u64| -> Option<RawCall> {
        (0..top)
            .rev()
            .filter(|i| i + 1 + nargs <= top)
            .find_map(|i| c_callable(l, mem, slots[i as usize], 0))
    };
    // 3.14+: the saved stack pointer bounds the live entries (when it is inside the stack).
    let saved_top = c
        .stackpointer
        .and_then(|off| mem.read_ptr(frame + off).ok())
        .filter(|&sp| sp >= base && sp <= base + 8 * stacksize && (sp - base) % 8 == 0)
        .map(|sp| (sp - base) / 8);
    saved_top.and_then(find).or_else(|| find(stacksize))
}

/// Reads [`current_call`]s of one process, and finds the file each one's code is in.
pub struct CallReader {
    pid: u32,
    mem: crate::reader::memory::ProcessMem,
    layout: StackLayout,
}

impl CallReader {
    pub fn new(pid: u32, layout: StackLayout) -> anyhow::Result<CallReader> {
        use anyhow::Context;
        let process = remoteprocess::Process::new(pid as remoteprocess::Pid)
            .with_context(|| format!("opening process {pid}"))?;
        Ok(CallReader {
            pid,
            mem: crate::reader::memory::ProcessMem { process },
            layout,
        })
    }

    /// The C function the frame at `frame` is calling, with the file its code is mapped from.
    pub fn read(&self, frame: u64) -> Option<crate::analysis::holds::CCall> {
        let call = current_call(&self.layout, &self.mem, frame)?;
        let object = crate::reader::procfs::maps(self.pid)
            .ok()
            .and_then(|maps| {
                maps.into_iter()
                    .find(|m| m.start <= call.addr && call.addr < m.end && m.path.starts_with('/'))
            })
            .map(|m| m.path)
            .unwrap_or_default();
        Some(crate::analysis::holds::CCall {
            name: call.name,
            module: call.module,
            object,
            addr: call.addr,
        })
    }
}
