//! `gilscope summary` output: an aligned table for people, JSON for
//! machines (shape: docs/cli-summary.md).

use std::io::{self, Write};

use crate::analysis::summary::{BlameFrame, HotStack, Summary};

/// The JSON form is the serde form of [`Summary`].
pub fn write_json(out: &mut dyn Write, s: &Summary) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, s)?;
    writeln!(out)
}

#[derive(Clone, Copy)]
enum Align {
    Left,
    Right,
}

/// Render rows as columns separated by two spaces; the first row is the
/// header. Widths count characters, not bytes.
fn table(
    out: &mut dyn Write,
    indent: &str,
    align: &[Align],
    rows: &[Vec<String>],
) -> io::Result<()> {
    let cols = align.len();
    let mut widths = vec![0usize; cols];
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for r in rows {
        let mut line = String::from(indent);
        for (i, cell) in r.iter().enumerate().take(cols) {
            let pad = widths[i].saturating_sub(cell.chars().count());
            let last = i + 1 == cols;
            if i > 0 {
                line.push_str("  ");
            }
            match align[i] {
                Align::Left => {
                    line.push_str(cell);
                    if !last {
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                }
                Align::Right => {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                }
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

fn p(v: f64) -> String {
    format!("{v:.1}%")
}

fn opt_p(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), p)
}

/// Thousands separated by a thin space-free comma: "12,345".
fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Thread names in the thread table are cut (in the middle) to this many characters.
const NAME_WIDTH: usize = 24;

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// The last `n` path components: "lib/python3.13/threading.py" → "threading.py".
fn short_file(file: &str) -> &str {
    file.rsplit('/').next().unwrap_or(file)
}

fn stack_line(h: &HotStack, max_frames: usize) -> String {
    let mut parts: Vec<String> = h
        .frames
        .iter()
        .take(max_frames)
        .map(|f| {
            if f.line > 0 {
                format!("{} ({}:{})", f.function, short_file(&f.file), f.line)
            } else {
                format!("{} ({})", f.function, short_file(&f.file))
            }
        })
        .collect();
    if h.frames.len() > max_frames {
        parts.push(format!("… {} more", h.frames.len() - max_frames));
    }
    if parts.is_empty() {
        "(no Python frames)".to_owned()
    } else {
        parts.join(" ← ")
    }
}

/// Human text: header lines, an interpreter table, a thread table and the
/// hottest stacks while holding each GIL.
pub fn write_text(out: &mut dyn Write, s: &Summary) -> io::Result<()> {
    if let Some(file) = &s.file {
        let v = s
            .format_version
            .map_or(String::new(), |v| format!(" (format {v})"));
        writeln!(out, "Trace {file}{v}")?;
    }
    let mut target = format!("pid {}", s.target.pid);
    if let Some(py) = &s.python {
        target.push_str(&format!(
            ", Python {}{}",
            py.version,
            if py.free_threaded {
                " free-threaded"
            } else {
                ""
            }
        ));
    }
    if let Some(cmd) = &s.target.command {
        target.push_str(&format!(", command: {}", cmd.join(" ")));
    }
    writeln!(out, "Target    {target}")?;
    let achieved = s
        .achieved_hz
        .map_or(String::new(), |a| format!(", achieved {a:.0} Hz"));
    writeln!(
        out,
        "Recorded  {:.3} s, {} samples ({}), asked {:.0} Hz{achieved}",
        s.duration_s,
        count(s.samples),
        s.mode,
        s.rate_hz
    )?;
    if let Some(m) = s.missed_ticks.filter(|&m| m > 0) {
        writeln!(
            out,
            "          {} sampling ticks missed (sampler fell behind)",
            count(m)
        )?;
    }
    if s.sample_errors > 0 {
        let first = s.errors.first().map_or("", |e| e.message.as_str());
        writeln!(
            out,
            "Errors    {} failed sample{} (most common: {})",
            count(s.sample_errors),
            if s.sample_errors == 1 { "" } else { "s" },
            truncate(first, 100)
        )?;
    }
    if let Some(d) = &s.damage {
        writeln!(
            out,
            "warning: the trace is cut short or damaged at byte offset {}: {}; summarizing what comes before",
            d.offset, d.reason
        )?;
    } else if !s.complete {
        writeln!(
            out,
            "note: the recording did not finish cleanly (no end record); summarizing what was written"
        )?;
    }
    for w in &s.warnings {
        writeln!(out, "note: {w}")?;
    }

    writeln!(out)?;
    writeln!(out, "Interpreters")?;
    let mut rows = vec![[
        "ID",
        "KIND",
        "GIL",
        "GIL BUSY",
        "HAND-OVERS",
        "PER S",
        "THREADS",
    ]
    .map(String::from)
    .to_vec()];
    for i in &s.interpreters {
        let g = s.gils.get(i.gil as usize);
        let gil = if i.shares_gil_with.is_empty() {
            if i.own_gil {
                "own".to_owned()
            } else {
                "shared (alone)".to_owned()
            }
        } else {
            let others: Vec<String> = i.shares_gil_with.iter().map(|o| o.to_string()).collect();
            format!("shared with {}", others.join(","))
        };
        let kind = if i.main { "main" } else { "sub" };
        let ended = if i.ended_s.is_some() { " (ended)" } else { "" };
        rows.push(vec![
            i.id.to_string(),
            format!("{kind}{ended}"),
            gil,
            opt_p(i.gil_busy_pct),
            count(g.map_or(0, |g| g.handovers)),
            g.map_or("-".to_owned(), |g| format!("{:.1}", g.handovers_per_s)),
            i.threads.to_string(),
        ]);
    }
    use Align::{Left as L, Right as R};
    table(out, "  ", &[R, L, L, R, R, R, R], &rows)?;

    writeln!(out)?;
    writeln!(out, "Threads (share of each thread's observed time)")?;
    let mut rows = vec![[
        "TID", "NAME", "INTERP", "HELD", "WAITING", "RELEASED", "IDLE", "ON CPU", "SAMPLES",
    ]
    .map(String::from)
    .to_vec()];
    let any_attached = s.threads.iter().any(|t| t.attached_pct > 0.0);
    let any_unknown = s.threads.iter().any(|t| t.unknown_pct > 0.0);
    if any_attached {
        rows[0].insert(7, "ATTACHED".into());
    }
    if any_unknown {
        let at = rows[0].len() - 2;
        rows[0].insert(at, "UNKNOWN".into());
    }
    let names: Vec<&str> = s.threads.iter().map(|t| t.name.as_str()).collect();
    let names = gilscope_ui::shorten_distinct(&names, NAME_WIDTH);
    for (t, mut name) in s.threads.iter().zip(names) {
        if t.ended_s.is_some() {
            name.push_str(" (ended)");
        }
        let interp = match (t.interpreter, t.interpreters.len()) {
            (Some(i), n) if n > 1 => format!("{i}+{}", n - 1),
            (Some(i), _) => i.to_string(),
            (None, _) => "-".to_owned(),
        };
        let mut row = vec![
            t.tid.to_string(),
            name,
            interp,
            p(t.held_pct),
            opt_p(t.waiting_pct),
            p(t.released_pct),
            p(t.idle_pct),
        ];
        if any_attached {
            row.push(p(t.attached_pct));
        }
        if any_unknown {
            row.push(p(t.unknown_pct));
        }
        row.push(p(t.on_cpu_pct));
        row.push(count(t.samples));
        rows.push(row);
    }
    let mut align = vec![R, L, R, R, R, R, R];
    if any_attached {
        align.push(R);
    }
    if any_unknown {
        align.push(R);
    }
    align.extend([R, R]);
    table(out, "  ", &align, &rows)?;
    if s.threads_left_out > 0 {
        writeln!(
            out,
            "  … {} more thread{} left out: the {} most active are shown (--threads N, --all)",
            count(s.threads_left_out as u64),
            if s.threads_left_out == 1 { "" } else { "s" },
            s.threads.len()
        )?;
    }
    if !s.waiting_known {
        writeln!(
            out,
            "  (WAITING is unknown for this trace (no Python metadata); waiting threads count as idle)"
        )?;
    }

    write_parallelism(out, s)?;
    write_handovers(out, s)?;
    write_gc(out, s)?;
    write_blame(out, s)?;

    for g in &s.gils {
        if g.hot_stacks.is_empty() {
            continue;
        }
        writeln!(out)?;
        let interps: Vec<String> = g.interpreters.iter().map(|i| i.to_string()).collect();
        writeln!(
            out,
            "Hottest stacks while holding GIL #{} (interpreter{} {}; held {:.3} s in all)",
            g.index,
            if interps.len() == 1 { "" } else { "s" },
            interps.join(", "),
            g.held_s
        )?;
        let rows: Vec<Vec<String>> = g
            .hot_stacks
            .iter()
            .map(|h| vec![p(h.pct), format!("{:.3} s", h.seconds), stack_line(h, 4)])
            .collect();
        table(out, "  ", &[R, R, L], &rows)?;
    }
    Ok(())
}

fn frames_line(frames: &[BlameFrame], max_frames: usize) -> String {
    let mut parts: Vec<String> = frames
        .iter()
        .take(max_frames)
        .map(|f| {
            if f.line > 0 {
                format!("{} ({}:{})", f.function, short_file(&f.file), f.line)
            } else if f.file.is_empty() {
                f.function.clone()
            } else {
                format!("{} ({})", f.function, short_file(&f.file))
            }
        })
        .collect();
    if frames.len() > max_frames {
        parts.push(format!("… {} more", frames.len() - max_frames));
    }
    if parts.is_empty() {
        "(no Python frames)".to_owned()
    } else {
        parts.join(" ← ")
    }
}

fn who(tid: Option<u32>, name: Option<&str>) -> String {
    match (tid, name) {
        (Some(t), Some(n)) => format!("{t} {}", truncate(n, NAME_WIDTH)),
        (Some(t), None) => t.to_string(),
        _ => "(none seen)".to_owned(),
    }
}

fn write_parallelism(out: &mut dyn Write, s: &Summary) -> io::Result<()> {
    let p = &s.parallelism;
    writeln!(out)?;
    writeln!(
        out,
        "Parallelism  {:.2} threads holding a GIL at once on average (max {}), {:.2} on a CPU",
        p.gil_holders_mean, p.gil_holders_max, p.on_cpu_mean
    )
}

fn write_handovers(out: &mut dyn Write, s: &Summary) -> io::Result<()> {
    let rows: Vec<Vec<String>> = s
        .interpreters
        .iter()
        .filter_map(|i| {
            i.handovers.as_ref().map(|h| {
                vec![
                    i.id.to_string(),
                    count(h.count),
                    format!("{:.3} ms", h.latency_p50_s * 1e3),
                    format!("{:.3} ms", h.latency_p99_s * 1e3),
                ]
            })
        })
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    writeln!(out)?;
    writeln!(
        out,
        "GIL hand-overs (exact: a drop while another thread waited → the next take)"
    )?;
    let mut all = vec![["INTERP", "HAND-OVERS", "LATENCY P50", "P99"]
        .map(String::from)
        .to_vec()];
    all.extend(rows);
    use Align::Right as R;
    table(out, "  ", &[R, R, R, R], &all)
}

fn write_gc(out: &mut dyn Write, s: &Summary) -> io::Result<()> {
    let rows: Vec<Vec<String>> = s
        .interpreters
        .iter()
        .filter(|i| i.gc.collections > 0)
        .map(|i| {
            let g = &i.gc;
            let trigger = g
                .longest_trigger
                .as_ref()
                .map_or_else(String::new, |f| frames_line(std::slice::from_ref(f), 1));
            vec![
                i.id.to_string(),
                count(g.collections),
                format!("{:.3} s", g.seconds),
                format!("{:.3} s", g.longest_seconds),
                who(g.longest_tid, g.longest_thread_name.as_deref()),
                trigger,
            ]
        })
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    writeln!(out)?;
    writeln!(out, "Garbage collection pauses")?;
    let mut all = vec![[
        "INTERP",
        "COLLECTIONS",
        "TOTAL",
        "LONGEST",
        "BY THREAD",
        "TRIGGERED AT",
    ]
    .map(String::from)
    .to_vec()];
    all.extend(rows);
    use Align::{Left as L, Right as R};
    table(out, "  ", &[R, R, R, R, L, L], &all)
}

fn write_blame(out: &mut dyn Write, s: &Summary) -> io::Result<()> {
    if s.blame.is_empty() {
        return Ok(());
    }
    writeln!(out)?;
    writeln!(out, "Who held the GIL while others waited")?;
    let mut rows = vec![["WAITED", "WAITER", "HOLDER", "HOLDER'S CODE"]
        .map(String::from)
        .to_vec()];
    for b in s.blame.iter().take(10) {
        let mut first = true;
        for st in b.holder_stacks.iter().take(3) {
            rows.push(vec![
                if first {
                    format!("{:.3} s", b.seconds)
                } else {
                    String::new()
                },
                if first {
                    who(Some(b.waiter_tid), Some(&b.waiter_name))
                } else {
                    String::new()
                },
                if first {
                    who(b.holder_tid, b.holder_name.as_deref())
                } else {
                    String::new()
                },
                format!("{:.3} s  {}", st.seconds, frames_line(&st.frames, 4)),
            ]);
            first = false;
        }
    }
    use Align::{Left as L, Right as R};
    table(out, "  ", &[R, L, L, L], &rows)?;
    if s.blame.len() > 10 {
        writeln!(
            out,
            "  … {} more pairs (summary --json has them all)",
            s.blame.len() - 10
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_tables_align() {
        assert_eq!(count(0), "0");
        assert_eq!(count(1234), "1,234");
        assert_eq!(count(1234567), "1,234,567");
        let mut out = Vec::new();
        let rows = vec![
            vec!["A".to_owned(), "NAME".to_owned()],
            vec!["100".to_owned(), "é".to_owned()],
        ];
        table(&mut out, "", &[Align::Right, Align::Left], &rows).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "  A  NAME\n100  é\n");
    }
}
