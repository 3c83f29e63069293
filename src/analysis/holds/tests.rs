use super::*;
use crate::model::GilState;
use crate::trace::encoder::tests::{frame, snapshot, thread};

const MS: u64 = 1_000_000;

fn nf(object: &str, symbol: &str) -> NativeFrame {
    NativeFrame {
        addr: 0x1000,
        object: object.into(),
        symbol: (!symbol.is_empty()).then(|| symbol.into()),
        file_offset: None,
        approximate: false,
    }
}

/// A probe that returns one fixed stack and counts its captures.
struct Scripted(Vec<NativeFrame>, u32);

impl NativeProbe for Scripted {
    fn capture(&mut self, _pid: u32, _tid: u32) -> Result<u64, String> {
        self.1 += 1;
        Ok(u64::from(self.1))
    }

    fn resolve(&mut self, _token: u64) -> Result<Vec<NativeFrame>, String> {
        Ok(self.0.clone())
    }
}

fn ext_stack() -> Vec<NativeFrame> {
    vec![
        nf("/usr/lib/x86_64-linux-gnu/libc.so.6", "clock_nanosleep"),
        nf(
            "/site/gilext.cpython-312-x86_64-linux-gnu.so",
            "gilext_hold_sleep",
        ),
        nf("/site/gilext.cpython-312-x86_64-linux-gnu.so", "hold_sleep"),
        nf("/opt/py/lib/libpython3.12.so.1.0", "cfunction_vectorcall_O"),
        nf(
            "/opt/py/lib/libpython3.12.so.1.0",
            "_PyEval_EvalFrameDefault",
        ),
    ]
}

/// Thread 7 at Python position `pos` in state `st`, at `t` ms.
fn at(t: u64, st: GilState, pos: u64) -> Snapshot {
    let mut th = thread(7, st, vec![frame("work", pos as i32)]);
    th.position = Some((0xF000, Some(pos as i64)));
    snapshot(t * MS, vec![th])
}

fn run(samples: &[Snapshot], probe: &mut dyn NativeProbe, max_ms: u64) -> Vec<Episode> {
    let mut d = HoldDetector::new(HoldConfig::new(max_ms * MS, MS));
    for s in samples {
        d.observe(s, probe);
    }
    d.finish(probe)
}

#[test]
fn a_long_call_is_found_with_its_duration_and_attribution() {
    // Released at 0..=9 ms, one call holding from 10 to 130 ms (position 5), released after.
    let mut s: Vec<Snapshot> = (0..10).map(|t| at(t, GilState::Released, 1)).collect();
    s.extend((10..=130).map(|t| at(t, GilState::Held, 5)));
    s.extend((131..140).map(|t| at(t, GilState::Released, 6)));
    let mut probe = Scripted(ext_stack(), 0);
    let found = run(&s, &mut probe, 50);
    assert_eq!(found.len(), 1, "{found:#?}");
    let e = &found[0];
    assert_eq!(e.tid, 7);
    // 9.5 ms .. 130.5 ms
    assert_eq!(e.duration_ns, 121 * MS);
    assert_eq!(probe.1, 1, "unwound once");
    assert_eq!(
        e.attribution,
        Attribution::Native {
            object: "/site/gilext.cpython-312-x86_64-linux-gnu.so".into(),
            symbol: Some("gilext_hold_sleep".into()),
            interpreter: false,
        }
    );
    assert_eq!(&*e.python_stack[0].function, "work");
}

#[test]
fn short_holds_and_moving_python_code_are_not_findings() {
    // Held for 200 ms, but the instruction moves every sample: Python code running.
    let moving: Vec<Snapshot> = (0..200).map(|t| at(t, GilState::Held, t % 7)).collect();
    let mut probe = Scripted(ext_stack(), 0);
    assert!(run(&moving, &mut probe, 50).is_empty());
    assert_eq!(probe.1, 0, "nothing old enough to unwind");
    // One call of 30 ms: under the threshold.
    let mut short: Vec<Snapshot> = (0..30).map(|t| at(t, GilState::Held, 3)).collect();
    short.push(at(30, GilState::Idle, 3));
    assert!(run(&short, &mut probe, 50).is_empty());
}

