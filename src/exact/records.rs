//! Pure decoding of perf ring-buffer records into [`ExactEvent`]s, and the time-ordered merge
//! of per-CPU streams. No OS access: tested from bytes built here.

use std::collections::HashMap;

use super::symbols::{PerfReg, ProbeKind};
use super::{EventKind, ExactEvent};

pub const PERF_RECORD_LOST: u32 = 2;
pub const PERF_RECORD_SAMPLE: u32 = 9;

/// The sample layout of the probe events (perf_event_attr.sample_type):
/// IDENTIFIER | TID | TIME | CPU, plus REGS_USER when the event reads a register (the kernel
/// refuses REGS_USER with an empty mask), in the kernel's output order:
/// `u64 id; u32 pid, tid; u64 time; u32 cpu, res; [u64 abi; u64 regs[popcount(mask)]]`.
pub const SAMPLE_TYPE: u64 =
    PERF_SAMPLE_TID | PERF_SAMPLE_TIME | PERF_SAMPLE_CPU | PERF_SAMPLE_IDENTIFIER;
const PERF_SAMPLE_TID: u64 = 1 << 1;
const PERF_SAMPLE_TIME: u64 = 1 << 2;
const PERF_SAMPLE_CPU: u64 = 1 << 7;
const PERF_SAMPLE_REGS_USER: u64 = 1 << 12;
const PERF_SAMPLE_IDENTIFIER: u64 = 1 << 16;

/// What an event id means: which probe, and which registers its samples carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventLayout {
    pub kind: ProbeKind,
    /// `sample_regs_user` of the event (bit n = PERF_REG_X86 n).
    pub regs_mask: u64,
    /// The register holding the thread state (must be in `regs_mask`).
    pub tstate_reg: Option<PerfReg>,
    /// The hit is single-stepped by the kernel (a second trap; see `symbols::kernel_steps`).
    pub stepped: bool,
    /// Index of the probe point in its plan (hits are counted per point).
    pub point: usize,
}

impl EventLayout {
    /// `sample_type` to open this event with.
    pub fn sample_type(&self) -> u64 {
        if self.regs_mask == 0 {
            SAMPLE_TYPE
        } else {
            SAMPLE_TYPE | PERF_SAMPLE_REGS_USER
        }
    }

    pub fn new(kind: ProbeKind, tstate_reg: Option<PerfReg>) -> EventLayout {
        let tstate_reg = if kind == ProbeKind::TakeReturn {
            None
        } else {
            tstate_reg
        };
        EventLayout {
            kind,
            regs_mask: tstate_reg.map_or(0, |r| 1u64 << r.0),
            tstate_reg,
            stepped: false,
            point: 0,
        }
    }

    /// The same layout, for the plan's probe point number `point`.
    pub fn at_point(self, point: usize) -> EventLayout {
        EventLayout { point, ..self }
    }

    /// The same layout, its hits single-stepped or not (a uretprobe's return is never: it
    /// arrives through the kernel's return trampoline, whatever the entry instruction is).
    pub fn stepped(self, stepped: bool) -> EventLayout {
        EventLayout {
            stepped: stepped && self.kind != ProbeKind::TakeReturn,
            ..self
        }
    }
}

/// One decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// An event, and the layout of the probe that delivered it.
    Event(ExactEvent, EventLayout),
    /// The kernel dropped `count` records (ring buffer full).
    Lost { count: u64 },
    /// Another record type (ignored).
    Other(u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    Truncated { what: &'static str, len: usize },
    UnknownId(u64),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Truncated { what, len } => write!(f, "truncated {what} ({len} bytes)"),
            DecodeError::UnknownId(id) => write!(f, "sample from unknown event id {id}"),
        }
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    what: &'static str,
}

impl Cursor<'_> {
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let (head, rest) = self
            .b
            .split_first_chunk::<8>()
            .ok_or(DecodeError::Truncated {
                what: self.what,
                len: self.b.len(),
            })?;
        self.b = rest;
        Ok(u64::from_le_bytes(*head))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let (head, rest) = self
            .b
            .split_first_chunk::<4>()
            .ok_or(DecodeError::Truncated {
                what: self.what,
                len: self.b.len(),
            })?;
        self.b = rest;
        Ok(u32::from_le_bytes(*head))
    }
}

/// Size of the record starting at `bytes` (from its `perf_event_header`), if the header is
/// there.
pub fn record_len(bytes: &[u8]) -> Option<usize> {
    let size = u16::from_le_bytes([*bytes.get(6)?, *bytes.get(7)?]) as usize;
    Some(size)
}

