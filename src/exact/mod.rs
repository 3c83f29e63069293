//! Exact mode: GIL transitions from uprobes instead of sampling.
//!
//! Data flow (see docs/exact-mode.md):
//!
//! ```text
//! symbols::resolve_gil_probes      where take_gil / drop_gil are in the target's ELF file
//!        │  ProbePlan (file offsets, which register holds the thread state)
//!        ▼
//! probes::ProbeSet::open           uprobes on the uprobe PMU, one event per probe point per
//!        │  sync_threads(snapshot)   thread of the target (pid = TID: nothing else is
//!        │                         trapped), one ring buffer per thread (OS access: sys.rs)
//!        │  drain() → Vec<ExactEvent> (decoded by the pure `records` module, merged in time
//!        ▼                         order across threads)
//! machine::Machine                 pure: per-thread waiting / held / not-holding intervals
//! ```
//!
//! Everything the kernel creates for a probe belongs to a perf file descriptor: when the
//! descriptors close (drop of the [`probes::ProbeSet`], exit, any signal that kills gilscope)
//! the kernel removes the probes. Nothing is ever written to tracefs `uprobe_events`.

pub mod launch;
pub mod live;
pub mod machine;
pub mod probes;
pub mod records;
pub mod symbols;
pub(crate) mod sys;

pub use launch::Prearmed;
pub use live::LiveExact;
pub use machine::{
    totals_by_thread, tstate_map_from_snapshot, Interval, IntervalKind, Machine, Totals,
    TstateInfo, TstateMap,
};
pub use probes::{
    calibrate, calibrated, check_support, open_perf_fds, start_calibration, HitCost, ProbeOptions,
    ProbeSet, ProbeStats, SyncReport,
};
pub use symbols::{
    resolve_gil_probes, resolve_gil_probes_in_file, NoExactReason, PerfReg, ProbeKind, ProbePlan,
    ProbePoint,
};

/// One GIL transition seen by a probe, on the sampler's clock (CLOCK_MONOTONIC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExactEvent {
    pub time_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub cpu: u32,
    pub kind: EventKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Entry of `take_gil`: the thread starts waiting. `tstate` is its argument.
    TakeEnter { tstate: u64 },
    /// Return of `take_gil`: the thread holds the GIL from now on.
    TakeReturn,
    /// Entry of `drop_gil` (or an inlined copy): the thread releases the GIL.
    /// `tstate` when the probe point knows where the argument is (it may be NULL at a
    /// final release).
    Drop { tstate: Option<u64> },
}

/// The cost of one probe hit to the target, measured on the project's machine (x86_64 VM,
/// Linux 6.18: 3–6 µs, the uretprobe on `take_gil` being the dearest): see docs/exact-mode.md
/// ("Overhead"). Used for the run-time warning.
pub const MEASURED_NS_PER_EVENT: u64 = 4_000;

/// Event rate above which exact mode costs the target more than ~5% of one CPU
/// (12 500 events/s at 4 µs each).
pub const EXPENSIVE_EVENTS_PER_SEC: f64 = 0.05 * 1e9 / MEASURED_NS_PER_EVENT as f64;

/// (points the kernel single-steps, all points) of `plan`, for what a hit costs.
pub fn stepped_points(plan: &ProbePlan) -> (usize, usize) {
    let stepped = plan.points.iter().filter(|p| p.stepped).count();
    (stepped, plan.points.len())
}

/// A one-line warning when the target's `events_per_sec` at `ns_per_event` each cost it more
/// than ~5% of one CPU, else `None`.
pub fn cost_warning(events_per_sec: f64, ns_per_event: u64) -> Option<String> {
    let cpu_share = events_per_sec * ns_per_event as f64 / 1e9;
    if cpu_share < 0.05 {
        return None;
    }
    Some(format!(
        "exact mode: {events_per_sec:.0} GIL events/s cost the target about {:.0}% of a CPU \
         (~{:.1} µs per event); use --mode sample for a cheaper view",
        cpu_share * 100.0,
        ns_per_event as f64 / 1000.0
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_warning_threshold() {
        assert!(cost_warning(1000.0, MEASURED_NS_PER_EVENT).is_none());
        let w = cost_warning(200_000.0, MEASURED_NS_PER_EVENT).expect("warning");
        assert!(w.contains("200000 GIL events/s"), "{w}");
    }
}
