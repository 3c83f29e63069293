//! SIGINT/SIGTERM → a stop flag the sampling loop checks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

static STOP_FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();

extern "C" fn on_stop_signal(_sig: libc::c_int) {
    // Async-signal-safe: an atomic load of an initialized OnceLock and a store.
    if let Some(f) = STOP_FLAG.get() {
        f.store(true, Ordering::SeqCst);
    }
}

/// Make SIGINT and SIGTERM set the returned flag (once: a second Ctrl-C
/// kills as usual, for a recorder that is stuck). Call once, early.
pub fn install_stop_handler() -> Arc<AtomicBool> {
    let flag = STOP_FLAG
        .get_or_init(|| Arc::new(AtomicBool::new(false)))
        .clone();
    // SAFETY: a zeroed sigaction is valid; the handler only touches atomics.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_stop_signal as *const () as libc::sighandler_t;
        sa.sa_flags = libc::SA_RESETHAND;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
        libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut());
    }
    flag
}
