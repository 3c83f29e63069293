//! Reading trace files of every format version ever written, converting
//! their records to today's [`Event`]s.
//!
//! Bad input never panics: a foreign, truncated-in-the-header or corrupt file
//! is a [`TraceError`] naming the file and the byte offset; a file cut after
//! its header (SIGKILL, full disk) reads up to its last whole chunk and
//! reports the rest as [`Damage`].

use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use super::codec::{crc32, Cursor, DecodeError};
use super::format::{
    state_from_code, tag, HEADER_FIXED_LEN, MAGIC, MAX_CHUNK_LEN, MAX_METADATA_LEN, OLDEST_VERSION,
    VERSION,
};
use super::meta::Metadata;
use crate::model::timeline::{Event, Frame, GilRun, Run, Source, Timeline};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceErrorKind {
    /// The file could not be read.
    Io,
    /// Not a gilscope trace at all.
    NotATrace,
    /// A gilscope trace of a version this build does not read.
    UnsupportedVersion,
    /// Cut short inside the header.
    Truncated,
    /// Bytes that passed their checksum but make no sense, or a bad header.
    Corrupt,
}

/// An unusable trace file: which file, where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceError {
    pub file: String,
    pub offset: u64,
    pub kind: TraceErrorKind,
    pub message: String,
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} (at byte offset {})",
            self.file, self.message, self.offset
        )
    }
}

impl std::error::Error for TraceError {}

/// Where a readable trace stops early: a torn or damaged chunk. Everything
/// before `offset` was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub offset: u64,
    pub reason: String,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cut short or damaged at byte offset {}: {}; the trace was read up to there",
            self.offset, self.reason
        )
    }
}

/// Interning tables as the reader rebuilds them.
#[derive(Debug, Default)]
struct Tables {
    /// Index 0 is the empty string.
    strings: Vec<String>,
    frames: u64,
    stacks: u64,
    gils: u64,
    threads: u64,
}

#[derive(Debug)]
struct Chunk {
    data: Vec<u8>,
    pos: usize,
    clock: u64,
    /// File offset of `data[0]`.
    offset: u64,
}

/// Reads a trace. Iterate it (or call [`next_event`](Self::next_event)) for
/// the events in file order.
pub struct TraceReader<R> {
    file: String,
    input: R,
    offset: u64,
    version: u16,
    decode: DecodeFn,
    metadata: Metadata,
    tables: Tables,
    chunk: Option<Chunk>,
    done: bool,
    damage: Option<Damage>,
    end_seen: bool,
    chunks: u64,
}

impl TraceReader<BufReader<File>> {
    /// Open `path` and read its header.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, TraceError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let f = File::open(path).map_err(|e| TraceError {
            file: name.clone(),
            offset: 0,
            kind: TraceErrorKind::Io,
            message: format!("cannot open: {e}"),
        })?;
        TraceReader::from_reader(name, BufReader::with_capacity(256 << 10, f))
    }
}

/// Read until `buf` is full or the input ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn preview(bytes: &[u8]) -> String {
    let s: String = bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            }
        })
        .collect();
    format!("{s:?}")
}

/// Decodes one record of a given format version into today's [`Event`].
type DecodeFn = fn(&mut Chunk, &mut Tables) -> Result<Option<Event>, (usize, String)>;

/// Every format version ever written, with its record decoder. A new
/// version adds a line here and keeps the old ones (docs/trace-format.md,
/// "Versioning").
const DECODERS: &[(u16, DecodeFn)] = &[(1, decode_v1)];

/// Metadata of any version, as today's [`Metadata`]. Version 1 is today's
/// shape (serde defaults fill fields added since); when the shape changes,
/// convert older JSON here, keyed on `version`.
fn upgrade_metadata(version: u16, json: &[u8]) -> Result<Metadata, serde_json::Error> {
    // Only version 1 exists: nothing to convert yet.
    let _ = version;
    serde_json::from_slice(json)
}

