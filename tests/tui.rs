//! `gilscope view` end to end, as a person would use it: record a real
//! workload, open the trace in tmux, read the screen, press keys.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use common::*;

struct Tmux {
    session: String,
}

impl Tmux {
    fn start(cmd: &str, w: u16, h: u16) -> Result<Tmux> {
        Self::start_in(cmd, w, h, &std::env::temp_dir())
    }
    /// Start `cmd` in a detached session of `w`×`h` cells, in directory `cwd`.
    fn start_in(cmd: &str, w: u16, h: u16, cwd: &Path) -> Result<Tmux> {
        static N: AtomicU32 = AtomicU32::new(0);
        let session = format!(
            "gilscope-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let st = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-c",
                &cwd.to_string_lossy(),
                "-s",
                &session,
                "-x",
                &w.to_string(),
                "-y",
                &h.to_string(),
                cmd,
            ])
            .status()
            .context("running tmux (apt-get install tmux)")?;
        ensure!(st.success(), "tmux new-session failed");
        Ok(Tmux { session })
    }
    fn screen(&self) -> String {
        Command::new("tmux")
            .args(["capture-pane", "-t", &self.session, "-p"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", self.session.as_str()];
        args.extend_from_slice(keys);
        let _ = Command::new("tmux").args(args).status();
    }
    fn alive(&self) -> bool {
        Command::new("tmux")
            .args(["has-session", "-t", &self.session])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }
    /// Waits until `cond` holds for the screen, returning that screen.
    fn wait_until(&self, what: &str, cond: impl Fn(&str) -> bool) -> Result<String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let s = self.screen();
            if cond(&s) {
                return Ok(s);
            }
            if Instant::now() > deadline {
                bail!("screen never showed {what}; it shows:\n{s}");
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
    /// Waits until the screen contains `text`.
    fn wait_for(&self, text: &str) -> Result<String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let s = self.screen();
            if s.contains(text) {
                return Ok(s);
            }
            if Instant::now() > deadline {
                bail!("screen never showed {text:?}; it shows:\n{s}");
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.session])
            .status();
    }
}

/// Seconds in "0s", "1.50s", "563ms", "750µs" (the header's time format).
fn seconds(t: &str) -> Option<f64> {
    let t = t.trim();
    if let Some(v) = t.strip_suffix("ms") {
        return v.parse::<f64>().ok().map(|v| v / 1e3);
    }
    if let Some(v) = t.strip_suffix("µs").or_else(|| t.strip_suffix("us")) {
        return v.parse::<f64>().ok().map(|v| v / 1e6);
    }
    t.strip_suffix('s')?.parse().ok()
}

/// The window shown, from the title line's "window A–B", in seconds.
fn window(screen: &str) -> Result<(f64, f64)> {
    let title = screen.lines().next().unwrap_or_default();
    let w = title
        .split("window ")
        .nth(1)
        .with_context(|| format!("no \"window\" in the title line {title:?}"))?;
    let (a, b) = w
        .split_once('–')
        .with_context(|| format!("no A–B in {w:?}"))?;
    let b = b.split_whitespace().next().unwrap_or_default();
    match (seconds(a), seconds(b)) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => bail!("cannot read the window {w:?}"),
    }
}

/// (name, TID) of each row of the thread table on a screen.
fn table_rows(screen: &str) -> Vec<(String, u32)> {
    screen
        .lines()
        .skip_while(|l| !l.contains("Held%") && !l.contains("TID"))
        .skip(1)
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let name = w.next()?.to_string();
            let tid = w.next()?.parse().ok()?;
            Some((name, tid))
        })
        .collect()
}

/// The lane of the thread named `name` on a captured screen.
fn lane<'a>(screen: &'a str, name: &str) -> Option<&'a str> {
    screen.lines().find(|l| l.trim_start().starts_with(name))
}

