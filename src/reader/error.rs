//! Failures the user can act on, each with its own exit code (docs/cli.md).

use std::fmt;

/// Why gilscope could not read a process. Carried inside `anyhow::Error`
/// chains; the CLI finds it with [`classify`] to choose the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadErrorKind {
    /// No such process, or it exited (exit code 3).
    NoProcess,
    /// The process is a zombie: it exited and waits for its parent (3).
    Zombie,
    /// No CPython runtime in the process (4).
    NotPython,
    /// A CPython version or build gilscope does not support (5).
    Unsupported,
    /// The kernel refused access (6).
    PermissionDenied,
    /// The target kept changing or its memory did not make sense (7).
    Inconsistent,
}

impl ReadErrorKind {
    pub fn exit_code(self) -> u8 {
        match self {
            ReadErrorKind::NoProcess | ReadErrorKind::Zombie => 3,
            ReadErrorKind::NotPython => 4,
            ReadErrorKind::Unsupported => 5,
            ReadErrorKind::PermissionDenied => 6,
            ReadErrorKind::Inconsistent => 7,
        }
    }
}

/// An error of a known kind with a message meant for the user.
#[derive(Debug)]
pub struct ReadError {
    pub kind: ReadErrorKind,
    pub message: String,
}

impl ReadError {
    pub fn new(kind: ReadErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ReadError {}

pub const PERMISSION_HINT: &str = "run gilscope as root, or give it CAP_SYS_PTRACE \
(sudo setcap cap_sys_ptrace+ep $(which gilscope)); as the same user, \
/proc/sys/kernel/yama/ptrace_scope must be 0; in a container add --cap-add SYS_PTRACE";

/// The kind of the first [`ReadError`] in the chain, or one inferred from
/// an OS error (ESRCH → no process, EPERM/EACCES → permission).
pub fn classify(err: &anyhow::Error) -> Option<ReadErrorKind> {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<ReadError>() {
            return Some(e.kind);
        }
    }
    for cause in err.chain() {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if let Some(k) = kind_of_errno(io.raw_os_error()) {
                return Some(k);
            }
            if io.kind() == std::io::ErrorKind::PermissionDenied {
                return Some(ReadErrorKind::PermissionDenied);
            }
        }
        if let Some(rp) = cause.downcast_ref::<remoteprocess::Error>() {
            match rp {
                remoteprocess::Error::IOError(io) => {
                    if let Some(k) = kind_of_errno(io.raw_os_error()) {
                        return Some(k);
                    }
                }
                remoteprocess::Error::NixError(n) => {
                    if let Some(k) = kind_of_errno(Some(*n as i32)) {
                        return Some(k);
                    }
                }
                _ => {}
            }
        }
    }
    None
}

fn kind_of_errno(errno: Option<i32>) -> Option<ReadErrorKind> {
    match errno? {
        libc::ESRCH => Some(ReadErrorKind::NoProcess),
        libc::EPERM | libc::EACCES => Some(ReadErrorKind::PermissionDenied),
        _ => None,
    }
}