impl<R: Read> TraceReader<R> {
    /// Read the header from `input`; `name` is used in errors.
    pub fn from_reader(name: impl Into<String>, mut input: R) -> Result<Self, TraceError> {
        let file = name.into();
        let err = |offset: u64, kind, message: String| TraceError {
            file: file.clone(),
            offset,
            kind,
            message,
        };
        let io_err = |offset: u64, e: io::Error| TraceError {
            file: file.clone(),
            offset,
            kind: TraceErrorKind::Io,
            message: format!("read error: {e}"),
        };
        let mut head = [0u8; HEADER_FIXED_LEN];
        let n = read_full(&mut input, &mut head).map_err(|e| io_err(0, e))?;
        let magic_len = n.min(MAGIC.len());
        if head[..magic_len] != MAGIC[..magic_len] || n == 0 {
            let what = if n == 0 {
                "empty file".to_owned()
            } else {
                format!("it starts with {}", preview(&head[..magic_len]))
            };
            return Err(err(
                0,
                TraceErrorKind::NotATrace,
                format!("not a gilscope trace: {what}, a trace starts with \"GILSCOPE\""),
            ));
        }
        if n < HEADER_FIXED_LEN {
            return Err(err(
                n as u64,
                TraceErrorKind::Truncated,
                format!("truncated in the header ({n} of {HEADER_FIXED_LEN} bytes)"),
            ));
        }
        let version = u16::from_le_bytes([head[8], head[9]]);
        if version > VERSION {
            return Err(err(
                8,
                TraceErrorKind::UnsupportedVersion,
                format!(
                    "trace format version {version} is newer than this gilscope reads \
                     ({OLDEST_VERSION} to {VERSION}); upgrade gilscope"
                ),
            ));
        }
        let Some(&(_, decode)) = DECODERS.iter().find(|(v, _)| *v == version) else {
            return Err(err(
                8,
                TraceErrorKind::UnsupportedVersion,
                format!(
                    "trace format version {version} was never written by gilscope \
                     (versions {OLDEST_VERSION} to {VERSION} exist)"
                ),
            ));
        };
        let meta_len = u32::from_le_bytes([head[12], head[13], head[14], head[15]]);
        let meta_crc = u32::from_le_bytes([head[16], head[17], head[18], head[19]]);
        if meta_len > MAX_METADATA_LEN {
            return Err(err(
                12,
                TraceErrorKind::Corrupt,
                format!("metadata length {meta_len} is implausible"),
            ));
        }
        let mut json = Vec::new();
        let got = (&mut input)
            .take(u64::from(meta_len))
            .read_to_end(&mut json)
            .map_err(|e| io_err(HEADER_FIXED_LEN as u64, e))?;
        if got < meta_len as usize {
            return Err(err(
                (HEADER_FIXED_LEN + got) as u64,
                TraceErrorKind::Truncated,
                format!("truncated in the metadata header ({got} of {meta_len} bytes)"),
            ));
        }
        if crc32(&json) != meta_crc {
            return Err(err(
                HEADER_FIXED_LEN as u64,
                TraceErrorKind::Corrupt,
                "metadata header checksum mismatch".to_owned(),
            ));
        }
        let metadata = upgrade_metadata(version, &json).map_err(|e| {
            // Compact JSON is one line: the column is the byte position.
            let at = HEADER_FIXED_LEN as u64 + (e.column().saturating_sub(1)) as u64;
            err(
                at,
                TraceErrorKind::Corrupt,
                format!("metadata header is not valid: {e}"),
            )
        })?;
        Ok(TraceReader {
            file,
            input,
            offset: (HEADER_FIXED_LEN + meta_len as usize) as u64,
            version,
            decode,
            metadata,
            tables: Tables {
                strings: vec![String::new()],
                ..Tables::default()
            },
            chunk: None,
            done: false,
            damage: None,
            end_seen: false,
            chunks: 0,
        })
    }

    pub fn file(&self) -> &str {
        &self.file
    }

    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The format version the file was written in.
    pub fn version(&self) -> u16 {
        self.version
    }

    /// Set once reading stopped at a torn or damaged chunk.
    pub fn damage(&self) -> Option<&Damage> {
        self.damage.as_ref()
    }

