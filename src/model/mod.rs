//! The pure data model: what gilscope knows about a CPython process.
//! It imports no OS code, no output and no UI; every source (the live reader,
//! exact-mode probes, trace-file replay) produces these types.

pub mod snapshot;
pub mod timeline;

pub use snapshot::*;
