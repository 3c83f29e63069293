//! Hand-written view models: for tests, for the `demo` example, and for
//! running the UI before the CLI maps real traces into it.
//!
//! Lanes are written as ASCII, one character per tick:
//!
//! | char | state |
//! |------|-------|
//! | `H`  | held (on CPU) |
//! | `h`  | held, off CPU |
//! | `W`  | waiting |
//! | `R`  | released (on CPU) |
//! | `.`  | idle |
//! | `A`  | attached (GIL disabled) |
//! | `?`  | unknown |
//! | ` `  | not observed |
//!
//! GIL strips: `B` busy, `_` free, `-` disabled, ` ` not observed.

use crate::view::{
    GilLock, GilSegment, GilTrack, GilView, HotStack, InterpView, Lane, LaneState, Segment,
    ThreadKey, ThreadView, TimeRange, ViewModel,
};

/// Where fixture time starts (a plausible CLOCK_MONOTONIC value).
pub const T0: u64 = 1_000_000_000_000;
/// One fixture character: 10 ms.
pub const TICK_NS: u64 = 10_000_000;

/// Segments for an ASCII lane starting at `start_ns`, `tick_ns` per char.
/// Panics on a character not in the table above.
pub fn segments(ascii: &str, start_ns: u64, tick_ns: u64) -> Vec<Segment> {
    let mut out = Vec::new();
    for (i, c) in ascii.chars().enumerate() {
        let (state, on_cpu) = match c {
            'H' => (LaneState::Held, true),
            'h' => (LaneState::Held, false),
            'W' => (LaneState::Waiting, false),
            'R' => (LaneState::Released, true),
            '.' => (LaneState::Idle, false),
            'A' => (LaneState::Attached, true),
            '?' => (LaneState::Unknown, false),
            ' ' => continue,
            other => panic!("fixture lane: unknown character {other:?}"),
        };
        let s = start_ns + i as u64 * tick_ns;
        out.push(Segment::new(s, s + tick_ns, state).with_on_cpu(on_cpu));
    }
    out
}

/// A lane from ASCII (see the module docs).
pub fn lane(ascii: &str, start_ns: u64, tick_ns: u64) -> Lane {
    Lane::from_segments(segments(ascii, start_ns, tick_ns))
}

/// A GIL track from ASCII: `B` busy, `_` free, `-` disabled, ` ` gap.
pub fn gil(ascii: &str, start_ns: u64, tick_ns: u64) -> GilTrack {
    GilTrack::from_segments(ascii.chars().enumerate().filter_map(|(i, c)| {
        let lock = match c {
            'B' => GilLock::Busy,
            '_' => GilLock::Free,
            '-' => GilLock::Disabled,
            ' ' => return None,
            other => panic!("fixture GIL: unknown character {other:?}"),
        };
        let s = start_ns + i as u64 * tick_ns;
        Some(GilSegment::new(s, s + tick_ns, lock))
    }))
}

/// The GIL strip implied by some ASCII lanes sharing one GIL: busy wherever
/// one of them holds it, free elsewhere.
pub fn gil_from_lanes(lanes: &[&str]) -> String {
    let n = lanes.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    let cols: Vec<Vec<char>> = lanes.iter().map(|l| l.chars().collect()).collect();
    (0..n)
        .map(|i| {
            if cols
                .iter()
                .any(|c| matches!(c.get(i), Some('H') | Some('h')))
            {
                'B'
            } else {
                '_'
            }
        })
        .collect()
}

/// `parts` concatenated, each `(pattern, length)` repeating `pattern` to
/// `length` characters.
pub fn phases(parts: &[(&str, usize)]) -> String {
    let mut s = String::new();
    for (pat, len) in parts {
        s.extend(pat.chars().cycle().take(*len));
    }
    s
}

fn stack(pct: f64, frames: &[&str]) -> HotStack {
    HotStack {
        frames: frames.iter().map(|f| f.to_string()).collect(),
        pct,
    }
}

fn thread(tid: u32, name: &str, ascii: &str) -> ThreadView {
    ThreadView {
        key: ThreadKey {
            tid,
            start_ticks: 1000 + tid as u64,
        },
        name: name.to_string(),
        lane: lane(ascii, T0, TICK_NS),
        hot_stacks_held: Vec::new(),
        hot_stacks_waiting: Vec::new(),
        waited_for: Vec::new(),
    }
}