    /// The file ends with an end record: the recording finished cleanly.
    pub fn complete(&self) -> bool {
        self.end_seen
    }

    /// Bytes consumed so far (whole chunks).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn chunks(&self) -> u64 {
        self.chunks
    }

    fn error(&self, offset: u64, kind: TraceErrorKind, message: String) -> TraceError {
        TraceError {
            file: self.file.clone(),
            offset,
            kind,
            message,
        }
    }

    /// Load the next chunk; false when there is none (end, or damage).
    fn next_chunk(&mut self) -> Result<bool, TraceError> {
        let at = self.offset;
        let mut head = [0u8; 8];
        let n = read_full(&mut self.input, &mut head)
            .map_err(|e| self.error(at, TraceErrorKind::Io, format!("read error: {e}")))?;
        if n == 0 {
            return Ok(false);
        }
        if n < head.len() {
            self.damage = Some(Damage {
                offset: at,
                reason: format!("the last chunk's header is cut short ({n} of 8 bytes)"),
            });
            return Ok(false);
        }
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len == 0 || len > MAX_CHUNK_LEN {
            self.damage = Some(Damage {
                offset: at,
                reason: format!("chunk length {len} is implausible"),
            });
            return Ok(false);
        }
        let mut data = Vec::new();
        let got = (&mut self.input)
            .take(u64::from(len))
            .read_to_end(&mut data)
            .map_err(|e| self.error(at + 8, TraceErrorKind::Io, format!("read error: {e}")))?;
        if got < len as usize {
            self.damage = Some(Damage {
                offset: at,
                reason: format!("the last chunk is cut short ({got} of {len} bytes)"),
            });
            return Ok(false);
        }
        if crc32(&data) != crc {
            self.damage = Some(Damage {
                offset: at,
                reason: "chunk checksum mismatch (a torn write or corruption)".to_owned(),
            });
            return Ok(false);
        }
        self.offset = at + 8 + u64::from(len);
        self.chunks += 1;
        let mut c = Cursor::new(&data);
        let base = c.uvarint().map_err(|e| {
            self.error(
                at + 8,
                TraceErrorKind::Corrupt,
                format!("chunk base time: {}", decode_msg(&e)),
            )
        })?;
        let pos = c.pos();
        self.chunk = Some(Chunk {
            data,
            pos,
            clock: base,
            offset: at + 8,
        });
        Ok(true)
    }

    /// The next event, `Ok(None)` at the end (see [`damage`](Self::damage)
    /// for why it ended early, if it did).
    pub fn next_event(&mut self) -> Result<Option<Event>, TraceError> {
        loop {
            if self.done {
                return Ok(None);
            }
            let Some(chunk) = &mut self.chunk else {
                match self.next_chunk() {
                    Ok(true) => continue,
                    Ok(false) => {
                        self.done = true;
                        return Ok(None);
                    }
                    Err(e) => {
                        self.done = true;
                        return Err(e);
                    }
                }
            };
            if chunk.pos >= chunk.data.len() {
                self.chunk = None;
                continue;
            }
            let record_at = chunk.offset + chunk.pos as u64;
            let decoded = (self.decode)(chunk, &mut self.tables);
            match decoded {
                Ok(Some(event)) => {
                    if matches!(event, Event::End { .. }) {
                        self.end_seen = true;
                    }
                    return Ok(Some(event));
                }
                Ok(None) => continue,
                Err((pos, msg)) => {
                    self.done = true;
                    let at = chunk.offset + pos as u64;
                    return Err(self.error(
                        at,
                        TraceErrorKind::Corrupt,
                        format!("bad record starting at byte {record_at}: {msg}"),
                    ));
                }
            }
        }
    }
}

impl<R: Read> Iterator for TraceReader<R> {
    type Item = Result<Event, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_event().transpose()
    }
}

fn decode_msg(e: &DecodeError) -> &'static str {
    match e {
        DecodeError::Eof => "record runs past the end of its chunk",
        DecodeError::VarintOverflow => "number too large",
    }
}

