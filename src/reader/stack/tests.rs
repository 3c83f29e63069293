//! Stack walking, strings and thread names over fake address spaces built
//! with the same layouts the readers use.

use super::layout::{ManagedDict, StackLayout};
use super::objects::{self, TPFLAGS_HEAPTYPE, TPFLAGS_INLINE_VALUES, TPFLAGS_MANAGED_DICT};
use super::{RawFrame, StackReader, ThreadingName, KNOWN_FRAMES_FOR};
use crate::reader::debug_offsets::{DebugOffsets, Header, COOKIE};
use crate::reader::memory::LocalMem;

/// `_Py_DebugOffsets` of the pyenv 3.13.0 build, read from the `.PyRuntime`
/// section of its `libpython3.13.so.1.0` on disk (the table is initialised
/// data), in table order after the 24-byte header.
const TABLE_3130: [u64; 70] = [
    283320, 608, 632, // runtime_state
    194968, 7272, 7264, 7344, 7400, 7656, 7640, 7648, 16, 7752, 0, 7768,
    7760, // interpreter_state
    304, 0, 8, 16, 72, 152, 160, 232, 32, // thread_state
    80, 8, 0, 56, 72, 70, // interpreter_frame
    208, 112, 120, 128, 136, 68, 52, 96, 104, 200, // code_object
    16, 8, // pyobject
    416, 24, 88, 168, // type_object
    32, 24, 16, // tuple_object
    40, 24, 16, // list_object
    48, 32, 40, // dict_object
    24, 16, // float_object
    32, 16, 24, // long_object
    40, 16, 32, // bytes_object
    64, 32, 16, 40, // unicode_object
    240, 200, // gc
];

