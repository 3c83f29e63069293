//! Opening the GIL uprobes on the target's threads and draining their ring buffers.
//!
//! One perf event per probe point per **thread of the target** (`pid = TID`, `cpu = -1`,
//! no `inherit`): the kernel's uprobe filter places the breakpoint only in the address space
//! of the tasks the events are attached to, so no other process — not even one mapping the
//! same libpython — is trapped (perf-facts.md, "Confining uprobes to the target"). Never a
//! system-wide event (it traps every process of the same build) and never `inherit` with a
//! sampling period (it breaks the target's `clone()`).
//!
//! Events are opened as threads are discovered ([`ProbeSet::sync_threads`], fed by the
//! sampler's snapshots): a new thread's GIL transitions before its events are open are not
//! seen (the samples cover that gap). All events of one thread write into that thread's one
//! ring buffer (`PERF_EVENT_IOC_SET_OUTPUT`; the kernel allows sharing a buffer between
//! `cpu = -1` events only within one task). The events of a thread that exited (its
//! descriptor reports POLLHUP) are drained and closed.
//!
//! Cleanup: the kernel creates PMU uprobes per event and removes them when the event's file
//! descriptor is closed, so dropping a [`ProbeSet`] (or the process dying in any way) leaves
//! no probe behind; `Drop` also disables the events first.

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

use super::records::{self, EventLayout, Merger, Record};
use super::symbols::{ProbeKind, ProbePlan};
use super::sys;
use super::ExactEvent;
use crate::reader::monotonic_ns;

