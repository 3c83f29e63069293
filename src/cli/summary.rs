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
}

/// "gilscope 0.8% of a CPU, probes 0.2% (charged to the target)" from the COST records.
fn cost_line(replay: &gilscope::trace::Replay) -> Option<String> {
    let costs = &replay.timeline.costs;
    let start = replay.timeline.start_ns?;
    let (mut prev, mut own, mut probes, mut span) = (start, 0f64, 0f64, 0u64);
    for &(t, o, p) in costs {
        let dt = t.saturating_sub(prev);
        own += o as f64 * dt as f64;
        probes += p as f64 * dt as f64;
        span += dt;
        prev = t;
    }
    if span == 0 {
        return None;
    }
    let pct = |x: f64| x / span as f64 / 1e4;
    let mut s = format!("gilscope {:.1}% of a CPU", pct(own));
    if probes > 0.0 {
        s.push_str(&format!(
            ", probes {:.1}% (charged to the target)",
            pct(probes)
        ));
    }
    if let Some(b) = replay.metadata.options.max_overhead_pct {
        s.push_str(&format!("; budget {b:.1}%"));
    }
    Some(s)
}

pub fn run(args: &SummaryArgs) -> Result<u8> {
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
        // Which periods were exact and at what rate (the overhead budget's switches).
        let periods = gilscope::trace::periods::periods(&replay.metadata, &replay.timeline);
        if periods.len() > 1 {
            writeln!(
                out,
                "\nPeriods   {}",
                gilscope::trace::periods::describe(&periods)
            )
            .context("writing to stdout")?;
            for p in periods.iter().filter(|p| !p.reason.is_empty()) {
                writeln!(out, "          {}", p.reason).context("writing to stdout")?;
            }
        }
        if let Some(c) = cost_line(&replay) {
            writeln!(out, "Cost      {c}").context("writing to stdout")?;
        }
    }
    out.flush().context("writing to stdout")?;
    Ok(0)
}
