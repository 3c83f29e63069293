//! Probes armed at launch: `gilscope check` launches its command held at the moment its
//! Python is mapped ([`crate::reader::launch`]) and opens the probes there, on the one
//! thread the process has, so that exact mode sees every GIL transition from the first
//! Python instruction on. Threads started later are added as the snapshots show them, as in
//! any exact recording.

use std::time::Duration;

use super::{check_support, resolve_gil_probes, ProbeOptions, ProbeSet};
use crate::reader::launch::PythonFile;

/// Probes opened before the command ran, waiting for the recorder.
pub struct Prearmed {
    pub set: ProbeSet,
    /// Probe points whose hits the kernel single-steps (dearer), and all of them.
    pub stepped_points: (usize, usize),
    /// The file probed, as the reader will name it.
    pub file: PythonFile,
    /// How long the command was held at launch (the set-up cost).
    pub held: Duration,
}

impl Prearmed {
    /// Whether these probes are for the Python `binary` (as `Reader::python().binary`
    /// names it) of version 3.`minor`.
    pub fn matches(&self, binary: &str, minor: u32, free_threaded: bool) -> bool {
        self.file.binary == binary
            && self.file.minor == minor
            && self.file.free_threaded == free_threaded
    }
}

/// Resolves and opens the GIL probes for the held process of `file` (its main thread, the
/// only one). `held` is filled in by the caller once the process is released.
pub fn arm(file: &PythonFile) -> Result<Prearmed, String> {
    check_support().map_err(|r| format!("{} ({})", r.reason, r.enable))?;
    let plan = resolve_gil_probes(file.pid, &file.binary, file.minor, file.free_threaded)
        .map_err(|r| format!("{} ({})", r.reason, r.enable))?;
    let stepped_points = super::stepped_points(&plan);
    let ticks = crate::reader::procfs::tasks(file.pid)
        .ok()
        .and_then(|ts| ts.iter().find(|t| t.tid == file.pid).map(|t| t.start_ticks))
        .ok_or_else(|| format!("process {} is gone", file.pid))?;
    // Nothing drains the ring until the reader attaches after start-up (imports release the
    // GIL at every file read: a pyenv shim's start filled the default 256 KiB and lost 404
    // records), so the launched thread gets 2 MiB (~37 000 records); threads after the
    // second get the default size, as in any set.
    let defaults = ProbeOptions::default();
    let opts = ProbeOptions {
        pages_per_thread: defaults.pages_per_thread * 8,
        big_rings: 2,
        ..defaults
    };
    let set = ProbeSet::open(&plan, file.pid, &[(file.pid, ticks)], opts)
        .map_err(|e| format!("cannot open the uprobes: {e:#}"))?;
    Ok(Prearmed {
        set,
        stepped_points,
        file: file.clone(),
        held: Duration::ZERO,
    })
}
