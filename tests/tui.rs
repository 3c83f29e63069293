//! `gilscope view` end to end, as a person would use it: record a real
//! workload, open the trace in tmux, read the screen, press keys.

mod common;

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use common::*;

struct Tmux {
    session: String,
}

impl Tmux {
    fn start(cmd: &str, w: u16, h: u16) -> Result<Tmux> {
        let session = format!("gilscope-test-{}", std::process::id());
        let st = Command::new("tmux")
            .args([
                "new-session",
                "-d",
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

        tmux.keys(&["?"]);
        tmux.wait_for("Keys").or_else(|_| tmux.wait_for("help"))?;
        tmux.keys(&["Escape"]);
        tmux.keys(&["q"]);
        let deadline = Instant::now() + Duration::from_secs(5);
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
