//! `gilscope dump` output: human text grouped by interpreter, or JSON.

use std::io::{self, Write};

use crate::model::{GilState, Snapshot, ThreadInfo};

/// The JSON form is the serde form of [`Snapshot`] (docs/cli.md).
pub fn write_json(out: &mut dyn Write, snap: &Snapshot) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, snap)?;
    writeln!(out)
}

fn thread_label(t: &ThreadInfo) -> String {
    // 3.14+ name OS threads after `threading` names, truncated to 15 bytes.
    if t.os_name.is_empty() || t.name.starts_with(&t.os_name) {
        format!("{} \"{}\"", t.tid, t.name)
    } else {
        format!("{} \"{}\" (os: {})", t.tid, t.name, t.os_name)
    }
}

fn state_text(t: &ThreadInfo, free_threaded_disabled: bool) -> String {
    let cpu = if t.on_cpu { "on CPU" } else { "off CPU" };
    let s = match t.gil_state {
        GilState::Held => "HOLDS the GIL",
        GilState::Waiting => "waiting for the GIL",
        GilState::Released => "running without the GIL",
        GilState::Idle => "idle (GIL released)",
        GilState::Attached => "running (GIL disabled)",
        GilState::Unknown => "GIL state unknown (changed during reading)",
    };
    if free_threaded_disabled && t.gil_state == GilState::Idle {
        return format!("idle, {cpu}");
    }
    format!("{s}, {cpu}")
}

/// Human text: one block per interpreter with its GIL and threads, stacks
/// innermost first; frames that run in another interpreter say so.
pub fn write_text(out: &mut dyn Write, snap: &Snapshot) -> io::Result<()> {
    let py = &snap.python;
    writeln!(
        out,
        "Process {}: Python {}{} ({})",
        snap.pid,
        py.version,
        if py.free_threaded {
            " free-threaded"
        } else {
            ""
        },
        py.binary
    )?;
    writeln!(
        out,
        "{} interpreter{}, {} Python thread{}",
        snap.interpreters.len(),
        if snap.interpreters.len() == 1 {
            ""
        } else {
            "s"
        },
        snap.threads.len(),
        if snap.threads.len() == 1 { "" } else { "s" },
    )?;
    for interp in &snap.interpreters {
        writeln!(out)?;
        let kind = if interp.main {
            "main"
        } else {
            "sub-interpreter"
        };
        let gil_kind = if interp.own_gil {
            "own GIL".to_string()
        } else {
            let sharer = snap
                .interpreters
                .iter()
                .find(|o| o.id != interp.id && o.gil.address == interp.gil.address && o.own_gil)
                .map(|o| o.id);
            match sharer {
                Some(id) => format!("shares the GIL of interpreter {id}"),
                None => "shared GIL".to_string(),
            }
        };
        let g = &interp.gil;
        let gil_state = if !g.enabled {
            "GIL disabled".to_string()
        } else if let Some(tid) = g.holder_tid {
            let name = snap.thread(tid).map(|t| t.name.as_str()).unwrap_or("?");
            format!("held by {tid} \"{name}\"")
        } else if g.locked {
            "locked, holder unknown".to_string()
        } else {
            "free".to_string()
        };
        if g.enabled {
            // Free-threaded builds with the GIL switched on: for good, or for now.
            let ft = g
                .free_threaded_state
                .as_deref()
                .map(|s| format!(", free-threaded GIL {s}"))
                .unwrap_or_default();
            writeln!(
                out,
                "Interpreter {} ({kind}, {gil_kind}): {gil_state}, {} switches{ft}",
                interp.id, g.switch_number
            )?;
        } else {
            // No lock at all: no switches to count, nothing more to say.
            writeln!(
                out,
                "Interpreter {} ({kind}, {gil_kind}): {gil_state}",
                interp.id
            )?;
        }
        let threads: Vec<&ThreadInfo> = snap
            .threads
            .iter()
            .filter(|t| t.interpreter == interp.id)
            .collect();
        if threads.is_empty() {
            writeln!(out, "  (no threads running in it)")?;
        }
        for t in threads {
            writeln!(
                out,
                "  Thread {}: {}",
                thread_label(t),
                state_text(t, !g.enabled)
            )?;
            if t.frames.is_empty() {
                writeln!(out, "      (no Python frames)")?;
            }
            for f in &t.frames {
                let other = if f.interpreter != t.interpreter {
                    format!("  [interpreter {}]", f.interpreter)
                } else {
                    String::new()
                };
                writeln!(out, "      {} ({}:{}){other}", f.function, f.file, f.line)?;
            }
        }
    }
    for w in &snap.warnings {
        writeln!(out, "\nwarning: {w}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A free-threaded 3.13t process with its GIL disabled (a real `dump --json`, trimmed).
    const FT_DISABLED: &str = r#"{"pid": 6840, "time_ns": 1,
      "python": {"version": "3.13.15", "version_hex": 51187696, "free_threaded": true,
                 "binary": "/x/libpython3.13t.so.1.0", "runtime_found_by": "symbol",
                 "offsets_from": "debug_offsets"},
      "interpreters": [{"id": 0, "main": true, "own_gil": true,
        "gil": {"enabled": false, "locked": false, "holder_tid": null, "switch_number": 1,
                "address": 4096, "free_threaded_state": "disabled"},
        "address": 8192}],
      "threads": [{"tid": 6840, "start_ticks": 5, "name": "MainThread", "os_name": "python3.13t",
        "interpreter": 0, "holds_gil": false, "gil_state": "idle", "on_cpu": false,
        "frames": [], "thread_states": [{"interpreter": 0, "address": 12288, "current": true}],
        "interpreter_evidence": "only"}],
      "retries": 0}"#;

    #[test]
    fn a_disabled_gil_is_said_once() {
        let mut snap: Snapshot = serde_json::from_str(FT_DISABLED).expect("snapshot JSON");
        let text = |snap: &Snapshot| {
            let mut out = Vec::new();
            write_text(&mut out, snap).expect("writes");
            String::from_utf8(out).expect("utf-8")
        };
        let s = text(&snap);
        assert!(
            s.lines()
                .any(|l| l == "Interpreter 0 (main, own GIL): GIL disabled"),
            "{s}"
        );
        assert_eq!(s.matches("disabled").count(), 1, "{s}");
        // Switched on (PYTHON_GIL=1): switches and how it was enabled are worth saying.
        snap.interpreters[0].gil.enabled = true;
        snap.interpreters[0].gil.free_threaded_state = Some("permanent".into());
        let s = text(&snap);
        assert!(
            s.contains(
                "Interpreter 0 (main, own GIL): free, 1 switches, free-threaded GIL permanent"
            ),
            "{s}"
        );
    }
}
