//! `gilscope dump --pid PID`: one reading of every interpreter, GIL and thread, as text or
//! JSON.

use std::io::Write;

use anyhow::{Context, Result};
use clap::Args;

use gilscope::output;
use gilscope::reader::{Reader, ReaderOptions};

#[derive(Args)]
pub struct DumpArgs {
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
pub fn run(args: &DumpArgs) -> Result<u8> {
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
    Ok(0)
}
