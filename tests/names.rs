//! Thread names on real workloads whose pthread idents are reused at once
//! (samples/thread_names.py): one short thread after another, a thread pool recycled round
//! after round, a ThreadingHTTPServer under a bounded client loop. Every thread of the
//! workload logs its own TID, start time and `threading` name; every thread row of
//! `gilscope summary --json` must carry the name its thread logged (matched by TID and start
//! time, so a reused TID cannot match the wrong thread), on every interpreter of the manifest.
//!
//! Run with `cargo test --test names -- --nocapture` to see the counts per interpreter.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use anyhow::{bail, ensure, Context, Result};
use common::*;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Log {
    mode: String,
    pid: u32,
    threads: Vec<LoggedThread>,
}

#[derive(Debug, Deserialize)]
struct LoggedThread {
    native_id: u32,
    start_ticks: u64,
    name: String,
}

#[derive(Debug, Deserialize)]
struct Summary {
    threads: Vec<Row>,
}

#[derive(Debug, Deserialize)]
struct Row {
    tid: u32,
    start_ticks: u64,
    name: String,
    os_name: String,
}

/// Records samples/thread_names.py MODE whole, from before its work starts to its exit
/// ([`record_gated`]); returns the workload's log and the summary's thread rows.
fn record_workload(py: &Python, mode: &str, dir: &std::path::Path) -> Result<(Log, Summary)> {
    let script = py.script_path("thread_names.py")?;
    let trace = dir.join(format!("{mode}.trace"));
    let t = trace.to_string_lossy().into_owned();
    let run = record_gated(
        py.command(&[&script, mode]),
        &format!("{} thread_names.py {mode}", py.name),
        ReadyWhen::StdoutLine,
        &[
            "--mode",
            "sampling",
            "-o",
            &t,
            "--rate",
            "500",
            "--duration",
            "60",
        ],
    )?;
    let ready_line = run.ready_line.as_deref().unwrap_or_default();
    let ready: Ready = serde_json::from_str(ready_line)
        .with_context(|| format!("parsing the ready line {ready_line:?}"))?;
    let log: Log = run.result()?;
    ensure!(
        log.pid == ready.pid && log.pid == run.pid && log.mode == mode,
        "log of another run"
    );
    let out = output_with_timeout(gilscope(&["summary", &t, "--json"]), GILSCOPE_TIMEOUT)?;
    ensure!(
        out.status.success(),
        "gilscope summary failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Summary =
        serde_json::from_slice(&out.stdout).context("parsing gilscope summary --json")?;
    check_thread_limits(&t, summary.threads.len())?;
    Ok((log, summary))
}

/// `summary` lists the 20 most active threads by default and says how many it left out;
/// `--all` lists all, `--threads N` N (in --json too, with `threads_left_out`). `all` is
/// how many there are.
fn check_thread_limits(trace: &str, all: usize) -> Result<()> {
    let text = |args: &[&str]| -> Result<String> {
        let mut a = vec!["summary", trace];
        a.extend(args);
        let out = output_with_timeout(gilscope(&a), GILSCOPE_TIMEOUT)?;
        ensure!(out.status.success(), "gilscope {a:?} failed");
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    // Thread rows: the lines between the THREADS header and the next blank line.
    let rows = |s: &str| -> usize {
        s.lines()
            .skip_while(|l| !l.starts_with("Threads ("))
            .skip(2)
            .take_while(|l| !l.is_empty())
            .filter(|l| !l.trim_start().starts_with('…') && !l.trim_start().starts_with('('))
            .count()
    };
    let default = text(&[])?;
    let left_out = format!("… {} more thread", all.saturating_sub(20));
    if all > 20 {
        ensure!(
            rows(&default) == 20 && default.contains(&left_out),
            "default summary: {} rows, want 20 and {left_out:?}:\n{default}",
            rows(&default)
        );
    } else {
        ensure!(
            rows(&default) == all && !default.contains("left out"),
            "{default}"
        );
    }
    let every = text(&["--all"])?;
    ensure!(
        rows(&every) == all && !every.contains("left out"),
        "--all: {} rows of {all}",
        rows(&every)
    );
    let five = text(&["--threads", "5"])?;
    ensure!(
        rows(&five) == all.min(5),
        "--threads 5: {} rows",
        rows(&five)
    );
    let json: serde_json::Value = serde_json::from_str(&text(&["--threads", "5", "--json"])?)?;
    ensure!(
        json["threads"].as_array().map(Vec::len) == Some(all.min(5))
            && json["threads_left_out"].as_u64() == Some(all.saturating_sub(5) as u64),
        "--threads 5 --json: {} threads, threads_left_out {}",
        json["threads"].as_array().map_or(0, Vec::len),
        json["threads_left_out"]
    );
    Ok(())
}

/// Every row is a logged thread and carries the name it logged. Rows that carry no
/// `threading` name at all (the OS name: a thread sampled only before `threading` registered
/// it) are counted, and must stay rare; no row may carry another thread's name. At least
/// `min_rows` rows must come from the workload (else the check says nothing).
fn check_names(log: &Log, s: &Summary, min_rows: usize) -> Result<String> {
    let mut logged: BTreeMap<(u32, u64), BTreeSet<&str>> = BTreeMap::new();
    for t in &log.threads {
        logged
            .entry((t.native_id, t.start_ticks))
            .or_default()
            .insert(t.name.as_str());
    }
    let mut wrong = Vec::new();
    let mut unnamed = Vec::new();
    let mut matched = 0;
    for r in &s.threads {
        let Some(names) = logged.get(&(r.tid, r.start_ticks)) else {
            bail!(
                "row tid {} start {} ({:?}) is no thread the workload logged",
                r.tid,
                r.start_ticks,
                r.name
            );
        };
        matched += 1;
        if names.contains(r.name.as_str()) {
            continue;
        }
        if r.name == r.os_name {
            unnamed.push(format!("{} {:?}", r.tid, r.name));
        } else {
            wrong.push(format!("{} {:?} (logged {:?})", r.tid, r.name, names));
        }
    }
    ensure!(
        wrong.is_empty(),
        "{} of {} rows carry another thread's name: {}",
        wrong.len(),
        s.threads.len(),
        wrong.join(", ")
    );
    ensure!(
        unnamed.len() * 20 <= matched,
        "{} of {matched} rows have no threading name: {}",
        unnamed.len(),
        unnamed.join(", ")
    );
    ensure!(
        matched >= min_rows,
        "only {matched} of {} logged threads were recorded (want {min_rows})",
        logged.len()
    );
    Ok(format!(
        "{}: {matched} rows of {} logged threads, 0 misnamed, {} without a threading name",
        log.mode,
        logged.len(),
        unnamed.len()
    ))
}

fn scratch(test: &str, py: &Python) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "gilscope-names-{}-{test}-{}",
        std::process::id(),
        py.name
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn run(test: &str, mode: &str, min_rows: usize) {
    for_each_python(
        test,
        "any CPython 3.9+",
        |_| true,
        |py| {
            let dir = scratch(test, py)?;
            let r = record_workload(py, mode, &dir)
                .and_then(|(log, s)| check_names(&log, &s, min_rows));
            let _ = std::fs::remove_dir_all(&dir);
            println!("{test} [{}]: {}", py.name, r?);
            Ok(())
        },
    );
}

/// job-0 … job-99, 20 ms each, one after another: each new thread gets the ident (and the
/// stack) of the one before. Each lives 20 ms at 500 Hz: most are recorded.
#[test]
fn sequential_short_threads() {
    run("sequential_short_threads", "sequential", 30);
}

/// 20 rounds of a 4-worker ThreadPoolExecutor: every round's workers reuse the idents of the
/// last round's.
#[test]
fn thread_pool_recycling_workers() {
    run("thread_pool_recycling_workers", "pool", 20);
}

/// A ThreadingHTTPServer: one new thread per request, 150 requests of ~20 ms.
#[test]
fn threading_http_server() {
    run("threading_http_server", "http", 30);
}
