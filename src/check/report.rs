//! Rendering a [`Report`]: the human summary (stderr), JSON, JUnit XML and GitHub Actions
//! workflow commands.

use std::io::{self, Write};

use super::{GcSummary, HoldClass, HoldGroup, Report, INTERPRETER_REASON};
use crate::model::FrameInfo;

fn python_site(stack: &[FrameInfo]) -> Option<&FrameInfo> {
    stack.first()
}

fn frame_text(f: &FrameInfo) -> String {
    format!("{} ({}:{})", f.function, f.file, f.line)
}

fn hold_headline(h: &HoldGroup, max_ms: f64) -> String {
    let what = match (&h.module, h.object.is_empty()) {
        (_, true) => "unknown native code".to_string(),
        (Some(m), false) => format!("{} in {m} ({})", h.symbol_name(), h.object_name()),
        (None, false) => format!("{} in {}", h.symbol_name(), h.object_name()),
    };
    let interps: Vec<String> = h.interpreters.iter().map(|i| i.to_string()).collect();
    format!(
        "{what} held the GIL (interpreter {}) {} time{} for up to {:.0} ms (limit {:.0} ms, total {:.0} ms)",
        interps.join(", "),
        h.count,
        if h.count == 1 { "" } else { "s" },
        h.longest_ms,
        max_ms,
        h.total_ms
    )
}

fn native_text(h: &HoldGroup) -> Option<String> {
    let ex = h.examples.first()?;
    if ex.native_stack.is_empty() {
        return None;
    }
    let parts: Vec<String> = ex
        .native_stack
        .iter()
        .take(6)
        .map(|f| {
            let obj = f.object.rsplit('/').next().unwrap_or(&f.object);
            match &f.symbol {
                Some(_) => format!("{} ({obj})", f.label()),
                None => f.label(),
            }
        })
        .collect();
    Some(parts.join(" ← "))
}

/// FAIL, notice (CPython's own code) or allowed (imports, the allow-list).
fn hold_tag(h: &HoldGroup) -> &'static str {
    match &h.allowed {
        None => "FAIL",
        Some(a) if h.class == HoldClass::Interpreter && a == INTERPRETER_REASON => "notice",
        Some(_) => "allowed",
    }
}

fn gc_headline(g: &GcSummary, max_gc_pause_ms: Option<f64>) -> String {
    let limit = match max_gc_pause_ms {
        Some(m) => format!("limit {m:.0} ms"),
        None => "no limit: --max-gc-pause sets one".to_string(),
    };
    format!(
        "garbage collection in process {} interpreter {}: {} collection{} seen, {:.0} ms in all, longest {:.0} ms ({limit})",
        g.pid,
        g.interpreter,
        g.collections,
        if g.collections == 1 { "" } else { "s" },
        g.total_ms,
        g.longest_ms,
    )
}

fn write_gc(w: &mut dyn Write, g: &GcSummary, max_gc_pause_ms: Option<f64>) -> io::Result<()> {
    let tag = if g.failed { "FAIL" } else { "gc" };
    writeln!(w, "  {tag:7} {}", gc_headline(g, max_gc_pause_ms))?;
    let ex = &g.longest;
    let py: Vec<String> = ex.python_stack.iter().take(4).map(frame_text).collect();
    if !py.is_empty() {
        writeln!(w, "          started by: {}", py.join(" ← "))?;
    }
    writeln!(
        w,
        "          longest: thread {} ({}), {:.0} ms at +{:.1} s",
        ex.tid, ex.thread, ex.duration_ms, ex.at_s
    )
}

/// "at 1000 Hz", or the rate achieved when a process fell behind the one asked (the same
/// figure as the falling-behind warning): "sampled at 639 Hz (asked 1000 Hz)", "sampled at
/// 378–639 Hz (asked 1000 Hz)" for several processes.
fn rate_words(r: &Report) -> String {
    let sampled: Vec<f64> = r
        .processes
        .iter()
        .filter(|p| p.samples > 0)
        .map(|p| p.achieved_hz)
        .collect();
    let behind = sampled
        .iter()
        .any(|&a| crate::sampler::behind_message(r.rate_hz, a).is_some());
    if !behind {
        return format!("at {:.0} Hz", r.rate_hz);
    }
    let lo = sampled.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = sampled.iter().copied().fold(0.0, f64::max);
    if format!("{lo:.0}") == format!("{hi:.0}") {
        format!("sampled at {lo:.0} Hz (asked {:.0} Hz)", r.rate_hz)
    } else {
        format!("sampled at {lo:.0}–{hi:.0} Hz (asked {:.0} Hz)", r.rate_hz)
    }
}

