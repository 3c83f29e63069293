//! Writing trace files: header, then CRC-checked chunks of records.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::codec::{crc32, put_ivarint, put_uvarint};
use super::encoder::SnapshotEncoder;
use super::format::{self, tag, CHUNK_TARGET_LEN, MAGIC, VERSION};
use super::meta::Metadata;
use crate::model::timeline::{Event, Source};
use crate::model::Snapshot;

/// Receives every event written (to feed a live model with exactly what the
/// file gets).
pub type EventTap = Box<dyn FnMut(&Event)>;

/// What [`TraceWriter::finish`] reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriterStats {
    pub bytes: u64,
    pub chunks: u64,
    pub events: u64,
    pub samples: u64,
}

/// Writes one trace file. Records are gathered into a chunk in memory and
/// reach the file on [`flush`](TraceWriter::flush) (call it at least every
/// second), when the chunk grows past 256 KiB, and on
/// [`finish`](TraceWriter::finish). A process killed between flushes leaves
/// a file readable up to its last whole chunk.
pub struct TraceWriter {
    path: PathBuf,
    file: File,
    bytes: u64,
    chunks: u64,
    events: u64,
    // Current chunk: records, and the clock they are relative to.
    records: Vec<u8>,
    base_ns: Option<u64>,
    clock_ns: u64,
    // Interning state (ids are implicit in the file: the n-th definition).
    strings: HashMap<String, u64>,
    frames: u64,
    stacks: u64,
    gils: u64,
    threads: u64,
    encoder: SnapshotEncoder,
    scratch: Vec<Event>,
    tap: Option<EventTap>,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

impl TraceWriter {
    /// Create (or truncate) `path` and write the header.
    pub fn create(path: impl AsRef<Path>, meta: &Metadata) -> io::Result<TraceWriter> {
        let path = path.as_ref();
        let file = File::create(path).map_err(|e| with_path(path, e))?;
        TraceWriter::new(file, path, meta)
    }

