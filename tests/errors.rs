//! `gilscope dump` failures: exit codes and messages (docs/cli.md). Every error is one line on
//! stderr starting with `gilscope: error: `, and never a panic.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | ok |
//! | 1 | anything else |
//! | 2 | bad usage (clap) |
//! | 3 | no such process / it exited / zombie |
//! | 4 | not a Python process (no CPython runtime) |
//! | 5 | unsupported Python version |
//! | 6 | permission denied |
//! | 7 | no consistent reading |

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use common::*;

/// Kills and reaps a helper child on drop.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run_dump(pid: u32) -> std::process::Output {
    dump_raw(&["dump", "--pid", &pid.to_string(), "--json"])
}

fn ok_or_panic(r: Result<()>) {
    if let Err(e) = r {
        panic!("{e:#}");
    }
}

/// A PID no process has: a `true` that was spawned and reaped.
#[test]
fn no_such_process_exits_3() {
    let mut child = Command::new("true").spawn().expect("spawn true");
    let pid = child.id();
    child.wait().expect("wait true");
    ensure_gone(pid);
    ok_or_panic(check_error(&run_dump(pid), 3, &[]));
}

fn ensure_gone(pid: u32) {
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} was reused already; rerun"
    );
}

/// `sleep` has no CPython runtime.
#[test]
fn not_python_exits_4() {
    let child = Reaped(
        Command::new("sleep")
            .arg("60")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sleep"),
    );
    // Wait for the exec to happen (until then the child is a copy of this test process).
    wait_until("sleep to exec", || {
        std::fs::read_link(format!("/proc/{}/exe", child.0.id()))
            .map(|p| p.to_string_lossy().contains("sleep"))
            .unwrap_or(false)
    });
    ok_or_panic(check_error(&run_dump(child.0.id()), 4, &[]));
}

/// A child that exited and is not reaped yet: exit 3, and the message says "zombie".
#[test]
fn zombie_exits_3() {
    let mut child = Command::new("sleep")
        .arg("0")
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn sleep 0");
    let pid = child.id();
    // Not waited on: once it exits it stays a zombie until we reap it below.
    wait_until("the child to become a zombie", || {
        process_state(pid) == Some('Z')
    });
    let out = run_dump(pid);
    let still_zombie = process_state(pid) == Some('Z');
    child.wait().expect("reap");
    assert!(still_zombie, "the zombie went away during the test");
    ok_or_panic(check_error(&out, 3, &["zombie"]));
}

/// Run as `nobody` against a root-owned Python: exit 6, with a hint naming CAP_SYS_PTRACE or
/// ptrace_scope.
#[test]
fn permission_denied_exits_6() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        let msg =
            "permission_denied_exits_6: needs root (to run a root-owned target and drop to nobody)";
        skip("permission_denied_exits_6", msg);
        return;
    }
    let Some(setpriv) = ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        skip("permission_denied_exits_6", "no setpriv (util-linux)");
        return;
    };
    // One interpreter is enough: the kernel refuses before anything Python-specific happens.
    let first = pythons().list.first().map(|p| p.name.clone());
    for_each_python(
        "permission_denied_exits_6",
        "any CPython (the first one)",
        |p| Some(&p.name) == first.as_ref(),
        |py| {
            let target = Target::start(py, "threads.py")?;
            let pid = target.pid().to_string();
            let mut cmd = Command::new(setpriv);
            cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
                .arg(gilscope_bin())
                .args(["dump", "--pid", &pid, "--json"]);
            let out = output_with_timeout(cmd, GILSCOPE_TIMEOUT)?;
            check_error(&out, 6, &["CAP_SYS_PTRACE", "ptrace_scope"])
        },
    );
}

