//! gilscope's terminal UI (ratatui + crossterm).
//!
//! It renders from its own view types ([`ViewModel`] and friends) and has no
//! dependency on the OS side or on the analysis model: the CLI maps
//! gilscope's model into a [`ViewModel`] and hands it over through a
//! [`ViewSource`] — a fixed one for `gilscope view FILE`, a refreshed one for
//! `gilscope top`.
//!
//! * [`App`] holds the UI state; [`App::update`] applies an [`Input`] and
//!   returns an [`Action`] for the caller; [`App::draw`] renders a frame and
//!   never mutates.
//! * [`run`] is the event loop over any ratatui backend (tests use
//!   `TestBackend` and a list of inputs); [`run_in_terminal`] sets up the real
//!   terminal, restores it on every exit path (panic hook included) and feeds
//!   keys, mouse, resizes and live ticks through one channel.
//! * [`fixtures`] builds view models from ASCII lanes (tests, demo).
//!
//! See `docs/tui.md` for the screens and keys.

mod app;
mod draw;
pub mod fixtures;
mod run;
pub mod text;
mod theme;
pub mod timefmt;
mod track;
pub use track::{Span, Track};
mod view;

pub use app::{Action, App, Input, Key, Mouse, MouseKind, Options, SortBy, Window};
pub use run::{restore_terminal, run, run_in_terminal, ViewSource, LIVE_TICK};
pub use text::{shorten_distinct, shorten_middle};
pub use theme::{glyph, Theme};
pub use view::{
    GilLock, GilSegment, GilTimes, GilTrack, GilView, HotStack, InterpView, Lane, LaneState,
    ParallelSegment, ParallelTrack, Segment, StateTimes, ThreadKey, ThreadView, TimeRange,
    ViewModel, WaitedFor,
};
