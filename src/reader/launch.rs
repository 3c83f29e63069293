//! Launching a command held at the moment its Python is mapped, before any of it runs.
//!
//! `gilscope check` puts its uprobes in place there (uprobes attach to a file, so they can
//! be armed before the first instruction of that file runs): exact mode then covers the
//! command from its first Python instruction instead of from the moment the probes were set
//! up after start-up.
//!
//! How: the child asks to be traced (`PTRACE_TRACEME`) just before its `execve`. After each
//! exec gilscope looks at the new executable:
//! - a CPython that holds its interpreter itself (`_PyRuntime` in the executable): ready;
//! - a CPython whose interpreter is in libpython: it is stepped system call by system call
//!   through the dynamic loader until libpython's code is mapped (a few hundred calls);
//! - an exec wrapper (`env`, `chroot`, `nice`, …, [`WRAPPERS`]): followed to its next exec;
//! - a shell ([`SHELLS`]): followed to its next exec for at most 500 ms, then let go running;
//! - anything else (a launcher that forks): let go at once.
//!
//! At "ready" the given closure runs with the process stopped; then the process is detached
//! and runs on. Nothing in its memory is read or written; it is held for the time the
//! closure takes. When anything goes wrong the process is detached and runs as if launched
//! plainly; the reason is handed back. Exits are never reaped here (`waitid` with `WNOWAIT`
//! looks first), so the caller's [`Child`] still owns the exit status.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::runtime::is_libpython;

/// Executables that exec the command they are given (so the Python comes one exec later).
pub const WRAPPERS: &[&str] = &[
    "env", "chroot", "nice", "ionice", "taskset", "setsid", "stdbuf", "nohup", "chrt", "numactl",
];

/// Shells, followed to their next exec for at most [`SHELL_PATIENCE`]: a launcher script
/// (pyenv's shims, `sh -c "exec python …"`) execs its Python; a script that forks it instead
/// is let go then (its Python is recorded as a subprocess, probes set up once it runs).
pub const SHELLS: &[&str] = &["sh", "dash", "bash", "zsh", "ksh", "mksh"];

/// How long a shell may run before its next exec while held traced.
const SHELL_PATIENCE: Duration = Duration::from_millis(500);

/// At most this many execs are followed (wrappers of wrappers).
const MAX_EXECS: usize = 8;

/// The Python a launched process is about to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PythonFile {
    pub pid: u32,
    /// The file holding the interpreter, as `Reader::attach` will name it: the executable's
    /// `/proc/PID/exe` link, or libpython's path in `/proc/PID/maps`.
    pub binary: String,
    pub minor: u32,
    pub free_threaded: bool,
}

/// What happened at launch.
#[derive(Debug)]
pub struct Held<T> {
    /// The closure's value, or why it did not run (or failed).
    pub value: Result<T, String>,
    /// From the child's first stop to its release.
    pub held: Duration,
}

