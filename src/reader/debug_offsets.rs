//! `_Py_DebugOffsets` (3.13+): the table CPython keeps at the start of
//! `_PyRuntime` so that out-of-process tools need no hard-coded offsets.
//!
//! The table's own layout changes per minor version (it is only stable across
//! patch releases), so we keep, per minor, the ordered list of its `uint64_t`
//! fields as `section.field` names, read the table once and expose it by name.
//! Every value is validated before use by the code that consumes it.

use anyhow::{bail, Result};
use std::collections::HashMap;

use super::memory::{Memory, MemoryExt};

pub const COOKIE: &[u8; 8] = b"xdebugpy";

/// The largest value the table may hold. Every field is an offset inside a CPython struct or
/// a struct's size (the largest, `_PyRuntimeState`, is ~330 KB in 3.13-3.15): anything over
/// 16 MiB is a garbled table, refused before the layouts add offsets together.
const MAX_VALUE: u64 = 1 << 24;

/// Sections in table order; each lists its u64 fields in order.
type TableDef = &'static [(&'static str, &'static [&'static str])];

const V3_13: TableDef = &[
    (
        "runtime_state",
        &["size", "finalizing", "interpreters_head"],
    ),
    (
        "interpreter_state",
        &[
            "size",
            "id",
            "next",
            "threads_head",
            "gc",
            "imports_modules",
            "sysdict",
            "builtins",
            "ceval_gil",
            "gil_runtime_state",
            "gil_runtime_state_enabled",
            "gil_runtime_state_locked",
            "gil_runtime_state_holder",
        ],
    ),
    (
        "thread_state",
        &[
            "size",
            "prev",
            "next",
            "interp",
            "current_frame",
            "thread_id",
            "native_thread_id",
            "datastack_chunk",
            "status",
        ],
    ),
    (
        "interpreter_frame",
        &[
            "size",
            "previous",
            "executable",
            "instr_ptr",
            "localsplus",
            "owner",
        ],
    ),
    (
        "code_object",
        &[
            "size",
            "filename",
            "name",
            "qualname",
            "linetable",
            "firstlineno",
            "argcount",
            "localsplusnames",
            "localspluskinds",
            "co_code_adaptive",
        ],
    ),
    ("pyobject", &["size", "ob_type"]),
    ("type_object", &["size", "tp_name", "tp_repr", "tp_flags"]),
    ("tuple_object", &["size", "ob_item", "ob_size"]),
    ("list_object", &["size", "ob_item", "ob_size"]),
    ("dict_object", &["size", "ma_keys", "ma_values"]),
    ("float_object", &["size", "ob_fval"]),
    ("long_object", &["size", "lv_tag", "ob_digit"]),
    ("bytes_object", &["size", "ob_size", "ob_sval"]),
    (
        "unicode_object",
        &["size", "state", "length", "asciiobject_size"],
    ),
    ("gc", &["size", "collecting"]),
];

const V3_14: TableDef = &[
    (
        "runtime_state",
        &["size", "finalizing", "interpreters_head"],
    ),
    (
        "interpreter_state",
        &[
            "size",
            "id",
            "next",
            "threads_head",
            "threads_main",
            "gc",
            "imports_modules",
            "sysdict",
            "builtins",
            "ceval_gil",
            "gil_runtime_state",
            "gil_runtime_state_enabled",
            "gil_runtime_state_locked",
            "gil_runtime_state_holder",
            "code_object_generation",
            "tlbc_generation",
        ],
    ),
    (
        "thread_state",
        &[
            "size",
            "prev",
            "next",
            "interp",
            "current_frame",
            "thread_id",
            "native_thread_id",
            "datastack_chunk",
            "status",
        ],
    ),
    (
        "interpreter_frame",
        &[
            "size",
            "previous",
            "executable",
            "instr_ptr",
            "localsplus",
            "owner",
            "stackpointer",
            "tlbc_index",
        ],
    ),
    (
        "code_object",
        &[
            "size",
            "filename",
            "name",
            "qualname",
            "linetable",
            "firstlineno",
            "argcount",
            "localsplusnames",
            "localspluskinds",
            "co_code_adaptive",
            "co_tlbc",
        ],
    ),
    ("pyobject", &["size", "ob_type"]),
    ("type_object", &["size", "tp_name", "tp_repr", "tp_flags"]),
    ("tuple_object", &["size", "ob_item", "ob_size"]),
    ("list_object", &["size", "ob_item", "ob_size"]),
    ("set_object", &["size", "used", "table", "mask"]),
    ("dict_object", &["size", "ma_keys", "ma_values"]),
    ("float_object", &["size", "ob_fval"]),
    ("long_object", &["size", "lv_tag", "ob_digit"]),
    ("bytes_object", &["size", "ob_size", "ob_sval"]),
    (
        "unicode_object",
        &["size", "state", "length", "asciiobject_size"],
    ),
    ("gc", &["size", "collecting"]),
    (
        "gen_object",
        &["size", "gi_name", "gi_iframe", "gi_frame_state"],
    ),
    ("llist_node", &["next", "prev"]),
    (
        "debugger_support",
        &[
            "eval_breaker",
            "remote_debugger_support",
            "remote_debugging_enabled",
            "debugger_pending_call",
            "debugger_script_path",
            "debugger_script_path_size",
        ],
    ),
];

