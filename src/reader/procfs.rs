//! What the kernel says about the target's threads (`/proc/PID/task/*`).

use anyhow::{Context, Result};
use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;

/// One line of `/proc/PID/task/TID/stat`, the fields we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskStat {
    pub tid: u32,
    /// Kernel name (`comm`), at most 15 bytes.
    pub comm: String,
    /// `R` running, `S` sleeping, `D` disk sleep, `Z` zombie, `T` stopped, ...
    pub state: char,
    /// Start time in clock ticks after boot (field 22).
    pub start_ticks: u64,
    /// utime + stime in clock ticks (fields 14, 15).
    pub cpu_ticks: u64,
    /// Times the thread was switched onto a CPU since gilscope began to follow it, where its
    /// context switches are followed (reader/oncpu.rs); None from `stat` alone.
    pub switch_ins: Option<u64>,
}

impl TaskStat {
    pub fn on_cpu(&self) -> bool {
        self.state == 'R'
    }
}

/// Parses a `stat` line. The command name is in parentheses and may itself
/// contain spaces and parentheses, so split at the *last* `)`.
pub fn parse_stat(text: &str) -> Option<TaskStat> {
    parse_stat_bytes(text.as_bytes())
}

/// [`parse_stat`] on the bytes as read (no copy, no allocation but the name's): it runs for
/// every thread at every sample.
pub fn parse_stat_bytes(bytes: &[u8]) -> Option<TaskStat> {
    let open = bytes.iter().position(|&b| b == b'(')?;
    let close = bytes.iter().rposition(|&b| b == b')')?;
    let tid = std::str::from_utf8(bytes.get(..open)?)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let comm = String::from_utf8_lossy(bytes.get(open + 1..close)?).into_owned();
    // Field 3 (state) is the first after the name; field N is the (N - 3)th.
    let mut fields = bytes
        .get(close + 1..)?
        .split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty());
    let state = char::from(*fields.next()?.first()?);
    let number = |f: &[u8]| -> Option<u64> {
        if f.is_empty() || f.len() > 20 {
            return None;
        }
        f.iter().try_fold(0u64, |acc, &d| {
            d.is_ascii_digit()
                .then(|| acc.checked_mul(10)?.checked_add(u64::from(d - b'0')))?
        })
    };
    // Fields 14 and 15 (utime, stime) are the 11th and 12th after the state; 22 the 19th.
    let utime = number(fields.nth(14 - 4)?)?;
    let stime = number(fields.next()?)?;
    let start_ticks = number(fields.nth(22 - 16)?)?;
    Some(TaskStat {
        tid,
        comm,
        state,
        start_ticks,
        cpu_ticks: utime + stime,
        switch_ins: None,
    })
}

fn read_small(path: &str, buf: &mut Vec<u8>) -> std::io::Result<()> {
    buf.clear();
    std::fs::File::open(path)?.read_to_end(buf)?;
    Ok(())
}

/// `/proc/PID/stat` of the process itself.
pub fn process_stat(pid: u32) -> Result<TaskStat> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_stat(&text).with_context(|| format!("unexpected format of {path}"))
}

/// Every thread of the process, with its stat. Threads that exit while we
/// list them are skipped.
pub fn tasks(pid: u32) -> Result<Vec<TaskStat>> {
    TaskFiles::default().tasks(pid)
}

/// Reads `/proc/PID/task/*/{stat,syscall}` sample after sample, keeping each file open and
/// reading it again with `pread`: one system call per file and sample instead of six
/// (open, statx, lseek, read, read, close). A handle of a thread that exited reads ESRCH
/// and is dropped (a reused TID then gets a new one).
#[derive(Debug, Default)]
pub struct TaskFiles {
    stat: HashMap<u32, File>,
    syscall: HashMap<u32, File>,
    schedstat: HashMap<u32, File>,
    /// Per thread: its `schedstat` when its `syscall` file was last read, and what it said.
    last_syscall: HashMap<u32, ([u64; 3], SyscallState)>,
    /// `/proc/PID/task`, kept open: new threads' files are opened relative to it.
    task_dir: Option<(u32, File)>,
    buf: Vec<u8>,
}

/// [`TaskFiles::read_cached_in`] of `/proc/PID/task/TID/NAME`, a new file opened relative
/// to the kept `/proc/PID/task` (opened at the first need for it).
fn read_task(
    files: &mut HashMap<u32, File>,
    dir: &mut Option<(u32, File)>,
    pid: u32,
    tid: u32,
    name: &str,
    buf: &mut Vec<u8>,
) -> std::io::Result<()> {
    if !files.contains_key(&tid) && dir.as_ref().is_none_or(|(p, _)| *p != pid) {
        *dir = File::open(format!("/proc/{pid}/task"))
            .ok()
            .map(|f| (pid, f));
    }
    let d = dir.as_ref().filter(|(p, _)| *p == pid).map(|(_, f)| f);
    let rel = d.is_some();
    TaskFiles::read_cached_in(
        files,
        d,
        || {
            if rel {
                format!("{tid}/{name}")
            } else {
                format!("/proc/{pid}/task/{tid}/{name}")
            }
        },
        tid,
        buf,
    )
}

