//! `gilscope check`: what the CI gate found, grouped, and how it ends.
//!
//! The CLI runs the command under the recorder and feeds each process's snapshots to a
//! [`HoldDetector`](crate::analysis::holds::HoldDetector); this module turns the episodes and
//! the other observations into a [`Report`], which [`report`] renders (human text, JSON, JUnit,
//! GitHub annotations). Pure: no OS code.

pub mod config;
pub mod report;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::analysis::holds::{Attribution, Episode, GcPause, NativeFrame};
use crate::model::FrameInfo;
use config::AllowRule;

/// Exit codes of `gilscope check` (docs/ci.md).
pub const EXIT_CLEAN: u8 = 0;
pub const EXIT_FINDINGS: u8 = 1;
pub const EXIT_COULD_NOT_RUN: u8 = 2;

/// One recorded process.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessRun {
    pub pid: u32,
    pub python: String,
    pub free_threaded: bool,
    pub samples: u64,
    pub achieved_hz: f64,
    pub seconds: f64,
    /// Native unwinds done (each stops one thread for a moment), and the total time threads
    /// were stopped for them.
    pub unwinds: u64,
    pub paused_ms: f64,
    /// Why native attribution was off for this process, if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub native_unavailable: Option<String>,
    /// The trace file, when kept (`--trace`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

/// One occurrence of a long hold.
#[derive(Debug, Clone, Serialize)]
pub struct HoldExample {
    pub pid: u32,
    pub tid: u32,
    pub thread: String,
    pub interpreter: i64,
    pub duration_ms: f64,
    /// Seconds since the check started.
    pub at_s: f64,
    pub python_stack: Vec<FrameInfo>,
    pub native_stack: Vec<NativeFrame>,
    /// The pytest test it happened in (`tests/test_x.py::TestY::test_z`), when the Python
    /// stack runs one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test: Option<String>,
}

/// The pytest node id of the test a Python stack (innermost first) is running: the frame that
/// `_pytest/python.py`'s `pytest_pyfunc_call` called, as `FILE::Class::function`, with FILE
/// relative to `rootdir` (the directory pytest ran in) when it lies below it. Parametrized
/// ids (`[1-a]`) are not in the stack and are left out.
pub fn pytest_node_id(stack: &[FrameInfo], rootdir: Option<&str>) -> Option<String> {
    let i = stack.iter().position(|f| {
        f.function.ends_with("pytest_pyfunc_call") && f.file.ends_with("_pytest/python.py")
    })?;
    let test = stack.get(i.checked_sub(1)?)?;
    let file = match rootdir {
        Some(root) => test
            .file
            .strip_prefix(root.trim_end_matches('/'))
            .and_then(|r| r.strip_prefix('/'))
            .unwrap_or(&test.file),
        None => &test.file,
    };
    // 3.11+ qualified names: "TestY.test_z"; a function defined inside another has
    // "<locals>" in it and is not a collected test: keep the last part then.
    let qual = test
        .function
        .rsplit("<locals>.")
        .next()
        .unwrap_or(&test.function);
    Some(format!("{file}::{}", qual.replace('.', "::")))
}

/// Whose code held the GIL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldClass {
    /// An extension module (or a foreign function called through ctypes): a finding.
    Extension,
    /// CPython's own C code (`sorted`, `str.join`, a big deallocation): a notice, unless
    /// `--include-interpreter`.
    Interpreter,
    /// The native stack could not say: a finding (the report says why).
    Unknown,
}

