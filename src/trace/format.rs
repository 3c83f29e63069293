//! Constants of the trace file format (docs/trace-format.md is the spec).

use crate::model::GilState;

/// First 8 bytes of every trace file.
pub const MAGIC: [u8; 8] = *b"GILSCOPE";
/// The version this build writes.
pub const VERSION: u16 = 1;
/// The oldest version this build reads (every version ever released).
pub const OLDEST_VERSION: u16 = 1;
/// Magic, version, reserved, metadata length, metadata CRC.
pub const HEADER_FIXED_LEN: usize = 20;
/// Readers refuse larger metadata (the writer never makes one).
pub const MAX_METADATA_LEN: u32 = 16 << 20;
/// Readers refuse larger chunks (the writer stays near 256 KiB).
pub const MAX_CHUNK_LEN: u32 = 64 << 20;
/// The writer starts a new chunk once this many record bytes are pending.
pub const CHUNK_TARGET_LEN: usize = 256 << 10;

/// Record type bytes.
pub mod tag {
    pub const STRING: u8 = 0x01;
    pub const FRAME: u8 = 0x02;
    pub const STACK: u8 = 0x03;
    pub const GIL: u8 = 0x04;
    pub const INTERPRETER: u8 = 0x10;
    pub const INTERPRETER_END: u8 = 0x11;
    pub const THREAD_START: u8 = 0x12;
    pub const THREAD_NAME: u8 = 0x13;
    pub const THREAD_END: u8 = 0x14;
    pub const RUN: u8 = 0x20;
    pub const GIL_RUN: u8 = 0x21;
    pub const SAMPLE_ERROR: u8 = 0x30;
    pub const WARNING: u8 = 0x31;
    pub const END: u8 = 0x3F;
    /// Tags from here up carry their length and are skipped by readers that
    /// don't know them (additions that need no version bump).
    pub const SKIPPABLE_MIN: u8 = 0x80;
    /// Skippable: a mode or sampling-rate change (overhead budget). Payload: `time_ns`
    /// (absolute), `mode` byte (0 sampled, 1 exact), `rate` (mHz), `own_ppm`, `probes_ppm`,
    /// `reason` (length + UTF-8).
    pub const MODE: u8 = 0x80;
    /// Skippable: what the recording cost since the previous COST. Payload: `time_ns`
    /// (absolute), `own_ppm`, `probes_ppm`.
    pub const COST: u8 = 0x81;
    /// Skippable: one garbage collection. Payload: `end_ns` (absolute), `duration`,
    /// `interpreter` (ivarint), `thread + 1` (0: not known), `stack`, `samples`.
    pub const GC: u8 = 0x82;
}

pub fn state_code(s: GilState) -> u8 {
    match s {
        GilState::Held => 0,
        GilState::Waiting => 1,
        GilState::Released => 2,
        GilState::Idle => 3,
        GilState::Attached => 4,
        GilState::Unknown => 5,
    }
}

pub fn state_from_code(c: u8) -> Option<GilState> {
    Some(match c {
        0 => GilState::Held,
        1 => GilState::Waiting,
        2 => GilState::Released,
        3 => GilState::Idle,
        4 => GilState::Attached,
        5 => GilState::Unknown,
        _ => return None,
    })
}
