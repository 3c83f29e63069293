//! `gilscope dump --json` against real CPython processes whose state is known: the samples in
//! `samples/` describe their ground truth in their ready line (see samples/sample_support.py).
//! Each test runs on every applicable interpreter of the manifest (tests/common/mod.rs).

mod common;

use std::collections::HashMap;
use std::thread;
use std::time::Duration;

use anyhow::{anyhow, ensure, Context, Result};
use common::*;
use gilscope::model::{GilState, Snapshot};

/// Attach the snapshot (one line per thread) to a failure.
fn with_snapshot<T>(snap: &Snapshot, r: Result<T>) -> Result<T> {
    r.with_context(|| format!("snapshot:\n{}", describe(snap)))
}

// ------------------------------------------------------------------------ samples/threads.py

/// samples/threads.py: the holder holds the main GIL (off CPU); nobody else holds it; every
/// thread is found with its `threading` name, in interpreter 0, with its innermost function
/// (and line where the sample knows it).
#[test]
fn threads_gil_holder_and_names() {
    for_each_python(
        "threads_gil_holder_and_names",
        "any CPython 3.9+",
        |_| true,
        |py| {
            let target = Target::start_with_env(py, "threads.py", &gil_env(py))?;
            let snap = dump(target.pid())?;
            with_snapshot(&snap, check_threads_sample(&snap, &target.ready))
        },
    );
}