/// A Python (three spinning threads) that exits 50 ms or 400 ms after it is ready, dumped in a
/// loop until it is gone (first a zombie, then reaped): every exit code is 0 or 3, never a
/// panic, and the last one is 3. A debug-build dump takes a few hundred ms, so the exit falls in
/// the middle of a reading. Each with a normal exit (interpreter finalisation running while
/// being read) and with os._exit (threads vanish at once).
#[test]
fn process_exiting_while_read() {
    const SRC: &str = r#"
import json, os, sys, threading, time
def spin():
    x = 0
    while True:
        x += 1
for _ in range(3):
    threading.Thread(target=spin, daemon=True).start()
sys.stdout.write(json.dumps({"pid": os.getpid()}) + "\n")
sys.stdout.flush()
time.sleep(float(sys.argv[-2]))
if sys.argv[-1] == "hard":
    os._exit(0)
"#;
    for_each_python(
        "process_exiting_while_read",
        "any CPython",
        |_| true,
        |py| {
            for (secs, how) in [
                ("0.05", "normal"),
                ("0.05", "hard"),
                ("0.4", "normal"),
                ("0.4", "hard"),
            ] {
                let mut target = Target::spawn(
                    py.command(&["-c", SRC, secs, how]),
                    format!("{} exits after {secs} s ({how})", py.name),
                )?;
                let pid = target.pid();
                let deadline = Instant::now() + Duration::from_secs(20);
                let mut codes = Vec::new();
                let mut reaped = false;
                loop {
                    let out = run_dump(pid);
                    let code = out.status.code();
                    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
                    ensure!(
                        !stderr.contains("panicked"),
                        "{how}: gilscope panicked: {stderr}"
                    );
                    ensure!(
                        matches!(code, Some(0) | Some(3)),
                        "{how}: exit code {code:?} (want 0 or 3) after codes {codes:?}; stderr: {}",
                        stderr.trim_end()
                    );
                    codes.push(code.unwrap_or(-1));
                    if code == Some(3) {
                        check_error(&out, 3, &[])?;
                        if reaped {
                            break;
                        }
                        // Gone for gilscope (a zombie, or exiting): reap it, then read once more.
                        ensure!(
                            target.wait_exit(Duration::from_secs(10)).is_some(),
                            "{how}: gilscope said exit 3 but the process is still running"
                        );
                        reaped = true;
                    }
                    ensure!(
                        Instant::now() < deadline,
                        "{how}: still readable after 20 s: codes {codes:?}"
                    );
                }
                println!("  {} {how}: exit codes {:?}", py.name, compress(&codes));
            }
            Ok(())
        },
    );
}

fn compress(codes: &[i32]) -> Vec<String> {
    let mut out: Vec<(i32, usize)> = Vec::new();
    for &c in codes {
        match out.last_mut() {
            Some((last, n)) if *last == c => *n += 1,
            _ => out.push((c, 1)),
        }
    }
    out.into_iter().map(|(c, n)| format!("{c}x{n}")).collect()
}

/// A PID that is not a number is a usage error (clap): exit 2, no panic.
#[test]
fn malformed_pid_exits_2() {
    let out = dump_raw(&["dump", "--pid", "abc"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "gilscope panicked: {stderr}");
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.to_lowercase().contains("error"),
        "no error message on stderr: {stderr:?}"
    );
    assert!(
        stderr.contains("abc") || stderr.contains("--pid"),
        "the message names neither the value nor --pid: {stderr:?}"
    );
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// CPython versions older than 3.9 (the pyenv 2.7, 3.6, 3.7 and 3.8 builds on the test
/// machines, listed by scripts/provision-pythons in `old-pythons.json`): exit 5, and the
/// message names the version found.
#[test]
fn old_python_exits_5() {
    let olds = old_pythons().unwrap_or_else(|e| panic!("{e:#}"));
    if olds.is_empty() {
        skip(
            "old_python_exits_5",
            &format!("none of the old pyenv builds {OLD_PYENV:?} is on this machine"),
        );
        return;
    }
    let mut ran = Vec::new();
    for py in &olds {
        let want = py
            .version
            .rsplit_once('.')
            .map_or(&*py.version, |(mm, _)| mm);
        let mut cmd = py.command(&[
            "-c",
            "import sys, time; sys.stdout.write('x\\n'); sys.stdout.flush(); time.sleep(60)",
        ]);
        let child = Reaped(
            cmd.stdin(Stdio::null())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("spawning {}: {e}", py.label())),
        );
        let mut child = child;
        let mut line = String::new();
        use std::io::BufRead;
        let stdout = child.0.stdout.take().expect("piped stdout");
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read ready line");
        assert_eq!(line, "x\n", "{}: no ready line", py.label());
        ok_or_panic(
            check_error(&run_dump(child.0.id()), 5, &[want]).map_err(|e| e.context(py.label())),
        );
        ran.push(py.label());
    }
    println!("old_python_exits_5 ran on: {ran:?}");
}