#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// Data pages of each thread's ring buffer (a power of two) for the first
    /// `big_rings` threads probed at a time; later threads get `pages_per_thread / 8` (at least
    /// 1), so that locked memory stays bounded with thousands of threads.
    pub pages_per_thread: usize,
    pub big_rings: usize,
    /// A thread that appeared after the start is probed once it has been seen for this long
    /// (sampled until then): short-lived threads cost more to probe than they tell (see
    /// `max_close_backlog`).
    pub min_age_ns: u64,
    /// Closing a uprobe event waits for a kernel grace period (~70 ms each here, one at a
    /// time, and opening waits behind it): while more descriptors than this wait to be
    /// closed, no new thread is probed (it stays sampled). Bounds the cost of thread churn.
    pub max_close_backlog: usize,
    /// Events younger than this (at drain time) are held back so that buffers read later in
    /// the same drain can deliver older ones first.
    pub hold_back_ns: u64,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        Self {
            pages_per_thread: 64, // 256 KiB: ~4 600 records, drained every sample
            big_rings: 16,
            min_age_ns: 100_000_000,
            max_close_backlog: 32,
            hold_back_ns: 2_000_000,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeStats {
    /// Events of the target delivered so far (`take_enter + take_return + drops`).
    pub events: u64,
    /// Probe hits of any other process (dropped). With per-thread events the kernel delivers
    /// none; counted to prove it.
    pub foreign: u64,
    /// Probe hits by the PID the kernel reported (the target's, and any other: see `foreign`).
    pub hits_by_pid: BTreeMap<u32, u64>,
    /// Of `events`, those whose hit the kernel single-stepped (a dearer trap).
    pub stepped: u64,
    /// Records the kernel dropped because a ring buffer was full.
    pub lost: u64,
    /// Records that could not be decoded.
    pub decode_errors: u64,
    /// Entries of `take_gil` (a thread starts waiting).
    pub take_enter: u64,
    /// Returns of `take_gil` (a thread holds the GIL).
    pub take_return: u64,
    /// Entries of `drop_gil` or an inlined copy (a thread releases the GIL).
    pub drops: u64,
    /// When the probes were enabled (CLOCK_MONOTONIC ns).
    pub enabled_ns: u64,
    /// perf events (file descriptors) and ring buffers open now.
    pub perf_fds: usize,
    pub ring_buffers: usize,
    /// Threads probed now, and in all (opened), closed after their exit, failed to open.
    pub threads_probed: usize,
    pub threads_opened: u64,
    pub threads_closed: u64,
    pub threads_failed: u64,
    /// Snapshots in which a thread old enough was left sampled because closing other threads'
    /// events was still under way (`ProbeOptions::max_close_backlog`).
    pub threads_deferred: u64,
    /// The last reason a thread's events could not be opened.
    pub last_failure: Option<String>,
}

impl ProbeStats {
    /// Target events per second since the probes were enabled.
    pub fn rate(&self, now_ns: u64) -> f64 {
        let secs = now_ns.saturating_sub(self.enabled_ns) as f64 / 1e9;
        if secs <= 0.0 {
            0.0
        } else {
            self.events as f64 / secs
        }
    }
}

/// The events of one thread: one per probe point, all writing into `ring`.
struct ThreadProbes {
    tid: u32,
    enabled_ns: u64,
    start_ticks: u64,
    ring: sys::RingBuffer,
    events: Vec<OwnedFd>,
    /// Event id → layout of each event (for decoding its records).
    layouts: Vec<(u64, EventLayout)>,
}

/// A probe point ready to open: its spec without the thread.
struct Point {
    kind: ProbeKind,
    offset: u64,
    function: String,
    layout: EventLayout,
}

/// What is needed to open the probes on one more thread (shared with the worker thread).
struct Opener {
    pmu: sys::UprobePmu,
    path: CString,
    probe_path: PathBuf,
    points: Vec<Point>,
    pid: u32,
}

impl Opener {
    /// Opens and enables the probes on one thread. `Ok(None)`: the thread is gone (or its TID
    /// now names another thread), nothing left open.
    /// Whatever was opened before a failure goes to `discard` (closing takes a grace period).
    fn open_thread(
        &self,
        tid: u32,
        start_ticks: u64,
        pages: usize,
        discard: &dyn Fn(Vec<sys::RingBuffer>, Vec<OwnedFd>),
    ) -> Result<Option<ThreadProbes>> {
        let mut events: Vec<OwnedFd> = Vec::with_capacity(self.points.len());
        let mut layouts = Vec::with_capacity(self.points.len());
        let mut ring = None;
        for point in &self.points {
            let spec = sys::UprobeSpec {
                pmu: self.pmu,
                path: &self.path,
                offset: point.offset,
                retprobe: point.kind == ProbeKind::TakeReturn,
                sample_type: point.layout.sample_type(),
                regs_mask: point.layout.regs_mask,
                // Wake a waiting reader when the buffer is half full.
                wakeup_bytes: (pages * sys::page_size() / 2) as u32,
            };
            let fd = match sys::open_uprobe(&spec, tid) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                    discard(ring.into_iter().collect(), events);
                    return Ok(None);
                }
                Err(e) => {
                    discard(ring.into_iter().collect(), events);
                    return Err(anyhow!(
                        "perf_event_open(uprobe {}+{:#x} for {} on thread {tid}): {e}{}",
                        self.probe_path.display(),
                        point.offset,
                        point.function,
                        permission_hint(&e)
                    ));
                }
            };
            layouts.push((
                sys::event_id(&fd).context("PERF_EVENT_IOC_ID")?,
                point.layout,
            ));
            match &ring {
                None => match sys::RingBuffer::map(&fd, pages) {
                    Ok(buf) => ring = Some(buf),
                    Err(e) => {
                        events.push(fd);
                        discard(Vec::new(), events);
                        return Err(anyhow!(
                            "mapping the ring buffer of thread {tid}: {e} (locked-memory \
                             limit? see /proc/sys/kernel/perf_event_mlock_kb)"
                        ));
                    }
                },
                Some(_) => {
                    let leader = events.first().map(|l| l.as_raw_fd()).unwrap_or(-1);
                    sys::set_output(&fd, leader).context("PERF_EVENT_IOC_SET_OUTPUT")?;
                }
            }
            events.push(fd);
        }
        let Some(ring) = ring else {
            return Ok(None); // a plan without points
        };
        // The events hold the task that had this TID when they were opened: make sure it is
        // the target's thread (a TID can be reused by any process) before enabling anything.
        if task_start_ticks(self.pid, tid) != Some(start_ticks) {
            discard(vec![ring], events);
            return Ok(None);
        }
        for fd in &events {
            sys::enable(fd).context("PERF_EVENT_IOC_ENABLE")?;
        }
        let enabled_ns = monotonic_ns();
        Ok(Some(ThreadProbes {
            tid,
            enabled_ns,
            start_ticks,
            ring,
            events,
            layouts,
        }))
    }
}

/// Unmaps the buffers, then closes the descriptors one after the other, in the order given.
/// The kernel waits for RCU grace periods when a uprobe event is closed, holding a lock
/// that every other close waits on: ~70-100 ms a descriptor, one at a time whether they are
/// closed from one thread or many (measured on Linux 6.18: 22 closes started together ended
/// 70-100 ms apart). A breakpoint leaves the target only when the last event on it is
/// closed, so the order is what decides how soon the hot ones go (see [`leftover`]).
fn close_in_order(rings: Vec<sys::RingBuffer>, fds: Vec<OwnedFd>) {
    drop(rings);
    for fd in fds {
        drop(fd);
    }
}