/// Decodes one record (header included).
pub fn decode(record: &[u8], layouts: &HashMap<u64, EventLayout>) -> Result<Record, DecodeError> {
    let mut c = Cursor {
        b: record,
        what: "record header",
    };
    let type_ = c.u32()?;
    let _misc_size = c.u32()?;
    match type_ {
        PERF_RECORD_SAMPLE => {
            c.what = "sample";
            let id = c.u64()?;
            let layout = layouts.get(&id).ok_or(DecodeError::UnknownId(id))?;
            let pid = c.u32()?;
            let tid = c.u32()?;
            let time_ns = c.u64()?;
            let cpu = c.u32()?;
            let _res = c.u32()?;
            let abi = if layout.regs_mask == 0 { 0 } else { c.u64()? };
            let mut regs = [0u64; 24];
            if abi != 0 {
                for (i, slot) in regs.iter_mut().enumerate() {
                    if layout.regs_mask & (1 << i) != 0 {
                        *slot = c.u64()?;
                    }
                }
            }
            let tstate = layout
                .tstate_reg
                .filter(|_| abi != 0)
                .and_then(|r| regs.get(r.0 as usize).copied());
            let kind = match layout.kind {
                ProbeKind::TakeEnter => EventKind::TakeEnter {
                    tstate: tstate.unwrap_or(0),
                },
                ProbeKind::TakeReturn => EventKind::TakeReturn,
                ProbeKind::Drop => EventKind::Drop { tstate },
            };
            Ok(Record::Event(
                ExactEvent {
                    time_ns,
                    pid,
                    tid,
                    cpu,
                    kind,
                },
                *layout,
            ))
        }
        PERF_RECORD_LOST => {
            c.what = "lost record";
            let _id = c.u64()?;
            Ok(Record::Lost { count: c.u64()? })
        }
        other => Ok(Record::Other(other)),
    }
}

/// Encodes a sample the way the kernel writes it (tests, fixtures).
pub fn encode_sample(
    id: u64,
    layout: &EventLayout,
    ev: &ExactEvent,
    regs: &[(PerfReg, u64)],
) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&id.to_le_bytes());
    body.extend_from_slice(&ev.pid.to_le_bytes());
    body.extend_from_slice(&ev.tid.to_le_bytes());
    body.extend_from_slice(&ev.time_ns.to_le_bytes());
    body.extend_from_slice(&ev.cpu.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    if layout.regs_mask != 0 {
        body.extend_from_slice(&2u64.to_le_bytes()); // PERF_SAMPLE_REGS_ABI_64
    }
    for i in 0..24u8 {
        if layout.regs_mask & (1 << i) != 0 {
            let v = regs.iter().find(|(r, _)| r.0 == i).map_or(0, |(_, v)| *v);
            body.extend_from_slice(&v.to_le_bytes());
        }
    }
    with_header(PERF_RECORD_SAMPLE, &body)
}

pub fn encode_lost(id: u64, count: u64) -> Vec<u8> {
    let mut body = id.to_le_bytes().to_vec();
    body.extend_from_slice(&count.to_le_bytes());
    with_header(PERF_RECORD_LOST, &body)
}

