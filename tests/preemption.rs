//! Sampled GIL states on a crowded machine (samples/crowd.py): 2 pure-Python spinners among
//! 200 threads that sleep in 1 ms loops, 100 times more runnable threads than CPUs on a
//! 2-core machine. A spinner never blocks anywhere but in the GIL, so no sample of it may say
//! idle: a spinner preempted or woken while it waits must read waiting (asleep on the GIL's
//! futexes), released or unknown (runnable: the kernel shows nothing more), never idle.
//!
//! `cargo test --test preemption -- --nocapture` prints the spinners' shares.

mod common;

use anyhow::{ensure, Context, Result};
use common::*;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Summary {
    samples: u64,
    threads: Vec<Row>,
}

#[derive(Debug, Deserialize)]
struct Row {
    tid: u32,
    name: String,
    samples: u64,
    held_pct: f64,
    waiting_pct: Option<f64>,
    released_pct: f64,
    idle_pct: f64,
    unknown_pct: f64,
}

#[test]
fn spinners_among_sleepers_are_never_idle() {
    for_each_python(
        "spinners_among_sleepers_are_never_idle",
        "any CPython 3.9+ (free-threaded: with PYTHON_GIL=1)",
        |_| true,
        |py| {
            let rec = record_sample(py, "crowd.py", 200, 3.0)?;
            let target = &rec.target;
            let r = (|| -> Result<String> {
                let s: Summary = summary_json(&rec.trace)?;
                ensure!(s.samples > 0, "no samples");
                let mut said = Vec::new();
                for sp in target.ready.with_role("spinner") {
                    let row = s
                        .threads
                        .iter()
                        .find(|r| r.tid == sp.native_id)
                        .with_context(|| format!("spinner {} not recorded", sp.native_id))?;
                    ensure!(row.name == sp.name, "spinner named {:?}", row.name);
                    ensure!(row.samples > 0, "{}: no samples", row.name);
                    ensure!(
                        row.idle_pct < 1.0,
                        "{} idle {:.2} % (held {:.2}, waiting {:?}, released {:.2}, unknown {:.2})",
                        row.name,
                        row.idle_pct,
                        row.held_pct,
                        row.waiting_pct,
                        row.released_pct,
                        row.unknown_pct
                    );
                    said.push(format!(
                        "{}: {} samples, held {:.1} waiting {:.1} released {:.1} unknown {:.1} \
                         idle {:.2}",
                        row.name,
                        row.samples,
                        row.held_pct,
                        row.waiting_pct.unwrap_or(f64::NAN),
                        row.released_pct,
                        row.unknown_pct,
                        row.idle_pct
                    ));
                }
                Ok(said.join("; "))
            })();
            println!("spinners [{}]: {}", py.name, r?);
            Ok(())
        },
    );
}
