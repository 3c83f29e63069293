//! Opening the GIL uprobes and draining their ring buffers.
//!
//! One perf event per probe point per CPU, system-wide (`pid = -1`, `cpu = N`) on the uprobe
//! PMU: such events see every thread of every process that maps the file, including threads
//! created later, without touching the target's `clone()` (a per-process event with
//! `inherit` and a sampling period makes it fail, see perf-facts.md). Records of other
//! processes are dropped by PID. All events of a CPU write into that CPU's one ring buffer
//! (`PERF_EVENT_IOC_SET_OUTPUT`).
//!
//! Cleanup: the kernel creates PMU uprobes per event and removes them when the event's file
//! descriptor is closed, so dropping a [`ProbeSet`] (or the process dying in any way) leaves
//! no probe behind; `Drop` also disables the events first.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

use super::records::{self, EventLayout, Merger, Record};
use super::symbols::{ProbeKind, ProbePlan};
use super::sys;
use super::ExactEvent;
use crate::reader::monotonic_ns;

#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// Data pages per CPU ring buffer (a power of two).
    pub pages_per_cpu: usize,
    /// Wake a waiting reader once this many bytes are pending in a buffer.
    pub wakeup_bytes: u32,
    /// Events younger than this (at drain time) are held back so that slower CPU buffers can
    /// deliver older ones first.
    pub hold_back_ns: u64,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        Self {
            pages_per_cpu: 256, // 1 MiB per CPU: ~14 000 events
            wakeup_bytes: 256 * 1024,
            hold_back_ns: 2_000_000,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeStats {
    /// Events of the target's PIDs delivered so far.
    pub events: u64,
    /// Probe hits of other processes that map the same file (dropped).
    pub foreign: u64,
    /// Records the kernel dropped because a ring buffer was full.
    pub lost: u64,
    /// Records that could not be decoded.
    pub decode_errors: u64,
    pub take_enter: u64,
    pub take_return: u64,
    pub drops: u64,
    /// When the probes were enabled (CLOCK_MONOTONIC ns).
    pub enabled_ns: u64,
    /// perf events (file descriptors) and ring buffers open.
    pub perf_fds: usize,
    pub ring_buffers: usize,
}

impl ProbeStats {
    /// Target events per second since the probes were enabled.
    pub fn rate(&self, now_ns: u64) -> f64 {
        let secs = now_ns.saturating_sub(self.enabled_ns) as f64 / 1e9;
        if secs <= 0.0 {
            0.0
        } else {
            (self.events + self.foreign) as f64 / secs
        }
    }
}

struct Event {
    fd: OwnedFd,
}

struct Ring {
    cpu: u32,
    fd: RawFd,
    buf: sys::RingBuffer,
}

/// Open GIL probes. Dropping it removes them.
pub struct ProbeSet {
    events: Vec<Event>,
    rings: Vec<Ring>,
    layouts: HashMap<u64, EventLayout>,
    pids: HashSet<u32>,
    merger: Merger,
    stats: ProbeStats,
    scratch: Vec<u8>,
    records: Vec<Record>,
    opts: ProbeOptions,
}

/// Whether `e` means "you lack the privilege", for the error message.
fn permission_hint(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => {
            " (the uprobe PMU needs root or CAP_SYS_ADMIN; CAP_PERFMON is not enough; plus \
             CAP_SYS_PTRACE for other users' processes)"
        }
        Some(libc::ENOENT) => " (the file is gone: did the target exit?)",
        Some(libc::EMFILE) => " (too many open files: raise `ulimit -n`)",
        _ => "",
    }
}

impl ProbeSet {
    /// Opens every probe of `plan` on every online CPU and enables them, all or nothing.
    /// Events are kept for `pids` (more can be added with [`ProbeSet::add_pid`]).
    pub fn open(plan: &ProbePlan, pids: &[u32], opts: ProbeOptions) -> Result<ProbeSet> {
        let pmu = sys::uprobe_pmu().map_err(|e| {
            anyhow!(
                "no uprobe PMU ({e}): exact mode needs a kernel with CONFIG_UPROBE_EVENTS \
                 (/sys/bus/event_source/devices/uprobe)"
            )
        })?;
        let cpus = sys::online_cpus().context("reading the online CPUs")?;
        let path = CString::new(plan.probe_path.as_os_str().as_bytes())
            .context("probe path contains a NUL byte")?;
        anyhow::ensure!(
            opts.pages_per_cpu.is_power_of_two(),
            "pages_per_cpu must be a power of two"
        );
        sys::ensure_fd_limit((plan.points.len() * cpus.len()) as u64);

        let mut set = ProbeSet {
            events: Vec::new(),
            rings: Vec::new(),
            layouts: HashMap::new(),
            pids: pids.iter().copied().collect(),
            merger: Merger::default(),
            stats: ProbeStats::default(),
            scratch: Vec::new(),
            records: Vec::new(),
            opts: opts.clone(),
        };
        for &cpu in &cpus {
            let mut leader: Option<RawFd> = None;
            for point in &plan.points {
                let layout = EventLayout::new(point.kind, point.tstate_reg);
                let spec = sys::UprobeSpec {
                    pmu,
                    path: &path,
                    offset: point.file_offset,
                    retprobe: point.kind == ProbeKind::TakeReturn,
                    sample_type: layout.sample_type(),
                    regs_mask: layout.regs_mask,
                    wakeup_bytes: opts.wakeup_bytes,
                };
                let fd = sys::open_uprobe(&spec, cpu).map_err(|e| {
                    anyhow!(
                        "perf_event_open(uprobe {}+{:#x} for {} on CPU {cpu}): {e}{}",
                        plan.probe_path.display(),
                        point.file_offset,
                        point.function,
                        permission_hint(&e)
                    )
                })?;
                let id = sys::event_id(&fd).context("PERF_EVENT_IOC_ID")?;
                set.layouts.insert(id, layout);
                match leader {
                    None => {
                        let buf = sys::RingBuffer::map(&fd, opts.pages_per_cpu).map_err(|e| {
                            anyhow!(
                                "mapping the ring buffer of CPU {cpu}: {e} (locked-memory limit? \
                                 see /proc/sys/kernel/perf_event_mlock_kb)"
                            )
                        })?;
                        leader = Some(fd.as_raw_fd());
                        set.rings.push(Ring {
                            cpu,
                            fd: fd.as_raw_fd(),
                            buf,
                        });
                    }
                    Some(l) => sys::set_output(&fd, l).context("PERF_EVENT_IOC_SET_OUTPUT")?,
                }
                set.events.push(Event { fd });
            }
        }
        for e in &set.events {
            sys::enable(&e.fd).context("PERF_EVENT_IOC_ENABLE")?;
        }
        set.stats.enabled_ns = monotonic_ns();
        set.stats.perf_fds = set.events.len();
        set.stats.ring_buffers = set.rings.len();
        Ok(set)
    }

