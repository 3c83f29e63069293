//! The `[tool.gilscope]` parser's fuzz target (`fuzz/fuzz_targets/config.rs`): arbitrary
//! text as a pyproject.toml.
//!
//! * An error names the file (every message starts with its path).
//! * What parses is what the checks promise: durations and the rate positive and finite,
//!   every allow rule with an object or a symbol and a reason, and each rule's patterns match
//!   themselves.
//! * A duration typed on its own (each line of the text) is positive and finite or an error.

use std::path::Path;

use crate::check::config::{glob, parse_duration_ms, parse_pyproject};

pub fn fuzz_one(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    match parse_pyproject(text, Path::new("pyproject.toml")) {
        Err(e) => {
            let msg = format!("{e:#}");
            assert!(msg.starts_with("pyproject.toml"), "{msg}");
        }
        Ok(c) => {
            for v in [c.max_hold_ms, c.rate_hz, c.max_gc_pause_ms]
                .into_iter()
                .flatten()
            {
                assert!(v.is_finite() && v > 0.0, "a value of {v} passed");
            }
            for a in &c.allow {
                assert!(a.object.is_some() || a.symbol.is_some(), "{a:?}");
                assert!(!a.reason.trim().is_empty(), "{a:?}");
                for pat in a.object.iter().chain(&a.symbol) {
                    assert!(glob(pat, pat), "{pat:?} does not match itself");
                }
                // What the rule says, as the object and symbol of a finding.
                let object = a.object.as_deref().unwrap_or("/x/lib.so");
                if !object.contains(['*', '?']) {
                    let wants = a.symbol.as_deref().filter(|s| !s.contains(['*', '?']));
                    if a.symbol.is_none() || wants.is_some() {
                        assert!(
                            a.matches(object, wants),
                            "{a:?} does not match its own words"
                        );
                    }
                }
            }
        }
    }
    for line in text.lines().take(64) {
        if let Ok(ms) = parse_duration_ms(line) {
            assert!(ms.is_finite() && ms > 0.0, "{line:?} gave {ms} ms");
        }
    }
}