/// Decode one version-1 record at `chunk.pos`. `Ok(None)` for records that
/// carry no event (strings, skippable extensions). Errors are (position in
/// the chunk, message).
fn decode_v1(chunk: &mut Chunk, tables: &mut Tables) -> Result<Option<Event>, (usize, String)> {
    let mut c = Cursor::new(&chunk.data);
    c.bytes(chunk.pos)
        .map_err(|_| (chunk.pos, "bad position".to_owned()))?;
    let mut clock = chunk.clock;
    let result = decode_record_v1(&mut c, &mut clock, tables);
    match result {
        Ok(ev) => {
            chunk.pos = c.pos();
            chunk.clock = clock;
            Ok(ev)
        }
        Err(Bad::Decode(e)) => Err((c.pos(), decode_msg(&e).to_owned())),
        Err(Bad::Invalid(m)) => Err((c.pos(), m)),
    }
}

enum Bad {
    Decode(DecodeError),
    Invalid(String),
}

impl From<DecodeError> for Bad {
    fn from(e: DecodeError) -> Self {
        Bad::Decode(e)
    }
}

fn invalid<T>(msg: impl Into<String>) -> Result<T, Bad> {
    Err(Bad::Invalid(msg.into()))
}

fn time(c: &mut Cursor<'_>, clock: &mut u64) -> Result<u64, Bad> {
    let dt = c.uvarint()?;
    match clock.checked_add(dt) {
        Some(t) => {
            *clock = t;
            Ok(t)
        }
        None => invalid("time overflows"),
    }
}

fn string(c: &mut Cursor<'_>, tables: &Tables) -> Result<String, Bad> {
    let id = c.uvarint()?;
    match usize::try_from(id).ok().and_then(|i| tables.strings.get(i)) {
        Some(s) => Ok(s.clone()),
        None => invalid(format!("string {id} is not defined")),
    }
}

/// The end (from the chunk clock) and duration that a thread's run and a GIL's run both start
/// with, as (start, end).
fn span(c: &mut Cursor<'_>, clock: &mut u64, what: &str) -> Result<(u64, u64), Bad> {
    let end_ns = time(c, clock)?;
    let duration = c.uvarint()?;
    match end_ns.checked_sub(duration) {
        Some(start_ns) => Ok((start_ns, end_ns)),
        None => invalid(format!("{what} starts before time 0")),
    }
}

fn u32_of(v: u64, what: &str) -> Result<u32, Bad> {
    u32::try_from(v).or_else(|_| invalid(format!("{what} {v} out of range")))
}

fn thread_ref(c: &mut Cursor<'_>, tables: &Tables) -> Result<u32, Bad> {
    let t = c.uvarint()?;
    if t >= tables.threads {
        return invalid(format!("thread {t} is not defined"));
    }
    u32_of(t, "thread")
}

