//! Progress while recording: the report handed to the callback, its one-line form, and the
//! printer that puts it on stderr.

use std::io::{IsTerminal, Write};
use std::time::Duration;

/// A progress report, handed to the callback while recording.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub elapsed: Duration,
    pub samples: u64,
    pub errors: u64,
    pub missed_ticks: u64,
    pub asked_hz: f64,
    /// Over the last progress interval.
    pub recent_hz: f64,
    /// File size so far, the pending chunk included.
    pub bytes: u64,
    /// gilscope's own CPU over the last budget window, percent of one CPU.
    pub own_cpu_pct: f64,
    /// The probes' cost to the target over that window (exact mode), percent of one CPU.
    pub probes_pct: Option<f64>,
    /// `--max-overhead`, percent of one CPU.
    pub budget_pct: Option<f64>,
}

/// Percent below the asked rate from which we call it falling behind.
pub const BEHIND_WARN_PCT: f64 = 5.0;

pub(crate) fn behind_pct(asked: f64, achieved: f64) -> f64 {
    if asked > 0.0 {
        ((1.0 - achieved / asked) * 100.0).max(0.0)
    } else {
        0.0
    }
}

/// `--rate max`: a period of 1 ns, so the sampler never sleeps. Never "behind".
pub const RATE_MAX: f64 = 1e9;

/// "1000 Hz", or "as fast as it can" for [`RATE_MAX`].
pub fn rate_text(hz: f64) -> String {
    if hz >= RATE_MAX {
        "as fast as it can".to_string()
    } else {
        format!("{hz} Hz")
    }
}

/// "asked 1000 Hz, achieved 612 Hz (39% behind)" when behind by more than
/// [`BEHIND_WARN_PCT`].
pub fn behind_message(asked: f64, achieved: f64) -> Option<String> {
    if asked >= RATE_MAX {
        return None;
    }
    let b = behind_pct(asked, achieved);
    (b > BEHIND_WARN_PCT)
        .then(|| format!("asked {asked:.0} Hz, achieved {achieved:.0} Hz ({b:.0}% behind)"))
}

/// "1.2 MB", "340 kB", "999 B".
pub fn human_bytes(n: u64) -> String {
    match n {
        0..1_000 => format!("{n} B"),
        1_000..1_000_000 => format!("{:.0} kB", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", n as f64 / 1e6),
        _ => format!("{:.2} GB", n as f64 / 1e9),
    }
}

impl Progress {
    /// The one-line form shown on stderr.
    pub fn line(&self) -> String {
        let mut s = format!(
            "recording: {:.1} s, {} samples, {:.0} Hz, {} error{}, {}",
            self.elapsed.as_secs_f64(),
            self.samples,
            self.recent_hz,
            self.errors,
            if self.errors == 1 { "" } else { "s" },
            human_bytes(self.bytes)
        );
        s.push_str(&format!(", cost: gilscope {:.1}%", self.own_cpu_pct));
        if let Some(p) = self.probes_pct {
            s.push_str(&format!(" + probes {p:.1}%"));
        }
        s.push_str(" of a CPU");
        if let Some(b) = self.budget_pct {
            s.push_str(&format!(" (budget {b:.1}%)"));
        }
        if let Some(b) = behind_message(self.asked_hz, self.recent_hz) {
            s.push_str(&format!(" — falling behind: {b}"));
        }
        s
    }
}

/// Prints [`Progress`] on stderr: one `\r`-rewritten line on a terminal,
/// plain lines (every 10 s) otherwise.
pub struct ProgressPrinter {
    tty: bool,
    last_plain: Option<Duration>,
    plain_interval: Duration,
    width: usize,
}

impl ProgressPrinter {
    pub fn stderr() -> Self {
        ProgressPrinter {
            tty: std::io::stderr().is_terminal(),
            last_plain: None,
            plain_interval: Duration::from_secs(10),
            width: 0,
        }
    }

    pub fn update(&mut self, p: &Progress) {
        let line = p.line();
        let mut err = std::io::stderr().lock();
        if self.tty {
            let pad = self.width.saturating_sub(line.chars().count());
            self.width = line.chars().count();
            let _ = write!(err, "\r{line}{}", " ".repeat(pad));
            let _ = err.flush();
        } else if self
            .last_plain
            .is_none_or(|t| p.elapsed >= t + self.plain_interval)
        {
            self.last_plain = Some(p.elapsed);
            let _ = writeln!(err, "{line}");
        }
    }

    /// End the `\r` line (call before printing anything else).
    pub fn finish(&mut self) {
        if self.tty && self.width > 0 {
            let _ = writeln!(std::io::stderr());
            self.width = 0;
        }
    }
}
