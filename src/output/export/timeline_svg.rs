//! A small SVG timeline: one lane per GIL (busy / free) and one per thread,
//! coloured by GIL state, on a fixed 960-pixel-wide canvas. Each pixel column
//! of a lane takes the colour of the state that filled most of it. Made for
//! documentation and reports; for exploring, export to Perfetto.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::Path;

use anyhow::Result;

use crate::model::snapshot::GilState;
use crate::model::timeline::{Event, STATES};
use crate::trace::{replay, TraceReader};

const WIDTH: u64 = 960;
const LABEL_W: u64 = 190;
const PLOT_W: u64 = WIDTH - LABEL_W - 20;
const LANE_H: u64 = 14;
const LANE_STEP: u64 = 18;
const TOP: u64 = 48;

/// The colour of each state (same order as [`STATES`]).
pub fn state_colour(s: GilState) -> &'static str {
    match s {
        GilState::Held => "#d62728",
        GilState::Waiting => "#ff7f0e",
        GilState::Released => "#2ca02c",
        GilState::Idle => "#d9d9d9",
        GilState::Attached => "#1f77b4",
        GilState::Unknown => "#9467bd",
    }
}

const GIL_BUSY: &str = "#404040";
const GIL_FREE: &str = "#f0f0f0";

struct Lane {
    label: String,
    /// Per pixel column, ns per class (states, or free/busy for GILs).
    cols: Vec<[u64; 6]>,
}

struct Scale {
    start: u64,
    dur: u64,
}

impl Scale {
    /// Time at the left edge of pixel column `p`.
    fn t(&self, p: u64) -> u64 {
        self.start + (u128::from(p) * u128::from(self.dur) / u128::from(PLOT_W)) as u64
    }

    fn col(&self, t: u64) -> u64 {
        ((u128::from(t.saturating_sub(self.start)) * u128::from(PLOT_W)) / u128::from(self.dur))
            as u64
    }