/// `openat(dir, rel, O_RDONLY | O_CLOEXEC)`.
fn open_at(dir: &File, rel: &str) -> std::io::Result<File> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let c = std::ffi::CString::new(rel)
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: a valid directory fd and a NUL-terminated path; the new fd is ours to own.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Reads a /proc file from offset 0 through `file`, into `buf`.
fn pread_all(file: &File, buf: &mut Vec<u8>) -> std::io::Result<()> {
    buf.clear();
    buf.resize(1024, 0);
    let mut n = 0;
    loop {
        let got = file.read_at(&mut buf[n..], n as u64)?;
        n += got;
        if got == 0 || n < buf.len() {
            break;
        }
        buf.resize(buf.len() * 2, 0);
    }
    buf.truncate(n);
    Ok(())
}

impl TaskFiles {
    fn read_cached(
        files: &mut HashMap<u32, File>,
        path: impl FnOnce() -> String,
        tid: u32,
        buf: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        Self::read_cached_in(files, None, path, tid, buf)
    }

    /// [`TaskFiles::read_cached`]; a file not open yet is opened relative to `dir` when given
    /// (`TID/stat` under a kept `/proc/PID/task`: a shorter path walk than from `/`, for the
    /// threads that come and go all the time in a thread-per-request server).
    fn read_cached_in(
        files: &mut HashMap<u32, File>,
        dir: Option<&File>,
        path: impl FnOnce() -> String,
        tid: u32,
        buf: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        if let Some(f) = files.get(&tid) {
            match pread_all(f, buf) {
                Ok(()) if !buf.is_empty() => return Ok(()),
                _ => {
                    files.remove(&tid);
                }
            }
        }
        let f = match dir {
            Some(d) => open_at(d, &path())?,
            None => File::open(path())?,
        };
        pread_all(&f, buf)?;
        files.insert(tid, f);
        Ok(())
    }

    /// Every thread of `pid`, with its stat (as [`tasks`]).
    pub fn tasks(&mut self, pid: u32) -> Result<Vec<TaskStat>> {
        let dir = format!("/proc/{pid}/task");
        let entries = std::fs::read_dir(&dir).with_context(|| format!("listing {dir}"))?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("listing {dir}"))?;
            let Some(tid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if Self::read_cached(
                &mut self.stat,
                || format!("{dir}/{tid}/stat"),
                tid,
                &mut self.buf,
            )
            .is_err()
            {
                continue; // exited meanwhile
            }
            if let Some(st) = parse_stat_bytes(&self.buf) {
                out.push(st);
            }
        }
        out.sort_by_key(|t| t.tid);
        // Forget the handles of threads that are gone.
        self.stat
            .retain(|tid, _| out.binary_search_by_key(tid, |t| t.tid).is_ok());
        self.syscall
            .retain(|tid, _| out.binary_search_by_key(tid, |t| t.tid).is_ok());
        self.schedstat
            .retain(|tid, _| out.binary_search_by_key(tid, |t| t.tid).is_ok());
        self.last_syscall
            .retain(|tid, _| out.binary_search_by_key(tid, |t| t.tid).is_ok());
        Ok(out)
    }

    /// The stat of thread `tid` of `pid`, through a kept handle. None: the thread is gone,
    /// or is not one of `pid`'s.
    pub fn stat(&mut self, pid: u32, tid: u32) -> Option<TaskStat> {
        read_task(
            &mut self.stat,
            &mut self.task_dir,
            pid,
            tid,
            "stat",
            &mut self.buf,
        )
        .ok()?;
        parse_stat_bytes(&self.buf).filter(|st| st.tid == tid)
    }

    /// Forgets the handles of the threads `live` says are gone.
    pub fn retain(&mut self, live: impl Fn(u32) -> bool) {
        self.stat.retain(|tid, _| live(*tid));
        self.syscall.retain(|tid, _| live(*tid));
        self.schedstat.retain(|tid, _| live(*tid));
        self.last_syscall.retain(|tid, _| live(*tid));
    }

    /// What `/proc/PID/task/TID/syscall` says, read only when the thread has run since the
    /// last time it was read: `schedstat` (run time, wait time, time slices; no locks taken)
    /// tells. A thread that has not run since is still in the system call it slept in then.
    /// Reading `syscall` itself takes the thread's exec lock and waits for it to be off its
    /// CPU (`wait_task_inactive`): the dearest file of all. Meant for threads `stat` says
    /// are asleep.
    ///
    /// `switch_ins` (from [`TaskStat::switch_ins`]), when known, tells the same without
    /// reading `schedstat`: a thread that was not switched in since has not run.
    pub fn syscall_unless_unchanged(
        &mut self,
        pid: u32,
        tid: u32,
        switch_ins: Option<u64>,
    ) -> Option<SyscallState> {
        let sched = match switch_ins {
            Some(n) => Some([u64::MAX, n, 0]),
            None => read_task(
                &mut self.schedstat,
                &mut self.task_dir,
                pid,
                tid,
                "schedstat",
                &mut self.buf,
            )
            .ok()
            .and_then(|()| parse_schedstat(&self.buf)),
        };
        if let (Some(now), Some((then, state))) = (sched, self.last_syscall.get(&tid)) {
            if now == *then && matches!(state, SyscallState::Blocked { .. }) {
                return Some(*state);
            }
        }
        let state = self.syscall_state(pid, tid)?;
        match sched {
            Some(now) => {
                self.last_syscall.insert(tid, (now, state));
            }
            None => {
                self.last_syscall.remove(&tid);
            }
        }
        Some(state)
    }

    /// What `/proc/PID/task/TID/syscall` says now (None: unreadable, or the thread is gone).
    pub fn syscall_state(&mut self, pid: u32, tid: u32) -> Option<SyscallState> {
        read_task(
            &mut self.syscall,
            &mut self.task_dir,
            pid,
            tid,
            "syscall",
            &mut self.buf,
        )
        .ok()?;
        parse_syscall_state(&String::from_utf8_lossy(&self.buf))
    }

    /// As [`blocked_syscall`], through a kept handle.
    pub fn blocked_syscall(&mut self, pid: u32, tid: u32) -> Option<(i64, u64)> {
        read_task(
            &mut self.syscall,
            &mut self.task_dir,
            pid,
            tid,
            "syscall",
            &mut self.buf,
        )
        .ok()?;
        parse_syscall(&String::from_utf8_lossy(&self.buf))
    }
}