fn with_header(type_: u32, body: &[u8]) -> Vec<u8> {
    let mut out = type_.to_le_bytes().to_vec();
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&((body.len() + 8) as u16).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// Splits a contiguous run of records (a ring buffer's `[tail, head)`, unwrapped) and decodes
/// each; returns how many bytes were whole records.
pub fn decode_all(
    bytes: &[u8],
    layouts: &HashMap<u64, EventLayout>,
    out: &mut Vec<Record>,
    errors: &mut u64,
) -> usize {
    let mut pos = 0;
    while pos + 8 <= bytes.len() {
        let Some(len) = record_len(&bytes[pos..]) else {
            break;
        };
        if len < 8 {
            // A corrupt header: nothing after it can be trusted.
            *errors += 1;
            return bytes.len();
        }
        if pos + len > bytes.len() {
            break;
        }
        match decode(&bytes[pos..pos + len], layouts) {
            Ok(r) => out.push(r),
            Err(_) => *errors += 1,
        }
        pos += len;
    }
    pos
}

/// Merges per-CPU event streams into one time-ordered stream. Each CPU's buffer is in time
/// order, but a drain reads the buffers one after the other, so an event of CPU 1 may be
/// read in a later drain than a newer event of CPU 0. Events are therefore held back until
/// `release(upto)` says no older event can still arrive.
#[derive(Debug, Default)]
pub struct Merger {
    pending: Vec<ExactEvent>,
}

impl Merger {
    pub fn push(&mut self, events: impl IntoIterator<Item = ExactEvent>) {
        self.pending.extend(events);
    }

    /// Every pending event with `time_ns < upto`, in time order (ties: CPU, then TID).
    pub fn release(&mut self, upto: u64) -> Vec<ExactEvent> {
        self.pending.sort_by_key(|e| (e.time_ns, e.cpu, e.tid));
        let n = self.pending.partition_point(|e| e.time_ns < upto);
        self.pending.drain(..n).collect()
    }

    pub fn release_all(&mut self) -> Vec<ExactEvent> {
        self.release(u64::MAX)
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layouts() -> HashMap<u64, EventLayout> {
        HashMap::from([
            (
                7,
                EventLayout::new(ProbeKind::TakeEnter, Some(PerfReg::RDI)),
            ),
            (
                8,
                EventLayout::new(ProbeKind::TakeReturn, Some(PerfReg::RDI)),
            ),
            (9, EventLayout::new(ProbeKind::Drop, Some(PerfReg::RSI))),
            (10, EventLayout::new(ProbeKind::Drop, None)),
        ])
    }

    fn ev(t: u64, kind: EventKind) -> ExactEvent {
        ExactEvent {
            time_ns: t,
            pid: 100,
            tid: 101,
            cpu: 1,
            kind,
        }
    }

    #[test]
    fn round_trip() {
        let l = layouts();
        let cases = [
            (
                7,
                ev(5, EventKind::TakeEnter { tstate: 0xabc }),
                vec![(PerfReg::RDI, 0xabc)],
            ),
            (8, ev(6, EventKind::TakeReturn), vec![]),
            (
                9,
                ev(
                    7,
                    EventKind::Drop {
                        tstate: Some(0xdef),
                    },
                ),
                vec![(PerfReg::RSI, 0xdef)],
            ),
            (10, ev(8, EventKind::Drop { tstate: None }), vec![]),
        ];
        let mut bytes = Vec::new();
        for (id, e, regs) in &cases {
            bytes.extend(encode_sample(*id, &l[id], e, regs));
        }
        bytes.extend(encode_lost(7, 42));
        bytes.extend_from_slice(&[1, 2, 3]); // a partial record at the end
        let mut out = Vec::new();
        let mut errors = 0;
        let used = decode_all(&bytes, &l, &mut out, &mut errors);
        assert_eq!(used, bytes.len() - 3);
        assert_eq!(errors, 0);
        let expect: Vec<Record> = cases
            .iter()
            .map(|(id, e, _)| Record::Event(*e, l[id]))
            .chain([Record::Lost { count: 42 }])
            .collect();
        assert_eq!(out, expect);
    }

    #[test]
    fn sample_layout_matches_kernel_order() {
        // id, pid/tid, time, cpu/res, abi, regs: 8+8+8+8+8+8 after the header for one reg.
        let l = EventLayout::new(ProbeKind::TakeEnter, Some(PerfReg::RDI));
        let b = encode_sample(
            1,
            &l,
            &ev(3, EventKind::TakeEnter { tstate: 9 }),
            &[(PerfReg::RDI, 9)],
        );
        assert_eq!(b.len(), 8 + 6 * 8);
        assert_eq!(u64::from_le_bytes(b[8..16].try_into().unwrap()), 1);
        assert_eq!(u32::from_le_bytes(b[16..20].try_into().unwrap()), 100);
        assert_eq!(u64::from_le_bytes(b[48..56].try_into().unwrap()), 9);
    }

    #[test]
    fn unknown_and_truncated() {
        let l = layouts();
        let e = ev(1, EventKind::TakeReturn);
        let b = encode_sample(99, &EventLayout::new(ProbeKind::TakeReturn, None), &e, &[]);
        assert_eq!(decode(&b, &l), Err(DecodeError::UnknownId(99)));
        let b = encode_sample(7, &l[&7], &ev(1, EventKind::TakeEnter { tstate: 1 }), &[]);
        assert!(matches!(
            decode(&b[..30], &l),
            Err(DecodeError::Truncated { .. })
        ));
        // A zero-size header stops decoding instead of looping.
        let mut out = Vec::new();
        let mut errors = 0;
        assert_eq!(decode_all(&[0u8; 16], &l, &mut out, &mut errors), 16);
        assert_eq!(errors, 1);
    }

    #[test]
    fn merger_orders_across_cpus_and_holds_back() {
        let mk = |t, cpu| ExactEvent {
            time_ns: t,
            pid: 1,
            tid: 1,
            cpu,
            kind: EventKind::TakeReturn,
        };
        let mut m = Merger::default();
        m.push([mk(10, 0), mk(30, 0)]);
        m.push([mk(20, 1)]);
        let out: Vec<u64> = m.release(25).iter().map(|e| e.time_ns).collect();
        assert_eq!(out, [10, 20]);
        m.push([mk(27, 1)]); // read in a later drain, older than 30
        let out: Vec<u64> = m.release_all().iter().map(|e| e.time_ns).collect();
        assert_eq!(out, [27, 30]);
        assert_eq!(m.pending(), 0);
    }
}