/// A 10-second trace of a small app, three interpreters:
///
/// * interpreter 0 (main): the main thread computes alone for 2 s, then
///   waits (joins) while three workers fight over the GIL for 5 s, then
///   calls into numpy (releasing the GIL) for the last 3 s; an I/O thread
///   mostly sleeps; a pool thread runs native code at the end;
/// * interpreter 1: a sub-interpreter with its own GIL (PEP 684), busy;
/// * interpreter 2: a legacy sub-interpreter sharing the main GIL.
pub fn demo_view() -> ViewModel {
    let main = phases(&[
        ("H", 200),
        ("hhh.................", 500),
        ("HHHRRRRRRRRRRRRRRRRR", 300),
    ]);
    let w1 = phases(&[(" ", 200), ("HHHHHWWWWWWWWWW", 500), (" ", 300)]);
    let w2 = phases(&[(" ", 205), ("HHHHHWWWWWWWWWW", 495), (" ", 300)]);
    let w3 = phases(&[(" ", 210), ("HHHHHWWWWWWWWWW", 490), (" ", 300)]);
    let io = phases(&[("..........................R.....H.", 1000)]);
    let pool = phases(&[(" ", 700), ("RRRRRRRRRRRRRRRRRRHR", 300)]);
    let legacy = phases(&[("....", 100), ("WWWWWWWWWWWWWWWWWWWHH", 900)]);
    let sub_a = phases(&[("HHHHHHHHHHHHHHHHHH..", 600), ("HHHHHHHHHRRRRRRRRR..", 400)]);
    let sub_b = phases(&[("????", 40), ("......................HH", 960)]);

    let gil0 = gil_from_lanes(&[&main, &w1, &w2, &w3, &io, &pool, &legacy]);
    let gil1 = gil_from_lanes(&[&sub_a, &sub_b]);

    let mut t_main = thread(4242, "MainThread", &main);
    t_main.hot_stacks_held = vec![
        stack(
            58.3,
            &[
                "fib (app/compute.py:12)",
                "fib (app/compute.py:14)",
                "run_batch (app/compute.py:40)",
                "main (app/main.py:22)",
                "<module> (app/main.py:31)",
            ],
        ),
        stack(
            21.7,
            &[
                "_wrapreduction (numpy/core/fromnumeric.py:86)",
                "sum (numpy/core/fromnumeric.py:2313)",
                "summarise (app/report.py:18)",
                "main (app/main.py:27)",
            ],
        ),
        stack(9.4, &["join (threading.py:1147)", "main (app/main.py:25)"]),
    ];
    let mut t_w1 = thread(4250, "worker-1", &w1);
    let mut t_w2 = thread(4251, "worker-2", &w2);
    let mut t_w3 = thread(4252, "worker-3", &w3);
    for t in [&mut t_w1, &mut t_w2, &mut t_w3] {
        t.hot_stacks_held = vec![
            stack(
                71.2,
                &[
                    "parse_record (app/etl.py:57)",
                    "transform (app/etl.py:88)",
                    "run (app/worker.py:19)",
                    "_bootstrap_inner (threading.py:1075)",
                ],
            ),
            stack(
                22.5,
                &[
                    "dumps (json/__init__.py:231)",
                    "emit (app/etl.py:95)",
                    "run (app/worker.py:21)",
                ],
            ),
        ];
        t.hot_stacks_waiting = vec![
            stack(
                64.0,
                &[
                    "transform (app/etl.py:88)",
                    "run (app/worker.py:19)",
                    "_bootstrap_inner (threading.py:1075)",
                ],
            ),
            stack(30.1, &["emit (app/etl.py:95)", "run (app/worker.py:21)"]),
        ];
    }
    let mut t_io = thread(4243, "io-poller", &io);
    t_io.hot_stacks_held = vec![stack(
        100.0,
        &["select (selectors.py:468)", "poll (app/io.py:33)"],
    )];
    let mut t_pool = thread(4260, "numpy-pool-0", &pool);
    t_pool.hot_stacks_held = vec![stack(100.0, &["<native> (libopenblas.so)"])];
    let mut t_legacy = thread(4270, "legacy-plugin", &legacy);
    t_legacy.hot_stacks_held = vec![stack(
        88.0,
        &[
            "render (plugins/legacy.py:9)",
            "<module> (plugins/legacy.py:30)",
        ],
    )];
    t_legacy.hot_stacks_waiting = vec![stack(
        95.5,
        &[
            "render (plugins/legacy.py:9)",
            "<module> (plugins/legacy.py:30)",
        ],
    )];
    let mut t_sub_a = thread(4280, "sub-compute", &sub_a);
    t_sub_a.hot_stacks_held = vec![stack(
        80.0,
        &["crunch (sub/task.py:5)", "<module> (sub/task.py:12)"],
    )];
    let t_sub_b = thread(4281, "", &sub_b);

    ViewModel {
        parallel: Default::default(),
        parallel_max: 0,
        title: "demo.gilscope".to_string(),
        time_range: TimeRange::new(T0, T0 + 1000 * TICK_NS),
        live: false,
        recording: None,
        notice: None,
        gils: vec![
            GilView {
                id: 0,
                track: gil(&gil0, T0, TICK_NS),
            },
            GilView {
                id: 1,
                track: gil(&gil1, T0, TICK_NS),
            },
        ],
        interpreters: vec![
            InterpView {
                id: 0,
                main: true,
                own_gil: true,
                gil: Some(0),
                threads: vec![t_main, t_io, t_w1, t_w2, t_w3, t_pool],
            },
            InterpView {
                id: 1,
                main: false,
                own_gil: true,
                gil: Some(1),
                threads: vec![t_sub_a, t_sub_b],
            },
            InterpView {
                id: 2,
                main: false,
                own_gil: false,
                gil: Some(0),
                threads: vec![t_legacy],
            },
        ],
    }
}