/// `/proc/PID/task/TID/schedstat`: nanoseconds on a CPU, nanoseconds waiting for one, and
/// time slices run.
pub fn parse_schedstat(bytes: &[u8]) -> Option<[u64; 3]> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut it = text.split_ascii_whitespace().map(|f| f.parse::<u64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// What `/proc/PID/task/TID/syscall` says about a thread at the moment it is read.
///
/// The kernel answers only for a thread that is not runnable: a runnable thread (on a CPU or
/// waiting in the run queue for one, as a preempted thread is) always reads `running`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyscallState {
    /// Runnable: running, or queued for a CPU.
    Running,
    /// Asleep inside system call `nr` with first argument `arg0`.
    Blocked { nr: i64, arg0: u64 },
    /// Not runnable and not in a system call (stopped, faulting a page in): the user-space
    /// stack pointer and program counter.
    Outside { sp: u64, pc: u64 },
}

pub fn parse_syscall_state(text: &str) -> Option<SyscallState> {
    let mut it = text.split_whitespace();
    let first = it.next()?;
    if first == "running" {
        return Some(SyscallState::Running);
    }
    let nr: i64 = first.parse().ok()?;
    let hex = |s: &str| u64::from_str_radix(s.strip_prefix("0x")?, 16).ok();
    if nr == -1 {
        let sp = hex(it.next()?)?;
        let pc = hex(it.next()?)?;
        return Some(SyscallState::Outside { sp, pc });
    }
    let arg0 = hex(it.next()?)?;
    Some(SyscallState::Blocked { nr, arg0 })
}

/// The system call a thread is blocked in: `(number, first argument)`, from
/// `/proc/PID/task/TID/syscall`. None when running or unreadable.
pub fn blocked_syscall(pid: u32, tid: u32) -> Option<(i64, u64)> {
    let mut buf = Vec::with_capacity(128);
    read_small(&format!("/proc/{pid}/task/{tid}/syscall"), &mut buf).ok()?;
    parse_syscall(&String::from_utf8_lossy(&buf))
}

