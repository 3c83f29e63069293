//! Trace files end to end: write → read round trips, files cut at every
//! byte, foreign and future files, seeded mutation fuzzing, the committed
//! version-1 fixture and its summary, and the size budget.
//!
//! Fixtures live in src/trace/testdata/ and are made by this file:
//! `GILSCOPE_BLESS=1 cargo test --test trace_format` rewrites them.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use gilscope::analysis::summary::{summarize_replay, SummaryOptions};
use gilscope::model::timeline::{Event, Timeline};
use gilscope::output::summary::{write_json, write_text};
use gilscope::trace::synth::{self, Churn, Rng, SynthOptions};
use gilscope::trace::{replay, replay_reader, Metadata, TraceErrorKind, TraceReader, TraceWriter};

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gilscope-trace-format-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/trace/testdata")
        .join(name)
}

/// Write `opts`' workload, flushing every `flush_every` samples; returns the
/// file and every event the writer wrote (through its tap).
fn write_synth(name: &str, opts: &SynthOptions, flush_every: usize) -> (PathBuf, Vec<Event>) {
    let snaps = synth::snapshots(opts);
    let path = tmp(name);
    let mut meta = Metadata::from_snapshot(&snaps[0]);
    meta.options.rate_hz = f64::from(opts.rate_hz);
    // Reproducible bytes whatever the crate version.
    meta.gilscope_version = "0.1.0".into();
    let mut w = TraceWriter::create(&path, &meta).unwrap();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let tap_seen = seen.clone();
    w.set_tap(Box::new(move |e| tap_seen.borrow_mut().push(e.clone())));
    for (i, s) in snaps.iter().enumerate() {
        if i == snaps.len() / 3 {
            w.write_sample_error(s.time_ns, "torn read: retry budget exhausted")
                .unwrap();
        }
        w.write_snapshot(s).unwrap();
        if i % flush_every == flush_every - 1 {
            w.flush().unwrap();
        }
    }
    w.finish(None, 0).unwrap();
    let events = seen.borrow().clone();
    (path, events)
}

