//! gilscope trace files: recording the timeline to disk and reading it back.
//!
//! The format is ours and documented byte by byte in docs/trace-format.md: a
//! magic + version header, a JSON metadata header, then CRC-checked chunks of
//! compact records (varints, delta times, interned strings, frames and
//! stacks). [`TraceWriter`] writes one, [`TraceReader`] reads every version
//! ever written, and both speak [`Event`](crate::model::timeline::Event), the
//! input of the analysis model — so replaying a file and sampling live run
//! the same code downstream.
//!
//! Pure apart from file IO: nothing here touches the target process.

pub mod codec;
pub mod encoder;
pub mod format;
pub mod meta;
pub mod periods;
pub mod reader;
pub mod synth;
pub mod writer;

pub use encoder::SnapshotEncoder;
pub use format::{MAGIC, VERSION};
pub use meta::{ClockMeta, InterpreterMeta, Metadata, OptionsMeta, PythonMeta, TargetMeta};
pub use reader::{replay, replay_reader, Damage, Replay, TraceError, TraceErrorKind, TraceReader};
pub use writer::{EventTap, TraceWriter, WriterStats};
