//! Synthetic but realistic workloads as [`Snapshot`] sequences: for tests,
//! trace-size measurement, fuzz seeds and fixtures. Deterministic for a seed.
//!
//! The shape: a main thread mostly idle in `Thread.join`, CPU-bound workers
//! passing one GIL around every ~5 ms (CPython's switch interval) with the
//! holder's leaf line moving as it computes, now and then a worker in native
//! code without the GIL, and an I/O thread that wakes up briefly.

use crate::model::{
    FrameInfo, GilInfo, GilState, InterpreterInfo, PythonInfo, Snapshot, ThreadInfo,
};

/// A small xorshift PRNG (no dependency, stable across platforms).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 > 1.0 - p
    }
}

/// How often the GIL holder's innermost line changes between samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Churn {
    /// Realistic: the holder moves to another line in 30% of samples,
    /// sometimes into another function.
    Realistic,
    /// Worst case: every sample of every running thread shows a new line.
    EverySample,
}

#[derive(Debug, Clone)]
pub struct SynthOptions {
    /// Total threads (≥ 1): main, workers, and an I/O thread when ≥ 3.
    pub threads: usize,
    pub rate_hz: u32,
    pub samples: usize,
    pub seed: u64,
    pub churn: Churn,
    /// A TID reused by a new thread halfway (a thread ends, another starts).
    pub reuse_tid: bool,
    /// Add sub-interpreter 1 with its own GIL (one busy thread) and
    /// sub-interpreter 2 sharing the main GIL (no threads).
    pub subinterpreters: bool,
    pub start_ns: u64,
}

impl Default for SynthOptions {
    fn default() -> Self {
        SynthOptions {
            threads: 4,
            rate_hz: 1000,
            samples: 1000,
            seed: 1,
            churn: Churn::Realistic,
            reuse_tid: false,
            subinterpreters: false,
            start_ns: 5_000_000_000,
        }
    }
}

fn f(function: &str, file: &str, line: i32) -> FrameInfo {
    FrameInfo {
        function: function.into(),
        file: file.into(),
        line,
        interpreter: 0,
    }
}

const LEAVES: [(&str, i32); 8] = [
    ("tokenize", 40),
    ("parse_record", 88),
    ("checksum", 130),
    ("normalize", 170),
    ("Counter.update", 600),
    ("dict.get_or_default", 210),
    ("json_dumps", 260),
    ("score", 300),
];

struct Worker {
    leaf: usize,
    line: i32,
    native_until: usize,
}