/// Long holds of one shared object and symbol.
#[derive(Debug, Clone, Serialize)]
pub struct HoldGroup {
    pub class: HoldClass,
    /// The shared object's path ("" when unknown).
    pub object: String,
    /// The module it is imported as, when the object is an extension module
    /// (`numpy._core._multiarray_umath`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    pub symbol: Option<String>,
    /// The frame is in the interpreter itself (a builtin), not an extension.
    pub in_interpreter: bool,
    /// Why the native code is unknown, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown_reason: Option<String>,
    /// The hold is named after the C function its Python frame was calling (read from
    /// memory), because the native stack could not name it: where the walk stopped and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub named_from_call: Option<String>,
    /// The holds happened while a module was being imported.
    pub during_import: bool,
    pub count: u64,
    pub longest_ms: f64,
    pub total_ms: f64,
    /// Interpreters whose GIL was held.
    pub interpreters: Vec<i64>,
    /// The allow-list entry's reason, when allowed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed: Option<String>,
    /// The longest occurrence first; at most [`MAX_EXAMPLES`].
    pub examples: Vec<HoldExample>,
}

impl HoldGroup {
    /// "gilext.cpython-312-x86_64-linux-gnu.so" or "unknown native code".
    pub fn object_name(&self) -> &str {
        if self.object.is_empty() {
            "unknown native code"
        } else {
            self.object.rsplit('/').next().unwrap_or(&self.object)
        }
    }

    /// "gilext_hold_spin", or "?" when the object has no symbol there.
    pub fn symbol_name(&self) -> &str {
        self.symbol.as_deref().unwrap_or("?")
    }
}

/// Examples kept per group.
pub const MAX_EXAMPLES: usize = 3;

/// A free-threaded process whose GIL was switched on by an import.
#[derive(Debug, Clone, Serialize)]
pub struct GilReenabled {
    pub pid: u32,
    pub interpreter: i64,
    pub at_s: f64,
    /// The extension modules loaded just before (best candidates first); empty when unknown.
    pub modules: Vec<ExtensionModule>,
}

/// An extension module, as a file and the name it is imported by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ExtensionModule {
    pub name: String,
    pub path: String,
}

/// An extension that cannot be imported in an own-GIL sub-interpreter.
#[derive(Debug, Clone, Serialize)]
pub struct SubinterpProblem {
    pub module: ExtensionModule,
    pub error: String,
}

/// The garbage collections of one interpreter of one process.
#[derive(Debug, Clone, Serialize)]
pub struct GcSummary {
    pub pid: u32,
    pub interpreter: i64,
    /// Collections seen (one shorter than the sampling period is mostly not seen).
    pub collections: u64,
    pub total_ms: f64,
    pub longest_ms: f64,
    /// The longest collection is over `--max-gc-pause`.
    pub failed: bool,
    /// The longest collection.
    pub longest: HoldExample,
}

/// What `gilscope check` found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub command: Vec<String>,
    /// The command's exit status (128+N for a signal); None when it could not be waited for.
    pub command_status: Option<i32>,
    /// The signal that killed the command, when one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_signal: Option<i32>,
    pub ignore_command_status: bool,
    pub max_hold_ms: f64,
    pub rate_hz: f64,
    pub seconds: f64,
    pub processes: Vec<ProcessRun>,
    pub holds: Vec<HoldGroup>,
    /// Garbage-collection pauses, per process and interpreter (CPython's own work: they fail
    /// the check only over `max_gc_pause_ms`).
    pub gc: Vec<GcSummary>,
    pub max_gc_pause_ms: Option<f64>,
    pub gil_reenabled: Vec<GilReenabled>,
    /// None: not checked (`--subinterpreters` off or not applicable).
    pub subinterpreters: Option<Vec<SubinterpProblem>>,
    /// Things that weakened the check (no native attribution, samples behind, ...).
    pub warnings: Vec<String>,
}

impl Report {
    /// Holds that fail the check (not allowed).
    pub fn failing_holds(&self) -> impl Iterator<Item = &HoldGroup> {
        self.holds.iter().filter(|h| h.allowed.is_none())
    }

    /// Number of findings that fail the check.
    pub fn failures(&self) -> usize {
        self.failing_holds().count()
            + self.gc.iter().filter(|g| g.failed).count()
            + self.gil_reenabled.len()
            + self.subinterpreters.as_ref().map_or(0, |v| v.len())
    }

