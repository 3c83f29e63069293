//! Time for the recorder: CLOCK_MONOTONIC in real use, virtual in tests.

/// Time for the recorder.
pub trait Clock {
    /// Nanoseconds on the clock the snapshots' `time_ns` use.
    fn now_ns(&mut self) -> u64;
    /// Sleep until `deadline_ns` (may return early, e.g. on a signal).
    fn sleep_until(&mut self, deadline_ns: u64);
    /// Wall-clock time, Unix epoch ns, for the trace header.
    fn unix_now_ns(&mut self) -> Option<u64> {
        None
    }
}

/// The real clock: CLOCK_MONOTONIC with absolute-deadline sleeps.
#[derive(Debug, Default, Clone, Copy)]
pub struct MonotonicClock;

fn ns_to_timespec(ns: u64) -> libc::timespec {
    libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    }
}

impl Clock for MonotonicClock {
    fn now_ns(&mut self) -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid clock id and a valid out-pointer.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
    }

    fn sleep_until(&mut self, deadline_ns: u64) {
        let ts = ns_to_timespec(deadline_ns);
        // SAFETY: valid timespec; a null remainder is allowed with TIMER_ABSTIME.
        // EINTR (a signal) returns early; the loop re-checks the stop flag.
        unsafe {
            libc::clock_nanosleep(
                libc::CLOCK_MONOTONIC,
                libc::TIMER_ABSTIME,
                &ts,
                std::ptr::null_mut(),
            )
        };
    }

    fn unix_now_ns(&mut self) -> Option<u64> {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_nanos() as u64)
    }
}
