//! Offsets of everything the stack and object readers touch, per version:
//! built-in tables for 3.9–3.12, `_Py_DebugOffsets` for 3.13+.

use anyhow::{bail, Context, Result};

use super::linetable::LineTableFormat;
use crate::reader::debug_offsets::DebugOffsets;

/// How the innermost frame hangs off a `PyThreadState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameChain {
    /// 3.9/3.10: `tstate->frame` is a `PyFrameObject*` (an object, with a type).
    FrameObject,
    /// 3.11/3.12: `tstate->cframe->current_frame`, an `_PyInterpreterFrame*`.
    CFrame { current_frame: u64 },
    /// 3.13+: `tstate->current_frame`, an `_PyInterpreterFrame*`.
    Direct,
}

/// What the frame's instruction field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InstrField {
    /// 3.9: `int f_lasti`, a byte offset.
    LastiBytes,
    /// 3.10: `int f_lasti`, in code units (2 bytes each).
    LastiUnits,
    /// 3.11+: a pointer into the bytecode (`prev_instr` 3.11/3.12,
    /// `instr_ptr` 3.13+); the offset is relative to `co_code_adaptive`.
    Pointer,
}

#[derive(Debug, Clone)]
pub(crate) struct FrameLayout {
    pub chain: FrameChain,
    /// Offset in `PyThreadState` of `frame` / `cframe` / `current_frame`.
    pub tstate_frame: u64,
    /// `f_back` / `previous`.
    pub previous: u64,
    /// `f_code` / `f_executable`.
    pub code: u64,
    /// `f_lasti` / `prev_instr` / `instr_ptr`.
    pub instr: u64,
    pub instr_field: InstrField,
    /// `owner` (a `char`), 3.11+.
    pub owner: Option<u64>,
    /// Owner values whose frames are not Python frames (C-stack / interpreter
    /// shims): 3 in 3.12/3.13, 3 and 4 in 3.14+.
    pub skip_owners: &'static [u8],
    /// `f_executable` is a `_PyStackRef` (3.14+): clear the tag bits.
    pub tagged_executable: bool,
    /// Free-threaded 3.14+: `tlbc_index` (int32) selects the thread-local
    /// copy of the bytecode that `instr_ptr` points into.
    pub tlbc_index: Option<u64>,
    /// `ob_type` of a frame *object* (3.9/3.10), checked against the `frame` type.
    pub frame_ob_type: Option<u64>,
    /// Bytes to read per frame (covers every field above).
    pub read_size: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct CodeLayout {
    pub filename: u64,
    pub name: u64,
    pub qualname: Option<u64>,
    pub linetable: u64,
    pub firstlineno: u64,
    /// 3.11+: start of the (adaptive) bytecode inside the code object.
    pub code_adaptive: Option<u64>,
    /// Free-threaded 3.14+: `co_tlbc` (`_PyCodeArray*`: size, entries[]).
    pub tlbc: Option<u64>,
    pub format: LineTableFormat,
    /// Bytes to read of a code object's header (covers every field above,
    /// `ob_type` and `ob_size`).
    pub read_size: u64,
}

/// Where `kind`/`compact`/`ascii` sit in `PyASCIIObject.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StrStateBits {
    /// `interned:2, kind:3, compact:1, ascii:1, ...` (every GIL build, and
    /// free-threaded 3.13.0 per its headers).
    Packed,
    /// Free-threaded 3.14+: `unsigned char interned;` then the bit fields,
    /// so kind is bits 8..10, compact 11, ascii 12.
    InternedByte,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LongLayout {
    /// ≤3.11: `ob_size` (signed digit count) then 30-bit digits.
    SignedSize { size: u64, digits: u64 },
    /// 3.12+: `lv_tag` (digit count << 3 | sign) then 30-bit digits.
    Tagged { lv_tag: u64, digits: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeysLayout {
    /// 3.9/3.10: `dk_size` (8), `dk_nentries` (32), indices at 40, index width
    /// from `dk_size`; entries are `{hash, key, value}`.
    V39,
    /// 3.11+: `dk_log2_size` (8), `dk_log2_index_bytes` (9), `dk_kind` (10),
    /// `dk_nentries` (24), indices at 32; unicode/split kinds use `{key, value}`.
    V311,
}

/// How an instance finds its `__dict__` when the type manages it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ManagedDict {
    /// 3.9/3.10: only `tp_dictoffset`.
    None,
    /// 3.11: dict pointer at obj-24, values pointer at obj-32.
    V311,
    /// 3.12: one tagged word at obj-24: odd = values pointer - 1, else dict.
    V312,
    /// 3.13+: dict pointer at obj + `dict_offset` (-24, or -8 free-threaded);
    /// with `Py_TPFLAGS_INLINE_VALUES` the values are inline at obj + tp_basicsize.
    V313 { dict_offset: i64 },
}

#[derive(Debug, Clone)]
pub(crate) struct ObjectLayout {
    pub ob_type: u64,
    /// `PyVarObject.ob_size`.
    pub ob_size: u64,
    pub tp_name: u64,
    pub tp_basicsize: u64,
    pub tp_flags: u64,
    pub tp_dictoffset: u64,
    pub ht_cached_keys: u64,
    pub bytes_sval: u64,
    pub str_length: u64,
    pub str_state: u64,
    pub str_state_bits: StrStateBits,
    /// Free-threaded builds: also accept the other state layout when the
    /// primary one decodes to an impossible kind (the 3.13 branch may differ
    /// from the 3.13.0 headers).
    pub str_state_fallback: bool,
    /// `sizeof(PyASCIIObject)`: compact ASCII data starts here.
    pub str_ascii_size: u64,
    /// `sizeof(PyCompactUnicodeObject)`: compact non-ASCII data starts here;
    /// also `PyUnicodeObject.data` for legacy (non-compact) strings.
    pub str_compact_size: u64,
    pub long: LongLayout,
    pub dict_keys: u64,
    pub dict_values: u64,
    pub keys: KeysLayout,
    /// Offset of the `values[]` array inside the split-table values:
    /// 0 up to 3.12 (3.9/3.10: `ma_values` is `PyObject**`), 8 from 3.13.
    pub values_array: u64,
    pub managed: ManagedDict,
}

/// Where a frame's value stack begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ValueStack {
    /// 3.9/3.10: `f_valuestack`, a pointer in the frame object.
    Pointer(u64),
    /// 3.11+: `localsplus[]` inside `_PyInterpreterFrame`; the stack follows the
    /// code object's `co_nlocalsplus` locals.
    Inline(u64),
}

/// What [`current_call`](super::ccall::current_call) reads: a frame's value stack and the
/// instruction's argument.
#[derive(Debug, Clone)]
pub(crate) struct CallLayout {
    pub stack: ValueStack,
    /// `co_stacksize` (int) in the code object.
    pub co_stacksize: u64,
    /// 3.11+: `co_nlocalsplus` (int).
    pub co_nlocalsplus: Option<u64>,
    /// 3.9/3.10: `co_code` (a bytes object): the instruction at `f_lasti` is read from it.
    pub co_code: Option<u64>,
    /// 3.14+: `_PyInterpreterFrame.stackpointer`, saved around every escaping call.
    pub stackpointer: Option<u64>,
    /// Value-stack entries are tagged `_PyStackRef`s (3.14+).
    pub tagged: bool,
}

/// `co_stacksize` and `co_nlocalsplus` sit 4 bytes before and after `co_firstlineno` in
/// every 3.11+ build (int fields `co_stacksize, co_firstlineno, co_nlocalsplus`), and
/// `co_stacksize` 8 bytes before it in 3.9/3.10 (`co_stacksize, co_flags, co_firstlineno`).
/// Measured with ctypes on each build (pyenv 3.9.18–3.13.0, 3.13.15t, Debian 3.13.18,
/// 3.14.10, 3.15.2).
const STACKSIZE_BEFORE_FIRSTLINENO_311: u64 = 4;
const NLOCALSPLUS_AFTER_FIRSTLINENO_311: u64 = 4;

/// Every offset the stack and object readers need for one Python version.
#[derive(Debug, Clone)]
pub struct StackLayout {
    pub(crate) minor: u32,
    pub(crate) free_threaded: bool,
    pub(crate) frame: FrameLayout,
    pub(crate) code: CodeLayout,
    pub(crate) obj: ObjectLayout,
    /// Offset in `PyInterpreterState` of `modules` (3.9–3.11) or
    /// `imports.modules` (3.12+): the `sys.modules` dict.
    pub(crate) interp_modules: u64,
    pub(crate) call: CallLayout,
}

/// `ht_cached_keys - sizeof(PyTypeObject)` in `PyHeapTypeObject`: the method
/// suites (`as_async` … `as_buffer`) plus `ht_name`, `ht_slots`,
/// `ht_qualname`. 464 in 3.10.13, 3.11.7, 3.12.1, 3.13.0 [gdb] and in py-spy's
/// bindgen structs for 3.14.0/3.15.0 (416 + 464 = 880, 424 + 464 = 888).
const HT_CACHED_KEYS_AFTER_TYPE: u64 = 464;

/// `tp_dictoffset - tp_flags` in `PyTypeObject` (15 pointer-sized members
/// apart): 288 - 168 in every build measured (3.9.18 … 3.13.0, gdb) and in the
/// 3.14.0/3.15.0 bindgen structs. Used when the debug offsets lack the field.
const TP_DICTOFFSET_AFTER_FLAGS: u64 = 120;

fn max_end(fields: &[(u64, u64)]) -> u64 {
    fields.iter().map(|(o, w)| o + w).max().unwrap_or(0)
}

/// PyObject/PyVarObject/PyTypeObject/str/bytes offsets of every GIL build
/// 3.9–3.12 that do not differ between them (gdb on the pyenv builds below).
fn gil_objects(minor: u32) -> ObjectLayout {
    let (ascii, compact) = if minor <= 11 { (48, 72) } else { (40, 56) };
    ObjectLayout {
        ob_type: 8,
        ob_size: 16,
        tp_name: 24,
        tp_basicsize: 32,
        tp_flags: 168,
        tp_dictoffset: 288,
        // 3.9.18: 864 (no `am_send`); 3.10.13/3.11.7: 872; 3.12.1: 880.
        ht_cached_keys: match minor {
            9 => 864,
            10 | 11 => 872,
            _ => 880,
        },
        bytes_sval: 32,
        str_length: 16,
        str_state: 32,
        str_state_bits: StrStateBits::Packed,
        str_state_fallback: false,
        str_ascii_size: ascii,
        str_compact_size: compact,
        long: if minor <= 11 {
            LongLayout::SignedSize {
                size: 16,
                digits: 24,
            }
        } else {
            LongLayout::Tagged {
                lv_tag: 16,
                digits: 24,
            }
        },
        dict_keys: 32,
        dict_values: 40,
        keys: if minor <= 10 {
            KeysLayout::V39
        } else {
            KeysLayout::V311
        },
        values_array: 0,
        managed: match minor {
            9 | 10 => ManagedDict::None,
            11 => ManagedDict::V311,
            _ => ManagedDict::V312,
        },
    }
}

impl StackLayout {
    /// Built-in tables for 3.9–3.12 (x86-64 Linux, default GIL release builds).
    ///
    /// Measured with gdb (`print (long)&((T*)0)->field`, `ptype/o`, `sizeof`)
    /// on the unstripped pyenv builds `libpython3.9.so.1.0` (3.9.18),
    /// `libpython3.10.so.1.0` (3.10.13), `libpython3.11.so.1.0` (3.11.7) and
    /// `libpython3.12.so.1.0` (3.12.1), gcc -O3 -g, glibc 2.36.
    pub fn builtin(minor: u32) -> Option<StackLayout> {
        let obj = gil_objects(minor);
        let (frame, code, interp_modules) = match minor {
            // struct _ts: frame 24. struct _frame: ob_type 8, f_back 24,
            // f_code 32, f_lasti 104 (3.9) / 96 (3.10).
            // PyCodeObject: co_firstlineno 40, co_filename 104, co_name 112,
            // co_lnotab (3.9) / co_linetable (3.10) 120.
            // struct _is: modules 856.
            9 | 10 => {
                let lasti = if minor == 9 { 104 } else { 96 };
                (
                    FrameLayout {
                        chain: FrameChain::FrameObject,
                        tstate_frame: 24,
                        previous: 24,
                        code: 32,
                        instr: lasti,
                        instr_field: if minor == 9 {
                            InstrField::LastiBytes
                        } else {
                            InstrField::LastiUnits
                        },
                        owner: None,
                        skip_owners: &[],
                        tagged_executable: false,
                        tlbc_index: None,
                        frame_ob_type: Some(8),
                        read_size: lasti + 4,
                    },
                    CodeLayout {
                        filename: 104,
                        name: 112,
                        qualname: None,
                        linetable: 120,
                        firstlineno: 40,
                        code_adaptive: None,
                        tlbc: None,
                        format: if minor == 9 {
                            LineTableFormat::Lnotab
                        } else {
                            LineTableFormat::Linetable310
                        },
                        read_size: 128,
                    },
                    856,
                )
            }
            // struct _ts: cframe 56; _PyCFrame: current_frame 8.
            // _PyInterpreterFrame: f_code 32, previous 48, prev_instr 56,
            // is_entry 68, owner 69 (no C-stack owner in 3.11).
            // PyCodeObject: co_firstlineno 72, co_filename 112, co_name 120,
            // co_qualname 128, co_linetable 136, co_code_adaptive 184.
            // struct _is: modules 888.
            11 => (
                FrameLayout {
                    chain: FrameChain::CFrame { current_frame: 8 },
                    tstate_frame: 56,
                    previous: 48,
                    code: 32,
                    instr: 56,
                    instr_field: InstrField::Pointer,
                    owner: Some(69),
                    skip_owners: &[],
                    tagged_executable: false,
                    tlbc_index: None,
                    frame_ob_type: None,
                    read_size: 70,
                },
                CodeLayout {
                    filename: 112,
                    name: 120,
                    qualname: Some(128),
                    linetable: 136,
                    firstlineno: 72,
                    code_adaptive: Some(184),
                    tlbc: None,
                    format: LineTableFormat::Locations,
                    read_size: 144,
                },
                888,
            ),
            // struct _ts: cframe 56; _PyCFrame: current_frame 0.
            // _PyInterpreterFrame: f_code 0, previous 8, prev_instr 56,
            // owner 70 (FRAME_OWNED_BY_CSTACK = 3).
            // PyCodeObject: co_firstlineno 68, co_filename 112, co_name 120,
            // co_qualname 128, co_linetable 136, co_code_adaptive 192.
            // struct _is: imports.modules 944.
            12 => (
                FrameLayout {
                    chain: FrameChain::CFrame { current_frame: 0 },
                    tstate_frame: 56,
                    previous: 8,
                    code: 0,
                    instr: 56,
                    instr_field: InstrField::Pointer,
                    owner: Some(70),
                    skip_owners: &[3],
                    tagged_executable: false,
                    tlbc_index: None,
                    frame_ob_type: None,
                    read_size: 71,
                },
                CodeLayout {
                    filename: 112,
                    name: 120,
                    qualname: Some(128),
                    linetable: 136,
                    firstlineno: 68,
                    code_adaptive: Some(192),
                    tlbc: None,
                    format: LineTableFormat::Locations,
                    read_size: 144,
                },
                944,
            ),
            _ => return None,
        };
        let call = if minor <= 10 {
            // struct _frame: f_valuestack 64. PyCodeObject: co_stacksize 32, co_code 48.
            CallLayout {
                stack: ValueStack::Pointer(64),
                co_stacksize: 32,
                co_nlocalsplus: None,
                co_code: Some(48),
                stackpointer: None,
                tagged: false,
            }
        } else {
            // _PyInterpreterFrame.localsplus 72 (3.11.7 and 3.12.1).
            CallLayout {
                stack: ValueStack::Inline(72),
                co_stacksize: code.firstlineno - STACKSIZE_BEFORE_FIRSTLINENO_311,
                co_nlocalsplus: Some(code.firstlineno + NLOCALSPLUS_AFTER_FIRSTLINENO_311),
                co_code: None,
                stackpointer: None,
                tagged: false,
            }
        };
        Some(StackLayout {
            minor,
            free_threaded: false,
            frame,
            code,
            obj,
            interp_modules,
            call,
        })
    }