    /// Write the header to an already opened, empty `file`.
    pub fn new(mut file: File, path: impl AsRef<Path>, meta: &Metadata) -> io::Result<TraceWriter> {
        let path = path.as_ref().to_path_buf();
        let json = serde_json::to_vec(meta).map_err(|e| invalid(e.to_string()))?;
        let json_len = u32::try_from(json.len())
            .ok()
            .filter(|&n| n <= format::MAX_METADATA_LEN)
            .ok_or_else(|| invalid("metadata too large".into()))?;
        let mut header = Vec::with_capacity(format::HEADER_FIXED_LEN + json.len());
        header.extend_from_slice(&MAGIC);
        header.extend_from_slice(&VERSION.to_le_bytes());
        header.extend_from_slice(&0u16.to_le_bytes());
        header.extend_from_slice(&json_len.to_le_bytes());
        header.extend_from_slice(&crc32(&json).to_le_bytes());
        header.extend_from_slice(&json);
        file.write_all(&header).map_err(|e| with_path(&path, e))?;
        let period_ns = if meta.options.rate_hz > 0.0 {
            (1e9 / meta.options.rate_hz) as u64
        } else {
            1_000_000
        };
        Ok(TraceWriter {
            path,
            file,
            bytes: header.len() as u64,
            chunks: 0,
            events: 0,
            records: Vec::with_capacity(64 << 10),
            base_ns: None,
            clock_ns: 0,
            strings: HashMap::new(),
            frames: 0,
            stacks: 0,
            gils: 0,
            threads: 0,
            encoder: SnapshotEncoder::new(period_ns),
            scratch: Vec::new(),
            tap: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes in the file so far (the pending chunk not included).
    pub fn bytes_written(&self) -> u64 {
        self.bytes
    }

    /// Bytes waiting for the next flush.
    pub fn bytes_pending(&self) -> u64 {
        self.records.len() as u64
    }

    /// Also hand every event written to `tap` (e.g. a live [`Timeline`]).
    ///
    /// [`Timeline`]: crate::model::timeline::Timeline
    pub fn set_tap(&mut self, tap: EventTap) {
        self.tap = Some(tap);
    }

    /// The thread number given to kernel thread `tid` (the live one, else the
    /// last one that ended), if a snapshot showed it.
    pub fn thread_of_tid(&self, tid: u32) -> Option<crate::model::timeline::ThreadIdx> {
        self.encoder.thread_of_tid(tid)
    }

    /// Record one successful reading of the target.
    pub fn write_snapshot(&mut self, snap: &Snapshot) -> io::Result<()> {
        let mut events = std::mem::take(&mut self.scratch);
        events.clear();
        self.encoder.push(snap, &mut events);
        let r = self.write_events(&events);
        self.scratch = events;
        r
    }

    /// Record that a reading attempted at `time_ns` failed.
    pub fn write_sample_error(&mut self, time_ns: u64, message: &str) -> io::Result<()> {
        let mut events = std::mem::take(&mut self.scratch);
        events.clear();
        self.encoder.sample_error(time_ns, message, &mut events);
        let r = self.write_events(&events);
        self.scratch = events;
        r
    }

    fn write_events(&mut self, events: &[Event]) -> io::Result<()> {
        for e in events {
            self.write_event(e)?;
        }
        Ok(())
    }

    /// Write events produced elsewhere (exact mode, conversions). Definitions
    /// must be numbered in order (frame and stack ids from 1, thread and GIL
    /// numbers from 0), as [`SnapshotEncoder`] does. Mixed with
    /// [`write_snapshot`](Self::write_snapshot) only for events that define
    /// nothing (exact runs of threads the snapshots defined, warnings).
    pub fn write_event(&mut self, e: &Event) -> io::Result<()> {
        if let Some(t) = e.time_ns() {
            self.set_time(t)?;
        }
        match e {
            Event::Frame { id, frame } => {
                self.check_next("frame", u64::from(*id), self.frames + 1)?;
                let function = self.string(&frame.function);
                let file = self.string(&frame.file);
                let r = &mut self.records;
                r.push(tag::FRAME);
                put_uvarint(r, function);
                put_uvarint(r, file);
                put_ivarint(r, i64::from(frame.line));
                put_ivarint(r, frame.interpreter);
                self.frames += 1;
            }
            Event::Stack { id, parent, frame } => {
                self.check_next("stack", u64::from(*id), self.stacks + 1)?;
                if parent >= id || u64::from(*frame) > self.frames || *frame == 0 {
                    return Err(invalid(format!("stack {id}: bad parent or frame")));
                }
                let r = &mut self.records;
                r.push(tag::STACK);
                put_uvarint(r, u64::from(*parent));
                put_uvarint(r, u64::from(*frame));
                self.stacks += 1;
            }
            Event::Gil { gil, address } => {
                self.check_next("gil", u64::from(*gil), self.gils)?;
                let r = &mut self.records;
                r.push(tag::GIL);
                put_uvarint(r, *address);
                self.gils += 1;
            }
            Event::Interpreter {
                time_ns,
                id,
                main,
                own_gil,
                gil,
                address,
            } => {
                let dt = self.dt(*time_ns);
                let r = &mut self.records;
                r.push(tag::INTERPRETER);
                put_uvarint(r, dt);
                put_ivarint(r, *id);
                r.push(u8::from(*main) | (u8::from(*own_gil) << 1));
                put_uvarint(r, u64::from(*gil));
                put_uvarint(r, *address);
            }
            Event::InterpreterEnd { time_ns, id } => {
                let dt = self.dt(*time_ns);
                let r = &mut self.records;
                r.push(tag::INTERPRETER_END);
                put_uvarint(r, dt);
                put_ivarint(r, *id);
            }
            Event::ThreadStart {
                time_ns,
                thread,
                tid,
                start_ticks,
                name,
                os_name,
            } => {
                if u64::from(*thread) > self.threads {
                    return Err(invalid(format!("thread {thread} out of order")));
                }
                if u64::from(*thread) == self.threads {
                    self.threads += 1;
                }
                let name = self.string(name);
                let os_name = self.string(os_name);
                let dt = self.dt(*time_ns);
                let r = &mut self.records;
                r.push(tag::THREAD_START);
                put_uvarint(r, dt);
                put_uvarint(r, u64::from(*thread));
                put_uvarint(r, u64::from(*tid));
                put_uvarint(r, *start_ticks);
                put_uvarint(r, name);
                put_uvarint(r, os_name);
            }
            Event::ThreadName {
                time_ns,
                thread,
                name,
                os_name,
            } => {
                let name = self.string(name);
                let os_name = self.string(os_name);
                let dt = self.dt(*time_ns);
                let r = &mut self.records;
                r.push(tag::THREAD_NAME);
                put_uvarint(r, dt);
                put_uvarint(r, u64::from(*thread));
                put_uvarint(r, name);
                put_uvarint(r, os_name);
            }
            Event::ThreadEnd { time_ns, thread } => {
                let dt = self.dt(*time_ns);
                let r = &mut self.records;
                r.push(tag::THREAD_END);
                put_uvarint(r, dt);
                put_uvarint(r, u64::from(*thread));
            }
            Event::Run(run) => {
                let r = self.run_head(tag::RUN, run.start_ns, run.end_ns, run.thread, run.samples);
                put_ivarint(r, run.interpreter);
                let flags = format::state_code(run.state)
                    | (u8::from(run.on_cpu) << 3)
                    | (u8::from(run.source == Source::Exact) << 4);
                r.push(flags);
                put_uvarint(r, u64::from(run.stack));
            }
            Event::GilRun(g) => {
                let r = self.run_head(tag::GIL_RUN, g.start_ns, g.end_ns, g.gil, g.samples);
                r.push(
                    u8::from(g.enabled)
                        | (u8::from(g.locked) << 1)
                        | (u8::from(g.holder_tid.is_some()) << 2),
                );
                if let Some(h) = g.holder_tid {
                    put_uvarint(r, u64::from(h));
                }
                put_uvarint(r, g.switch_number);
            }
            Event::SampleError { time_ns, message } | Event::Warning { time_ns, message } => {
                let t = if matches!(e, Event::Warning { .. }) {
                    tag::WARNING
                } else {
                    tag::SAMPLE_ERROR
                };
                let message = self.string(message);
                let dt = self.dt(*time_ns);
                let r = &mut self.records;
                r.push(t);
                put_uvarint(r, dt);
                put_uvarint(r, message);
            }
            Event::Mode {
                time_ns,
                mode,
                rate_hz,
                own_ppm,
                probes_ppm,
                reason,
            } => {
                let mut p = Vec::new();
                put_uvarint(&mut p, *time_ns);
                p.push(u8::from(*mode == crate::model::timeline::Source::Exact));
                let mhz = if rate_hz.is_finite() && *rate_hz > 0.0 {
                    (rate_hz * 1000.0).round() as u64
                } else {
                    0
                };
                put_uvarint(&mut p, mhz);
                put_uvarint(&mut p, *own_ppm);
                put_uvarint(&mut p, *probes_ppm);
                put_uvarint(&mut p, reason.len() as u64);
                p.extend_from_slice(reason.as_bytes());
                let r = &mut self.records;
                r.push(tag::MODE);
                put_uvarint(r, p.len() as u64);
                r.extend_from_slice(&p);
            }
            Event::Cost {
                time_ns,
                own_ppm,
                probes_ppm,
            } => {
                let mut p = Vec::new();
                put_uvarint(&mut p, *time_ns);
                put_uvarint(&mut p, *own_ppm);
                put_uvarint(&mut p, *probes_ppm);
                let r = &mut self.records;
                r.push(tag::COST);
                put_uvarint(r, p.len() as u64);
                r.extend_from_slice(&p);
            }
            Event::Gc(g) => {
                let mut p = Vec::new();
                put_uvarint(&mut p, g.end_ns);
                put_uvarint(&mut p, g.end_ns.saturating_sub(g.start_ns));
                put_ivarint(&mut p, g.interpreter);
                put_uvarint(&mut p, g.thread.map_or(0, |t| u64::from(t) + 1));
                put_uvarint(&mut p, u64::from(g.stack));
                put_uvarint(&mut p, u64::from(g.samples));
                let r = &mut self.records;
                r.push(tag::GC);
                put_uvarint(r, p.len() as u64);
                r.extend_from_slice(&p);
            }
            Event::End {
                time_ns,
                samples,
                missed,
            } => {
                let dt = self.dt(*time_ns);
                let r = &mut self.records;
                r.push(tag::END);
                put_uvarint(r, dt);
                put_uvarint(r, *samples);
                put_uvarint(r, *missed);
            }
        }
        self.events += 1;
        if let Some(tap) = &mut self.tap {
            tap(e);
        }
        if self.records.len() >= CHUNK_TARGET_LEN {
            self.write_chunk()?;
        }
        Ok(())
    }

    fn check_next(&self, what: &str, got: u64, want: u64) -> io::Result<()> {
        if got == want {
            Ok(())
        } else {
            Err(invalid(format!(
                "{what} {got} defined out of order (next is {want})"
            )))
        }
    }

    /// Intern `s`, writing its definition first if it is new.
    fn string(&mut self, s: &str) -> u64 {
        if s.is_empty() {
            return 0;
        }
        if let Some(&id) = self.strings.get(s) {
            return id;
        }
        let id = self.strings.len() as u64 + 1;
        self.strings.insert(s.to_owned(), id);
        self.records.push(tag::STRING);
        put_uvarint(&mut self.records, s.len() as u64);
        self.records.extend_from_slice(s.as_bytes());
        id
    }

    /// Make `t` expressible in this chunk: times only go forward within a
    /// chunk, so an earlier time starts a new one.
    fn set_time(&mut self, t: u64) -> io::Result<()> {
        match self.base_ns {
            None => {
                self.base_ns = Some(t);
                self.clock_ns = t;
            }
            Some(_) if t < self.clock_ns => {
                self.write_chunk()?;
                self.base_ns = Some(t);
                self.clock_ns = t;
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// What a thread's run and a GIL's run both start with: the tag, the end (from the chunk
    /// clock), the duration, the thread or GIL number and the sample count. The rest of the
    /// record goes into what it returns.
    fn run_head(
        &mut self,
        tag: u8,
        start_ns: u64,
        end_ns: u64,
        whose: u32,
        samples: u32,
    ) -> &mut Vec<u8> {
        let dt = self.dt(end_ns);
        let r = &mut self.records;
        r.push(tag);
        put_uvarint(r, dt);
        put_uvarint(r, end_ns.saturating_sub(start_ns));
        put_uvarint(r, u64::from(whose));
        put_uvarint(r, u64::from(samples));
        r
    }

    /// Delta from the chunk clock, advancing it (after `set_time`).
    fn dt(&mut self, t: u64) -> u64 {
        let d = t - self.clock_ns;
        self.clock_ns = t;
        d
    }

    fn write_chunk(&mut self) -> io::Result<()> {
        if self.records.is_empty() {
            return Ok(());
        }
        let mut payload = Vec::with_capacity(self.records.len() + 10);
        put_uvarint(&mut payload, self.base_ns.unwrap_or(0));
        payload.extend_from_slice(&self.records);
        let len = u32::try_from(payload.len()).map_err(|_| invalid("chunk too large".into()))?;
        let mut head = [0u8; 8];
        head[..4].copy_from_slice(&len.to_le_bytes());
        head[4..].copy_from_slice(&crc32(&payload).to_le_bytes());
        // One write for the whole chunk, so a kill leaves at most one torn chunk.
        let mut buf = Vec::with_capacity(8 + payload.len());
        buf.extend_from_slice(&head);
        buf.extend_from_slice(&payload);
        self.file
            .write_all(&buf)
            .map_err(|e| with_path(&self.path, e))?;
        self.bytes += buf.len() as u64;
        self.chunks += 1;
        self.records.clear();
        // The next chunk restarts its clock where this one ended.
        self.base_ns = None;
        Ok(())
    }

    /// Put everything known so far into the file: all runs up to the last
    /// sample, in a new chunk.
    pub fn flush(&mut self) -> io::Result<()> {
        let mut events = std::mem::take(&mut self.scratch);
        events.clear();
        self.encoder.checkpoint(&mut events);
        let r = self.write_events(&events);
        self.scratch = events;
        r?;
        self.write_chunk()
    }

    /// Close all runs at `end_ns` (default: last sample + one period), write
    /// the end record and the last chunk, and sync the file to disk.
    /// `missed`: sampling ticks skipped for being late.
    pub fn finish(mut self, end_ns: Option<u64>, missed: u64) -> io::Result<WriterStats> {
        let mut events = std::mem::take(&mut self.scratch);
        events.clear();
        self.encoder.finish(end_ns, missed, &mut events);
        self.write_events(&events)?;
        self.write_chunk()?;
        self.file.sync_all().map_err(|e| with_path(&self.path, e))?;
        Ok(WriterStats {
            bytes: self.bytes,
            chunks: self.chunks,
            events: self.events,
            samples: self.encoder.samples(),
        })
    }

    /// Finish a file written with [`write_event`](Self::write_event) only:
    /// write the last chunk and sync, without an end record of the encoder.
    pub fn finish_events(mut self) -> io::Result<WriterStats> {
        self.write_chunk()?;
        self.file.sync_all().map_err(|e| with_path(&self.path, e))?;
        Ok(WriterStats {
            bytes: self.bytes,
            chunks: self.chunks,
            events: self.events,
            samples: 0,
        })
    }
}

fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}
