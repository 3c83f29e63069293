//! `gilscope record --mode exact|auto` end to end: exact GIL states merged with sampled stacks
//! into one trace (contention.py: the spinner waits exactly while the holder holds), the
//! fallback to sampling (auto) or the error (exact) on a Python without symbols, the probes
//! removed on every way out (checked in the text of the processes afterwards), exit 6 without
//! the perf privilege, and the cost and lost-records warnings.
//!
//! Needs root and the uprobe PMU like tests/exact.rs (SKIPPED otherwise, failing under CI=1).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};
use common::*;
use gilscope::model::timeline::Source;

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gilscope-record-exact-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn thread_pct(summary: &serde_json::Value, tid: u32, field: &str) -> Result<f64> {
    summary["threads"]
        .as_array()
        .context("threads")?
        .iter()
        .find(|t| t["tid"].as_u64() == Some(u64::from(tid)))
        .and_then(|t| t[field].as_f64())
        .with_context(|| format!("thread {tid} {field} in {summary}"))
}

/// pyenv 3.12 (symbols in libpython) and sid 3.14 (debug file), when present.
fn wanted(py: &Python) -> bool {
    match (py.minor, &py.chroot) {
        (12, None) => !py.stripped && !py.free_threaded,
        (14, Some(root)) => root.join("usr/lib/debug/.build-id").is_dir(),
        _ => false,
    }
}

#[test]
fn record_exact_contention_waiting_equals_holding() {
    if skip_unless_possible("record_exact_contention_waiting_equals_holding") {
        return;
    }
    let rows = std::sync::Mutex::new(Vec::new());
    for_each_python(
        "record_exact_contention_waiting_equals_holding",
        "pyenv 3.12 or sid 3.14 with debug files",
        wanted,
        |py| {
            let t = Target::start(py, "contention.py")?;
            let holder = t.ready.role("holder")?.native_id;
            let spinner = t.ready.role("spinner")?.native_id;
            let out = tmp(&format!("{}.gilscope", py.name));
            let o = Record::mode("exact", t.pid(), &out)
                .rate(200)
                .secs(2.5)
                .output()?;
            let stderr = String::from_utf8_lossy(&o.stderr);
            ensure!(o.status.success(), "record failed: {stderr}");
            ensure!(!stderr.contains("panicked"), "{stderr}");
            ensure!(stderr.contains("gilscope: mode: exact"), "{stderr}");
            let s = summary_json::<serde_json::Value>(&out)?;
            ensure!(s["mode"] == "exact", "summary mode {}", s["mode"]);
            let rp = gilscope::trace::replay(&out)?;
            ensure!(rp.metadata.mode == Source::Exact);
            let exact_runs = rp.timeline.sources.get("exact").copied().unwrap_or(0);
            ensure!(exact_runs > 0, "no exact runs: {:?}", rp.timeline.sources);
            let held = thread_pct(&s, holder, "held_pct")?;
            let waited = thread_pct(&s, spinner, "waiting_pct")?;
            // Stacks still come from sampling: the holder's held stack is its usleep line.
            let holder_thread = rp
                .timeline
                .thread_by_key(holder, 0)
                .or_else(|| rp.timeline.threads.iter().find(|th| th.tid == holder));
            let stacks = holder_thread.map_or(0, |th| th.stacks.len());
            // The same run's sampled view: sampled runs keep their sampled
            // state (they feed the stacks by state), so the holder's sampled
            // held share can be compared with the exact one.
            let (sampled_held_ns, sampled_ns) = holder_thread.map_or((0, 0), |th| {
                th.stacks
                    .iter()
                    .fold((0u64, 0u64), |(h, all), ((st, _, _), t)| {
                        (
                            h + if *st == gilscope::model::GilState::Held {
                                t.ns
                            } else {
                                0
                            },
                            all + t.ns,
                        )
                    })
            });
            ensure!(sampled_ns > 0, "no sampled time for the holder");
            let sampled_held = sampled_held_ns as f64 * 100.0 / sampled_ns as f64;
            rows.lock().unwrap().push(format!(
                "{:<16} holder held {held:.1}% (sampled {sampled_held:.1}%) | spinner waiting \
                 {waited:.1}% | {exact_runs} exact runs, holder stacks {stacks} | {}",
                py.name,
                stderr
                    .lines()
                    .find(|l| l.contains("GIL events"))
                    .unwrap_or("")
            ));
            ensure!(held > 60.0, "holder held only {held:.1}%");
            ensure!(
                (held - waited).abs() < 5.0,
                "spinner waiting {waited:.1}% vs holder held {held:.1}%"
            );
            ensure!(stacks > 0, "no sampled stacks for the holder");
            // Exact and sampled held % agree on the same run, within what sampling can tell:
            // each edge of a hold is placed within one sampling interval, two edges per cycle
            // of the workload (hold_us + gap_s from its ready line), at the rate the sampler
            // achieved (lower on a loaded machine); plus 1 point for the workload's own slack.
            let hz = s["achieved_hz"]
                .as_f64()
                .or_else(|| s["rate_hz"].as_f64())
                .context("no rate in the summary")?;
            let line: serde_json::Value = serde_json::from_str(&t.ready_line)?;
            let cycle_s = line["hold_us"].as_f64().context("hold_us")? / 1e6
                + line["gap_s"].as_f64().context("gap_s")?;
            let tol = 100.0 * 2.0 / (hz * cycle_s) + 1.0;
            ensure!(
                (held - sampled_held).abs() < tol,
                "exact held {held:.1}% vs sampled held {sampled_held:.1}% (±{tol:.1} at \
                 {hz:.0} Hz)"
            );
            Ok(())
        },
    );
    println!(
        "\nrecord --mode exact, contention.py:\n  {}",
        rows.lock().unwrap().join("\n  ")
    );
}