#[test]
fn a_release_ends_the_episode() {
    // 40 ms held, 1 sample released, 40 ms held again at the same position: two calls.
    let mut s: Vec<Snapshot> = (0..40).map(|t| at(t, GilState::Held, 3)).collect();
    s.push(at(40, GilState::Released, 3));
    s.extend((41..81).map(|t| at(t, GilState::Held, 3)));
    let mut probe = Scripted(ext_stack(), 0);
    assert!(run(&s, &mut probe, 50).is_empty());
}

#[test]
fn the_bytecode_loop_is_not_a_native_hold() {
    let s: Vec<Snapshot> = (0..100).map(|t| at(t, GilState::Held, 3)).collect();
    let mut probe = Scripted(
        vec![
            nf("/opt/py/bin/python3.12", "_PyEval_EvalFrameDefault"),
            nf("/opt/py/bin/python3.12", "PyEval_EvalCode"),
        ],
        0,
    );
    assert!(run(&s, &mut probe, 50).is_empty());
}

#[test]
fn a_failed_unwind_still_reports_the_hold() {
    let s: Vec<Snapshot> = (0..100).map(|t| at(t, GilState::Held, 3)).collect();
    let mut probe = NoProbe("ptrace: permission denied".into());
    let found = run(&s, &mut probe, 50);
    assert_eq!(found.len(), 1);
    assert!(
        matches!(&found[0].attribution, Attribution::Unknown { reason } if reason.contains("ptrace"))
    );
}

/// A probe whose walk stops in the vDSO (or does not run at all), and which reads the C
/// function the frame is calling.
struct StopsEarly {
    frames: Option<Vec<NativeFrame>>,
    call: Option<CCall>,
    asked_for: Vec<u64>,
}

impl NativeProbe for StopsEarly {
    fn capture(&mut self, _pid: u32, _tid: u32) -> Result<u64, String> {
        match &self.frames {
            Some(_) => Ok(1),
            None => Err("--no-native".into()),
        }
    }

    fn resolve(&mut self, _token: u64) -> Result<Vec<NativeFrame>, String> {
        self.frames.clone().ok_or_else(|| "--no-native".into())
    }

    fn current_call(&mut self, _pid: u32, _tid: u32, frame: u64) -> Option<CCall> {
        self.asked_for.push(frame);
        self.call.clone()
    }
}

#[test]
fn a_walk_that_stops_early_is_named_by_the_call_the_frame_makes() {
    let s: Vec<Snapshot> = (0..100).map(|t| at(t, GilState::Held, 3)).collect();
    let crunch = CCall {
        name: "crunch".into(),
        module: Some("pbext".into()),
        object: "/site/pbext.cpython-312-x86_64-linux-gnu.so".into(),
        addr: 0x7f00_0000_1000,
    };
    let vdso = NativeFrame {
        addr: 0x7fff_0000_0a00,
        object: "[vdso]".into(),
        symbol: Some("clock_gettime".into()),
        file_offset: None,
        approximate: false,
    };
    for (frames, note) in [
        (
            Some(vec![vdso]),
            "native stack stopped at clock_gettime ([vdso]): only C-library frames",
        ),
        (None, "native stack unavailable: --no-native"),
    ] {
        let mut probe = StopsEarly {
            frames,
            call: Some(crunch.clone()),
            asked_for: Vec::new(),
        };
        let found = run(&s, &mut probe, 50);
        assert_eq!(found.len(), 1);
        assert_eq!(
            probe.asked_for,
            vec![0xF000],
            "read once, for the innermost frame"
        );
        assert_eq!(
            found[0].attribution,
            Attribution::Native {
                object: crunch.object.clone(),
                symbol: Some("crunch".into()),
                interpreter: false,
            }
        );
        assert_eq!(found[0].named_from_call.as_deref(), Some(note));
    }
    // A walk that names the extension wins over the call read from memory.
    let mut probe = StopsEarly {
        frames: Some(ext_stack()),
        call: Some(crunch.clone()),
        asked_for: Vec::new(),
    };
    let found = run(&s, &mut probe, 50);
    assert!(
        matches!(&found[0].attribution, Attribution::Native { symbol: Some(s), .. } if s == "gilext_hold_sleep")
    );
    assert_eq!(found[0].named_from_call, None);
    assert_eq!(found[0].c_call.as_ref(), Some(&crunch));
    // A builtin of the interpreter called from the frame is the interpreter's.
    let mut probe = StopsEarly {
        frames: None,
        call: Some(CCall {
            name: "sorted".into(),
            module: Some("builtins".into()),
            object: "/opt/py/lib/libpython3.12.so.1.0".into(),
            addr: 0x7f00_0000_2000,
        }),
        asked_for: Vec::new(),
    };
    let found = run(&s, &mut probe, 50);
    assert!(matches!(
        &found[0].attribution,
        Attribution::Native {
            interpreter: true,
            ..
        }
    ));
}

