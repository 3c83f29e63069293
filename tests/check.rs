//! `gilscope check` against real CPython processes running the gilext extension
//! (samples/gilext, built per interpreter by scripts/build-gilext) and ctypes, whose GIL
//! behaviour is the ground truth: which calls hold the GIL, in which native symbol, for how
//! long (samples/check_holds.py's table). Also the pytest suite end to end (red and green),
//! the free-threaded re-enable, `--subinterpreters`, the configuration file, exit codes, and
//! the fallbacks (no native stacks; a target under another root directory).
//!
//! The extension is built for the interpreters on the host's filesystem (pyenv 3.9–3.13 and
//! the free-threaded 3.13t); every interpreter, the Debian sid builds in their chroot
//! included, is checked with ctypes on libc.
//!
//! The checks run one at a time (`serial()`): each samples at 1 kHz and times native calls.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use common::*;
use serde_json::Value;

const CHECK_TIMEOUT: Duration = Duration::from_secs(120);
/// Each call of check_holds.py lasts this long.
const CALL_MS: f64 = 200.0;

/// Interpreters on the host filesystem (the extension is built and unwound there).
fn on_host(py: &Python) -> bool {
    py.chroot.is_none()
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gilscope-check-test-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).expect("scratch dir");
    d
}

/// `scripts/build-gilext --pytest PYTHON`: a directory with pytest for `py`.
fn pytest_for(py: &Python) -> Result<PathBuf> {
    let mut cmd = Command::new(repo_dir().join("scripts/build-gilext"));
    cmd.arg("--pytest").arg(&py.argv[0]);
    let o = output_with_timeout(cmd, Duration::from_secs(600))?;
    ensure!(
        o.status.success(),
        "installing pytest for {} failed: {}",
        py.argv[0],
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
}

/// The line of `samples/FILE` marked `# LINE:<name>`.
fn marked_line(file: &str, name: &str) -> Result<i64> {
    let text = fs::read_to_string(samples_dir().join(file))?;
    let tag = format!("# LINE:{name}");
    text.lines()
        .position(|l| l.trim_end().ends_with(&tag))
        .map(|i| i as i64 + 1)
        .with_context(|| format!("no `{tag}` in samples/{file}"))
}

struct Checked {
    out: Output,
    json: Option<Value>,
    stderr: String,
}

impl Checked {
    fn code(&self) -> Option<i32> {
        self.out.status.code()
    }
}

/// Python for a `-c` workload: `_wait_attached()` returns once `gilscope check` has sampled
/// this process for a while: its trace has the header (first sample) and then grew (first
/// chunk flushed, within a second) (see [`check`]); run by hand, it sleeps 1 s instead.
const WAIT_ATTACHED: &str = r#"
def _wait_attached():
    import os, time
    p = os.environ.get("GILSCOPE_TEST_ATTACHED")
    if not p:
        time.sleep(1.0)
        return
    # The command is recorded into TRACE, a descendant of it into TRACE.PID.EXT: this
    # process's is whichever gilscope writes.
    base, ext = os.path.splitext(p)
    paths = [p, "%s.%d%s" % (base, os.getpid(), ext)]
    t = time.time()
    first = 0
    # The header comes with the first sample, the first chunk within a second after it: wait
    # for that flush, so that sampling runs steadily when the first call starts.
    while not first or os.path.getsize(p) <= first:
        if time.time() - t > 60:
            raise SystemExit("gilscope check never flushed its first chunk (%s)" % paths)
        if not first:
            for q in paths:
                if os.path.exists(q) and os.path.getsize(q) > 0:
                    p, first = q, os.path.getsize(q)
        time.sleep(0.005)
"#;

/// `gilscope check --json J ARGS -- COMMAND` in `cwd` with `env`.
///
/// The command learns when it is being recorded: `check` writes the trace's header with its
/// first sample of the command and its first chunk within a second, so the test asks for a
/// trace (`--trace`, unless `args` has one) and passes its path, as the command sees it, in
/// `GILSCOPE_TEST_ATTACHED`. samples/check_holds.py and the [`WAIT_ATTACHED`] snippet wait for
/// that first flush before their first call: nothing is missed however long gilscope takes to
/// attach.
fn check(
    args: &[&str],
    command: Command,
    cwd: Option<&Path>,
    env: &[(&str, &str)],
) -> Result<Checked> {
    let dir = scratch("json");
    let json = dir.join("report.json");
    let mut cmd = gilscope(&["check", "--json"]);
    cmd.arg(&json).args(args);
    // A command run in a chroot (`chroot ROOT python …`) sees ROOT as /.
    let chroot = (command.get_program() == "chroot")
        .then(|| command.get_args().next().map(PathBuf::from))
        .flatten();
    let given = args
        .iter()
        .position(|a| *a == "--trace")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from);
    let gate = match given {
        Some(p) => p,
        None => {
            let gate_dir = match &chroot {
                Some(root) => root.join(format!("tmp/gilscope-check-gate-{}", std::process::id())),
                None => dir.clone(),
            };
            fs::create_dir_all(&gate_dir)?;
            let gate = gate_dir.join("attached.trace");
            let _ = fs::remove_file(&gate);
            cmd.arg("--trace").arg(&gate);
            gate
        }
    };
    let seen = match &chroot {
        Some(root) => Path::new("/").join(gate.strip_prefix(root).unwrap_or(&gate)),
        None => gate.clone(),
    };
    cmd.env("GILSCOPE_TEST_ATTACHED", &seen);
    cmd.arg("--");
    cmd.arg(command.get_program()).args(command.get_args());
    for (k, v) in command.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.env_remove("GITHUB_ACTIONS");
    if let Some(c) = cwd {
        cmd.current_dir(c);
    }
    let out = output_with_timeout(cmd, CHECK_TIMEOUT)?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = fs::read(&json)
        .ok()
        .map(|b| serde_json::from_slice::<Value>(&b))
        .transpose()
        .with_context(|| format!("parsing the JSON report; stderr:\n{stderr}"))?;
    let _ = fs::remove_dir_all(dir);
    if chroot.is_some() {
        if let Some(d) = gate.parent() {
            let _ = fs::remove_dir_all(d);
        }
    }
    Ok(Checked { out, json, stderr })
}