#[test]
fn auto_falls_back_and_exact_fails_without_symbols() {
    if skip_unless_possible("auto_falls_back_and_exact_fails_without_symbols") {
        return;
    }
    // Debian 12's own /usr/bin/python3.11 (stripped), when its -dbg is not installed.
    let host = Path::new("/usr/bin/python3.11");
    if !host.exists() || Path::new("/usr/share/doc/python3.11-dbg").exists() {
        skip(
            "auto_falls_back_and_exact_fails_without_symbols",
            "no stripped host python3.11 without its -dbg package",
        );
        return;
    }
    let mut cmd = Command::new(host);
    cmd.arg(samples_dir().join("contention.py"));
    let t = Target::spawn(cmd, "host python3.11 contention.py".into()).expect("start");

    let out = tmp("auto.gilscope");
    let o = Record::mode("auto", t.pid(), &out)
        .rate(200)
        .secs(1.0)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("gilscope: mode: sampling (auto: "))
        .unwrap_or_else(|| panic!("no fallback line: {stderr}"));
    assert!(line.contains("python3.11-dbg"), "{line}");
    let s = summary_json::<serde_json::Value>(&out).unwrap();
    assert_eq!(s["mode"], "sampled");

    let o = Record::mode("exact", t.pid(), &tmp("exact.gilscope"))
        .rate(200)
        .secs(1.0)
        .output()
        .unwrap();
    check_error(&o, 5, &["python3.11-dbg"]).unwrap();
    println!("auto: {line}");
}

// ------------------------------------------------------------- probes removed on every way out

/// The pyenv 3.12 build (plain symbols in libpython), if there is one.
fn pyenv_312() -> Option<&'static Python> {
    pythons()
        .list
        .iter()
        .find(|p| p.chroot.is_none() && !p.free_threaded && !p.stripped && p.minor == 12)
}

/// A private copy of `py`'s libpython (a file no other test probes: uprobes are set on a
/// file, in every process that maps it), for the samples to load with LD_PRELOAD.
fn private_libpython(py: &Python, tag: &str) -> Result<PathBuf> {
    let exe = Path::new(&py.argv[0]);
    let lib = exe
        .parent()
        .and_then(Path::parent)
        .map(|prefix| prefix.join("lib/libpython3.12.so.1.0"))
        .context("pyenv prefix")?;
    let dir = tmp(&format!("libpython-{tag}"));
    std::fs::create_dir_all(&dir)?;
    let copy = dir.join("libpython3.12.so.1.0");
    std::fs::copy(&lib, &copy).with_context(|| format!("copying {}", lib.display()))?;
    Ok(copy)
}

