//! The state reader: finds the CPython runtime in a live process and reads
//! every interpreter, GIL and thread state into a [`crate::model::Snapshot`].
//!
//! Only this module (and, later, the exact-mode probes) touches the OS.

pub mod debug_offsets;
pub mod error;
pub mod exit_watch;
pub mod launch;
pub mod layout;
pub mod memory;
pub mod native;
pub mod oncpu;
pub mod procfs;
pub mod runtime;
pub mod stack;
pub mod walk;

pub use error::{classify, ReadError, ReadErrorKind};
pub use walk::{monotonic_ns, Reader, ReaderOptions};