/// `gilscope dump ARGS --pid PID` (text or JSON, per ARGS); must exit 0.
fn dump_with(pid: u32, args: &[&str]) -> Result<String> {
    let pid_s = pid.to_string();
    let mut all = vec!["dump", "--pid", &pid_s];
    all.extend_from_slice(args);
    let out = output_with_timeout(gilscope(&all), GILSCOPE_TIMEOUT)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success() && !stderr.contains("panicked"),
        "gilscope {} failed ({}): {stderr}",
        all.join(" "),
        out.status
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// samples/threads.py read by `dump` in its text form (docs/cli.md): the process line, the
/// interpreter held by the holder, one line per thread with its name, the holder's "HOLDS the
/// GIL" and its innermost frame at the sample's line. With `--no-stacks`: the same states and no
/// frame at all (JSON: no frames). With `--blocking`: the same truths (JSON, in full), and the
/// target runs on afterwards (not left stopped).
#[test]
fn threads_text_no_stacks_and_blocking() {
    for_each_python(
        "threads_text_no_stacks_and_blocking",
        "any CPython 3.9+",
        |_| true,
        |py| {
            let target = Target::start_with_env(py, "threads.py", &gil_env(py))?;
            let ready = &target.ready;
            let pid = target.pid();
            let holder = ready.role("holder")?;
            let text = dump_with(pid, &[])?;
            let r = (|| -> Result<()> {
                let mut lines = text.lines();
                let first = lines.next().unwrap_or_default();
                let build = if ready.free_threaded {
                    " free-threaded"
                } else {
                    ""
                };
                ensure!(
                    first.starts_with(&format!("Process {pid}: Python {}{build} (", ready.version)),
                    "first line {first:?}"
                );
                let held_by = format!(
                    "Interpreter 0 (main, own GIL): held by {} \"{}\"",
                    holder.native_id, holder.name
                );
                ensure!(text.contains(&held_by), "no line {held_by:?}");
                for rt in &ready.threads {
                    let head = format!("  Thread {} \"{}\"", rt.native_id, rt.name);
                    let i = text
                        .lines()
                        .position(|l| l.starts_with(&head))
                        .with_context(|| format!("no line starting {head:?}"))?;
                    let line = text.lines().nth(i).unwrap_or_default();
                    ensure!(
                        line.contains("HOLDS the GIL") == (rt.native_id == holder.native_id),
                        "{line:?}: HOLDS the GIL on the holder and no one else"
                    );
                    if let (Some(f), true) = (&rt.function, rt.native_id == holder.native_id) {
                        let frame = text.lines().nth(i + 1).unwrap_or_default().trim();
                        let want = format!("{f} (");
                        ensure!(
                            frame.starts_with(&want),
                            "holder's innermost frame {frame:?}, want {want}…"
                        );
                        if let Some(l) = rt.line {
                            ensure!(frame.ends_with(&format!(":{l})")), "{frame:?}: line {l}");
                        }
                    }
                }
                Ok(())
            })();
            r.with_context(|| format!("dump text:\n{text}"))?;

            let bare = dump_with(pid, &["--no-stacks"])?;
            let r = (|| -> Result<()> {
                ensure!(bare.contains("HOLDS the GIL"), "no holder");
                let frames = bare
                    .lines()
                    .filter(|l| l.starts_with("      ") && l.trim() != "(no Python frames)")
                    .count();
                ensure!(frames == 0, "{frames} frame lines with --no-stacks");
                let json = dump_with(pid, &["--no-stacks", "--json"])?;
                let snap: Snapshot = serde_json::from_str(&json)?;
                check_invariants(&snap)?;
                check_against_ready(&snap, ready)?;
                ensure!(
                    snap.threads.iter().all(|t| t.frames.is_empty()),
                    "frames in a --no-stacks snapshot"
                );
                ensure!(
                    snap.thread(holder.native_id).is_some_and(|t| t.holds_gil),
                    "the holder does not hold the GIL"
                );
                Ok(())
            })();
            r.with_context(|| format!("dump --no-stacks:\n{bare}"))?;

            let json = dump_with(pid, &["--blocking", "--json"])?;
            let snap: Snapshot = serde_json::from_str(&json)?;
            with_snapshot(&snap, check_threads_sample(&snap, ready))?;
            for t in &ready.threads {
                let state =
                    std::fs::read_to_string(format!("/proc/{pid}/task/{}/stat", t.native_id))
                        .ok()
                        .and_then(|s| {
                            s.rfind(')').and_then(|i| {
                                s[i + 1..].split_whitespace().next().map(str::to_owned)
                            })
                        });
                ensure!(
                    !matches!(state.as_deref(), Some("t" | "T")),
                    "thread {} ({}) left stopped after --blocking: {state:?}",
                    t.native_id,
                    t.role
                );
            }
            Ok(())
        },
    );
}

fn check_threads_sample(snap: &Snapshot, ready: &Ready) -> Result<()> {
    check_invariants(snap)?;
    check_against_ready(snap, ready)?;
    ensure!(
        snap.interpreters.len() == 1,
        "{} interpreters, want 1",
        snap.interpreters.len()
    );
    let holder = ready.role("holder")?;
    let main = &snap.interpreters[0];
    ensure!(main.gil.enabled, "main GIL not enabled");
    ensure!(
        main.gil.locked,
        "main GIL not locked (the holder sleeps holding it)"
    );
    ensure!(
        main.gil.holder_tid == Some(holder.native_id),
        "main GIL holder {:?}, want the holder {}",
        main.gil.holder_tid,
        holder.native_id
    );
    for rt in &ready.threads {
        let t = snap
            .thread(rt.native_id)
            .expect("checked by check_against_ready");
        check_innermost(snap, rt)?;
        if rt.role == "holder" {
            ensure!(t.holds_gil, "holder {}: holds_gil false", t.tid);
            ensure!(
                t.gil_state == GilState::Held,
                "holder {}: gil_state {}",
                t.tid,
                t.gil_state.as_str()
            );
            ensure!(
                !t.on_cpu,
                "holder {}: on_cpu, but it sleeps in usleep",
                t.tid
            );
        } else {
            ensure!(
                !t.holds_gil,
                "{} {} ({}): holds_gil, only the holder may",
                rt.role,
                t.tid,
                t.name
            );
        }
        // Blocked in a system call without the GIL, not wanting it.
        if matches!(rt.role.as_str(), "releaser" | "idle" | "main" | "watchdog") {
            ensure!(
                !t.on_cpu,
                "{} {}: on_cpu, but it is blocked in a system call",
                rt.role,
                t.tid
            );
            ensure!(
                t.gil_state == GilState::Idle,
                "{} {}: gil_state {}, want idle (off CPU, GIL released)",
                rt.role,
                t.tid,
                t.gil_state.as_str()
            );
        }
    }
    Ok(())
}

/// How many dumps a test takes to get past a documented transient state.
const TRANSIENT_DUMPS: usize = 20;

/// Dumps `pid` until `settled` holds for the reading (20 ms apart), at most
/// [`TRANSIENT_DUMPS`] times; returns the first settled reading, or the last one (for the
/// caller's checks to fail on), and how many dumps it took.
fn dump_past_transient(pid: u32, settled: impl Fn(&Snapshot) -> bool) -> Result<(Snapshot, usize)> {
    let mut n = 1;
    loop {
        let snap = dump(pid)?;
        if settled(&snap) || n == TRANSIENT_DUMPS {
            return Ok((snap, n));
        }
        n += 1;
        thread::sleep(Duration::from_millis(20));
    }
}

/// samples/threads.py: the holder's stack from innermost: `hold_gil` (threads.py, the line of
/// the usleep call; the C call adds no Python frame) then the threading bootstrap `run`,
/// `_bootstrap_inner`, `_bootstrap` (qualified `Thread.run` etc. on 3.11+), all in
/// interpreter 0, and nothing beyond.
///
/// One transient state is documented: the holder writes the ready line itself (GIL held) and
/// may then have to take the GIL back from the spinner before its first usleep, so a dump
/// right after the ready line can see it not holding, still at the line of that write. Such
/// a dump is taken again (at most 20 dumps); any other mismatch fails at once.
#[test]
fn threads_holder_stack() {
    for_each_python(
        "threads_holder_stack",
        "any CPython 3.9+",
        |_| true,
        |py| {
            let target = Target::start_with_env(py, "threads.py", &gil_env(py))?;
            let holder = target.ready.role("holder")?.native_id;
            let (snap, n) = dump_past_transient(target.pid(), |s| {
                s.thread(holder).is_some_and(|t| t.holds_gil)
            })?;
            with_snapshot(&snap, check_holder_stack(py, &snap, &target.ready))
                .with_context(|| format!("dump {n} of at most {TRANSIENT_DUMPS}"))
        },
    );
}

fn check_holder_stack(py: &Python, snap: &Snapshot, ready: &Ready) -> Result<()> {
    let holder = ready.role("holder")?;
    let t = snap
        .thread(holder.native_id)
        .ok_or_else(|| anyhow!("holder {} not found", holder.native_id))?;
    let frames = &t.frames;
    let names: Vec<&str> = frames.iter().map(|f| &*f.function).collect();
    let i = frames
        .iter()
        .take(2)
        .position(|f| base_name(&f.function) == "hold_gil")
        .ok_or_else(|| anyhow!("hold_gil is not among the two innermost frames: {names:?}"))?;
    let f = &frames[i];
    ensure!(
        f.file.ends_with("threads.py"),
        "hold_gil frame file {:?}",
        f.file
    );
    ensure!(
        f.line == holder.line.expect("sample reports the line"),
        "hold_gil at line {}, want {:?}",
        f.line,
        holder.line
    );
    let qualified = py.at_least(11);
    let want: [&str; 3] = if qualified {
        ["Thread.run", "Thread._bootstrap_inner", "Thread._bootstrap"]
    } else {
        ["run", "_bootstrap_inner", "_bootstrap"]
    };
    let outer: Vec<&str> = names.iter().skip(i + 1).copied().collect();
    ensure!(
        outer == want,
        "frames after hold_gil {outer:?}, want {want:?} (all frames: {names:?})"
    );
    for f in &frames[i + 1..] {
        ensure!(
            f.file.ends_with("threading.py"),
            "{} in {:?}, want threading.py",
            f.function,
            f.file
        );
        ensure!(f.line > 0, "{} has no line", f.function);
    }
    for f in frames {
        ensure!(
            f.interpreter == 0,
            "{} in interpreter {}",
            f.function,
            f.interpreter
        );
    }
    Ok(())
}

// ---------------------------------------------------------------- samples/subinterp_own_gil.py

/// samples/subinterp_own_gil.py (3.12+): three interpreters with three distinct GILs; each
/// worker is in its own sub-interpreter running `sub_spin` there (its outer frames in
/// interpreter 0); over 20 dumps each sub-interpreter's GIL, whenever a holder is known, is held
/// by its worker (and seen so at least once); the main GIL only ever by the main spinner.
#[test]
fn subinterp_own_gil() {
    for_each_python(
        "subinterp_own_gil",
        "CPython 3.12+",
        |p| p.at_least(12),
        |py| {
            let target = Target::start_with_env(py, "subinterp_own_gil.py", &gil_env(py))?;
            let ready = &target.ready;
            let workers = ready.with_role("sub-spinner");
            ensure!(
                workers.len() == 2,
                "sample reports {} sub-interpreter workers",
                workers.len()
            );
            let spinner = ready.role("spinner")?;
            let mut seen_holder: HashMap<i64, u32> = HashMap::new();
            for n in 0..20 {
                let snap = dump(target.pid()).with_context(|| format!("dump #{n}"))?;
                with_snapshot(
                    &snap,
                    check_own_gil_dump(&snap, ready, &workers, spinner, &mut seen_holder),
                )
                .with_context(|| format!("dump #{n}"))?;
                thread::sleep(Duration::from_millis(25));
            }
            for w in &workers {
                ensure!(
                    seen_holder.get(&w.interpreter).copied().unwrap_or(0) > 0,
                    "sub-interpreter {}: its GIL holder was never the worker {} in 20 dumps",
                    w.interpreter,
                    w.native_id
                );
            }
            Ok(())
        },
    );
}

fn check_own_gil_dump(
    snap: &Snapshot,
    ready: &Ready,
    workers: &[&ReadyThread],
    spinner: &ReadyThread,
    seen_holder: &mut HashMap<i64, u32>,
) -> Result<()> {
    check_invariants(snap)?;
    check_against_ready(snap, ready)?;
    ensure!(
        snap.interpreters.len() == 3,
        "{} interpreters, want 3",
        snap.interpreters.len()
    );
    for i in &snap.interpreters {
        ensure!(i.own_gil, "interpreter {}: own_gil false", i.id);
        ensure!(i.gil.enabled, "interpreter {}: GIL not enabled", i.id);
        for j in &snap.interpreters {
            ensure!(
                i.id == j.id || i.gil.address != j.gil.address,
                "interpreters {} and {} have the same GIL {:#x}, but each has its own",
                i.id,
                j.id,
                i.gil.address
            );
        }
    }
    for w in workers {
        let t = snap
            .thread(w.native_id)
            .expect("checked by check_against_ready");
        let sub = w.interpreter;
        ensure!(
            sub != 0,
            "worker {} reported in the main interpreter by the sample",
            w.native_id
        );
        check_innermost(snap, w)?;
        // Innermost frames in the sub-interpreter, then (the code that entered it) interpreter 0.
        let interps: Vec<i64> = t.frames.iter().map(|f| f.interpreter).collect();
        let k = interps
            .iter()
            .position(|&i| i != sub)
            .unwrap_or(interps.len());
        ensure!(
            interps[k..].iter().all(|&i| i == 0),
            "worker {}: frame interpreters {interps:?}, want {sub}… then 0…",
            t.tid
        );
        ensure!(
            t.frames
                .iter()
                .any(|f| base_name(&f.function) == "sub_worker" && f.interpreter == 0),
            "worker {}: no `sub_worker` frame in interpreter 0 (the caller of the sub-interpreter)",
            t.tid
        );
        let i = snap
            .interpreter(sub)
            .expect("checked by check_against_ready");
        if let Some(h) = i.gil.holder_tid {
            ensure!(
                h == w.native_id,
                "sub-interpreter {sub}: GIL holder {h}, only its worker {} runs there",
                w.native_id
            );
            *seen_holder.entry(sub).or_default() += 1;
        }
        if t.holds_gil {
            ensure!(
                i.gil.holder_tid == Some(t.tid),
                "worker {}: holds_gil but its GIL's holder is {:?}",
                t.tid,
                i.gil.holder_tid
            );
        }
    }
    check_innermost(snap, spinner)?;
    // Main only holds it while it finishes printing the ready line.
    let main_thread = ready.role("main")?.native_id;
    if let Some(h) = snap.interpreters[0].gil.holder_tid {
        ensure!(
            h == spinner.native_id || h == main_thread,
            "main GIL holder {h}, want the main spinner {} (or MainThread, or none)",
            spinner.native_id
        );
    }
    Ok(())
}

// ------------------------------------------------------------- samples/subinterp_shared_gil.py

/// samples/subinterp_shared_gil.py (3.9+): a shared-GIL sub-interpreter (own_gil false, same GIL
/// address as the main interpreter) whose worker sleeps in `sub_hold_gil` holding that GIL:
/// the worker is in the sub-interpreter, holds the GIL (off CPU), is the holder seen through
/// both interpreters, and its stack goes from the sub-interpreter into interpreter 0.
///
/// The worker writes the ready line just before its usleep, so a dump right after it can
/// still see the worker on a CPU on its way into the sleep (on a loaded machine, runnable for
/// a while): such a dump is taken again (at most 20 dumps), and the checks run on the first
/// one that sees it off the CPU (or on the 20th, which then fails).
#[test]
fn subinterp_shared_gil() {
    for_each_python(
        "subinterp_shared_gil",
        "CPython 3.9+",
        |_| true,
        |py| {
            let target = Target::start_with_env(py, "subinterp_shared_gil.py", &gil_env(py))?;
            let worker = target.ready.role("sub-holder")?.native_id;
            let (snap, n) = dump_past_transient(target.pid(), |s| {
                s.thread(worker).is_some_and(|t| !t.on_cpu)
            })?;
            with_snapshot(&snap, check_shared_gil(&snap, &target.ready))
                .with_context(|| format!("dump {n} of at most {TRANSIENT_DUMPS}"))
        },
    );
}

fn check_shared_gil(snap: &Snapshot, ready: &Ready) -> Result<()> {
    check_invariants(snap)?;
    check_against_ready(snap, ready)?;
    ensure!(
        snap.interpreters.len() == 2,
        "{} interpreters, want 2",
        snap.interpreters.len()
    );
    let w = ready.role("sub-holder")?;
    let sub = snap
        .interpreter(w.interpreter)
        .expect("checked by check_against_ready");
    let main = &snap.interpreters[0];
    ensure!(!sub.own_gil, "sub-interpreter {}: own_gil true", sub.id);
    ensure!(
        sub.gil.address == main.gil.address,
        "sub-interpreter GIL at {:#x}, main's at {:#x}: they share one",
        sub.gil.address,
        main.gil.address
    );
    for i in [main, sub] {
        ensure!(i.gil.locked, "interpreter {}: shared GIL not locked", i.id);
        ensure!(
            i.gil.holder_tid == Some(w.native_id),
            "interpreter {}: GIL holder {:?}, want the worker {}",
            i.id,
            i.gil.holder_tid,
            w.native_id
        );
    }
    let t = snap
        .thread(w.native_id)
        .expect("checked by check_against_ready");
    ensure!(
        t.holds_gil && t.gil_state == GilState::Held,
        "worker {}: holds_gil {}, gil_state {}",
        t.tid,
        t.holds_gil,
        t.gil_state.as_str()
    );
    ensure!(
        !t.on_cpu,
        "worker {}: on_cpu, but it sleeps in usleep",
        t.tid
    );
    check_innermost(snap, w)?;
    ensure!(
        t.frames
            .iter()
            .any(|f| base_name(&f.function) == "sub_worker" && f.interpreter == 0),
        "worker {}: no `sub_worker` frame in interpreter 0 (the caller of the sub-interpreter)",
        t.tid
    );
    for rt in &ready.threads {
        check_innermost(snap, rt)?;
        if rt.native_id != w.native_id {
            let o = snap.thread(rt.native_id).expect("checked");
            ensure!(
                !o.holds_gil,
                "{} {}: holds_gil, only the worker may",
                rt.role,
                o.tid
            );
            ensure!(
                !o.on_cpu,
                "{} {}: on_cpu, but it is blocked in a system call",
                rt.role,
                o.tid
            );
        }
    }
    Ok(())
}

// --------------------------------------------------------------------- samples/freethreaded.py

/// samples/freethreaded.py on a free-threaded build with PYTHON_GIL=0: the GIL is disabled
/// (`free_threaded_state` "disabled"), nobody holds it in any dump, and both spinners are seen
/// "attached" and on CPU at the same time. That last is an instant state (the machine may run
/// other work on its cores): the dumps go on until one shows it, at most 100 (each dump is
/// checked in full).
#[test]
fn freethreaded_gil_disabled() {
    for_each_python(
        "freethreaded_gil_disabled",
        "a free-threaded build (3.13t+)",
        |p| p.free_threaded,
        |py| {
            let target = Target::start_with_env(py, "freethreaded.py", &[("PYTHON_GIL", "0")])?;
            let ready = &target.ready;
            ensure!(
                ready.free_threaded && !ready.gil_enabled,
                "sample: free_threaded {}, gil_enabled {}",
                ready.free_threaded,
                ready.gil_enabled
            );
            let spinners = ready.with_role("spinner");
            ensure!(
                spinners.len() == 2,
                "sample reports {} spinners",
                spinners.len()
            );
            let mut both_running = 0;
            let mut last = String::new();
            let mut dumps = 0;
            for n in 0..100 {
                dumps = n + 1;
                let snap = dump(target.pid()).with_context(|| format!("dump #{n}"))?;
                let r = (|| -> Result<bool> {
                    check_invariants(&snap)?;
                    check_against_ready(&snap, ready)?;
                    ensure!(snap.python.free_threaded, "python.free_threaded false");
                    let main = &snap.interpreters[0];
                    ensure!(!main.gil.enabled, "main GIL enabled under PYTHON_GIL=0");
                    ensure!(
                        main.gil.free_threaded_state.as_deref() == Some("disabled"),
                        "free_threaded_state {:?}, want \"disabled\"",
                        main.gil.free_threaded_state
                    );
                    for t in &snap.threads {
                        ensure!(!t.holds_gil, "thread {} holds a disabled GIL", t.tid);
                    }
                    for s in &spinners {
                        check_innermost(&snap, s)?;
                    }
                    Ok(spinners.iter().all(|s| {
                        let t = snap.thread(s.native_id).expect("checked");
                        t.gil_state == GilState::Attached && t.on_cpu
                    }))
                })();
                if with_snapshot(&snap, r).with_context(|| format!("dump #{n}"))? {
                    both_running += 1;
                }
                last = describe(&snap);
                if both_running > 0 && n >= 9 {
                    break;
                }
                thread::sleep(Duration::from_millis(30));
            }
            ensure!(
                both_running > 0,
                "both spinners never attached and on CPU at once in {dumps} dumps; last:\n{last}"
            );
            println!("freethreaded_gil_disabled: both running in {both_running} of {dumps} dumps");
            Ok(())
        },
    );
}

/// samples/freethreaded.py on a free-threaded build with PYTHON_GIL=1: the GIL is enabled
/// (permanently), at most one thread holds it in each of 10 dumps, and only a spinner; nobody
/// is "attached" without the GIL.
#[test]
fn freethreaded_gil_enabled() {
    for_each_python(
        "freethreaded_gil_enabled",
        "a free-threaded build (3.13t+)",
        |p| p.free_threaded,
        |py| {
            let target = Target::start_with_env(py, "freethreaded.py", &[("PYTHON_GIL", "1")])?;
            let ready = &target.ready;
            ensure!(
                ready.free_threaded && ready.gil_enabled,
                "sample: free_threaded {}, gil_enabled {}",
                ready.free_threaded,
                ready.gil_enabled
            );
            let spinners: Vec<u32> = ready
                .with_role("spinner")
                .iter()
                .map(|t| t.native_id)
                .collect();
            // Main only holds it while it finishes printing the ready line.
            let main_thread = ready.role("main")?.native_id;
            for n in 0..10 {
                let snap = dump(target.pid()).with_context(|| format!("dump #{n}"))?;
                let r = (|| -> Result<()> {
                    check_invariants(&snap)?;
                    check_against_ready(&snap, ready)?;
                    let main = &snap.interpreters[0];
                    ensure!(main.gil.enabled, "main GIL disabled under PYTHON_GIL=1");
                    ensure!(
                        main.gil.free_threaded_state.as_deref() == Some("permanent"),
                        "free_threaded_state {:?}, want \"permanent\"",
                        main.gil.free_threaded_state
                    );
                    let holders: Vec<u32> = snap
                        .threads
                        .iter()
                        .filter(|t| t.holds_gil)
                        .map(|t| t.tid)
                        .collect();
                    ensure!(
                        holders.len() <= 1,
                        "{} threads hold the GIL: {holders:?}",
                        holders.len()
                    );
                    if let Some(h) = main.gil.holder_tid {
                        ensure!(
                            spinners.contains(&h) || h == main_thread,
                            "GIL holder {h} is not a spinner {spinners:?} (nor MainThread)"
                        );
                    }
                    for t in &snap.threads {
                        ensure!(
                            t.gil_state != GilState::Attached,
                            "thread {}: attached while the GIL is enabled",
                            t.tid
                        );
                    }
                    Ok(())
                })();
                with_snapshot(&snap, r).with_context(|| format!("dump #{n}"))?;
                thread::sleep(Duration::from_millis(30));
            }
            Ok(())
        },
    );
}

/// samples/gc_loop.py: `gc.collect()` in a loop (its own gc.callbacks say the collector runs
/// ≥ 90 % of the time) → the main interpreter reads `gc_collecting: true` in most of 10
/// dumps; the same sample idle (GC_LOOP_IDLE=1) reads false in every one. Every build,
/// 3.13+ through the debug offsets, ≤3.12 through the built-in tables.
#[test]
fn gc_collecting_flag() {
    for_each_python(
        "gc_collecting_flag",
        "any interpreter",
        |_| true,
        |py| {
            let busy = Target::start(py, "gc_loop.py")?;
            let ready: serde_json::Value = serde_json::from_str(&busy.ready_line)?;
            let share = ready["collect_share"].as_f64().unwrap_or(0.0);
            ensure!(
                share >= 0.9,
                "the loop collects only {share:.2} of the time"
            );
            let mut collecting = 0;
            for n in 0..10 {
                let snap = dump(busy.pid()).with_context(|| format!("dump #{n}"))?;
                let flag = snap.interpreters[0].gc_collecting;
                ensure!(flag.is_some(), "no gc_collecting read on {}", py.label());
                collecting += usize::from(flag == Some(true));
            }
            // P(fewer than 6 of 10 | p ≥ 0.9) < 0.2 %: a reading that misses the flag fails here.
            ensure!(
                collecting >= 6,
                "gc_collecting in only {collecting} of 10 dumps"
            );
            drop(busy);
            let idle = Target::start_with_env(py, "gc_loop.py", &[("GC_LOOP_IDLE", "1")])?;
            for n in 0..5 {
                let snap = dump(idle.pid()).with_context(|| format!("idle dump #{n}"))?;
                ensure!(
                    snap.interpreters[0].gc_collecting == Some(false),
                    "idle: gc_collecting {:?}",
                    snap.interpreters[0].gc_collecting
                );
            }
            Ok(())
        },
    );
}