/// Where `pid`'s executable mappings of `file` differ from the file: (address, byte in the
/// target). Probes are int3 (0xCC) bytes written over the text; the process never writes its
/// own text, so any difference is a probe.
fn text_diffs(pid: u32, file: &Path) -> Result<Vec<(u64, u8)>> {
    use std::os::unix::fs::FileExt;
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
    let mem = std::fs::File::open(format!("/proc/{pid}/mem"))?;
    let f = std::fs::File::open(file)?;
    let want = file.to_string_lossy();
    let mut diffs = Vec::new();
    let mut mapped = false;
    for line in maps.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 6 || !cols[1].contains('x') || cols[5] != want {
            continue;
        }
        let (start, end) = cols[0].split_once('-').context("maps range")?;
        let start = u64::from_str_radix(start, 16)?;
        let end = u64::from_str_radix(end, 16)?;
        let offset = u64::from_str_radix(cols[2], 16)?;
        let len = (end - start).min(f.metadata()?.len().saturating_sub(offset)) as usize;
        let (mut a, mut b) = (vec![0u8; len], vec![0u8; len]);
        mem.read_exact_at(&mut a, start)?;
        f.read_exact_at(&mut b, offset)?;
        diffs.extend(
            a.iter()
                .zip(&b)
                .enumerate()
                .filter(|(_, (x, y))| x != y)
                .map(|(i, (x, _))| (start + i as u64, *x)),
        );
        mapped = true;
    }
    ensure!(mapped, "{} has no executable mapping of {want}", pid);
    Ok(diffs)
}