/// A target whose memory does not make sense: the sample points its own runtime's list of
/// interpreters (`_PyRuntime.interpreters.head`) at 4 KiB of 0xAB bytes, then blocks in
/// os.read, where nothing walks that list. Every reading finds an interpreter with a nonsense
/// id: `dump` and `record` give up with exit 7 ("no consistent reading"), one line, no panic.
/// The offsets are those of CPython's own `_PyRuntimeState` (3.9/3.10: 32, 3.11/3.12: 40);
/// 3.13+ describe theirs in `_Py_DebugOffsets`, so the unstripped pyenv 3.9–3.12 suffice.
#[test]
fn nonsense_memory_exits_7() {
    const SRC: &str = r#"
import ctypes, json, os, sys
runtime = ctypes.addressof(ctypes.c_char.in_dll(ctypes.pythonapi, "_PyRuntime"))
head = ctypes.c_void_p.from_address(runtime + int(sys.argv[-1]))
junk = ctypes.create_string_buffer(b"\xab" * 4096)
head.value = ctypes.addressof(junk)
sys.stdout.write(json.dumps({"pid": os.getpid()}) + "\n")
sys.stdout.flush()
os.read(0, 1)
os._exit(0)  # never finalize: the runtime's list is garbage
"#;
    for_each_python(
        "nonsense_memory_exits_7",
        "a pyenv CPython 3.9–3.12 (libpython exports _PyRuntime)",
        |py| py.chroot.is_none() && !py.free_threaded && (9..=12).contains(&py.minor),
        |py| {
            let offset = if py.minor <= 10 { "32" } else { "40" };
            let target = Target::spawn(
                py.command(&["-c", SRC, offset]),
                format!("{} with a garbage interpreter list", py.name),
            )?;
            let pid = target.pid().to_string();
            check_error(
                &dump_raw(&["dump", "--pid", &pid, "--json"]),
                7,
                &["consistent reading"],
            )?;
            let out = std::env::temp_dir().join(format!(
                "gilscope-errors-7-{}-{}.trace",
                std::process::id(),
                py.name
            ));
            let o = dump_raw(&[
                "record",
                "--pid",
                &pid,
                "--mode",
                "sampling",
                "--duration",
                "1",
                "-o",
                &out.to_string_lossy(),
            ]);
            let _ = std::fs::remove_file(&out);
            // `record` also prints its mode and progress lines: the error is the last line.
            let stderr = String::from_utf8_lossy(&o.stderr);
            let last = stderr.lines().last().unwrap_or_default();
            ensure!(
                o.status.code() == Some(7)
                    && !stderr.contains("panicked")
                    && last.starts_with("gilscope: error: no sample was recorded")
                    && last.contains("consistent reading"),
                "record: want exit 7 and the error last: {}, stderr {stderr:?}",
                o.status
            );
            Ok(())
        },
    );
}

/// `summary` and `view` on a file that is not a trace, one from a newer gilscope, and one cut
/// inside its header: exit 1, one line naming the file and the byte offset, no panic (`view`
/// before it touches the terminal). A file cut inside a chunk is summarized up to there, with
/// a warning naming the offset. The inputs are those of fuzz/regressions/ (see its README).
#[test]
fn summary_and_view_refuse_bad_files() {
    let reg = repo_dir().join("fuzz/regressions");
    let foreign = std::env::temp_dir().join(format!("gilscope-foreign-{}", std::process::id()));
    std::fs::write(&foreign, b"\x89PNG\r\n\x1a\n not a trace at all").expect("write");
    let cases = [
        (foreign.clone(), "not a gilscope trace", "offset 0"),
        (
            reg.join("future-version.bin"),
            "version 2 is newer",
            "offset 8",
        ),
        (
            reg.join("cut-in-header.bin"),
            "truncated in the header",
            "offset 13",
        ),
    ];
    let mut failures = Vec::new();
    for (path, what, offset) in &cases {
        let p = path.to_string_lossy().into_owned();
        for cmd in ["summary", "view"] {
            let out = dump_raw(&[cmd, &p]);
            let r = check_error(&out, 1, &[what]).and_then(|()| {
                let stderr = String::from_utf8_lossy(&out.stderr);
                ensure!(
                    stderr.contains(&p) && stderr.contains(offset),
                    "the message names not both the file and the {offset}: {stderr}"
                );
                Ok(())
            });
            if let Err(e) = r {
                failures.push(format!("{cmd} {p}: {e:#}"));
            }
        }
    }
    let _ = std::fs::remove_file(&foreign);
    let cut = reg.join("cut-mid-chunk.bin");
    let out = dump_raw(&["summary", &cut.to_string_lossy()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !(out.status.success()
        && !stderr.contains("panicked")
        && format!("{stdout}{stderr}").contains("cut short")
        && format!("{stdout}{stderr}").contains("offset 630"))
    {
        failures.push(format!(
            "summary of a file cut mid-chunk: {} stdout {stdout:?} stderr {stderr:?}",
            out.status
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `record` with neither `--pid` nor a command is bad usage: exit 2, a message saying what is
/// missing, no file written.
#[test]
fn record_without_pid_or_command_exits_2() {
    let out_file =
        std::env::temp_dir().join(format!("gilscope-nothing-{}.trace", std::process::id()));
    let out = dump_raw(&["record", "-o", &out_file.to_string_lossy()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "gilscope panicked: {stderr}");
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains("--pid") && stderr.contains("CMD"),
        "the message does not say to give --pid or a command: {stderr:?}"
    );
    assert!(!out_file.exists(), "a trace was written for nothing");
}