#[test]
fn attribution_rules() {
    let py = "/opt/py/bin/python3.12";
    // A builtin in the interpreter (no extension between it and the bytecode loop): the
    // function called, not the deallocator it is in at the moment.
    let builtin = [
        nf(py, "long_dealloc"),
        nf(py, "builtin_sum"),
        nf(py, "cfunction_vectorcall_O"),
        nf(py, "_PyEval_EvalFrameDefault"),
    ];
    assert_eq!(
        attribute(&builtin, py),
        Attribution::Native {
            object: py.into(),
            symbol: Some("builtin_sum".into()),
            interpreter: true,
        }
    );
    // An extension calling back into the C API: the extension is named, not libpython.
    let callback = [
        nf(py, "PyLong_FromLong"),
        nf("/site/ext.so", "ext_work"),
        nf(py, "_PyEval_EvalFrameDefault"),
    ];
    assert!(matches!(
        attribute(&callback, py),
        Attribution::Native { object, interpreter: false, .. } if object == "/site/ext.so"
    ));
    // ctypes calling into libc: the function called is named, not ctypes.
    let libc_via_ctypes = [
        nf("/lib/x86_64-linux-gnu/libc.so.6", "clock_nanosleep"),
        nf("/lib/x86_64-linux-gnu/libc.so.6", "usleep"),
        nf("/usr/lib/x86_64-linux-gnu/libffi.so.8", ""),
        nf("/usr/lib/x86_64-linux-gnu/libffi.so.8", "ffi_call"),
        nf(
            "/opt/py/lib/python3.12/lib-dynload/_ctypes.cpython-312-x86_64-linux-gnu.so",
            "_ctypes_callproc",
        ),
    ];
    assert!(matches!(
        attribute(&libc_via_ctypes, py),
        Attribution::Native { symbol: Some(s), .. } if s == "usleep"
    ));
    // ctypes: libffi and _ctypes sit between the bytecode loop and the C function.
    let ctypes = [
        nf("/site/libwork.so", "work"),
        nf("/usr/lib/x86_64-linux-gnu/libffi.so.8", "ffi_call"),
        nf(
            "/opt/py/lib/python3.12/lib-dynload/_ctypes.cpython-312-x86_64-linux-gnu.so",
            "_ctypes_callproc",
        ),
    ];
    assert!(matches!(
        attribute(&ctypes, py),
        Attribution::Native { object, symbol: Some(s), .. } if object == "/site/libwork.so" && s == "work"
    ));
    assert!(matches!(attribute(&[], py), Attribution::Unknown { .. }));
    // Rust's std compiled into the extension is passed over for the extension's own function.
    let rust = [
        nf("/lib/x86_64-linux-gnu/libc.so.6", "clock_nanosleep"),
        nf("/site/gilext.so", "std::thread::functions::sleep"),
        nf("/site/gilext.so", "gilext_hold_sleep"),
        nf("/site/gilext.so", "gilext::py_hold_sleep"),
        nf(py, "_PyEval_EvalFrameDefault"),
    ];
    assert!(matches!(
        attribute(&rust, py),
        Attribution::Native { symbol: Some(s), .. } if s == "gilext_hold_sleep"
    ));
}

#[test]
fn exact_holds_cut_episodes_at_releases_samples_missed() {
    let s: Vec<Snapshot> = (0..=120).map(|t| at(t, GilState::Held, 3)).collect();
    let mut probe = Scripted(ext_stack(), 0);
    let found = run(&s, &mut probe, 50);
    assert_eq!(found.len(), 1);
    // Exactly: one hold of 100 ms covering most of it → kept, 100 ms.
    let one = [ExactHold {
        tid: 7,
        start_ns: 10 * MS,
        end_ns: 110 * MS,
    }];
    let kept = refine_with_exact(found.clone(), &one, 50 * MS);
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].duration_ns, 100 * MS);
    // Released every 40 ms (no exact hold ≥ 50 ms): not a finding.
    assert!(refine_with_exact(found.clone(), &[], 50 * MS).is_empty());
    // A long hold of another thread does not count.
    let other = [ExactHold {
        tid: 8,
        start_ns: 0,
        end_ns: 200 * MS,
    }];
    assert!(refine_with_exact(found, &other, 50 * MS).is_empty());
}