/// The holds that fail the check (not allowed: holds during imports are allowed by default,
/// and a loaded machine makes a dlopen slow enough to show up).
fn holds(j: &Value) -> Vec<&Value> {
    j["holds"]
        .as_array()
        .map(|v| v.iter().filter(|h| h["allowed"].is_null()).collect())
        .unwrap_or_default()
}

/// Holds allowed by the configuration (not the import ones).
fn allowed_holds(j: &Value) -> Vec<&Value> {
    j["holds"]
        .as_array()
        .map(|v| {
            v.iter()
                .filter(|h| !h["allowed"].is_null() && h["during_import"] == false)
                .collect()
        })
        .unwrap_or_default()
}

fn base(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// check_holds.py with all six calls: exactly the three holding ones are flagged, each with
/// the gilext object, its symbol, ~200 ms, and the Python line that made the call.
#[test]
fn native_holds_are_named_with_object_symbol_line_and_duration() {
    for_each_python(
        "native_holds_are_named",
        "a default-build interpreter on the host (pyenv)",
        |py| on_host(py) && !py.free_threaded,
        |py| {
            let _g = serial();
            let dir = build_gilext(py)?;
            let script = py.script_path("check_holds.py")?;
            let mut cmd = py.command(&[&script, &format!("{CALL_MS}").replace(".0", "")]);
            cmd.env("GILEXT_DIR", &dir);
            let r = check(&["--max-hold", "50ms"], cmd, None, &[])?;
            ensure!(
                r.code() == Some(1),
                "exit {:?}, want 1 (findings); stderr:\n{}",
                r.code(),
                r.stderr
            );
            let j = r.json.as_ref().context("no JSON report")?;
            let want = [
                ("gilext_hold_spin", "hold_spin"),
                ("gilext_hold_sleep", "hold_sleep"),
                ("gilext_c_spin", "pydll"),
            ];
            let got: BTreeSet<String> = holds(j)
                .iter()
                .map(|h| h["symbol"].as_str().unwrap_or("?").to_string())
                .collect();
            let want_set: BTreeSet<String> = want.iter().map(|(s, _)| s.to_string()).collect();
            ensure!(
                got == want_set,
                "flagged {got:?}, want {want_set:?}; stderr:\n{}",
                r.stderr
            );
            for (symbol, call) in want {
                let h = holds(j)
                    .into_iter()
                    .find(|h| h["symbol"] == symbol)
                    .context("missing")?;
                let obj = h["object"].as_str().unwrap_or("");
                ensure!(
                    base(obj).starts_with("gilext.") && Path::new(obj).starts_with(&dir),
                    "{symbol}: object {obj}, want gilext.* in {}",
                    dir.display()
                );
                ensure!(h["count"] == 1, "{symbol}: count {}", h["count"]);
                let ms = h["longest_ms"].as_f64().unwrap_or(0.0);
                ensure!(
                    (CALL_MS * 0.85..=CALL_MS * 1.3).contains(&ms),
                    "{symbol}: {ms:.1} ms, want ~{CALL_MS} ms"
                );
                let top = &h["examples"][0]["python_stack"][0];
                let line = marked_line("check_holds.py", call)?;
                ensure!(
                    top["function"] == "main" && top["line"] == line,
                    "{symbol}: called from {top}, want main at line {line}"
                );
                ensure!(
                    h["interpreters"] == serde_json::json!([0]),
                    "{symbol}: {}",
                    h["interpreters"]
                );
                println!("  {symbol}: {ms:.1} ms in {}", base(obj));
            }
            ensure!(
                r.stderr.contains("FAILED — 3 findings"),
                "stderr:\n{}",
                r.stderr
            );
            Ok(())
        },
    );
}

/// Only the releasing calls: clean, exit 0.
#[test]
fn releasing_calls_pass() {
    for_each_python(
        "releasing_calls_pass",
        "a default-build interpreter on the host",
        |py| on_host(py) && !py.free_threaded && py.minor == 12,
        |py| {
            let _g = serial();
            let dir = build_gilext(py)?;
            let script = py.script_path("check_holds.py")?;
            let mut cmd = py.command(&[&script, "200", "release_spin,release_sleep,cdll"]);
            cmd.env("GILEXT_DIR", &dir);
            let trace = scratch("trace").join("check.trace");
            let trace_s = trace.to_string_lossy().into_owned();
            let r = check(&["--trace", &trace_s], cmd, None, &[])?;
            ensure!(
                r.code() == Some(0),
                "exit {:?}; stderr:\n{}",
                r.code(),
                r.stderr
            );
            let j = r.json.as_ref().context("no JSON")?;
            ensure!(holds(j).is_empty(), "holds: {}", j["holds"]);
            ensure!(
                j["processes"][0]["samples"].as_u64().unwrap_or(0) > 100,
                "{}",
                j["processes"]
            );
            // --trace keeps the recording, readable by the other commands.
            ensure!(
                j["processes"][0]["trace"] == trace_s.as_str(),
                "{}",
                j["processes"][0]
            );
            let o = output_with_timeout(gilscope(&["summary", "--json", &trace_s]), CHECK_TIMEOUT)?;
            ensure!(
                o.status.success(),
                "summary: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            let summary: Value = serde_json::from_slice(&o.stdout)?;
            ensure!(summary["complete"] == true, "summary: {summary}");
            ensure!(r.stderr.contains("recording kept in"), "{}", r.stderr);
            Ok(())
        },
    );
}

/// Python processes the command starts are followed: here the command is a shell.
#[test]
fn subprocesses_are_followed() {
    for_each_python(
        "subprocesses_are_followed",
        "pyenv 3.12 on the host",
        |py| on_host(py) && !py.free_threaded && py.minor == 12,
        |py| {
            let _g = serial();
            let dir = build_gilext(py)?;
            let script = py.script_path("check_holds.py")?;
            let mut sh = Command::new("sh");
            sh.arg("-c")
                .arg(format!(
                    "\"{}\" \"{script}\" 150 hold_spin; true",
                    py.argv[0]
                ))
                .env("GILEXT_DIR", &dir);
            let r = check(&[], sh, None, &[])?;
            ensure!(
                r.code() == Some(1),
                "exit {:?}; stderr:\n{}",
                r.code(),
                r.stderr
            );
            let j = r.json.as_ref().context("no JSON")?;
            let procs = j["processes"].as_array().context("processes")?;
            ensure!(procs.len() == 1, "processes: {}", j["processes"]);
            let h = holds(j);
            ensure!(
                h.len() == 1
                    && h[0]["symbol"] == "gilext_hold_spin"
                    && h[0]["examples"][0]["pid"] == procs[0]["pid"],
                "holds: {}",
                j["holds"]
            );
            Ok(())
        },
    );
}

/// Exact mode gives the same findings (and cuts holds at releases samples would miss).
#[test]
fn exact_mode_agrees() {
    if skip_unless_possible("exact_mode_agrees") {
        return;
    }
    for_each_python(
        "exact_mode_agrees",
        "pyenv 3.12 (symbols for the uprobes)",
        |py| on_host(py) && !py.free_threaded && py.minor == 12,
        |py| {
            let _g = serial();
            let dir = build_gilext(py)?;
            let script = py.script_path("check_holds.py")?;
            let mut cmd = py.command(&[&script, "200", "hold_spin,release_spin,pydll"]);
            // The probes are set up before check's first sample, which the sample waits for.
            cmd.env("GILEXT_DIR", &dir);
            let r = check(&["--mode", "exact"], cmd, None, &[])?;
            ensure!(
                r.code() == Some(1),
                "exit {:?}; stderr:\n{}",
                r.code(),
                r.stderr
            );
            ensure!(r.stderr.contains("mode: exact"), "not exact: {}", r.stderr);
            let j = r.json.as_ref().context("no JSON")?;
            let got: BTreeSet<&str> = holds(j)
                .iter()
                .filter_map(|h| h["symbol"].as_str())
                .collect();
            ensure!(
                got == BTreeSet::from(["gilext_hold_spin", "gilext_c_spin"]),
                "exact: {got:?}\n{}",
                r.stderr
            );
            for h in holds(j) {
                let ms = h["longest_ms"].as_f64().unwrap_or(0.0);
                ensure!((170.0..=260.0).contains(&ms), "{}: {ms} ms", h["symbol"]);
            }

            // gilext.hold_chunked releases the GIL for microseconds every millisecond: no hold
            // is longer than ~1 ms. Samples (1 kHz) miss the releases; the probes do not.
            let src = format!(
                "{WAIT_ATTACHED}\nimport os, sys, time\nsys.path.insert(0, os.environ['GILEXT_DIR'])\nimport gilext\n_wait_attached()\ngilext.hold_chunked(300)\ntime.sleep(0.1)\n"
            );
            let src = src.as_str();
            let mut cmd = py.command(&["-c", src]);
            cmd.env("GILEXT_DIR", &dir);
            let r = check(&["--mode", "exact"], cmd, None, &[])?;
            ensure!(
                r.code() == Some(0),
                "chunked, exact: exit {:?}; stderr:\n{}",
                r.code(),
                r.stderr
            );
            let mut cmd = py.command(&["-c", src]);
            cmd.env("GILEXT_DIR", &dir);
            let sampled = check(&["--mode", "sampling"], cmd, None, &[])?;
            // Samples at 1 kHz never see a release of microseconds: sampling reports the whole
            // call as one hold (or a few) of gilext_hold_chunked and fails — the false finding
            // docs/ci.md describes, which exact mode avoids.
            ensure!(
                sampled.code() == Some(1),
                "chunked, sampling: exit {:?}, want 1 (a hold of gilext_hold_chunked); stderr:\n{}",
                sampled.code(),
                sampled.stderr
            );
            let j = sampled.json.as_ref().context("no JSON")?;
            let syms: BTreeSet<&str> = holds(j)
                .iter()
                .filter_map(|h| h["symbol"].as_str())
                .collect();
            ensure!(
                syms == BTreeSet::from(["gilext_hold_chunked"]),
                "chunked, sampling: holds {syms:?}, want only gilext_hold_chunked\n{}",
                sampled.stderr
            );
            let total: f64 = holds(j).iter().filter_map(|h| h["total_ms"].as_f64()).sum();
            ensure!(
                total >= 0.5 * 300.0,
                "chunked, sampling: {total:.0} ms of holds for a 300 ms call"
            );
            println!(
                "  hold_chunked: exact: clean; sampling: {total:.0} ms of gilext_hold_chunked holds"
            );
            Ok(())
        },
    );
}

/// `check`'s default mode arms the uprobes at launch, before the command runs Python: a
/// command that calls `gilext.hold_chunked(300)` (a release of microseconds every millisecond
/// for 300 ms) right after its imports, without waiting for the recorder, passes, and the
/// probes saw its releases (≥ 300 `drop_gil` hits: set up after start-up, as before, they
/// came 0.1–2 s late and saw none of them). Launched plainly and through `env` (an exec
/// wrapper followed to the Python it execs). `--mode sampling` of the same command fails:
/// the samples were there from the start too, and miss the releases.
#[test]
fn exact_from_the_first_instruction() {
    if skip_unless_possible("exact_from_the_first_instruction") {
        return;
    }
    for_each_python(
        "exact_from_the_first_instruction",
        "a GIL build on the host with symbols (pyenv)",
        |py| on_host(py) && !py.free_threaded && !py.stripped,
        |py| {
            let _g = serial();
            let dir = build_gilext(py)?;
            let src = "import os, sys, time\nsys.path.insert(0, os.environ['GILEXT_DIR'])\nimport gilext\ngilext.hold_chunked(300)\ntime.sleep(0.05)\n";
            for wrapped in [false, true] {
                let mut cmd = if wrapped {
                    let mut c = Command::new("env");
                    c.arg(&py.argv[0]).args(&py.argv[1..]).args(["-c", src]);
                    c
                } else {
                    py.command(&["-c", src])
                };
                cmd.env("GILEXT_DIR", &dir);
                let r = check(&[], cmd, None, &[])?;
                let how = if wrapped { "through env" } else { "plainly" };
                ensure!(
                    r.code() == Some(0),
                    "{how}: exit {:?}, want 0; stderr:\n{}",
                    r.code(),
                    r.stderr
                );
                ensure!(
                    r.stderr.contains("mode: exact from the first instruction"),
                    "{how}: the probes were not armed at launch; stderr:\n{}",
                    r.stderr
                );
                let drops: u64 = r
                    .stderr
                    .lines()
                    .find(|l| l.contains("GIL events of process"))
                    .and_then(|l| l.split(", ").find(|p| p.ends_with(" drop_gil)")))
                    .and_then(|p| p.split_whitespace().next())
                    .and_then(|n| n.parse().ok())
                    .with_context(|| format!("{how}: no drop_gil count; stderr:\n{}", r.stderr))?;
                ensure!(
                    drops >= 300,
                    "{how}: the probes saw {drops} drop_gil hits, want ≥ 300 (one per chunk)\n{}",
                    r.stderr
                );
                println!("  {}: {how}: clean, {drops} drop_gil hits", py.name);
            }
            let mut cmd = py.command(&["-c", src]);
            cmd.env("GILEXT_DIR", &dir);
            let sampled = check(&["--mode", "sampling"], cmd, None, &[])?;
            ensure!(
                sampled.code() == Some(1),
                "sampling: exit {:?}, want 1 (a hold of gilext_hold_chunked); stderr:\n{}",
                sampled.code(),
                sampled.stderr
            );
            Ok(())
        },
    );
}

/// The pytest suite: red naming the function while it holds the GIL, green once it releases;
/// JUnit and GitHub annotations point at it.
#[test]
fn pytest_suite_red_then_green() {
    for_each_python(
        "pytest_suite_red_then_green",
        "pyenv 3.9 and 3.12 on the host",
        |py| on_host(py) && !py.free_threaded && (py.minor == 12 || py.minor == 9),
        |py| {
            let _g = serial();
            let dir = build_gilext(py)?;
            let site = pytest_for(py)?;
            let suite = samples_dir().join("check_pytest");
            let line = {
                let text = fs::read_to_string(suite.join("test_gilext.py"))?;
                text.lines()
                    .position(|l| l.contains("gilext.hold_spin(MS)"))
                    .context("no hold_spin call in test_gilext.py")? as i64
                    + 1
            };
            let run = |hold: bool, extra: &[&str]| -> Result<Checked> {
                let mut cmd = py.command(&[
                    "-m",
                    "pytest",
                    "-q",
                    "-p",
                    "no:cacheprovider",
                    "samples/check_pytest",
                ]);
                cmd.env("GILEXT_DIR", &dir)
                    .env("PYTHONPATH", &site)
                    .env("GILEXT_MS", "150");
                if hold {
                    cmd.env("GILEXT_HOLD", "1");
                }
                check(extra, cmd, Some(repo_dir()), &[])
            };
            // Red: JUnit names the function; the GitHub annotation sits on the test's line.
            let junit = scratch("junit").join("gil.xml");
            let junit_s = junit.to_string_lossy().into_owned();
            let red = run(true, &["--junit", &junit_s, "--github"])?;
            ensure!(
                red.code() == Some(1),
                "red: exit {:?}; stderr:\n{}",
                red.code(),
                red.stderr
            );
            let xml = fs::read_to_string(&junit)?;
            ensure!(
                xml.contains(r#"failures="1""#)
                    && xml.contains("gilext_hold_spin")
                    && xml.contains("<failure"),
                "junit:\n{xml}"
            );
            let stdout = String::from_utf8_lossy(&red.out.stdout);
            let want = format!("line={line},title=GIL held");
            ensure!(
                stdout.lines().any(|l| l.starts_with("::error file=")
                    && l.contains("test_gilext.py")
                    && l.contains(&want)),
                "no annotation with {want} on stdout:\n{stdout}"
            );
            ensure!(
                stdout.contains("2 passed"),
                "pytest itself passed: {stdout}"
            );
            // Green.
            let green = run(false, &[])?;
            ensure!(
                green.code() == Some(0),
                "green: exit {:?}; stderr:\n{}",
                green.code(),
                green.stderr
            );
            ensure!(
                green.stderr.contains("gilscope check: passed"),
                "{}",
                green.stderr
            );
            Ok(())
        },
    );
}

/// Free-threaded: gilext (Py_MOD_GIL_NOT_USED) leaves the GIL off and nothing holds a GIL;
/// importing gilext_gil re-enables it and is named.
#[test]
fn freethreaded_reenable_is_named() {
    for_each_python(
        "freethreaded_reenable_is_named",
        "a free-threaded interpreter on the host",
        |py| on_host(py) && py.free_threaded,
        |py| {
            let _g = serial();
            let dir = build_gilext(py)?;
            let script = py.script_path("check_ft_reenable.py")?;
            let mut cmd = py.command(&[&script]);
            cmd.env("GILEXT_DIR", &dir);
            let r = check(&[], cmd, None, &[])?;
            ensure!(
                r.code() == Some(1),
                "exit {:?}; stderr:\n{}",
                r.code(),
                r.stderr
            );
            let j = r.json.as_ref().context("no JSON")?;
            let re = j["gil_reenabled"].as_array().context("gil_reenabled")?;
            ensure!(re.len() == 1, "gil_reenabled: {}", j["gil_reenabled"]);
            let names: Vec<&str> = re[0]["modules"]
                .as_array()
                .map(|m| m.iter().filter_map(|x| x["name"].as_str()).collect())
                .unwrap_or_default();
            ensure!(
                names.first() == Some(&"gilext_gil"),
                "named {names:?}; want gilext_gil first"
            );
            ensure!(
                !names.contains(&"gilext"),
                "gilext declares NOT_USED: {names:?}"
            );
            ensure!(r.stderr.contains("gilext_gil"), "{}", r.stderr);

            // GIL disabled throughout: the holding calls hold nothing.
            let script = py.script_path("check_holds.py")?;
            let mut cmd = py.command(&[&script, "150", "hold_spin,pydll"]);
            cmd.env("GILEXT_DIR", &dir);
            let r = check(&[], cmd, None, &[])?;
            ensure!(
                r.code() == Some(0),
                "GIL disabled: exit {:?}; stderr:\n{}",
                r.code(),
                r.stderr
            );
            Ok(())
        },
    );
}

/// A hold inside an own-GIL sub-interpreter is reported against that interpreter's GIL.
#[test]
fn hold_in_a_subinterpreter_names_its_interpreter() {
    for_each_python(
        "hold_in_a_subinterpreter_names_its_interpreter",
        "a 3.12+ default build on the host",
        |py| on_host(py) && !py.free_threaded && py.minor >= 12,
        |py| {
            let _g = serial();
            let dir = build_gilext(py)?;
            let src = format!(
                "{WAIT_ATTACHED}{}",
                r#"import os, sys, time
d = os.environ["GILEXT_DIR"]
try:
    import _interpreters as I
    iid, run = I.create("isolated"), I.exec
except ImportError:
    import _xxsubinterpreters as I
    iid, run = I.create(), I.run_string
print(int(iid), flush=True)
_wait_attached()
r = run(iid, "import sys; sys.path.insert(0, %r); import gilext; gilext.hold_spin(200)" % d)
assert r is None, r
time.sleep(0.1)
"#
            );
            let mut cmd = py.command(&["-c", &src]);
            cmd.env("GILEXT_DIR", &dir);
            let r = check(&[], cmd, None, &[])?;
            ensure!(
                r.code() == Some(1),
                "exit {:?}; stderr:\n{}",
                r.code(),
                r.stderr
            );
            let stdout = String::from_utf8_lossy(&r.out.stdout);
            let iid: i64 = stdout
                .lines()
                .next()
                .and_then(|l| l.trim().parse().ok())
                .with_context(|| format!("no interpreter id on stdout: {stdout:?}"))?;
            ensure!(iid > 0, "sub-interpreter id {iid}");
            let j = r.json.as_ref().context("no JSON")?;
            let h = holds(j);
            ensure!(
                h.len() == 1 && h[0]["symbol"] == "gilext_hold_spin",
                "holds: {}",
                j["holds"]
            );
            ensure!(
                h[0]["interpreters"] == serde_json::json!([iid]),
                "held the GIL of {}, want interpreter {iid}",
                h[0]["interpreters"]
            );
            ensure!(
                h[0]["examples"][0]["interpreter"] == iid,
                "{}",
                h[0]["examples"][0]
            );
            Ok(())
        },
    );
}

/// `--subinterpreters`: gilext_legacy (NOT_SUPPORTED) is flagged, gilext is not.
#[test]
fn subinterpreter_import_check() {
    for_each_python(
        "subinterpreter_import_check",
        "a 3.12+ interpreter on the host",
        |py| on_host(py) && py.minor >= 12,
        |py| {
            let _g = serial();
            let dir = build_gilext(py)?;
            let script = py.script_path("check_subinterp.py")?;
            let mut cmd = py.command(&[&script]);
            cmd.env("GILEXT_DIR", &dir);
            let r = check(&["--subinterpreters"], cmd, None, &[])?;
            ensure!(
                r.code() == Some(1),
                "exit {:?}; stderr:\n{}",
                r.code(),
                r.stderr
            );
            let j = r.json.as_ref().context("no JSON")?;
            let names: Vec<&str> = j["subinterpreters"]
                .as_array()
                .context("subinterpreters")?
                .iter()
                .filter_map(|p| p["module"]["name"].as_str())
                .collect();
            ensure!(
                names == ["gilext_legacy"],
                "flagged {names:?}; stderr:\n{}",
                r.stderr
            );
            Ok(())
        },
    );
}

/// `[tool.gilscope]`: an allow-list entry turns the finding into "allowed" (exit 0); an
/// unknown key is an error naming it (exit 2) before anything runs.
#[test]
fn pyproject_allow_list_and_unknown_keys() {
    for_each_python(
        "pyproject_allow_list_and_unknown_keys",
        "pyenv 3.12 on the host",
        |py| on_host(py) && !py.free_threaded && py.minor == 12,
        |py| {
            let _g = serial();
            let dir = build_gilext(py)?;
            let proj = scratch("pyproject");
            fs::write(
                proj.join("pyproject.toml"),
                "[project]\nname = \"x\"\n\n[tool.gilscope]\nmax-hold = \"40ms\"\nallow = [\n  { object = \"gilext.*.so\", symbol = \"gilext_hold_*\", reason = \"known: the test's own holder\" },\n]\n",
            )?;
            let script = py.script_path("check_holds.py")?;
            let mut cmd = py.command(&[&script, "120", "hold_spin"]);
            cmd.env("GILEXT_DIR", &dir);
            let r = check(&[], cmd, Some(&proj), &[])?;
            ensure!(
                r.code() == Some(0),
                "allowed: exit {:?}; stderr:\n{}",
                r.code(),
                r.stderr
            );
            let j = r.json.as_ref().context("no JSON")?;
            ensure!(
                j["max_hold_ms"] == 40.0,
                "max-hold from the file: {}",
                j["max_hold_ms"]
            );
            let h = allowed_holds(j);
            ensure!(
                h.len() == 1 && h[0]["allowed"] == "known: the test's own holder",
                "holds: {}; stderr:\n{}",
                j["holds"],
                r.stderr
            );
            ensure!(r.stderr.contains("allowed: known"), "{}", r.stderr);

            fs::write(
                proj.join("pyproject.toml"),
                "[tool.gilscope]\nmax_hold = 20\n",
            )?;
            let cmd = py.command(&["-c", "pass"]);
            let r = check(&[], cmd, Some(&proj), &[])?;
            ensure!(
                r.code() == Some(2),
                "unknown key: exit {:?}; stderr:\n{}",
                r.code(),
                r.stderr
            );
            ensure!(
                r.stderr.contains("max_hold") && r.stderr.contains("pyproject.toml"),
                "{}",
                r.stderr
            );
            let _ = fs::remove_dir_all(proj);
            Ok(())
        },
    );
}

/// The command's own status wins (unless ignored); a command that is no Python process is
/// "could not run" (2).
#[test]
fn exit_codes() {
    for_each_python(
        "exit_codes",
        "pyenv 3.12 on the host",
        |py| on_host(py) && !py.free_threaded && py.minor == 12,
        |py| {
            let _g = serial();
            let cmd = py.command(&["-c", "import time, sys; time.sleep(0.3); sys.exit(3)"]);
            let r = check(&[], cmd, None, &[])?;
            ensure!(
                r.code() == Some(3),
                "command status: {:?}; {}",
                r.code(),
                r.stderr
            );
            ensure!(r.stderr.contains("exited with status 3"), "{}", r.stderr);
            let cmd = py.command(&["-c", "import time, sys; time.sleep(0.3); sys.exit(3)"]);
            let r = check(&["--ignore-command-status"], cmd, None, &[])?;
            ensure!(r.code() == Some(0), "ignored: {:?}; {}", r.code(), r.stderr);
            let r = check(&[], Command::new("true"), None, &[])?;
            ensure!(
                r.code() == Some(2),
                "not Python: {:?}; {}",
                r.code(),
                r.stderr
            );
            ensure!(r.stderr.contains("nothing was checked"), "{}", r.stderr);
            let o = output_with_timeout(
                gilscope(&["check", "--max-hold", "soon", "--", "true"]),
                CHECK_TIMEOUT,
            )?;
            ensure!(
                o.status.code() == Some(2),
                "bad --max-hold: {:?}",
                o.status.code()
            );
            Ok(())
        },
    );
}

/// On every interpreter with a GIL: a libc function called through ctypes.PyDLL is found,
/// timed and named (usleep in libc — the target's own libc for the chroot builds, with
/// Debian's stripped python named through its debug files); with `--no-native` it is still
/// found, timed and named: from the ctypes function object on the Python frame's value stack.
#[test]
fn ctypes_libc_hold_on_every_interpreter() {
    for_each_python(
        "ctypes_libc_hold_on_every_interpreter",
        "every interpreter with a GIL",
        |py| !py.free_threaded,
        |py| {
            let _g = serial();
            let src = format!("{WAIT_ATTACHED}\nimport ctypes, time\n_wait_attached()\nctypes.PyDLL(None).usleep(200000)  # LINE:usleep\ntime.sleep(0.1)\n");
            let usleep_line = src
                .lines()
                .position(|l| l.ends_with("# LINE:usleep"))
                .map(|i| i + 1)
                .context("no usleep line")?;
            let src = src.as_str();
            for native in [true, false] {
                let args: &[&str] = if native { &[] } else { &["--no-native"] };
                let r = check(args, py.command(&["-c", src]), None, &[])?;
                ensure!(
                    r.code() == Some(1),
                    "exit {:?}; stderr:\n{}",
                    r.code(),
                    r.stderr
                );
                let j = r.json.as_ref().context("no JSON")?;
                let h = holds(j);
                ensure!(h.len() == 1, "holds: {}", j["holds"]);
                let ms = h[0]["longest_ms"].as_f64().unwrap_or(0.0);
                ensure!((170.0..=260.0).contains(&ms), "{ms} ms, want ~200");
                ensure!(
                    h[0]["examples"][0]["python_stack"][0]["line"] == usleep_line,
                    "{}",
                    h[0]["examples"][0]
                );
                if native {
                    let obj = h[0]["object"].as_str().unwrap_or("");
                    ensure!(
                        h[0]["symbol"] == "usleep" && base(obj).starts_with("libc"),
                        "named {} in {obj}, want usleep in libc",
                        h[0]["symbol"]
                    );
                    let stack: Vec<&str> = h[0]["examples"][0]["native_stack"]
                        .as_array()
                        .map(|v| v.iter().filter_map(|f| f["symbol"].as_str()).collect())
                        .unwrap_or_default();
                    ensure!(
                        stack
                            .iter()
                            .any(|s| s.contains("EvalFrame") || *s == "PyEval_EvalCode"),
                        "the native stack does not reach the interpreter: {stack:?}"
                    );
                } else {
                    // No native stack: named by the ctypes function object the Python frame
                    // is calling (its __name__ and the file its code pointer is in).
                    let obj = h[0]["object"].as_str().unwrap_or("");
                    ensure!(
                        h[0]["symbol"] == "usleep"
                            && base(obj).starts_with("libc")
                            && h[0]["class"] == "extension",
                        "--no-native: named {} in {obj} (class {}), want usleep in libc; stderr:\n{}",
                        h[0]["symbol"],
                        h[0]["class"],
                        r.stderr
                    );
                    let why = h[0]["named_from_call"].as_str().unwrap_or("");
                    ensure!(why.contains("--no-native"), "named_from_call {why:?}");
                    ensure!(
                        r.stderr
                            .contains("named by the C function its Python frame called"),
                        "stderr:\n{}",
                        r.stderr
                    );
                }
            }
            Ok(())
        },
    );
}

/// `scripts/build-realext PYTHON DIR`: pybind11 and Cython modules built for `py` (cached).
/// The line of a hold's longest example's call site.
fn call_line(h: &Value) -> i64 {
    h["examples"][0]["python_stack"][0]["line"]
        .as_i64()
        .unwrap_or(0)
}

/// Extensions built with pybind11 (a loop on std::chrono::steady_clock, i.e. through libc
/// into the vDSO, and a plain arithmetic loop, both -O2 without frame pointers) and Cython
/// (clock_gettime in a loop): each holding call is named by its own object and function at
/// its Python line; the calls that release the GIL (gil_scoped_release, `with nogil`) are
/// clean. A free-threaded build with the GIL off has nothing to flag.
#[test]
fn pybind11_and_cython_holds_are_named() {
    for_each_python(
        "pybind11_and_cython_holds_are_named",
        "an interpreter on the host",
        on_host,
        |py| {
            let _g = serial();
            let dir = build_realext(py)?;
            let script = py.script_path("check_realext.py")?;
            let cmd = py.command(&[&script, &dir.to_string_lossy(), "300"]);
            let r = check(&["--max-hold", "50ms"], cmd, None, &[])?;
            let j = r.json.as_ref().context("no JSON report")?;
            if py.free_threaded {
                ensure!(
                    r.code() == Some(0) && holds(j).is_empty(),
                    "GIL disabled: want a clean run, got exit {:?}; stderr:\n{}",
                    r.code(),
                    r.stderr
                );
                return Ok(());
            }
            ensure!(
                r.code() == Some(1),
                "exit {:?}, want 1; stderr:\n{}",
                r.code(),
                r.stderr
            );
            let want = [
                ("chrono", "pbext.", "heavy::chrono_loop(long)"),
                ("crunch", "pbext.", "heavy::crunch(long)"),
                ("cy_gil", "cyext.", "__pyx_pw_5cyext_1spin_gil"),
            ];
            let found = holds(j);
            ensure!(
                found.len() == want.len(),
                "{} findings, want {}; stderr:\n{}",
                found.len(),
                want.len(),
                r.stderr
            );
            for (mark, object, symbol) in want {
                let line = marked_line("check_realext.py", mark)?;
                let h = found
                    .iter()
                    .find(|h| call_line(h) == line)
                    .with_context(|| {
                        format!("no finding at line {line} ({mark}); stderr:\n{}", r.stderr)
                    })?;
                let obj = base(h["object"].as_str().unwrap_or(""));
                ensure!(
                    obj.starts_with(object) && h["symbol"] == symbol && h["class"] == "extension",
                    "{mark}: named {obj} {}, class {}; want {object}… {symbol}; stderr:\n{}",
                    h["symbol"],
                    h["class"],
                    r.stderr
                );
                let ms = h["longest_ms"].as_f64().unwrap_or(0.0);
                // The call lasts 300 ms; a starved sampler's snapshot times stretch or shrink
                // the estimate by a few periods.
                ensure!(
                    (200.0..=400.0).contains(&ms),
                    "{mark}: {ms} ms, the call lasts 300"
                );
            }
            Ok(())
        },
    );
}

/// With `--no-native` (no ptrace, no unwinding), the pybind11 and Cython holds are still named
/// from memory alone: the `PyCFunctionObject` (Cython's function type starts with one) the
/// innermost Python frame is calling, its `ml_name`, its module and the `.so` its `ml_meth` is
/// in. The free-threaded build runs with `PYTHON_GIL=1`, so that it has a GIL to hold.
#[test]
fn no_native_holds_are_named_by_the_called_function() {
    for_each_python(
        "no_native_holds_are_named_by_the_called_function",
        "an interpreter on the host",
        on_host,
        |py| {
            let _g = serial();
            let dir = build_realext(py)?;
            let script = py.script_path("check_realext.py")?;
            let cmd = py.command(&[&script, &dir.to_string_lossy(), "300"]);
            let env: &[(&str, &str)] = if py.free_threaded {
                &[("PYTHON_GIL", "1")]
            } else {
                &[]
            };
            let r = check(&["--max-hold", "50ms", "--no-native"], cmd, None, env)?;
            ensure!(
                r.code() == Some(1),
                "exit {:?}, want 1; stderr:\n{}",
                r.code(),
                r.stderr
            );
            let j = r.json.as_ref().context("no JSON report")?;
            let want = [
                ("chrono", "pbext.", "chrono_spin", "pbext"),
                ("crunch", "pbext.", "crunch", "pbext"),
                ("cy_gil", "cyext.", "spin_gil", "cyext"),
            ];
            let found = holds(j);
            ensure!(
                found.len() == want.len(),
                "{} findings, want {}; stderr:\n{}",
                found.len(),
                want.len(),
                r.stderr
            );
            for (mark, object, symbol, module) in want {
                let line = marked_line("check_realext.py", mark)?;
                let h = found
                    .iter()
                    .find(|h| call_line(h) == line)
                    .with_context(|| {
                        format!("no finding at line {line} ({mark}); stderr:\n{}", r.stderr)
                    })?;
                let obj = h["object"].as_str().unwrap_or("");
                ensure!(
                    base(obj).starts_with(object)
                        && Path::new(obj).starts_with(&dir)
                        && h["symbol"] == symbol
                        && h["module"] == module
                        && h["class"] == "extension",
                    "{mark}: named {} in {} ({obj}), class {}; want {symbol} in {module} \
                     ({object}…); stderr:\n{}",
                    h["symbol"],
                    h["module"],
                    h["class"],
                    r.stderr
                );
                let why = h["named_from_call"].as_str().unwrap_or("");
                ensure!(
                    why.contains("--no-native"),
                    "{mark}: named_from_call {why:?}"
                );
                let ms = h["longest_ms"].as_f64().unwrap_or(0.0);
                ensure!(
                    (200.0..=400.0).contains(&ms),
                    "{mark}: {ms} ms, the call lasts 300"
                );
            }
            Ok(())
        },
    );
}

/// A pure-Python pytest suite with heavy garbage-collector pressure and big `sorted`/`sum`/
/// `str.join` calls: every long hold is CPython's own work, so the check passes, with the
/// collections in their own section and the builtins as notices. The same run fails with
/// `--include-interpreter` and with a `--max-gc-pause` below its longest collection.
#[test]
fn pure_python_gc_suite_passes() {
    for_each_python(
        "pure_python_gc_suite_passes",
        "an interpreter on the host",
        on_host,
        |py| {
            let _g = serial();
            let site = pytest_for(py)?;
            let cmd = || {
                let mut c = py.command(&[
                    "-m",
                    "pytest",
                    "-q",
                    "-p",
                    "no:cacheprovider",
                    "samples/check_gc_suite",
                ]);
                c.env("PYTHONPATH", &site);
                c
            };
            // A low limit: the collections and builtins of the suite are well over it.
            let r = check(&["--max-hold", "20ms"], cmd(), Some(repo_dir()), &[])?;
            let j = r.json.as_ref().context("no JSON report")?;
            ensure!(
                r.code() == Some(0) && j["failures"] == 0,
                "exit {:?}, want 0; stderr:\n{}",
                r.code(),
                r.stderr
            );
            let gc = j["gc"].as_array().context("no gc section")?;
            let longest = gc
                .iter()
                .filter_map(|g| g["longest_ms"].as_f64())
                .fold(0.0, f64::max);
            ensure!(
                longest >= 20.0,
                "the suite's full collections take tens of ms; gc section: {gc:?}"
            );
            if !py.free_threaded {
                let notices = j["holds"]
                    .as_array()
                    .map(|v| v.iter().filter(|h| h["class"] == "interpreter").count())
                    .unwrap_or(0);
                ensure!(
                    notices > 0,
                    "sorted() over 600k floats holds the GIL ≥ 20 ms: want a notice; stderr:\n{}",
                    r.stderr
                );
            }
            if py.minor == 12 && !py.free_threaded {
                let r = check(
                    &["--max-hold", "20ms", "--include-interpreter"],
                    cmd(),
                    Some(repo_dir()),
                    &[],
                )?;
                ensure!(
                    r.code() == Some(1),
                    "--include-interpreter: exit {:?}, want 1; stderr:\n{}",
                    r.code(),
                    r.stderr
                );
                let r = check(
                    &["--max-hold", "20ms", "--max-gc-pause", "5ms"],
                    cmd(),
                    Some(repo_dir()),
                    &[],
                )?;
                let j = r.json.as_ref().context("no JSON report")?;
                let failed_gc = j["gc"]
                    .as_array()
                    .map(|v| v.iter().filter(|g| g["failed"] == true).count())
                    .unwrap_or(0);
                ensure!(
                    r.code() == Some(1) && failed_gc > 0,
                    "--max-gc-pause 5ms: exit {:?}, {failed_gc} failed; stderr:\n{}",
                    r.code(),
                    r.stderr
                );
            }
            Ok(())
        },
    );
}

/// A command that does not exist is one clear error line (exit 2); a command killed by a
/// signal has the signal named, and its status (128 + N) is check's.
#[test]
fn missing_command_and_killing_signal_are_said_plainly() {
    let out = output_with_timeout(
        gilscope(&["check", "--", "no-such-command-gilscope"]),
        CHECK_TIMEOUT,
    )
    .expect("gilscope runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(out.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(
        errors.len() == 1 && errors[0].contains("no such command"),
        "want one error line naming the missing command; stderr:\n{stderr}"
    );
    for_each_python(
        "missing_command_and_killing_signal",
        "pyenv 3.12 on the host",
        |py| on_host(py) && py.minor == 12 && !py.free_threaded,
        |py| {
            let _g = serial();
            let cmd = py.command(&[
                "-c",
                "import os, signal, time; time.sleep(1.5); os.kill(os.getpid(), signal.SIGKILL)",
            ]);
            let r = check(&[], cmd, None, &[])?;
            ensure!(
                r.code() == Some(137) && r.stderr.contains("killed by SIGKILL (signal 9)"),
                "exit {:?}; stderr:\n{}",
                r.code(),
                r.stderr
            );
            Ok(())
        },
    );
}

/// A process that imports its extensions as its very last act and exits at once:
/// `--subinterpreters` still sees every extension it loaded (its maps are read at its exit
/// stop), and names exactly the ones an own-GIL sub-interpreter refuses — pybind11's legacy
/// declaration and Cython's default — not the module declared per-interpreter-GIL. (The
/// short sleep first lets gilscope attach: a process gone before that is not seen at all;
/// docs/ci.md says so.)
#[test]
fn short_process_subinterpreter_refusals() {
    for_each_python(
        "short_process_subinterpreter_refusals",
        "a default-build interpreter ≥ 3.12 on the host",
        |py| on_host(py) && !py.free_threaded && py.minor >= 12,
        |py| {
            let _g = serial();
            let dir = build_realext(py)?;
            let cmd = py.command(&[
                "-c",
                "import time; time.sleep(1.0); import pbext_legacy, pbext, cyext",
            ]);
            let r = check(&["--subinterpreters"], cmd, Some(&dir), &[])?;
            let j = r.json.as_ref().context("no JSON report")?;
            let names: BTreeSet<String> = j["subinterpreters"]
                .as_array()
                .context("subinterpreters not checked")?
                .iter()
                .filter_map(|p| p["module"]["name"].as_str().map(str::to_string))
                .collect();
            let want: BTreeSet<String> = ["cyext", "pbext_legacy"].map(String::from).into();
            ensure!(
                r.code() == Some(1) && names == want,
                "exit {:?}, refused {names:?}, want {want:?}; stderr:\n{}",
                r.code(),
                r.stderr
            );
            Ok(())
        },
    );
}

/// A stripped PyO3 wheel from PyPI (orjson: no .symtab, no debug file) holding the GIL in
/// `orjson.dumps`: the finding names the exported `dumps` (or the code after it, `~dumps`:
/// the nearest exported symbol, marked approximate) and the module as imported
/// (`orjson.orjson`), not `? in orjson…so`; every frame of the object has a name or a file
/// offset.
#[test]
fn stripped_wheel_is_named_by_its_exported_symbol() {
    for_each_python(
        "stripped_wheel_is_named_by_its_exported_symbol",
        "pyenv 3.12 on the host",
        |py| on_host(py) && py.minor == 12 && !py.free_threaded,
        |py| {
            let _g = serial();
            let site = std::env::temp_dir().join(format!("gilscope-orjson-{}", py.name));
            if !site.join("orjson").is_dir() {
                let mut pip = py.command(&[
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "--target",
                    &site.to_string_lossy(),
                    "orjson==3.10.18",
                ]);
                pip.env("PIP_NO_INPUT", "1");
                let o = output_with_timeout(pip, Duration::from_secs(300))?;
                ensure!(
                    o.status.success(),
                    "pip install orjson: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
            }
            let script = py.script_path("check_orjson.py")?;
            let cmd = py.command(&[&script, &site.to_string_lossy()]);
            let r = check(&["--max-hold", "20ms"], cmd, None, &[])?;
            let j = r.json.as_ref().context("no JSON report")?;
            let line = marked_line("check_orjson.py", "dumps")?;
            let h = holds(j)
                .into_iter()
                .find(|h| call_line(h) == line)
                .with_context(|| format!("no finding at line {line}; stderr:\n{}", r.stderr))?;
            // "dumps" when the sample caught the exported function itself, "~dumps" when it
            // caught code after it (a local function of the stripped object).
            ensure!(
                (h["symbol"] == "dumps" || h["symbol"] == "~dumps")
                    && h["module"] == "orjson.orjson"
                    && base(h["object"].as_str().unwrap_or("")).starts_with("orjson."),
                "named {} in {} ({}); stderr:\n{}",
                h["symbol"],
                h["module"],
                h["object"],
                r.stderr
            );
            let frames = h["examples"][0]["native_stack"]
                .as_array()
                .context("no native stack")?;
            let in_orjson =
                |f: &&Value| base(f["object"].as_str().unwrap_or("")).starts_with("orjson.");
            ensure!(
                frames
                    .iter()
                    .filter(in_orjson)
                    .all(|f| f["symbol"].is_string() || f["file_offset"].is_u64()),
                "a frame of the stripped object has neither a name nor a file offset: {frames:?}"
            );
            Ok(())
        },
    );
}
