//! Native stacks of one thread of another process (for `gilscope check`'s attribution).
//!
//! remoteprocess's libunwind-ptrace unwinder: the thread — that one thread only — is stopped
//! with `PTRACE_SEIZE` + `PTRACE_INTERRUPT` while libunwind walks its stack (typically
//! 0.1–1 ms), then let go; nothing in the target's memory is changed. Symbols come from the
//! objects' symbol tables and DWARF through remoteprocess's symbolicator, reloaded when an
//! address falls in an object loaded after the last load.
//!
//! Limits: the objects are opened by the paths in `/proc/PID/maps`, so a target in another
//! mount namespace or chroot is unwound with the host's files of the same name (wrong or
//! missing frames); [`NativeUnwinder::new`] refuses such a target rather than guess.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::analysis::holds::{NativeFrame, NativeProbe};

/// A symbol as people write it: Rust (legacy and v0) and C++ names demangled, Rust's hash
/// suffix dropped; anything else unchanged.
pub fn demangle(name: &str) -> String {
    if let Ok(d) = rustc_demangle::try_demangle(name) {
        return format!("{d:#}");
    }
    if name.starts_with("_Z") {
        if let Ok(sym) = cpp_demangle::Symbol::new(name) {
            if let Ok(d) = sym.demangle() {
                return d;
            }
        }
    }
    name.to_string()
}

/// Frames read at most (an unwind that loops is cut here).
const MAX_FRAMES: usize = 256;

/// Unwinds threads of one process.
pub struct NativeUnwinder {
    pid: u32,
    unwinder: remoteprocess::Unwinder,
    symbolicator: remoteprocess::Symbolicator,
    /// Total time threads were stopped, and how many unwinds.
    pub paused: Duration,
    pub count: u64,
}

/// Whether `pid` sees the same root directory as we do (else its map paths are not ours).
fn same_root(pid: u32) -> bool {
    match (
        std::fs::metadata(format!("/proc/{pid}/root/")),
        std::fs::metadata("/"),
    ) {
        (Ok(a), Ok(b)) => {
            use std::os::unix::fs::MetadataExt;
            a.dev() == b.dev() && a.ino() == b.ino()
        }
        _ => false,
    }
}

impl NativeUnwinder {
    pub fn new(pid: u32) -> Result<Self> {
        if !same_root(pid) {
            bail!(
                "process {pid} runs under another root directory (chroot or container); \
                 native stacks are only unwound for processes that share gilscope's filesystem"
            );
        }
        let process = remoteprocess::Process::new(pid as remoteprocess::Pid)
            .with_context(|| format!("opening process {pid}"))?;
        let unwinder = process
            .unwinder()
            .context("creating the libunwind address space")?;
        let symbolicator = process
            .symbolicator()
            .with_context(|| format!("reading the loaded objects of process {pid}"))?;
        Ok(NativeUnwinder {
            pid,
            unwinder,
            symbolicator,
            paused: Duration::ZERO,
            count: 0,
        })
    }

    /// Instruction addresses of `tid`'s stack, innermost first (the thread is stopped
    /// meanwhile).
    fn addresses(&mut self, tid: u32) -> Result<Vec<u64>> {
        let thread =
            remoteprocess::Thread::new(tid as i32).with_context(|| format!("thread {tid}"))?;
        let t0 = Instant::now();
        let lock = thread
            .lock()
            .with_context(|| format!("stopping thread {tid} with ptrace"))?;
        let mut ips = Vec::new();
        let result = (|| -> Result<()> {
            for ip in self
                .unwinder
                .cursor(&thread)
                .with_context(|| format!("starting to unwind thread {tid}"))?
            {
                match ip {
                    Ok(ip) => ips.push(ip),
                    // A broken frame ends the walk; what was read so far stands.
                    Err(_) if !ips.is_empty() => break,
                    Err(e) => return Err(e).context("unwinding the first frame"),
                }
                if ips.len() >= MAX_FRAMES {
                    break;
                }
            }
            Ok(())
        })();
        drop(lock);
        self.paused += t0.elapsed();
        self.count += 1;
        result?;
        Ok(ips)
    }

    fn symbolicate(&mut self, ip: u64) -> NativeFrame {
        // Return addresses point after the call; look up the call itself.
        let mut frame = NativeFrame {
            addr: ip,
            object: String::new(),
            symbol: None,
        };
        for attempt in 0..2 {
            let mut got = false;
            let r = self
                .symbolicator
                .symbolicate(ip.saturating_sub(1), false, &mut |sf| {
                    if !got {
                        got = true;
                        frame.object = sf.module.clone();
                        frame.symbol = sf.function.as_deref().map(demangle);
                    }
                });
            if r.is_ok() || attempt == 1 {
                break;
            }
            // An object loaded since the last look: read the maps again, once.
            if self.symbolicator.reload().is_err() {
                break;
            }
        }
        frame
    }

    /// The native stack of `tid`, innermost first, symbolized.
    pub fn stack(&mut self, tid: u32) -> Result<Vec<NativeFrame>> {
        let ips = self.addresses(tid)?;
        Ok(ips.into_iter().map(|ip| self.symbolicate(ip)).collect())
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }
}

impl NativeProbe for NativeUnwinder {
    fn unwind(&mut self, pid: u32, tid: u32) -> std::result::Result<Vec<NativeFrame>, String> {
        if pid != self.pid {
            return Err(format!("unwinder is for process {}, not {pid}", self.pid));
        }
        self.stack(tid).map_err(|e| format!("{e:#}"))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn demangles_rust_and_cpp() {
        assert_eq!(
            super::demangle("_RNvNtNtCsjrHSEGnQ3l9_3std6thread9functions5sleep"),
            "std::thread::functions::sleep"
        );
        assert_eq!(
            super::demangle("_ZN3std6thread5sleep17h0123456789abcdefE"),
            "std::thread::sleep"
        );
        assert_eq!(super::demangle("_ZN5boost4algoEv"), "boost::algo()");
        assert_eq!(super::demangle("gilext_hold_spin"), "gilext_hold_spin");
    }
}
