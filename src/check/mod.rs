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

use crate::analysis::holds::{Attribution, Episode, NativeFrame};
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
}

/// Long holds of one shared object and symbol.
#[derive(Debug, Clone, Serialize)]
pub struct HoldGroup {
    /// The shared object's path ("" when unknown).
    pub object: String,
    pub symbol: Option<String>,
    /// The frame is in the interpreter itself (a builtin), not an extension.
    pub in_interpreter: bool,
    /// Why the native code is unknown, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown_reason: Option<String>,
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

/// What `gilscope check` found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub command: Vec<String>,
    /// The command's exit status (128+N for a signal); None when it could not be waited for.
    pub command_status: Option<i32>,
    pub ignore_command_status: bool,
    pub max_hold_ms: f64,
    pub rate_hz: f64,
    pub seconds: f64,
    pub processes: Vec<ProcessRun>,
    pub holds: Vec<HoldGroup>,
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

/// Groups episodes by (object, symbol), longest group first, and applies the allow-list.
/// Holds during imports are grouped apart and allowed unless `include_imports`.
/// `t0_ns`: the monotonic time the check started (for `at_s`).
pub fn group_holds(
    episodes: &[Episode],
    allow: &[AllowRule],
    t0_ns: u64,
    include_imports: bool,
) -> Vec<HoldGroup> {
    let mut groups: BTreeMap<(String, Option<String>, bool), HoldGroup> = BTreeMap::new();
    for e in episodes {
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
        let ms = e.duration_ns as f64 / 1e6;
        let g = groups
            .entry((object.clone(), symbol.clone(), import))
            .or_insert_with(|| HoldGroup {
                object,
                symbol,
                in_interpreter: in_interp,
                unknown_reason: unknown,
                during_import: import,
                count: 0,
                longest_ms: 0.0,
                total_ms: 0.0,
                interpreters: Vec::new(),
                allowed: (import && !include_imports).then(|| IMPORT_REASON.to_string()),
                examples: Vec::new(),
            });
        g.count += 1;
        g.total_ms += ms;
        g.longest_ms = g.longest_ms.max(ms);
        if !g.interpreters.contains(&e.interpreter) {
            g.interpreters.push(e.interpreter);
            g.interpreters.sort_unstable();
        }
        g.examples.push(HoldExample {
            pid: e.pid,
            tid: e.tid,
            thread: e.thread_name.clone(),
            interpreter: e.interpreter,
            duration_ms: ms,
            at_s: e.first_seen_ns.saturating_sub(t0_ns) as f64 / 1e9,
            python_stack: e.python_stack.clone(),
            native_stack: e.native_stack.clone(),
        });
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

/// The module name an extension file is imported by: the file name up to its first dot
/// (`_foo.cpython-312-x86_64-linux-gnu.so` → `_foo`).
pub fn module_name_of(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    base.split('.').next().unwrap_or(base).to_string()
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
        let g = group_holds(&eps, &allow, 4_000_000_000, false);
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
            ignore_command_status: false,
            max_hold_ms: 50.0,
            rate_hz: 1000.0,
            seconds: 1.0,
            processes: Vec::new(),
            holds: g,
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
        e.python_stack.insert(
            0,
            FrameInfo {
                function: "_call_with_frames_removed".into(),
                file: "<frozen importlib._bootstrap>".into(),
                line: 488,
                interpreter: 0,
            },
        );
        let plain = ep("/lib/libpython3.13.so", "_imp_create_dynamic", 80, 0);
        let g = group_holds(&[e.clone(), plain.clone()], &[], 0, false);
        assert_eq!(g.len(), 2, "grouped apart");
        let imp = g.iter().find(|h| h.during_import).unwrap();
        assert_eq!(imp.allowed.as_deref(), Some(IMPORT_REASON));
        assert!(g.iter().any(|h| !h.during_import && h.allowed.is_none()));
        let g = group_holds(&[e], &[], 0, true);
        assert!(g[0].during_import && g[0].allowed.is_none());
    }

    #[test]
    fn extension_names() {
        let p = "/site/pkg/_speedups.cpython-313t-x86_64-linux-gnu.so";
        assert!(is_extension_file(p));
        assert_eq!(module_name_of(p), "_speedups");
        assert!(is_extension_file("/x/mod.abi3.so"));
        assert!(!is_extension_file("/usr/lib/libssl.so.3"));
    }
}
