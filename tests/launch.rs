//! Launching a command held where its Python is mapped (src/reader/launch.rs), on every
//! interpreter of the manifest: the sid builds through `chroot` (an exec wrapper), the
//! others plainly and through `env`. The ground truth is the process itself: while held it
//! is stopped (`t` in /proc/PID/stat), maps the file named, and has run no Python (it has
//! not printed yet); let go, it prints its own version, which must be the one the launcher
//! read from the file's name, and exits with its own status. Commands that are not Python
//! are let go at once with their exit status intact.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use common::*;
use gilscope::reader::launch::{spawn_held, PythonFile};

const PATIENCE: Duration = Duration::from_secs(20);

/// What the launcher saw while the process was held.
#[derive(Debug)]
struct WhileHeld {
    file: PythonFile,
    state: String,
    maps_file: bool,
}

fn state_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rfind(')')
                .and_then(|i| s[i + 1..].split_whitespace().next().map(str::to_string))
        })
        .unwrap_or_default()
}

fn look(file: &PythonFile) -> Result<WhileHeld, String> {
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", file.pid))
        .map_err(|e| format!("maps: {e}"))?;
    Ok(WhileHeld {
        file: file.clone(),
        state: state_of(file.pid),
        maps_file: maps
            .lines()
            .any(|l| l.contains(" r-xp ") && l.ends_with(file.binary.as_str())),
    })
}

#[test]
fn python_is_held_where_it_is_mapped_on_every_build() {
    for_each_python(
        "python_is_held_where_it_is_mapped_on_every_build",
        "any CPython 3.9+",
        |_| true,
        |py| {
            let wrappings: &[&str] = if py.chroot.is_some() {
                &["plainly"]
            } else {
                &["plainly", "through env", "through sh -c exec"]
            };
            for &how in wrappings {
                let code = "import sys; print(sys.version_info[1], sys.flags.isolated)";
                let args = ["-c", code];
                let mut cmd = match how {
                    "through env" => {
                        let mut c = Command::new("env");
                        c.args(&py.argv).args(args);
                        c
                    }
                    "through sh -c exec" => {
                        let mut c = Command::new("sh");
                        c.arg("-c")
                            .arg(format!("exec {} -c '{code}'", py.argv.join(" ")));
                        c
                    }
                    _ => py.command(&args),
                };
                cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
                let (child, held) = spawn_held(&mut cmd, PATIENCE, look)
                    .with_context(|| format!("{how}: spawning"))?;
                let out = child
                    .wait_with_output()
                    .with_context(|| format!("{how}: waiting"))?;
                let seen = held
                    .value
                    .map_err(|e| anyhow::anyhow!("{how}: not held: {e}"))?;
                ensure!(
                    seen.state == "t",
                    "{how}: state {:?} while held, want t (traced stop)",
                    seen.state
                );
                ensure!(
                    seen.maps_file,
                    "{how}: {} is not mapped executable while held",
                    seen.file.binary
                );
                ensure!(
                    seen.file.minor == py.minor && seen.file.free_threaded == py.free_threaded,
                    "{how}: read 3.{} (free-threaded {}) from {}, the manifest says 3.{} ({})",
                    seen.file.minor,
                    seen.file.free_threaded,
                    seen.file.binary,
                    py.minor,
                    py.free_threaded
                );
                ensure!(
                    out.status.success(),
                    "{how}: exit {:?}; stderr: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
                let printed = String::from_utf8_lossy(&out.stdout);
                ensure!(
                    printed.trim() == format!("{} 0", py.minor),
                    "{how}: the process printed {printed:?}, want its minor version {}",
                    py.minor
                );
                println!(
                    "  {}: {how}: held {:.0} ms at {} (3.{})",
                    py.name,
                    held.held.as_secs_f64() * 1e3,
                    seen.file.binary,
                    seen.file.minor
                );
            }
            Ok(())
        },
    );
}

/// Not Python: let go at the first exec, or a shell at its exit or after it ran 500 ms
/// without exec'ing (a shell that forks and waits: it runs on, neither stopped nor killed);
/// the exit status the command's own (not reaped by the launcher), the reason given.
#[test]
fn other_commands_are_let_go_with_their_exit_status() {
    let cases: [(&[&str], i32, &str); 4] = [
        (&["true"], 0, "true is not named like a CPython executable"),
        (
            &["sh", "-c", "exit 7"],
            7,
            "the command ended before its Python was mapped",
        ),
        (
            &["env", "sh", "-c", "exit 3"],
            3,
            "the command ended before its Python was mapped",
        ),
        (
            &["sh", "-c", "sleep 1; exit 4"],
            4,
            "ran 500 ms without exec'ing a Python",
        ),
    ];
    for (argv, code, why) in cases {
        let mut cmd = Command::new(argv[0]);
        cmd.args(&argv[1..]);
        let (mut child, held) = spawn_held(&mut cmd, PATIENCE, |_: &PythonFile| Ok(()))
            .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        let status = child.wait().unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        assert_eq!(status.code(), Some(code), "{argv:?}");
        let err = held.value.expect_err("not Python, yet held");
        assert!(err.contains(why), "{argv:?}: {err}");
    }
    // A command that does not exist is the spawn's own error.
    let mut cmd = Command::new("/nonexistent/gilscope-no-such-command");
    let e = spawn_held(&mut cmd, PATIENCE, |_: &PythonFile| Ok(()))
        .err()
        .map(|e| e.kind());
    assert_eq!(e, Some(std::io::ErrorKind::NotFound));
}