/// The human summary (for stderr).
pub fn write_text(w: &mut dyn Write, r: &Report) -> io::Result<()> {
    let nproc = r.processes.len();
    writeln!(
        w,
        "gilscope check: {} Python process{} recorded for {:.1} s {}; GIL hold limit {:.0} ms",
        nproc,
        if nproc == 1 { "" } else { "es" },
        r.seconds,
        rate_words(r),
        r.max_hold_ms
    )?;
    for h in &r.holds {
        writeln!(w, "  {:7} {}", hold_tag(h), hold_headline(h, r.max_hold_ms))?;
        if let Some(obj) = (!h.object.is_empty()).then_some(&h.object) {
            writeln!(w, "          object: {obj}")?;
        }
        if let Some(reason) = &h.unknown_reason {
            writeln!(w, "          native stack unavailable: {reason}")?;
        }
        if let Some(note) = &h.named_from_call {
            writeln!(
                w,
                "          named by the C function its Python frame called ({note})"
            )?;
        }
        if let Some(ex) = h.examples.first() {
            let py: Vec<String> = ex.python_stack.iter().take(4).map(frame_text).collect();
            if !py.is_empty() {
                writeln!(w, "          called from: {}", py.join(" ← "))?;
            }
            writeln!(
                w,
                "          longest: process {} thread {} ({}), {:.0} ms at +{:.1} s",
                ex.pid, ex.tid, ex.thread, ex.duration_ms, ex.at_s
            )?;
            if let Some(t) = &ex.test {
                writeln!(w, "          in test: {t}")?;
            }
        }
        if let Some(n) = native_text(h) {
            writeln!(w, "          native: {n}")?;
        }
        if let Some(reason) = &h.allowed {
            let label = if hold_tag(h) == "notice" {
                "notice"
            } else {
                "allowed"
            };
            writeln!(w, "          {label}: {reason}")?;
        }
    }
    // Collections under the hold limit are routine: in the JSON only.
    for g in
        r.gc.iter()
            .filter(|g| g.failed || g.longest_ms >= r.max_hold_ms)
    {
        write_gc(w, g, r.max_gc_pause_ms)?;
    }
    for g in &r.gil_reenabled {
        let mods = if g.modules.is_empty() {
            "an extension module gilscope could not name (look for the RuntimeWarning in the output)".to_string()
        } else {
            g.modules
                .iter()
                .map(|m| format!("'{}' ({})", m.name, m.path))
                .collect::<Vec<_>>()
                .join(" or ")
        };
        writeln!(
            w,
            "  FAIL    the GIL of interpreter {} in process {} was re-enabled at +{:.1} s by importing {mods}: \
             it does not declare Py_mod_gil = Py_MOD_GIL_NOT_USED",
            g.interpreter, g.pid, g.at_s
        )?;
    }
    if let Some(problems) = &r.subinterpreters {
        for p in problems {
            writeln!(
                w,
                "  FAIL    extension '{}' ({}) cannot be imported in an own-GIL sub-interpreter: {}",
                p.module.name, p.module.path, p.error
            )?;
        }
    }
    for warn in &r.warnings {
        writeln!(w, "  warning: {warn}")?;
    }
    let unwinds: u64 = r.processes.iter().map(|p| p.unwinds).sum();
    if unwinds > 0 {
        let paused: f64 = r.processes.iter().map(|p| p.paused_ms).sum();
        writeln!(
            w,
            "  native stacks: {unwinds} read, the holding thread stopped {:.2} ms in all",
            paused
        )?;
    }
    let failures = r.failures();
    let status = match (r.command_status, r.command_signal) {
        (_, Some(sig)) => format!("the command was killed by {}", super::signal_name(sig)),
        (Some(0), None) => "the command succeeded".to_string(),
        (Some(s), None) => format!("the command exited with status {s}"),
        (None, None) => "the command's status is unknown".to_string(),
    };
    if failures == 0 {
        writeln!(
            w,
            "gilscope check: passed — no extension held a GIL longer than {:.0} ms; {status}",
            r.max_hold_ms
        )?;
    } else {
        writeln!(
            w,
            "gilscope check: FAILED — {failures} finding{} (see above); {status}",
            if failures == 1 { "" } else { "s" }
        )?;
    }
    Ok(())
}

