//! Finding the CPython runtime (`_PyRuntime`) in a process, and its version.
//!
//! py-spy's process info does the binary parsing (executable and libpython,
//! through `/proc/PID/root` so processes in containers and chroots work);
//! when it cannot name the library (free-threaded `libpython3.13t.so`) we scan
//! the memory maps ourselves with py-spy's ELF parser.

use anyhow::Result;
use std::path::PathBuf;

use super::error::{ReadError, ReadErrorKind, PERMISSION_HINT};
use super::memory::Memory;
use super::procfs;

/// Where `_PyRuntime` is and what holds it.
#[derive(Debug, Clone)]
pub struct RuntimeLocation {
    pub address: u64,
    /// The file as the target sees it (e.g. `/usr/lib/x86_64-linux-gnu/libpython3.14.so.1.0`).
    pub binary: String,
    /// "symbol" or "section".
    pub found_by: &'static str,
    /// Version from py-spy's detection, when it ran (≤3.12 needs it).
    pub version: Option<(u32, u32, u32, String)>,
}

/// Fails with a classified error if `pid` is not a live, accessible process.
pub fn check_process(pid: u32) -> Result<()> {
    if pid == 0 {
        return Err(ReadError::new(ReadErrorKind::NoProcess, "PID 0 is not a process").into());
    }
    let stat = match procfs::process_stat(pid) {
        Ok(s) => s,
        Err(_) => {
            return Err(ReadError::new(
                ReadErrorKind::NoProcess,
                format!("no process with PID {pid} (it may have exited)"),
            )
            .into())
        }
    };
    if stat.state == 'Z' || stat.state == 'X' {
        return Err(ReadError::new(
            ReadErrorKind::Zombie,
            format!(
                "process {pid} is a zombie: it has exited and waits for its parent to reap it; \
                 there is nothing left to read"
            ),
        )
        .into());
    }
    // /proc/PID/maps needs the same access as reading memory.
    let maps = format!("/proc/{pid}/maps");
    match std::fs::read_to_string(&maps) {
        // Empty maps on a user process: caught between releasing its
        // memory and becoming a zombie.
        Ok(text) if text.trim().is_empty() && !is_kernel_thread(pid) => Err(ReadError::new(
            ReadErrorKind::NoProcess,
            format!("process {pid} is exiting"),
        )
        .into()),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(permission_denied(pid)),
        Err(e)
            if e.raw_os_error() == Some(libc::ENOENT) || e.raw_os_error() == Some(libc::ESRCH) =>
        {
            Err(ReadError::new(ReadErrorKind::NoProcess, format!("process {pid} exited")).into())
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("opening {maps}"))),
    }
}

pub fn permission_denied(pid: u32) -> anyhow::Error {
    ReadError::new(
        ReadErrorKind::PermissionDenied,
        format!("permission denied reading process {pid}: {PERMISSION_HINT}"),
    )
    .into()
}

use super::procfs::MapEntry;

/// The target's file-backed mappings.
fn read_maps(pid: u32) -> Result<Vec<MapEntry>> {
    Ok(super::procfs::maps(pid)?
        .into_iter()
        .filter(|m| m.path.starts_with('/'))
        .collect())
}

/// `PF_KTHREAD` in the flags of `/proc/PID/stat` (field 9).
fn is_kernel_thread(pid: u32) -> bool {
    const PF_KTHREAD: u64 = 0x0020_0000;
    let Ok(st) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    st.rfind(')')
        .and_then(|i| st.get(i + 1..))
        .and_then(|rest| rest.split_whitespace().nth(9 - 3))
        .and_then(|f| f.parse::<u64>().ok())
        .is_some_and(|flags| flags & PF_KTHREAD != 0)
}

/// Is this a libpython (any flags: `t` free-threaded, `d` debug, `m`)?
pub fn is_libpython(path: &str) -> bool {
    let Some(name) = path.rsplit('/').next() else {
        return false;
    };
    let Some(rest) = name.strip_prefix("libpython3.") else {
        return false;
    };
    let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
    digits > 0
        && rest[digits..]
            .trim_start_matches(['t', 'd', 'm', 'u'])
            .starts_with(".so")
}

fn runtime_in(bin: &py_spy::binary_parser::BinaryInfo) -> Option<(u64, &'static str)> {
    if let Some(&a) = bin.symbols.get("_PyRuntime") {
        if a != 0 {
            return Some((a, "symbol"));
        }
    }
    if bin.pyruntime_addr != 0 {
        return Some((bin.pyruntime_addr, "section"));
    }
    None
}

