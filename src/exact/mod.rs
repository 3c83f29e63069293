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

/// The least the probes of `points` would cost the target, as a fraction of one CPU, at
/// `handovers_per_sec` GIL hand-overs (CPython's `switch_number` rate): each hand-over is at
/// least three hits, the old holder's `drop_gil` and the new holder's `take_gil` entry and
/// return, each priced as the kernel takes that point (single-stepped or emulated; for a
/// kind with several points, such as `drop_gil`'s inlined copies, their mean). A floor: a
/// thread that drops and takes the GIL back with nobody else wanting it is no hand-over.
pub fn handover_cost_share(points: &[ProbePoint], cost: HitCost, handovers_per_sec: f64) -> f64 {
    let price = |p: &ProbePoint| {
        if p.stepped && p.kind != ProbeKind::TakeReturn {
            cost.stepped_ns
        } else {
            cost.emulated_ns
        }
    };
    let per_handover: f64 = [ProbeKind::Drop, ProbeKind::TakeEnter, ProbeKind::TakeReturn]
        .iter()
        .map(|kind| {
            let of_kind: Vec<u64> = points
                .iter()
                .filter(|p| p.kind == *kind)
                .map(price)
                .collect();
            if of_kind.is_empty() {
                0.0
            } else {
                of_kind.iter().sum::<u64>() as f64 / of_kind.len() as f64
            }
        })
        .sum();
    handovers_per_sec.max(0.0) * per_handover / 1e9
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

    fn point(kind: ProbeKind, stepped: bool) -> ProbePoint {
        ProbePoint {
            kind,
            function: "f".into(),
            vaddr: 0,
            file_offset: 0,
            tstate_reg: None,
            found_by: "symtab",
            stepped,
        }
    }

    #[test]
    fn handover_cost_prices_each_kind_as_the_kernel_takes_it() {
        let cost = HitCost {
            emulated_ns: 1_000,
            stepped_ns: 30_000,
        };
        let emulated = [
            point(ProbeKind::TakeEnter, false),
            point(ProbeKind::TakeReturn, false),
            point(ProbeKind::Drop, false),
        ];
        // 1 000 hand-overs/s × 3 emulated hits × 1 µs = 0.3 % of a CPU.
        let share = handover_cost_share(&emulated, cost, 1_000.0);
        assert!((share - 0.003).abs() < 1e-12, "{share}");
        // drop_gil in two inlined copies, one single-stepped: their mean, 15.5 µs; a stepped
        // flag on the uretprobe means nothing (its return trap is emulated).
        let mixed = [
            point(ProbeKind::TakeEnter, false),
            point(ProbeKind::TakeReturn, true),
            point(ProbeKind::Drop, false),
            point(ProbeKind::Drop, true),
        ];
        let share = handover_cost_share(&mixed, cost, 1_000.0);
        assert!((share - 0.0175).abs() < 1e-12, "{share}");
        assert_eq!(handover_cost_share(&mixed, cost, 0.0), 0.0);
        assert_eq!(handover_cost_share(&[], cost, 1e6), 0.0);
    }

    #[test]
    fn cost_warning_threshold() {
        assert!(cost_warning(1000.0, MEASURED_NS_PER_EVENT).is_none());
        let w = cost_warning(200_000.0, MEASURED_NS_PER_EVENT).expect("warning");
        assert!(w.contains("200000 GIL events/s"), "{w}");
    }
}
