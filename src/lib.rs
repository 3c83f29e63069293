//! gilscope: an out-of-process GIL and interpreter tracing profiler for CPython.
//!
//! Data flows one way (see docs/ARCHITECTURE.md):
//! target process → [`reader`] (memory reads) → [`model`] snapshots →
//! outputs (`dump`, trace files, summaries, UI). Only the CLI (`src/cli/`, in the
//! binary) wires the pieces together.

pub mod analysis;
pub mod check;
pub mod exact;
#[doc(hidden)]
pub mod fuzz;
pub mod model;
pub mod output;
pub mod push;
pub mod reader;
pub mod sampler;
pub mod trace;
