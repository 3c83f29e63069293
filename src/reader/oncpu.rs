//! Each thread's on/off-CPU state without a system call per sample: the kernel's own record of
//! its context switches (a per-thread dummy `perf_event_open` event with `context_switch`,
//! read from its mmap ring), where perf events are permitted. Elsewhere, and for any thread
//! whose event cannot be opened or mapped, `/proc/PID/task/TID/stat` through a kept handle.
//!
//! A thread's state is its `stat` at the moment its event was opened, then every switch after
//! that moment (records are stamped with CLOCK_MONOTONIC): switched in → running; switched out
//! by preemption → runnable (still `R`, queued for a CPU); switched out otherwise → asleep
//! (`S`). One thing a switch record cannot tell is a wake-up: a sleeper that was woken but
//! has not run yet still reads asleep until it is switched in (microseconds, usually). A lost
//! record, an exit or a rename sends the thread back to `stat` once. A thread is followed
//! once it has been seen for [`FOLLOW_AFTER_NS`] (and at two samples at least); until then
//! `stat` tells. Opening, mapping, unmapping and closing an event costs ~100 µs of the
//! kernel's time (it installs the event on the thread's CPU with an inter-processor call),
//! while a `stat` read costs a few: a server's thread per request, gone within milliseconds,
//! never costs an event, and a thread that lives on pays for its event within 100 ms at
//! any rate above ~300 Hz.

use std::collections::HashMap;
use std::os::fd::OwnedFd;

use super::procfs::{TaskFiles, TaskStat};
use crate::exact::sys::{self, RingBuffer};

const PERF_RECORD_LOST: u32 = 2;
const PERF_RECORD_COMM: u32 = 3;
const PERF_RECORD_EXIT: u32 = 4;
const PERF_RECORD_SWITCH: u32 = 14;
const MISC_SWITCH_OUT: u16 = 1 << 13;
const MISC_SWITCH_OUT_PREEMPT: u16 = 1 << 14;
/// Data pages per thread's ring: 2 × 4 KiB hold ~340 switch records, far more than a thread
/// switches between two samples at the lowest rate the budget goes to (50 Hz) unless it
/// switches more than 17 000 times a second; beyond that a lost record costs one `stat`.
const DATA_PAGES: usize = 2;
/// Each followed thread's `stat` is read again this often (ns) all the same: 10 reads a
/// second per thread, instead of one per sample.
const RECHECK_NS: u64 = 100_000_000;
/// Threads followed with switch records at most; more are read through `stat`.
const MAX_TRACKED: usize = 4096;
/// A thread is followed with switch records once it has been seen this long (ns).
pub const FOLLOW_AFTER_NS: u64 = 100_000_000;

/// Where on-CPU state comes from (said in the stderr header and the trace metadata).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnCpuSource {
    /// Context-switch records (perf), `stat` only where an event could not be opened.
    SwitchRecords,
    /// `/proc/PID/task/TID/stat` at every sample.
    ProcStat,
}

impl OnCpuSource {
    pub fn describe(&self) -> &'static str {
        match self {
            OnCpuSource::SwitchRecords => "perf context-switch records",
            OnCpuSource::ProcStat => "/proc/TID/stat",
        }
    }
}

struct Tracked {
    _fd: OwnedFd,
    ring: RingBuffer,
    /// The stat taken when the event was opened, its state kept up to date.
    stat: TaskStat,
    /// Records at or before this time were already in `stat`.
    since_ns: u64,
    /// Read `stat` again at the next look (a lost record, a rename).
    stale: bool,
    /// When `stat` was last read.
    checked_ns: u64,
    /// Switch-in records seen.
    switch_ins: u64,
    exited: bool,
}

/// The on-CPU state of a process's threads. See the module docs.
pub struct OnCpu {
    enabled: bool,
    /// Why switch records are not used (the first failure to open one), if so.
    refused: Option<String>,
    threads: HashMap<u32, Tracked>,
    /// Threads whose event could not be opened (read through `stat`).
    untracked: HashMap<u32, ()>,
    /// Threads not followed yet, and when each was first seen (read through `stat`).
    first_seen: HashMap<u32, u64>,
    buf: Vec<u8>,
}

impl OnCpu {
    /// `use_switch_records`: try perf events (false: `stat` only).
    pub fn new(use_switch_records: bool) -> Self {
        OnCpu {
            enabled: use_switch_records,
            refused: None,
            threads: HashMap::new(),
            untracked: HashMap::new(),
            first_seen: HashMap::new(),
            buf: Vec::new(),
        }
    }

    pub fn source(&self) -> OnCpuSource {
        if self.enabled && (self.refused.is_none() || !self.threads.is_empty()) {
            OnCpuSource::SwitchRecords
        } else {
            OnCpuSource::ProcStat
        }
    }

