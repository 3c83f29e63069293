//! Reading Python objects out of the target: str, bytes, int, dict, instance
//! attributes. Everything is bounded and validated; nothing panics on
//! garbage memory.

use anyhow::{bail, ensure, Context, Result};

use super::layout::{KeysLayout, LongLayout, ManagedDict, StackLayout, StrStateBits};
use crate::reader::memory::{Bytes, Memory, MemoryExt};

/// Strings longer than this many code points are cut (with "…" appended).
pub const MAX_STR_CHARS: usize = 4096;
/// A length above this is taken as garbage (a torn or wrong read), not cut.
const MAX_PLAUSIBLE_STR_LEN: i64 = 1 << 31;
/// Largest bytes object we read (line tables).
pub const MAX_BYTES: usize = 16 << 20;
/// Largest dict we walk.
const MAX_DICT_ENTRIES: u64 = 1 << 16;

pub const TPFLAGS_INLINE_VALUES: u64 = 1 << 2;
pub const TPFLAGS_MANAGED_DICT: u64 = 1 << 4;
pub const TPFLAGS_HEAPTYPE: u64 = 1 << 9;
pub const TPFLAGS_LONG_SUBCLASS: u64 = 1 << 24;
pub const TPFLAGS_UNICODE_SUBCLASS: u64 = 1 << 28;
pub const TPFLAGS_DICT_SUBCLASS: u64 = 1 << 29;

/// A user-space pointer that could be a Python object (x86-64, 8-aligned).
pub fn plausible_ptr(p: u64) -> bool {
    (0x1000..(1 << 47)).contains(&p) && p.is_multiple_of(8)
}

pub fn check_ptr(p: u64, what: &str) -> Result<()> {
    if !plausible_ptr(p) {
        bail!("implausible {what} pointer {p:#x}");
    }
    Ok(())
}

/// Decoded `PyASCIIObject.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StrState {
    kind: u32,
    compact: bool,
    ascii: bool,
}

fn decode_state(word: u32, bits: StrStateBits) -> Option<StrState> {
    let shift = match bits {
        StrStateBits::Packed => 2,
        StrStateBits::InternedByte => 8,
    };
    let kind = (word >> shift) & 7;
    let compact = (word >> (shift + 3)) & 1 == 1;
    let ascii = (word >> (shift + 4)) & 1 == 1;
    let ok = matches!(kind, 1 | 2 | 4) && (!ascii || kind == 1);
    ok.then_some(StrState {
        kind,
        compact,
        ascii,
    })
}

/// Bytes covering `length` and `state`.
fn str_head_len(l: &StackLayout) -> Result<usize> {
    let o = &l.obj;
    Ok(usize::try_from((o.str_state + 4).max(o.str_length + 8))?)
}

/// The state word decoded with the layout's bit positions (and, for
/// free-threaded builds, the other known layout as a fallback).
fn str_state(l: &StackLayout, word: u32) -> Option<StrState> {
    let o = &l.obj;
    decode_state(word, o.str_state_bits).or_else(|| {
        let other = match o.str_state_bits {
            StrStateBits::Packed => StrStateBits::InternedByte,
            StrStateBits::InternedByte => StrStateBits::Packed,
        };
        o.str_state_fallback
            .then(|| decode_state(word, other))
            .flatten()
    })
}

