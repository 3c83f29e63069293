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

/// Time-weighted averages of the COST records: (gilscope's CPU, the probes' cost), percent
/// of one CPU.
fn cost_pcts(replay: &gilscope::trace::Replay) -> Option<(f64, f64)> {
    let start = replay.timeline.start_ns?;
    let (mut prev, mut own, mut probes, mut span) = (start, 0f64, 0f64, 0u64);
    for &(t, o, p) in &replay.timeline.costs {
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
    Some((pct(own), pct(probes)))
}

/// "gilscope 0.8% of a CPU, probes 0.2% (charged to the target)" from the COST records.
fn cost_line(replay: &gilscope::trace::Replay) -> Option<String> {
    let (own, probes) = cost_pcts(replay)?;
    let mut s = format!("gilscope {own:.1}% of a CPU");
    if probes > 0.0 {
        s.push_str(&format!(", probes {probes:.1}% (charged to the target)"));
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
        // The summary, then which periods were exact and at what rate (the overhead
        // budget's MODE records: `periods`) and the COST records' averages (`cost`),
        // appended as the last fields (the summary's own fields keep their order).
        let periods = gilscope::trace::periods::periods(&replay.metadata, &replay.timeline);
        let t0 = periods.first().map_or(0, |p| p.start_ns);
        let list: Vec<serde_json::Value> = periods
            .iter()
            .map(|p| {
                serde_json::json!({
                    "mode": match p.mode {
                        gilscope::model::timeline::Source::Exact => "exact",
                        gilscope::model::timeline::Source::Sampled => "sampled",
                    },
                    "start_s": p.start_ns.saturating_sub(t0) as f64 / 1e9,
                    "end_s": p.end_ns.saturating_sub(t0) as f64 / 1e9,
                    "rate_hz": p.rate_hz,
                    "reason": p.reason,
                })
            })
            .collect();
        // Only when there is something to say: traces without MODE / COST records (all
        // traces from before the overhead budget) print exactly what they printed.
        let mut extra = Vec::new();
        if list.len() > 1 {
            extra.push(("periods", serde_json::Value::Array(list)));
        }
        if let Some((own, probes)) = cost_pcts(&replay) {
            extra.push((
                "cost",
                serde_json::json!({
                    "own_cpu_pct": own,
                    "probes_cpu_pct": probes,
                    "max_overhead_pct": replay.metadata.options.max_overhead_pct,
                }),
            ));
        }
        let mut text = serde_json::to_string_pretty(&summary).context("encoding the summary")?;
        if text.ends_with('}') {
            text.pop();
            let body = text.trim_end().to_owned();
            let mut t = body.clone();
            for (k, v) in extra {
                let v = serde_json::to_string_pretty(&v)
                    .context("encoding the summary")?
                    .replace('\n', "\n  ");
                t.push_str(&format!(",\n  \"{k}\": {v}"));
            }
            t.push_str("\n}");
            text = t;
        }
        writeln!(out, "{text}").context("writing to stdout")?;
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