/// Spawns `cmd` traced and runs `ready` once its Python is mapped (see the module docs).
/// A spawn error is returned as is (the caller words it); every other failure is in
/// [`Held::value`], with the process released.
pub fn spawn_held<T>(
    cmd: &mut Command,
    patience: Duration,
    ready: impl FnOnce(&PythonFile) -> Result<T, String>,
) -> std::io::Result<(Child, Held<T>)> {
    // SAFETY: the closure runs in the child between fork and exec and only makes one
    // async-signal-safe system call.
    unsafe {
        cmd.pre_exec(|| {
            if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    let pid = child.id() as libc::pid_t;
    let t0 = Instant::now();
    let mut ready = Some(ready);
    let value = follow(pid, t0 + patience, &mut ready);
    Ok((
        child,
        Held {
            value,
            held: t0.elapsed(),
        },
    ))
}

/// A stop of the traced child, consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Right after an exec (the first one is the `PTRACE_TRACEME` trap).
    Exec,
    /// At a system call's entry or exit.
    Syscall,
    /// About to exit (`PTRACE_EVENT_EXIT`).
    Exiting,
    /// Another ptrace event (nothing to deliver).
    Event,
    /// A signal to deliver on resume.
    Signal(i32),
    /// Exited or gone: not consumed, not traced any more.
    Gone,
    /// No stop by the time given: the tracee runs on (still traced).
    StillRunning,
}

enum Phase {
    /// Running to its next exec (a shell: until the given time).
    ToExec(Option<Instant>),
    /// In the dynamic loader, waiting for libpython (the version and build from the
    /// executable's name when libpython's does not tell).
    ToLibpython { minor: u32, free_threaded: bool },
}

fn follow<T>(
    pid: libc::pid_t,
    deadline: Instant,
    ready: &mut Option<impl FnOnce(&PythonFile) -> Result<T, String>>,
) -> Result<T, String> {
    let mut first = true;
    let mut execs = 0usize;
    let mut phase = Phase::ToExec(None);
    loop {
        let until = match phase {
            Phase::ToExec(until) => until,
            Phase::ToLibpython { .. } => None,
        };
        let stop = next_stop(pid, first, until);
        let mut deliver = 0;
        match stop {
            Stop::Gone => return Err("the command ended before its Python was mapped".into()),
            Stop::StillRunning => {
                let_go_running(pid);
                return Err(format!(
                    "its shell ran {} ms without exec'ing a Python",
                    SHELL_PATIENCE.as_millis()
                ));
            }
            Stop::Exiting => {
                detach(pid, 0);
                return Err("the command ended before its Python was mapped".into());
            }
            Stop::Exec => {
                if first {
                    first = false;
                    let opts = libc::PTRACE_O_TRACESYSGOOD
                        | libc::PTRACE_O_TRACEEXEC
                        | libc::PTRACE_O_TRACEEXIT
                        | libc::PTRACE_O_EXITKILL;
                    // SAFETY: ptrace request on our stopped tracee; no memory is passed.
                    let rc = unsafe {
                        libc::ptrace(libc::PTRACE_SETOPTIONS, pid, 0, opts as libc::c_long)
                    };
                    if rc != 0 {
                        let e = std::io::Error::last_os_error();
                        detach(pid, 0);
                        return Err(format!("ptrace(PTRACE_SETOPTIONS): {e}"));
                    }
                }
                execs += 1;
                match look_at_exe(pid as u32) {
                    Exe::Ready(file) => return arm(pid, &file, ready),
                    Exe::NeedsLibpython {
                        minor,
                        free_threaded,
                    } => {
                        phase = Phase::ToLibpython {
                            minor,
                            free_threaded,
                        }
                    }
                    Exe::Wrapper { shell } if execs < MAX_EXECS => {
                        phase = Phase::ToExec(shell.then(|| Instant::now() + SHELL_PATIENCE))
                    }
                    Exe::Wrapper { .. } => {
                        detach(pid, 0);
                        return Err(format!("no Python after {execs} execs of wrappers"));
                    }
                    Exe::Other(why) => {
                        detach(pid, 0);
                        return Err(why);
                    }
                }
            }
            Stop::Syscall => {
                if let Phase::ToLibpython {
                    minor,
                    free_threaded,
                } = phase
                {
                    // The loader maps libpython's code with mmap: the maps can only have
                    // changed at one (reading them at every stop made the hold ~10× longer).
                    let found = syscall_nr(pid)
                        .is_none_or(|nr| nr == libc::SYS_mmap)
                        .then(|| mapped_libpython(pid as u32, minor, free_threaded))
                        .flatten();
                    if let Some(file) = found {
                        return arm(pid, &file, ready);
                    }
                }
            }
            Stop::Event => {}
            Stop::Signal(sig) => deliver = sig,
        }
        if Instant::now() >= deadline {
            detach(pid, deliver);
            return Err("its Python was not mapped in time".into());
        }
        let request = match phase {
            Phase::ToExec(_) => libc::PTRACE_CONT,
            Phase::ToLibpython { .. } => libc::PTRACE_SYSCALL,
        };
        // SAFETY: ptrace request on our stopped tracee; no memory is passed.
        if unsafe { libc::ptrace(request, pid, 0, deliver as libc::c_long) } != 0 {
            return Err(format!(
                "resuming the command: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
}

fn arm<T>(
    pid: libc::pid_t,
    file: &PythonFile,
    ready: &mut Option<impl FnOnce(&PythonFile) -> Result<T, String>>,
) -> Result<T, String> {
    let value = match ready.take() {
        Some(f) => f(file),
        None => Err("already armed".into()),
    };
    detach(pid, 0);
    value
}

/// The system call the stopped tracee is entering or leaving (`orig_rax`), where known.
fn syscall_nr(pid: libc::pid_t) -> Option<i64> {
    #[cfg(target_arch = "x86_64")]
    {
        let offset = (libc::ORIG_RAX as usize) * std::mem::size_of::<libc::c_long>();
        // SAFETY: PTRACE_PEEKUSER reads one word of the stopped tracee's saved registers
        // (not its memory); errno tells a failure from a value of -1.
        unsafe {
            *libc::__errno_location() = 0;
            let v = libc::ptrace(libc::PTRACE_PEEKUSER, pid, offset, 0);
            (*libc::__errno_location() == 0).then_some(v)
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = pid;
        None
    }
}

/// Detaches a tracee that is running: stops it with SIGSTOP (ptrace detaches only a stopped
/// tracee), lets other signals through meanwhile, and detaches at that stop with the SIGSTOP
/// suppressed, so it runs on as before.
fn let_go_running(pid: libc::pid_t) {
    // SAFETY: a signal to our own traced child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    loop {
        match next_stop(pid, false, None) {
            Stop::Signal(libc::SIGSTOP) | Stop::Exiting => return detach(pid, 0),
            Stop::Gone | Stop::StillRunning => return,
            Stop::Signal(sig) => {
                // SAFETY: ptrace request on our stopped tracee; no memory is passed.
                if unsafe { libc::ptrace(libc::PTRACE_CONT, pid, 0, sig as libc::c_long) } != 0 {
                    return;
                }
            }
            Stop::Exec | Stop::Syscall | Stop::Event => {
                // SAFETY: as above.
                if unsafe { libc::ptrace(libc::PTRACE_CONT, pid, 0, 0) } != 0 {
                    return;
                }
            }
        }
    }
}

fn detach(pid: libc::pid_t, sig: i32) {
    // SAFETY: ptrace request on our tracee; no memory is passed. A failure means it is gone.
    unsafe { libc::ptrace(libc::PTRACE_DETACH, pid, 0, sig as libc::c_long) };
}

fn next_stop(pid: libc::pid_t, first: bool, until: Option<Instant>) -> Stop {
    // Look without reaping: an exit stays for the caller's Child to collect.
    // SAFETY: waitid fills the zeroed siginfo it is given.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let mut flags = libc::WEXITED | libc::WSTOPPED | libc::WNOWAIT | libc::__WALL;
    if until.is_some() {
        flags |= libc::WNOHANG;
    }
    loop {
        // SAFETY: as above. With WNOHANG, no stop yet leaves si_pid 0.
        let rc = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) };
        if rc == 0 {
            // SAFETY: si_pid is valid for the SIGCHLD siginfo waitid fills.
            if unsafe { info.si_pid() } != 0 {
                break;
            }
            match until {
                Some(t) if Instant::now() < t => {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                _ => return Stop::StillRunning,
            }
        }
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return Stop::Gone;
        }
    }
    if matches!(
        info.si_code,
        libc::CLD_EXITED | libc::CLD_KILLED | libc::CLD_DUMPED
    ) {
        return Stop::Gone;
    }
    let mut status = 0;
    // SAFETY: consumes the stop waitid saw.
    if unsafe { libc::waitpid(pid, &mut status, libc::__WALL) } != pid {
        return Stop::Gone;
    }
    if !libc::WIFSTOPPED(status) {
        return Stop::Gone;
    }
    let sig = libc::WSTOPSIG(status);
    let event = (status >> 16) & 0xff;
    match (sig, event) {
        (s, 0) if s == libc::SIGTRAP | 0x80 => Stop::Syscall,
        (libc::SIGTRAP, libc::PTRACE_EVENT_EXEC) => Stop::Exec,
        (libc::SIGTRAP, libc::PTRACE_EVENT_EXIT) => Stop::Exiting,
        // The trap PTRACE_TRACEME's exec raises (options are not set yet).
        (libc::SIGTRAP, 0) if first => Stop::Exec,
        (_, 0) => Stop::Signal(sig),
        _ => Stop::Event,
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Exe {
    Ready(PythonFile),
    NeedsLibpython {
        minor: u32,
        free_threaded: bool,
    },
    /// An exec wrapper, or a shell (followed for a while only).
    Wrapper {
        shell: bool,
    },
    Other(String),
}

fn look_at_exe(pid: u32) -> Exe {
    let link = match std::fs::read_link(format!("/proc/{pid}/exe")) {
        Ok(l) => l.to_string_lossy().into_owned(),
        Err(e) => return Exe::Other(format!("cannot read /proc/{pid}/exe: {e}")),
    };
    let name = link.rsplit('/').next().unwrap_or_default();
    let Some((minor, free_threaded)) = python_version_in_name(name, "python3.") else {
        if WRAPPERS.contains(&name) {
            return Exe::Wrapper { shell: false };
        }
        if SHELLS.contains(&name) {
            return Exe::Wrapper { shell: true };
        }
        return Exe::Other(format!(
            "{name} is not named like a CPython executable (python3.X) nor one of the exec \
             wrappers ({}) or shells ({}) followed",
            WRAPPERS.join(", "),
            SHELLS.join(", ")
        ));
    };
    match holds_runtime(&format!("/proc/{pid}/exe")) {
        Ok(true) => Exe::Ready(PythonFile {
            pid,
            binary: link,
            minor,
            free_threaded,
        }),
        Ok(false) => Exe::NeedsLibpython {
            minor,
            free_threaded,
        },
        Err(e) => Exe::Other(e),
    }
}

/// `(minor, free-threaded)` from `python3.13t` / `libpython3.13t.so.1.0` (prefix given).
pub fn python_version_in_name(name: &str, prefix: &str) -> Option<(u32, bool)> {
    let rest = name.strip_prefix(prefix)?;
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    let minor: u32 = rest[..digits].parse().ok()?;
    let flags: String = rest[digits..]
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect();
    if !flags.chars().all(|c| matches!(c, 't' | 'd')) {
        return None;
    }
    Some((minor, flags.contains('t')))
}

/// Whether the ELF file defines `_PyRuntime` (a CPython not built with a shared libpython).
fn holds_runtime(path: &str) -> Result<bool, String> {
    use object::{Object, ObjectSymbol};
    let data = std::fs::read(path).map_err(|e| format!("reading {path}: {e}"))?;
    let file = object::File::parse(&*data).map_err(|e| format!("parsing {path}: {e}"))?;
    let defines = |mut syms: object::SymbolIterator<'_, '_>| {
        syms.any(|s| s.is_definition() && s.name() == Ok("_PyRuntime"))
    };
    Ok(defines(file.dynamic_symbols()) || defines(file.symbols()))
}

fn mapped_libpython(pid: u32, minor: u32, free_threaded: bool) -> Option<PythonFile> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let m = super::procfs::parse_maps(&maps)
        .into_iter()
        .find(|m| m.exec && is_libpython(&m.path))?;
    let name = m.path.rsplit('/').next().unwrap_or_default();
    let (minor, free_threaded) =
        python_version_in_name(name, "libpython3.").unwrap_or((minor, free_threaded));
    Some(PythonFile {
        pid,
        binary: m.path,
        minor,
        free_threaded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_names() {
        assert_eq!(
            python_version_in_name("python3.12", "python3."),
            Some((12, false))
        );
        assert_eq!(
            python_version_in_name("python3.13t", "python3."),
            Some((13, true))
        );
        assert_eq!(
            python_version_in_name("python3.9d", "python3."),
            Some((9, false))
        );
        assert_eq!(
            python_version_in_name("libpython3.14t.so.1.0", "libpython3."),
            Some((14, true))
        );
        assert_eq!(python_version_in_name("python3", "python3."), None);
        assert_eq!(
            python_version_in_name("python3.12-config", "python3."),
            Some((12, false))
        );
        assert_eq!(python_version_in_name("python3.x", "python3."), None);
        assert_eq!(python_version_in_name("python3.12m", "python3."), None);
    }
}
