//! The JSON metadata header of a trace file (docs/trace-format.md).
//!
//! Its own types, not the snapshot's: the file format must not change when
//! the in-memory model does. Every field has a default, so a header written
//! by an older gilscope (with fewer fields) still reads; unknown fields from a
//! newer one are kept in `extra`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::timeline::Source;
use crate::model::Snapshot;

/// Value of [`Metadata::format`].
pub const FORMAT_NAME: &str = "gilscope-trace";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Metadata {
    /// Always "gilscope-trace".
    pub format: String,
    /// The gilscope that wrote the file.
    pub gilscope_version: String,
    /// How the timeline was obtained: "sampled" (snapshots) or "exact".
    pub mode: Source,
    pub target: TargetMeta,
    pub python: Option<PythonMeta>,
    /// Interpreters at the first sample (the records say when others come and go).
    pub interpreters: Vec<InterpreterMeta>,
    pub options: OptionsMeta,
    pub clock: ClockMeta,
    /// Fields this version does not know, kept as they were.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Default for Metadata {
    fn default() -> Self {
        Metadata {
            format: FORMAT_NAME.to_owned(),
            gilscope_version: env!("CARGO_PKG_VERSION").to_owned(),
            mode: Source::Sampled,
            target: TargetMeta::default(),
            python: None,
            interpreters: Vec::new(),
            options: OptionsMeta::default(),
            clock: ClockMeta::default(),
            extra: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TargetMeta {
    pub pid: u32,
    /// The command gilscope launched (`record -- CMD ARGS...`), if it did.
    pub command: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PythonMeta {
    pub version: String,
    pub version_hex: u32,
    pub free_threaded: bool,
    pub binary: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct InterpreterMeta {
    pub id: i64,
    pub main: bool,
    pub own_gil: bool,
    /// Address of its GIL, as "0x…" (interpreters sharing a GIL share it).
    pub gil_address: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OptionsMeta {
    /// Asked sampling rate.
    pub rate_hz: f64,
    pub duration_s: Option<f64>,
    pub blocking: bool,
    pub subprocesses: bool,
    /// `--max-overhead` in percent of one CPU (`None`: no budget).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_overhead_pct: Option<f64>,
    /// What one probe hit costs the target, ns (exact mode; calibrated at start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_ns_per_event: Option<u64>,
    /// Where on/off-CPU states came from: "perf context-switch records" or
    /// "/proc/TID/stat" (live recordings; absent in older files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oncpu_source: Option<String>,
}

impl Default for OptionsMeta {
    fn default() -> Self {
        OptionsMeta {
            rate_hz: 1000.0,
            duration_s: None,
            blocking: false,
            subprocesses: false,
            max_overhead_pct: None,
            probe_ns_per_event: None,
            oncpu_source: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClockMeta {
    /// The clock all record times are on: "CLOCK_MONOTONIC".
    pub name: String,
    /// Always "ns".
    pub unit: String,
    /// Clock reading at the first sample.
    pub start_ns: u64,
    /// Wall-clock time (Unix epoch, ns) at `start_ns`, when known.
    pub start_unix_ns: Option<u64>,
}

impl Default for ClockMeta {
    fn default() -> Self {
        ClockMeta {
            name: "CLOCK_MONOTONIC".to_owned(),
            unit: "ns".to_owned(),
            start_ns: 0,
            start_unix_ns: None,
        }
    }
}

impl Metadata {
    /// Metadata describing the target as the first snapshot shows it.
    pub fn from_snapshot(first: &Snapshot) -> Metadata {
        let py = &first.python;
        Metadata {
            target: TargetMeta {
                pid: first.pid,
                command: None,
            },
            python: Some(PythonMeta {
                version: py.version.clone(),
                version_hex: py.version_hex,
                free_threaded: py.free_threaded,
                binary: py.binary.clone(),
            }),
            interpreters: first
                .interpreters
                .iter()
                .map(|i| InterpreterMeta {
                    id: i.id,
                    main: i.main,
                    own_gil: i.own_gil,
                    gil_address: format!("{:#x}", i.gil.address),
                })
                .collect(),
            clock: ClockMeta {
                start_ns: first.time_ns,
                ..ClockMeta::default()
            },
            ..Metadata::default()
        }
    }

    /// Whether the recording can tell waiting for the GIL from idle. It can on
    /// every version: 3.15 says so itself (`gil_requested`), and on older ones
    /// the reader sees the futex a waiting thread sleeps on inside the GIL
    /// (docs/ARCHITECTURE.md). Only a trace without Python metadata cannot.
    pub fn python_reports_waiting(&self) -> bool {
        self.python.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_unknown_fields_are_tolerated() {
        let m: Metadata =
            serde_json::from_str(r#"{"target":{"pid":7},"future_field":[1,2]}"#).unwrap();
        assert_eq!(m.target.pid, 7);
        assert_eq!(m.options.rate_hz, 1000.0);
        assert_eq!(m.clock.name, "CLOCK_MONOTONIC");
        assert!(m.extra.contains_key("future_field"));
        let back = serde_json::to_string(&m).unwrap();
        assert!(back.contains("future_field"));
    }
}