/// Buffers and descriptors to close.
type Leftover = (Vec<sys::RingBuffer>, Vec<OwnedFd>);

/// The threads' buffers, and their descriptors point by point: every thread's event on the
/// first probe point, then on the second... (each thread's events in the order of its
/// `events`), so that each point's breakpoint leaves the target as early as it can.
fn leftover(threads: Vec<ThreadProbes>) -> Leftover {
    let mut rings = Vec::new();
    let mut columns: Vec<std::vec::IntoIter<OwnedFd>> = Vec::new();
    for t in threads {
        rings.push(t.ring);
        columns.push(t.events.into_iter());
    }
    let mut fds = Vec::new();
    loop {
        let before = fds.len();
        fds.extend(columns.iter_mut().filter_map(|c| c.next()));
        if fds.len() == before {
            return (rings, fds);
        }
    }
}

fn close_threads(threads: Vec<ThreadProbes>) {
    let (rings, fds) = leftover(threads);
    close_in_order(rings, fds);
}

enum Job {
    Open { tid: u32, ticks: u64, pages: usize },
    Close(Vec<ThreadProbes>),
}

type Opened = (u32, u64, Result<Option<ThreadProbes>>);

/// Opens and closes threads' probes off the sampling thread (opening costs milliseconds,
/// closing a grace period).
struct Worker {
    tx: Option<mpsc::Sender<Job>>,
    rx: mpsc::Receiver<Opened>,
    /// Descriptors handed over for closing and not closed yet.
    backlog: Arc<AtomicUsize>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Worker {
    fn start(opener: Arc<Opener>) -> Result<Worker> {
        let (tx, jobs) = mpsc::channel::<Job>();
        let (done, rx) = mpsc::channel::<Opened>();
        // Closing waits for grace periods: a closer thread of its own, so that opening a new
        // thread's probes never waits behind it.
        let (close_tx, closes) = mpsc::channel::<Leftover>();
        let backlog = Arc::new(AtomicUsize::new(0));
        let (backlog_c, backlog_w) = (backlog.clone(), backlog.clone());
        let closer = std::thread::Builder::new()
            .name("gilscope-close".into())
            .spawn(move || {
                while let Ok((mut rings, mut fds)) = closes.recv() {
                    // Closes queued meanwhile share one grace period.
                    while let Ok((r, f)) = closes.try_recv() {
                        rings.extend(r);
                        fds.extend(f);
                    }
                    let n = fds.len();
                    close_in_order(rings, fds);
                    backlog_c.fetch_sub(n, Ordering::Relaxed);
                }
            })
            .context("starting the probe closing thread")?;
        let handle = std::thread::Builder::new()
            .name("gilscope-probes".into())
            .spawn(move || {
                let discard = |rings: Vec<sys::RingBuffer>, fds: Vec<OwnedFd>| {
                    backlog_w.fetch_add(fds.len(), Ordering::Relaxed);
                    if let Err(mpsc::SendError((r, f))) = close_tx.send((rings, fds)) {
                        backlog_w.fetch_sub(f.len(), Ordering::Relaxed);
                        close_in_order(r, f);
                    }
                };
                while let Ok(job) = jobs.recv() {
                    match job {
                        Job::Open { tid, ticks, pages } => {
                            let r = opener.open_thread(tid, ticks, pages, &discard);
                            if let Err(mpsc::SendError((_, _, Ok(Some(t))))) =
                                done.send((tid, ticks, r))
                            {
                                let (r, f) = leftover(vec![t]);
                                discard(r, f);
                            }
                        }
                        Job::Close(ts) => {
                            let (r, f) = leftover(ts);
                            discard(r, f);
                        }
                    }
                }
                drop(close_tx);
                let _ = closer.join();
            })
            .context("starting the probe thread")?;
        Ok(Worker {
            tx: Some(tx),
            rx,
            backlog,
            handle: Some(handle),
        })
    }

    /// Queues `job`; without a worker a close is done here.
    fn send(&self, job: Job) {
        let job = match &self.tx {
            Some(tx) => match tx.send(job) {
                Ok(()) => return,
                Err(mpsc::SendError(job)) => job,
            },
            None => job,
        };
        if let Job::Close(ts) = job {
            close_threads(ts);
        }
    }

    /// Stops the worker after its queued jobs; threads it opened meanwhile are closed.
    fn stop(&mut self) {
        self.tx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        let late: Vec<ThreadProbes> = self
            .rx
            .try_iter()
            .filter_map(|(_, _, r)| r.ok().flatten())
            .collect();
        close_threads(late);
    }
}

/// Open GIL probes on a set of the target's threads. Dropping it removes them.
pub struct ProbeSet {
    opener: Arc<Opener>,
    worker: Worker,
    /// Threads whose probes the worker is opening.
    opening: HashMap<u32, u64>,
    /// When each not-yet-probed thread was first listed: (start_ticks, time).
    first_listed: HashMap<u32, (u64, u64)>,
    /// When each probed thread's events were enabled (its exact period starts there).
    probed_since: HashMap<u32, u64>,
    /// Threads whose probes could not be opened (gone, or an error): not tried again.
    given_up: std::collections::HashSet<(u32, u64)>,
    threads: BTreeMap<u32, ThreadProbes>,
    layouts: HashMap<u64, EventLayout>,
    merger: Merger,
    stats: ProbeStats,
    scratch: Vec<u8>,
    records: Vec<Record>,
    /// Hits delivered per probe point (index in the plan).
    hits_by_point: Vec<u64>,
    opts: ProbeOptions,
    finished: bool,
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

/// The start time of `/proc/PID/task/TID` (field 22 of its stat), when that thread is there.
fn task_start_ticks(pid: u32, tid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    crate::reader::procfs::parse_stat(&text).map(|s| s.start_ticks)
}

/// What [`ProbeSet::sync_threads`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Threads whose probes were opened (by the worker) since the last call.
    pub opened: usize,
    /// Threads whose probes were asked for.
    pub requested: usize,
    pub closed: usize,
    pub failed: usize,
}

impl ProbeSet {
    /// Opens every probe of `plan` on each of `threads` (`(TID, start_ticks)`, all of process
    /// `pid`) and enables them, before returning. Threads that exit meanwhile are skipped; a
    /// failure on every thread (no privilege, no file, …) fails the whole set.
    pub fn open(
        plan: &ProbePlan,
        pid: u32,
        threads: &[(u32, u64)],
        opts: ProbeOptions,
    ) -> Result<ProbeSet> {
        let pmu = sys::uprobe_pmu().map_err(|e| {
            anyhow!(
                "no uprobe PMU ({e}): exact mode needs a kernel with CONFIG_UPROBE_EVENTS \
                 (/sys/bus/event_source/devices/uprobe)"
            )
        })?;
        let path = CString::new(plan.probe_path.as_os_str().as_bytes())
            .context("probe path contains a NUL byte")?;
        anyhow::ensure!(
            opts.pages_per_thread.is_power_of_two(),
            "pages_per_thread must be a power of two"
        );
        let points = plan
            .points
            .iter()
            .enumerate()
            .map(|(i, p)| Point {
                kind: p.kind,
                offset: p.file_offset,
                function: p.function.clone(),
                layout: EventLayout::new(p.kind, p.tstate_reg)
                    .stepped(p.stepped)
                    .at_point(i),
            })
            .collect();
        let opener = Arc::new(Opener {
            pmu,
            path,
            probe_path: plan.probe_path.clone(),
            points,
            pid,
        });
        let mut set = ProbeSet {
            worker: Worker::start(opener.clone())?,
            opener,
            opening: HashMap::new(),
            first_listed: HashMap::new(),
            probed_since: HashMap::new(),
            given_up: Default::default(),
            threads: BTreeMap::new(),
            layouts: HashMap::new(),
            merger: Merger::default(),
            stats: ProbeStats::default(),
            scratch: Vec::new(),
            records: Vec::new(),
            hits_by_point: vec![0; plan.points.len()],
            opts,
            finished: false,
        };
        set.stats.enabled_ns = monotonic_ns();
        let mut first_error = None;
        for &(tid, ticks) in threads {
            sys::ensure_fd_limit((set.stats.perf_fds + set.opener.points.len()) as u64);
            let r = set
                .opener
                .open_thread(tid, ticks, set.pages_for_next(), &close_in_order);
            match set.opened(tid, r) {
                Ok(()) => {}
                Err(e) if first_error.is_none() => first_error = Some(e),
                Err(_) => {}
            }
        }
        if set.threads.is_empty() {
            if let Some(e) = first_error {
                return Err(e);
            }
            anyhow::ensure!(
                threads.is_empty(),
                "no thread of process {pid} could be probed (all exited?)"
            );
        }
        Ok(set)
    }

