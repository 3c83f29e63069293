//! The gilscope command line. The only place that wires the reader, the
//! model and the outputs together. Exit codes are documented in docs/cli.md.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use gilscope::output;
use gilscope::reader::{self, Reader, ReaderOptions};

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

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Dump(args) => run_dump(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
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
