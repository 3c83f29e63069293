//! What the kernel says about the target's threads (`/proc/PID/task/*`).

use anyhow::{Context, Result};
use std::io::Read;

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
}

impl TaskStat {
    pub fn on_cpu(&self) -> bool {
        self.state == 'R'
    }
}

/// Parses a `stat` line. The command name is in parentheses and may itself
/// contain spaces and parentheses, so split at the *last* `)`.
pub fn parse_stat(text: &str) -> Option<TaskStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let tid = text[..open].trim().parse().ok()?;
    let comm = text.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state); field N is rest[N - 3].
    let state = rest.first()?.chars().next()?;
    let utime: u64 = rest.get(14 - 3)?.parse().ok()?;
    let stime: u64 = rest.get(15 - 3)?.parse().ok()?;
    let start_ticks = rest.get(22 - 3)?.parse().ok()?;
    Some(TaskStat {
        tid,
        comm,
        state,
        start_ticks,
        cpu_ticks: utime + stime,
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
    let dir = format!("/proc/{pid}/task");
    let entries = std::fs::read_dir(&dir).with_context(|| format!("listing {dir}"))?;
    let mut out = Vec::new();
    let mut buf = Vec::with_capacity(512);
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {dir}"))?;
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if read_small(&format!("{dir}/{tid}/stat"), &mut buf).is_err() {
            continue; // exited meanwhile
        }
        if let Some(st) = parse_stat(&String::from_utf8_lossy(&buf)) {
            out.push(st);
        }
    }
    out.sort_by_key(|t| t.tid);
    Ok(out)
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
    }

    #[test]
    fn reads_own_threads() {
        let me = std::process::id();
        let tasks = tasks(me).unwrap();
        assert!(tasks.iter().any(|t| t.tid == me));
    }
}