/// The report as JSON (`--json FILE`).
pub fn write_json(w: &mut dyn Write, r: &Report) -> io::Result<()> {
    #[derive(serde::Serialize)]
    struct Out<'a> {
        gilscope_version: &'a str,
        exit_code: u8,
        failures: usize,
        #[serde(flatten)]
        report: &'a Report,
    }
    serde_json::to_writer_pretty(
        &mut *w,
        &Out {
            gilscope_version: env!("CARGO_PKG_VERSION"),
            exit_code: r.exit_code(),
            failures: r.failures(),
            report: r,
        },
    )
    .map_err(io::Error::other)?;
    writeln!(w)
}

fn xml_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            // XML 1.0 has no other control characters.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t') => o.push('?'),
            c => o.push(c),
        }
    }
    o
}

/// JUnit XML (`--junit FILE`): one testcase per finding, so CI systems list them; a single
/// passing testcase when there are none.
pub fn write_junit(w: &mut dyn Write, r: &Report) -> io::Result<()> {
    struct Case {
        name: String,
        classname: String,
        failure: Option<(String, String)>,
        skipped: Option<String>,
    }
    let mut cases = Vec::new();
    for h in &r.holds {
        let mut body = Vec::new();
        write_text(
            &mut body,
            &Report {
                holds: vec![h.clone()],
                gc: Vec::new(),
                gil_reenabled: Vec::new(),
                subinterpreters: None,
                warnings: Vec::new(),
                ..r.clone()
            },
        )?;
        let headline = hold_headline(h, r.max_hold_ms);
        let what = format!("{}: {}", h.object_name(), h.symbol_name());
        cases.push(Case {
            // CI UIs list testcases by name: the pytest test it happened in, when known.
            name: match h.examples.first().and_then(|e| e.test.as_deref()) {
                Some(t) => format!("{t} ({what})"),
                None => what,
            },
            classname: "gilscope.check.gil_hold".into(),
            failure: h.allowed.is_none().then(|| {
                (
                    headline.clone(),
                    String::from_utf8_lossy(&body).into_owned(),
                )
            }),
            skipped: h.allowed.as_ref().map(|a| format!("allowed: {a}")),
        });
    }
    for g in r.gc.iter().filter(|g| g.failed) {
        let msg = gc_headline(g, r.max_gc_pause_ms);
        let mut body = Vec::new();
        write_gc(&mut body, g, r.max_gc_pause_ms)?;
        cases.push(Case {
            name: format!("garbage collection in interpreter {}", g.interpreter),
            classname: "gilscope.check.gc_pause".into(),
            failure: Some((msg, String::from_utf8_lossy(&body).into_owned())),
            skipped: None,
        });
    }
    for g in &r.gil_reenabled {
        let names: Vec<&str> = g.modules.iter().map(|m| m.name.as_str()).collect();
        let msg = format!(
            "the GIL of interpreter {} in process {} was re-enabled by importing {}",
            g.interpreter,
            g.pid,
            if names.is_empty() {
                "an unknown module".to_string()
            } else {
                names.join(" or ")
            }
        );
        cases.push(Case {
            name: format!(
                "GIL re-enabled by {}",
                if names.is_empty() {
                    "?".to_string()
                } else {
                    names.join(", ")
                }
            ),
            classname: "gilscope.check.gil_reenabled".into(),
            failure: Some((msg.clone(), msg)),
            skipped: None,
        });
    }
    for p in r.subinterpreters.iter().flatten() {
        let msg = format!(
            "{} cannot be imported in an own-GIL sub-interpreter: {}",
            p.module.name, p.error
        );
        cases.push(Case {
            name: format!("{} in an own-GIL sub-interpreter", p.module.name),
            classname: "gilscope.check.subinterpreters".into(),
            failure: Some((msg.clone(), format!("{msg}\n{}", p.module.path))),
            skipped: None,
        });
    }
    if cases.is_empty() {
        cases.push(Case {
            name: format!("no native GIL hold over {:.0} ms", r.max_hold_ms),
            classname: "gilscope.check".into(),
            failure: None,
            skipped: None,
        });
    }
    let failures = cases.iter().filter(|c| c.failure.is_some()).count();
    let skipped = cases.iter().filter(|c| c.skipped.is_some()).count();
    writeln!(w, r#"<?xml version="1.0" encoding="UTF-8"?>"#)?;
    writeln!(
        w,
        r#"<testsuites name="gilscope check" tests="{}" failures="{failures}" skipped="{skipped}" time="{:.3}">"#,
        cases.len(),
        r.seconds
    )?;
    writeln!(
        w,
        r#"  <testsuite name="gilscope check" tests="{}" failures="{failures}" skipped="{skipped}" errors="0" time="{:.3}">"#,
        cases.len(),
        r.seconds
    )?;
    for c in &cases {
        write!(
            w,
            r#"    <testcase classname="{}" name="{}" time="0">"#,
            xml_escape(&c.classname),
            xml_escape(&c.name)
        )?;
        if let Some((msg, body)) = &c.failure {
            write!(
                w,
                "\n      <failure message=\"{}\" type=\"gil\">{}</failure>\n    ",
                xml_escape(msg),
                xml_escape(body)
            )?;
        }
        if let Some(s) = &c.skipped {
            write!(w, "\n      <skipped message=\"{}\"/>\n    ", xml_escape(s))?;
        }
        writeln!(w, "</testcase>")?;
    }
    writeln!(w, "  </testsuite>")?;
    writeln!(w, "</testsuites>")
}

/// GitHub's workflow-command escaping of a property value.
fn gh_prop(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
        .replace(':', "%3A")
        .replace(',', "%2C")
}

fn gh_msg(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// GitHub Actions annotations (`::error file=...,line=...::...`), one per finding, placed at
/// the Python line that made the call. `workspace` (GITHUB_WORKSPACE) makes paths relative.
pub fn write_github(w: &mut dyn Write, r: &Report, workspace: Option<&str>) -> io::Result<()> {
    let rel = |file: &str| -> String {
        match workspace {
            Some(ws) if !ws.is_empty() => file
                .strip_prefix(ws.trim_end_matches('/'))
                .map(|s| s.trim_start_matches('/').to_string())
                .unwrap_or_else(|| file.to_string()),
            _ => file.to_string(),
        }
    };
    for h in &r.holds {
        let level = if h.allowed.is_some() {
            "notice"
        } else {
            "error"
        };
        let mut props = vec![format!(
            "title={}",
            gh_prop(&format!(
                "GIL held {:.0} ms by {}",
                h.longest_ms,
                h.symbol_name()
            ))
        )];
        if let Some(site) = h
            .examples
            .first()
            .and_then(|e| python_site(&e.python_stack))
        {
            if site.line > 0 && !site.file.starts_with('<') {
                props.insert(0, format!("line={}", site.line));
                props.insert(0, format!("file={}", gh_prop(&rel(&site.file))));
            }
        }
        let mut msg = hold_headline(h, r.max_hold_ms);
        if !h.object.is_empty() {
            msg.push_str(&format!("\nobject: {}", h.object));
        }
        if let Some(a) = &h.allowed {
            msg.push_str(&format!("\nallowed: {a}"));
        }
        writeln!(w, "::{level} {}::{}", props.join(","), gh_msg(&msg))?;
    }
    for g in r.gc.iter().filter(|g| g.failed) {
        let mut props = vec![format!(
            "title={}",
            gh_prop(&format!("GC pause {:.0} ms", g.longest_ms))
        )];
        if let Some(site) = python_site(&g.longest.python_stack) {
            if site.line > 0 && !site.file.starts_with('<') {
                props.insert(0, format!("line={}", site.line));
                props.insert(0, format!("file={}", gh_prop(&rel(&site.file))));
            }
        }
        writeln!(
            w,
            "::error {}::{}",
            props.join(","),
            gh_msg(&gc_headline(g, r.max_gc_pause_ms))
        )?;
    }
    for g in &r.gil_reenabled {
        let names: Vec<String> = g.modules.iter().map(|m| format!("'{}'", m.name)).collect();
        writeln!(
            w,
            "::error title={}::{}",
            gh_prop("GIL re-enabled"),
            gh_msg(&format!(
                "the free-threaded interpreter re-enabled its GIL to import {}: declare Py_mod_gil = Py_MOD_GIL_NOT_USED once the module is thread-safe",
                if names.is_empty() { "an extension module".to_string() } else { names.join(" or ") }
            ))
        )?;
    }
    for p in r.subinterpreters.iter().flatten() {
        writeln!(
            w,
            "::error title={}::{}",
            gh_prop("not importable in an own-GIL sub-interpreter"),
            gh_msg(&format!(
                "{} ({}): {}",
                p.module.name, p.module.path, p.error
            ))
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::holds::NativeFrame;
    use crate::check::HoldExample;

    fn report() -> Report {
        Report {
            command: vec!["python".into(), "-m".into(), "pytest".into()],
            command_status: Some(0),
            command_signal: None,
            ignore_command_status: false,
            max_hold_ms: 50.0,
            rate_hz: 1000.0,
            seconds: 2.5,
            processes: Vec::new(),
            holds: vec![HoldGroup {
                class: HoldClass::Extension,
                module: Some("gilext".into()),
                object: "/w/ext/gilext.cpython-312-x86_64-linux-gnu.so".into(),
                symbol: Some("gilext_hold_spin".into()),
                in_interpreter: false,
                unknown_reason: None,
                named_from_call: None,
                during_import: false,
                count: 2,
                longest_ms: 201.4,
                total_ms: 350.0,
                interpreters: vec![0],
                allowed: None,
                examples: vec![HoldExample {
                    pid: 10,
                    tid: 11,
                    thread: "MainThread".into(),
                    interpreter: 0,
                    duration_ms: 201.4,
                    at_s: 0.4,
                    python_stack: vec![FrameInfo {
                        function: "test_<native>".into(),
                        file: "/w/tests/test_x.py".into(),
                        line: 12,
                        interpreter: 0,
                    }],
                    native_stack: vec![NativeFrame {
                        addr: 0x1234,
                        object: "/w/ext/gilext.cpython-312-x86_64-linux-gnu.so".into(),
                        symbol: Some("gilext_hold_spin".into()),
                        file_offset: Some(0x1234),
                        approximate: false,
                    }],
                    test: Some("tests/test_x.py::test_native".into()),
                }],
            }],
            gc: Vec::new(),
            max_gc_pause_ms: None,
            gil_reenabled: Vec::new(),
            subinterpreters: None,
            warnings: Vec::new(),
        }
    }

    #[test]
    fn text_names_the_object_symbol_and_call_site() {
        let mut out = Vec::new();
        write_text(&mut out, &report()).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("FAIL    gilext_hold_spin in gilext (gilext.cpython-312-x86_64-linux-gnu.so) held the GIL (interpreter 0) 2 times for up to 201 ms"), "{s}");
        assert!(
            s.contains("called from: test_<native> (/w/tests/test_x.py:12)"),
            "{s}"
        );
        assert!(s.contains("FAILED — 1 finding"), "{s}");
    }

    #[test]
    fn the_header_states_the_rate_achieved() {
        let run = |achieved_hz: f64| crate::check::ProcessRun {
            pid: 10,
            python: "3.12.1".into(),
            free_threaded: false,
            samples: 100,
            achieved_hz,
            seconds: 2.5,
            unwinds: 0,
            paused_ms: 0.0,
            native_unavailable: None,
            trace: None,
        };
        let header = |runs: Vec<crate::check::ProcessRun>| {
            let mut r = report();
            r.processes = runs;
            let mut out = Vec::new();
            write_text(&mut out, &r).unwrap();
            String::from_utf8(out)
                .unwrap()
                .lines()
                .next()
                .unwrap()
                .to_string()
        };
        assert!(header(vec![run(995.0)]).contains("recorded for 2.5 s at 1000 Hz;"));
        let h = header(vec![run(900.0)]);
        assert!(
            h.contains("recorded for 2.5 s sampled at 900 Hz (asked 1000 Hz);")
                && !h.contains("at 1000 Hz"),
            "{h}"
        );
        assert!(
            header(vec![run(378.2), run(639.0)]).contains("sampled at 378–639 Hz (asked 1000 Hz)")
        );
    }

    #[test]
    fn junit_is_escaped_and_counts_failures() {
        let mut out = Vec::new();
        write_junit(&mut out, &report()).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains(r#"tests="1" failures="1" skipped="0""#), "{s}");
        assert!(s.contains("test_&lt;native&gt;"), "{s}");
        assert!(!s.contains("test_<native>"), "{s}");
        let mut allowed = report();
        allowed.holds[0].allowed = Some("known & tracked".into());
        let mut out = Vec::new();
        write_junit(&mut out, &allowed).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(
            s.contains(r#"failures="0" skipped="1""#) && s.contains("known &amp; tracked"),
            "{s}"
        );
    }

    #[test]
    fn github_annotation_points_at_the_python_line() {
        let mut out = Vec::new();
        write_github(&mut out, &report(), Some("/w/")).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(
            s.starts_with(
                "::error file=tests/test_x.py,line=12,title=GIL held 201 ms by gilext_hold_spin::"
            ),
            "{s}"
        );
        assert_eq!(
            s.lines().count(),
            1,
            "newlines in the message are escaped: {s}"
        );
    }

    #[test]
    fn json_has_the_exit_code() {
        let mut out = Vec::new();
        write_json(&mut out, &report()).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["exit_code"], 1);
        assert_eq!(v["holds"][0]["symbol"], "gilext_hold_spin");
        assert_eq!(v["holds"][0]["count"], 2);
    }
}
