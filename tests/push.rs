//! `gilscope record --pyroscope URL`: pushing pprof windows to a loopback stand-in for
//! Pyroscope's ingest API (tests/pyroscope_receiver.py), which checks each request's query
//! parameters and stores each profile; every stored profile is then read with
//! `go tool pprof`.
//!
//! The receiver is killed mid-run and started again on the same port: gilscope must not
//! crash or stop recording, must say on stderr that it cannot push and that the server is
//! back, and must then deliver every window it kept meanwhile. With no window dropped, the
//! windows received add up to exactly the local trace's stack time (its pprof export), and
//! cover the recording without a gap. Push behaviour does not depend on the Python version,
//! so one build runs it (tests/pprof.rs reads profiles of every build).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use common::{gilscope, output_with_timeout, summary_json, Target, GILSCOPE_TIMEOUT};

fn go_bin() -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join("go"))
        .chain([PathBuf::from("/usr/lib/go/bin/go")])
        .find(|p| p.is_file())
}

/// The receiver, on `port` (0: any); returns it with the port it listens on.
fn start_receiver(python: &Path, dir: &Path, port: u16) -> Result<(Child, u16)> {
    let script = common::repo_dir().join("tests/pyroscope_receiver.py");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut child = Command::new(python)
            .arg(&script)
            .arg(dir)
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the receiver")?;
        let mut line = String::new();
        let stdout = child.stdout.take().context("receiver stdout")?;
        BufReader::new(stdout).read_line(&mut line)?;
        if let Ok(p) = line.trim().parse::<u16>() {
            return Ok((child, p));
        }
        // The port may still be held for a moment after a kill: retry.
        let _ = child.kill();
        let _ = child.wait();
        if Instant::now() > deadline {
            bail!("the receiver did not start on port {port}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[derive(Debug)]
struct Request {
    ok: bool,
    error: Option<String>,
    query: BTreeMap<String, String>,
    headers: BTreeMap<String, String>,
    file: Option<String>,
}

fn requests(dir: &Path) -> Result<Vec<Request>> {
    let text = std::fs::read_to_string(dir.join("requests.jsonl")).unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let map = |k: &str| -> BTreeMap<String, String> {
            v[k].as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default()
        };
        out.push(Request {
            ok: v["ok"].as_bool().unwrap_or(false),
            error: v["error"].as_str().map(str::to_string),
            query: map("query"),
            headers: map("headers"),
            file: v["file"].as_str().map(str::to_string),
        });
    }
    Ok(out)
}

/// `go tool pprof -raw FILE`: (total wall ns, gil_state values seen).
fn read_with_pprof(go: &Path, file: &str) -> Result<(i64, Vec<String>)> {
    let mut cmd = Command::new(go);
    cmd.args(["tool", "pprof", "-raw", file])
        .env("HOME", std::env::temp_dir());
    let out = output_with_timeout(cmd, GILSCOPE_TIMEOUT)?;
    ensure!(
        out.status.success(),
        "go tool pprof -raw {file}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut ns = 0i64;
    let mut states = Vec::new();
    let mut in_samples = false;
    for line in text.lines() {
        let t = line.trim();
        if t == "Samples:" {
            in_samples = true;
            continue;
        }
        if t == "Locations" {
            break;
        }
        if !in_samples || t.starts_with("samples/count") {
            continue;
        }
        if let Some(rest) = t.strip_prefix("gil_state:[") {
            states.push(rest.split(']').next().unwrap_or_default().to_string());
        } else if let Some((vals, _)) = t.split_once(':') {
            let v: Vec<i64> = vals
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            ensure!(v.len() == 2, "sample line {t:?}");
            ns += v[1];
        }
    }
    ensure!(!states.is_empty(), "no labelled samples in {file}:\n{text}");
    Ok((ns, states))
}

#[test]
fn push_survives_a_receiver_restart_and_delivers_everything() {
    const NAME: &str = "push_survives_a_receiver_restart_and_delivers_everything";
    let Some(go) = go_bin() else {
        common::skip(NAME, "no `go` (Debian's golang-go) to run go tool pprof");
        return;
    };
    let pys = common::pythons();
    let Some(py) = pys
        .list
        .iter()
        .find(|p| p.chroot.is_none() && !p.free_threaded && p.at_least(11))
    else {
        common::skip(NAME, "no host CPython 3.11+ build");
        return;
    };
    let host_python = PathBuf::from(&py.argv[0]);
    let dir = std::env::temp_dir().join(format!("gilscope-push-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let got = dir.join("received");
    std::fs::create_dir_all(&got).unwrap();
    let result = (|| -> Result<()> {
        let (mut receiver, port) = start_receiver(&host_python, &got, 0)?;
        let target = Target::start(py, "contention.py")?;
        let trace = dir.join("push.trace");
        let url = format!("http://127.0.0.1:{port}");
        let mut rec = gilscope(&[
            "record",
            "--pid",
            &target.pid().to_string(),
            "--mode",
            "sampling",
            "--rate",
            "100",
            "--max-overhead",
            "none",
            "--duration",
            "14",
            "-o",
            &trace.to_string_lossy(),
            "--pyroscope",
            &url,
            "--app",
            "gilscope-test",
            "--tag",
            "env=ci",
            "--tag",
            "suite=push",
            "--push-interval",
            "1s",
            "--tenant",
            "team-a",
            "--basic-auth",
            "user:secret",
        ]);
        rec.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = rec.spawn().context("starting gilscope record")?;
        std::thread::sleep(Duration::from_secs(4));
        let before = requests(&got)?.len();
        receiver.kill()?;
        receiver.wait()?;
        // Down for 4 s: a few windows must wait in the queue.
        std::thread::sleep(Duration::from_secs(4));
        ensure!(
            child.try_wait()?.is_none(),
            "gilscope stopped while the receiver was down"
        );
        let (mut receiver, _) = start_receiver(&host_python, &got, port)?;
        let status = child.wait()?;
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().context("stderr")?, &mut stderr)?;
        let _ = receiver.kill();
        let _ = receiver.wait();
        drop(target);
        ensure!(status.success(), "record failed ({status}): {stderr}");
        ensure!(!stderr.contains("panicked"), "{stderr}");
        ensure!(
            stderr.contains("cannot push to") && stderr.contains("is back after"),
            "the outage and the return are not reported:\n{stderr}"
        );
        let summary_line = stderr
            .lines()
            .find(|l| l.starts_with("gilscope: pyroscope: ") && l.contains("windows pushed"))
            .with_context(|| format!("no push summary line:\n{stderr}"))?;

        let reqs = requests(&got)?;
        ensure!(before >= 2, "only {before} windows arrived before the kill");
        ensure!(
            reqs.len() > before + 4,
            "too few windows after the restart: {reqs:?}"
        );
        let mut windows: BTreeMap<(u64, u64), String> = BTreeMap::new();
        for r in &reqs {
            ensure!(r.ok, "the receiver refused a request: {:?}", r.error);
            let q = &r.query;
            ensure!(q["name"] == "gilscope-test{env=ci,suite=push}", "{q:?}");
            ensure!(
                q["format"] == "pprof" && q["spyName"] == "gilscope",
                "{q:?}"
            );
            ensure!(q["sampleRate"] == "100", "{q:?}");
            ensure!(r.headers.get("x-scope-orgid").map(String::as_str) == Some("team-a"));
            ensure!(
                r.headers.get("authorization").map(String::as_str)
                    == Some("Basic dXNlcjpzZWNyZXQ="),
                "{:?}",
                r.headers
            );
            let key = (q["from"].parse()?, q["until"].parse()?);
            // A window whose answer was lost with the killed receiver may come twice.
            windows.insert(key, r.file.clone().context("stored file")?);
        }
        // The windows tile the recording: each starts where the previous one ended.
        let keys: Vec<&(u64, u64)> = windows.keys().collect();
        for pair in keys.windows(2) {
            ensure!(
                pair[1].0 == pair[0].1,
                "a gap or overlap between windows {:?} and {:?}",
                pair[0],
                pair[1]
            );
        }
        let mut pushed_ns = 0i64;
        for file in windows.values() {
            let (ns, states) = read_with_pprof(&go, file)?;
            pushed_ns += ns;
            ensure!(
                states.iter().any(|s| s == "held"),
                "no held samples in {file}"
            );
        }
        // Nothing was dropped (queue of 60): the windows add up to the local trace.
        ensure!(
            !summary_line.contains("dropped") && !summary_line.contains("not sent"),
            "{summary_line}"
        );
        let pb = dir.join("whole.pb.gz");
        let out = output_with_timeout(
            gilscope(&[
                "export",
                &trace.to_string_lossy(),
                "-f",
                "pprof",
                "-o",
                &pb.to_string_lossy(),
            ]),
            GILSCOPE_TIMEOUT,
        )?;
        ensure!(out.status.success(), "export: {out:?}");
        let (whole_ns, _) = read_with_pprof(&go, &pb.to_string_lossy())?;
        println!(
            "{NAME}: {} requests, {} distinct windows ({before} before the kill), {:.3} s pushed \
             vs {:.3} s in the local trace; {summary_line}",
            reqs.len(),
            windows.len(),
            pushed_ns as f64 / 1e9,
            whole_ns as f64 / 1e9
        );
        ensure!(
            pushed_ns == whole_ns,
            "pushed {pushed_ns} ns, the trace has {whole_ns} ns"
        );
        // The local trace is complete.
        let v: serde_json::Value = summary_json(&trace)?;
        ensure!(v["complete"] == true, "the local trace is not complete");
        Ok(())
    })();
    if let Err(e) = result {
        panic!("{NAME} on {}: {e:#}", py.label());
    }
}

#[test]
fn push_options_are_checked_before_recording() {
    for (args, want) in [
        (
            vec!["--pyroscope", "localhost:4040"],
            "give the server's URL",
        ),
        (vec!["--pyroscope", "http://h", "--tag", "bad"], "KEY=VALUE"),
        (
            vec!["--pyroscope", "http://h", "--push-interval", "10ms"],
            "between 1 s and 1 h",
        ),
        (vec!["--app", "x"], "--pyroscope"),
        (vec!["--no-trace"], "--pyroscope"),
    ] {
        let mut all = vec!["record", "--pid", "1"];
        all.extend(args.iter().copied());
        let out = output_with_timeout(gilscope(&all), GILSCOPE_TIMEOUT).unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(want),
            "{all:?}: want {want:?} in: {err}"
        );
        // Bad usage (2), refused before attaching (PID 1 is not Python: that would be 4).
        assert_eq!(out.status.code(), Some(2), "{all:?}: {err}");
    }
}