#[test]
fn a_starved_sampler_does_not_make_a_hold() {
    // One sample sees the call; the sampler then starves: the snapshots around it are 90 ms
    // away. Only what was seen (plus at most a period each side) counts.
    let s = vec![
        at(0, GilState::Released, 1),
        at(90, GilState::Held, 3),
        at(180, GilState::Released, 4),
    ];
    let mut probe = Scripted(ext_stack(), 0);
    assert!(run(&s, &mut probe, 50).is_empty());
    // A late sample inside a hold at one position does not break it.
    let mut s: Vec<Snapshot> = (0..=40).map(|t| at(t, GilState::Held, 3)).collect();
    s.extend((60..=80).map(|t| at(t, GilState::Held, 3)));
    assert_eq!(run(&s, &mut probe, 50).len(), 1);
}

/// `at`, with the interpreter's garbage collector running or not.
fn at_gc(t: u64, pos: u64, collecting: bool) -> Snapshot {
    let mut s = at(t, GilState::Held, pos);
    s.interpreters[0].gc_collecting = Some(collecting);
    s
}

#[test]
fn gc_share_and_collections_come_from_the_interpreters_gc_flag() {
    // 0–19 ms: Python code moving; 20–99 ms: one position, the collector running from 40 ms
    // to 99 ms; 100 ms on: moving again, a second short collection at 120–124 ms.
    let mut snaps = Vec::new();
    for t in 0..20 {
        snaps.push(at_gc(t, t, false));
    }
    for t in 20..100 {
        snaps.push(at_gc(t, 500, t >= 40));
    }
    for t in 100..140 {
        snaps.push(at_gc(t, t, (120..125).contains(&t)));
    }
    let mut probe = Scripted(
        vec![
            nf("/opt/py/lib/libpython3.12.so.1.0", "gc_collect_main"),
            nf("/opt/py/lib/libpython3.12.so.1.0", "_Py_HandlePending"),
            nf(
                "/opt/py/lib/libpython3.12.so.1.0",
                "_PyEval_EvalFrameDefault",
            ),
        ],
        0,
    );
    let mut d = HoldDetector::new(HoldConfig::new(50 * MS, MS));
    for s in &snaps {
        d.observe(s, &mut probe);
    }
    let found = d.finish_all(&mut probe);
    assert_eq!(found.episodes.len(), 1);
    let e = &found.episodes[0];
    assert_eq!(e.duration_ns, 80 * MS);
    assert!((e.gc_share - 60.0 / 80.0).abs() < 1e-9, "{}", e.gc_share);
    assert_eq!(e.gc_ns(), 60 * MS);
    let gc: Vec<(u64, u64, Option<u32>)> = found
        .gc_pauses
        .iter()
        .map(|g| (g.first_seen_ns / MS, g.duration_ns / MS, g.tid))
        .collect();
    assert_eq!(gc, vec![(40, 60, Some(7)), (120, 5, Some(7))]);
    assert_eq!(found.gc_pauses[0].python_stack[0].line, 500);
}

#[test]
fn a_starved_sampler_does_not_make_one_long_call_of_two_far_samples() {
    // 1 kHz asked; the sampler stalls for 90 ms between two snapshots that happen to see the
    // same instruction of a loop.
    let snaps = vec![
        at(0, GilState::Held, 1),
        at(1, GilState::Held, 2),
        at(2, GilState::Held, 3),
        at(92, GilState::Held, 3),
        at(93, GilState::Held, 4),
    ];
    let mut probe = Scripted(ext_stack(), 0);
    assert!(run(&snaps, &mut probe, 50).is_empty());
    // A real 200 ms call seen by a sampler that only manages one snapshot every 5 ms.
    let mut snaps: Vec<Snapshot> = (0..40).map(|i| at(i * 5, GilState::Held, 7)).collect();
    snaps.push(at(200, GilState::Held, 8));
    let found = run(&snaps, &mut probe, 50);
    assert_eq!(found.len(), 1);
    assert!(found[0].duration_ns >= 195 * MS, "{}", found[0].duration_ns);
}
