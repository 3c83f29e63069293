//! `gilscope summary FILE`: the text or JSON summary of a trace.

use std::io::Write;

use anyhow::{Context, Result};
use clap::Args;

use gilscope::output;

#[derive(Args)]
pub struct SummaryArgs {
    /// A trace written by `gilscope record`.
    file: std::path::PathBuf,
    /// Print JSON (shape in docs/cli.md).
    #[arg(long)]
    json: bool,
    /// Hottest stacks listed per GIL.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// List the N most active threads (most time not idle); a line says how many were left
    /// out. Default: 20 in the text output, all in --json.
    #[arg(long, value_name = "N", conflicts_with = "all")]
    threads: Option<usize>,
    /// List every thread.
    #[arg(long)]
    all: bool,
}

/// Threads the text output lists by default.
const DEFAULT_THREADS: usize = 20;

pub fn run(args: &SummaryArgs) -> Result<u8> {
    let replay = gilscope::trace::replay(&args.file)?;
    let opts = gilscope::analysis::summary::SummaryOptions {
        top_stacks: args.top,
    };
    let mut summary = gilscope::analysis::summary::summarize_replay(&replay, &opts);
    let limit = match (args.threads, args.all, args.json) {
        (_, true, _) => None,
        (Some(n), _, _) => Some(n),
        (None, _, true) => None,
        (None, _, false) => Some(DEFAULT_THREADS),
    };
    if let Some(n) = limit {
        summary.keep_most_active(n);
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        output::summary::write_json(&mut out, &summary).context("writing to stdout")?;
    } else {
        output::summary::write_text(&mut out, &summary).context("writing to stdout")?;
    }
    out.flush().context("writing to stdout")?;
    Ok(0)
}
