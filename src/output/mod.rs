//! Turning model values into text for people and machines.

pub mod dump;
pub mod export;
pub mod flame;
pub mod summary;
