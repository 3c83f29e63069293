//! Exact mode touches only its target (issue 17.2): while `gilscope record --mode exact`
//! records one process, a bystander process of the same CPython build — two threads handing
//! the GIL back and forth, counting loop turns — is not trapped at all.
//!
//! Hard checks (no timing): gilscope reports probe hits by PID and the bystander's PID has
//! none; every probe address in the bystander's text reads its original byte (not int3,
//! 0xCC) from /proc/BYSTANDER/mem while gilscope is attached, where the target's reads 0xCC.
//! The bystander's loop rate alone vs. with gilscope attached (interleaved rounds) is printed,
//! not asserted (docs/benchmarks.md has the figures). With `GILSCOPE_BYSTANDER_BEFORE=PATH`
//! another gilscope binary (e.g. one with system-wide probes) is measured the same way for
//! comparison, also without assertions.
//!
//! Needs root and the uprobe PMU (SKIPPED otherwise, failing under CI=1).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use common::{serial, skip_unless_possible, Python, Target};
use gilscope::exact::{resolve_gil_probes, ProbeKind, ProbePlan};
use gilscope::reader::{Reader, ReaderOptions};

const INT3: u8 = 0xcc;

// One test at a time (`serial()`): opening and closing uprobe events is serialised in the
// kernel (each close waits for a grace period), so two recordings at once slow each other's
// probing.

/// Two threads calling `os.lseek` in a loop (CPython drops and re-takes the GIL around it,
/// so they hand the GIL to each other at every turn); the main thread answers each line on
/// stdin with `TURNS MONOTONIC_SECONDS`.
const BYSTANDER: &str = r#"
import os, sys, threading, time
fd = os.open("/dev/null", os.O_RDONLY)
count = [0, 0]
def work(i):
    s = os.lseek
    while True:
        s(fd, 0, 0)
        count[i] += 1
for i in range(2):
    threading.Thread(target=work, args=(i,), daemon=True).start()
print(os.getpid(), flush=True)
for line in sys.stdin:
    print(count[0] + count[1], time.monotonic(), flush=True)
"#;