const V3_15: TableDef = &[
    (
        "runtime_state",
        &["size", "finalizing", "interpreters_head"],
    ),
    (
        "interpreter_state",
        &[
            "size",
            "id",
            "next",
            "threads_head",
            "threads_main",
            "gc",
            "imports_modules",
            "sysdict",
            "builtins",
            "ceval_gil",
            "gil_runtime_state",
            "gil_runtime_state_enabled",
            "gil_runtime_state_locked",
            "gil_runtime_state_holder",
            "code_object_generation",
            "tlbc_generation",
        ],
    ),
    (
        "thread_state",
        &[
            "size",
            "prev",
            "next",
            "interp",
            "current_frame",
            "base_frame",
            "last_profiled_frame",
            "last_profiled_frame_seq",
            "thread_id",
            "native_thread_id",
            "datastack_chunk",
            "status",
            "holds_gil",
            "gil_requested",
            "current_exception",
            "exc_state",
        ],
    ),
    ("err_stackitem", &["exc_value"]),
    (
        "interpreter_frame",
        &[
            "size",
            "previous",
            "executable",
            "instr_ptr",
            "localsplus",
            "owner",
            "stackpointer",
            "tlbc_index",
        ],
    ),
    (
        "code_object",
        &[
            "size",
            "filename",
            "name",
            "qualname",
            "linetable",
            "firstlineno",
            "argcount",
            "localsplusnames",
            "localspluskinds",
            "co_code_adaptive",
            "co_tlbc",
        ],
    ),
    ("pyobject", &["size", "ob_type"]),
    (
        "type_object",
        &[
            "size",
            "tp_name",
            "tp_repr",
            "tp_flags",
            "tp_basicsize",
            "tp_dictoffset",
        ],
    ),
    ("heap_type_object", &["size", "ht_cached_keys"]),
    ("tuple_object", &["size", "ob_item", "ob_size"]),
    ("list_object", &["size", "ob_item", "ob_size"]),
    ("set_object", &["size", "used", "table", "mask"]),
    ("dict_object", &["size", "ma_keys", "ma_values"]),
    ("float_object", &["size", "ob_fval"]),
    ("long_object", &["size", "lv_tag", "ob_digit"]),
    ("bytes_object", &["size", "ob_size", "ob_sval"]),
    (
        "unicode_object",
        &[
            "size",
            "state",
            "length",
            "asciiobject_size",
            "compactunicodeobject_size",
        ],
    ),
    (
        "gc",
        &[
            "size",
            "collecting",
            "frame",
            "generation_stats_size",
            "generation_stats",
        ],
    ),
    (
        "gen_object",
        &["size", "gi_name", "gi_iframe", "gi_frame_state"],
    ),
    ("llist_node", &["next", "prev"]),
    (
        "debugger_support",
        &[
            "eval_breaker",
            "remote_debugger_support",
            "remote_debugging_enabled",
            "debugger_pending_call",
            "debugger_script_path",
            "debugger_script_path_size",
        ],
    ),
];

fn table_for(minor: u32) -> Option<TableDef> {
    match minor {
        13 => Some(V3_13),
        14 => Some(V3_14),
        15 => Some(V3_15),
        _ => None,
    }
}

/// The 24-byte header: cookie, `PY_VERSION_HEX`, free-threaded flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version_hex: u32,
    pub free_threaded: bool,
}

/// Reads the header at `runtime`; `Ok(None)` if there is no cookie (≤3.12).
pub fn read_header(mem: &dyn Memory, runtime: u64) -> Result<Option<Header>> {
    let b = mem.read_vec(runtime, 24)?;
    if &b[..8] != COOKIE {
        return Ok(None);
    }
    let version = u64::from_le_bytes(b[8..16].try_into()?);
    let ft = u64::from_le_bytes(b[16..24].try_into()?);
    if version >> 24 != 3 || version > u32::MAX as u64 {
        bail!("debug offsets header has an implausible version {version:#x}");
    }
    if ft > 1 {
        bail!("debug offsets header has an implausible free_threaded flag {ft}");
    }
    Ok(Some(Header {
        version_hex: version as u32,
        free_threaded: ft == 1,
    }))
}

/// The table, read from the target, by `section.field` name.
#[derive(Debug, Clone)]
pub struct DebugOffsets {
    pub header: Header,
    values: HashMap<String, u64>,
}