    /// 0 clean, 1 findings — or the command's own non-zero status, unless ignored.
    pub fn exit_code(&self) -> u8 {
        if let Some(s) = self.command_status.filter(|&s| s != 0) {
            if !self.ignore_command_status {
                return u8::try_from(s).unwrap_or(EXIT_FINDINGS);
            }
        }
        if self.failures() > 0 {
            EXIT_FINDINGS
        } else {
            EXIT_CLEAN
        }
    }
}

/// "SIGKILL" for 9, and the other signals a test run meets; "signal N" otherwise.
pub fn signal_name(sig: i32) -> String {
    let name = match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        _ => return format!("signal {sig}"),
    };
    format!("{name} (signal {sig})")
}

/// Whether the Python stack is inside an import (importlib's frozen bootstrap): loading an
/// extension (dlopen, its init function) holds the GIL by design.
pub fn during_import(stack: &[FrameInfo]) -> bool {
    stack
        .iter()
        .any(|f| f.file.starts_with("<frozen importlib._bootstrap"))
}

/// The reason shown for holds during imports when they are not reported as failures.
pub const IMPORT_REASON: &str =
    "during an import (loading an extension holds the GIL); --include-imports fails on these";

/// The reason shown for holds in CPython's own code when they are not reported as failures.
pub const INTERPRETER_REASON: &str =
    "CPython's own code, not an extension's; --include-interpreter fails on these";

/// How [`group_holds`] sorts episodes into findings.
#[derive(Debug, Clone, Copy)]
pub struct GroupOptions {
    /// The hold limit: an extension's hold counts only if what is left of it after its
    /// garbage-collection share is still this long.
    pub max_hold_ns: u64,
    /// Fail on holds during imports too.
    pub include_imports: bool,
    /// Fail on holds in CPython's own code too.
    pub include_interpreter: bool,
    /// `t0_ns`: the monotonic time the check started (for `at_s`).
    pub t0_ns: u64,
}

/// The class of a long hold, or None when it is a garbage collection (reported apart, from the
/// interpreter's own GC state) or Python code.
pub fn classify(e: &Episode, max_hold_ns: u64) -> Option<HoldClass> {
    let class = match &e.attribution {
        Attribution::Native {
            interpreter: false, ..
        } => HoldClass::Extension,
        Attribution::Native {
            interpreter: true, ..
        } => HoldClass::Interpreter,
        Attribution::Unknown { .. } => HoldClass::Unknown,
        Attribution::Python => return None,
    };
    let gc = match class {
        // The extension's own share: a collection its allocations set off is the GC's pause.
        HoldClass::Extension => e.duration_ns.saturating_sub(e.gc_ns()) < max_hold_ns,
        // Mostly a collection: the GC section has it.
        _ => e.gc_share >= 0.5,
    };
    (!gc).then_some(class)
}

impl HoldExample {
    fn of_episode(e: &Episode, t0_ns: u64) -> Self {
        HoldExample {
            pid: e.pid,
            tid: e.tid,
            thread: e.thread_name.clone(),
            interpreter: e.interpreter,
            duration_ms: e.duration_ns as f64 / 1e6,
            at_s: e.first_seen_ns.saturating_sub(t0_ns) as f64 / 1e9,
            python_stack: e.python_stack.clone(),
            native_stack: e.native_stack.clone(),
            test: None,
        }
    }

    fn of_gc(p: &GcPause, t0_ns: u64) -> Self {
        HoldExample {
            pid: p.pid,
            tid: p.tid.unwrap_or(0),
            thread: p.thread_name.clone(),
            interpreter: p.interpreter,
            duration_ms: p.duration_ns as f64 / 1e6,
            at_s: p.first_seen_ns.saturating_sub(t0_ns) as f64 / 1e9,
            python_stack: p.python_stack.clone(),
            native_stack: Vec::new(),
            test: None,
        }
    }
}