    /// Why perf switch records are not in use, when they were asked for and refused.
    pub fn refused(&self) -> Option<&str> {
        self.refused.as_deref()
    }

    /// The stat of thread `tid` of `pid`, its state from switch records where they are
    /// followed. None: the thread is gone.
    pub fn stat(
        &mut self,
        files: &mut TaskFiles,
        pid: u32,
        tid: u32,
        now_ns: u64,
    ) -> Option<TaskStat> {
        if !self.enabled || self.untracked.contains_key(&tid) {
            return files.stat(pid, tid);
        }
        if let Some(t) = self.threads.get_mut(&tid) {
            drain(t, &mut self.buf);
            let due = now_ns.saturating_sub(t.checked_ns) >= RECHECK_NS;
            if !(t.exited || t.stale || due) {
                return Some(t.stat.clone());
            }
            // Look at `stat` itself: after an exit, a lost record or a rename, and every
            // RECHECK_NS anyway (an exit whose record never came must not leave a thread
            // that is gone looking alive).
            let st = files.stat(pid, tid);
            match st {
                Some(st) if st.start_ticks == t.stat.start_ticks => {
                    if t.exited {
                        return None; // exiting: its thread state may outlive it a moment
                    }
                    t.stat = TaskStat {
                        switch_ins: Some(t.switch_ins),
                        ..st
                    };
                    t.since_ns = now_ns;
                    t.checked_ns = now_ns;
                    t.stale = false;
                    return Some(t.stat.clone());
                }
                // Gone; or its TID is a new thread's now (a different start time).
                None => {
                    self.threads.remove(&tid);
                    return None;
                }
                Some(_) => {
                    self.threads.remove(&tid);
                }
            }
        }
        if self.threads.len() >= MAX_TRACKED {
            self.untracked.insert(tid, ());
            return files.stat(pid, tid);
        }
        // A thread is followed once it has lived a while: one gone within milliseconds (a
        // server's thread per request) costs `stat` reads, not an event opened, mapped,
        // unmapped and closed.
        let first = *self.first_seen.entry(tid).or_insert(now_ns);
        if now_ns.saturating_sub(first) < FOLLOW_AFTER_NS || first == now_ns {
            return files.stat(pid, tid);
        }
        self.first_seen.remove(&tid);
        // Open first, then read `stat`: a switch between the two is in the ring, stamped
        // after the stat's moment only if it came after it (records up to `since` are
        // dropped, as the stat already says what they did).
        let opened = sys::open_switch_events(tid)
            .and_then(|fd| RingBuffer::map(&fd, DATA_PAGES).map(|ring| (fd, ring)));
        let since_ns = super::walk::monotonic_ns();
        let stat = files.stat(pid, tid)?;
        match opened {
            Ok((fd, ring)) => {
                self.threads.insert(
                    tid,
                    Tracked {
                        _fd: fd,
                        ring,
                        stat: TaskStat {
                            switch_ins: Some(0),
                            ..stat.clone()
                        },
                        since_ns,
                        stale: false,
                        checked_ns: since_ns,
                        switch_ins: 0,
                        exited: false,
                    },
                );
            }
            Err(e) => {
                if self.refused.is_none() {
                    self.refused = Some(format!("perf_event_open / mmap: {e}"));
                }
                self.untracked.insert(tid, ());
                // Refused for the first thread: not permitted here; use stat for all.
                if self.threads.is_empty() && self.untracked.len() == 1 {
                    self.enabled =
                        matches!(e.raw_os_error(), Some(libc::ESRCH) | Some(libc::ENOMEM));
                }
            }
        }
        Some(stat)
    }

    /// Forgets the threads `live` says are gone.
    pub fn retain(&mut self, live: impl Fn(u32) -> bool) {
        self.threads.retain(|tid, _| live(*tid));
        self.untracked.retain(|tid, _| live(*tid));
        self.first_seen.retain(|tid, _| live(*tid));
    }
}

/// Applies every record in the thread's ring to its state.
fn drain(t: &mut Tracked, buf: &mut Vec<u8>) {
    buf.clear();
    if t.ring.read_into(buf) == 0 {
        return;
    }
    let mut at = 0;
    while at + 8 <= buf.len() {
        let ty = u32::from_le_bytes(buf[at..at + 4].try_into().unwrap_or([0; 4]));
        let misc = u16::from_le_bytes(buf[at + 4..at + 6].try_into().unwrap_or([0; 2]));
        let size = usize::from(u16::from_le_bytes(
            buf[at + 6..at + 8].try_into().unwrap_or([0; 2]),
        ));
        if size < 8 || at + size > buf.len() {
            t.stale = true;
            return;
        }
        let rec = &buf[at..at + size];
        // sample_id (TID | TIME) closes every record: u32 pid, u32 tid, u64 time.
        let time = if size >= 24 {
            u64::from_le_bytes(rec[size - 8..].try_into().unwrap_or([0; 8]))
        } else {
            0
        };
        if time > t.since_ns || ty == PERF_RECORD_LOST {
            apply(t, ty, misc);
        }
        at += size;
    }
}