fn decode_record_v1(
    c: &mut Cursor<'_>,
    clock: &mut u64,
    tables: &mut Tables,
) -> Result<Option<Event>, Bad> {
    let t = c.u8()?;
    let ev = match t {
        tag::STRING => {
            let len = c.uvarint()?;
            if len > c.remaining() as u64 {
                return Err(Bad::Decode(DecodeError::Eof));
            }
            let bytes = c.bytes(len as usize)?;
            let s = std::str::from_utf8(bytes).or_else(|_| invalid("string is not UTF-8"))?;
            tables.strings.push(s.to_owned());
            return Ok(None);
        }
        tag::FRAME => {
            let function = string(c, tables)?;
            let file = string(c, tables)?;
            let line = c.ivarint()?;
            let line = i32::try_from(line).or_else(|_| invalid("line number out of range"))?;
            let interpreter = c.ivarint()?;
            tables.frames += 1;
            Event::Frame {
                id: u32_of(tables.frames, "frame")?,
                frame: Frame {
                    function,
                    file,
                    line,
                    interpreter,
                },
            }
        }
        tag::STACK => {
            let parent = c.uvarint()?;
            let frame = c.uvarint()?;
            if parent > tables.stacks {
                return invalid(format!("stack {parent} is not defined"));
            }
            if frame == 0 || frame > tables.frames {
                return invalid(format!("frame {frame} is not defined"));
            }
            tables.stacks += 1;
            Event::Stack {
                id: u32_of(tables.stacks, "stack")?,
                parent: u32_of(parent, "stack")?,
                frame: u32_of(frame, "frame")?,
            }
        }
        tag::GIL => {
            let address = c.uvarint()?;
            let gil = u32_of(tables.gils, "gil")?;
            tables.gils += 1;
            Event::Gil { gil, address }
        }
        tag::INTERPRETER => {
            let time_ns = time(c, clock)?;
            let id = c.ivarint()?;
            let flags = c.u8()?;
            if flags & !0b11 != 0 {
                return invalid(format!("unknown interpreter flags {flags:#x}"));
            }
            let gil = c.uvarint()?;
            if gil >= tables.gils {
                return invalid(format!("GIL {gil} is not defined"));
            }
            let address = c.uvarint()?;
            Event::Interpreter {
                time_ns,
                id,
                main: flags & 1 != 0,
                own_gil: flags & 2 != 0,
                gil: u32_of(gil, "gil")?,
                address,
            }
        }
        tag::INTERPRETER_END => {
            let time_ns = time(c, clock)?;
            let id = c.ivarint()?;
            Event::InterpreterEnd { time_ns, id }
        }
        tag::THREAD_START => {
            let time_ns = time(c, clock)?;
            let thread = c.uvarint()?;
            if thread > tables.threads {
                return invalid(format!("thread {thread} defined out of order"));
            }
            let tid = c.uvarint()?;
            let start_ticks = c.uvarint()?;
            let name = string(c, tables)?;
            let os_name = string(c, tables)?;
            if thread == tables.threads {
                tables.threads += 1;
            }
            Event::ThreadStart {
                time_ns,
                thread: u32_of(thread, "thread")?,
                tid: u32_of(tid, "tid")?,
                start_ticks,
                name,
                os_name,
            }
        }
        tag::THREAD_NAME => {
            let time_ns = time(c, clock)?;
            let thread = thread_ref(c, tables)?;
            let name = string(c, tables)?;
            let os_name = string(c, tables)?;
            Event::ThreadName {
                time_ns,
                thread,
                name,
                os_name,
            }
        }
        tag::THREAD_END => {
            let time_ns = time(c, clock)?;
            let thread = thread_ref(c, tables)?;
            Event::ThreadEnd { time_ns, thread }
        }
        tag::RUN => {
            let (start_ns, end_ns) = span(c, clock, "run")?;
            let thread = thread_ref(c, tables)?;
            let samples = u32_of(c.uvarint()?, "sample count")?;
            let interpreter = c.ivarint()?;
            let flags = c.u8()?;
            let Some(state) = state_from_code(flags & 0b111) else {
                return invalid(format!("unknown state {}", flags & 0b111));
            };
            if flags & !0b1_1111 != 0 {
                return invalid(format!("unknown run flags {flags:#x}"));
            }
            let stack = c.uvarint()?;
            if stack > tables.stacks {
                return invalid(format!("stack {stack} is not defined"));
            }
            Event::Run(Run {
                thread,
                start_ns,
                end_ns,
                samples,
                interpreter,
                state,
                on_cpu: flags & 0b1000 != 0,
                stack: u32_of(stack, "stack")?,
                source: if flags & 0b1_0000 != 0 {
                    Source::Exact
                } else {
                    Source::Sampled
                },
            })
        }
        tag::GIL_RUN => {
            let (start_ns, end_ns) = span(c, clock, "GIL run")?;
            let gil = c.uvarint()?;
            if gil >= tables.gils {
                return invalid(format!("GIL {gil} is not defined"));
            }
            let samples = u32_of(c.uvarint()?, "sample count")?;
            let flags = c.u8()?;
            if flags & !0b111 != 0 {
                return invalid(format!("unknown GIL run flags {flags:#x}"));
            }
            let holder_tid = if flags & 0b100 != 0 {
                Some(u32_of(c.uvarint()?, "tid")?)
            } else {
                None
            };
            let switch_number = c.uvarint()?;
            Event::GilRun(GilRun {
                gil: u32_of(gil, "gil")?,
                start_ns,
                end_ns,
                samples,
                enabled: flags & 1 != 0,
                locked: flags & 2 != 0,
                holder_tid,
                switch_number,
            })
        }
        tag::SAMPLE_ERROR => {
            let time_ns = time(c, clock)?;
            let message = string(c, tables)?;
            Event::SampleError { time_ns, message }
        }
        tag::WARNING => {
            let time_ns = time(c, clock)?;
            let message = string(c, tables)?;
            Event::Warning { time_ns, message }
        }
        tag::END => {
            let time_ns = time(c, clock)?;
            let samples = c.uvarint()?;
            let missed = c.uvarint()?;
            Event::End {
                time_ns,
                samples,
                missed,
            }
        }
        tag::MODE => {
            let len = c.uvarint()?;
            if len > c.remaining() as u64 {
                return Err(Bad::Decode(DecodeError::Eof));
            }
            let mut p = Cursor::new(c.bytes(len as usize)?);
            let time_ns = p.uvarint()?;
            let mode = match p.u8()? {
                0 => crate::model::timeline::Source::Sampled,
                1 => crate::model::timeline::Source::Exact,
                m => return invalid(format!("MODE record with mode {m}")),
            };
            let rate_hz = p.uvarint()? as f64 / 1000.0;
            let own_ppm = p.uvarint()?;
            let probes_ppm = p.uvarint()?;
            let n = p.uvarint()?;
            if n > p.remaining() as u64 {
                return Err(Bad::Decode(DecodeError::Eof));
            }
            let reason = String::from_utf8_lossy(p.bytes(n as usize)?).into_owned();
            // Later fields, if a newer writer adds any, are skipped.
            Event::Mode {
                time_ns,
                mode,
                rate_hz,
                own_ppm,
                probes_ppm,
                reason,
            }
        }
        tag::COST => {
            let len = c.uvarint()?;
            if len > c.remaining() as u64 {
                return Err(Bad::Decode(DecodeError::Eof));
            }
            let mut p = Cursor::new(c.bytes(len as usize)?);
            Event::Cost {
                time_ns: p.uvarint()?,
                own_ppm: p.uvarint()?,
                probes_ppm: p.uvarint()?,
            }
        }
        tag::GC => {
            let len = c.uvarint()?;
            if len > c.remaining() as u64 {
                return Err(Bad::Decode(DecodeError::Eof));
            }
            let mut p = Cursor::new(c.bytes(len as usize)?);
            let end_ns = p.uvarint()?;
            let Some(start_ns) = end_ns.checked_sub(p.uvarint()?) else {
                return invalid("GC record starts before time 0");
            };
            let interpreter = p.ivarint()?;
            let thread = match p.uvarint()? {
                0 => None,
                t if t - 1 < tables.threads => Some(u32_of(t - 1, "thread")?),
                t => return invalid(format!("thread {} is not defined", t - 1)),
            };
            let stack = p.uvarint()?;
            if stack > tables.stacks {
                return invalid(format!("stack {stack} is not defined"));
            }
            let samples = u32_of(p.uvarint()?, "sample count")?;
            // Later fields, if a newer writer adds any, are skipped.
            Event::Gc(crate::model::timeline::GcRun {
                interpreter,
                start_ns,
                end_ns,
                samples,
                thread,
                stack: u32_of(stack, "stack")?,
            })
        }
        t if t >= tag::SKIPPABLE_MIN => {
            let len = c.uvarint()?;
            if len > c.remaining() as u64 {
                return Err(Bad::Decode(DecodeError::Eof));
            }
            c.bytes(len as usize)?;
            return Ok(None);
        }
        t => {
            return invalid(format!(
                "unknown record type {t:#04x} (written by a newer gilscope?)"
            ))
        }
    };
    Ok(Some(ev))
}

