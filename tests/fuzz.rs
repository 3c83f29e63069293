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

/// The debug-offsets seeds are the tables of real builds (pyenv 3.13.0, sid 3.13/3.14/3.15,
/// 3.13t, from their `.PyRuntime` sections): each must give both layouts, or the fuzzer's
/// starting points (and the value limit of the parser) are wrong.
#[test]
fn debug_offsets_seeds_are_real_tables() {
    use gilscope::reader::debug_offsets::DebugOffsets;
    use gilscope::reader::layout::Layout;
    use gilscope::reader::memory::LocalMem;
    use gilscope::reader::stack::StackLayout;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/debug_offsets");
    let mut minors = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("seed-") {
            continue;
        }
        let mut mem = LocalMem::new();
        mem.add(0x1000, std::fs::read(e.path()).unwrap());
        let d = DebugOffsets::read(&mem, 0x1000)
            .unwrap_or_else(|e| panic!("{name}: {e:#}"))
            .unwrap_or_else(|| panic!("{name}: no cookie"));
        let l = Layout::from_debug_offsets(&d).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        StackLayout::from_debug_offsets(l.minor, &d).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        minors.push((l.minor, l.free_threaded));
    }
    minors.sort();
    assert_eq!(
        minors,
        [
            (13, false),
            (13, false),
            (13, true),
            (14, false),
            (15, false)
        ]
    );
}
