//! Glyphs and colours. Every state has its own glyph, so the screen reads
//! the same without colour (`NO_COLOR`); colour only reinforces it.

use ratatui::style::{Color, Modifier, Style};

use crate::view::LaneState;

/// The glyph a lane cell shows for a state.
pub fn glyph(s: LaneState) -> char {
    match s {
        LaneState::Held => '█',
        LaneState::Waiting => '▒',
        LaneState::Released => '░',
        LaneState::Idle => '·',
        LaneState::Attached => '▓',
        LaneState::Unknown => '?',
        LaneState::Gc => '▚',
    }
}

/// GIL strip: busy fraction as a bar height (eighths).
pub const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
/// GIL strip cell where the GIL was disabled.
pub const GIL_DISABLED: char = '-';

pub fn bar(fraction: f64) -> char {
    if fraction <= 0.0 {
        return ' ';
    }
    let i = (fraction * 8.0).ceil() as usize;
    BARS[i.clamp(1, 8) - 1]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Theme {
    pub color: bool,
}

impl Theme {
    /// Colour unless `NO_COLOR` is set to anything non-empty.
    pub fn from_env() -> Self {
        Theme {
            color: std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        }
    }

    fn fg(&self, c: Color) -> Style {
        if self.color {
            Style::new().fg(c)
        } else {
            Style::new()
        }
    }

    pub fn state(&self, s: LaneState) -> Style {
        self.fg(match s {
            LaneState::Held => Color::Green,
            LaneState::Waiting => Color::Red,
            LaneState::Released => Color::Cyan,
            LaneState::Idle => Color::DarkGray,
            LaneState::Attached => Color::Magenta,
            LaneState::Unknown => Color::DarkGray,
            LaneState::Gc => Color::Blue,
        })
    }

    pub fn gil(&self) -> Style {
        self.fg(Color::Yellow)
    }

    pub fn title(&self) -> Style {
        Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD)
    }

    pub fn heading(&self) -> Style {
        self.fg(Color::Yellow).add_modifier(Modifier::BOLD)
    }

    pub fn selected(&self) -> Style {
        Style::new().add_modifier(Modifier::REVERSED)
    }

    pub fn dim(&self) -> Style {
        if self.color {
            Style::new().fg(Color::DarkGray)
        } else {
            Style::new()
        }
    }

    pub fn accent(&self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }

    pub fn alert(&self) -> Style {
        self.fg(Color::Red).add_modifier(Modifier::BOLD)
    }
}
