//! Rendering: a pure function of `(App, ViewModel)` into a ratatui frame.
//! Lanes and strips are written cell by cell into the buffer (one pass over
//! the visible window per lane); text goes through `Buffer::set_stringn`.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::widgets::{Block, Borders, Clear, Widget};
use ratatui::Frame;

use crate::app::{Areas, Row, SortBy, MIN_H, MIN_W};
use crate::theme::{bar, glyph, Theme, GIL_DISABLED};
use crate::timefmt::{duration, ticks};
use crate::view::{HotStack, InterpView, LaneState, ThreadView, ViewModel};
use crate::App;

impl App {
    /// Draw the whole screen. Never changes the app: the same `(App,
    /// ViewModel)` always gives the same screen.
    pub fn draw(&self, frame: &mut Frame, vm: &ViewModel) {
        let area = frame.area();
        let sized;
        // Lay out for the frame actually being drawn, even if no Resize
        // input has told us about it yet.
        let app = if self.size == (area.width, area.height) {
            self
        } else {
            let mut a = self.clone();
            a.size = (area.width, area.height);
            sized = a;
            &sized
        };
        app.render(frame.buffer_mut(), vm);
    }

    /// Render into a buffer whose area is `(0, 0, size)`.
    pub(crate) fn render(&self, buf: &mut Buffer, vm: &ViewModel) {
        let areas = self.areas();
        let theme = self.opts.theme;
        if areas.too_small {
            let msg = format!("terminal too small: need {MIN_W}×{MIN_H}");
            put(buf, 0, 0, &msg, areas.title.width, theme.alert());
            return;
        }
        let (a, b) = self.window(vm);
        self.draw_title(buf, &areas, vm, a, b);
        if self.table {
            self.draw_table(buf, &areas, vm, a, b);
        } else {
            self.draw_axis(buf, &areas, vm, a, b);
            self.draw_lanes(buf, &areas, vm, a, b);
        }
        if let Some(panel) = areas.panel {
            if let Some((i, th)) = self.selected.and_then(|k| vm.thread(k)) {
                self.draw_panel(buf, panel, vm, &vm.interpreters[i], th, a, b);
            }
        }
        self.draw_legend(buf, &areas, vm);
        if self.help {
            self.draw_help(buf, vm);
        }
    }

    fn draw_title(&self, buf: &mut Buffer, areas: &Areas, vm: &ViewModel, a: u64, b: u64) {
        let theme = self.opts.theme;
        let r = areas.title;
        buf.set_style(r, theme.title());
        let mode = if vm.live { "top" } else { "view" };
        let left = if vm.title.is_empty() {
            format!(" gilscope {mode}")
        } else {
            format!(" gilscope {mode} · {}", vm.title)
        };
        let origin = vm.time_range.start_ns;
        let dur = duration(vm.time_range.duration_ns());
        let span = format!(
            "{}–{}",
            duration(a.saturating_sub(origin)),
            duration(b.saturating_sub(origin))
        );
        let threads = vm.thread_count();
        let mut status = String::new();
        if vm.live {
            status.push_str(if self.paused(vm) {
                " ‖ PAUSED"
            } else {
                " ● LIVE"
            });
        }
        let rec_long = vm
            .recording
            .as_ref()
            .map(|p| format!(" ● REC {p}"))
            .unwrap_or_default();
        let rec_short = if vm.recording.is_some() {
            " ● REC"
        } else {
            ""
        };
        let candidates = [
            format!("{threads} threads · {dur} · window {span}{status}{rec_long} "),
            format!("{dur} · window {span}{status}{rec_long} "),
            format!("{dur} · window {span}{status}{rec_short} "),
            format!("{span}{status}{rec_short} "),
            format!("{status}{rec_short} "),
        ];
        let room = r
            .width
            .saturating_sub(left.chars().count().min(r.width as usize / 2) as u16 + 1);
        let right = fit(&candidates, room as usize);
        let rw = right.chars().count() as u16;
        let lw = r.width.saturating_sub(rw + 1);
        put(
            buf,
            r.x,
            r.y,
            &ellipsize_end(&left, lw as usize),
            lw,
            theme.title(),
        );
        put(buf, r.x + r.width - rw, r.y, &right, rw, theme.title());
    }

