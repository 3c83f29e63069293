//! Fuzzing entry points: each takes arbitrary bytes and must never panic, loop forever or
//! allocate without bound. Shared by the cargo-fuzz targets in `fuzz/fuzz_targets/` (nightly,
//! see fuzz/README.md) and by `cargo test`, which replays every input kept in
//! `fuzz/regressions/` (tests/trace_format.rs for the trace reader, tests/fuzz.rs for the
//! others) and runs seeded mutations of the trace reader (tests/trace_format.rs).
//!
//! Wiring, like the CLI: it reaches into the trace reader, the model, the analyses, the
//! outputs and the reader's layout code, so it sits beside them rather than inside one.

pub mod config;
pub mod debug_offsets;
pub mod pprof;
pub mod trace;