    fn pages_for_next(&self) -> usize {
        if self.threads.len() + self.opening.len() < self.opts.big_rings {
            self.opts.pages_per_thread
        } else {
            (self.opts.pages_per_thread / 8).max(1)
        }
    }

    /// Takes the outcome of opening a thread's probes into the set.
    fn opened(&mut self, tid: u32, r: Result<Option<ThreadProbes>>) -> Result<()> {
        match r {
            Ok(Some(t)) if self.finished => self.worker.send(Job::Close(vec![t])),
            Ok(Some(t)) => {
                for (id, l) in &t.layouts {
                    self.layouts.insert(*id, *l);
                }
                self.stats.perf_fds += t.events.len();
                self.stats.ring_buffers += 1;
                self.stats.threads_opened += 1;
                self.probed_since.insert(tid, t.enabled_ns);
                if let Some(old) = self.threads.insert(tid, t) {
                    self.close_thread(old);
                }
            }
            Ok(None) => {}
            Err(e) => {
                self.stats.threads_failed += 1;
                self.stats.last_failure = Some(format!("{e:#}"));
                self.stats.threads_probed = self.threads.len();
                return Err(e);
            }
        }
        self.stats.threads_probed = self.threads.len();
        Ok(())
    }

    /// Brings the probed threads in line with the threads a snapshot listed
    /// (`(TID, start_ticks)`): asks the worker to open the new ones (and a TID that names a
    /// new thread), takes in what it opened, and drains and closes the threads that exited
    /// (POLLHUP). A thread absent from the list but alive keeps its events (a torn snapshot
    /// must not cost it its probes). Never blocks on the kernel's open or close.
    pub fn sync_threads(&mut self, present: &[(u32, u64)]) -> SyncReport {
        let mut report = SyncReport::default();
        if self.finished {
            return report;
        }
        let done: Vec<Opened> = self.worker.rx.try_iter().collect();
        for (tid, ticks, r) in done {
            if self.opening.get(&tid) == Some(&ticks) {
                self.opening.remove(&tid);
            }
            if !matches!(r, Ok(Some(_))) {
                self.given_up.insert((tid, ticks));
            }
            match self.opened(tid, r) {
                Ok(()) => report.opened += 1,
                Err(_) => report.failed += 1,
            }
        }
        let now = monotonic_ns();
        let busy_closing =
            self.worker.backlog.load(Ordering::Relaxed) > self.opts.max_close_backlog;
        let mut listed = HashMap::with_capacity(present.len());
        for &(tid, ticks) in present {
            if self
                .threads
                .get(&tid)
                .is_some_and(|t| t.start_ticks == ticks)
                || self.opening.get(&tid) == Some(&ticks)
                || self.given_up.contains(&(tid, ticks))
            {
                continue;
            }
            let seen = match self.first_listed.get(&tid) {
                Some(&(t, at)) if t == ticks => at,
                _ => now,
            };
            listed.insert(tid, (ticks, seen));
            if now.saturating_sub(seen) < self.opts.min_age_ns {
                continue;
            }
            if busy_closing {
                self.stats.threads_deferred += 1;
                continue;
            }
            listed.remove(&tid);
            sys::ensure_fd_limit(
                (self.stats.perf_fds + (self.opening.len() + 1) * self.opener.points.len()) as u64,
            );
            let pages = self.pages_for_next();
            self.opening.insert(tid, ticks);
            self.worker.send(Job::Open { tid, ticks, pages });
            report.requested += 1;
        }
        self.first_listed = listed;
        if !self.given_up.is_empty() {
            let now_listed: std::collections::HashSet<(u32, u64)> =
                present.iter().copied().collect();
            self.given_up.retain(|k| now_listed.contains(k));
        }
        let tids: Vec<u32> = self.threads.keys().copied().collect();
        let fds: Vec<i32> = self
            .threads
            .values()
            .map(|t| t.events.first().map_or(-1, |f| f.as_raw_fd()))
            .collect();
        if let Ok(hup) = sys::hung_up(&fds) {
            for (tid, gone) in tids.into_iter().zip(hup) {
                if gone {
                    if let Some(t) = self.threads.remove(&tid) {
                        self.close_thread(t);
                        report.closed += 1;
                    }
                }
            }
        }
        self.stats.threads_probed = self.threads.len();
        report
    }

