//! The gilscope command line. The only place that wires the reader, the
//! model and the outputs together. Exit codes are documented in docs/cli.md.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use gilscope::output;
use gilscope::reader::{self, Reader, ReaderOptions};

mod cli_record;

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
    Dump(DumpArgs),
    /// Record GIL and thread states and stacks over time into a trace file.
    Record(RecordArgs),
    /// Summarize a trace: GIL busy %, hand-overs, per-thread held/waiting/idle, hot stacks.
    Summary(SummaryArgs),
}

#[derive(Args)]
struct RecordArgs {
    /// Record this running process.
    #[arg(long, short, conflicts_with = "command")]
    pid: Option<u32>,
    /// The trace file to write.
    #[arg(long, short, default_value = "gilscope.trace")]
    output: std::path::PathBuf,
    /// Samples per second (GIL and thread state and stacks).
    #[arg(long, default_value_t = 1000.0, value_parser = parse_rate)]
    rate: f64,
    /// Stop after this many seconds (default: until Ctrl-C or the target exits).
    #[arg(long, value_parser = parse_secs)]
    duration: Option<std::time::Duration>,
    /// Pause the target while reading each sample (ptrace). Slower; off by default.
    #[arg(long)]
    blocking: bool,
    /// Also record Python processes started by the target, each into
    /// FILE.PID (e.g. gilscope.12345.trace).
    #[arg(long)]
    subprocesses: bool,
    /// Do not read Python stacks (state only; cheaper).
    #[arg(long)]
    no_stacks: bool,
    /// Launch this command and record it until it exits: `gilscope record -- python app.py`.
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
}

#[derive(Args)]
struct SummaryArgs {
    /// A trace written by `gilscope record`.
    file: std::path::PathBuf,
    /// Print JSON (shape in docs/cli.md).
    #[arg(long)]
    json: bool,
    /// Hottest stacks listed per GIL.
    #[arg(long, default_value_t = 5)]
    top: usize,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if !(v.is_finite() && v > 0.0 && v <= 100_000.0) {
        return Err("the rate must be between 0 and 100000 Hz".into());
    }
    Ok(v)
}

fn parse_secs(s: &str) -> Result<std::time::Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(v.is_finite() && v > 0.0) {
        return Err("the duration must be a positive number of seconds".into());
    }
    Ok(std::time::Duration::from_secs_f64(v))
}

#[derive(Args)]
struct DumpArgs {
    /// The process to read.
    #[arg(long, short)]
    pid: u32,
    /// Print JSON (the shape is documented in docs/cli.md).
    #[arg(long)]
    json: bool,
    /// Pause the target while reading (ptrace), for a perfectly consistent
    /// reading. Off by default: gilscope then never stops the target.
    #[arg(long)]
    blocking: bool,
    /// Do not read Python stacks.
    #[arg(long)]
    no_stacks: bool,
}

/// Exit codes (docs/cli.md).
const EXIT_OTHER: u8 = 1;

fn run_dump(args: &DumpArgs) -> Result<()> {
    let opts = ReaderOptions {
        blocking: args.blocking,
        stacks: !args.no_stacks,
        ..ReaderOptions::default()
    };
    let mut reader = Reader::attach(args.pid, opts)?;
    let snap = reader.snapshot()?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        output::dump::write_json(&mut out, &snap).context("writing to stdout")?;
    } else {
        output::dump::write_text(&mut out, &snap).context("writing to stdout")?;
    }
    out.flush().context("writing to stdout")?;
    Ok(())
}

/// Returns the exit code: the launched command's when there was one.
fn run_record(args: &RecordArgs) -> Result<u8> {
    let plan = cli_record::RecordPlan {
        output: args.output.clone(),
        rate_hz: args.rate,
        duration: args.duration,
        blocking: args.blocking,
        subprocesses: args.subprocesses,
        stacks: !args.no_stacks,
    };
    match (args.pid, args.command.is_empty()) {
        (Some(pid), true) => {
            cli_record::record_pid(pid, &plan)?;
            Ok(0)
        }
        (None, false) => {
            let launched = cli_record::record_command(&args.command, &plan)?;
            if launched.status_code != 0 {
                eprintln!(
                    "gilscope: the command exited with status {}",
                    launched.status_code
                );
            }
            Ok(0)
        }
        _ => anyhow::bail!(
            "say what to record: `gilscope record --pid PID` or `gilscope record -- CMD ARGS...`"
        ),
    }
}

fn run_summary(args: &SummaryArgs) -> Result<()> {
    let replay = gilscope::trace::replay(&args.file)?;
    let opts = gilscope::analysis::summary::SummaryOptions {
        top_stacks: args.top,
    };
    let summary = gilscope::analysis::summary::summarize_replay(&replay, &opts);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        output::summary::write_json(&mut out, &summary).context("writing to stdout")?;
    } else {
        output::summary::write_text(&mut out, &summary).context("writing to stdout")?;
    }
    out.flush().context("writing to stdout")?;
    Ok(())
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Dump(args) => run_dump(args).map(|()| 0),
        Command::Record(args) => run_record(args),
        Command::Summary(args) => run_summary(args).map(|()| 0),
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