    fn draw_axis(&self, buf: &mut Buffer, areas: &Areas, vm: &ViewModel, a: u64, b: u64) {
        let theme = self.opts.theme;
        let Some(axis) = areas.axis else { return };
        let lanes = areas.lanes();
        // Label column: where in the list we are, when it does not all fit.
        let rows = App::lane_rows(vm);
        let visible = areas.body.height as usize;
        let label = if rows.len() > visible {
            let top = self.effective_scroll(vm);
            let shown: Vec<usize> = rows[top..(top + visible).min(rows.len())]
                .iter()
                .filter_map(|r| match r {
                    Row::Thread(i, t) => Some(thread_number(vm, *i, *t)),
                    Row::Interp(_) | Row::Parallel => None,
                })
                .collect();
            match (shown.first(), shown.last()) {
                (Some(f), Some(l)) => format!(
                    "{}threads {}–{}/{}",
                    if top > 0 { "↑" } else { "↓" },
                    f + 1,
                    l + 1,
                    vm.thread_count()
                ),
                _ => String::new(),
            }
        } else {
            format!("span {}", duration(b - a))
        };
        put(buf, axis.x, axis.y, &label, areas.label_w - 1, theme.dim());
        for (col, text) in ticks(vm.time_range.start_ns, a, b, lanes.width as usize) {
            let x = lanes.x + col as u16;
            let w = lanes.x + lanes.width - x;
            put(buf, x, axis.y, &text, w, theme.dim());
        }
    }

    fn draw_lanes(&self, buf: &mut Buffer, areas: &Areas, vm: &ViewModel, a: u64, b: u64) {
        let theme = self.opts.theme;
        let body = areas.body;
        let lanes = areas.lanes();
        let rows = App::lane_rows(vm);
        if rows.is_empty() {
            put(
                buf,
                body.x + 1,
                body.y,
                "no threads seen yet",
                body.width.saturating_sub(1),
                theme.dim(),
            );
            return;
        }
        let top = self.effective_scroll(vm);
        let cols = lanes.width as usize;
        for (n, row) in rows.iter().skip(top).take(body.height as usize).enumerate() {
            let y = body.y + n as u16;
            match *row {
                Row::Parallel => {
                    let mean = vm.parallel.mean(a, b).unwrap_or(0.0);
                    let candidates = [
                        format!("GIL holders at once ({mean:.2} avg)"),
                        format!("holders {mean:.2}"),
                        "holders".to_string(),
                    ];
                    let text = fit(&candidates, areas.label_w as usize - 1);
                    put(buf, body.x, y, &text, areas.label_w - 1, theme.heading());
                    let style = theme.state(LaneState::Held);
                    for (c, cell) in vm.parallel.cells(a, b, cols).into_iter().enumerate() {
                        let ch = match cell {
                            None => ' ',
                            Some(m) => holders_glyph(m),
                        };
                        buf[(lanes.x + c as u16, y)].set_char(ch).set_style(style);
                    }
                }
                Row::Interp(i) => {
                    let it = &vm.interpreters[i];
                    let text = interp_label(vm, it, a, b, areas.label_w as usize - 1);
                    put(buf, body.x, y, &text, areas.label_w - 1, theme.heading());
                    match vm.gil_of(it) {
                        Some(g) => {
                            let style = theme.gil();
                            for (c, cell) in g.track.cells(a, b, cols).into_iter().enumerate() {
                                let ch = match cell {
                                    None => ' ',
                                    Some(t) if t.mostly_disabled() => GIL_DISABLED,
                                    Some(t) => bar(t.busy_fraction().unwrap_or(0.0)),
                                };
                                buf[(lanes.x + c as u16, y)].set_char(ch).set_style(style);
                            }
                        }
                        None => {
                            put(buf, lanes.x, y, "(GIL not known)", lanes.width, theme.dim());
                        }
                    }
                }
                Row::Thread(i, t) => {
                    let th = &vm.interpreters[i].threads[t];
                    let sel = self.selected == Some(th.key);
                    let text = thread_label(th, sel, areas.label_w as usize - 1);
                    let style = if sel { theme.selected() } else { Style::new() };
                    put(buf, body.x, y, &text, areas.label_w - 1, style);
                    draw_lane(buf, &theme, th, a, b, lanes.x, y, cols);
                }
            }
        }
    }