    /// 3.13+ from the target's `_Py_DebugOffsets` (GIL and free-threaded builds).
    pub fn from_debug_offsets(minor: u32, d: &DebugOffsets) -> Result<StackLayout> {
        if minor < 13 {
            bail!("Python 3.{minor} has no debug offsets; use the built-in layout");
        }
        let table_minor = (d.header.version_hex >> 16) & 0xff;
        if table_minor != minor {
            bail!("debug offsets are for 3.{table_minor}, not 3.{minor}");
        }
        let ft = d.header.free_threaded;
        let f = |name: &str| d.field(name);

        let ob_type = f("pyobject.ob_type")?;
        let pyobject_size = d.need("pyobject.size")?;
        let ob_size = f("tuple_object.ob_size")?;
        if ob_size != pyobject_size {
            bail!(
                "debug offsets: PyVarObject.ob_size ({ob_size}) does not follow \
                 PyObject (size {pyobject_size})"
            );
        }

        // Frames.
        let previous = f("interpreter_frame.previous")?;
        let executable = f("interpreter_frame.executable")?;
        let instr_ptr = f("interpreter_frame.instr_ptr")?;
        let owner = f("interpreter_frame.owner")?;
        let tlbc_index = if ft && minor >= 14 {
            Some(f("interpreter_frame.tlbc_index")?)
        } else {
            None
        };
        let mut frame_fields = vec![(previous, 8), (executable, 8), (instr_ptr, 8), (owner, 1)];
        if let Some(t) = tlbc_index {
            frame_fields.push((t, 4));
        }
        let frame = FrameLayout {
            chain: FrameChain::Direct,
            tstate_frame: f("thread_state.current_frame")?,
            previous,
            code: executable,
            instr: instr_ptr,
            instr_field: InstrField::Pointer,
            owner: Some(owner),
            // 3.13: FRAME_OWNED_BY_CSTACK = 3. 3.14: INTERPRETER = 3,
            // CSTACK = 4. 3.15: INTERPRETER = 3 (CSTACK gone).
            skip_owners: if minor == 13 { &[3] } else { &[3, 4] },
            tagged_executable: minor >= 14,
            tlbc_index,
            frame_ob_type: None,
            read_size: max_end(&frame_fields),
        };

        // Code objects.
        let filename = f("code_object.filename")?;
        let name = f("code_object.name")?;
        let qualname = f("code_object.qualname")?;
        let linetable = f("code_object.linetable")?;
        let firstlineno = f("code_object.firstlineno")?;
        let adaptive = f("code_object.co_code_adaptive")?;
        let tlbc = if ft && minor >= 14 {
            Some(f("code_object.co_tlbc")?)
        } else {
            None
        };
        let mut code_fields = vec![
            (ob_type, 8),
            (ob_size, 8),
            (filename, 8),
            (name, 8),
            (qualname, 8),
            (linetable, 8),
            (firstlineno, 4),
        ];
        if let Some(t) = tlbc {
            code_fields.push((t, 8));
        }
        let code = CodeLayout {
            filename,
            name,
            qualname: Some(qualname),
            linetable,
            firstlineno,
            code_adaptive: Some(adaptive),
            tlbc,
            format: LineTableFormat::Locations,
            read_size: max_end(&code_fields),
        };

        // Objects.
        let tp_name = f("type_object.tp_name")?;
        let tp_flags = f("type_object.tp_flags")?;
        let type_size = d.need("type_object.size")?;
        let tp_basicsize = match d.get("type_object.tp_basicsize") {
            Some(_) => f("type_object.tp_basicsize")?,
            // tp_name, tp_basicsize, tp_itemsize are consecutive.
            None => tp_name + 8,
        };
        let tp_dictoffset = match d.get("type_object.tp_dictoffset") {
            Some(_) => f("type_object.tp_dictoffset")?,
            None => tp_flags + TP_DICTOFFSET_AFTER_FLAGS,
        };
        if tp_dictoffset + 8 > type_size {
            bail!("derived tp_dictoffset {tp_dictoffset} is outside PyTypeObject ({type_size})");
        }
        let ht_cached_keys = match d.get("heap_type_object.ht_cached_keys") {
            Some(_) => f("heap_type_object.ht_cached_keys")?,
            None => type_size + HT_CACHED_KEYS_AFTER_TYPE,
        };
        let ascii_size = d.need("unicode_object.asciiobject_size")?;
        let compact_size = match d.get("unicode_object.compactunicodeobject_size") {
            Some(v) => v,
            // PyCompactUnicodeObject = PyASCIIObject + utf8_length + utf8.
            None => ascii_size + 16,
        };
        if !(16..=256).contains(&ascii_size) || compact_size < ascii_size {
            bail!("implausible unicode object sizes {ascii_size}/{compact_size}");
        }
        let obj = ObjectLayout {
            ob_type,
            ob_size,
            tp_name,
            tp_basicsize,
            tp_flags,
            tp_dictoffset,
            ht_cached_keys,
            bytes_sval: f("bytes_object.ob_sval")?,
            str_length: f("unicode_object.length")?,
            str_state: f("unicode_object.state")?,
            str_state_bits: if ft && minor >= 14 {
                StrStateBits::InternedByte
            } else {
                StrStateBits::Packed
            },
            str_state_fallback: ft,
            str_ascii_size: ascii_size,
            str_compact_size: compact_size,
            long: LongLayout::Tagged {
                lv_tag: f("long_object.lv_tag")?,
                digits: f("long_object.ob_digit")?,
            },
            dict_keys: f("dict_object.ma_keys")?,
            dict_values: f("dict_object.ma_values")?,
            keys: KeysLayout::V311,
            values_array: 8,
            managed: ManagedDict::V313 {
                dict_offset: if ft { -8 } else { -24 },
            },
        };
        let bytes_size = f("bytes_object.ob_size")?;
        if bytes_size != ob_size {
            bail!("debug offsets: bytes ob_size {bytes_size} differs from PyVarObject's {ob_size}");
        }

        let call = CallLayout {
            stack: ValueStack::Inline(f("interpreter_frame.localsplus")?),
            co_stacksize: code.firstlineno - STACKSIZE_BEFORE_FIRSTLINENO_311,
            co_nlocalsplus: Some(code.firstlineno + NLOCALSPLUS_AFTER_FIRSTLINENO_311),
            co_code: None,
            stackpointer: match d.get("interpreter_frame.stackpointer") {
                Some(_) if minor >= 14 => Some(f("interpreter_frame.stackpointer")?),
                _ => None,
            },
            tagged: minor >= 14,
        };

        Ok(StackLayout {
            minor,
            free_threaded: ft,
            frame,
            code,
            obj,
            interp_modules: f("interpreter_state.imports_modules").context("sys.modules offset")?,
            call,
        })
    }

    /// The Python minor version this layout is for.
    pub fn minor(&self) -> u32 {
        self.minor
    }

    /// Whether this layout is for a free-threaded build.
    pub fn free_threaded(&self) -> bool {
        self.free_threaded
    }
}