/// A free-threaded (3.13t, GIL disabled) 5-second trace: four threads
/// running Python in parallel, attached, with some native and idle time.
pub fn free_threaded_view() -> ViewModel {
    let lanes = [
        (
            "MainThread",
            phases(&[("AAAAAAAAAAAAAAAAAA..", 100), ("....", 300), ("AAAA", 100)]),
        ),
        (
            "T-1",
            phases(&[(" ", 50), ("AAAAAAAAAARRRRAAAAAA", 400), (" ", 50)]),
        ),
        (
            "T-2",
            phases(&[(" ", 60), ("AAAAAAAA....AAAAAAAA", 390), (" ", 50)]),
        ),
        (
            "T-3",
            phases(&[(" ", 70), ("AAAAAAAAAAAAAA?AAAAA", 380), (" ", 50)]),
        ),
    ];
    let threads = lanes
        .iter()
        .enumerate()
        .map(|(i, (name, l))| {
            let mut t = thread(7000 + i as u32, name, l);
            t.hot_stacks_held = vec![stack(
                90.0,
                &["step (sim/nbody.py:44)", "simulate (sim/nbody.py:70)"],
            )];
            t
        })
        .collect();
    ViewModel {
        parallel: Default::default(),
        parallel_max: 0,
        title: "nbody-3.13t.gilscope".to_string(),
        time_range: TimeRange::new(T0, T0 + 500 * TICK_NS),
        live: false,
        recording: None,
        notice: None,
        gils: vec![GilView {
            id: 0,
            track: gil(&"-".repeat(500), T0, TICK_NS),
        }],
        interpreters: vec![InterpView {
            id: 0,
            main: true,
            own_gil: true,
            gil: Some(0),
            threads,
        }],
    }
}