fn read_all(path: &Path) -> Vec<Event> {
    TraceReader::open(path)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

#[test]
fn round_trip_gives_back_every_event() {
    let opts = SynthOptions {
        samples: 3000,
        reuse_tid: true,
        subinterpreters: true,
        ..SynthOptions::default()
    };
    let (path, written) = write_synth("roundtrip.gilscope", &opts, 250);
    let read = read_all(&path);
    assert_eq!(read.len(), written.len());
    assert!(read == written, "events differ after a round trip");

    // The model built from the file is the one built live.
    let live = Timeline::from_events(&written);
    let rp = replay(&path).unwrap();
    assert!(rp.complete && rp.damage.is_none());
    assert_eq!(rp.timeline.inconsistent_events, 0);
    assert_eq!(rp.timeline.samples(), 3000);
    for (a, b) in live.threads.iter().zip(&rp.timeline.threads) {
        assert_eq!(a.intervals, b.intervals);
        assert_eq!(a.stacks, b.stacks);
    }

    // Against a naive count straight from the snapshots: each sample lasts
    // until the next one; the sample before the error ends at the error.
    let snaps = synth::snapshots(&opts);
    let period = 1_000_000u64;
    let main = rp.timeline.thread_by_key(4000, 100).unwrap();
    let mut held = 0u64;
    for (i, s) in snaps.iter().enumerate() {
        let t = s.thread(4000).unwrap();
        if t.gil_state == gilscope::model::GilState::Held && i + 1 != snaps.len() / 3 {
            held += period;
        }
    }
    assert_eq!(main.state(gilscope::model::GilState::Held).ns, held);

    // TID reuse: two threads with TID 4001, told apart by start time.
    let reused: Vec<_> = rp
        .timeline
        .threads
        .iter()
        .filter(|t| t.tid == 4001)
        .collect();
    assert_eq!(reused.len(), 2);
    assert!(reused[0].ended_ns.is_some());
    assert_ne!(reused[0].start_ticks, reused[1].start_ticks);
}

#[test]
fn a_file_cut_anywhere_reads_up_to_its_last_whole_chunk() {
    let opts = SynthOptions {
        threads: 3,
        samples: 120,
        ..SynthOptions::default()
    };
    let (path, full) = write_synth("cut.gilscope", &opts, 20);
    let bytes = std::fs::read(&path).unwrap();
    let header_len = {
        let r = TraceReader::from_reader("x", &bytes[..]).unwrap();
        r.offset() as usize
    };
    let mut chunk_ends = vec![header_len];
    for cut in 0..=bytes.len() {
        let name = format!("cut-at-{cut}");
        match TraceReader::from_reader(name.clone(), &bytes[..cut]) {
            Err(e) => {
                assert!(cut < header_len, "cut {cut}: {e}");
                assert!(
                    matches!(
                        e.kind,
                        TraceErrorKind::Truncated | TraceErrorKind::NotATrace
                    ),
                    "cut {cut}: {e}"
                );
                let msg = e.to_string();
                assert!(
                    msg.starts_with(&name) && msg.contains("byte offset"),
                    "{msg}"
                );
            }
            Ok(r) => {
                let rp = replay_reader(r).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
                let n = TraceReader::from_reader("again", &bytes[..cut])
                    .unwrap()
                    .count();
                // A prefix of the full event list.
                let events: Vec<Event> = TraceReader::from_reader("again", &bytes[..cut])
                    .unwrap()
                    .map(|e| e.unwrap())
                    .collect();
                assert_eq!(events.len(), n);
                assert!(events[..] == full[..n], "cut {cut}: not a prefix");
                match &rp.damage {
                    None => chunk_ends.push(cut),
                    Some(d) => assert!(d.offset as usize <= cut),
                }
                assert_eq!(rp.complete, cut == bytes.len());
            }
        }
    }
    // Undamaged exactly at chunk boundaries: header end, each chunk end.
    assert!(chunk_ends.len() >= 7, "{chunk_ends:?}");
    assert_eq!(chunk_ends.last(), Some(&bytes.len()));
}

#[test]
fn foreign_files_are_refused_clearly() {
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "empty file"),
        (
            "elf",
            b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x03\0>\0".to_vec(),
            "\".ELF",
        ),
        ("json", b"{\"traceEvents\": []}".to_vec(), "it starts with"),
        ("short-magic", b"GILS".to_vec(), "truncated in the header"),
        (
            "gzip",
            vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3],
            "it starts with",
        ),
    ];
    for (name, bytes, needle) in cases {
        let path = tmp(&format!("foreign-{name}"));
        std::fs::write(&path, &bytes).unwrap();
        let e = TraceReader::open(&path).err().unwrap();
        let msg = e.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("byte offset"), "{msg}");
        assert!(msg.contains(needle), "{name}: {msg}");
    }
    let missing = tmp("does-not-exist");
    let e = TraceReader::open(&missing).err().unwrap();
    assert_eq!(e.kind, TraceErrorKind::Io);
    assert!(e.to_string().contains("does-not-exist"));
}

#[test]
fn future_and_unknown_versions_are_refused() {
    let (path, _) = write_synth(
        "version.gilscope",
        &SynthOptions {
            samples: 10,
            ..Default::default()
        },
        5,
    );
    let bytes = std::fs::read(&path).unwrap();
    for (v, needle) in [
        (
            2u16,
            "newer than this gilscope reads (1 to 1); upgrade gilscope",
        ),
        (0, "never written"),
    ] {
        let mut b = bytes.clone();
        b[8..10].copy_from_slice(&v.to_le_bytes());
        let e = TraceReader::from_reader("v.gilscope", &b[..])
            .err()
            .unwrap();
        assert_eq!(e.kind, TraceErrorKind::UnsupportedVersion);
        assert_eq!(e.offset, 8);
        assert!(e.to_string().contains(needle), "{e}");
    }
    // A flipped bit in the metadata: checksum error at the metadata offset.
    let mut b = bytes.clone();
    b[25] ^= 0x20;
    let e = TraceReader::from_reader("m.gilscope", &b[..])
        .err()
        .unwrap();
    assert_eq!((e.kind, e.offset), (TraceErrorKind::Corrupt, 20));
}

#[test]
fn a_damaged_chunk_stops_reading_with_a_warning() {
    let opts = SynthOptions {
        samples: 200,
        ..Default::default()
    };
    let (path, _) = write_synth("flip.gilscope", &opts, 50);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 20;
    bytes[at] ^= 0x01;
    let rp = replay_reader(TraceReader::from_reader("flip", &bytes[..]).unwrap()).unwrap();
    let d = rp.damage.expect("damage reported");
    assert!(d.reason.contains("checksum"), "{}", d.reason);
    assert!((d.offset as usize) <= at);
    assert!(!rp.complete);
    assert!(
        rp.timeline.samples() > 0,
        "{d:?} of {} bytes, {} chunks",
        bytes.len(),
        rp.bytes
    );
}

