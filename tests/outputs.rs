//! Flame graphs and exports (`gilscope flame`, `gilscope export`,
//! `gilscope record --flame`).
//!
//! Golden files in tests/golden/outputs/ are made from a trace of a real
//! workload recorded once (tests/golden/outputs/README.md says how); rerun
//! with `GILSCOPE_BLESS=1` to re-bless them after an intended change. The
//! JSON exports are also checked against their formats: speedscope's against
//! the JSON schema its npm package publishes (a copy is committed beside the
//! goldens), Perfetto's Chrome trace-event JSON structurally (Perfetto's
//! trace processor cannot run offline). One test records a live process.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use common::{for_each_python, gilscope, output_with_timeout, Target, GILSCOPE_TIMEOUT};

fn golden_dir() -> PathBuf {
    common::repo_dir().join("tests/golden/outputs")
}

fn fixture() -> PathBuf {
    golden_dir().join("threads-3.12.trace")
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gilscope-outputs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Run gilscope with `args`; panics with its stderr on failure.
fn run(args: &[&str]) -> String {
    let out = output_with_timeout(gilscope(args), GILSCOPE_TIMEOUT).unwrap();
    assert!(
        out.status.success(),
        "gilscope {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Run gilscope writing to a temporary `name` and return the file's text.
fn run_to_file(name: &str, args: &[&str]) -> String {
    let out = tmp(name);
    let mut all: Vec<&str> = args.to_vec();
    let o = out.to_str().unwrap();
    all.extend(["-o", o]);
    run(&all);
    std::fs::read_to_string(&out).unwrap()
}

fn check_golden(name: &str, got: &str) {
    let p = golden_dir().join(name);
    if std::env::var_os("GILSCOPE_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&p, got).unwrap();
    }
    let want = std::fs::read_to_string(&p).unwrap_or_default();
    assert!(
        got == want,
        "{name} differs from the golden file ({} vs {} bytes); if intended, rerun with GILSCOPE_BLESS=1",
        got.len(),
        want.len()
    );
}

const GOLDENS: &[(&str, &[&str])] = &[
    ("threads-3.12.held.svg", &["flame"]),
    (
        "threads-3.12.all-by-thread.svg",
        &["flame", "--state", "all", "--thread-roots", "--no-lines"],
    ),
    (
        "threads-3.12.held.collapsed",
        &["export", "-f", "collapsed"],
    ),
    (
        "threads-3.12.all.collapsed",
        &[
            "export",
            "-f",
            "collapsed",
            "--state",
            "all",
            "--weight",
            "samples",
            "--annotate-interpreter",
        ],
    ),
    ("threads-3.12.perfetto.json", &["export", "-f", "perfetto"]),
    (
        "threads-3.12.speedscope.json",
        &["export", "-f", "speedscope"],
    ),
    (
        "threads-3.12.timeline.svg",
        &["export", "-f", "timeline-svg"],
    ),
];

#[test]
fn outputs_match_their_golden_files() {
    let fx = fixture();
    for (name, args) in GOLDENS {
        let mut all = vec![args[0], fx.to_str().unwrap()];
        all.extend_from_slice(&args[1..]);
        let got = run_to_file(name, &all);
        check_golden(name, &got);
        // Deterministic: a second run gives the same bytes.
        assert_eq!(run_to_file(name, &all), got, "{name} is not deterministic");
    }
}

#[test]
fn the_held_flame_graph_shows_the_gil_holder_and_the_idle_one_does_not() {
    let fx = fixture();
    let fx = fx.to_str().unwrap();
    let held = run_to_file("held.svg", &["flame", fx]);
    assert!(held.starts_with("<?xml"), "not an SVG");
    assert!(held.contains("Python stacks holding the GIL"));
    assert!(held.contains("hold_gil (") && held.contains("threads.py:"));
    for absent in ["main_idle", "release_gil", "watch_stdin"] {
        assert!(!held.contains(absent), "{absent} in the held flame graph");
    }
    let idle = run_to_file("idle.svg", &["flame", fx, "--state", "idle"]);
    assert!(
        !idle.contains("hold_gil"),
        "hold_gil in the idle flame graph"
    );
    for present in ["main_idle", "release_gil", "idle ("] {
        assert!(
            idle.contains(present),
            "{present} missing from the idle graph"
        );
    }
    // Nothing matches: a clear error and exit code 1.
    let out = output_with_timeout(
        gilscope(&["flame", fx, "--interpreter", "9", "-o", "-"]),
        GILSCOPE_TIMEOUT,
    )
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to draw"));
}

#[test]
fn collapsed_stacks_are_root_first_weighted_and_filterable() {
    let fx = fixture();
    let fx = fx.to_str().unwrap();
    let held = run(&["export", fx, "-f", "collapsed", "-o", "-"]);
    let lines: Vec<&str> = held.lines().collect();
    assert_eq!(lines.len(), 1, "one thread holds the GIL: {held}");
    let (stack, weight) = lines[0].rsplit_once(' ').unwrap();
    let frames: Vec<&str> = stack.split(';').collect();
    assert!(frames[0].starts_with("Thread._bootstrap "), "{stack}");
    assert!(frames.last().unwrap().starts_with("hold_gil ("), "{stack}");
    // Weighted by ns: the holder held the GIL for the whole 2 s recording.
    let ns: u64 = weight.parse().unwrap();
    assert!((1_500_000_000..3_000_000_000).contains(&ns), "{ns}");

    let by_name = run(&[
        "export",
        fx,
        "-f",
        "collapsed",
        "--state",
        "all",
        "--thread",
        "spinner",
        "-o",
        "-",
    ]);
    assert!(by_name.lines().count() >= 1);
    for l in by_name.lines() {
        assert!(l.contains("spin ("), "{l}");
        assert!(l.starts_with('['), "the state is the root: {l}");
    }
    let none = run(&[
        "export",
        fx,
        "-f",
        "collapsed",
        "--interpreter",
        "3",
        "-o",
        "-",
    ]);
    assert_eq!(none, "");
    // Perfetto shows everything: filters are refused.
    let out = output_with_timeout(
        gilscope(&["export", fx, "-f", "perfetto", "--state", "held", "-o", "-"]),
        GILSCOPE_TIMEOUT,
    )
    .unwrap();
    if let Err(e) = common::check_error(&out, 1, &["--state"]) {
        panic!("perfetto with --state: {e:#}");
    }
    assert!(
        out.stdout.is_empty(),
        "perfetto wrote output although refused"
    );
}

// ------------------------------------------------------------------ speedscope

/// A JSON-schema check covering what speedscope's schema uses: `$ref` to
/// `#/definitions/…`, `anyOf`, `const`, `enum`, `type`, `required`,
/// `properties`, `items`, `additionalProperties`.
fn validate(root: &Value, schema: &Value, v: &Value, at: &str, errs: &mut Vec<String>) {
    let Some(s) = schema.as_object() else {
        return;
    };
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let name = r.strip_prefix("#/definitions/").expect("local $ref");
        validate(root, &root["definitions"][name], v, at, errs);
    }
    if let Some(any) = s.get("anyOf").and_then(Value::as_array) {
        let ok = any.iter().any(|alt| {
            let mut e = Vec::new();
            validate(root, alt, v, at, &mut e);
            e.is_empty()
        });
        if !ok {
            errs.push(format!("{at}: matches no anyOf alternative"));
        }
    }
    if let Some(c) = s.get("const") {
        if c != v {
            errs.push(format!("{at}: {v} is not {c}"));
        }
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        if !e.contains(v) {
            errs.push(format!("{at}: {v} not in {e:?}"));
        }
    }
    if let Some(t) = s.get("type") {
        let types: Vec<&str> = match t {
            Value::String(t) => vec![t.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let ok = types.iter().any(|t| match *t {
            "string" => v.is_string(),
            "number" => v.is_number(),
            "integer" => v.is_i64() || v.is_u64(),
            "object" => v.is_object(),
            "array" => v.is_array(),
            "boolean" => v.is_boolean(),
            "null" => v.is_null(),
            _ => false,
        });
        if !ok {
            errs.push(format!("{at}: {v} is not of type {t}"));
            return;
        }
    }
    if let Some(obj) = v.as_object() {
        if let Some(req) = s.get("required").and_then(Value::as_array) {
            for k in req.iter().filter_map(Value::as_str) {
                if !obj.contains_key(k) {
                    errs.push(format!("{at}: missing required {k:?}"));
                }
            }
        }
        let props = s.get("properties").and_then(Value::as_object);
        for (k, val) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(ps) => validate(root, ps, val, &format!("{at}.{k}"), errs),
                None => match s.get("additionalProperties") {
                    Some(Value::Bool(false)) => errs.push(format!("{at}: unexpected {k:?}")),
                    Some(extra @ Value::Object(_)) => {
                        validate(root, extra, val, &format!("{at}.{k}"), errs)
                    }
                    _ => {}
                },
            }
        }
    }
    if let (Some(items), Some(arr)) = (s.get("items"), v.as_array()) {
        for (i, x) in arr.iter().enumerate() {
            validate(root, items, x, &format!("{at}[{i}]"), errs);
        }
    }
}

fn check_speedscope(text: &str) -> Result<()> {
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(
        golden_dir().join("speedscope-file-format-schema.json"),
    )?)?;
    let v: Value = serde_json::from_str(text).context("speedscope output is not JSON")?;
    let mut errs = Vec::new();
    let top = &schema;
    validate(&schema, top, &v, "$", &mut errs);
    // Make sure the validator really reached the profiles.
    let mut bad = v.clone();
    bad["profiles"][0]["type"] = Value::from("bogus");
    let mut must_fail = Vec::new();
    validate(&schema, top, &bad, "$", &mut must_fail);
    ensure!(!must_fail.is_empty(), "the schema check accepts anything");
    ensure!(errs.is_empty(), "schema violations: {errs:#?}");
    // What the schema cannot say but speedscope's importer relies on.
    let nframes = v["shared"]["frames"].as_array().context("frames")?.len();
    let profiles = v["profiles"].as_array().context("profiles")?;
    ensure!(!profiles.is_empty(), "no profile");
    for p in profiles {
        let samples = p["samples"].as_array().context("samples")?;
        let weights = p["weights"].as_array().context("weights")?;
        ensure!(samples.len() == weights.len(), "samples/weights lengths");
        for s in samples {
            for f in s.as_array().context("sample")? {
                ensure!(
                    (f.as_u64().context("index")? as usize) < nframes,
                    "frame index"
                );
            }
        }
        let sum: u64 = weights.iter().map(|w| w.as_u64().unwrap_or(0)).sum();
        let (start, end) = (p["startValue"].as_u64(), p["endValue"].as_u64());
        ensure!(
            p["unit"] == "nanoseconds" && Some(sum) == end.zip(start).map(|(e, s)| e - s),
            "{}: weights add up to {sum}, endValue - startValue is not that",
            p["name"]
        );
    }
    Ok(())
}

#[test]
fn speedscope_export_follows_the_published_schema() {
    let fx = fixture();
    let fx = fx.to_str().unwrap();
    let all = run_to_file("s.json", &["export", fx, "-f", "speedscope"]);
    check_speedscope(&all).unwrap();
    let held = run_to_file(
        "s-held.json",
        &["export", fx, "-f", "speedscope", "--state", "held"],
    );
    check_speedscope(&held).unwrap();
    let v: Value = serde_json::from_str(&all).unwrap();
    let names: Vec<&str> = v["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for t in [
        "MainThread",
        "spinner",
        "gil-holder",
        "gil-releaser",
        "idle",
    ] {
        assert!(
            names.iter().any(|n| n.starts_with(&format!("{t} ("))),
            "{t} in {names:?}"
        );
    }
}

// -------------------------------------------------------------------- perfetto

/// `(start, end, name)` of a complete event, in ns.
type Slice = (i64, i64, String);

/// Structural check of Chrome trace-event JSON (the JSON object form): every
/// event's required fields, properly nested complete events per track,
/// named processes and threads, counters in range.
fn check_trace_events(text: &str) -> Result<Value> {
    let v: Value = serde_json::from_str(text).context("not JSON")?;
    let events = v["traceEvents"].as_array().context("traceEvents")?;
    let mut proc_names = BTreeSet::new();
    let mut thread_names = BTreeSet::new();
    // Slices in integer ns (ts and dur are µs with up to 3 decimals).
    let mut slices: BTreeMap<(i64, i64), Vec<Slice>> = BTreeMap::new();
    let ns = |us: f64| (us * 1000.0).round() as i64;
    let mut counters = 0;
    for e in events {
        let ph = e["ph"].as_str().context("ph")?;
        let pid = e["pid"].as_i64().context("pid")?;
        let tid = e["tid"].as_i64().context("tid")?;
        e["name"].as_str().context("name")?;
        match ph {
            "M" => {
                let name = e["args"]["name"].as_str();
                match e["name"].as_str() {
                    Some("process_name") => {
                        name.context("process name")?;
                        proc_names.insert(pid);
                    }
                    Some("thread_name") => {
                        name.context("thread name")?;
                        thread_names.insert((pid, tid));
                    }
                    Some("process_sort_index" | "thread_sort_index") => {
                        e["args"]["sort_index"].as_i64().context("sort_index")?;
                    }
                    other => bail!("unexpected metadata {other:?}"),
                }
            }
            "X" => {
                let ts = e["ts"].as_f64().context("ts")?;
                let dur = e["dur"].as_f64().context("dur")?;
                ensure!(ts >= 0.0 && dur >= 0.0, "negative time in {e}");
                let cat = e["cat"].as_str().context("cat")?;
                ensure!(
                    matches!(cat, "gil" | "stack" | "gc" | "gilscope"),
                    "category {cat}"
                );
                if cat == "gilscope" {
                    // The recording's periods: "exact" or "sampled N Hz", with the rate.
                    let name = e["name"].as_str().unwrap_or("");
                    ensure!(
                        name == "exact" || (name.starts_with("sampled ") && name.ends_with(" Hz")),
                        "period slice {name:?}"
                    );
                    ensure!(
                        e["args"]["rate_hz"].as_f64().is_some(),
                        "period rate in {e}"
                    );
                }
                slices.entry((pid, tid)).or_default().push((
                    ns(ts),
                    ns(ts) + ns(dur),
                    e["name"].as_str().unwrap_or("").to_string(),
                ));
            }
            "C" if e["name"] == "threads holding a GIL" => {
                // The parallelism counter: whole numbers of threads.
                for k in ["holding", "on_cpu"] {
                    let n = e["args"][k].as_u64().context("parallelism counter value")?;
                    ensure!(n < 10_000, "{k} {n}");
                }
                ensure!(e["ts"].as_f64().is_some(), "counter ts");
            }
            "C" => {
                let busy = e["args"]["busy"].as_f64().context("counter value")?;
                ensure!((0.0..=100.0).contains(&busy), "busy {busy}");
                ensure!(e["ts"].as_f64().is_some(), "counter ts");
                counters += 1;
            }
            // Hand-over flows (exact mode): start and end of one id.
            "s" | "f" => {
                ensure!(e["id"].as_u64().is_some(), "flow id in {e}");
                ensure!(e["ts"].as_f64().is_some(), "flow ts");
                ensure!(e["cat"] == "handover", "flow category in {e}");
            }
            "i" => ensure!(e["ts"].as_f64().is_some(), "instant ts"),
            _ => bail!("unexpected phase {ph}"),
        }
    }
    ensure!(counters > 0, "no GIL counter");
    for (track, list) in &slices {
        ensure!(proc_names.contains(&track.0), "process {} unnamed", track.0);
        ensure!(thread_names.contains(track), "thread {track:?} unnamed");
        // Slices on a track must nest: sort by start then by longest first.
        let mut sorted = list.clone();
        sorted.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        let mut stack: Vec<i64> = Vec::new();
        for (s, e, name) in sorted {
            while stack.last().is_some_and(|&end| end <= s) {
                stack.pop();
            }
            if let Some(&end) = stack.last() {
                ensure!(e <= end, "{track:?}: {name} [{s}, {e}) overlaps its parent");
            }
            stack.push(e);
        }
    }
    Ok(v)
}

#[test]
fn perfetto_export_is_well_formed_trace_event_json() {
    let fx = fixture();
    let text = run_to_file(
        "p.json",
        &["export", fx.to_str().unwrap(), "-f", "perfetto"],
    );
    let v = check_trace_events(&text).unwrap();
    let events = v["traceEvents"].as_array().unwrap();
    let x = |name: &str| {
        events
            .iter()
            .filter(|e| e["ph"] == "X" && e["name"] == name)
            .collect::<Vec<_>>()
    };
    // The holder's track: a `held` state slice with hold_gil inside it.
    let holder_tid = events
        .iter()
        .find(|e| {
            e["name"] == "thread_name"
                && e["args"]["name"]
                    .as_str()
                    .unwrap()
                    .starts_with("gil-holder")
        })
        .map(|e| e["tid"].clone())
        .expect("gil-holder named");
    let held: Vec<_> = x("held")
        .into_iter()
        .filter(|e| e["tid"] == holder_tid)
        .collect();
    assert!(!held.is_empty());
    let hold = x("hold_gil");
    assert!(hold.iter().all(|e| e["tid"] == holder_tid));
    assert!(!hold.is_empty());
    assert!(x("idle").is_empty(), "idle time is left empty");
    assert!(events.iter().any(|e| e["name"] == "process_name"
        && e["args"]["name"]
            .as_str()
            .unwrap()
            .starts_with("Interpreter 0")));
    assert!(events
        .iter()
        .any(|e| e["ph"] == "C" && e["name"] == "GIL 0 busy %"));
    // One period (no budget switch): sampled at the recording's rate (the fixture's 200 Hz),
    // from the first run to the last; otherData says the same.
    let periods = x("sampled 200 Hz");
    let meta = events
        .iter()
        .find(|e| e["ph"] == "M" && e["args"]["name"] == "gilscope recording")
        .expect("the gilscope recording track is named");
    assert_eq!(periods.len(), 1, "{periods:?}");
    assert_eq!(periods[0]["tid"], meta["tid"]);
    let last_end = events
        .iter()
        .filter(|e| e["ph"] == "X" && e["cat"] == "gil")
        .map(|e| e["ts"].as_f64().unwrap() + e["dur"].as_f64().unwrap())
        .fold(0.0, f64::max);
    let p_end = periods[0]["ts"].as_f64().unwrap() + periods[0]["dur"].as_f64().unwrap();
    assert!(
        (p_end - last_end).abs() < 1.0,
        "period ends at {p_end} µs, the last state slice at {last_end} µs"
    );
    assert!(
        v["otherData"]["periods"]
            .as_str()
            .unwrap()
            .starts_with("sampled 0.000–"),
        "{}",
        v["otherData"]["periods"]
    );
}

// ------------------------------------------------------------------------ live

#[test]
fn record_flame_draws_the_holder_from_a_live_process() {
    for_each_python(
        "record_flame_draws_the_holder_from_a_live_process",
        "a GIL build (threads.py)",
        |py| !py.free_threaded,
        |py| {
            let target = Target::start(py, "threads.py")?;
            let pid = target.pid().to_string();
            let trace = tmp(&format!("live-{}.trace", py.name));
            let svg = tmp(&format!("live-{}.svg", py.name));
            let out = output_with_timeout(
                gilscope(&[
                    "record",
                    "--pid",
                    &pid,
                    "--duration",
                    "0.5",
                    "--rate",
                    "200",
                    "-o",
                    trace.to_str().unwrap(),
                    "--flame",
                    svg.to_str().unwrap(),
                ]),
                GILSCOPE_TIMEOUT,
            )?;
            ensure!(
                out.status.success(),
                "record failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let held = std::fs::read_to_string(&svg).context("the --flame SVG")?;
            ensure!(
                held.contains("hold_gil ("),
                "hold_gil missing from the held graph"
            );
            ensure!(!held.contains("main_idle"), "main_idle in the held graph");
            let idle_svg = tmp(&format!("live-{}-idle.svg", py.name));
            idle_flame(&trace, &idle_svg)?;
            let idle = std::fs::read_to_string(&idle_svg)?;
            ensure!(!idle.contains("hold_gil"), "hold_gil in the idle graph");
            ensure!(
                idle.contains("main_idle"),
                "main_idle missing from the idle graph"
            );
            Ok(())
        },
    );
}

fn idle_flame(trace: &Path, svg: &Path) -> Result<()> {
    let out = output_with_timeout(
        gilscope(&[
            "flame",
            trace.to_str().unwrap(),
            "--state",
            "idle",
            "-o",
            svg.to_str().unwrap(),
        ]),
        GILSCOPE_TIMEOUT,
    )?;
    ensure!(
        out.status.success(),
        "flame failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The committed synthetic trace of the trace-format tests has what the real
/// fixture lacks: sub-interpreters, a reused TID, a sample error, many
/// changes of state. The exports must still validate.
#[test]
fn exports_of_a_trace_with_subinterpreters_validate() {
    let fx = common::repo_dir().join("src/trace/testdata/v1-small.bin");
    let fx = fx.to_str().unwrap();
    let p = run_to_file("v1.perfetto.json", &["export", fx, "-f", "perfetto"]);
    let v = check_trace_events(&p).unwrap();
    let events = v["traceEvents"].as_array().unwrap();
    let pids: BTreeSet<i64> = events
        .iter()
        .filter(|e| e["name"] == "process_name")
        .map(|e| e["pid"].as_i64().unwrap())
        .collect();
    assert!(pids.len() >= 2, "one process per interpreter: {pids:?}");
    assert!(events.iter().any(|e| e["ph"] == "i"), "the sample error");
    for state in ["all", "held", "idle"] {
        let s = run_to_file(
            &format!("v1.{state}.speedscope.json"),
            &["export", fx, "-f", "speedscope", "--state", state],
        );
        check_speedscope(&s).unwrap();
    }
    let folded = run(&[
        "export",
        fx,
        "-f",
        "collapsed",
        "--state",
        "all",
        "--annotate-interpreter",
        "-o",
        "-",
    ]);
    assert!(
        folded.contains("[interp 1]"),
        "sub-interpreter frames annotated"
    );
    let svg = run_to_file("v1.svg", &["flame", fx, "--interpreter", "1"]);
    assert!(svg.contains("interpreter 1"));
    // The timeline: one lane per GIL and one per thread (a reused TID twice), by name.
    let tl = run_to_file("v1.timeline.svg", &["export", fx, "-f", "timeline-svg"]);
    assert!(
        tl.starts_with("<svg") && tl.trim_end().ends_with("</svg>"),
        "not an SVG document"
    );
    for lane in [
        "GIL 0 (interp 0,2)",
        "GIL 1 (interp 1)",
        "MainThread (4000)",
        "worker-1 (4002)",
        "io-poller (4100)",
        "sub-worker (4200)",
    ] {
        assert!(tl.contains(&format!(">{lane}</text>")), "no lane {lane:?}");
    }
    assert_eq!(
        tl.matches(">worker-0 (4001)</text>").count(),
        2,
        "the reused TID 4001 is two lanes"
    );
}

// ---------------------------------------------------------------------- blame (issue 14)

/// The real exact-mode recording of samples/contention.py (CPython 3.12.1): its spinner waits
/// for the GIL exactly while the holder holds it (the sample's ground truth). `summary
/// --json` blames the spinner's waiting on the holder in `hold_loop`, as much as the holder
/// held the GIL while the spinner was there; `flame --blame` draws the same; Perfetto has a
/// hand-over arrow (a start and an end) per hand-over `summary` counts.
#[test]
fn blame_of_an_exact_recording_in_summary_flame_and_perfetto() {
    let fx = golden_dir().join("contention-exact-3.12.trace");
    let fx = fx.to_str().unwrap();
    let s: Value = serde_json::from_str(&run(&["summary", fx, "--json"])).unwrap();
    let name_of = |tid: &Value| {
        s["threads"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| &t["tid"] == tid)
            .map(|t| t["name"].as_str().unwrap_or("").to_string())
    };
    let first = &s["blame"][0];
    assert_eq!(first["waiter_name"], "spinner", "{first}");
    assert_eq!(first["holder_name"], "holder", "{first}");
    assert_eq!(name_of(&first["holder_tid"]).as_deref(), Some("holder"));
    let top = &first["holder_stacks"][0]["frames"][0];
    assert_eq!(top["function"], "hold_loop", "{first}");
    // The holder's held time while the spinner existed ≈ the spinner's wait for it.
    let holder = s["threads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "holder")
        .unwrap();
    let held =
        holder["held_pct"].as_f64().unwrap() / 100.0 * holder["observed_s"].as_f64().unwrap();
    let blamed = first["seconds"].as_f64().unwrap();
    assert!(
        (blamed - held).abs() <= 0.05 * held,
        "spinner waited {blamed} s for the holder, which held {held} s"
    );
    let count = s["interpreters"][0]["handovers"]["count"].as_u64().unwrap();
    assert!(count > 0);

    let folded = run(&["flame", fx, "--blame", "-o", "-"]);
    assert!(
        folded.contains("holder holder ("),
        "flame --blame has no holder root"
    );
    assert!(
        folded.contains("hold_loop"),
        "flame --blame lacks hold_loop"
    );

    let p = check_trace_events(&run(&["export", fx, "-f", "perfetto", "-o", "-"])).unwrap();
    let events = p["traceEvents"].as_array().unwrap();
    let flows = |ph: &str| events.iter().filter(|e| e["ph"] == ph).count() as u64;
    assert_eq!(flows("s"), count);
    assert_eq!(flows("f"), count);
    assert!(events
        .iter()
        .any(|e| e["ph"] == "C" && e["name"] == "threads holding a GIL"));
}