fn apply(t: &mut Tracked, ty: u32, misc: u16) {
    match ty {
        PERF_RECORD_SWITCH => {
            if misc & MISC_SWITCH_OUT == 0 {
                t.switch_ins += 1;
                t.stat.switch_ins = Some(t.switch_ins);
            }
            t.stat.state = if misc & MISC_SWITCH_OUT == 0 || misc & MISC_SWITCH_OUT_PREEMPT != 0 {
                'R'
            } else {
                'S'
            };
        }
        PERF_RECORD_EXIT => t.exited = true,
        PERF_RECORD_COMM | PERF_RECORD_LOST => t.stale = true,
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_a_thread_of_our_own_through_its_sleeps_and_exit() {
        let me = std::process::id();
        let mut files = TaskFiles::default();
        let mut oncpu = OnCpu::new(true);
        let (tx, rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<bool>();
        let t = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tx.send(unsafe { libc::gettid() } as u32).unwrap();
            // Spin when told true, sleep in recv otherwise; end when the channel closes.
            while let Ok(spin) = go_rx.recv() {
                let until = std::time::Instant::now() + std::time::Duration::from_millis(300);
                while spin && std::time::Instant::now() < until {
                    std::hint::black_box(0u64);
                }
            }
        });
        let tid = rx.recv().unwrap();
        let now = super::super::walk::monotonic_ns;
        let t0 = now();
        let first = oncpu.stat(&mut files, me, tid, t0).unwrap();
        assert_eq!(first.tid, tid);
        // Seen for less than FOLLOW_AFTER_NS: `stat` only, however often it is looked at.
        assert!(!oncpu.threads.contains_key(&tid));
        let soon = t0 + FOLLOW_AFTER_NS - 1;
        assert_eq!(oncpu.stat(&mut files, me, tid, soon).unwrap().tid, tid);
        assert!(!oncpu.threads.contains_key(&tid));
        // Followed from the first look after that.
        let later = (t0 + FOLLOW_AFTER_NS).max(now());
        assert_eq!(oncpu.stat(&mut files, me, tid, later).unwrap().tid, tid);
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            // Root may always open them (the CI machines run as root).
            assert_eq!(
                oncpu.source(),
                OnCpuSource::SwitchRecords,
                "{:?}",
                oncpu.refused()
            );
            assert!(oncpu.threads.contains_key(&tid));
        } else if oncpu.source() == OnCpuSource::ProcStat {
            // Not permitted here: the fallback is stat, and it says why.
            assert!(oncpu.refused().is_some());
        }
        // Asleep in recv: seen asleep within a second.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while oncpu.stat(&mut files, me, tid, now()).unwrap().state == 'R' {
            assert!(std::time::Instant::now() < deadline, "never seen asleep");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // Spinning for 300 ms: seen runnable meanwhile.
        go_tx.send(true).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while oncpu.stat(&mut files, me, tid, now()).unwrap().state != 'R' {
            assert!(std::time::Instant::now() < deadline, "never seen running");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        drop(go_tx);
        t.join().unwrap();
        // Gone: no stat, whichever source.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while oncpu.stat(&mut files, me, tid, now()).is_some() {
            assert!(std::time::Instant::now() < deadline, "exit never seen");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn switch_records_set_the_state() {
        let stat = TaskStat {
            tid: 1,
            comm: "x".into(),
            state: 'S',
            start_ticks: 1,
            cpu_ticks: 0,
            switch_ins: None,
        };
        let Ok(fd) = sys::open_switch_events(std::process::id()) else {
            return; // perf not permitted: nothing to map a ring on (covered above)
        };
        let Ok(ring) = RingBuffer::map(&fd, 1) else {
            return;
        };
        let mut t = Tracked {
            _fd: fd,
            ring,
            stat,
            since_ns: 0,
            stale: false,
            checked_ns: 0,
            switch_ins: 0,
            exited: false,
        };
        apply(&mut t, PERF_RECORD_SWITCH, 0);
        assert_eq!(t.stat.state, 'R');
        assert_eq!(t.stat.switch_ins, Some(1));
        apply(
            &mut t,
            PERF_RECORD_SWITCH,
            MISC_SWITCH_OUT | MISC_SWITCH_OUT_PREEMPT,
        );
        assert_eq!(t.stat.state, 'R');
        apply(&mut t, PERF_RECORD_SWITCH, MISC_SWITCH_OUT);
        assert_eq!(t.stat.state, 'S');
        apply(&mut t, PERF_RECORD_LOST, 0);
        assert!(t.stale);
        apply(&mut t, PERF_RECORD_EXIT, 0);
        assert!(t.exited);
    }
}
