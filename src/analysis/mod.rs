//! Analyses over the [`Timeline`](crate::model::timeline::Timeline) model:
//! pure functions from the model to result structs (which outputs render).

pub mod blame;
pub mod holds;
pub mod parallel;
pub mod summary;