/// `gilscope record --mode exact` on contention.py (running on a private libpython), left by
/// each way out docs/cli.md promises removes the probes: SIGINT, SIGTERM, the target's exit
/// and an error (writing to /dev/full). While it records, the target's text has int3 bytes
/// and a bystander process mapping the same file has none (the probes are the target's own);
/// afterwards the target's text (when it is still alive) and the bystander's equal the file.
#[test]
fn probes_are_removed_on_every_way_out() {
    if skip_unless_possible("probes_are_removed_on_every_way_out") {
        return;
    }
    let Some(py) = pyenv_312() else {
        skip(
            "probes_are_removed_on_every_way_out",
            "no pyenv CPython 3.12",
        );
        return;
    };
    let r = (|| -> Result<Vec<String>> {
        let lib = private_libpython(py, "ways")?;
        let env = [("LD_PRELOAD", lib.to_str().context("path")?)];
        let mut rows = Vec::new();
        for way in ["SIGINT", "SIGTERM", "target exit", "error"] {
            let mut target = Target::start_with_env(py, "contention.py", &env)?;
            let bystander = Target::start_with_env(py, "contention.py", &env)?;
            let pid = target.pid();
            ensure!(
                text_diffs(pid, &lib)?.is_empty(),
                "{way}: the text differs from the file before any probe"
            );
            let out = if way == "error" {
                PathBuf::from("/dev/full")
            } else {
                tmp(&format!("ways-{}.trace", way.replace(' ', "-")))
            };
            let err_path = tmp(&format!("ways-{}.stderr", way.replace(' ', "-")));
            let mut rec = gilscope(&[
                "record",
                "--mode",
                "exact",
                "--pid",
                &pid.to_string(),
                "--rate",
                "200",
                "-o",
                &out.to_string_lossy(),
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&err_path)?)
            .spawn()?;
            let stderr = || std::fs::read_to_string(&err_path).unwrap_or_default();
            let mut patched = 0;
            if way != "error" {
                // Real signals that the probes are in place (int3 in the target's text) and
                // that recording has begun (the trace's header comes with the first sample: a
                // recording stopped before it fails, as it should).
                let deadline = std::time::Instant::now() + READY_TIMEOUT;
                loop {
                    let d = text_diffs(pid, &lib)?;
                    let sampled = std::fs::metadata(&out).is_ok_and(|m| m.len() > 0);
                    if !d.is_empty() && sampled {
                        ensure!(
                            d.iter().all(|&(_, b)| b == 0xCC),
                            "{way}: the text differs by other than int3: {d:x?}"
                        );
                        patched = d.len();
                        break;
                    }
                    if let Some(st) = rec.try_wait()? {
                        anyhow::bail!("{way}: gilscope exited {st} before probing: {}", stderr());
                    }
                    ensure!(
                        std::time::Instant::now() < deadline,
                        "{way}: no probe in the target's text within {}s: {}",
                        READY_TIMEOUT.as_secs(),
                        stderr()
                    );
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            }
            // The probes are the target's own (per-thread events): a bystander process
            // mapping the same file never gets one, even while gilscope records.
            let d = text_diffs(bystander.pid(), &lib)?;
            ensure!(
                d.is_empty(),
                "{way}: the bystander's text has probes while gilscope records another process: \
                 {d:x?}"
            );
            match way {
                // SAFETY: kill(2) on our own, not yet reaped, child.
                "SIGINT" => unsafe {
                    libc::kill(rec.id() as libc::pid_t, libc::SIGINT);
                },
                "SIGTERM" => unsafe {
                    libc::kill(rec.id() as libc::pid_t, libc::SIGTERM);
                },
                "target exit" => target.close_stdin(),
                _ => {}
            }
            let deadline = std::time::Instant::now() + GILSCOPE_TIMEOUT;
            let status = loop {
                if let Some(st) = rec.try_wait()? {
                    break st;
                }
                if std::time::Instant::now() > deadline {
                    let _ = rec.kill();
                    anyhow::bail!("{way}: gilscope did not exit: {}", stderr());
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            };
            let err = stderr();
            ensure!(!err.contains("panicked"), "{way}: gilscope panicked: {err}");
            ensure!(
                err.lines().any(|l| l.starts_with("gilscope: exact mode: ")),
                "{way}: no closing `gilscope: exact mode:` line (the probes were not opened?): \
                 {err}"
            );
            match way {
                "error" => ensure!(
                    status.code() == Some(1) && err.contains("No space left on device"),
                    "{way}: exit {status}, want 1 naming the full disk: {err}"
                ),
                "target exit" => ensure!(
                    status.success() && err.contains("target exited"),
                    "{way}: exit {status}: {err}"
                ),
                _ => ensure!(status.success(), "{way}: exit {status}: {err}"),
            }
            let mut left = Vec::new();
            if way != "target exit" {
                ensure!(target.try_exited().is_none(), "{way}: the target died");
                left.extend(text_diffs(pid, &lib)?);
            }
            left.extend(text_diffs(bystander.pid(), &lib)?);
            ensure!(
                left.is_empty(),
                "{way}: {} byte(s) still differ from the file after gilscope exited: {:x?}",
                left.len(),
                &left[..left.len().min(8)]
            );
            rows.push(format!(
                "{way}: {patched} int3 while probing, gilscope {status}, text clean after"
            ));
        }
        Ok(rows)
    })();
    match r {
        Ok(rows) => println!("probes removed:\n  {}", rows.join("\n  ")),
        Err(e) => panic!("{}: {e:#}", py.label()),
    }
}

/// Exact mode without the privilege for perf events (root with only CAP_SYS_PTRACE left, so
/// reading the target works): exit 6, naming what is missing.
#[test]
fn exact_mode_without_perf_privilege_exits_6() {
    if skip_unless_possible("exact_mode_without_perf_privilege_exits_6") {
        return;
    }
    let Some(py) = pyenv_312() else {
        skip(
            "exact_mode_without_perf_privilege_exits_6",
            "no pyenv CPython 3.12",
        );
        return;
    };
    let Some(setpriv) = ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        skip(
            "exact_mode_without_perf_privilege_exits_6",
            "no setpriv (util-linux)",
        );
        return;
    };
    let t = Target::start(py, "contention.py").unwrap_or_else(|e| panic!("{e:#}"));
    let out = tmp("noperf.trace");
    let mut cmd = Command::new(setpriv);
    cmd.args([
        "--bounding-set=-all,+sys_ptrace",
        "--inh-caps=-all",
        "--",
        gilscope_bin(),
        "record",
        "--mode",
        "exact",
        "--pid",
        &t.pid().to_string(),
        "--duration",
        "1",
        "-o",
        &out.to_string_lossy(),
    ]);
    let o = output_with_timeout(cmd, GILSCOPE_TIMEOUT).unwrap_or_else(|e| panic!("{e:#}"));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(o.status.code(), Some(6), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("gilscope: error: ")
            && [
                "CAP_SYS_ADMIN",
                "CAP_PERFMON",
                "root",
                "perf_event_paranoid"
            ]
            .iter()
            .any(|w| last.contains(w)),
        "the error does not say what privilege is missing: {stderr}"
    );
    assert!(!out.exists(), "a trace was written");
}

/// A workload switching the GIL hundreds of thousands of times a second (two threads calling
/// os.lseek, around which CPython drops and re-takes the GIL), recorded in exact mode at 1 Hz:
/// over 12 500 events/s, gilscope warns of the cost to the target; with the ring buffers
/// drained once a second they overflow (≈14 000 records each), and it reports the lost
/// records. Both on stderr and as warnings in the trace.
#[test]
fn exact_mode_warns_of_its_cost_and_lost_records() {
    if skip_unless_possible("exact_mode_warns_of_its_cost_and_lost_records") {
        return;
    }
    let Some(py) = pyenv_312() else {
        skip("exact_mode_warns", "no pyenv CPython 3.12");
        return;
    };
    const SRC: &str = r#"
import json, os, sys, threading
fd = os.open("/dev/null", os.O_RDONLY)
def work():
    s = os.lseek
    while True:
        s(fd, 0, 0)
for _ in range(2):
    threading.Thread(target=work, daemon=True).start()
sys.stdout.write(json.dumps({"pid": os.getpid()}) + "\n")
sys.stdout.flush()
os.read(0, 1)
os._exit(0)
"#;
    let r = (|| -> Result<String> {
        let lib = private_libpython(py, "warn")?;
        let mut cmd = py.command(&["-c", SRC]);
        cmd.env("LD_PRELOAD", &lib);
        let t = Target::spawn(cmd, format!("{} lseek switcher", py.name))?;
        let out = tmp("warn.trace");
        let o = output_with_timeout(
            gilscope(&[
                "record",
                "--mode",
                "exact",
                // The warnings are what is tested: no budget, or it would detach the probes
                // before any record is lost.
                "--max-overhead",
                "none",
                "--pid",
                &t.pid().to_string(),
                "--rate",
                "1",
                "--duration",
                "3",
                "-o",
                &out.to_string_lossy(),
            ]),
            GILSCOPE_TIMEOUT,
        )?;
        let stderr = String::from_utf8_lossy(&o.stderr);
        ensure!(o.status.success(), "record failed: {stderr}");
        // "gilscope: exact mode: N GIL events (…), M lost"
        let fin = stderr
            .lines()
            .find(|l| l.starts_with("gilscope: exact mode: ") && l.contains(" lost"))
            .with_context(|| format!("no closing exact-mode line: {stderr}"))?;
        let num = |s: &str| -> Option<u64> { s.trim().parse().ok() };
        let events = fin
            .strip_prefix("gilscope: exact mode: ")
            .and_then(|r| r.split_whitespace().next())
            .and_then(num)
            .with_context(|| format!("events in {fin:?}"))?;
        let lost = fin
            .rsplit(", ")
            .find(|p| p.contains(" lost"))
            .and_then(|p| p.split_whitespace().next())
            .and_then(num)
            .with_context(|| format!("lost in {fin:?}"))?;
        ensure!(
            events + lost > 3 * 12_500,
            "the workload made only {events} + {lost} lost events in 3 s: {stderr}"
        );
        ensure!(lost > 0, "no record lost at 1 Hz draining: {fin}");
        ensure!(
            stderr.contains("gilscope: warning: exact mode: ")
                && stderr.contains("GIL events/s cost the target"),
            "no cost warning: {stderr}"
        );
        ensure!(
            stderr.contains("probe records lost"),
            "no lost-records warning: {stderr}"
        );
        let s = summary_json::<serde_json::Value>(&out)?;
        let warnings: Vec<&str> = s["warnings"]
            .as_array()
            .map(|w| w.iter().filter_map(|w| w.as_str()).collect())
            .unwrap_or_default();
        ensure!(
            warnings.iter().any(|w| w.contains("GIL events/s"))
                && warnings.iter().any(|w| w.contains("lost")),
            "the trace's warnings lack the cost or the lost records: {warnings:?}"
        );
        Ok(fin.to_string())
    })();
    match r {
        Ok(line) => println!("warnings: {line}"),
        Err(e) => panic!("{}: {e:#}", py.label()),
    }
}
