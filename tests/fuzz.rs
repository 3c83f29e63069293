//! The inputs kept in `fuzz/regressions/<target>/` for the fuzz targets other than the trace
//! reader's (that one: tests/trace_format.rs::fuzz_regressions_stay_fixed) go through their
//! target again on every `cargo test`, without nightly: crashes once found must stay fixed.
//! Each folder also holds the target's seeds (fuzz/README.md), so none is empty: an empty or
//! missing folder would make its test check nothing.

use std::path::Path;

fn replay(target: &str, fuzz_one: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x != "md"));
    let mut ran = Vec::new();
    for path in entries {
        let bytes = std::fs::read(&path).unwrap();
        let r = std::panic::catch_unwind(|| fuzz_one(&bytes));
        assert!(r.is_ok(), "{} fails its fuzz target again", path.display());
        ran.push(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    println!("{target}: {ran:?}");
    assert!(!ran.is_empty(), "{} holds no inputs", dir.display());
}

#[test]
fn pprof_regressions_stay_fixed() {
    replay("pprof", gilscope::fuzz::pprof::fuzz_one);
}

#[test]
fn config_regressions_stay_fixed() {
    replay("config", gilscope::fuzz::config::fuzz_one);
}

#[test]
fn debug_offsets_regressions_stay_fixed() {
    replay("debug_offsets", gilscope::fuzz::debug_offsets::fuzz_one);
}