    pub fn add_pid(&mut self, pid: u32) {
        self.pids.insert(pid);
    }

    pub fn remove_pid(&mut self, pid: u32) {
        self.pids.remove(&pid);
    }

    pub fn pids(&self) -> impl Iterator<Item = u32> + '_ {
        self.pids.iter().copied()
    }

    /// Waits until some buffer reached its watermark or `timeout` passed.
    pub fn wait(&self, timeout: Duration) -> Result<bool> {
        let fds: Vec<RawFd> = self.rings.iter().map(|r| r.fd).collect();
        Ok(sys::poll_any(
            &fds,
            timeout.as_millis().min(i32::MAX as u128) as i32,
        )?)
    }

    /// Reads every ring buffer and returns the target's events older than the hold-back
    /// window, in time order.
    pub fn drain(&mut self) -> Vec<ExactEvent> {
        let now = monotonic_ns();
        self.read_rings();
        self.merger
            .release(now.saturating_sub(self.opts.hold_back_ns))
    }

    /// Disables the probes, reads what is left and returns every remaining event.
    pub fn finish(&mut self) -> Vec<ExactEvent> {
        for e in &self.events {
            let _ = sys::disable(&e.fd);
        }
        self.read_rings();
        self.merger.release_all()
    }

    fn read_rings(&mut self) {
        for ring in &mut self.rings {
            self.scratch.clear();
            ring.buf.read_into(&mut self.scratch);
            self.records.clear();
            let _ = ring.cpu;
            records::decode_all(
                &self.scratch,
                &self.layouts,
                &mut self.records,
                &mut self.stats.decode_errors,
            );
            for r in self.records.drain(..) {
                match r {
                    Record::Event(e) if self.pids.contains(&e.pid) => {
                        self.stats.events += 1;
                        match e.kind {
                            super::EventKind::TakeEnter { .. } => self.stats.take_enter += 1,
                            super::EventKind::TakeReturn => self.stats.take_return += 1,
                            super::EventKind::Drop { .. } => self.stats.drops += 1,
                        }
                        self.merger.push([e]);
                    }
                    Record::Event(_) => self.stats.foreign += 1,
                    Record::Lost { count } => self.stats.lost += count,
                    Record::Other(_) => {}
                }
            }
        }
    }

    pub fn stats(&self) -> &ProbeStats {
        &self.stats
    }

    /// Raw descriptors of the perf events (tests check they are closed after drop).
    pub fn raw_fds(&self) -> Vec<RawFd> {
        self.events.iter().map(|e| e.fd.as_raw_fd()).collect()
    }
}

impl Drop for ProbeSet {
    fn drop(&mut self) {
        for e in &self.events {
            let _ = sys::disable(&e.fd);
        }
        // Unmap the buffers, then close the descriptors (the kernel removes the uprobes).
        self.rings.clear();
        self.events.clear();
    }
}

/// Capability bit of CAP_SYS_ADMIN (linux/capability.h).
const CAP_SYS_ADMIN: u32 = 21;

/// Whether this process can open uprobes at all: the uprobe PMU exists and we have
/// CAP_SYS_ADMIN (root). CAP_PERFMON is not enough for the uprobe PMU (checked on Linux 6.18:
/// EACCES with CAP_PERFMON + CAP_SYS_PTRACE, success with CAP_SYS_ADMIN + CAP_SYS_PTRACE).
/// Cheap; no probe is opened.
pub fn check_support() -> Result<(), super::NoExactReason> {
    if let Err(e) = sys::uprobe_pmu() {
        return Err(super::NoExactReason {
            reason: format!(
                "exact mode unavailable: the kernel has no uprobe PMU \
                 (/sys/bus/event_source/devices/uprobe: {e})"
            ),
            enable: "a kernel built with CONFIG_UPROBE_EVENTS=y".into(),
        });
    }
    let cap_eff = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0);
    if cap_eff & (1u64 << CAP_SYS_ADMIN) == 0 {
        return Err(super::NoExactReason {
            reason: "exact mode unavailable: uprobes need root (CAP_SYS_ADMIN)".into(),
            enable: "run gilscope with sudo, or grant it CAP_SYS_ADMIN and CAP_SYS_PTRACE \
                     (`setcap cap_sys_admin,cap_sys_ptrace+ep gilscope`)"
                .into(),
        });
    }
    Ok(())
}

/// Number of open perf event descriptors of this process (from /proc/self/fd).
pub fn open_perf_fds() -> usize {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    dir.flatten()
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().contains("perf_event"))
        })
        .count()
}