pub fn parse_syscall(text: &str) -> Option<(i64, u64)> {
    let mut it = text.split_whitespace();
    let nr: i64 = it.next()?.parse().ok()?;
    let arg0 = it.next()?;
    let arg0 = u64::from_str_radix(arg0.strip_prefix("0x")?, 16).ok()?;
    Some((nr, arg0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_parentheses_in_name() {
        let line =
            "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 3 0 987654 0 0";
        let st = parse_stat(line).unwrap();
        assert_eq!(st.tid, 4242);
        assert_eq!(st.comm, "a (b) c");
        assert_eq!(st.state, 'S');
        assert_eq!(st.cpu_ticks, 10);
        assert_eq!(st.start_ticks, 987654);
    }

    #[test]
    fn syscall_line() {
        assert_eq!(
            parse_syscall("202 0x7f00001234 0x189 0x0 0x0 0x0 0x0 0x7ffc 0x7f00"),
            Some((202, 0x7f00001234))
        );
        assert_eq!(parse_syscall("running"), None);
        assert_eq!(
            parse_syscall_state("202 0x7f00001234 0x189 0x0 0x0 0x0 0x0 0x7ffc 0x7f00"),
            Some(SyscallState::Blocked {
                nr: 202,
                arg0: 0x7f00001234
            })
        );
        assert_eq!(
            parse_syscall_state("running\n"),
            Some(SyscallState::Running)
        );
        assert_eq!(
            parse_syscall_state("-1 0x7ffd1000 0x7f0000abcd\n"),
            Some(SyscallState::Outside {
                sp: 0x7ffd1000,
                pc: 0x7f0000abcd
            })
        );
        assert_eq!(parse_syscall_state(""), None);
    }

    #[test]
    fn reads_own_threads() {
        let me = std::process::id();
        let tasks = tasks(me).unwrap();
        assert!(tasks.iter().any(|t| t.tid == me));
    }

    #[test]
    fn kept_handles_follow_threads_coming_and_going() {
        // (Other tests' threads come and go meanwhile: only our own thread is checked.)
        let me = std::process::id();
        let mut files = TaskFiles::default();
        assert!(files.tasks(me).unwrap().iter().any(|t| t.tid == me));
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tx.send(unsafe { libc::gettid() } as u32).unwrap();
            let _ = done_rx.recv();
        });
        let tid = rx.recv().unwrap();
        let during = files.tasks(me).unwrap();
        assert!(during.iter().any(|t| t.tid == tid));
        // Blocked in recv (a futex) once it got there.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while files.blocked_syscall(me, tid).is_none() {
            assert!(std::time::Instant::now() < deadline, "never seen blocked");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        drop(done_tx);
        t.join().unwrap();
        let after = files.tasks(me).unwrap();
        assert!(!after.iter().any(|t| t.tid == tid));
        assert!(!files.stat.contains_key(&tid) && !files.syscall.contains_key(&tid));
    }
}

/// One line of `/proc/PID/maps` that names something (a file, `[vdso]`, `[heap]`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEntry {
    pub start: u64,
    pub end: u64,
    pub exec: bool,
    /// File offset of `start`.
    pub offset: u64,
    /// The file's path as the target sees it (spaces kept), or the kernel's `[name]`.
    pub path: String,
}

/// Parses the text of `/proc/PID/maps`; anonymous mappings and malformed lines are skipped.
pub fn parse_maps(text: &str) -> Vec<MapEntry> {
    let mut out = Vec::new();
    for line in text.lines() {
        // "start-end perms offset dev inode   path"
        let mut it = line.split_whitespace();
        let (Some(range), Some(perms), Some(offset), Some(_dev), Some(_inode)) =
            (it.next(), it.next(), it.next(), it.next(), it.next())
        else {
            continue;
        };
        let file: Vec<&str> = it.collect();
        if file.is_empty() {
            continue;
        }
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end), Ok(offset)) = (
            u64::from_str_radix(a, 16),
            u64::from_str_radix(b, 16),
            u64::from_str_radix(offset, 16),
        ) else {
            continue;
        };
        out.push(MapEntry {
            start,
            end,
            exec: perms.contains('x'),
            offset,
            path: file.join(" "),
        });
    }
    out
}

/// The target's named mappings (see [`parse_maps`]).
pub fn maps(pid: u32) -> anyhow::Result<Vec<MapEntry>> {
    use anyhow::Context;
    let path = format!("/proc/{pid}/maps");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    Ok(parse_maps(&text))
}

#[cfg(test)]
mod maps_tests {
    use super::*;

    #[test]
    fn maps_lines() {
        let text = "7f00-7f10 r-xp 00001000 08:01 42   /usr/lib/my lib.so\n\
                    7f10-7f20 rw-p 00000000 00:00 0 \n\
                    7ffd-7ffe r-xp 00000000 00:00 0   [vdso]\n\
                    garbage\n";
        let m = parse_maps(text);
        assert_eq!(m.len(), 2);
        assert_eq!(
            m[0],
            MapEntry {
                start: 0x7f00,
                end: 0x7f10,
                exec: true,
                offset: 0x1000,
                path: "/usr/lib/my lib.so".into()
            }
        );
        assert_eq!(m[1].path, "[vdso]");
    }
}