    fn draw_table(&self, buf: &mut Buffer, areas: &Areas, vm: &ViewModel, a: u64, b: u64) {
        let theme = self.opts.theme;
        let body = areas.body;
        let cols = table_columns(body.width, longest_name(vm));
        let rows = self.table_rows(vm);
        let attached = rows.iter().any(|r| r.times.get(LaneState::Attached) > 0);
        let held = rows.iter().any(|r| r.times.get(LaneState::Held) > 0);
        // Header.
        buf.set_style(Rect { height: 1, ..body }, theme.heading());
        for c in &cols {
            let mut name = match c.kind {
                Col::Sort(SortBy::Held) if attached && held => "Hld+At%".to_string(),
                Col::Sort(SortBy::Held) if attached => "Attch%".to_string(),
                _ => c.header.to_string(),
            };
            if c.kind == Col::Sort(self.sort) {
                name.push(if self.sort_desc { '▼' } else { '▲' });
            }
            let text = if c.right {
                format!("{name:>w$}", w = c.w as usize)
            } else {
                name
            };
            put(buf, c.x, body.y, &text, c.w, theme.heading());
        }
        let top = self.effective_scroll(vm);
        let list = areas.list_rows(true);
        if rows.is_empty() {
            put(
                buf,
                body.x + 1,
                body.y + 1,
                "no threads seen yet",
                body.width.saturating_sub(1),
                theme.dim(),
            );
        }
        for (n, r) in rows.iter().skip(top).take(list).enumerate() {
            let y = body.y + 1 + n as u16;
            let it = &vm.interpreters[r.interp];
            let th = &it.threads[r.thread];
            let sel = self.selected == Some(th.key);
            if sel {
                buf.set_style(Rect::new(body.x, y, body.width, 1), theme.selected());
            }
            let base = if sel { theme.selected() } else { Style::new() };
            for c in &cols {
                let text = match c.kind {
                    Col::Sort(SortBy::Thread) => {
                        let name =
                            ellipsize_middle(&display_name(th), (c.w as usize).saturating_sub(1));
                        format!("{}{name}", if sel { '▶' } else { ' ' })
                    }
                    Col::Sort(SortBy::Tid) => format!("{:>w$}", th.key.tid, w = c.w as usize),
                    Col::Sort(SortBy::Interp) => format!("{:>w$}", it.id, w = c.w as usize),
                    Col::Sort(SortBy::Held) => pct_cell(r.held_pct(), &r.times, c.w),
                    Col::Sort(SortBy::Waiting) => {
                        pct_cell(r.times.pct(LaneState::Waiting), &r.times, c.w)
                    }
                    Col::Sort(SortBy::Released) => {
                        pct_cell(r.times.pct(LaneState::Released), &r.times, c.w)
                    }
                    Col::Sort(SortBy::Idle) => {
                        pct_cell(r.times.pct(LaneState::Idle), &r.times, c.w)
                    }
                    Col::Sort(SortBy::OnCpu) => pct_cell(r.times.on_cpu_pct(), &r.times, c.w),
                    Col::Activity => {
                        draw_lane(buf, &theme, th, a, b, c.x, y, c.w as usize);
                        continue;
                    }
                };
                put(buf, c.x, y, &text, c.w, base);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn draw_panel(
        &self,
        buf: &mut Buffer,
        area: Rect,
        vm: &ViewModel,
        it: &InterpView,
        th: &ThreadView,
        a: u64,
        b: u64,
    ) {
        let theme = self.opts.theme;
        Clear.render(area, buf);
        let t = th.lane.times(a, b);
        let gil_off = vm.gil_of(it).is_some_and(|g| {
            g.track
                .times(vm.time_range.start_ns, vm.time_range.end_ns)
                .mostly_disabled()
        });
        let held_word = if gil_off { "attached" } else { "held" };
        let held_pct = t.pct(LaneState::Held) + t.pct(LaneState::Attached);
        let candidates = [
            format!(
                "─ {} · tid {} · interp {} · in window: {held_word} {:.1}% · waiting {:.1}% · on CPU {:.1}% ",
                display_name(th),
                th.key.tid,
                it.id,
                held_pct,
                t.pct(LaneState::Waiting),
                t.on_cpu_pct()
            ),
            format!(
                "─ {} · tid {} · {held_word} {:.0}% wait {:.0}% CPU {:.0}% ",
                display_name(th),
                th.key.tid,
                held_pct,
                t.pct(LaneState::Waiting),
                t.on_cpu_pct()
            ),
            format!("─ {} · tid {} ", display_name(th), th.key.tid),
        ];
        let head = fit(&candidates, area.width as usize);
        buf.set_stringn(
            area.x,
            area.y,
            "─".repeat(area.width as usize),
            area.width as usize,
            theme.dim(),
        );
        put(buf, area.x, area.y, &head, area.width, theme.accent());
        let inner = Rect {
            y: area.y + 1,
            height: area.height - 1,
            ..area
        };
        let (left, right) = if inner.width >= 60 {
            let lw = inner.width / 2;
            (
                Rect {
                    width: lw - 1,
                    ..inner
                },
                Rect {
                    x: inner.x + lw + 1,
                    width: inner.width - lw - 1,
                    ..inner
                },
            )
        } else {
            let th_ = inner.height / 2;
            (
                Rect {
                    height: th_,
                    ..inner
                },
                Rect {
                    y: inner.y + th_,
                    height: inner.height - th_,
                    ..inner
                },
            )
        };
        if inner.width >= 60 {
            for y in inner.y..inner.y + inner.height {
                buf[(inner.x + inner.width / 2, y)]
                    .set_char('│')
                    .set_style(theme.dim());
            }
        }
        let held_title = if gil_off {
            "Attached (GIL disabled): hottest stacks"
        } else {
            "Holding the GIL: hottest stacks"
        };
        draw_stacks(
            buf,
            &theme,
            left,
            held_title,
            &th.hot_stacks_held,
            theme.state(if gil_off {
                LaneState::Attached
            } else {
                LaneState::Held
            }),
        );
        let (right, blame) = if th.waited_for.is_empty() || right.height < 6 {
            (right, None)
        } else {
            let h = right.height / 2;
            (
                Rect { height: h, ..right },
                Some(Rect {
                    y: right.y + h,
                    height: right.height - h,
                    ..right
                }),
            )
        };
        draw_stacks(
            buf,
            &theme,
            right,
            "Waiting for the GIL: hottest stacks",
            &th.hot_stacks_waiting,
            theme.state(LaneState::Waiting),
        );
        if let Some(area) = blame {
            draw_waited_for(buf, &theme, area, &th.waited_for);
        }
    }

    fn draw_legend(&self, buf: &mut Buffer, areas: &Areas, vm: &ViewModel) {
        let theme = self.opts.theme;
        let r = areas.legend;
        let end = r.x + r.width;
        let short = |s: LaneState| -> &'static str {
            match s {
                LaneState::Released => "rel",
                LaneState::Waiting => "wait",
                LaneState::Unknown => "unkn",
                LaneState::Attached => "attach",
                _ => s.as_str(),
            }
        };
        // (glyph-label separator, short labels, GIL text)
        let variants = [
            (" ", false, " GIL busy"),
            ("", false, " GIL"),
            ("", true, " GIL"),
        ];
        let has_gc = vm.has_gc();
        let states: Vec<LaneState> = LaneState::ALL
            .into_iter()
            .filter(|s| *s != LaneState::Gc || has_gc)
            .collect();
        let legend_len = |(sep, sh, gil): (&str, bool, &str)| -> usize {
            states
                .iter()
                .map(|s| 1 + sep.len() + if sh { short(*s) } else { s.as_str() }.len() + 1)
                .sum::<usize>()
                + 3
                + gil.len()
        };
        let (sep, sh, gil) = variants
            .iter()
            .copied()
            .find(|v| legend_len(*v) + 15 <= r.width as usize)
            .unwrap_or(variants[2]);
        let mut x = r.x;
        for &s in &states {
            let g = glyph(s).to_string();
            x = put(buf, x, r.y, &g, end - x, theme.state(s));
            let label = format!("{sep}{} ", if sh { short(s) } else { s.as_str() });
            x = put(buf, x, r.y, &label, end - x, Style::new());
        }
        x = put(buf, x, r.y, "▁▄█", end - x, theme.gil());
        x = put(buf, x, r.y, gil, end - x, Style::new());
        let hints: Vec<String> = if let Some(n) = &vm.notice {
            vec![format!(" {n}")]
        } else if vm.live {
            vec![
                " space pause · r record · ? help · q quit".into(),
                " spc pause r rec ? help q quit".into(),
                " ? help q quit".into(),
            ]
        } else {
            vec![
                " enter stacks · t table · ? help · q quit".into(),
                " ? help q quit".into(),
            ]
        };
        let room = (end - x).saturating_sub(1) as usize;
        let h = fit(&hints, room);
        let hw = h.chars().count() as u16;
        let style = if vm.notice.is_some() {
            theme.accent()
        } else {
            theme.dim()
        };
        put(buf, end - hw, r.y, &h, hw, style);
    }

    fn draw_help(&self, buf: &mut Buffer, vm: &ViewModel) {
        let theme = self.opts.theme;
        let (w, h) = self.size;
        let mut lines: Vec<(String, Style)> = vec![
            (
                "←/→ h/l  pan          H/L ⇧←/→  pan a whole window".into(),
                Style::new(),
            ),
            (
                "+/- wheel  zoom (at the pointer)   0  fit / reset".into(),
                Style::new(),
            ),
            (
                "g/Home  jump to start      G/End  jump to end".into(),
                Style::new(),
            ),
            (
                "↑/↓ j/k  select thread     PgUp/PgDn  by page".into(),
                Style::new(),
            ),
            (
                "Enter / click  hottest stacks of the thread".into(),
                Style::new(),
            ),
            (
                "t  thread table   </>/s or 1-8  sort   i  reverse".into(),
                Style::new(),
            ),
        ];
        if vm.live {
            lines.push((
                "space  pause / follow live    r  record to file".into(),
                Style::new(),
            ));
        }
        if vm.has_gc() {
            lines.push((
                format!(
                    "{} runs a garbage collection (holding the GIL)",
                    glyph(LaneState::Gc)
                ),
                Style::new(),
            ));
        }
        if vm.shows_parallel() {
            lines.push((
                "Top strip: threads holding a GIL at once (digits)".into(),
                Style::new(),
            ));
        }
        lines.push((
            "?  this help                  q/Esc  quit".into(),
            Style::new(),
        ));
        lines.push((String::new(), Style::new()));
        lines.push((
            "Lanes: one per thread, grouped by interpreter".into(),
            theme.heading(),
        ));
        for pair in [
            [LaneState::Held, LaneState::Waiting],
            [LaneState::Released, LaneState::Idle],
            [LaneState::Attached, LaneState::Unknown],
        ] {
            let desc = |s: LaneState| match s {
                LaneState::Held => "holds the GIL",
                LaneState::Waiting => "waits for the GIL",
                LaneState::Released => "released it, on CPU",
                LaneState::Idle => "off CPU, no GIL",
                LaneState::Attached => "runs, GIL disabled",
                LaneState::Unknown => "unknown",
                LaneState::Gc => "runs a garbage collection",
            };
            lines.push((
                format!(
                    "{} {:<22}{} {}",
                    glyph(pair[0]),
                    desc(pair[0]),
                    glyph(pair[1]),
                    desc(pair[1])
                ),
                Style::new(),
            ));
        }
        lines.push((
            "  (blank: not observed)  a cell shows its main state".into(),
            Style::new(),
        ));
        lines.push((
            format!(
                "{}  GIL strip: share of time held   - disabled",
                crate::theme::BARS.iter().collect::<String>()
            ),
            Style::new(),
        ));
        let bw = (lines.iter().map(|l| l.0.chars().count()).max().unwrap_or(0) as u16 + 4).min(w);
        let bh = (lines.len() as u16 + 2).min(h);
        let area = Rect::new((w - bw) / 2, (h - bh) / 2, bw, bh);
        Clear.render(area, buf);
        let block = Block::default()
            .borders(Borders::ALL)
            .title(" gilscope keys — any key closes ")
            .border_style(theme.accent());
        let inner = block.inner(area);
        block.render(area, buf);
        for (n, (text, style)) in lines.iter().take(inner.height as usize).enumerate() {
            put(
                buf,
                inner.x + 1,
                inner.y + n as u16,
                text,
                inner.width.saturating_sub(1),
                *style,
            );
        }
    }
}

/// Write `s` at (x, y), at most `w` columns; returns the column after it.
fn put(buf: &mut Buffer, x: u16, y: u16, s: &str, w: u16, style: Style) -> u16 {
    let area = buf.area;
    if w == 0 || x >= area.right() || y >= area.bottom() {
        return x;
    }
    let w = w.min(area.right() - x);
    buf.set_stringn(x, y, s, w as usize, style).0
}

/// The first candidate that fits in `room` columns (the last, cut, if none).
fn fit(candidates: &[String], room: usize) -> String {
    for c in candidates {
        if c.chars().count() <= room {
            return c.clone();
        }
    }
    candidates
        .last()
        .map(|c| c.chars().take(room).collect())
        .unwrap_or_default()
}

fn display_name(th: &ThreadView) -> String {
    if th.name.is_empty() {
        format!("tid {}", th.key.tid)
    } else {
        th.name.clone()
    }
}

/// 0-based position of thread `(i, t)` among all threads.
fn thread_number(vm: &ViewModel, i: usize, t: usize) -> usize {
    vm.interpreters[..i]
        .iter()
        .map(|it| it.threads.len())
        .sum::<usize>()
        + t
}

fn thread_label(th: &ThreadView, selected: bool, w: usize) -> String {
    let marker = if selected { '▶' } else { ' ' };
    let tid = th.key.tid.to_string();
    let name = display_name(th);
    let room = w.saturating_sub(1);
    if name.chars().count() + 1 + tid.len() <= room {
        let pad = room - name.chars().count() - tid.len();
        return format!("{marker}{name}{}{tid}", " ".repeat(pad));
    }
    // Long name: keep the tid if the name still gets 8 columns.
    if room >= tid.len() + 1 + 8 {
        let name = ellipsize_middle(&name, room - tid.len() - 1);
        return format!("{marker}{name} {tid}");
    }
    format!("{marker}{}", ellipsize_middle(&name, room))
}

/// `s` cut to `w` columns with `…` in the middle ([`crate::text::shorten_middle`], as in
/// gilscope's text outputs), padded to `w`.
fn ellipsize_middle(s: &str, w: usize) -> String {
    format!("{:<w$}", crate::text::shorten_middle(s, w))
}

/// `s` cut to `w` columns, ending in `…` if cut.
fn ellipsize_end(s: &str, w: usize) -> String {
    if s.chars().count() <= w {
        return s.to_string();
    }
    if w == 0 {
        return String::new();
    }
    let mut out: String = s.chars().take(w - 1).collect();
    out.push('…');
    out
}

/// A formatted frame `function (path/file.py:12)` cut to `w` columns by
/// shortening the path from the left, then the function.
fn shorten_frame(f: &str, w: usize) -> String {
    let n = f.chars().count();
    if n <= w {
        return f.to_string();
    }
    if let (Some(open), true) = (f.rfind(" ("), f.ends_with(')')) {
        let func = &f[..open];
        let loc = &f[open + 2..f.len() - 1];
        let func_n = func.chars().count();
        // "func (…tail)"
        let room = w.saturating_sub(func_n + 4);
        if room >= 8 {
            let loc_n = loc.chars().count();
            let tail: String = loc.chars().skip(loc_n - room.min(loc_n)).collect();
            return format!("{func} (…{tail})");
        }
    }
    ellipsize_end(f, w)
}

fn interp_label(vm: &ViewModel, it: &InterpView, a: u64, b: u64, w: usize) -> String {
    let main = if it.main { " (main)" } else { "" };
    let main_short = if it.main { " main" } else { "" };
    let times = vm.gil_of(it).map(|g| g.track.times(a, b));
    let sharing = vm.sharing_gil_with(it);
    let disabled = times.is_some_and(|t| t.mostly_disabled());
    let (gil_long, gil_short) = if disabled {
        ("GIL disabled".to_string(), " GIL off".to_string())
    } else if !sharing.is_empty() {
        let ids: Vec<String> = sharing.iter().map(|i| i.to_string()).collect();
        (
            format!("GIL shared w/ {}", ids.join(",")),
            " shared".to_string(),
        )
    } else if it.own_gil || it.gil.is_some() {
        // The main interpreter's own GIL is the normal case: say nothing.
        let short = if it.main { "" } else { " own" };
        ("own GIL".to_string(), short.to_string())
    } else {
        ("shared GIL".to_string(), " shared".to_string())
    };
    let busy = times
        .filter(|_| !disabled)
        .and_then(|t| t.busy_fraction())
        .map(|f| format!("{:.0}%", f * 100.0));
    let (busy_long, busy_short) = match &busy {
        Some(p) => (format!(" · busy {p}"), format!(" {p}")),
        None => (String::new(), String::new()),
    };
    let candidates = [
        format!("interp {}{main} · {gil_long}{busy_long}", it.id),
        format!("interp {}{main_short}{gil_short}{busy_short}", it.id),
        format!("int {}{main_short}{gil_short}{busy_short}", it.id),
        format!("int {}{busy_short}", it.id),
    ];
    fit(&candidates, w)
}

/// A parallelism cell: the mean number of holders, rounded, as a digit (`+` for 10 or more,
/// blank for none).
fn holders_glyph(mean: f64) -> char {
    let n = mean.round() as u32;
    match n {
        0 => ' ',
        1..=9 => char::from_digit(n, 10).unwrap_or('+'),
        _ => '+',
    }
}

#[allow(clippy::too_many_arguments)]
fn draw_lane(
    buf: &mut Buffer,
    theme: &Theme,
    th: &ThreadView,
    a: u64,
    b: u64,
    x: u16,
    y: u16,
    cols: usize,
) {
    for (c, cell) in th.lane.cells(a, b, cols).into_iter().enumerate() {
        if let Some(s) = cell {
            buf[(x + c as u16, y)]
                .set_char(glyph(s))
                .set_style(theme.state(s));
        }
    }
}

/// "While it waited, the GIL was held by": one line per holder (share of the waiting, name),
/// its hottest stack's innermost frames below.
fn draw_waited_for(buf: &mut Buffer, theme: &Theme, area: Rect, who: &[crate::view::WaitedFor]) {
    if area.height == 0 || area.width == 0 {
        return;
    }
    put(
        buf,
        area.x,
        area.y,
        "While it waited, the GIL was held by",
        area.width,
        theme.state(LaneState::Held),
    );
    let mut y = area.y + 1;
    let end = area.y + area.height;
    let w = (area.width as usize).saturating_sub(7);
    for h in who {
        if y >= end {
            break;
        }
        put(
            buf,
            area.x,
            y,
            &format!("{:>5.1}% {} {:.3} s", h.pct, h.holder, h.seconds),
            area.width,
            Style::new(),
        );
        y += 1;
        for (i, f) in h.frames.iter().take(2).enumerate() {
            if y >= end {
                break;
            }
            let f = shorten_frame(f, w);
            let text = if i == 0 {
                format!("     in {f}")
            } else {
                format!("      ← {f}")
            };
            put(buf, area.x, y, &text, area.width, theme.dim());
            y += 1;
        }
    }
}

fn draw_stacks(
    buf: &mut Buffer,
    theme: &Theme,
    area: Rect,
    title: &str,
    stacks: &[HotStack],
    title_style: Style,
) {
    if area.height == 0 || area.width == 0 {
        return;
    }
    put(buf, area.x, area.y, title, area.width, title_style);
    let mut y = area.y + 1;
    let end = area.y + area.height;
    if stacks.is_empty() {
        if y < end {
            put(
                buf,
                area.x + 1,
                y,
                "(no samples)",
                area.width - 1,
                theme.dim(),
            );
        }
        return;
    }
    let room = (end - y) as usize;
    // Up to three stacks share the room; shorter ones leave more for others.
    let per = (room / stacks.len().clamp(1, 3)).max(1);
    for st in stacks {
        if y >= end {
            break;
        }
        let lines = st.frames.len().clamp(1, per.max(1));
        let first = st
            .frames
            .first()
            .map(String::as_str)
            .unwrap_or("(empty stack)");
        let head = format!(
            "{:>5.1}% {}",
            st.pct,
            shorten_frame(first, (area.width as usize).saturating_sub(7))
        );
        put(buf, area.x, y, &head, area.width, Style::new());
        y += 1;
        for f in st.frames.iter().skip(1).take(lines - 1) {
            if y >= end {
                break;
            }
            let f = shorten_frame(f, (area.width as usize).saturating_sub(7));
            put(
                buf,
                area.x,
                y,
                &format!("     ← {f}"),
                area.width,
                theme.dim(),
            );
            y += 1;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Col {
    Sort(SortBy),
    Activity,
}

struct Column {
    kind: Col,
    header: &'static str,
    x: u16,
    w: u16,
    right: bool,
}

fn table_columns(width: u16, longest_name: usize) -> Vec<Column> {
    let fixed: [(SortBy, &str, u16); 7] = [
        (SortBy::Tid, "TID", 7),
        (SortBy::Interp, "Int", 3),
        (SortBy::Held, "Held%", 6),
        (SortBy::Waiting, "Wait%", 6),
        (SortBy::Released, "Rel%", 6),
        (SortBy::Idle, "Idle%", 6),
        (SortBy::OnCpu, "CPU%", 6),
    ];
    let fixed_w: u16 = fixed.iter().map(|f| f.2 + 1).sum();
    let rest = width.saturating_sub(fixed_w + 1);
    // The name gets what it needs (up to 28), the activity lane the rest if
    // that leaves it at least 10 columns.
    let want = (longest_name as u16 + 1).clamp(8, 28);
    let (name_w, act_w) = if rest >= want + 1 + 10 {
        (want, rest - want - 1)
    } else if rest >= 12 + 1 + 10 {
        (rest - 11, 10)
    } else {
        (rest, 0)
    };
    let mut cols = Vec::new();
    let mut x = 0;
    cols.push(Column {
        kind: Col::Sort(SortBy::Thread),
        header: " Thread",
        x,
        w: name_w,
        right: false,
    });
    x += name_w + 1;
    for (s, h, w) in fixed {
        cols.push(Column {
            kind: Col::Sort(s),
            header: h,
            x,
            w,
            right: true,
        });
        x += w + 1;
    }
    if act_w > 0 {
        cols.push(Column {
            kind: Col::Activity,
            header: " Activity",
            x: x + 1,
            w: act_w,
            right: false,
        });
    }
    cols
}

/// The sortable column under screen column `x` of the table header.
pub(crate) fn table_column_at(areas: &Areas, vm: &ViewModel, x: u16) -> Option<SortBy> {
    table_columns(areas.body.width, longest_name(vm))
        .iter()
        .find(|c| x >= c.x && x < c.x + c.w + 1)
        .and_then(|c| match c.kind {
            Col::Sort(s) => Some(s),
            Col::Activity => None,
        })
}

fn longest_name(vm: &ViewModel) -> usize {
    vm.threads()
        .map(|(_, t)| display_name(t).chars().count())
        .max()
        .unwrap_or(0)
}

fn pct_cell(p: f64, t: &crate::view::StateTimes, w: u16) -> String {
    if t.observed() == 0 {
        format!("{:>w$}", "-", w = w as usize)
    } else {
        format!("{p:>w$.1}", w = w as usize)
    }
}