impl DebugOffsets {
    /// Builds from the bytes of the table (starting at the cookie).
    pub fn parse(header: Header, bytes: &[u8]) -> Result<Self> {
        let minor = (header.version_hex >> 16) & 0xff;
        let Some(def) = table_for(minor) else {
            bail!(
                "no debug-offsets layout for Python 3.{minor} (gilscope knows 3.13-3.15); \
                 a newer gilscope may support it"
            );
        };
        let mut values = HashMap::new();
        let mut pos = 24usize;
        for (section, fields) in def {
            for field in *fields {
                let Some(word) = bytes.get(pos..pos + 8) else {
                    bail!("debug offsets table shorter than expected for 3.{minor}");
                };
                let v = u64::from_le_bytes(word.try_into()?);
                if v > MAX_VALUE {
                    bail!(
                        "debug offsets: {section}.{field} = {v:#x} is no offset or size of a \
                         CPython struct (over 16 MiB): the table is garbled"
                    );
                }
                values.insert(format!("{section}.{field}"), v);
                pos += 8;
            }
        }
        Ok(Self { header, values })
    }

    /// Total size in bytes of the table for a minor version.
    pub fn table_size(minor: u32) -> Option<usize> {
        table_for(minor).map(|d| 24 + 8 * d.iter().map(|(_, f)| f.len()).sum::<usize>())
    }

    /// Reads and parses the table at `runtime`. `Ok(None)` on ≤3.12.
    pub fn read(mem: &dyn Memory, runtime: u64) -> Result<Option<Self>> {
        let Some(header) = read_header(mem, runtime)? else {
            return Ok(None);
        };
        let minor = (header.version_hex >> 16) & 0xff;
        let Some(size) = Self::table_size(minor) else {
            bail!("Python 3.{minor} is not supported by this gilscope (it knows 3.9-3.15)");
        };
        let bytes = mem.read_vec(runtime, size)?;
        Self::parse(header, &bytes).map(Some)
    }

    /// `name` is `section.field`, e.g. `thread_state.native_thread_id`.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.values.get(name).copied()
    }

    /// Like [`get`](Self::get) but an error naming the field when absent.
    pub fn need(&self, name: &str) -> Result<u64> {
        self.get(name)
            .ok_or_else(|| anyhow::anyhow!("debug offsets for this Python have no field {name}"))
    }

    /// An offset inside the struct of `section`, checked against the
    /// section's own `size` (bytes) so a garbled table is caught early.
    pub fn field(&self, name: &str) -> Result<u64> {
        let v = self.need(name)?;
        let section = name.split('.').next().unwrap_or_default();
        if let Some(size) = self.get(&format!("{section}.size")) {
            if v >= size.max(1) {
                bail!("debug offset {name} = {v} is outside its struct (size {size})");
            }
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::memory::LocalMem;

    #[test]
    fn parses_a_313_table_by_name() {
        let size = DebugOffsets::table_size(13).unwrap();
        let mut b = vec![0u8; size];
        b[..8].copy_from_slice(COOKIE);
        b[8..16].copy_from_slice(&0x030d00f0u64.to_le_bytes());
        // runtime_state.size, finalizing, interpreters_head
        for (i, v) in [1000u64, 608, 632].iter().enumerate() {
            b[24 + i * 8..32 + i * 8].copy_from_slice(&v.to_le_bytes());
        }
        let mut mem = LocalMem::new();
        mem.add(0x1000, b);
        let d = DebugOffsets::read(&mem, 0x1000).unwrap().unwrap();
        assert_eq!(d.header.version_hex, 0x030d00f0);
        assert!(!d.header.free_threaded);
        assert_eq!(d.field("runtime_state.interpreters_head").unwrap(), 632);
        assert!(d.get("thread_state.holds_gil").is_none());
    }

    #[test]
    fn implausible_values_are_refused() {
        let size = DebugOffsets::table_size(13).unwrap();
        let mut b = vec![0u8; size];
        b[..8].copy_from_slice(COOKIE);
        b[8..16].copy_from_slice(&0x030d00f0u64.to_le_bytes());
        // runtime_state.interpreters_head: its `+ 8` (interpreters.main) overflowed.
        b[40..48].copy_from_slice(&u64::MAX.to_le_bytes());
        let mut mem = LocalMem::new();
        mem.add(0x1000, b);
        let err = DebugOffsets::read(&mem, 0x1000).unwrap_err();
        assert!(
            format!("{err:#}").contains("runtime_state.interpreters_head"),
            "{err:#}"
        );
    }

    #[test]
    fn no_cookie_means_no_table() {
        let mut mem = LocalMem::new();
        mem.add(0x1000, vec![0u8; 64]);
        assert!(DebugOffsets::read(&mem, 0x1000).unwrap().is_none());
    }

    #[test]
    fn unknown_minor_is_a_clear_error() {
        let mut b = vec![0u8; 24];
        b[..8].copy_from_slice(COOKIE);
        b[8..16].copy_from_slice(&0x031000f0u64.to_le_bytes());
        let mut mem = LocalMem::new();
        mem.add(0x1000, b);
        let err = DebugOffsets::read(&mem, 0x1000).unwrap_err();
        assert!(format!("{err:#}").contains("3.16"), "{err:#}");
    }
}