struct Bystander {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Bystander {
    fn start(py: &Python) -> Result<Bystander> {
        let mut child = py
            .command(&["-c", BYSTANDER])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take().context("stdin")?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let first = lines
            .recv_timeout(Duration::from_secs(30))
            .context("bystander did not start")?;
        ensure!(
            first.trim() == child.id().to_string(),
            "bystander said {first:?}"
        );
        Ok(Bystander {
            child,
            stdin,
            lines,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// (loop turns so far, its monotonic clock).
    fn turns(&mut self) -> Result<(u64, f64)> {
        writeln!(self.stdin)?;
        let l = self
            .lines
            .recv_timeout(Duration::from_secs(10))
            .context("bystander did not answer")?;
        let (n, t) = l.split_once(' ').context("answer")?;
        Ok((n.parse()?, t.parse()?))
    }

    /// Loop turns per second over `window`.
    fn rate(&mut self, window: Duration) -> Result<f64> {
        let (n0, t0) = self.turns()?;
        std::thread::sleep(window);
        let (n1, t1) = self.turns()?;
        Ok((n1 - n0) as f64 / (t1 - t0))
    }
}

impl Drop for Bystander {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address in `pid` of the byte at `file_offset` of its mapping of `binary`.
fn mapped_address(pid: u32, binary: &str, file_offset: u64) -> Result<u64> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
    for l in maps.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 6 || f[5..].join(" ") != binary {
            continue;
        }
        let (a, b) = f[0].split_once('-').context("maps range")?;
        let (start, end) = (u64::from_str_radix(a, 16)?, u64::from_str_radix(b, 16)?);
        let off = u64::from_str_radix(f[2], 16)?;
        if file_offset >= off && file_offset < off + (end - start) {
            return Ok(start + file_offset - off);
        }
    }
    bail!("{binary}+{file_offset:#x} is not mapped in {pid}")
}

fn byte_at(pid: u32, addr: u64) -> Result<u8> {
    let f = std::fs::File::open(format!("/proc/{pid}/mem"))?;
    let mut b = [0u8];
    f.read_exact_at(&mut b, addr)?;
    Ok(b[0])
}

/// The bytes at every probe point of `plan` in `pid`'s text.
fn probe_bytes(pid: u32, binary: &str, plan: &ProbePlan) -> Result<Vec<(String, u8)>> {
    plan.points
        .iter()
        .map(|p| {
            let addr = mapped_address(pid, binary, p.file_offset)?;
            Ok((
                format!("{}+{:#x}", p.function, p.file_offset),
                byte_at(pid, addr)?,
            ))
        })
        .collect()
}

/// What one attached round saw.
struct Round {
    alone: f64,
    with: f64,
    bystander_bytes: Vec<(String, u8)>,
    target_take_gil: u8,
    stderr: String,
}

/// One round: the bystander's rate alone for `window`, then `gilscope record --mode MODE` of
/// `target` (with `bin`, plus `extra` arguments) and, once it says which mode it is in, the
/// rate with it and the probe bytes in both processes.
#[allow(clippy::too_many_arguments)]
fn round(
    bin: &str,
    mode: &str,
    extra: &[&str],
    by: &mut Bystander,
    target: u32,
    binary: &str,
    plan: &ProbePlan,
    window: Duration,
    out: &std::path::Path,
) -> Result<Round> {
    let alone = by.rate(window)?;
    let secs = format!("{:.1}", window.as_secs_f64() + 2.0);
    let mut g = Command::new(bin)
        .args(["record", "--pid", &target.to_string(), "--mode", mode])
        .args(["--rate", "200", "--duration", &secs])
        .args(extra)
        .arg("-o")
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = g.stderr.take().context("stderr")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let mut log = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let l = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .map_err(|_| anyhow!("gilscope never said `mode: {mode}`: {}", log.join("\n")))?;
        let exact = l.contains(&format!("gilscope: mode: {mode}"));
        log.push(l);
        if exact {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let target_take = plan
        .points_of(ProbeKind::TakeEnter)
        .next()
        .context("no take_gil point")?;
    let target_take_gil = byte_at(
        target,
        mapped_address(target, binary, target_take.file_offset)?,
    )?;
    let bystander_bytes = probe_bytes(by.pid(), binary, plan)?;
    let with = by.rate(window)?;
    let status = g.wait()?;
    log.extend(rx.iter());
    let stderr = log.join("\n");
    ensure!(status.success(), "gilscope record failed: {stderr}");
    Ok(Round {
        alone,
        with,
        bystander_bytes,
        target_take_gil,
        stderr,
    })
}

/// `{pid: n, ...}` from gilscope's "hits by pid" summary.
fn hits_by_pid(stderr: &str) -> Result<Vec<(u32, u64)>> {
    let m = stderr
        .split("hits by pid: {")
        .nth(1)
        .and_then(|r| r.split('}').next())
        .with_context(|| format!("no `hits by pid` in: {stderr}"))?;
    m.split(", ")
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (a, b) = p.split_once(": ").context("pid: n")?;
            Ok((a.parse()?, b.parse()?))
        })
        .collect()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Alone/with rates over `rounds` interleaved rounds with `bin`: (median alone, median with,
/// median of the per-round ratios).
#[allow(clippy::too_many_arguments)]
fn measure(
    bin: &str,
    mode: &str,
    extra: &[&str],
    rounds: usize,
    by: &mut Bystander,
    target: u32,
    binary: &str,
    plan: &ProbePlan,
    check: bool,
) -> Result<(f64, f64, f64, String)> {
    let out = std::env::temp_dir().join(format!("gilscope-confined-{}.trace", std::process::id()));
    let (mut alone, mut with, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    let mut last = String::new();
    for _ in 0..rounds {
        let r = round(
            bin,
            mode,
            extra,
            by,
            target,
            binary,
            plan,
            Duration::from_secs(1),
            &out,
        )?;
        if check {
            ensure!(
                r.target_take_gil == INT3,
                "the target's take_gil is not patched ({:#04x}) while gilscope is attached: \
                 the check below would prove nothing",
                r.target_take_gil
            );
            for (what, b) in &r.bystander_bytes {
                ensure!(
                    *b != INT3,
                    "the bystander's {what} reads int3 while gilscope records another process"
                );
            }
            let hits = hits_by_pid(&r.stderr)?;
            ensure!(
                hits.iter().all(|&(p, _)| p == target),
                "probe hits outside the target {target}: {hits:?}"
            );
            ensure!(
                !hits.iter().any(|&(p, _)| p == by.pid()),
                "bystander hits: {hits:?}"
            );
            ensure!(
                hits.iter().any(|&(p, n)| p == target && n > 0),
                "no hits in the target itself: {hits:?}\n{}",
                r.stderr
            );
            let events = r
                .stderr
                .lines()
                .find(|l| l.contains(" GIL events of process"))
                .unwrap_or("")
                .to_string();
            check_counts_add_up(&events)?;
            last = events;
        }
        ratio.push(r.with / r.alone);
        alone.push(r.alone);
        with.push(r.with);
    }
    let _ = std::fs::remove_file(&out);
    Ok((
        median(&mut alone),
        median(&mut with),
        median(&mut ratio),
        last,
    ))
}

/// `N GIL events of process P (a take_gil entries, b take_gil returns, c drop_gil)`: a+b+c = N.
fn check_counts_add_up(line: &str) -> Result<()> {
    let num = |before: &str| -> Result<u64> {
        let head = line
            .split(before)
            .next()
            .with_context(|| format!("{before:?} in {line:?}"))?;
        ensure!(head.len() < line.len(), "{before:?} not in {line:?}");
        head.rsplit(|c: char| !c.is_ascii_digit())
            .find(|s| !s.is_empty())
            .context("number")?
            .parse()
            .map_err(Into::into)
    };
    let total = num(" GIL events")?;
    let parts = num(" take_gil entries")? + num(" take_gil returns")? + num(" drop_gil)")?;
    ensure!(total == parts, "the counts do not add up: {line}");
    Ok(())
}

/// A pyenv build with plain symbols (probe addresses straight from the file).
fn python() -> Option<&'static Python> {
    common::pythons()
        .list
        .iter()
        .filter(|p| p.chroot.is_none() && !p.free_threaded && !p.stripped && p.minor >= 11)
        .max_by_key(|p| p.minor)
}

#[test]
fn bystander_of_the_same_build_is_untouched() {
    if skip_unless_possible("bystander_of_the_same_build_is_untouched") {
        return;
    }
    let Some(py) = python() else {
        println!("bystander_of_the_same_build_is_untouched: SKIPPED: no pyenv CPython 3.11+");
        return;
    };
    let _serial = serial();
    let result = (|| -> Result<()> {
        let target = Target::start(py, "contention.py")?;
        let mut by = Bystander::start(py)?;
        let reader = Reader::attach(
            target.pid(),
            ReaderOptions {
                stacks: false,
                thread_names: false,
                ..Default::default()
            },
        )?;
        let binary = reader.python().binary.clone();
        let layout = reader.layout();
        let plan = resolve_gil_probes(target.pid(), &binary, layout.minor, layout.free_threaded)
            .map_err(|r| anyhow!("{r}"))?;
        drop(reader);
        // Control: before anything is attached no probe byte is int3 in either process.
        for pid in [target.pid(), by.pid()] {
            for (what, b) in probe_bytes(pid, &binary, &plan)? {
                ensure!(b != INT3, "{what} in {pid} reads int3 before gilscope runs");
            }
        }
        // Both arms at the same rate and without a budget, so that gilscope takes the same
        // CPU in both: sampling is the control for what gilscope's own CPU does to the
        // bystander on this 2-core machine; exact adds only the probes.
        let none = ["--max-overhead", "none"];
        let (s_alone, s_with, s_ratio, _) = measure(
            common::gilscope_bin(),
            "sampling",
            &none,
            3,
            &mut by,
            target.pid(),
            &binary,
            &plan,
            false,
        )?;
        let (alone, with, ratio, events) = measure(
            common::gilscope_bin(),
            "exact",
            &none,
            3,
            &mut by,
            target.pid(),
            &binary,
            &plan,
            true,
        )?;
        println!(
            "\nbystander ({}, 2 threads handing the GIL over at every os.lseek): alone {alone:.0} \
             turns/s, while gilscope records another process in exact mode {with:.0} turns/s \
             (median ratio {ratio:.3}, 3 interleaved rounds of 1 s); control, gilscope in \
             sampling mode: alone {s_alone:.0}, with {s_with:.0} (median ratio {s_ratio:.3})\n  \
             {events}",
            py.label()
        );
        if let Ok(before) = std::env::var("GILSCOPE_BYSTANDER_BEFORE") {
            let (alone, with, ratio, _) = measure(
                &before,
                "exact",
                &[],
                3,
                &mut by,
                target.pid(),
                &binary,
                &plan,
                false,
            )?;
            println!(
                "  with {before}: alone {alone:.0} turns/s, with {with:.0} turns/s (median ratio \
                 {ratio:.3})"
            );
        }
        Ok(())
    })();
    if let Err(e) = result {
        panic!(
            "bystander_of_the_same_build_is_untouched on {}: {e:#}",
            py.label()
        );
    }
}

/// Threads started one after another while gilscope records (6 threads, each releasing the
/// GIL in `time.sleep(0.001)` for 400 ms, 100 ms apart: a few thousand events/s, so that a
/// debug build of gilscope keeps its sampling rate on a loaded machine). A thread is probed
/// once it has been seen for 100 ms (`ProbeOptions::min_age_ns`).
const SEQUENTIAL: &str = r#"
import json, os, sys, threading, time
fd = os.open("/dev/null", os.O_RDONLY)
print(os.getpid(), flush=True)
sys.stdin.readline()
ok = 0
def work():
    global ok
    end = time.monotonic() + 0.4
    while time.monotonic() < end:
        time.sleep(0.001)
    ok += 1
for i in range(6):
    t = threading.Thread(target=work, name=f"job-{i}")
    t.start()
    t.join()
    time.sleep(0.1)
print(f"done {ok}", flush=True)
time.sleep(60)
"#;

#[test]
fn threads_started_later_are_probed_and_closed_after_exit() {
    if skip_unless_possible("threads_started_later_are_probed_and_closed_after_exit") {
        return;
    }
    let Some(py) = python() else {
        println!("threads_started_later…: SKIPPED: no pyenv CPython 3.11+");
        return;
    };
    let _serial = serial();
    let result = (|| -> Result<()> {
        let mut child = py
            .command(&["-c", SEQUENTIAL])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let pid = child.id();
        let mut stdin = child.stdin.take().context("stdin")?;
        let mut stdout = BufReader::new(child.stdout.take().context("stdout")?);
        let mut first = String::new();
        stdout.read_line(&mut first)?;
        ensure!(first.trim() == pid.to_string(), "target said {first:?}");
        struct Kill(Child);
        impl Drop for Kill {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let _child = Kill(child);
        let out = std::env::temp_dir().join(format!("gilscope-seq-{}.trace", std::process::id()));
        let mut g = Command::new(common::gilscope_bin())
            .args(["record", "--pid", &pid.to_string(), "--mode", "exact"])
            // Without a budget: ~3 000 GIL events/s would cost more than 1 % of a CPU and
            // detach the probes (tests/exact_budget.rs), and this test is about probing.
            .args([
                "--rate",
                "200",
                "--duration",
                "5",
                "--max-overhead",
                "none",
                "-o",
            ])
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = g.stderr.take().context("stderr")?;
        let lines: Vec<String> = {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for l in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                    let _ = tx.send(l);
                }
            });
            let first = rx
                .recv_timeout(Duration::from_secs(30))
                .context("gilscope said nothing")?;
            let mut v = vec![first];
            while !v.iter().any(|l| l.contains("gilscope: mode:")) {
                v.push(rx.recv_timeout(Duration::from_secs(30))?);
            }
            writeln!(stdin)?;
            ensure!(g.wait()?.success(), "gilscope failed");
            v.extend(rx.iter());
            v
        };
        let stderr = lines.join("\n");
        ensure!(stderr.contains("gilscope: mode: exact"), "{stderr}");
        let line = lines
            .iter()
            .find(|l| l.contains(" GIL events of process"))
            .with_context(|| format!("no summary: {stderr}"))?;
        check_counts_add_up(line)?;
        let num_before = |what: &str| -> Result<u64> {
            let head = line.split(what).next().context("field")?;
            Ok(head
                .rsplit(|c: char| !c.is_ascii_digit())
                .find(|s| !s.is_empty())
                .context("number")?
                .parse()?)
        };
        let probed = num_before(" threads probed")?;
        let closed = num_before(" closed after exit")?;
        println!("\nsequential threads: {line}");
        // The main thread (probed at attach) and 6 threads of 400 ms each, started after the
        // attach, each seen by ~80 samples. (On a loaded machine a thread may be missed:
        // opening waits behind the kernel's grace periods of the previous thread's close.)
        ensure!(probed >= 4, "only {probed} threads probed: {line}");
        ensure!(
            closed >= 2,
            "only {closed} threads closed after exit: {line}"
        );
        let hits = hits_by_pid(&stderr)?;
        ensure!(hits.iter().all(|&(p, _)| p == pid), "{hits:?}");
        // Every thread start succeeded (no clone() broken by the probes).
        let mut done = String::new();
        stdout.read_line(&mut done)?;
        ensure!(done.trim() == "done 6", "the target said {done:?}");
        let rp = gilscope::trace::replay(&out)?;
        let exact = rp.timeline.sources.get("exact").copied().unwrap_or(0);
        ensure!(exact > 0, "no exact runs");
        let _ = std::fs::remove_file(&out);
        Ok(())
    })();
    if let Err(e) = result {
        panic!("threads_started_later… on {}: {e:#}", py.label());
    }
}