/// Groups episodes by (object, symbol), longest group first, and applies the allow-list.
/// Holds during imports are grouped apart and allowed unless `include_imports`; holds in
/// CPython's own code are notices unless `include_interpreter`; garbage collections are left
/// to [`summarize_gc`].
pub fn group_holds(
    episodes: &[Episode],
    allow: &[AllowRule],
    opts: &GroupOptions,
) -> Vec<HoldGroup> {
    let mut groups: BTreeMap<(String, Option<String>, bool), HoldGroup> = BTreeMap::new();
    for e in episodes {
        let Some(class) = classify(e, opts.max_hold_ns) else {
            continue;
        };
        let import = during_import(&e.python_stack);
        let (object, symbol, in_interp, unknown) = match &e.attribution {
            Attribution::Native {
                object,
                symbol,
                interpreter,
            } => (object.clone(), symbol.clone(), *interpreter, None),
            Attribution::Unknown { reason } => (String::new(), None, false, Some(reason.clone())),
            Attribution::Python => continue,
        };
        let allowed = if import && !opts.include_imports {
            Some(IMPORT_REASON.to_string())
        } else if class == HoldClass::Interpreter && !opts.include_interpreter {
            Some(INTERPRETER_REASON.to_string())
        } else {
            None
        };
        let ms = e.duration_ns as f64 / 1e6;
        let g = groups
            .entry((object.clone(), symbol.clone(), import))
            .or_insert_with(|| HoldGroup {
                class,
                module: None,
                object,
                symbol,
                in_interpreter: in_interp,
                unknown_reason: unknown,
                named_from_call: e.named_from_call.clone(),
                during_import: import,
                count: 0,
                longest_ms: 0.0,
                total_ms: 0.0,
                interpreters: Vec::new(),
                allowed,
                examples: Vec::new(),
            });
        g.count += 1;
        g.total_ms += ms;
        g.longest_ms = g.longest_ms.max(ms);
        if !g.interpreters.contains(&e.interpreter) {
            g.interpreters.push(e.interpreter);
            g.interpreters.sort_unstable();
        }
        g.examples.push(HoldExample::of_episode(e, opts.t0_ns));
    }
    let mut out: Vec<HoldGroup> = groups.into_values().collect();
    for g in &mut out {
        g.examples
            .sort_by(|a, b| b.duration_ms.total_cmp(&a.duration_ms));
        g.examples.truncate(MAX_EXAMPLES);
        if !g.object.is_empty() && g.allowed.is_none() {
            g.allowed = allow
                .iter()
                .find(|r| r.matches(&g.object, g.symbol.as_deref()))
                .map(|r| r.reason.clone());
        }
    }
    out.sort_by(|a, b| b.longest_ms.total_cmp(&a.longest_ms));
    out
}

/// Per process and interpreter: collections seen, their total and the longest; `failed` when
/// the longest is over `max_gc_pause_ns`.
pub fn summarize_gc(
    pauses: &[GcPause],
    max_gc_pause_ns: Option<u64>,
    t0_ns: u64,
) -> Vec<GcSummary> {
    let mut by: BTreeMap<(u32, i64), Vec<&GcPause>> = BTreeMap::new();
    for p in pauses {
        by.entry((p.pid, p.interpreter)).or_default().push(p);
    }
    by.into_iter()
        .filter_map(|((pid, interpreter), ps)| {
            let longest = ps
                .iter()
                .max_by_key(|p| (p.duration_ns, std::cmp::Reverse(p.first_seen_ns)))?;
            let total: u64 = ps.iter().map(|p| p.duration_ns).sum();
            Some(GcSummary {
                pid,
                interpreter,
                collections: ps.len() as u64,
                total_ms: total as f64 / 1e6,
                longest_ms: longest.duration_ns as f64 / 1e6,
                failed: max_gc_pause_ns.is_some_and(|m| longest.duration_ns >= m),
                longest: HoldExample::of_gc(longest, t0_ns),
            })
        })
        .collect()
}