#[test]
fn view_in_tmux_shows_the_holder_and_answers_keys() {
    let ps = pythons();
    // One interpreter is enough here: the mapping is version-independent and
    // the per-version recording is covered by tests/record.rs.
    let Some(py) = ps.list.iter().find(|p| p.minor == 12 || p.minor == 11) else {
        skip("view_in_tmux", "no CPython 3.11/3.12 available");
        return;
    };
    let r = (|| -> Result<()> {
        let target = Target::start(py, "threads.py")?;
        let dir = std::env::temp_dir().join(format!("gilscope-tui-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let trace = dir.join("threads.trace");
        let out = output_with_timeout(
            gilscope(&[
                "record",
                "--pid",
                &target.pid().to_string(),
                "--duration",
                "1.5",
                "--rate",
                "200",
                "-o",
                &trace.to_string_lossy(),
            ]),
            Duration::from_secs(60),
        )?;
        ensure!(
            out.status.success(),
            "record failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );

        let tmux = Tmux::start(
            &format!("{} view {}", gilscope_bin(), trace.display()),
            100,
            30,
        )?;
        let screen = tmux.wait_for("gil-holder")?;
        let holder = lane(&screen, "gil-holder").context("no gil-holder lane")?;
        let held = holder.matches('█').count();
        ensure!(
            held >= 40,
            "the holder's lane is not mostly held ({held} cells):\n{screen}"
        );
        let idle = lane(&screen, "idle").context("no idle lane")?;
        ensure!(
            !idle.contains('█'),
            "the idle thread shows held cells:\n{screen}"
        );
        ensure!(
            screen.contains("interp 0"),
            "no interpreter heading:\n{screen}"
        );

        let (start0, end0) = window(&screen)?;

        // Zoom: `+` twice narrows the window around its middle.
        tmux.keys(&["+"]);
        tmux.keys(&["+"]);
        let zoomed = tmux.wait_until("a zoomed-in window", |s| {
            window(s).is_ok_and(|(a, b)| b - a < (end0 - start0) * 0.3)
        })?;
        let (za, zb) = window(&zoomed)?;
        ensure!(
            za > start0 && zb < end0,
            "zoomed window {za}–{zb} is not inside {start0}–{end0}:\n{zoomed}"
        );
        // Pan: `l` moves it later in time, same width.
        tmux.keys(&["l"]);
        let panned = tmux.wait_until("a window panned right", |s| {
            window(s).is_ok_and(|(a, _)| a > za)
        })?;
        let (pa, pb) = window(&panned)?;
        ensure!(
            ((pb - pa) - (zb - za)).abs() < 0.002,
            "panning changed the width: {za}–{zb} -> {pa}–{pb}"
        );
        // `0` fits the whole recording again.
        tmux.keys(&["0"]);
        tmux.wait_until("the whole recording again", |s| {
            window(s).is_ok_and(|w| w == (start0, end0))
        })?;

        // Tab: the thread table, sorted by Held% (descending): the holder first.
        tmux.keys(&["Tab"]);
        let table = tmux.wait_for("Held%")?;
        let rows = table_rows(&table);
        ensure!(
            rows.first().map(|r| r.0.as_str()) == Some("gil-holder"),
            "the table sorted by Held% does not start with gil-holder:\n{table}"
        );
        ensure!(
            rows.len() == target.ready.threads.len(),
            "{} table rows for the sample's {} threads:\n{table}",
            rows.len(),
            target.ready.threads.len()
        );
        // `2`: sort by TID; `i` reverses it.
        tmux.keys(&["2"]);
        let by_tid = tmux.wait_until("the table sorted by TID", |s| {
            let tids: Vec<u32> = table_rows(s).iter().map(|r| r.1).collect();
            tids.len() == rows.len()
                && (tids.is_sorted() || tids.iter().rev().is_sorted())
                && !s.contains("Held%▼")
        })?;
        let tids: Vec<u32> = table_rows(&by_tid).iter().map(|r| r.1).collect();
        tmux.keys(&["i"]);
        tmux.wait_until("the TID order reversed", |s| {
            let now: Vec<u32> = table_rows(s).iter().map(|r| r.1).collect();
            now.iter().rev().eq(tids.iter())
        })?;
        // Tab again: back to the lanes.
        tmux.keys(&["Tab"]);
        tmux.wait_until("the lanes again", |s| {
            !s.contains("Held%") && lane(s, "gil-holder").is_some()
        })?;

        // `?`: the help box (its own title; the footer always says "? help").
        tmux.keys(&["?"]);
        tmux.wait_for("gilscope keys")?;
        // Any key closes it, Esc included, without quitting.
        tmux.keys(&["Escape"]);
        tmux.wait_until("the help closed", |s| !s.contains("gilscope keys"))?;
        ensure!(tmux.alive(), "Esc closing the help quit gilscope view");
        tmux.keys(&["q"]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while tmux.alive() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(100));
        }
        ensure!(!tmux.alive(), "gilscope view did not quit on q");
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    })();
    if let Err(e) = r {
        panic!("{} ({}): {e:#}", py.name, py.version);
    }
}

/// `gilscope top` on a live process, as a person would use it: the lanes fill in, `r` starts
/// saving the session and `r` again finishes the file, which `summary` then reads with the
/// workload's truth (the holder held the GIL, the spinner waited for it).
#[test]
fn top_in_tmux_shows_the_live_process_and_r_saves_a_session() {
    let ps = pythons();
    let Some(py) = ps.list.iter().find(|p| p.minor == 12 || p.minor == 11) else {
        skip("top_in_tmux", "no CPython 3.11/3.12 available");
        return;
    };
    let r = (|| -> Result<()> {
        let target = Target::start(py, "threads.py")?;
        let pid = target.pid();
        let holder = target.ready.role("holder")?.native_id;
        let spinner = target.ready.role("spinner")?.native_id;
        let dir = std::env::temp_dir().join(format!("gilscope-top-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let tmux = Tmux::start_in(
            &format!("{} top --pid {pid} --rate 200", gilscope_bin()),
            100,
            30,
            &dir,
        )?;
        // The live lanes: the holder's fills with held cells as time passes.
        let screen = tmux.wait_until("the holder's lane filling with held cells", |s| {
            lane(s, "gil-holder").is_some_and(|l| l.matches('█').count() >= 5)
        })?;
        ensure!(
            lane(&screen, "idle").is_some_and(|l| !l.contains('█')),
            "the idle thread shows held cells:\n{screen}"
        );
        let saved = || -> Vec<std::path::PathBuf> {
            std::fs::read_dir(&dir)
                .map(|d| {
                    d.flatten()
                        .map(|e| e.path())
                        .filter(|p| {
                            p.file_name().is_some_and(|n| {
                                let n = n.to_string_lossy();
                                n.starts_with(&format!("gilscope-top-{pid}-"))
                                    && n.ends_with(".trace")
                            })
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        ensure!(
            saved().is_empty(),
            "a session file before `r`: {:?}",
            saved()
        );
        tmux.keys(&["r"]);
        tmux.wait_for("● REC")?;
        // The file appears once saving starts; let the session grow (a real signal: the
        // file's first chunk, flushed at least once a second) before finishing it.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let files = saved();
            if files
                .first()
                .and_then(|f| std::fs::metadata(f).ok())
                .is_some_and(|m| m.len() > 64)
            {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "`r` saved nothing in {} ({files:?}):\n{}",
                dir.display(),
                tmux.screen()
            );
            thread::sleep(Duration::from_millis(100));
        }
        // Some live time into the file: wait for more held cells to scroll in.
        let before = lane(&tmux.screen(), "gil-holder").map_or(0, |l| l.matches('█').count());
        tmux.wait_until("more held cells after `r`", |s| {
            lane(s, "gil-holder").is_some_and(|l| l.matches('█').count() >= before + 10)
        })?;
        tmux.keys(&["r"]);
        tmux.wait_until("the recording mark gone after the second `r`", |s| {
            !s.contains("● REC")
        })?;
        tmux.keys(&["q"]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while tmux.alive() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(100));
        }
        ensure!(!tmux.alive(), "gilscope top did not quit on q");
        let files = saved();
        ensure!(files.len() == 1, "want one session file, found {files:?}");
        let p = files[0].to_string_lossy().into_owned();
        let out = output_with_timeout(gilscope(&["summary", &p, "--json"]), GILSCOPE_TIMEOUT)?;
        ensure!(
            out.status.success(),
            "summary of the saved session failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let s: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        ensure!(
            s["complete"] == true,
            "the saved session is not finished: {s}"
        );
        let thread = |tid: u32| {
            s["threads"]
                .as_array()
                .and_then(|ts| ts.iter().find(|t| t["tid"] == tid))
                .cloned()
                .with_context(|| format!("thread {tid} not in the saved session"))
        };
        let h = thread(holder)?;
        let sp = thread(spinner)?;
        let pct = |t: &serde_json::Value, k: &str| t[k].as_f64().unwrap_or(f64::NAN);
        // The holder sits in PyDLL usleep holding the GIL throughout; the spinner never gets
        // it. A few samples may be lost to torn reads, never the answer.
        ensure!(
            pct(&h, "held_pct") > 95.0,
            "holder held {:.1}% in the saved session: {h}",
            pct(&h, "held_pct")
        );
        ensure!(
            pct(&sp, "held_pct") < 5.0,
            "spinner held {:.1}% in the saved session: {sp}",
            pct(&sp, "held_pct")
        );
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    })();
    if let Err(e) = r {
        panic!("{} ({}): {e:#}", py.name, py.version);
    }
}

/// `gilscope top --max-overhead`: with a budget far below what sampling at 1 kHz and drawing
/// cost, the rate is lowered within seconds and the notice line says so, with the figures;
/// the lanes go on filling in at the lower rate.
#[test]
fn top_lowers_its_rate_over_the_overhead_budget() {
    let ps = pythons();
    let Some(py) = ps.list.iter().find(|p| p.minor == 12 || p.minor == 11) else {
        skip("top_over_budget", "no CPython 3.11/3.12 available");
        return;
    };
    let r = (|| -> Result<()> {
        let target = Target::start(py, "threads.py")?;
        let pid = target.pid();
        let tmux = Tmux::start(
            &format!(
                "{} top --pid {pid} --rate 1000 --max-overhead 0.01",
                gilscope_bin()
            ),
            250,
            30,
        )?;
        let screen = tmux.wait_for("over the overhead budget (0.0% of a CPU)")?;
        ensure!(
            screen.contains("% sampling at 1000 Hz; sampling at ")
                && screen.contains(" Hz from here on"),
            "the notice lacks the figure or the rates:\n{screen}"
        );
        let before = lane(&screen, "gil-holder").map_or(0, |l| l.matches('█').count());
        tmux.wait_until("held cells after the rate was lowered", |s| {
            lane(s, "gil-holder").is_some_and(|l| l.matches('█').count() > before)
        })?;
        tmux.keys(&["q"]);
        Ok(())
    })();
    if let Err(e) = r {
        panic!("{} ({}): {e:#}", py.name, py.version);
    }
}
