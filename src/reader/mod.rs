//! The state reader: finds the CPython runtime in a live process and reads
//! every interpreter, GIL and thread state into a [`crate::model::Snapshot`].

pub mod debug_offsets;
pub mod memory;
pub mod stack;