    /// Reads what is left in a thread's buffer, then has the worker close its events.
    fn close_thread(&mut self, t: ThreadProbes) {
        let t = self.retire(t);
        self.worker.send(Job::Close(vec![t]));
    }

    /// Disables and drains `t`'s events and takes it out of the books (to be closed).
    fn retire(&mut self, mut t: ThreadProbes) -> ThreadProbes {
        for fd in &t.events {
            let _ = sys::disable(fd);
        }
        let mut bytes = std::mem::take(&mut self.scratch);
        bytes.clear();
        t.ring.read_into(&mut bytes);
        self.decode(&bytes);
        self.scratch = bytes;
        for (id, _) in &t.layouts {
            self.layouts.remove(id);
        }
        self.probed_since.remove(&t.tid);
        self.stats.perf_fds -= t.events.len();
        self.stats.ring_buffers -= 1;
        self.stats.threads_closed += 1;
        t
    }

    /// When `tid`'s probes were enabled, if they are open: its GIL transitions are seen from
    /// then on (before, only the samples know).
    pub fn probed_since(&self, tid: u32) -> Option<u64> {
        self.probed_since.get(&tid).copied()
    }

    pub fn pid(&self) -> u32 {
        self.opener.pid
    }

    /// The TIDs probed now.
    pub fn tids(&self) -> impl Iterator<Item = u32> + '_ {
        self.threads.keys().copied()
    }