/// `str` object at `addr` to a Rust `String`.
///
/// Compact ASCII, compact non-ASCII (UCS1/UCS2/UCS4) and legacy (non-compact,
/// ready) strings. Lone surrogates become U+FFFD. Longer than
/// [`MAX_STR_CHARS`] code points: cut and suffixed with "…".
pub fn read_str(l: &StackLayout, mem: &dyn Memory, addr: u64) -> Result<String> {
    check_ptr(addr, "str")?;
    let o = &l.obj;
    let head = mem
        .read_vec(addr, str_head_len(l)?)
        .with_context(|| format!("reading str header at {addr:#x}"))?;
    let b = Bytes(&head);
    let len = b.i64(o.str_length)?;
    if !(0..=MAX_PLAUSIBLE_STR_LEN).contains(&len) {
        bail!("str at {addr:#x} has implausible length {len}");
    }
    let word = b.u32(o.str_state)?;
    let state = str_state(l, word)
        .with_context(|| format!("str at {addr:#x} has an invalid state word {word:#x}"))?;
    let n = usize::try_from(len)?.min(MAX_STR_CHARS);
    let cut = usize::try_from(len)? > n;
    let data_addr = if state.compact {
        addr + if state.ascii {
            o.str_ascii_size
        } else {
            o.str_compact_size
        }
    } else {
        let p = mem
            .read_ptr(addr + o.str_compact_size)
            .with_context(|| format!("reading data pointer of legacy str at {addr:#x}"))?;
        if p == 0 {
            bail!("legacy str at {addr:#x} is not ready (no data)");
        }
        p
    };
    let width = state.kind as usize;
    let raw = mem
        .read_vec(data_addr, n * width)
        .with_context(|| format!("reading {n} chars of str at {addr:#x}"))?;
    let mut s = String::with_capacity(n + if cut { 3 } else { 0 });
    match width {
        1 => s.extend(raw.iter().map(|&c| char::from(c))),
        2 => s.extend(raw.chunks_exact(2).map(|c| {
            char::from_u32(u32::from(u16::from_le_bytes([c[0], c[1]]))).unwrap_or('\u{fffd}')
        })),
        _ => s.extend(raw.chunks_exact(4).map(|c| {
            char::from_u32(u32::from_le_bytes([c[0], c[1], c[2], c[3]])).unwrap_or('\u{fffd}')
        })),
    }
    if cut {
        s.push('…');
    }
    Ok(s)
}

/// Length in code points of the `str` at `addr`, and whether it is ASCII,
/// from one small read (used to skip dict keys cheaply).
pub fn str_len_ascii(l: &StackLayout, mem: &dyn Memory, addr: u64) -> Result<(i64, bool)> {
    check_ptr(addr, "str")?;
    let o = &l.obj;
    let head = mem.read_vec(addr, str_head_len(l)?)?;
    let b = Bytes(&head);
    let len = b.i64(o.str_length)?;
    let state = str_state(l, b.u32(o.str_state)?);
    Ok((len, state.is_some_and(|s| s.ascii)))
}

/// Whether the `str` at `addr` equals the ASCII string `want`.
pub fn str_equals(l: &StackLayout, mem: &dyn Memory, addr: u64, want: &str) -> bool {
    match str_len_ascii(l, mem, addr) {
        Ok((len, ascii)) if ascii && usize::try_from(len).ok() == Some(want.len()) => {
            read_str(l, mem, addr).is_ok_and(|s| s == want)
        }
        _ => false,
    }
}

/// Contents of a `bytes` object (line tables), bounded by [`MAX_BYTES`].
pub fn read_bytes(l: &StackLayout, mem: &dyn Memory, addr: u64) -> Result<Vec<u8>> {
    check_ptr(addr, "bytes")?;
    let size = mem.read_i64(addr + l.obj.ob_size)?;
    if !(0..=MAX_BYTES as i64).contains(&size) {
        bail!("bytes at {addr:#x} has implausible size {size}");
    }
    mem.read_vec(addr + l.obj.bytes_sval, size as usize)
        .with_context(|| format!("reading {size} bytes of bytes object at {addr:#x}"))
}

/// A non-negative `int` that fits in 64 bits (thread idents).
pub fn read_u64_long(l: &StackLayout, mem: &dyn Memory, addr: u64) -> Result<u64> {
    check_ptr(addr, "int")?;
    let raw = mem.read_vec(addr, u64_long_span(l) as usize)?;
    decode_u64_long(l, Bytes(&raw), addr)
}

