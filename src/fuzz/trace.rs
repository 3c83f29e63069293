//! The trace reader's fuzz target (`fuzz/fuzz_targets/trace_reader.rs`), also run by the
//! seeded-mutation and regression tests in tests/trace_format.rs.

use std::io::Write;

use crate::analysis::summary::{summarize, SummaryOptions};
use crate::model::timeline::Timeline;
use crate::output::summary::{write_json, write_text};
use crate::trace::codec::crc32;
use crate::trace::{Metadata, TraceReader};

/// Recompute the metadata CRC and every chunk CRC in place, so that mutated
/// bytes get past the checksums and reach the JSON and record decoders.
pub fn fix_crcs(bytes: &mut [u8]) {
    let Some(len) = bytes.get(12..16) else { return };
    let meta_len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
    let Some(meta) = bytes.get(20..20usize.saturating_add(meta_len)) else {
        return;
    };
    let c = crc32(meta);
    bytes[16..20].copy_from_slice(&c.to_le_bytes());
    let mut at = 20 + meta_len;
    while let Some(head) = bytes.get(at..at + 8) {
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let Some(payload) = bytes.get(at + 8..(at + 8).saturating_add(len)) else {
            return;
        };
        let c = crc32(payload);
        bytes[at + 4..at + 8].copy_from_slice(&c.to_le_bytes());
        at += 8 + len;
    }
}

/// The bytes as given, then with checksums fixed: [`read_everything`] on the one that gets
/// furthest. When fixing changes nothing, one pass. When it does, the bytes as given stop at
/// the first bad checksum: that pass only reads ([`read_model`]); the model, summary and
/// rendering of a (partly) read file are the fixed pass's. (Summarizing both doubled the
/// cost of an input for no code the fixed pass does not reach.)
pub fn fuzz_one(bytes: &[u8]) {
    let mut fixed = bytes.to_vec();
    fix_crcs(&mut fixed);
    if fixed == bytes {
        read_everything(bytes);
    } else {
        let _ = read_model(bytes);
        read_everything(&fixed);
    }
}

/// Read arbitrary bytes as a trace into the model: `None` when the header does not read.
/// Errors met on the way must name an offset within the input.
pub fn read_model(bytes: &[u8]) -> Option<(Metadata, Timeline)> {
    let reader = TraceReader::from_reader("fuzz-input", bytes).ok()?;
    let meta = reader.metadata().clone();
    let mut tl = Timeline::new();
    for e in reader {
        match e {
            Ok(e) => tl.apply(&e),
            Err(e) => {
                // Errors must name the file and an offset within it.
                assert!(e.offset <= bytes.len() as u64, "{e}");
                break;
            }
        }
    }
    Some((meta, tl))
}

/// Read arbitrary bytes as a trace, build the model, summarize it and render
/// the summary. Must never panic, loop forever or allocate without bound.
pub fn read_everything(bytes: &[u8]) {
    let Some((meta, tl)) = read_model(bytes) else {
        return;
    };
    let s = summarize(&meta, &tl, &SummaryOptions::default());
    let mut sink = std::io::sink();
    let _ = write_text(&mut sink, &s);
    let _ = write_json(&mut sink, &s);
    let _ = sink.flush();
}