    /// Waits until some buffer reached its watermark or `timeout` passed. (A buffer of a
    /// thread that exited reports at once, until [`ProbeSet::sync_threads`] closes it.)
    pub fn wait(&self, timeout: Duration) -> Result<bool> {
        let fds: Vec<i32> = self
            .threads
            .values()
            .filter_map(|t| t.events.first().map(|f| f.as_raw_fd()))
            .collect();
        if fds.is_empty() {
            std::thread::sleep(timeout);
            return Ok(false);
        }
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

    /// Disables the probes, reads what is left and returns every remaining event. The
    /// breakpoints stay until the set is dropped; no thread is added after this.
    pub fn finish(&mut self) -> Vec<ExactEvent> {
        self.finished = true;
        for t in self.threads.values() {
            for e in &t.events {
                let _ = sys::disable(e);
            }
        }
        self.read_rings();
        self.merger.release_all()
    }

    /// Disables and drains every event and has the worker close them (the kernel then
    /// removes the breakpoints from the target); returns what was left, like
    /// [`ProbeSet::finish`]. Used to detach in the middle of a recording.
    pub fn detach(&mut self) -> Vec<ExactEvent> {
        let mut rest = self.finish();
        let threads = std::mem::take(&mut self.threads);
        // The most hit points first: their breakpoints are what the target pays for until
        // the last event on them is closed (a grace period each, one at a time).
        let hits = self.hits_by_point.clone();
        let mut retired = Vec::with_capacity(threads.len());
        for (_, t) in threads {
            let mut t = self.retire(t);
            let mut paired: Vec<(OwnedFd, (u64, EventLayout))> =
                t.events.drain(..).zip(t.layouts.drain(..)).collect();
            paired.sort_by_key(|(_, (_, l))| std::cmp::Reverse(hits.get(l.point).copied()));
            (t.events, t.layouts) = paired.into_iter().unzip();
            retired.push(t);
        }
        if !retired.is_empty() {
            self.worker.send(Job::Close(retired));
        }
        self.stats.threads_probed = 0;
        rest.extend(self.merger.release_all());
        rest
    }

    fn read_rings(&mut self) {
        let mut bytes = std::mem::take(&mut self.scratch);
        bytes.clear();
        for t in self.threads.values_mut() {
            t.ring.read_into(&mut bytes);
        }
        self.decode(&bytes);
        self.scratch = bytes;
    }

    /// Decodes whole records (each buffer yields whole records) and counts them.
    fn decode(&mut self, bytes: &[u8]) {
        self.records.clear();
        records::decode_all(
            bytes,
            &self.layouts,
            &mut self.records,
            &mut self.stats.decode_errors,
        );
        for r in self.records.drain(..) {
            match r {
                Record::Event(e, layout) => {
                    *self.stats.hits_by_pid.entry(e.pid).or_insert(0) += 1;
                    if e.pid != self.opener.pid {
                        self.stats.foreign += 1;
                        continue;
                    }
                    self.stats.events += 1;
                    self.stats.stepped += u64::from(layout.stepped);
                    if let Some(n) = self.hits_by_point.get_mut(layout.point) {
                        *n += 1;
                    }
                    match e.kind {
                        super::EventKind::TakeEnter { .. } => self.stats.take_enter += 1,
                        super::EventKind::TakeReturn => self.stats.take_return += 1,
                        super::EventKind::Drop { .. } => self.stats.drops += 1,
                    }
                    self.merger.push([e]);
                }
                Record::Lost { count } => self.stats.lost += count,
                Record::Other(_) => {}
            }
        }
    }

    pub fn stats(&self) -> &ProbeStats {
        &self.stats
    }

    /// Raw descriptors of the perf events (tests check they are closed after drop).
    pub fn raw_fds(&self) -> Vec<i32> {
        self.threads
            .values()
            .flat_map(|t| t.events.iter().map(|e| e.as_raw_fd()))
            .collect()
    }
}

impl Drop for ProbeSet {
    fn drop(&mut self) {
        let threads: Vec<ThreadProbes> = std::mem::take(&mut self.threads).into_values().collect();
        for t in &threads {
            for e in &t.events {
                let _ = sys::disable(e);
            }
        }
        // Synchronously: when this returns, no breakpoint of this set is left in the target
        // (the worker's queued closes are waited for too).
        close_threads(threads);
        self.worker.stop();
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

// The two functions [`calibrate`] probes in gilscope's own executable, in assembly so that
// their first instruction is fixed: a push (which the kernel emulates at a hit) and a
// register move (which it copies out of line and single-steps). Both compute 3x + 1.
core::arch::global_asm!(
    ".pushsection .text.gilscope_calibration,\"ax\",@progbits",
    ".globl gilscope_calibration_push",
    ".type gilscope_calibration_push,@function",
    "gilscope_calibration_push:",
    "push rbx",
    "lea rax, [rdi + 2*rdi + 1]",
    "pop rbx",
    "ret",
    ".size gilscope_calibration_push, .-gilscope_calibration_push",
    ".globl gilscope_calibration_step",
    ".type gilscope_calibration_step,@function",
    "gilscope_calibration_step:",
    "mov rax, rdi",
    "lea rax, [rax + 2*rax + 1]",
    "ret",
    ".size gilscope_calibration_step, .-gilscope_calibration_step",
    ".popsection",
);

extern "C" {
    fn gilscope_calibration_push(x: u64) -> u64;
    fn gilscope_calibration_step(x: u64) -> u64;
}

/// `(path, file offset)` of the code at `addr` in this process (from /proc/self/maps).
fn own_file_offset(addr: u64) -> Result<(String, u64)> {
    let maps = std::fs::read_to_string("/proc/self/maps").context("reading /proc/self/maps")?;
    for l in maps.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 6 {
            continue;
        }
        let Some((a, b)) = f[0].split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end), Ok(off)) = (
            u64::from_str_radix(a, 16),
            u64::from_str_radix(b, 16),
            u64::from_str_radix(f[2], 16),
        ) else {
            continue;
        };
        if (start..end).contains(&addr) {
            let path = f[5..].join(" ");
            anyhow::ensure!(
                path.starts_with('/') && !path.ends_with("(deleted)"),
                "gilscope's own executable is not a plain file ({path})"
            );
            return Ok((path, addr - start + off));
        }
    }
    anyhow::bail!("{addr:#x} is not in /proc/self/maps")
}