/// How many bytes from an `int` object's start hold its header and up to 64 bits of digits.
pub fn u64_long_span(l: &StackLayout) -> u64 {
    let digits = match l.obj.long {
        LongLayout::SignedSize { digits, .. } | LongLayout::Tagged { digits, .. } => digits,
    };
    (digits + 12).max(l.obj.ob_type + 8)
}

/// [`read_u64_long`] of the bytes `b` read from `addr` (at least [`u64_long_span`] of them).
pub fn decode_u64_long(l: &StackLayout, b: Bytes<'_>, addr: u64) -> Result<u64> {
    let (ndigits, negative, digits_off) = match l.obj.long {
        LongLayout::SignedSize { size, digits } => {
            let s = b.i64(size)?;
            (s.unsigned_abs(), s < 0, digits)
        }
        LongLayout::Tagged { lv_tag, digits } => {
            let tag = b.u64(lv_tag)?;
            (tag >> 3, tag & 3 == 2, digits)
        }
    };
    if negative {
        bail!("int at {addr:#x} is negative");
    }
    if ndigits > 3 {
        bail!("int at {addr:#x} has {ndigits} digits, more than 64 bits");
    }
    let mut v: u128 = 0;
    for i in 0..ndigits {
        let d = b.u32(digits_off + 4 * i)?;
        if d >= 1 << 30 {
            bail!("int at {addr:#x} has an invalid digit {d:#x}");
        }
        v |= u128::from(d) << (30 * i);
    }
    u64::try_from(v).with_context(|| format!("int at {addr:#x} does not fit in 64 bits"))
}

/// The `(key, value)` pointers of a dict's live entries.
pub fn dict_items(l: &StackLayout, mem: &dyn Memory, dict: u64) -> Result<Vec<(u64, u64)>> {
    check_ptr(dict, "dict")?;
    let o = &l.obj;
    let head = mem.read_vec(dict, usize::try_from(o.dict_values.max(o.dict_keys) + 8)?)?;
    let b = Bytes(&head);
    let keys = b.u64(o.dict_keys)?;
    let values = b.u64(o.dict_values)?;
    // 3.12 never tags ma_values; 3.13+ split dicts point at the values struct.
    keys_items(l, mem, keys, (values != 0).then_some(values))
}

/// Entries of a keys object; with `values` (split table), values come from
/// the values array instead of the entries.
pub fn keys_items(
    l: &StackLayout,
    mem: &dyn Memory,
    keys: u64,
    values: Option<u64>,
) -> Result<Vec<(u64, u64)>> {
    check_ptr(keys, "dict keys")?;
    let head = mem.read_vec(keys, 40)?;
    let b = Bytes(&head);
    // (entries start, number of entries, entry size, key offset, value offset)
    let (entries, n, esize, koff, voff) = match l.obj.keys {
        KeysLayout::V39 => {
            let size = b.u64(8)?;
            let n = b.u64(32)?;
            ensure!(
                size.is_power_of_two() && size <= MAX_DICT_ENTRIES * 2 && n <= size,
                "implausible dict keys at {keys:#x}: size {size}, nentries {n}"
            );
            let ix = if size <= 0xff {
                1
            } else if size <= 0xffff {
                2
            } else if size <= 0xffff_ffff {
                4
            } else {
                8
            };
            (keys + 40 + size * ix, n, 24u64, 8u64, 16u64)
        }
        KeysLayout::V311 => {
            let log2_size = b.u8(8)?;
            let log2_index_bytes = b.u8(9)?;
            let kind = b.u8(10)?;
            let n = b.u64(24)?;
            ensure!(
                log2_size < 32
                    && (log2_size..=log2_size + 3).contains(&log2_index_bytes)
                    && kind <= 2
                    && n <= (1u64 << log2_size)
                    && n <= MAX_DICT_ENTRIES,
                "implausible dict keys at {keys:#x}: log2 size {log2_size}, \
                 log2 index bytes {log2_index_bytes}, kind {kind}, nentries {n}"
            );
            let start = keys + 32 + (1u64 << log2_index_bytes);
            if kind == 0 {
                (start, n, 24, 8, 16)
            } else {
                (start, n, 16, 0, 8)
            }
        }
    };
    if n == 0 {
        return Ok(Vec::new());
    }
    let raw = mem
        .read_vec(entries, usize::try_from(n * esize)?)
        .with_context(|| format!("reading {n} dict entries at {entries:#x}"))?;
    let vals = match values {
        Some(v) => {
            check_ptr(v, "dict values")?;
            let mut count = n;
            if l.obj.values_array == 8 {
                // 3.13+: `uint8_t capacity` bounds the array.
                count = count.min(u64::from(mem.read_u8(v)?));
            }
            let raw = mem.read_vec(v + l.obj.values_array, usize::try_from(count * 8)?)?;
            Some(raw)
        }
        None => None,
    };
    let mut out = Vec::new();
    for i in 0..n as usize {
        let e = Bytes(&raw[i * esize as usize..(i + 1) * esize as usize]);
        let k = e.u64(koff)?;
        let v = match &vals {
            Some(vs) => match vs.get(i * 8..i * 8 + 8) {
                Some(s) => Bytes(s).u64(0)?,
                None => 0,
            },
            None => e.u64(voff)?,
        };
        if k != 0 && v != 0 {
            out.push((k, v));
        }
    }
    Ok(out)
}