/// The module name an extension file is imported by: the file name up to its first dot
/// (`_foo.cpython-312-x86_64-linux-gnu.so` → `_foo`).
pub fn module_name_of(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    base.split('.').next().unwrap_or(base).to_string()
}

/// The name an extension file is imported by, dotted as Python spells it: each enclosing
/// directory that is a regular package (`is_package(dir)`: it has an `__init__.py`) adds a
/// component — `.../site-packages/optree/_C.cpython-312-x86_64-linux-gnu.so` → `optree._C`,
/// `.../numpy/_core/_multiarray_umath.cpython-312-…so` → `numpy._core._multiarray_umath`.
pub fn dotted_module_name(path: &str, is_package: impl Fn(&str) -> bool) -> String {
    let mut name = module_name_of(path);
    let mut dir = match path.rsplit_once('/') {
        Some((d, _)) => d,
        None => return name,
    };
    for _ in 0..32 {
        if dir.is_empty() || !is_package(dir) {
            break;
        }
        let (parent, component) = dir.rsplit_once('/').unwrap_or(("", dir));
        if component.is_empty() || !component.chars().all(|c| c.is_alphanumeric() || c == '_') {
            break;
        }
        name = format!("{component}.{name}");
        dir = parent;
    }
    name
}

/// Whether a mapped file looks like a CPython extension module (by its name).
pub fn is_extension_file(path: &str) -> bool {
    let base = path.rsplit('/').next().unwrap_or(path);
    (base.contains(".cpython-") || base.contains(".abi3.") || base.contains(".abi3t."))
        && base.ends_with(".so")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FrameInfo;

    fn ep(object: &str, symbol: &str, ms: u64, interp: i64) -> Episode {
        Episode {
            pid: 1,
            tid: 2,
            thread_name: "MainThread".into(),
            interpreter: interp,
            gil_address: 0x10,
            first_seen_ns: 5_000_000_000,
            last_seen_ns: 5_000_000_000 + ms * 1_000_000,
            duration_ns: ms * 1_000_000,
            python_stack: vec![FrameInfo {
                function: "test_x".into(),
                file: "t.py".into(),
                line: 3,
                interpreter: interp,
            }],
            native_stack: Vec::new(),
            attribution: Attribution::Native {
                object: object.into(),
                symbol: Some(symbol.into()),
                interpreter: false,
            },
            gc_share: 0.0,
            c_call: None,
            named_from_call: None,
        }
    }

    fn opts(t0_ns: u64, include_imports: bool) -> GroupOptions {
        GroupOptions {
            max_hold_ns: 50_000_000,
            include_imports,
            include_interpreter: false,
            t0_ns,
        }
    }

    #[test]
    fn groups_by_object_and_symbol_and_applies_the_allow_list() {
        let eps = vec![
            ep("/a/ext.so", "slow", 80, 0),
            ep("/a/ext.so", "slow", 120, 1),
            ep("/a/ext.so", "other", 60, 0),
            ep("/b/libz.so.1", "deflate", 300, 0),
        ];
        let allow = vec![AllowRule {
            object: Some("libz.so*".into()),
            symbol: None,
            reason: "compression".into(),
        }];
        let g = group_holds(&eps, &allow, &opts(4_000_000_000, false));
        assert_eq!(g.len(), 3);
        assert_eq!(
            (g[0].object_name(), g[0].allowed.as_deref()),
            ("libz.so.1", Some("compression"))
        );
        let slow = g.iter().find(|h| h.symbol_name() == "slow").unwrap();
        assert_eq!(slow.count, 2);
        assert_eq!(slow.longest_ms, 120.0);
        assert_eq!(slow.total_ms, 200.0);
        assert_eq!(slow.interpreters, vec![0, 1]);
        assert_eq!(slow.examples[0].duration_ms, 120.0);
        assert_eq!(slow.examples[0].at_s, 1.0);
        let report = Report {
            command: vec!["pytest".into()],
            command_status: Some(0),
            command_signal: None,
            ignore_command_status: false,
            max_hold_ms: 50.0,
            rate_hz: 1000.0,
            seconds: 1.0,
            processes: Vec::new(),
            holds: g,
            gc: Vec::new(),
            max_gc_pause_ms: None,
            gil_reenabled: Vec::new(),
            subinterpreters: None,
            warnings: Vec::new(),
        };
        assert_eq!(report.failures(), 2);
        assert_eq!(report.exit_code(), EXIT_FINDINGS);
        let mut failed_cmd = report.clone();
        failed_cmd.command_status = Some(3);
        assert_eq!(failed_cmd.exit_code(), 3);
        failed_cmd.ignore_command_status = true;
        assert_eq!(failed_cmd.exit_code(), EXIT_FINDINGS);
        let mut clean = report;
        clean.holds.retain(|h| h.allowed.is_some());
        assert_eq!(clean.exit_code(), EXIT_CLEAN);
    }

    #[test]
    fn holds_during_imports_are_allowed_unless_asked_for() {
        let mut e = ep("/lib/libpython3.13.so", "_imp_create_dynamic", 115, 0);
        e.attribution = Attribution::Native {
            object: "/site/_speedups.so".into(),
            symbol: Some("PyInit__speedups".into()),
            interpreter: false,
        };
        e.python_stack.insert(
            0,
            FrameInfo {
                function: "_call_with_frames_removed".into(),
                file: "<frozen importlib._bootstrap>".into(),
                line: 488,
                interpreter: 0,
            },
        );
        let mut plain = e.clone();
        plain.python_stack.remove(0);
        let g = group_holds(&[e.clone(), plain.clone()], &[], &opts(0, false));
        assert_eq!(g.len(), 2, "grouped apart");
        let imp = g.iter().find(|h| h.during_import).unwrap();
        assert_eq!(imp.allowed.as_deref(), Some(IMPORT_REASON));
        assert!(g.iter().any(|h| !h.during_import && h.allowed.is_none()));
        let g = group_holds(&[e], &[], &opts(0, true));
        assert!(g[0].during_import && g[0].allowed.is_none());
    }

    fn interp_ep(symbol: &str, ms: u64, gc_share: f64) -> Episode {
        let mut e = ep("/py/lib/libpython3.12.so.1.0", symbol, ms, 0);
        e.attribution = Attribution::Native {
            object: "/py/lib/libpython3.12.so.1.0".into(),
            symbol: Some(symbol.into()),
            interpreter: true,
        };
        e.gc_share = gc_share;
        e
    }

    #[test]
    fn cpythons_own_code_is_a_notice_and_collections_go_to_the_gc_section() {
        let eps = vec![
            interp_ep("builtin_sorted", 900, 0.0),
            // 3.12 runs collections from the eval breaker: the stack names _Py_HandlePending.
            interp_ep("_Py_HandlePending", 110, 1.0),
            interp_ep("gc_collect", 100, 0.97),
        ];
        let g = group_holds(&eps, &[], &opts(0, false));
        assert_eq!(g.len(), 1, "collections are not holds: {g:?}");
        assert_eq!(g[0].class, HoldClass::Interpreter);
        assert_eq!(g[0].allowed.as_deref(), Some(INTERPRETER_REASON));
        let mut o = opts(0, false);
        o.include_interpreter = true;
        let g = group_holds(&eps, &[], &o);
        assert_eq!(g.len(), 1);
        assert!(g[0].allowed.is_none(), "--include-interpreter fails on it");
    }

    #[test]
    fn an_extension_is_charged_only_for_what_the_collector_did_not_do() {
        let mut mostly_gc = ep("/site/ext.so", "build", 120, 0);
        mostly_gc.gc_share = 0.7; // 84 ms of GC, 36 ms of its own: under the 50 ms limit
        let mut own = ep("/site/ext.so", "build", 200, 0);
        own.gc_share = 0.5; // 100 ms of its own
        let g = group_holds(&[mostly_gc, own], &[], &opts(0, false));
        assert_eq!(g.len(), 1);
        assert_eq!((g[0].class, g[0].count), (HoldClass::Extension, 1));
        assert!(g[0].allowed.is_none());
    }

    fn pause(interp: i64, first_ms: u64, ms: u64) -> GcPause {
        GcPause {
            pid: 9,
            interpreter: interp,
            tid: Some(9),
            thread_name: "MainThread".into(),
            first_seen_ns: first_ms * 1_000_000,
            last_seen_ns: (first_ms + ms) * 1_000_000,
            duration_ns: ms * 1_000_000,
            python_stack: Vec::new(),
        }
    }

    #[test]
    fn gc_pauses_fail_only_over_the_gc_limit() {
        let ps = vec![pause(0, 10, 30), pause(0, 100, 80), pause(1, 50, 5)];
        let g = summarize_gc(&ps, None, 0);
        assert_eq!(g.len(), 2);
        assert_eq!(
            (g[0].collections, g[0].longest_ms, g[0].total_ms),
            (2, 80.0, 110.0)
        );
        assert!(g.iter().all(|s| !s.failed));
        assert_eq!(g[0].longest.at_s, 0.1);
        let g = summarize_gc(&ps, Some(50_000_000), 0);
        assert_eq!(
            g.iter()
                .filter(|s| s.failed)
                .map(|s| s.interpreter)
                .collect::<Vec<_>>(),
            vec![0]
        );
    }

    #[test]
    fn pytest_node_ids_from_the_stack() {
        let f = |function: &str, file: &str| FrameInfo {
            function: function.into(),
            file: file.into(),
            line: 1,
            interpreter: 0,
        };
        let stack = vec![
            f("helper", "/w/proj/tests/util.py"),
            f("TestY.test_z", "/w/proj/tests/test_x.py"),
            f("pytest_pyfunc_call", "/site/_pytest/python.py"),
            f("_multicall", "/site/pluggy/_callers.py"),
        ];
        assert_eq!(
            pytest_node_id(&stack, Some("/w/proj")).as_deref(),
            Some("tests/test_x.py::TestY::test_z")
        );
        assert_eq!(
            pytest_node_id(&stack, Some("/elsewhere")).as_deref(),
            Some("/w/proj/tests/test_x.py::TestY::test_z")
        );
        assert_eq!(pytest_node_id(&stack[..1], None), None);
    }

    #[test]
    fn extension_names() {
        let p = "/site/pkg/_speedups.cpython-313t-x86_64-linux-gnu.so";
        assert!(is_extension_file(p));
        assert_eq!(module_name_of(p), "_speedups");
        let pkgs = ["/site/numpy", "/site/numpy/_core", "/site/optree"];
        let is_pkg = |d: &str| pkgs.contains(&d);
        assert_eq!(
            dotted_module_name(
                "/site/numpy/_core/_multiarray_umath.cpython-312-x86_64-linux-gnu.so",
                is_pkg
            ),
            "numpy._core._multiarray_umath"
        );
        assert_eq!(
            dotted_module_name("/site/optree/_C.abi3.so", is_pkg),
            "optree._C"
        );
        assert_eq!(
            dotted_module_name("/site/top.cpython-312-x86_64-linux-gnu.so", is_pkg),
            "top"
        );
        assert!(is_extension_file("/x/mod.abi3.so"));
        assert!(!is_extension_file("/usr/lib/libssl.so.3"));
    }
}