/// What one probe hit costs the thread that hits it, on this machine and kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HitCost {
    /// A hit the kernel emulates (a push, a call or jump), or a uretprobe's return, ns.
    pub emulated_ns: u64,
    /// A hit on an instruction the kernel single-steps out of line (a second trap), ns.
    pub stepped_ns: u64,
}

impl HitCost {
    /// The built-in figures, when calibrating fails ([`super::MEASURED_NS_PER_EVENT`] for
    /// both: the figure of the first measurements here, which mixed the two).
    pub const FALLBACK: HitCost = HitCost {
        emulated_ns: super::MEASURED_NS_PER_EVENT,
        stepped_ns: super::MEASURED_NS_PER_EVENT,
    };

    /// What `stats`' events cost the target so far, ns: each delivered hit at its own cost,
    /// lost records (hits all the same) at the delivered ones' average.
    pub fn of(&self, stats: &ProbeStats) -> u64 {
        let stepped = stats.stepped.min(stats.events);
        let delivered = (stats.events - stepped).saturating_mul(self.emulated_ns)
            + stepped.saturating_mul(self.stepped_ns);
        let lost = if stats.events == 0 {
            stats.lost.saturating_mul(self.emulated_ns)
        } else {
            (stats.lost as u128 * delivered as u128 / stats.events as u128) as u64
        };
        delivered.saturating_add(lost)
    }
}

