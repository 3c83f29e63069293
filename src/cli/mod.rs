//! The gilscope command line: the only layer that wires the reader, the recorder, the model
//! and the outputs together, one file per command. Exit codes are documented in docs/cli.md.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use gilscope::reader;

mod check;
mod dump;
mod export;
mod push;
mod record;
mod summary;
mod view;

#[derive(Parser)]
#[command(
    name = "gilscope",
    version,
    about = "Who holds the GIL, in which interpreter, and why is my parallel code not parallel?",
    long_about = "gilscope reads a running CPython process (3.9-3.15, sub-interpreters, \
                  free-threaded builds) from the outside and shows, for every thread of every \
                  interpreter, whether it holds that interpreter's GIL, waits for it, runs \
                  without it or sleeps. It never writes to the target and, by default, never \
                  pauses it."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print every interpreter, GIL and thread (with its Python stack) once.
    Dump(dump::DumpArgs),
    /// Record GIL and thread states and stacks over time into a trace file.
    Record(record::RecordArgs),
    /// Summarize a trace: GIL busy %, hand-overs, per-thread held/waiting/idle, hot stacks.
    Summary(summary::SummaryArgs),
    /// Browse a trace in the terminal: timeline lanes per thread, per interpreter.
    View(view::ViewArgs),
    /// Watch a process live in the terminal (`r` saves the session to a trace).
    Top(view::TopArgs),
    /// Draw a flame graph (SVG) of the stacks in one GIL state (default: held).
    Flame(export::FlameArgs),
    /// Convert a trace: Perfetto / chrome://tracing JSON, speedscope, folded stacks, SVG timeline.
    Export(export::ExportArgs),
    /// CI gate: run a command (e.g. pytest) and fail when native code holds a GIL too long.
    ///
    /// Exit status: 0 clean, 1 findings, 2 gilscope could not run; the command's own non-zero
    /// status wins unless --ignore-command-status (docs/ci.md).
    Check(check::CheckArgs),
}

/// `--rate HZ`: above 0 and at most 1 MHz, or `max` (as fast as gilscope can, for
/// benchmarks: [`gilscope::sampler::RATE_MAX`]).
pub(crate) fn parse_rate(s: &str) -> Result<f64, String> {
    if s == "max" {
        return Ok(gilscope::sampler::RATE_MAX);
    }
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of Hz (or `max`)"))?;
    if !(v.is_finite() && v > 0.0 && v <= 1_000_000.0) {
        return Err("the rate must be above 0 and at most 1000000 Hz, or `max`".into());
    }
    Ok(v)
}

pub(crate) fn parse_secs(s: &str) -> Result<std::time::Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(v.is_finite() && v > 0.0) {
        return Err("the duration must be a positive number of seconds".into());
    }
    Ok(std::time::Duration::from_secs_f64(v))
}

/// Exit codes (docs/cli.md).
const EXIT_OTHER: u8 = 1;

/// Errors are printed as their chain of contexts (`{:#}`), never with a backtrace, yet an
/// `anyhow` error captures one whenever `RUST_BACKTRACE` is set (a developer's shell often
/// has it): and the sampler makes and drops errors at its full rate (a thread gone in the
/// middle of a read). A captured backtrace costs tens of microseconds, so capturing is
/// switched off: the standard library decides once, from `RUST_LIB_BACKTRACE` first, and
/// keeps the answer. The variable is set only for that moment, before any thread starts,
/// and put back, so commands gilscope launches see the environment as it was. Panics still
/// print their backtrace under `RUST_BACKTRACE`.
fn no_error_backtraces() {
    let before = std::env::var_os("RUST_LIB_BACKTRACE");
    std::env::set_var("RUST_LIB_BACKTRACE", "0");
    let _ = std::backtrace::Backtrace::capture();
    match before {
        Some(v) => std::env::set_var("RUST_LIB_BACKTRACE", v),
        None => std::env::remove_var("RUST_LIB_BACKTRACE"),
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Parse the command line, run the command, map the outcome to an exit code.
pub fn main() -> ExitCode {
    no_error_backtraces();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Dump(args) => dump::run(args),
        Command::Record(args) => record::run(args),
        Command::Summary(args) => summary::run(args),
        Command::View(args) => view::run_view_args(args),
        Command::Top(args) => view::run_top_args(args),
        Command::Flame(args) => export::run_flame(args),
        Command::Export(args) => export::run_export(args),
        Command::Check(args) => match check::run(args) {
            Ok(code) => Ok(code),
            Err(err) => {
                // Whatever stopped it, `check` says "could not run" (2), not a finding (1).
                eprintln!("gilscope check: error: {err:#}");
                return ExitCode::from(gilscope::check::EXIT_COULD_NOT_RUN);
            }
        },
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            let code = reader::classify(&err)
                .map(|k| k.exit_code())
                .unwrap_or(EXIT_OTHER);
            eprintln!("gilscope: error: {err:#}");
            ExitCode::from(code)
        }
    }
}