/// A whole trace file folded into a [`Timeline`].
#[derive(Debug, Clone)]
pub struct Replay {
    pub file: String,
    pub version: u16,
    pub metadata: Metadata,
    pub timeline: Timeline,
    /// Why reading stopped early, if it did.
    pub damage: Option<Damage>,
    /// The recording finished cleanly (the end record is there).
    pub complete: bool,
    /// Bytes of whole chunks read.
    pub bytes: u64,
}

/// Read `path` into the model.
pub fn replay(path: impl AsRef<Path>) -> Result<Replay, TraceError> {
    replay_reader(TraceReader::open(path)?)
}

/// Read a whole trace from a reader into the model.
pub fn replay_reader<R: Read>(mut reader: TraceReader<R>) -> Result<Replay, TraceError> {
    let mut timeline = Timeline::new();
    while let Some(e) = reader.next_event()? {
        timeline.apply(&e);
    }
    Ok(Replay {
        file: reader.file.clone(),
        version: reader.version,
        metadata: reader.metadata.clone(),
        timeline,
        damage: reader.damage.clone(),
        complete: reader.end_seen,
        bytes: reader.offset,
    })
}

#[cfg(test)]
mod tests {
    //! Hand-made files for the decoder's error paths (the round trips and
    //! cuts are in tests/trace_format.rs).
    use super::*;
    use crate::trace::codec::put_uvarint;

