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
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

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

/// A process (group) killed on drop.
struct Proc {
    child: Child,
    what: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group this test created for the child.
        unsafe {
            libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Lines of `r`, on a channel.
fn lines(r: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn next_line(rx: &mpsc::Receiver<String>, until: Instant, what: &str) -> Result<String> {
    let left = until.saturating_duration_since(Instant::now());
    rx.recv_timeout(left)
        .with_context(|| format!("no {what} within the time allowed"))
}

/// Records samples/thread_names.py MODE from before its work starts to its exit; returns the
/// workload's log and the summary's thread rows.
fn record_workload(py: &Python, mode: &str, dir: &std::path::Path) -> Result<(Log, Summary)> {
    let script = py.script_path("thread_names.py")?;
    let mut cmd = py.command(&[&script, mode]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let stdout = lines(child.stdout.take().context("stdout")?);
    let mut sample_err = child.stderr.take().context("stderr")?;
    let sample = Proc {
        child,
        what: format!("thread_names.py {mode}"),
    };
    let deadline = Instant::now() + READY_TIMEOUT;
    let ready: Ready = serde_json::from_str(&next_line(&stdout, deadline, "ready line")?)
        .context("parsing the ready line")?;

    let trace = dir.join(format!("{mode}.trace"));
    let t = trace.to_string_lossy().into_owned();
    let pid = ready.pid.to_string();
    let mut rec = gilscope(&[
        "record",
        "--mode",
        "sampling",
        "--pid",
        &pid,
        "-o",
        &t,
        "--rate",
        "500",
        "--duration",
        "60",
    ]);
    rec.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut rchild = rec.spawn().context("spawning gilscope record")?;
    let rec_err = lines(rchild.stderr.take().context("stderr")?);
    let recorder = Proc {
        child: rchild,
        what: "gilscope record".into(),
    };
    // Go once the recorder says it is recording (its first sample follows at once).
    let mut rec_text = String::new();
    loop {
        let l = next_line(
            &rec_err,
            Instant::now() + GILSCOPE_TIMEOUT,
            "recording line",
        )
        .with_context(|| format!("gilscope record stderr so far:\n{rec_text}"))?;
        rec_text.push_str(&l);
        rec_text.push('\n');
        if l.starts_with("gilscope: recording process") {
            break;
        }
    }
    stdin
        .write_all(b"go\n")
        .context("telling the sample to go")?;
    stdin.flush()?;
    let log_line =
        next_line(&stdout, Instant::now() + GILSCOPE_TIMEOUT, "log line").map_err(|e| {
            let mut err = String::new();
            let _ = sample_err.read_to_string(&mut err);
            e.context(format!("{} stderr:\n{err}", sample.what))
        })?;
    let log: Log = serde_json::from_str(&log_line).context("parsing the log line")?;
    ensure!(
        log.pid == ready.pid && log.mode == mode,
        "log of another run"
    );
    // The recorder stops when the target exits.
    let deadline = Instant::now() + GILSCOPE_TIMEOUT;
    let mut recorder = recorder;
    let status = loop {
        if let Some(s) = recorder.child.try_wait()? {
            break s;
        }
        if Instant::now() > deadline {
            bail!("{} did not stop after the target exited", recorder.what);
        }
        thread::sleep(Duration::from_millis(10));
    };
    while let Ok(l) = rec_err.recv_timeout(Duration::from_millis(200)) {
        rec_text.push_str(&l);
        rec_text.push('\n');
    }
    ensure!(
        status.success(),
        "gilscope record exited {status}:\n{rec_text}"
    );
    drop(sample);
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