#[test]
fn seeded_mutations_never_panic() {
    let opts = SynthOptions {
        threads: 3,
        samples: 60,
        reuse_tid: true,
        subinterpreters: true,
        ..SynthOptions::default()
    };
    let (path, _) = write_synth("fuzz-seed.gilscope", &opts, 20);
    let seed = std::fs::read(&path).unwrap();
    let iterations: usize = std::env::var("GILSCOPE_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let mut rng = Rng::new(0x5eed);
    for _ in 0..iterations {
        let mut b = seed.clone();
        for _ in 0..1 + rng.below(4) {
            let i = rng.below(b.len() as u64) as usize;
            match rng.below(6) {
                0 => b[i] ^= 1 << rng.below(8),
                1 => b[i] = rng.next_u64() as u8,
                2 => b[i] = [0, 0x7f, 0x80, 0xff][rng.below(4) as usize],
                3 => b.truncate(i),
                4 => {
                    let n = rng.below(16) as usize;
                    let junk: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                    b.splice(i..i, junk);
                }
                _ => {
                    let n = (rng.below(32) as usize).min(b.len() - i);
                    b.drain(i..i + n);
                }
            }
            if b.is_empty() {
                break;
            }
        }
        // As mutated, then with valid checksums to reach the record decoder.
        gilscope::fuzz::trace::fuzz_one(&b);
    }
}

/// Every input of `fuzz/regressions/` (crashes once found, and hand-made inputs on the
/// decoder's edges: see its README) goes through the fuzz target again. The folder must hold
/// some: an empty or missing one would make this test check nothing.
#[test]
fn fuzz_regressions_stay_fixed() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "bin"));
    let mut ran = Vec::new();
    for path in entries {
        let bytes = std::fs::read(&path).unwrap();
        let r = std::panic::catch_unwind(|| gilscope::fuzz::trace::fuzz_one(&bytes));
        assert!(r.is_ok(), "{} makes the reader panic again", path.display());
        ran.push(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    assert!(
        ran.len() >= 10,
        "fuzz/regressions/ holds only {ran:?}: the inputs are missing"
    );
}

/// The committed version-1 file must read forever (the format promises to
/// read every version it ever wrote), and its summary must not drift.
#[test]
fn version_1_fixture_still_reads_and_summarizes_the_same() {
    let opts = SynthOptions {
        threads: 4,
        samples: 400,
        seed: 7,
        reuse_tid: true,
        subinterpreters: true,
        start_ns: 1_000_000_000,
        ..SynthOptions::default()
    };
    let fixture = testdata("v1-small.bin");
    let bless = std::env::var_os("GILSCOPE_BLESS").is_some_and(|v| v == "1");
    // The .bin is made once and never rewritten: it stands for every
    // version-1 file in the wild. Blessing only refreshes the summaries.
    if bless && !fixture.exists() {
        let (path, _) = write_synth("fixture.gilscope", &opts, 100);
        std::fs::create_dir_all(fixture.parent().unwrap()).unwrap();
        std::fs::copy(&path, &fixture).unwrap();
    }
    let rp = replay(&fixture).unwrap();
    assert_eq!(rp.version, 1);
    assert!(rp.complete);
    let mut s = summarize_replay(&rp, &SummaryOptions::default());
    s.file = Some("v1-small.bin".into());
    let mut text = Vec::new();
    write_text(&mut text, &s).unwrap();
    let mut json = Vec::new();
    write_json(&mut json, &s).unwrap();
    for (name, got) in [
        ("v1-small.summary.txt", text),
        ("v1-small.summary.json", json),
    ] {
        let p = testdata(name);
        if bless {
            std::fs::write(&p, &got).unwrap();
        }
        let want = std::fs::read_to_string(&p).unwrap_or_default();
        assert_eq!(
            String::from_utf8(got).unwrap(),
            want,
            "{name} changed; if intended, rerun with GILSCOPE_BLESS=1"
        );
    }
    // The documented JSON keys.
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(testdata("v1-small.summary.json")).unwrap())
            .unwrap();
    for k in ["tid", "name", "interpreter", "held_pct", "idle_pct"] {
        assert!(v["threads"][0].get(k).is_some(), "threads[].{k}");
    }
    for k in ["id", "own_gil", "gil_busy_pct"] {
        assert!(v["interpreters"][0].get(k).is_some(), "interpreters[].{k}");
    }
}