fn offsets_3130() -> DebugOffsets {
    let mut b = Vec::new();
    b.extend_from_slice(COOKIE);
    b.extend_from_slice(&0x030d00f0u64.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    for v in TABLE_3130 {
        b.extend_from_slice(&v.to_le_bytes());
    }
    assert_eq!(Some(b.len()), DebugOffsets::table_size(13));
    DebugOffsets::parse(
        Header {
            version_hex: 0x030d00f0,
            free_threaded: false,
        },
        &b,
    )
    .unwrap()
}

/// A growing fake heap.
struct Fake {
    mem: LocalMem,
    next: u64,
    l: StackLayout,
    str_type: u64,
    bytes_type: u64,
    int_type: u64,
    dict_type: u64,
}

fn put(buf: &mut [u8], off: u64, v: u64) {
    let o = off as usize;
    buf[o..o + 8].copy_from_slice(&v.to_le_bytes());
}

impl Fake {
    fn new(l: StackLayout) -> Self {
        let mut f = Fake {
            mem: LocalMem::new(),
            next: 0x10_0000,
            l,
            str_type: 0,
            bytes_type: 0,
            int_type: 0,
            dict_type: 0,
        };
        f.str_type = f.typ("str", 1 << 28, 0, 0);
        f.bytes_type = f.typ("bytes", 1 << 27, 0, 0);
        f.int_type = f.typ("int", 1 << 24, 0, 0);
        f.dict_type = f.typ("dict", 1 << 29, 0, 0);
        f
    }

    fn alloc(&mut self, bytes: Vec<u8>) -> u64 {
        let a = self.next;
        self.next = (a + bytes.len() as u64 + 64 + 63) & !63;
        self.mem.add(a, bytes);
        a
    }

    /// An object of `size` bytes with `ob_type` set; `fill` writes fields.
    fn object(&mut self, tp: u64, size: u64, fill: impl FnOnce(&mut Vec<u8>)) -> u64 {
        let mut b = vec![0u8; size as usize];
        put(&mut b, self.l.obj.ob_type, tp);
        fill(&mut b);
        self.alloc(b)
    }

    fn cstr(&mut self, s: &str) -> u64 {
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        self.alloc(b)
    }

    /// A type object (heap-type sized) named `name`.
    fn typ(&mut self, name: &str, flags: u64, basicsize: u64, dictoffset: i64) -> u64 {
        let n = self.cstr(name);
        let o = self.l.obj.clone();
        let size = o.ht_cached_keys + 8;
        self.object(0, size, |b| {
            put(b, o.tp_name, n);
            put(b, o.tp_flags, flags);
            put(b, o.tp_basicsize, basicsize);
            put(b, o.tp_dictoffset, dictoffset as u64);
        })
    }

    fn str(&mut self, s: &str) -> u64 {
        let o = self.l.obj.clone();
        let chars: Vec<u32> = s.chars().map(u32::from).collect();
        let max = chars.iter().copied().max().unwrap_or(0);
        let (kind, ascii) = match max {
            0..=127 => (1u32, true),
            128..=255 => (1, false),
            256..=0xffff => (2, false),
            _ => (4, false),
        };
        let data = if ascii {
            o.str_ascii_size
        } else {
            o.str_compact_size
        };
        let shift = match o.str_state_bits {
            super::layout::StrStateBits::Packed => 2,
            super::layout::StrStateBits::InternedByte => 8,
        };
        let state = (kind << shift) | (1 << (shift + 3)) | (u32::from(ascii) << (shift + 4));
        let tp = self.str_type;
        let size = data + (chars.len() as u64 + 1) * u64::from(kind);
        self.object(tp, size, |b| {
            put(b, o.str_length, chars.len() as u64);
            let so = o.str_state as usize;
            b[so..so + 4].copy_from_slice(&state.to_le_bytes());
            for (i, c) in chars.iter().enumerate() {
                let at = data as usize + i * kind as usize;
                b[at..at + kind as usize].copy_from_slice(&c.to_le_bytes()[..kind as usize]);
            }
        })
    }

    fn bytes(&mut self, data: &[u8]) -> u64 {
        let o = self.l.obj.clone();
        let tp = self.bytes_type;
        self.object(tp, o.bytes_sval + data.len() as u64 + 1, |b| {
            put(b, o.ob_size, data.len() as u64);
            b[o.bytes_sval as usize..o.bytes_sval as usize + data.len()].copy_from_slice(data);
        })
    }

    fn int(&mut self, v: u64) -> u64 {
        let o = self.l.obj.clone();
        let mut digits = Vec::new();
        let mut x = v;
        while x != 0 {
            digits.push((x & ((1 << 30) - 1)) as u32);
            x >>= 30;
        }
        let tp = self.int_type;
        self.object(tp, 48, |b| {
            let d = match o.long {
                super::layout::LongLayout::SignedSize { size, digits: d } => {
                    put(b, size, digits.len() as u64);
                    d
                }
                super::layout::LongLayout::Tagged { lv_tag, digits: d } => {
                    let sign = if digits.is_empty() { 1 } else { 0 };
                    put(b, lv_tag, (digits.len() as u64) << 3 | sign);
                    d
                }
            };
            for (i, dg) in digits.iter().enumerate() {
                let at = d as usize + 4 * i;
                b[at..at + 4].copy_from_slice(&dg.to_le_bytes());
            }
        })
    }

    /// A keys object holding `entries` (key, value) pairs; `unicode` picks the
    /// 3.11+ `{key, value}` entry format (kind 1, or 2 = split with NULL values).
    fn keys(&mut self, entries: &[(u64, u64)], kind: u8) -> u64 {
        let mut b;
        match self.l.obj.keys {
            super::layout::KeysLayout::V39 => {
                let size = 8u64;
                b = vec![0u8; 40 + size as usize + entries.len() * 24];
                put(&mut b, 0, 1);
                put(&mut b, 8, size);
                put(&mut b, 32, entries.len() as u64);
                for (i, (k, v)) in entries.iter().enumerate() {
                    let e = 40 + size + 24 * i as u64;
                    put(&mut b, e, 0x1234);
                    put(&mut b, e + 8, *k);
                    put(&mut b, e + 16, *v);
                }
            }
            super::layout::KeysLayout::V311 => {
                let esize = if kind == 0 { 24u64 } else { 16 };
                b = vec![0u8; 32 + 8 + entries.len() * esize as usize];
                put(&mut b, 0, 1);
                b[8] = 3; // log2 size 8
                b[9] = 3; // 8 one-byte indices
                b[10] = kind;
                put(&mut b, 24, entries.len() as u64);
                for (i, (k, v)) in entries.iter().enumerate() {
                    let e = 40 + esize * i as u64;
                    let (ko, vo) = if kind == 0 { (8, 16) } else { (0, 8) };
                    if kind == 0 {
                        put(&mut b, e, 0x1234);
                    }
                    put(&mut b, e + ko, *k);
                    put(&mut b, e + vo, if kind == 2 { 0 } else { *v });
                }
            }
        }
        self.alloc(b)
    }

    fn dict(&mut self, entries: &[(u64, u64)], unicode_keys: bool) -> u64 {
        let kind = if unicode_keys { 1 } else { 0 };
        let keys = self.keys(entries, kind);
        let o = self.l.obj.clone();
        let tp = self.dict_type;
        self.object(tp, o.dict_values + 8, |b| {
            put(b, o.dict_keys, keys);
        })
    }

    /// A split-table values block for `vals` (3.13+: with its 8-byte prefix).
    fn values_block(&self, vals: &[u64]) -> Vec<u8> {
        let pre = self.l.obj.values_array as usize;
        let mut b = vec![0u8; pre + 8 * vals.len()];
        if pre == 8 {
            b[0] = vals.len() as u8; // capacity
            b[1] = vals.len() as u8; // size
            b[3] = 1; // valid
        }
        for (i, v) in vals.iter().enumerate() {
            put(&mut b, (pre + 8 * i) as u64, *v);
        }
        b
    }
}

fn frames(list: &[(&str, &str, i32)]) -> Vec<(String, String, i32)> {
    list.iter()
        .map(|(f, file, line)| (f.to_string(), file.to_string(), *line))
        .collect()
}

/// What a stack says, without the frame addresses.
fn said(stack: Vec<RawFrame>) -> Vec<(String, String, i32)> {
    stack
        .into_iter()
        .map(|f| (f.function.to_string(), f.file.to_string(), f.line))
        .collect()
}

/// Location table (3.11+): units 0-1 → first+1, units 2-4 → first+3,
/// unit 5 no location, unit 6 → first+3. Checked with CPython 3.12.1:
/// `co.replace(co_linetable=...)` on a 7-unit function with firstlineno 1
/// gives co_lines() `[(0, 4, 2), (4, 10, 4), (10, 12, None), (12, 14, 4)]`.
const LOCATIONS: &[u8] = &[0xE9, 2, 0xEA, 4, 0xF8, 0xE8, 0];

#[test]
fn strings_of_every_kind() {
    for minor in [9, 12] {
        let mut f = Fake::new(StackLayout::builtin(minor).unwrap());
        let r = StackReader::new(f.l.clone());
        for s in ["", "worker-1", "wörker-ü", "线程-x", "线程-😀", "<module>"] {
            let a = f.str(s);
            assert_eq!(r.read_str(&f.mem, a).unwrap(), s, "3.{minor}");
        }
        let long = "x".repeat(5000);
        let a = f.str(&long);
        let got = r.read_str(&f.mem, a).unwrap();
        assert_eq!(got.chars().count(), super::MAX_STR_CHARS + 1);
        assert!(got.ends_with('…'));
    }
}

#[test]
fn garbage_strings_are_errors() {
    let mut f = Fake::new(StackLayout::builtin(12).unwrap());
    let r = StackReader::new(f.l.clone());
    let a = f.alloc(vec![0xffu8; 128]);
    assert!(r.read_str(&f.mem, a).is_err());
    let b = f.alloc(vec![0u8; 128]); // kind 0
    assert!(r.read_str(&f.mem, b).is_err());
    assert!(r.read_str(&f.mem, 0).is_err());
    assert!(r.read_str(&f.mem, 0x10_0003).is_err());
}

#[test]
fn free_threaded_state_byte_layout() {
    let mut l = StackLayout::builtin(12).unwrap();
    l.obj.str_state_bits = super::layout::StrStateBits::InternedByte;
    let mut f = Fake::new(l.clone());
    let a = f.str("ft-😀");
    let r = StackReader::new(l.clone());
    assert_eq!(r.read_str(&f.mem, a).unwrap(), "ft-😀");
    // A reader expecting the other layout accepts it only with the fallback.
    let mut other = l.clone();
    other.obj.str_state_bits = super::layout::StrStateBits::Packed;
    assert!(objects::read_str(&other, &f.mem, a).is_err());
    other.obj.str_state_fallback = true;
    assert_eq!(objects::read_str(&other, &f.mem, a).unwrap(), "ft-😀");
}

/// 3.12: tstate->cframe->current_frame, `_PyInterpreterFrame` chain with a
/// C-stack shim in the middle.
#[test]
fn walks_a_312_stack() {
    let l = StackLayout::builtin(12).unwrap();
    let mut f = Fake::new(l.clone());
    let code_type = f.typ("code", 0, 0, 0);
    let file = f.str("/app/x.py");
    let mk_code = |f: &mut Fake, name: &str, qual: &str, first: u32| {
        let n = f.str(name);
        let q = f.str(qual);
        let t = f.bytes(LOCATIONS);
        let cl = l.code.clone();
        let o = l.obj.clone();
        f.object(code_type, cl.code_adaptive.unwrap() + 14, |b| {
            put(b, o.ob_size, 7);
            put(b, cl.filename, file);
            put(b, cl.name, n);
            put(b, cl.qualname.unwrap(), q);
            put(b, cl.linetable, t);
            b[cl.firstlineno as usize..cl.firstlineno as usize + 4]
                .copy_from_slice(&first.to_le_bytes());
        })
    };
    let inner = mk_code(&mut f, "inner", "C.inner", 10);
    let outer = mk_code(&mut f, "<module>", "<module>", 1);
    let adaptive = l.code.code_adaptive.unwrap();
    let fl = l.frame.clone();
    let mk_frame = |f: &mut Fake, code: u64, unit: u64, owner: u8, prev: u64| {
        let mut b = vec![0u8; 80];
        put(&mut b, fl.code, code);
        put(&mut b, fl.previous, prev);
        put(&mut b, fl.instr, code + adaptive + 2 * unit);
        b[fl.owner.unwrap() as usize] = owner;
        f.alloc(b)
    };
    let f3 = mk_frame(&mut f, outer, 6, 0, 0);
    let shim = mk_frame(&mut f, outer, 0, 3, f3);
    let f1 = mk_frame(&mut f, inner, 3, 1, shim);
    let cframe = f.alloc(f1.to_le_bytes().to_vec());
    let mut ts = vec![0u8; 200];
    put(&mut ts, fl.tstate_frame, cframe);
    let ts = f.alloc(ts);

    let mut r = StackReader::new(l.clone());
    let want = frames(&[("C.inner", "/app/x.py", 13), ("<module>", "/app/x.py", 4)]);
    assert_eq!(said(r.read_stack(&f.mem, ts).unwrap()), want);
    // Second time from the cache.
    assert_eq!(said(r.read_stack(&f.mem, ts).unwrap()), want);

    // Instruction without a location → line 0; before the first one → firstlineno.
    let nol = mk_frame(&mut f, inner, 5, 0, 0);
    let start = {
        let mut b = vec![0u8; 80];
        put(&mut b, fl.code, inner);
        put(&mut b, fl.instr, inner + adaptive - 2);
        f.alloc(b)
    };
    for (frame, line) in [(nol, 0), (start, 10)] {
        let cf = f.alloc(frame.to_le_bytes().to_vec());
        let mut t = vec![0u8; 200];
        put(&mut t, fl.tstate_frame, cf);
        let t = f.alloc(t);
        assert_eq!(r.read_stack(&f.mem, t).unwrap()[0].line, line);
    }

    // No cframe / no frame: empty stack.
    let empty = f.alloc(vec![0u8; 200]);
    assert!(r.read_stack(&f.mem, empty).unwrap().is_empty());

    // A frame whose code is not a code object: error (torn read).
    let not_code = f.str("nope");
    let bad = mk_frame(&mut f, not_code, 0, 0, 0);
    let cf = f.alloc(bad.to_le_bytes().to_vec());
    let mut t = vec![0u8; 200];
    put(&mut t, fl.tstate_frame, cf);
    let t = f.alloc(t);
    assert!(r.read_stack(&f.mem, t).is_err());
}

#[test]
fn cycles_fail_and_depth_is_bounded() {
    let l = StackLayout::builtin(12).unwrap();
    let mut f = Fake::new(l.clone());
    let code_type = f.typ("code", 0, 0, 0);
    let file = f.str("f.py");
    let name = f.str("loop");
    let table = f.bytes(LOCATIONS);
    let cl = l.code.clone();
    let o = l.obj.clone();
    let code = f.object(code_type, cl.code_adaptive.unwrap() + 14, |b| {
        put(b, o.ob_size, 7);
        put(b, cl.filename, file);
        put(b, cl.name, name);
        put(b, cl.qualname.unwrap(), name);
        put(b, cl.linetable, table);
    });
    let fl = l.frame.clone();
    // Ten frames in a ring.
    let base = f.next;
    let mut ring = vec![0u8; 80 * 10];
    for i in 0..10u64 {
        put(&mut ring, 80 * i + fl.code, code);
        put(&mut ring, 80 * i + fl.previous, base + 80 * ((i + 1) % 10));
        put(
            &mut ring,
            80 * i + fl.instr,
            code + cl.code_adaptive.unwrap(),
        );
    }
    assert_eq!(f.alloc(ring), base);
    let cf = f.alloc(base.to_le_bytes().to_vec());
    let mut t = vec![0u8; 200];
    put(&mut t, fl.tstate_frame, cf);
    let t = f.alloc(t);
    let mut r = StackReader::new(l.clone());
    let err = r.read_stack(&f.mem, t).unwrap_err();
    assert!(format!("{err:#}").contains("cycle"), "{err:#}");
    // With a bound below the ring size the walk stops first.
    let mut r = StackReader::new(l).with_max_depth(4);
    assert_eq!(r.read_stack(&f.mem, t).unwrap().len(), 4);
}

/// 3.9: `tstate->frame`, frame objects with `f_lasti` in bytes and `co_lnotab`.
#[test]
fn walks_a_39_stack() {
    let l = StackLayout::builtin(9).unwrap();
    let mut f = Fake::new(l.clone());
    let code_type = f.typ("code", 0, 0, 0);
    let frame_type = f.typ("frame", 0, 0, 0);
    let file = f.str("/app/y.py");
    let name = f.str("work");
    // lnotab: +4 bytes → +1 line, +6 bytes → +2 lines.
    let table = f.bytes(&[4, 1, 6, 2]);
    let cl = l.code.clone();
    let code = f.object(code_type, cl.read_size, |b| {
        put(b, cl.filename, file);
        put(b, cl.name, name);
        put(b, cl.linetable, table);
        b[cl.firstlineno as usize..cl.firstlineno as usize + 4]
            .copy_from_slice(&20u32.to_le_bytes());
    });
    let fl = l.frame.clone();
    let mk = |f: &mut Fake, lasti: i32, back: u64| {
        f.object(frame_type, 120, |b| {
            put(b, fl.code, code);
            put(b, fl.previous, back);
            b[fl.instr as usize..fl.instr as usize + 4].copy_from_slice(&lasti.to_le_bytes());
        })
    };
    let outer = mk(&mut f, -1, 0);
    let mid = mk(&mut f, 4, outer);
    let inner = mk(&mut f, 12, mid);
    let mut t = vec![0u8; 200];
    put(&mut t, fl.tstate_frame, inner);
    let t = f.alloc(t);
    let mut r = StackReader::new(l.clone());
    assert_eq!(
        said(r.read_stack(&f.mem, t).unwrap()),
        frames(&[
            ("work", "/app/y.py", 23),
            ("work", "/app/y.py", 21),
            ("work", "/app/y.py", 20)
        ])
    );
    // Something that is not a frame object in the chain.
    let not_frame = f.str("x");
    let mut t2 = vec![0u8; 200];
    put(&mut t2, fl.tstate_frame, not_frame);
    let t2 = f.alloc(t2);
    assert!(r.read_stack(&f.mem, t2).is_err());
}

/// 3.13 with the real 3.13.0 debug offsets: `current_frame`, `f_executable`
/// (None for a C-stack entry frame), `instr_ptr`.
#[test]
fn walks_a_313_stack_from_debug_offsets() {
    let d = offsets_3130();
    let l = StackLayout::from_debug_offsets(13, &d).unwrap();
    // Cross-check against the gdb numbers of the same build.
    assert_eq!(l.frame.tstate_frame, 72);
    assert_eq!((l.frame.previous, l.frame.code, l.frame.instr), (8, 0, 56));
    assert_eq!(l.frame.owner, Some(70));
    assert_eq!(l.code.code_adaptive, Some(200));
    assert_eq!(
        (l.code.qualname, l.code.linetable, l.code.firstlineno),
        (Some(128), 136, 68)
    );
    assert_eq!(
        (
            l.obj.tp_basicsize,
            l.obj.tp_dictoffset,
            l.obj.ht_cached_keys
        ),
        (32, 288, 880)
    );
    assert_eq!((l.obj.str_ascii_size, l.obj.str_compact_size), (40, 56));
    assert_eq!(l.interp_modules, 7656);
    assert_eq!(l.obj.managed, ManagedDict::V313 { dict_offset: -24 });

    let mut f = Fake::new(l.clone());
    let code_type = f.typ("code", 0, 0, 0);
    let none_type = f.typ("NoneType", 0, 0, 0);
    let none = f.object(none_type, 16, |_| {});
    let file = f.str("/app/z.py");
    let name = f.str("g");
    let qual = f.str("Outer.g");
    let table = f.bytes(LOCATIONS);
    let cl = l.code.clone();
    let o = l.obj.clone();
    let code = f.object(code_type, cl.code_adaptive.unwrap() + 14, |b| {
        put(b, o.ob_size, 7);
        put(b, cl.filename, file);
        put(b, cl.name, name);
        put(b, cl.qualname.unwrap(), qual);
        put(b, cl.linetable, table);
        b[cl.firstlineno as usize..cl.firstlineno as usize + 4]
            .copy_from_slice(&5u32.to_le_bytes());
    });
    let fl = l.frame.clone();
    let mk = |f: &mut Fake, exe: u64, unit: u64, owner: u8, prev: u64| {
        let mut b = vec![0u8; 80];
        put(&mut b, fl.code, exe);
        put(&mut b, fl.previous, prev);
        put(
            &mut b,
            fl.instr,
            code + cl.code_adaptive.unwrap() + 2 * unit,
        );
        b[fl.owner.unwrap() as usize] = owner;
        f.alloc(b)
    };
    let entry = mk(&mut f, none, 0, 3, 0);
    let outer = mk(&mut f, code, 1, 0, entry);
    let odd = mk(&mut f, none, 0, 0, outer); // executable not a code object
    let inner = mk(&mut f, code, 4, 1, odd);
    let mut t = vec![0u8; 400];
    put(&mut t, fl.tstate_frame, inner);
    let t = f.alloc(t);
    let mut r = StackReader::new(l);
    assert_eq!(
        said(r.read_stack(&f.mem, t).unwrap()),
        frames(&[("Outer.g", "/app/z.py", 8), ("Outer.g", "/app/z.py", 6)])
    );
}

/// Builds sys.modules → threading → _active → Thread objects for `l`, with
/// the Thread attributes stored as `store` says, and checks the names.
fn threading_names_for(l: StackLayout, store: &str) {
    let mut f = Fake::new(l.clone());
    let o = l.obj.clone();
    let module_type = f.typ("module", 0, 0, o.ob_type as i64 + 8);
    let k_threading = f.str("threading");
    let k_sys = f.str("sys");
    let k_active = f.str("_active");
    let k_other = f.str("_other");
    let k_name = f.str("_name");
    let k_ident = f.str("_ident");
    let k_native = f.str("_native_id");

    // Thread class and instances.
    let (flags, basicsize, dictoffset) = match store {
        "dictoffset" => (TPFLAGS_HEAPTYPE, 32, 16),
        "managed" => (TPFLAGS_HEAPTYPE | TPFLAGS_MANAGED_DICT, 16, -1),
        "inline" => (
            TPFLAGS_HEAPTYPE | TPFLAGS_MANAGED_DICT | TPFLAGS_INLINE_VALUES,
            16,
            -1,
        ),
        _ => unreachable!(),
    };
    let thread_type = f.typ("Thread", flags, basicsize, dictoffset);
    let shared = f.keys(&[(k_ident, 0), (k_name, 0), (k_native, 0)], 2);
    put_mem(&mut f, thread_type + o.ht_cached_keys, shared);

    let mut active = Vec::new();
    let mut want = std::collections::HashMap::new();
    for (i, name) in ["MainThread", "wörker-ü", "线程-😀"].iter().enumerate() {
        let ident = 0x7f00_0000_0000u64 + 0x100_0000 * i as u64;
        let name_obj = f.str(name);
        let ident_obj = f.int(ident);
        let native_obj = f.int(1000 + i as u64);
        let thread = match (store, l.obj.managed, i) {
            ("dictoffset", _, _) => {
                let d = f.dict(
                    &[
                        (k_ident, ident_obj),
                        (k_name, name_obj),
                        (k_native, native_obj),
                    ],
                    true,
                );
                f.object(thread_type, 32, |b| put(b, 16, d))
            }
            // 3.11 managed dict: values pointer at -32 (or a real dict at -24).
            ("managed", ManagedDict::V311, _) => {
                let vals = f.values_block(&[ident_obj, name_obj, native_obj]);
                let v = f.alloc(vals);
                let d = if i == 2 {
                    f.dict(
                        &[
                            (k_ident, ident_obj),
                            (k_name, name_obj),
                            (k_native, native_obj),
                        ],
                        true,
                    )
                } else {
                    0
                };
                let mut b = vec![0u8; 48];
                put(&mut b, 0, v);
                put(&mut b, 8, d);
                put(&mut b, 32 + o.ob_type, thread_type);
                f.alloc(b) + 32
            }
            // 3.12: tagged word at -24: values - 1, or a dict.
            ("managed", ManagedDict::V312, _) => {
                let vals = f.values_block(&[ident_obj, name_obj, native_obj]);
                let v = f.alloc(vals);
                let word = if i == 2 {
                    f.dict(
                        &[
                            (k_ident, ident_obj),
                            (k_name, name_obj),
                            (k_native, native_obj),
                        ],
                        true,
                    )
                } else {
                    v - 1
                };
                let mut b = vec![0u8; 48];
                put(&mut b, 8, word);
                put(&mut b, 32 + o.ob_type, thread_type);
                f.alloc(b) + 32
            }
            // 3.13+: dict pointer at -24 (NULL), values inline after the header.
            ("inline", _, _) => {
                let vals = f.values_block(&[ident_obj, name_obj, native_obj]);
                let mut b = vec![0u8; 48 + vals.len()];
                put(&mut b, 32 + o.ob_type, thread_type);
                b[48..].copy_from_slice(&vals);
                f.alloc(b) + 32
            }
            _ => unreachable!(),
        };
        active.push((ident_obj, thread));
        want.insert(
            ident,
            ThreadingName {
                name: name.to_string(),
                native_id: Some(1000 + i as u64),
            },
        );
    }
    let active_dict = f.dict(&active, false);
    let other = f.dict(&[], true);
    let globals = f.dict(&[(k_other, other), (k_active, active_dict)], true);
    let sys_mod = f.object(module_type, 32, |_| {});
    let threading = f.object(module_type, 32, |b| put(b, o.ob_type + 8, globals));
    let modules = f.dict(&[(k_sys, sys_mod), (k_threading, threading)], true);
    let mut interp = vec![0u8; l.interp_modules as usize + 8];
    put(&mut interp, l.interp_modules, modules);
    let interp = f.alloc(interp);

    let mut r = StackReader::new(l.clone());
    assert_eq!(
        r.threading_names(&f.mem, interp).unwrap(),
        want,
        "3.{} {store}",
        l.minor
    );

    // Only the wanted threads are read (the `_active` address is kept from the call above).
    let one = 0x7f00_0000_0000u64 + 0x100_0000;
    let only: std::collections::HashMap<_, _> = want
        .iter()
        .filter(|(k, _)| **k == one)
        .map(|(k, v)| (*k, v.clone()))
        .collect();
    assert_eq!(only.len(), 1);
    assert_eq!(
        r.threading_names_where(&f.mem, interp, |i| i == one)
            .unwrap(),
        only,
        "3.{} {store}: one wanted thread",
        l.minor
    );

    // Without threading imported: empty.
    let modules2 = f.dict(&[(k_sys, sys_mod)], true);
    let mut interp2 = vec![0u8; l.interp_modules as usize + 8];
    put(&mut interp2, l.interp_modules, modules2);
    let interp2 = f.alloc(interp2);
    assert!(r.threading_names(&f.mem, interp2).unwrap().is_empty());
    // Before sys.modules exists: empty.
    let interp3 = f.alloc(vec![0u8; l.interp_modules as usize + 8]);
    assert!(r.threading_names(&f.mem, interp3).unwrap().is_empty());
}

/// Overwrites 8 bytes inside an existing fake region.
fn put_mem(f: &mut Fake, addr: u64, v: u64) {
    for (base, bytes) in f.mem.regions.iter_mut() {
        if addr >= *base && addr + 8 <= *base + bytes.len() as u64 {
            put(bytes, addr - *base, v);
            return;
        }
    }
    panic!("put_mem outside the fake heap");
}

#[test]
fn threading_names_39_310() {
    threading_names_for(StackLayout::builtin(9).unwrap(), "dictoffset");
    threading_names_for(StackLayout::builtin(10).unwrap(), "dictoffset");
}

#[test]
fn threading_names_311_312() {
    threading_names_for(StackLayout::builtin(11).unwrap(), "managed");
    threading_names_for(StackLayout::builtin(12).unwrap(), "managed");
}

#[test]
fn threading_names_313_inline_values() {
    let l = StackLayout::from_debug_offsets(13, &offsets_3130()).unwrap();
    threading_names_for(l, "inline");
}

#[test]
fn ints_up_to_64_bits() {
    for minor in [9, 12] {
        let mut f = Fake::new(StackLayout::builtin(minor).unwrap());
        for v in [0u64, 1, 1 << 30, 0x7f12_3456_7890, u64::MAX] {
            let a = f.int(v);
            assert_eq!(objects::read_u64_long(&f.l, &f.mem, a).unwrap(), v);
        }
    }
}

/// Free-threaded 3.14+: `instr_ptr` points into a thread-local copy of the
/// bytecode, `co_tlbc->entries[frame->tlbc_index]` (synthetic offsets on the
/// 3.13.0 layout: no free-threaded 3.14 binary was available to measure).
#[test]
fn thread_local_bytecode_offsets() {
    let mut l = StackLayout::from_debug_offsets(13, &offsets_3130()).unwrap();
    l.frame.tlbc_index = Some(76);
    l.frame.read_size = 80;
    l.code.tlbc = Some(96);
    let mut f = Fake::new(l.clone());
    let code_type = f.typ("code", 0, 0, 0);
    let file = f.str("/app/t.py");
    let name = f.str("t");
    let table = f.bytes(LOCATIONS);
    let cl = l.code.clone();
    let o = l.obj.clone();
    let adaptive = cl.code_adaptive.unwrap();
    let copy = f.alloc(vec![0u8; 14]);
    let code = f.object(code_type, adaptive + 14, |b| {
        put(b, o.ob_size, 7);
        put(b, cl.filename, file);
        put(b, cl.name, name);
        put(b, cl.qualname.unwrap(), name);
        put(b, cl.linetable, table);
        b[cl.firstlineno as usize..cl.firstlineno as usize + 4]
            .copy_from_slice(&30u32.to_le_bytes());
    });
    let tlbc = f.alloc({
        let mut b = vec![0u8; 24];
        put(&mut b, 0, 2);
        put(&mut b, 8, code + adaptive);
        put(&mut b, 16, copy);
        b
    });
    put_mem(&mut f, code + 96, tlbc);
    let fl = l.frame.clone();
    let mut fr = vec![0u8; 80];
    put(&mut fr, fl.code, code);
    put(&mut fr, fl.instr, copy + 2 * 4);
    fr[76..80].copy_from_slice(&1i32.to_le_bytes());
    let fr = f.alloc(fr);
    let mut t = vec![0u8; 400];
    put(&mut t, fl.tstate_frame, fr);
    let t = f.alloc(t);
    let mut r = StackReader::new(l);
    assert_eq!(
        said(r.read_stack(&f.mem, t).unwrap()),
        frames(&[("t", "/app/t.py", 33)])
    );
}

/// Known frames (by code-object address) are dropped when an interpreter's code-object
/// generation moves (3.14+: a code object was freed, its address may hold another), and kept
/// without expiry while it stands still; without generations they expire by time.
#[test]
fn known_frames_follow_the_code_object_generation() {
    let mut r = StackReader::new(StackLayout::builtin(12).unwrap());
    r.known.insert((0x1000, 0), None);
    r.code_generations(Some(&[(0xa000, 7)]));
    assert!(
        r.known.is_empty(),
        "the first generation seen starts afresh"
    );
    r.known.insert((0x1000, 0), None);
    r.code_generations(Some(&[(0xa000, 7)]));
    assert_eq!(r.known.len(), 1, "kept while the generation stands still");
    r.known_since -= KNOWN_FRAMES_FOR * 2;
    let mem = LocalMem::new();
    let _ = r.read_stack_from(&mem, 0x5000, Some(0));
    assert_eq!(
        r.known.len(),
        1,
        "no expiry by time while generations are known"
    );
    r.code_generations(Some(&[(0xa000, 8)]));
    assert!(r.known.is_empty(), "dropped when the generation moved");
    r.known.insert((0x1000, 0), None);
    r.code_generations(Some(&[(0xa000, 8), (0xb000, 1)]));
    assert!(r.known.is_empty(), "dropped when an interpreter came");
    r.known.insert((0x1000, 0), None);
    r.code_generations(None);
    assert!(
        r.known.is_empty(),
        "dropped when generations are no longer known"
    );
    r.known.insert((0x1000, 0), None);
    r.known_since -= KNOWN_FRAMES_FOR * 2;
    let _ = r.read_stack_from(&mem, 0x5000, Some(0));
    assert!(r.known.is_empty(), "expired by time without generations");
}