/// Finds `_PyRuntime`: first through py-spy's process info, then by
/// scanning every mapped libpython and the executable.
pub fn locate(pid: u32, process: &remoteprocess::Process) -> Result<RuntimeLocation> {
    let maps = read_maps(pid)?;
    let exe_link = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    if maps.is_empty() {
        // No mappings at all: a kernel thread, or a process caught between
        // releasing its memory and becoming a zombie.
        return Err(if is_kernel_thread(pid) {
            ReadError::new(
                ReadErrorKind::NotPython,
                format!("process {pid} is a kernel thread, not CPython"),
            )
        } else {
            ReadError::new(
                ReadErrorKind::NoProcess,
                format!("process {pid} is exiting"),
            )
        }
        .into());
    }

    let mut detected_version = None;
    if let Ok(info) = py_spy::python_process_info::PythonProcessInfo::new(process) {
        let version = py_spy::python_process_info::get_python_version(&info, process)
            .ok()
            .map(|v| {
                (
                    v.major as u32,
                    v.minor as u32,
                    v.patch as u32,
                    v.release_flags.clone(),
                )
            });
        // Only trust a version for a file that is named like Python.
        if exe_link
            .rsplit('/')
            .next()
            .is_some_and(|n| n.contains("python"))
            || info.libpython_binary.is_some()
        {
            detected_version.clone_from(&version);
        }
        let candidates = [
            (info.libpython_binary.as_ref(), true),
            (info.python_binary.as_ref(), false),
        ];
        for (bin, is_lib) in candidates {
            let Some(bin) = bin else { continue };
            if let Some((address, found_by)) = runtime_in(bin) {
                let binary = if is_lib {
                    // py-spy read the maps after us: a libpython mapped in between (a process
                    // just launched) is in a fresh reading. Never a made-up path: without a
                    // mapping that names the file, the scan below decides.
                    let holding = |maps: &[MapEntry]| {
                        maps.iter()
                            .find(|m| {
                                is_libpython(&m.path) && m.start <= bin.addr && bin.addr < m.end
                            })
                            .map(|m| m.path.clone())
                    };
                    match holding(&maps).or_else(|| read_maps(pid).ok().and_then(|m| holding(&m))) {
                        Some(path) => path,
                        None => continue,
                    }
                } else {
                    exe_link.clone()
                };
                return Ok(RuntimeLocation {
                    address,
                    binary,
                    found_by,
                    version,
                });
            }
        }
    }

    // Our own scan: every mapped libpython (any ABI flags), then the executable.
    let mut files: Vec<&MapEntry> = maps
        .iter()
        .filter(|m| m.exec && is_libpython(&m.path))
        .collect();
    files.extend(maps.iter().filter(|m| m.exec && m.path == exe_link));
    for m in files {
        // Read through the target's root so chroots/containers work.
        let host_path = PathBuf::from(format!("/proc/{pid}/root{}", m.path));
        let Ok(bin) = py_spy::binary_parser::parse_binary(&host_path, m.start, m.end - m.start)
        else {
            continue;
        };
        let _ = m.offset;
        if let Some((address, found_by)) = runtime_in(&bin) {
            return Ok(RuntimeLocation {
                address,
                binary: m.path.clone(),
                found_by,
                version: None,
            });
        }
    }
    let exe = if exe_link.is_empty() {
        "?".into()
    } else {
        exe_link
    };
    // A CPython without a runtime structure we know (2.x, 3.0-3.6).
    if let Some((major, minor, micro, flags)) = detected_version {
        return Err(ReadError::new(
            ReadErrorKind::Unsupported,
            format!(
                "process {pid} ({exe}) runs Python {major}.{minor}.{micro}{flags}, which gilscope \
                 does not support (it supports CPython 3.9 to 3.15)"
            ),
        )
        .into());
    }
    Err(ReadError::new(
        ReadErrorKind::NotPython,
        format!(
            "process {pid} ({exe}) does not look like CPython: no _PyRuntime symbol or \
             .PyRuntime section in its executable or any libpython it maps"
        ),
    )
    .into())
}

/// 3.11+ exports `Py_Version`; a cheap cross-check of a version guess.
pub fn version_string(hex: u32) -> String {
    let (major, minor, micro) = (hex >> 24, (hex >> 16) & 0xff, (hex >> 8) & 0xff);
    let level = (hex >> 4) & 0xf;
    let serial = hex & 0xf;
    let suffix = match level {
        0xa => format!("a{serial}"),
        0xb => format!("b{serial}"),
        0xc => format!("rc{serial}"),
        _ => String::new(),
    };
    format!("{major}.{minor}.{micro}{suffix}")
}

pub fn version_hex(major: u32, minor: u32, micro: u32, flags: &str) -> u32 {
    let (level, serial) = if let Some(s) = flags.strip_prefix("rc") {
        (0xc, s.parse().unwrap_or(0))
    } else if let Some(s) = flags.strip_prefix('a') {
        (0xa, s.parse().unwrap_or(0))
    } else if let Some(s) = flags.strip_prefix('b') {
        (0xb, s.parse().unwrap_or(0))
    } else {
        (0xf, 0)
    };
    (major << 24) | (minor << 16) | (micro << 8) | (level << 4) | serial
}

/// Reads a `u32` `PY_VERSION_HEX`-shaped value and checks it is plausible.
pub fn plausible_hex(mem: &dyn Memory, addr: u64) -> Option<u32> {
    let mut b = [0u8; 4];
    mem.read(addr, &mut b).ok()?;
    let v = u32::from_le_bytes(b);
    (v >> 24 == 3 && (v >> 16) & 0xff <= 30).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpython_names() {
        assert!(is_libpython("/usr/lib/libpython3.11.so.1.0"));
        assert!(is_libpython("/opt/p/lib/libpython3.13t.so.1.0"));
        assert!(is_libpython("/x/libpython3.13d.so"));
        assert!(!is_libpython("/x/libpython3.so"));
        assert!(!is_libpython("/x/libpythonista.so"));
    }

    #[test]
    fn version_strings() {
        assert_eq!(version_string(0x030d00f0), "3.13.0");
        assert_eq!(version_string(0x030e00c1), "3.14.0rc1");
        assert_eq!(version_hex(3, 12, 1, ""), 0x030c01f0);
        assert_eq!(version_hex(3, 14, 0, "rc1"), 0x030e00c1);
    }
}
