//! `gilscope export -f pprof`, read by the real consumer, `go tool pprof` (Debian's
//! golang-go; .ci/run installs it).
//!
//! A live contention.py is recorded on every build (the holder holds the GIL in a C call for
//! 200 ms of every 220 ms, the spinner wants it all the time). The profile must carry the
//! labels on every sample, the workload's frames with their files and lines, and per thread
//! and GIL state exactly the time and samples `summary --json` counts (one model, one truth);
//! `-tagfocus=gil_state=held` must keep only held samples, and a profile re-encoded by pprof
//! (`-proto`) must decode with gilscope's committed prost code to the same totals.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};

use common::{
    for_each_python, gilscope, output_with_timeout, record_sample, summary_json, GILSCOPE_TIMEOUT,
};

/// `go`, when installed (PATH, or Debian's golang-go location).
fn go_bin() -> Option<PathBuf> {
    let candidates = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join("go"))
        .chain([PathBuf::from("/usr/lib/go/bin/go")]);
    candidates.into_iter().find(|p| p.is_file())
}

/// `go tool pprof ARGS`; its stdout.
fn pprof(go: &Path, args: &[&str]) -> Result<String> {
    let mut cmd = Command::new(go);
    cmd.args(["tool", "pprof"]).args(args);
    // pprof writes a cache/config under $HOME; keep it out of the user's.
    cmd.env("HOME", std::env::temp_dir());
    let out = output_with_timeout(cmd, GILSCOPE_TIMEOUT)?;
    ensure!(
        out.status.success(),
        "go tool pprof {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[derive(Debug, Clone, Default)]
struct RawSample {
    count: i64,
    ns: i64,
    locations: Vec<u64>,
    labels: BTreeMap<String, String>,
}

/// A location of `-raw`: (function, file, line).
type RawLocation = (String, String, i64);

/// Parses `go tool pprof -raw`: the samples (values, location ids, labels) and locations.
fn parse_raw(text: &str) -> Result<(Vec<RawSample>, BTreeMap<u64, RawLocation>)> {
    #[derive(PartialEq)]
    enum Part {
        Head,
        Samples,
        Locations,
        Rest,
    }
    let mut part = Part::Head;
    let mut samples: Vec<RawSample> = Vec::new();
    let mut locations = BTreeMap::new();
    for line in text.lines() {
        match line.trim_end() {
            "Samples:" => {
                part = Part::Samples;
                continue;
            }
            "Locations" => {
                part = Part::Locations;
                continue;
            }
            "Mappings" => {
                part = Part::Rest;
                continue;
            }
            _ => {}
        }
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        match part {
            Part::Samples => {
                if t.starts_with("samples/count") {
                    continue;
                }
                if let Some((vals, locs)) = t.split_once(':').filter(|(v, _)| {
                    v.split_whitespace()
                        .all(|x| x.chars().all(|c| c.is_ascii_digit()))
                }) {
                    let v: Vec<i64> = vals
                        .split_whitespace()
                        .map(|x| x.parse())
                        .collect::<Result<_, _>>()?;
                    ensure!(v.len() == 2, "two values per sample: {line:?}");
                    samples.push(RawSample {
                        count: v[0],
                        ns: v[1],
                        locations: locs
                            .split_whitespace()
                            .map(|x| x.parse())
                            .collect::<Result<_, _>>()?,
                        labels: BTreeMap::new(),
                    });
                } else {
                    let s = samples
                        .last_mut()
                        .with_context(|| format!("labels before a sample: {line:?}"))?;
                    // key:[value] key:[value] ...
                    for tok in t.split("] ") {
                        let tok = tok.trim_end_matches(']');
                        let (k, v) = tok
                            .split_once(":[")
                            .with_context(|| format!("not a label: {tok:?} in {line:?}"))?;
                        s.labels.insert(k.to_string(), v.to_string());
                    }
                }
            }
            Part::Locations => {
                // "  8: 0x0 M=1 hold_loop /path/contention.py:49 s=0"
                let (id, rest) = t.split_once(':').context("location id")?;
                let rest = rest.trim();
                let rest = rest.split_once(" s=").map_or(rest, |(a, _)| a);
                let mut words: Vec<&str> = rest.split(' ').collect();
                ensure!(words.len() >= 4, "location line {line:?}");
                let file_line = words.pop().unwrap_or_default();
                let function = words[2..].join(" ");
                let (file, ln) = file_line
                    .rsplit_once(':')
                    .with_context(|| format!("file:line in {line:?}"))?;
                locations.insert(
                    id.trim().parse()?,
                    (function, file.to_string(), ln.parse()?),
                );
            }
            Part::Head | Part::Rest => {}
        }
    }
    ensure!(!samples.is_empty(), "no samples in:\n{text}");
    Ok((samples, locations))
}

/// From `summary --json`: per thread (TID), ns and samples per state.
fn summary_by_state(trace: &Path) -> Result<BTreeMap<(u32, String), (f64, u64)>> {
    let v: serde_json::Value = summary_json(trace)?;
    let mut m = BTreeMap::new();
    for t in v["threads"].as_array().context("threads")? {
        let tid = t["tid"].as_u64().context("tid")? as u32;
        let observed = t["observed_s"].as_f64().context("observed_s")?;
        for s in ["held", "waiting", "released", "idle"] {
            if let Some(pct) = t[format!("{s}_pct")].as_f64() {
                m.insert((tid, s.to_string()), (observed * pct / 100.0, 0));
            }
        }
    }
    Ok(m)
}

const STATE_NAMES: &[&str] = &[
    "held", "waiting", "released", "idle", "attached", "unknown", "gc",
];

#[test]
fn pprof_export_is_read_by_go_tool_pprof() {
    let Some(go) = go_bin() else {
        common::skip(
            "pprof_export_is_read_by_go_tool_pprof",
            "no `go` (Debian's golang-go) to run go tool pprof",
        );
        return;
    };
    for_each_python(
        "pprof_export_is_read_by_go_tool_pprof",
        "any CPython",
        |_| true,
        |py| {
            let rec = record_sample(py, "contention.py", 200, 2.5)?;
            let holder = rec.target.ready.role("holder")?.clone();
            let spinner = rec.target.ready.role("spinner")?.clone();
            drop(rec.target);
            let (dir, trace) = (&rec.dir, &rec.trace);
            let pb = dir.path(&format!("{}.pb.gz", py.name));
            let (trace_s, pb_s) = (trace.to_string_lossy(), pb.to_string_lossy());
            let out = output_with_timeout(
                gilscope(&[
                    "export",
                    &trace_s,
                    "-f",
                    "pprof",
                    "--thread-id",
                    "-o",
                    &pb_s,
                ]),
                GILSCOPE_TIMEOUT,
            )?;
            ensure!(out.status.success(), "export failed: {out:?}");

            let raw = pprof(&go, &["-raw", &pb_s])?;
            ensure!(
                raw.contains("PeriodType: wall nanoseconds") && raw.contains("Period: 5000000"),
                "the sampling period (200 Hz) is not in the profile:\n{}",
                common::short(&raw, 800)
            );
            ensure!(
                raw.contains("sampled at 200 Hz"),
                "no estimate comment naming the rate"
            );
            let (samples, locations) = parse_raw(&raw)?;
            for s in &samples {
                for k in ["gil_state", "interpreter", "thread_name", "thread_id"] {
                    ensure!(s.labels.contains_key(k), "sample without {k}: {s:?}");
                }
                ensure!(
                    STATE_NAMES.contains(&s.labels["gil_state"].as_str()),
                    "gil_state {:?} is not a state name",
                    s.labels["gil_state"]
                );
                for l in &s.locations {
                    ensure!(locations.contains_key(l), "sample names location {l}");
                }
            }
            // Per thread and state: what summary counts.
            let mut by: BTreeMap<(u32, String), (i64, i64)> = BTreeMap::new();
            for s in &samples {
                let tid: u32 = s.labels["thread_id"].parse()?;
                let e = by.entry((tid, s.labels["gil_state"].clone())).or_default();
                e.0 += s.count;
                e.1 += s.ns;
            }
            let summary = summary_by_state(trace)?;
            for ((tid, state), (want_s, _)) in &summary {
                let got = by.get(&(*tid, state.clone())).map_or(0, |v| v.1) as f64 / 1e9;
                ensure!(
                    (got - want_s).abs() <= 0.002 + want_s * 0.001,
                    "thread {tid} {state}: pprof {got:.4} s, summary {want_s:.4} s"
                );
            }
            let share = |tid: u32, state: &str| -> f64 {
                let all: i64 = by
                    .iter()
                    .filter(|((t, _), _)| *t == tid)
                    .map(|(_, v)| v.1)
                    .sum();
                by.get(&(tid, state.to_string())).map_or(0, |v| v.1) as f64 / all.max(1) as f64
            };
            let (h_held, s_held) = (
                share(holder.native_id, "held"),
                share(spinner.native_id, "held"),
            );
            println!(
                "{}: {} samples; holder held {:.1}%, spinner held {:.1}% waiting {:.1}%",
                py.name,
                samples.len(),
                h_held * 100.0,
                s_held * 100.0,
                share(spinner.native_id, "waiting") * 100.0
            );
            ensure!(
                h_held > 0.6 && s_held < 0.4,
                "the holder holds the GIL 200 ms of every 220 ms: holder {h_held:.3}, spinner {s_held:.3}"
            );
            // Frames: the holder's held time is in hold_loop, at the LINE:hold line, in
            // contention.py, under its thread name.
            let leaf_of = |s: &RawSample| s.locations.first().and_then(|l| locations.get(l));
            let held_in_loop: i64 = samples
                .iter()
                .filter(|s| s.labels["thread_id"] == holder.native_id.to_string())
                .filter(|s| s.labels["gil_state"] == "held")
                .filter(|s| {
                    leaf_of(s).is_some_and(|(f, file, line)| {
                        f == "hold_loop"
                            && file.ends_with("contention.py")
                            && holder.line.is_none_or(|l| i64::from(l) == *line)
                    })
                })
                .map(|s| {
                    ensure!(s.labels["thread_name"] == holder.name, "thread name {s:?}");
                    Ok(s.ns)
                })
                .sum::<Result<i64>>()?;
            let held_all = by
                .get(&(holder.native_id, "held".into()))
                .map_or(0, |v| v.1);
            ensure!(
                held_in_loop as f64 > 0.9 * held_all as f64,
                "holder held {held_all} ns, in hold_loop at its line {held_in_loop} ns: {:?}",
                locations.values().collect::<Vec<_>>()
            );
            // Module-level code keeps its name (pprof strips `<...>` from names it takes
            // for C++ when a function has a system name).
            ensure!(
                locations
                    .values()
                    .any(|(f, file, _)| f == "<module>" && file.ends_with("contention.py")),
                "no <module> frame of contention.py: {:?}",
                locations.values().collect::<Vec<_>>()
            );
            // -tagfocus keeps the held samples only, and all of them.
            let focused = pprof(&go, &["-raw", "-tagfocus=gil_state=held", &pb_s])?;
            let (fs, _) = parse_raw(&focused)?;
            ensure!(
                fs.iter().all(|s| s.labels["gil_state"] == "held"),
                "-tagfocus=gil_state=held kept other states"
            );
            let held_total: i64 = by
                .iter()
                .filter(|((_, st), _)| st == "held")
                .map(|(_, v)| v.1)
                .sum();
            ensure!(
                fs.iter().map(|s| s.ns).sum::<i64>() == held_total,
                "-tagfocus lost held samples"
            );
            // pprof's own re-encoding decodes with the committed prost code to the same sums.
            let re = dir.path(&format!("{}.re.pb.gz", py.name));
            pprof(&go, &["-proto", "-output", &re.to_string_lossy(), &pb_s])?;
            let p = gilscope::output::export::pprof::decode(&std::fs::read(&re)?)?;
            let total: i64 = p.sample.iter().map(|s| s.value[1]).sum();
            ensure!(
                total == samples.iter().map(|s| s.ns).sum::<i64>(),
                "re-encoded profile sums differ"
            );
            let n: i64 = p.sample.iter().map(|s| s.value[0]).sum();
            ensure!(n == samples.iter().map(|s| s.count).sum::<i64>());
            Ok(())
        },
    );
}

#[test]
fn pprof_refuses_what_it_cannot_show() {
    let fixture = common::repo_dir().join("tests/golden/outputs/threads-3.12.trace");
    let f = fixture.to_string_lossy();
    for (args, want) in [
        (
            vec!["export", &*f, "-f", "pprof", "--thread-roots", "-o", "-"],
            "--thread-roots",
        ),
        (
            vec!["export", &*f, "-f", "collapsed", "--thread-id", "-o", "-"],
            "--thread-id",
        ),
    ] {
        let out = output_with_timeout(gilscope(&args), GILSCOPE_TIMEOUT).unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(want),
            "{args:?}: {err}"
        );
    }
    // stdout works too (a pipe), and the state filter applies.
    let out = output_with_timeout(
        gilscope(&["export", &f, "-f", "pprof", "--state", "held", "-o", "-"]),
        GILSCOPE_TIMEOUT,
    )
    .unwrap();
    assert!(out.status.success());
    let p = gilscope::output::export::pprof::decode(&out.stdout).unwrap();
    assert!(!p.sample.is_empty());
    let held = p
        .string_table
        .iter()
        .position(|s| s == "held")
        .unwrap_or(usize::MAX) as i64;
    let key = p
        .string_table
        .iter()
        .position(|s| s == "gil_state")
        .unwrap_or(usize::MAX) as i64;
    for s in &p.sample {
        let l = s.label.iter().find(|l| l.key == key);
        if l.map(|l| l.str) != Some(held) {
            panic!("a non-held sample with --state held");
        }
    }
}