/// Type-object facts used by the attribute reader, read in one go.
#[derive(Debug, Clone, Copy)]
pub struct TypeInfo {
    pub flags: u64,
    pub basicsize: i64,
    pub dictoffset: i64,
}

pub fn type_of(l: &StackLayout, mem: &dyn Memory, obj: u64) -> Result<u64> {
    check_ptr(obj, "object")?;
    let t = mem.read_ptr(obj + l.obj.ob_type)?;
    check_ptr(t, "type")?;
    Ok(t)
}

/// Whether the object at `obj` has a type with `flag` in `tp_flags`
/// (`Py_TPFLAGS_*_SUBCLASS` bits: exact types have them too).
pub fn has_type_flag(l: &StackLayout, mem: &dyn Memory, obj: u64, flag: u64) -> bool {
    type_of(l, mem, obj)
        .and_then(|tp| mem.read_u64(tp + l.obj.tp_flags))
        .is_ok_and(|f| f & flag != 0)
}

pub fn type_info(l: &StackLayout, mem: &dyn Memory, tp: u64) -> Result<TypeInfo> {
    let o = &l.obj;
    let end = o.tp_flags.max(o.tp_dictoffset).max(o.tp_basicsize) + 8;
    let raw = mem
        .read_vec(tp, usize::try_from(end)?)
        .with_context(|| format!("reading type object at {tp:#x}"))?;
    let b = Bytes(&raw);
    Ok(TypeInfo {
        flags: b.u64(o.tp_flags)?,
        basicsize: b.i64(o.tp_basicsize)?,
        dictoffset: b.i64(o.tp_dictoffset)?,
    })
}

/// Whether the type's `tp_name` is exactly `name`.
pub fn type_named(l: &StackLayout, mem: &dyn Memory, tp: u64, name: &str) -> bool {
    let Ok(p) = mem.read_ptr(tp + l.obj.tp_name) else {
        return false;
    };
    if p == 0 {
        return false;
    }
    let mut buf = vec![0u8; name.len() + 1];
    mem.read(p, &mut buf).is_ok() && &buf[..name.len()] == name.as_bytes() && buf[name.len()] == 0
}

