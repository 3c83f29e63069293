//! Turning model values into text for people and machines.

pub mod dump;
pub mod summary;