    /// A file with `{}` metadata and one chunk holding `records`.
    fn file_with(records: &[u8]) -> Vec<u8> {
        let meta = b"{}";
        let mut f = Vec::new();
        f.extend_from_slice(&MAGIC);
        f.extend_from_slice(&VERSION.to_le_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(&(meta.len() as u32).to_le_bytes());
        f.extend_from_slice(&crc32(meta).to_le_bytes());
        f.extend_from_slice(meta);
        let mut payload = Vec::new();
        put_uvarint(&mut payload, 1000);
        payload.extend_from_slice(records);
        f.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        f.extend_from_slice(&crc32(&payload).to_le_bytes());
        f.extend_from_slice(&payload);
        f
    }

    fn read(bytes: &[u8]) -> Result<Vec<Event>, TraceError> {
        TraceReader::from_reader("t.gilscope", bytes)?.collect()
    }

    /// GIL 0, thread 0 "a", then `rest`.
    fn with_thread(rest: &[u8]) -> Vec<u8> {
        let mut r = vec![tag::STRING, 1, b'a', tag::GIL, 0x10];
        r.extend_from_slice(&[tag::THREAD_START, 0, 0, 7, 1, 1, 0]);
        r.extend_from_slice(rest);
        file_with(&r)
    }

    fn err_of(bytes: &[u8]) -> TraceError {
        read(bytes).expect_err("should fail")
    }

    #[test]
    fn minimal_file_reads() {
        let events = read(&with_thread(&[tag::END, 5, 1, 0])).unwrap();
        assert_eq!(events.len(), 3);
        assert!(matches!(
            &events[1],
            Event::ThreadStart { tid: 7, name, .. } if name == "a"
        ));
        assert_eq!(
            events[2],
            Event::End {
                time_ns: 1005,
                samples: 1,
                missed: 0
            }
        );
    }

    #[test]
    fn skippable_records_are_skipped_and_unknown_ones_refused() {
        let events = read(&with_thread(&[0x9F, 3, 1, 2, 3, tag::THREAD_END, 0, 0])).unwrap();
        assert_eq!(events.len(), 3);
        // A GC record with a field a later writer appended: read, the extra field skipped.
        let events = read(&with_thread(&[tag::GC, 7, 10, 4, 0, 1, 0, 2, 99])).unwrap();
        assert!(
            events.iter().any(|e| matches!(
                e,
                Event::Gc(g) if g.start_ns == 6 && g.end_ns == 10 && g.thread == Some(0)
                    && g.samples == 2
            )),
            "{events:?}"
        );
        let e = err_of(&with_thread(&[0x50]));
        assert_eq!(e.kind, TraceErrorKind::Corrupt);
        assert!(e.message.contains("unknown record type 0x50"), "{e}");
        // Offset of the bad record: header 22, chunk head 8, base varint 2,
        // the thread prelude 12.
        assert!(e.message.contains("starting at byte 44"), "{e}");
    }

    #[test]
    fn bad_references_and_values_are_errors() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            // RUN: dt, duration, thread 5 (undefined)
            (
                vec![tag::RUN, 0, 0, 5, 1, 0, 0, 0],
                "thread 5 is not defined",
            ),
            // RUN longer than its end time
            (
                vec![tag::RUN, 0, 0xE9, 0x07, 0, 1, 0, 0, 0],
                "before time 0",
            ),
            // RUN with state 7
            (vec![tag::RUN, 0, 0, 0, 1, 0, 7, 0], "unknown state 7"),
            // RUN naming an undefined stack
            (
                vec![tag::RUN, 0, 0, 0, 1, 0, 0, 9],
                "stack 9 is not defined",
            ),
            (vec![tag::STACK, 0, 1], "frame 1 is not defined"),
            (vec![tag::FRAME, 9, 0, 0, 0], "string 9 is not defined"),
            (vec![tag::STRING, 2, 0xff, 0xfe], "not UTF-8"),
            (vec![tag::STRING, 50, b'x'], "past the end of its chunk"),
            (
                vec![
                    tag::THREAD_END,
                    0xff,
                    0xff,
                    0xff,
                    0xff,
                    0xff,
                    0xff,
                    0xff,
                    0xff,
                    0xff,
                    0x7f,
                ],
                "too large",
            ),
            (
                vec![tag::INTERPRETER, 0, 0, 4, 0, 0],
                "unknown interpreter flags",
            ),
            (
                vec![tag::INTERPRETER, 0, 0, 0, 3, 0],
                "GIL 3 is not defined",
            ),
            (
                vec![tag::THREAD_START, 0, 4, 1, 1, 0, 0],
                "defined out of order",
            ),
            (
                vec![tag::FRAME, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x7f, 0],
                "line number out of range",
            ),
            // GC: end 0, duration 0, interpreter 0, thread 5 + 1, stack 0, samples 1
            (
                vec![tag::GC, 6, 0, 0, 0, 6, 0, 1],
                "thread 5 is not defined",
            ),
            (vec![tag::GC, 6, 0, 0, 0, 1, 9, 1], "stack 9 is not defined"),
            (vec![tag::GC, 6, 0, 5, 0, 1, 0, 1], "before time 0"),
        ];
        for (rest, needle) in cases {
            let e = err_of(&with_thread(&rest));
            assert_eq!(e.kind, TraceErrorKind::Corrupt, "{needle}");
            assert!(e.to_string().contains(needle), "want {needle:?}: {e}");
            assert!(e.to_string().starts_with("t.gilscope: "), "{e}");
        }
    }

    #[test]
    fn bad_chunk_heads_are_damage_not_errors() {
        let good = with_thread(&[]);
        let chunk_at = 22;
        for len in [0u32, MAX_CHUNK_LEN + 1] {
            let mut b = good.clone();
            b[chunk_at..chunk_at + 4].copy_from_slice(&len.to_le_bytes());
            let mut r = TraceReader::from_reader("d", &b[..]).unwrap();
            assert_eq!(r.next_event(), Ok(None));
            let d = r.damage().unwrap();
            assert_eq!(d.offset, chunk_at as u64);
            assert!(d.reason.contains("implausible"), "{d}");
        }
    }

    #[test]
    fn bad_metadata_is_an_error_at_its_offset() {
        let mut b = file_with(&[]);
        b[20] = b'[';
        let c = crc32(&b[20..22]);
        b[16..20].copy_from_slice(&c.to_le_bytes());
        let e = err_of(&b);
        assert_eq!(e.kind, TraceErrorKind::Corrupt);
        assert!(e.message.contains("metadata header is not valid"), "{e}");
        assert!(e.offset >= 20, "{e}");
        let mut b = file_with(&[]);
        b[12..16].copy_from_slice(&(MAX_METADATA_LEN + 1).to_le_bytes());
        assert_eq!(err_of(&b).offset, 12);
    }
}