/// The `(key, value)` pairs of an object's instance `__dict__`, wherever the
/// version keeps it: `tp_dictoffset`, 3.11/3.12 managed dict pointer or
/// values, 3.13+ managed dict or inline values.
pub fn instance_dict_items(l: &StackLayout, mem: &dyn Memory, obj: u64) -> Result<Vec<(u64, u64)>> {
    let tp = type_of(l, mem, obj)?;
    let ti = type_info(l, mem, tp)?;
    let cached_keys = || -> Result<u64> {
        ensure!(
            ti.flags & TPFLAGS_HEAPTYPE != 0,
            "managed-dict values on a static type {tp:#x}"
        );
        let k = mem.read_ptr(tp + l.obj.ht_cached_keys)?;
        check_ptr(k, "ht_cached_keys")?;
        Ok(k)
    };
    if ti.flags & TPFLAGS_MANAGED_DICT != 0 {
        match l.obj.managed {
            ManagedDict::None => {}
            ManagedDict::V311 => {
                let dict = mem.read_ptr(obj - 24)?;
                if dict != 0 {
                    return dict_items(l, mem, dict);
                }
                let values = mem.read_ptr(obj - 32)?;
                if values != 0 {
                    return keys_items(l, mem, cached_keys()?, Some(values));
                }
                return Ok(Vec::new());
            }
            ManagedDict::V312 => {
                let word = mem.read_ptr(obj - 24)?;
                if word & 1 == 1 {
                    return keys_items(l, mem, cached_keys()?, Some(word + 1));
                }
                if word != 0 {
                    return dict_items(l, mem, word);
                }
                return Ok(Vec::new());
            }
            ManagedDict::V313 { dict_offset } => {
                let dict = mem.read_ptr(obj.wrapping_add_signed(dict_offset))?;
                if dict != 0 {
                    return dict_items(l, mem, dict);
                }
                if ti.flags & TPFLAGS_INLINE_VALUES != 0 {
                    ensure!(
                        (8..4096).contains(&ti.basicsize),
                        "implausible tp_basicsize {} of type {tp:#x}",
                        ti.basicsize
                    );
                    let values = obj + ti.basicsize as u64;
                    // `uint8_t valid` (4th byte): 0 once the values moved to a dict.
                    let hdr = mem.read_vec(values, 4)?;
                    if hdr[3] == 0 {
                        return Ok(Vec::new());
                    }
                    return keys_items(l, mem, cached_keys()?, Some(values));
                }
                return Ok(Vec::new());
            }
        }
    }
    if ti.dictoffset > 0 && ti.dictoffset < 1 << 20 {
        let dict = mem.read_ptr(obj + ti.dictoffset as u64)?;
        if dict == 0 {
            return Ok(Vec::new());
        }
        return dict_items(l, mem, dict);
    }
    bail!(
        "object at {obj:#x} has no instance dict this reader understands \
         (flags {:#x}, dictoffset {})",
        ti.flags,
        ti.dictoffset
    )
}

/// Value of the str-keyed entry `name` among `items`, if present.
pub fn lookup(l: &StackLayout, mem: &dyn Memory, items: &[(u64, u64)], name: &str) -> Option<u64> {
    // Every key's length and state in one gather read; only keys of the same length, ASCII,
    // are read further (`sys.modules` has hundreds of keys on as many pages).
    if items.len() > 1 && items.iter().all(|&(k, _)| check_ptr(k, "str").is_ok()) {
        if let Ok(head) = str_head_len(l) {
            let mut g = super::super::memory::Gather::default();
            for &(k, _) in items {
                g.add(k, head as u64);
            }
            if g.run(mem).is_ok() {
                return items.iter().enumerate().find_map(|(i, &(k, v))| {
                    let b = g.get(i);
                    let len = b.i64(l.obj.str_length).ok()?;
                    let ascii = str_state(l, b.u32(l.obj.str_state).ok()?)?.ascii;
                    (ascii
                        && usize::try_from(len).ok() == Some(name.len())
                        && read_str(l, mem, k).is_ok_and(|s| s == name))
                    .then_some(v)
                });
            }
        }
    }
    items
        .iter()
        .find(|(k, _)| str_equals(l, mem, *k, name))
        .map(|&(_, v)| v)
}