/// Size budget: ≤ 1 MB per thread-minute at 1 kHz. Deterministic (synthetic
/// workload); prints the measurement (`cargo test -- --nocapture`).
#[test]
fn size_per_thread_minute_is_within_budget() {
    for (churn, name) in [
        (Churn::Realistic, "realistic"),
        (Churn::EverySample, "every-sample"),
    ] {
        let opts = SynthOptions {
            threads: 4,
            samples: 60_000,
            churn,
            ..SynthOptions::default()
        };
        let (path, _) = write_synth(&format!("size-{name}.gilscope"), &opts, 1000);
        let bytes = std::fs::metadata(&path).unwrap().len();
        let per_thread_minute = bytes as f64 / 4.0;
        println!(
            "size: 4 threads, 60 s at 1 kHz, {name} stack churn: {bytes} bytes = {:.0} bytes per thread-minute",
            per_thread_minute
        );
        assert!(
            per_thread_minute <= 1_000_000.0,
            "{name}: {per_thread_minute}"
        );
        std::fs::remove_file(&path).ok();
    }
}

/// `gc.collecting` read in samples 100–149 and 400–409 becomes two GC records (skippable tag
/// 0x82) that survive the file, each starting and ending midway between samples, named after the GIL holder and its stack then; the model
/// counts them per interpreter.
#[test]
fn garbage_collections_round_trip() {
    let opts = SynthOptions {
        samples: 600,
        ..SynthOptions::default()
    };
    let mut snaps = synth::snapshots(&opts);
    for (i, s) in snaps.iter_mut().enumerate() {
        s.interpreters[0].gc_collecting = Some((100..150).contains(&i) || (400..410).contains(&i));
    }
    let holder = snaps[100].interpreters[0].gil.holder_tid.unwrap();
    let path = tmp("gc.gilscope");
    let mut meta = Metadata::from_snapshot(&snaps[0]);
    meta.options.rate_hz = f64::from(opts.rate_hz);
    let mut w = TraceWriter::create(&path, &meta).unwrap();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let tap_seen = seen.clone();
    w.set_tap(Box::new(move |e| tap_seen.borrow_mut().push(e.clone())));
    for (i, s) in snaps.iter().enumerate() {
        w.write_snapshot(s).unwrap();
        if i % 64 == 63 {
            w.flush().unwrap();
        }
    }
    w.finish(None, 0).unwrap();
    let written = seen.borrow().clone();
    let read = read_all(&path);
    assert!(read == written, "events differ after a round trip");
    let gcs: Vec<_> = read
        .iter()
        .filter_map(|e| match e {
            Event::Gc(g) => Some(g.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(gcs.len(), 2, "{gcs:?}");
    let period = 1_000_000u64;
    assert_eq!(gcs[0].samples, 50);
    assert_eq!(gcs[0].end_ns - gcs[0].start_ns, 50 * period);
    // A run starts midway between the last sample that saw no collection and the first that saw one.
    let (before, first) = (snaps[99].time_ns, snaps[100].time_ns);
    assert_eq!(gcs[0].start_ns, before + (first - before) / 2);
    let rp = replay(&path).unwrap();
    let tl = &rp.timeline;
    let t = &tl.threads[gcs[0].thread.unwrap() as usize];
    assert_eq!(t.tid, holder);
    let want = &snaps[100].thread(holder).unwrap().frames;
    let got = tl.stack_frames(gcs[0].stack);
    assert_eq!(got.len(), want.len());
    assert_eq!(*got[0].function, *want[0].function);
    assert_eq!(got[0].line, want[0].line);
    let st = &tl.gc[&0];
    assert_eq!(st.collections, 2);
    assert_eq!(st.total.ns, 60 * period);
    assert_eq!(st.longest.as_ref().unwrap().samples, 50);
    let s = summarize_replay(&rp, &SummaryOptions::default());
    assert_eq!(s.interpreters[0].gc.collections, 2);
    assert!((s.interpreters[0].gc.seconds - 0.060).abs() < 1e-9);
    assert!((s.interpreters[0].gc.longest_seconds - 0.050).abs() < 1e-9);
    assert_eq!(s.interpreters[0].gc.longest_tid, Some(holder));
}