/// `n` worker threads in one interpreter contending for its GIL (plus a
/// main thread), for scrolling.
pub fn many_threads_view(n: usize) -> ViewModel {
    let base = "HHHWWWWWWWWWWWWWW...RRR";
    let mut lanes = vec![phases(&[("H....", 600)])];
    for i in 0..n {
        let rot = (i * 3) % base.len();
        let pat: String = base.chars().cycle().skip(rot).take(base.len()).collect();
        lanes.push(phases(&[(" ", i % 7), (&pat, 600 - i % 7)]));
    }
    let refs: Vec<&str> = lanes.iter().map(String::as_str).collect();
    let g = gil_from_lanes(&refs);
    let threads = lanes
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let name = if i == 0 {
                "MainThread".to_string()
            } else {
                format!("pool-worker-{i}")
            };
            thread(5000 + i as u32, &name, l)
        })
        .collect();
    ViewModel {
        parallel: Default::default(),
        parallel_max: 0,
        title: format!("{n} workers"),
        time_range: TimeRange::new(T0, T0 + 600 * TICK_NS),
        live: false,
        recording: None,
        notice: None,
        gils: vec![GilView {
            id: 0,
            track: gil(&g, T0, TICK_NS),
        }],
        interpreters: vec![InterpView {
            id: 0,
            main: true,
            own_gil: true,
            gil: Some(0),
            threads,
        }],
    }
}

/// A deterministic pseudo-random generator (xorshift64*), so synthetic
/// views are the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// A big synthetic view: `threads` threads sampled every `period_ns` for
/// `duration_ns`, states changing every 1-20 samples (so about one segment
/// per ten samples), all in one interpreter, plus its GIL strip. For
/// benchmarks (`examples/frame_time.rs`) and memory checks.
pub fn synthetic_view(threads: usize, duration_ns: u64, period_ns: u64, seed: u64) -> ViewModel {
    let mut rng = Rng(seed | 1);
    let samples = duration_ns / period_ns;
    let mut views = Vec::with_capacity(threads);
    for i in 0..threads {
        let mut lane = Lane::new();
        let mut k = 0;
        while k < samples {
            let len = 1 + rng.next() % 20;
            let state = match rng.next() % 10 {
                0..=3 => LaneState::Held,
                4..=6 => LaneState::Waiting,
                7 => LaneState::Released,
                8 => LaneState::Idle,
                _ => LaneState::Unknown,
            };
            let s = T0 + k * period_ns;
            let e = T0 + (k + len).min(samples) * period_ns;
            lane.push(Segment::new(s, e, state));
            k += len;
        }
        views.push(ThreadView {
            key: ThreadKey {
                tid: 10_000 + i as u32,
                start_ticks: i as u64,
            },
            name: format!("synthetic-{i}"),
            lane,
            hot_stacks_held: vec![stack(50.0, &["work (synthetic.py:1)"])],
            hot_stacks_waiting: vec![stack(50.0, &["work (synthetic.py:1)"])],
            waited_for: Vec::new(),
        });
    }
    let mut track = GilTrack::new();
    let mut k = 0;
    while k < samples {
        let len = 1 + rng.next() % 8;
        let lock = if rng.next().is_multiple_of(4) {
            GilLock::Free
        } else {
            GilLock::Busy
        };
        track.push(GilSegment::new(
            T0 + k * period_ns,
            T0 + (k + len).min(samples) * period_ns,
            lock,
        ));
        k += len;
    }
    ViewModel {
        parallel: Default::default(),
        parallel_max: 0,
        title: format!("synthetic {threads} threads"),
        time_range: TimeRange::new(T0, T0 + samples * period_ns),
        live: false,
        recording: None,
        notice: None,
        gils: vec![GilView { id: 0, track }],
        interpreters: vec![InterpView {
            id: 0,
            main: true,
            own_gil: true,
            gil: Some(0),
            threads: views,
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_lanes() {
        let l = lane("HHW  .", 0, 10);
        assert_eq!(
            l.segments(),
            &[
                Segment::new(0, 20, LaneState::Held),
                Segment::new(20, 30, LaneState::Waiting),
                Segment::new(50, 60, LaneState::Idle),
            ]
        );
        assert_eq!(gil_from_lanes(&["H.", ".h", ".."]), "BB");
        assert_eq!(phases(&[("ab", 5), ("c", 2)]), "ababacc");
    }

    #[test]
    fn demo_is_consistent() {
        let vm = demo_view();
        assert_eq!(vm.thread_count(), 9);
        for (_, t) in vm.threads() {
            let (s, e) = t.lane.extent().unwrap();
            assert!(
                s >= vm.time_range.start_ns && e <= vm.time_range.end_ns,
                "{}",
                t.name
            );
        }
    }
}
