//! The `_Py_DebugOffsets` parser's fuzz target (`fuzz/fuzz_targets/debug_offsets.rs`):
//! arbitrary bytes as the memory at the target's `_PyRuntime`, through the table parser and
//! both layouts built from it (the GIL/thread-state layout and the stack layout).
//!
//! Each input is tried as given (cookie and header included, so the header checks are
//! fuzzed too) and behind a valid header (3.13, 3.14 or 3.15, free-threaded or not, from the
//! first byte), so that the fuzzer spends its time on the table itself.

use crate::reader::debug_offsets::{DebugOffsets, COOKIE};
use crate::reader::layout::{HoldsGil, Layout};
use crate::reader::memory::LocalMem;
use crate::reader::stack::StackLayout;

/// Where the bytes are mapped (any address: the reader only reads relative to it).
const RUNTIME: u64 = 0x7f00_0000_1000;

pub fn fuzz_one(bytes: &[u8]) {
    read_at(bytes);
    if let Some((&first, table)) = bytes.split_first() {
        let minor = 13 + u64::from(first % 3);
        let free_threaded = u64::from(first & 0x80 != 0);
        let mut mem = Vec::with_capacity(24 + table.len());
        mem.extend_from_slice(COOKIE);
        mem.extend_from_slice(&(0x0300_00f0 | (minor << 16)).to_le_bytes());
        mem.extend_from_slice(&free_threaded.to_le_bytes());
        mem.extend_from_slice(table);
        read_at(&mem);
    }
}

fn read_at(bytes: &[u8]) {
    let mut mem = LocalMem::new();
    mem.add(RUNTIME, bytes.to_vec());
    let Ok(Some(d)) = DebugOffsets::read(&mem, RUNTIME) else {
        return;
    };
    let minor = (d.header.version_hex >> 16) & 0xff;
    if let Ok(l) = Layout::from_debug_offsets(&d) {
        assert_eq!(l.minor, minor);
        // A thread state is read in one piece of read_size bytes: it must cover every field.
        let t = &l.tstate;
        for f in [
            Some(t.next),
            Some(t.interp),
            Some(t.thread_id),
            t.native_thread_id,
        ]
        .into_iter()
        .chain([t.status, t.gil_requested, t.state, t.whence])
        .chain([match t.holds_gil {
            HoldsGil::Int(o) => Some(o),
            _ => None,
        }])
        .flatten()
        {
            assert!(
                f < t.read_size,
                "thread-state field at {f} past {}",
                t.read_size
            );
        }
        assert!(l.gil.locked < l.gil.read_size && l.gil.switch_number < l.gil.read_size);
    }
    let _ = StackLayout::from_debug_offsets(minor, &d);
}