    fn add(&self, cols: &mut [[u64; 6]], s: u64, e: u64, class: usize) {
        if e <= s {
            return;
        }
        let first = self.col(s).min(PLOT_W - 1);
        let last = self.col(e.saturating_sub(1)).min(PLOT_W - 1);
        for p in first..=last {
            let lo = s.max(self.t(p));
            let hi = e.min(self.t(p + 1));
            if hi > lo {
                cols[p as usize][class] += hi - lo;
            }
        }
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn fmt_time(ns: u64) -> String {
    if ns == 0 {
        "0".to_string()
    } else if ns >= 1_000_000_000 {
        let s = ns as f64 / 1e9;
        format!("{s:.1} s").replace(".0 s", " s")
    } else if ns >= 1_000_000 {
        format!("{} ms", ns / 1_000_000)
    } else {
        format!("{} µs", ns / 1_000)
    }
}

/// Read `trace` (twice: threads from the model, GIL runs streamed) and draw it.
pub fn write_file(trace: &Path, name: &str, out: &mut dyn Write) -> Result<()> {
    let rp = replay(trace)?;
    let tl = &rp.timeline;
    let (Some(start), Some(end)) = (tl.start_ns, tl.end_ns) else {
        anyhow::bail!("{name}: the trace holds no timed event: nothing to draw");
    };
    let scale = Scale {
        start,
        dur: end.saturating_sub(start).max(1),
    };
    let blank = || vec![[0u64; 6]; PLOT_W as usize];
    let mut lanes: Vec<Lane> = Vec::new();
    for g in &tl.gils {
        let interps: Vec<String> = tl
            .interpreters_on_gil(g.idx)
            .iter()
            .map(|i| i.to_string())
            .collect();
        lanes.push(Lane {
            label: format!("GIL {} (interp {})", g.idx, interps.join(",")),
            cols: blank(),
        });
    }
    let gil_lanes = lanes.len();
    stream_gil_runs(TraceReader::open(trace)?, &scale, &mut lanes)?;
    let mut threads: Vec<_> = tl.threads.iter().collect();
    threads.sort_by_key(|t| (t.main_interpreter().unwrap_or(i64::MAX), t.idx));
    for t in threads {
        let mut cols = blank();
        for iv in &t.intervals {
            let class = STATES.iter().position(|s| *s == iv.state).unwrap_or(5);
            scale.add(&mut cols, iv.start_ns, iv.end_ns, class);
        }
        // At most 28 characters; the name is cut in the middle, the TID kept.
        let tid = format!(" ({})", t.tid);
        let label = format!(
            "{}{tid}",
            gilscope_ui::shorten_middle(&t.name, 28usize.saturating_sub(tid.len()))
        );
        lanes.push(Lane { label, cols });
    }
    let height = TOP + LANE_STEP * lanes.len() as u64 + 40;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="Verdana, sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        s,
        r#"<rect width="{WIDTH}" height="{height}" fill="white"/><text x="10" y="18" font-size="14">GIL state timeline — {} — {}</text>"#,
        esc(name),
        fmt_time(scale.dur)
    );
    // Time axis.
    let mut step = 1u64;
    while scale.dur / step > 8 {
        step = match step.to_string().as_bytes()[0] {
            b'1' => step * 2,
            b'2' => step / 2 * 5,
            _ => step * 2,
        };
    }
    let mut t = 0;
    while t <= scale.dur {
        let x = LABEL_W + scale.col(start + t);
        let _ = writeln!(
            s,
            r##"<line x1="{x}" y1="{}" x2="{x}" y2="{}" stroke="#bbbbbb"/><text x="{x}" y="{}" text-anchor="middle" fill="#555555">{}</text>"##,
            TOP - 8,
            TOP + LANE_STEP * lanes.len() as u64,
            TOP - 11,
            fmt_time(t)
        );
        t += step;
    }
    for (i, lane) in lanes.iter().enumerate() {
        let y = TOP + LANE_STEP * i as u64;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            LABEL_W - 6,
            y + LANE_H - 3,
            esc(&lane.label)
        );
        let is_gil = i < gil_lanes;
        let mut runs: Vec<(u64, u64, usize)> = Vec::new();
        for (p, c) in lane.cols.iter().enumerate() {
            let total: u64 = c.iter().sum();
            if total == 0 {
                continue;
            }
            let mut best = 0;
            for k in 1..6 {
                if c[k] > c[best] {
                    best = k;
                }
            }
            let p = p as u64;
            match runs.last_mut() {
                Some((_, e, k)) if *e == p && *k == best => *e = p + 1,
                _ => runs.push((p, p + 1, best)),
            }
        }
        for (a, b, k) in runs {
            let (fill, what) = if is_gil {
                if k == 1 {
                    (GIL_BUSY, "busy")
                } else {
                    (GIL_FREE, "free")
                }
            } else {
                (state_colour(STATES[k]), STATES[k].as_str())
            };
            let _ = writeln!(
                s,
                r#"<rect x="{}" y="{y}" width="{}" height="{LANE_H}" fill="{fill}"><title>{what}</title></rect>"#,
                LABEL_W + a,
                b - a
            );
        }
    }
    // Legend.
    let y = TOP + LANE_STEP * lanes.len() as u64 + 12;
    let mut x = LABEL_W;
    let mut items: Vec<(&str, &str)> = STATES
        .iter()
        .map(|st| (state_colour(*st), st.as_str()))
        .collect();
    items.push((GIL_BUSY, "GIL busy"));
    for (fill, what) in items {
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="{y}" width="12" height="12" fill="{fill}"/><text x="{}" y="{}">{what}</text>"#,
            x + 16,
            y + 10
        );
        x += 24 + 7 * what.len() as u64 + 10;
    }
    s.push_str("</svg>\n");
    out.write_all(s.as_bytes())?;
    Ok(())
}

fn stream_gil_runs<R: Read>(
    mut reader: TraceReader<R>,
    scale: &Scale,
    lanes: &mut [Lane],
) -> Result<()> {
    while let Some(e) = reader.next_event()? {
        if let Event::GilRun(g) = e {
            if let Some(lane) = lanes.get_mut(g.gil as usize) {
                let busy = usize::from(g.enabled && g.locked);
                scale.add(&mut lane.cols, g.start_ns, g.end_ns, busy);
            }
        }
    }
    Ok(())
}