/// Measures [`HitCost`]: an entry uprobe and a uretprobe on each of two functions of
/// gilscope's own (`gilscope_calibration_push`, first instruction emulated, and
/// `gilscope_calibration_step`, first instruction single-stepped) for the calling thread;
/// 1 000 calls timed with and without them (best of 3 each). A call of the first is two
/// emulated hits (entry and return); of the second, one stepped hit and one return. Takes
/// a few milliseconds (plus the closes, done on a thread of their own).
pub fn calibrate() -> Result<HitCost> {
    // Calls per timing: fewer of the stepped function (a hit there costs tens of µs here).
    const CALLS: [u64; 2] = [1_000, 200];
    let pmu = sys::uprobe_pmu().context("uprobe PMU")?;
    let time_calls = |f: unsafe extern "C" fn(u64) -> u64, n: u64| {
        let mut best = u64::MAX;
        for _ in 0..3 {
            let t0 = monotonic_ns();
            let mut x = 0u64;
            for i in 0..n {
                // SAFETY: the calibration functions only compute on their argument.
                x = x.wrapping_add(unsafe { f(std::hint::black_box(i)) });
            }
            std::hint::black_box(x);
            best = best.min(monotonic_ns() - t0);
        }
        best
    };
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u32;
    let mut fds: Vec<OwnedFd> = Vec::new();
    let mut rings = Vec::new();
    let mut extra_ns = [0u64; 2];
    let funcs: [unsafe extern "C" fn(u64) -> u64; 2] =
        [gilscope_calibration_push, gilscope_calibration_step];
    let result = (|| -> Result<()> {
        for ((f, extra), n) in funcs.into_iter().zip(extra_ns.iter_mut()).zip(CALLS) {
            let (path, offset) = own_file_offset(f as *const () as usize as u64)?;
            let cpath = CString::new(path).context("path with a NUL byte")?;
            let without = time_calls(f, n);
            let first = fds.len();
            for retprobe in [false, true] {
                let spec = sys::UprobeSpec {
                    pmu,
                    path: &cpath,
                    offset,
                    retprobe,
                    sample_type: records::SAMPLE_TYPE,
                    regs_mask: 0,
                    wakeup_bytes: 1 << 30,
                };
                let fd = sys::open_uprobe(&spec, tid).context("perf_event_open (calibration)")?;
                if fds.len() == first {
                    rings.push(sys::RingBuffer::map(&fd, 128).context("mmap (calibration)")?);
                } else {
                    sys::set_output(&fd, fds[first].as_raw_fd())
                        .context("SET_OUTPUT (calibration)")?;
                }
                fds.push(fd);
            }
            for fd in &fds[first..] {
                sys::enable(fd).context("enable (calibration)")?;
            }
            let with = time_calls(f, n);
            for fd in &fds[first..] {
                let _ = sys::disable(fd);
            }
            *extra = with.saturating_sub(without) / n;
        }
        Ok(())
    })();
    // Closing waits for grace periods: not on the caller's time.
    let _ = std::thread::Builder::new()
        .name("gilscope-close".into())
        .spawn(move || close_in_order(rings, fds));
    result?;
    let emulated_ns = (extra_ns[0] / 2).max(1);
    Ok(HitCost {
        emulated_ns,
        stepped_ns: extra_ns[1].saturating_sub(emulated_ns).max(emulated_ns),
    })
}

/// The calibration started by [`start_calibration`], and its outcome once taken.
static CALIBRATION: Mutex<Option<std::thread::JoinHandle<Result<HitCost, String>>>> =
    Mutex::new(None);
static CALIBRATED: OnceLock<Result<HitCost, String>> = OnceLock::new();

/// Starts [`calibrate`] on a thread of its own (once per process), so that it runs while
/// the probes are armed instead of after, while the target goes unobserved: its stepped
/// hits take tens of milliseconds on a slow machine.
pub fn start_calibration() {
    let mut slot = CALIBRATION.lock().unwrap_or_else(|e| e.into_inner());
    if slot.is_some() || CALIBRATED.get().is_some() {
        return;
    }
    *slot = std::thread::Builder::new()
        .name("gilscope-calibrate".into())
        .spawn(|| calibrate().map_err(|e| format!("{e:#}")))
        .ok();
}

/// What [`calibrate`] found, waiting for the calibration [`start_calibration`] started
/// (starting it first if none was).
pub fn calibrated() -> Result<HitCost> {
    start_calibration();
    let outcome = CALIBRATED.get_or_init(|| {
        let handle = CALIBRATION.lock().unwrap_or_else(|e| e.into_inner()).take();
        match handle {
            Some(h) => h
                .join()
                .unwrap_or_else(|_| Err("the calibration thread panicked".into())),
            None => calibrate().map_err(|e| format!("{e:#}")),
        }
    });
    outcome.clone().map_err(|e| anyhow!(e))
}
