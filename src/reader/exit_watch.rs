//! Seeing a process's last moment: its main thread is seized with ptrace
//! (`PTRACE_O_TRACEEXIT`, nothing else), so that when it exits it stops once more *before* its
//! memory is released. `gilscope check` reads the process's maps there, so that a process that
//! lives for a fraction of a second still has every extension it loaded looked at.
//!
//! Seizing does not stop the thread. What it costs the target: each signal delivered to the
//! main thread waits for the next [`ExitWatch::poll`] (one sampling period) before it is
//! re-injected. Group stops (Ctrl-Z) are kept with `PTRACE_LISTEN`. All calls must come from
//! the thread that seized (ptrace's rule); the watcher is used by one recorder thread.

use anyhow::{bail, Result};

/// What [`ExitWatch::poll`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// Still running (any stop seen was let go).
    Running,
    /// Stopped at its exit, memory intact: read it, then [`ExitWatch::release`].
    AtExit,
    /// Gone, or no longer traced by us.
    Gone,
}

/// The main thread of one process, seized.
#[derive(Debug)]
pub struct ExitWatch {
    pid: u32,
    seized: bool,
    at_exit: bool,
}

const EVENT_STOP: i32 = libc::PTRACE_EVENT_STOP;
const EVENT_EXIT: i32 = libc::PTRACE_EVENT_EXIT;

impl ExitWatch {
    /// Seizes `pid`'s main thread (it keeps running).
    pub fn seize(pid: u32) -> Result<Self> {
        // SAFETY: plain ptrace request on a pid; no memory is passed.
        let rc = unsafe {
            libc::ptrace(
                libc::PTRACE_SEIZE,
                pid as libc::pid_t,
                0,
                libc::PTRACE_O_TRACEEXIT as libc::c_long,
            )
        };
        if rc != 0 {
            bail!(
                "ptrace(PTRACE_SEIZE) of process {pid}: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(ExitWatch {
            pid,
            seized: true,
            at_exit: false,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    fn request(&self, req: libc::c_uint, data: libc::c_long) -> bool {
        // SAFETY: requests that take no address; data is a signal number or 0.
        unsafe { libc::ptrace(req, self.pid as libc::pid_t, 0, data) == 0 }
    }

    /// Handles one wait status; returns what it means.
    fn handle(&mut self, status: i32) -> Watch {
        if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            self.seized = false;
            return Watch::Gone;
        }
        if !libc::WIFSTOPPED(status) {
            return Watch::Running;
        }
        let sig = libc::WSTOPSIG(status);
        let event = status >> 16;
        match event {
            EVENT_EXIT => {
                self.at_exit = true;
                Watch::AtExit
            }
            EVENT_STOP => {
                if matches!(
                    sig,
                    libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU
                ) {
                    // A group stop (Ctrl-Z): stay stopped as the user asked, but traced.
                    self.request(libc::PTRACE_LISTEN, 0);
                } else {
                    self.request(libc::PTRACE_CONT, 0);
                }
                Watch::Running
            }
            _ => {
                // A signal on its way to the thread: deliver it.
                self.request(libc::PTRACE_CONT, sig as libc::c_long);
                Watch::Running
            }
        }
    }

    /// Lets pending stops go (signals re-injected) and says whether the process is at its exit.
    /// Never blocks.
    pub fn poll(&mut self) -> Watch {
        if self.at_exit {
            return Watch::AtExit;
        }
        for _ in 0..64 {
            if !self.seized {
                return Watch::Gone;
            }
            let mut status = 0;
            // SAFETY: waitpid on one pid with a valid status pointer.
            let rc = unsafe {
                libc::waitpid(
                    self.pid as libc::pid_t,
                    &mut status,
                    libc::WNOHANG | libc::__WALL,
                )
            };
            if rc == 0 {
                return Watch::Running;
            }
            if rc < 0 {
                self.seized = false;
                return Watch::Gone;
            }
            match self.handle(status) {
                Watch::Running => continue,
                other => return other,
            }
        }
        Watch::Running
    }

    /// Stops the main thread (for a native-stack capture) and waits until it is stopped.
    /// Returns false when it is gone or exiting (then nothing can be read from its registers).
    pub fn interrupt(&mut self) -> bool {
        if !self.seized {
            return false;
        }
        if self.at_exit {
            return true;
        }
        if !self.request(libc::PTRACE_INTERRUPT, 0) {
            return false;
        }
        loop {
            let mut status = 0;
            // SAFETY: waitpid on one pid with a valid status pointer.
            let rc = unsafe { libc::waitpid(self.pid as libc::pid_t, &mut status, libc::__WALL) };
            if rc < 0 {
                self.seized = false;
                return false;
            }
            if !libc::WIFSTOPPED(status) {
                self.seized = false;
                return false;
            }
            let event = status >> 16;
            if event == EVENT_STOP && libc::WSTOPSIG(status) == libc::SIGTRAP {
                return true; // our interrupt
            }
            if event == EVENT_EXIT {
                self.at_exit = true;
                return true;
            }
            // A signal or a group stop came first: deal with it, the interrupt still stands.
            self.handle(status);
        }
    }

    /// Lets the thread go on after [`interrupt`](Self::interrupt).
    pub fn resume(&mut self) {
        if self.seized && !self.at_exit {
            self.request(libc::PTRACE_CONT, 0);
        }
    }

    /// Lets the process finish exiting (and stops watching it).
    pub fn release(&mut self) {
        if self.seized {
            self.request(libc::PTRACE_DETACH, 0);
            self.seized = false;
        }
    }
}

impl Drop for ExitWatch {
    fn drop(&mut self) {
        if !self.seized {
            return;
        }
        // Detach needs a stopped tracee: stop it first (a moment), then let it go.
        if self.at_exit || self.interrupt() {
            self.release();
        }
    }
}
