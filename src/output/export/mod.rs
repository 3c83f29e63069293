//! `gilscope export`: a trace converted for other tools.
//!
//! * [`perfetto`] — Chrome trace-event JSON (Perfetto UI, chrome://tracing);
//! * [`speedscope`] — speedscope's file format, one sampled profile per thread;
//! * `collapsed` — folded stacks ([`crate::output::flame`]), for any flame graph tool;
//! * [`timeline_svg`] — a small SVG picture: one lane per thread coloured by GIL state;
//! * [`pprof`] — gzip'd profile.proto with the GIL state as a label (`go tool pprof`,
//!   Pyroscope, Parca), from the model's stacks.
//!
//! Every exporter streams the trace's events ([`crate::trace::TraceReader`])
//! rather than building the whole model, and writes deterministic output.

pub mod perfetto;
pub mod pprof;
pub mod speedscope;
pub mod timeline_svg;

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;

use anyhow::{bail, Context, Result};

use super::flame::{self, FoldOptions, StateFilter};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Perfetto,
    Speedscope,
    Collapsed,
    TimelineSvg,
    Pprof,
}

impl Format {
    pub const ALL: [Format; 5] = [
        Format::Perfetto,
        Format::Speedscope,
        Format::Collapsed,
        Format::TimelineSvg,
        Format::Pprof,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Perfetto => "perfetto",
            Format::Speedscope => "speedscope",
            Format::Collapsed => "collapsed",
            Format::TimelineSvg => "timeline-svg",
            Format::Pprof => "pprof",
        }
    }

    /// The state filter when none is given: held for folded stacks (like
    /// `gilscope flame`), every state for speedscope and pprof.
    pub fn default_state(self) -> StateFilter {
        match self {
            Format::Collapsed => StateFilter::default(),
            _ => StateFilter::All,
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Format::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "{s:?}: the format is perfetto, speedscope, collapsed, timeline-svg or pprof"
                )
            })
    }
}

/// Write `trace` as `format` into `out` (`-` is stdout). `opts.state` must
/// already hold the format's default when the user gave none. Perfetto and
/// the timeline picture show every state and every thread: they refuse the
/// stack filters. pprof takes `--state`, `--interpreter` and `--thread`, labels samples with
/// the thread instead of `--thread-roots`, and adds a `thread_id` label with `thread_id`.
pub fn export_file(
    trace: &Path,
    format: Format,
    out: &Path,
    opts: &FoldOptions,
    thread_id: bool,
) -> Result<()> {
    let name = flame::trace_name(trace);
    if thread_id && format != Format::Pprof {
        bail!("--thread-id labels pprof samples: use it with --format pprof");
    }
    if format == Format::Pprof && opts.thread_roots {
        bail!("--format pprof labels every sample with its thread (thread_name; --thread-id adds the TID): drop --thread-roots");
    }
    if matches!(format, Format::Perfetto | Format::TimelineSvg)
        && (opts.state != StateFilter::All
            || opts.interpreter.is_some()
            || opts.thread.is_some()
            || opts.thread_roots)
    {
        bail!("--format {format} shows every state, interpreter and thread: drop --state, --interpreter, --thread and --thread-roots");
    }
    let mut w = flame::create_output(out)?;
    match format {
        Format::Collapsed => {
            let folded = flame::fold_file(trace, opts)?;
            flame::write_collapsed(&mut w, &folded)?;
        }
        // Both stream the file's events; the model (a first pass) gives the states of
        // threads with exact runs, so they show the states summary counts.
        Format::Perfetto => {
            let model = crate::trace::replay(trace)?.timeline;
            let reader = crate::trace::TraceReader::open(trace)?;
            perfetto::write(reader, &name, Some(&model), &mut w)?;
        }
        Format::Speedscope => {
            let model = crate::trace::replay(trace)?.timeline;
            let reader = crate::trace::TraceReader::open(trace)?;
            speedscope::write(reader, &name, opts, Some(&model), &mut w)?;
        }
        Format::TimelineSvg => timeline_svg::write_file(trace, &name, &mut w)?,
        Format::Pprof => pprof::write_file(
            trace,
            &pprof::Selection::from_fold(opts),
            thread_id,
            opts.no_lines,
            &mut w,
        )?,
    }
    w.flush()
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

/// A JSON string literal.
pub(crate) fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// Microseconds (the Chrome trace-event unit) from ns, as a JSON number.
pub(crate) fn micros(ns: u64) -> String {
    let whole = ns / 1000;
    let frac = ns % 1000;
    if frac == 0 {
        whole.to_string()
    } else {
        format!("{whole}.{frac:03}")
            .trim_end_matches('0')
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micros_are_exact() {
        assert_eq!(micros(0), "0");
        assert_eq!(micros(1_500), "1.5");
        assert_eq!(micros(2_000_001), "2000.001");
        assert_eq!("timeline-svg".parse::<Format>(), Ok(Format::TimelineSvg));
    }
}