/// Generate the workload.
pub fn snapshots(opts: &SynthOptions) -> Vec<Snapshot> {
    let mut rng = Rng::new(opts.seed);
    let period = 1_000_000_000 / u64::from(opts.rate_hz.max(1));
    let n_threads = opts.threads.max(1);
    let io_thread = n_threads >= 3;
    let n_workers = n_threads - 1 - usize::from(io_thread);
    let mut workers: Vec<Worker> = (0..n_workers)
        .map(|i| Worker {
            leaf: i % LEAVES.len(),
            line: 0,
            native_until: 0,
        })
        .collect();
    let mut holder: Option<usize> = None; // worker index; None = main or nobody
    let mut holder_since = 0usize;
    let mut switch_number = 0u64;
    let mut io_busy_until = 0usize;
    let mut out = Vec::with_capacity(opts.samples);
    let base_tid = 4000u32;
    for s in 0..opts.samples {
        let time_ns = opts.start_ns + s as u64 * period;
        // Hand the GIL over every ~5 ms among runnable workers.
        let runnable: Vec<usize> = (0..n_workers)
            .filter(|&w| workers[w].native_until <= s)
            .collect();
        let switch_due = s.saturating_sub(holder_since) as u64 * period >= 5_000_000;
        if holder.is_none_or(|h| !runnable.contains(&h) || switch_due) {
            let next = if runnable.is_empty() {
                None
            } else {
                Some(runnable[rng.below(runnable.len() as u64) as usize])
            };
            if next != holder {
                switch_number += 1;
            }
            holder = next;
            holder_since = s;
        }
        let mut threads = Vec::with_capacity(n_threads);
        // Main thread: waiting in join; takes the GIL briefly now and then.
        let main_holds = holder.is_none() && s % 100 < 3;
        threads.push(ThreadInfo {
            tid: base_tid,
            start_ticks: 100,
            name: "MainThread".into(),
            os_name: "python3".into(),
            interpreter: 0,
            holds_gil: main_holds,
            gil_state: if main_holds {
                GilState::Held
            } else {
                GilState::Idle
            },
            on_cpu: main_holds,
            frames: vec![
                f("Thread.join", "/usr/lib/python3.13/threading.py", 1147),
                f("main", "/srv/app/pipeline.py", 212),
                f("<module>", "/srv/app/pipeline.py", 230),
            ],
            thread_states: vec![],
            interpreter_evidence: "only".into(),
            position: None,
        });
        for (w, wk) in workers.iter_mut().enumerate() {
            let holds = holder == Some(w);
            let native = wk.native_until > s;
            if holds {
                let moved = match opts.churn {
                    Churn::Realistic => rng.chance(0.3),
                    Churn::EverySample => true,
                };
                if moved {
                    if rng.chance(0.1) {
                        wk.leaf = rng.below(LEAVES.len() as u64) as usize;
                    }
                    wk.line = rng.below(24) as i32;
                }
                if rng.chance(0.002) {
                    wk.native_until = s + 5 + rng.below(30) as usize;
                }
            }
            let (leaf, line0) = LEAVES[wk.leaf];
            let mut frames = vec![
                f(leaf, "/srv/app/records.py", line0 + wk.line),
                f("process_batch", "/srv/app/pipeline.py", 120),
                f("worker_loop", "/srv/app/pipeline.py", 95),
                f("Thread.run", "/usr/lib/python3.13/threading.py", 1012),
                f(
                    "Thread._bootstrap_inner",
                    "/usr/lib/python3.13/threading.py",
                    1075,
                ),
                f(
                    "Thread._bootstrap",
                    "/usr/lib/python3.13/threading.py",
                    1032,
                ),
            ];
            if native {
                frames.insert(0, f("numpy.dot", "<native>", 0));
            }
            let tid = if opts.reuse_tid && w == 0 && s >= opts.samples / 2 {
                // Same TID, a different kernel thread (later start time).
                base_tid + 1
            } else {
                base_tid + 1 + w as u32
            };
            let start_ticks = if opts.reuse_tid && w == 0 && s >= opts.samples / 2 {
                900
            } else {
                200 + w as u64
            };
            let (state, on_cpu) = if holds {
                (GilState::Held, true)
            } else if native {
                (GilState::Released, true)
            } else {
                (GilState::Idle, false)
            };
            threads.push(ThreadInfo {
                tid,
                start_ticks,
                name: format!("worker-{w}"),
                os_name: format!("worker-{w}"),
                interpreter: 0,
                holds_gil: holds,
                gil_state: state,
                on_cpu,
                frames,
                thread_states: vec![],
                interpreter_evidence: "attached".into(),
                position: None,
            });
        }
        if io_thread {
            if io_busy_until <= s && rng.chance(0.01) {
                io_busy_until = s + 1 + rng.below(3) as usize;
            }
            let busy = io_busy_until > s;
            threads.push(ThreadInfo {
                tid: base_tid + 100,
                start_ticks: 300,
                name: "io-poller".into(),
                os_name: "io-poller".into(),
                interpreter: 0,
                holds_gil: false,
                gil_state: if busy {
                    GilState::Released
                } else {
                    GilState::Idle
                },
                on_cpu: busy,
                frames: vec![
                    f(
                        if busy {
                            "socket.recv_into"
                        } else {
                            "selectors.select"
                        },
                        "/usr/lib/python3.13/selectors.py",
                        if busy { 0 } else { 468 },
                    ),
                    f("poll_forever", "/srv/app/io.py", 33),
                    f("Thread.run", "/usr/lib/python3.13/threading.py", 1012),
                ],
                thread_states: vec![],
                interpreter_evidence: "attached".into(),
                position: None,
            });
        }
        let sub_holds = opts.subinterpreters && s % 10 < 7;
        if opts.subinterpreters {
            let mut fr = f("solve", "/srv/app/sub.py", 10 + (s % 5) as i32);
            fr.interpreter = 1;
            threads.push(ThreadInfo {
                tid: base_tid + 200,
                start_ticks: 400,
                name: "sub-worker".into(),
                os_name: "sub-worker".into(),
                interpreter: 1,
                holds_gil: sub_holds,
                gil_state: if sub_holds {
                    GilState::Held
                } else {
                    GilState::Released
                },
                on_cpu: true,
                frames: vec![fr],
                thread_states: vec![],
                interpreter_evidence: "attached".into(),
                position: None,
            });
        }
        threads.sort_by_key(|t| (t.interpreter, t.tid));
        let holder_tid = if main_holds {
            Some(base_tid)
        } else {
            holder.and_then(|h| {
                threads
                    .iter()
                    .find(|t| t.name == format!("worker-{h}"))
                    .map(|t| t.tid)
            })
        };
        let main_gil = GilInfo {
            enabled: true,
            locked: holder_tid.is_some(),
            holder_tid,
            switch_number,
            address: 0x7f00_0000_1000,
            free_threaded_state: None,
        };
        let mut interpreters = vec![InterpreterInfo {
            id: 0,
            main: true,
            own_gil: true,
            gil: main_gil.clone(),
            address: 0x7f00_0000_0000,
            gc_collecting: None,
        }];
        if opts.subinterpreters {
            interpreters.push(InterpreterInfo {
                id: 1,
                main: false,
                own_gil: true,
                gil: GilInfo {
                    enabled: true,
                    locked: sub_holds,
                    holder_tid: sub_holds.then_some(base_tid + 200),
                    switch_number: 1,
                    address: 0x7f00_0000_2000,
                    free_threaded_state: None,
                },
                address: 0x7f00_0000_0100,
                gc_collecting: None,
            });
            interpreters.push(InterpreterInfo {
                id: 2,
                main: false,
                own_gil: false,
                gil: main_gil,
                address: 0x7f00_0000_0200,
                gc_collecting: None,
            });
        }
        out.push(Snapshot {
            pid: 4000,
            time_ns,
            python: PythonInfo {
                version: "3.13.1".into(),
                version_hex: 0x030D01F0,
                free_threaded: false,
                binary: "/usr/bin/python3.13".into(),
                runtime_found_by: "symbol".into(),
                offsets_from: "debug_offsets".into(),
            },
            interpreters,
            threads,
            retries: 0,
            warnings: vec![],
        });
    }
    out
}
