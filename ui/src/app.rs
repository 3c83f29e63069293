//! UI state and how inputs change it. `update` mutates, `draw` (in
//! [`crate::draw`]) only reads: the screen is a function of `(App, ViewModel)`.

use ratatui::layout::Rect;

use crate::theme::Theme;
use crate::view::{LaneState, StateTimes, ThreadKey, ViewModel};

/// A key, independent of the terminal library.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Char(char),
    /// A letter with Ctrl held (`Ctrl('c')`).
    Ctrl(char),
    Up,
    Down,
    Left,
    Right,
    /// Shift+Left / Shift+Right.
    ShiftLeft,
    ShiftRight,
    Home,
    End,
    PageUp,
    PageDown,
    Enter,
    Esc,
    Tab,
    BackTab,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MouseKind {
    ScrollUp,
    ScrollDown,
    ScrollLeft,
    ScrollRight,
    /// Left button pressed.
    Click,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mouse {
    pub kind: MouseKind,
    pub column: u16,
    pub row: u16,
    pub shift: bool,
}

/// Everything that can happen to the UI; the run loop reads them from one
/// channel (or, in tests, a list).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    Key(Key),
    Mouse(Mouse),
    /// The terminal is now this many columns and rows.
    Resize(u16, u16),
    /// Time passed: a live source may have new data.
    Tick,
}

/// What the caller has to act on after an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    None,
    Quit,
    /// `r`: start saving the live session to a file, or stop.
    ToggleRecording,
    /// `space` in a live view: the window stopped (true) or resumed (false)
    /// following the live edge. Informational; data keeps flowing.
    Pause(bool),
}

/// Table columns, in display order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortBy {
    Thread,
    Tid,
    Interp,
    Held,
    Waiting,
    Released,
    Idle,
    OnCpu,
}

impl SortBy {
    pub const ALL: [SortBy; 8] = [
        SortBy::Thread,
        SortBy::Tid,
        SortBy::Interp,
        SortBy::Held,
        SortBy::Waiting,
        SortBy::Released,
        SortBy::Idle,
        SortBy::OnCpu,
    ];

    fn index(self) -> usize {
        Self::ALL.iter().position(|s| *s == self).unwrap_or(0)
    }

    /// Percentages sort high-first, names and numbers low-first.
    fn natural_desc(self) -> bool {
        !matches!(self, SortBy::Thread | SortBy::Tid | SortBy::Interp)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    pub theme: Theme,
    /// Window width a live view starts with (and `0` returns to).
    pub live_span_ns: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            theme: Theme::from_env(),
            live_span_ns: 30_000_000_000,
        }
    }
}

/// The visible time window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The whole trace.
    Fit,
    /// A fixed window (zoomed / panned / paused).
    Fixed { start: u64, end: u64 },
    /// The last `span` ns of a live session, scrolling as data arrives.
    Follow { span: u64 },
}

/// Narrowest window, so zooming stops somewhere sensible.
const MIN_WINDOW_NS: u64 = 10_000;
const KEY_ZOOM: f64 = 2.0;
const WHEEL_ZOOM: f64 = 1.25;
const KEY_PAN: f64 = 0.125;

/// Where things are on screen for a given size (shared by `draw` and
/// `update`, so mouse positions and page sizes agree with what is drawn).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Areas {
    pub title: Rect,
    /// Time axis (lanes mode only).
    pub axis: Option<Rect>,
    /// Lanes or table, without the stacks panel.
    pub body: Rect,
    pub panel: Option<Rect>,
    pub legend: Rect,
    /// Width of the label column at the left of the lanes.
    pub label_w: u16,
    /// Too small to draw anything useful.
    pub too_small: bool,
}

impl Areas {
    /// Lane cells: the body right of the labels.
    pub fn lanes(&self) -> Rect {
        Rect {
            x: self.body.x + self.label_w,
            width: self.body.width.saturating_sub(self.label_w),
            ..self.body
        }
    }

    /// Rows of the list (lanes: every body row; table: minus the header).
    pub fn list_rows(&self, table: bool) -> usize {
        let h = self.body.height as usize;
        if table {
            h.saturating_sub(1)
        } else {
            h
        }
    }
}

pub(crate) const MIN_W: u16 = 40;
pub(crate) const MIN_H: u16 = 8;

/// A row of the lanes list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Row {
    /// The parallelism strip (threads holding a GIL at once), above the interpreters.
    Parallel,
    Interp(usize),
    Thread(usize, usize),
}

/// A row of the thread table.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TableRow {
    pub interp: usize,
    pub thread: usize,
    pub times: StateTimes,
}

impl TableRow {
    /// Held (or, GIL disabled, attached) share.
    pub fn held_pct(&self) -> f64 {
        self.times.pct(LaneState::Held) + self.times.pct(LaneState::Attached)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct App {
    pub(crate) opts: Options,
    pub(crate) size: (u16, u16),
    pub(crate) window: Window,
    pub(crate) selected: Option<ThreadKey>,
    pub(crate) stacks_open: bool,
    pub(crate) table: bool,
    pub(crate) sort: SortBy,
    pub(crate) sort_desc: bool,
    pub(crate) help: bool,
    /// First visible row of the list (lanes or table).
    pub(crate) scroll: usize,
}

impl App {
    /// `size` is the terminal's (columns, rows); `live` starts a following
    /// window (`gilscope top`) instead of the whole trace.
    pub fn new(opts: Options, size: (u16, u16), live: bool) -> Self {
        App {
            opts,
            size,
            window: if live {
                Window::Follow {
                    span: opts.live_span_ns.max(MIN_WINDOW_NS),
                }
            } else {
                Window::Fit
            },
            selected: None,
            stacks_open: false,
            table: false,
            sort: SortBy::Held,
            sort_desc: true,
            help: false,
            scroll: 0,
        }
    }

    pub fn selected(&self) -> Option<ThreadKey> {
        self.selected
    }

    pub fn select(&mut self, key: Option<ThreadKey>) {
        self.selected = key;
    }

    pub fn help_shown(&self) -> bool {
        self.help
    }

    pub fn table_shown(&self) -> bool {
        self.table
    }

    pub fn stacks_shown(&self) -> bool {
        self.stacks_open
    }

    pub fn sort(&self) -> (SortBy, bool) {
        (self.sort, self.sort_desc)
    }

    pub fn window_mode(&self) -> Window {
        self.window
    }

    /// A live view not following the live edge.
    pub fn paused(&self, vm: &ViewModel) -> bool {
        vm.live && matches!(self.window, Window::Fixed { .. })
    }

    /// The visible window `[start, end)` in ns.
    pub fn window(&self, vm: &ViewModel) -> (u64, u64) {
        let r = vm.time_range;
        let full = r.duration_ns();
        match self.window {
            Window::Fit => (r.start_ns, r.start_ns + full.max(1_000_000_000)),
            Window::Fixed { start, end } => (start, end.max(start + 1)),
            Window::Follow { span } => {
                if full <= span {
                    (r.start_ns, r.start_ns + span)
                } else {
                    (r.end_ns - span, r.end_ns)
                }
            }
        }
    }

    pub(crate) fn areas(&self) -> Areas {
        let (w, h) = self.size;
        let full = Rect::new(0, 0, w, h);
        if w < MIN_W || h < MIN_H {
            return Areas {
                title: full,
                body: full,
                too_small: true,
                ..Areas::default()
            };
        }
        let title = Rect::new(0, 0, w, 1);
        let legend = Rect::new(0, h - 1, w, 1);
        let (axis, top) = if self.table {
            (None, 1)
        } else {
            (Some(Rect::new(0, 1, w, 1)), 2)
        };
        let mut body = Rect::new(0, top, w, h - 1 - top);
        let mut panel = None;
        if self.stacks_open && self.selected.is_some() && body.height >= 10 {
            let ph = (body.height * 2 / 5).clamp(6, 16);
            panel = Some(Rect::new(0, body.y + body.height - ph, w, ph));
            body.height -= ph;
        }
        Areas {
            title,
            axis,
            body,
            panel,
            legend,
            label_w: (w * 2 / 7).clamp(16, 34),
            too_small: false,
        }
    }

    pub(crate) fn lane_rows(vm: &ViewModel) -> Vec<Row> {
        let mut rows = Vec::with_capacity(vm.thread_count() + vm.interpreters.len() + 1);
        if vm.shows_parallel() {
            rows.push(Row::Parallel);
        }
        for (i, it) in vm.interpreters.iter().enumerate() {
            rows.push(Row::Interp(i));
            rows.extend((0..it.threads.len()).map(|t| Row::Thread(i, t)));
        }
        rows
    }

    pub(crate) fn table_rows(&self, vm: &ViewModel) -> Vec<TableRow> {
        let (a, b) = self.window(vm);
        let mut rows: Vec<TableRow> = vm
            .interpreters
            .iter()
            .enumerate()
            .flat_map(|(i, it)| {
                it.threads.iter().enumerate().map(move |(t, th)| TableRow {
                    interp: i,
                    thread: t,
                    times: th.lane.times(a, b),
                })
            })
            .collect();
        let key = |r: &TableRow| {
            let it = &vm.interpreters[r.interp];
            let th = &it.threads[r.thread];
            (it.id, th.key)
        };
        let cmp_f = |x: f64, y: f64| x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal);
        rows.sort_by(|x, y| {
            let tx = &vm.interpreters[x.interp].threads[x.thread];
            let ty = &vm.interpreters[y.interp].threads[y.thread];
            let primary = match self.sort {
                SortBy::Thread => tx.name.cmp(&ty.name),
                SortBy::Tid => tx.key.cmp(&ty.key),
                SortBy::Interp => vm.interpreters[x.interp]
                    .id
                    .cmp(&vm.interpreters[y.interp].id),
                SortBy::Held => cmp_f(x.held_pct(), y.held_pct()),
                SortBy::Waiting => cmp_f(
                    x.times.pct(LaneState::Waiting),
                    y.times.pct(LaneState::Waiting),
                ),
                SortBy::Released => cmp_f(
                    x.times.pct(LaneState::Released),
                    y.times.pct(LaneState::Released),
                ),
                SortBy::Idle => cmp_f(x.times.pct(LaneState::Idle), y.times.pct(LaneState::Idle)),
                SortBy::OnCpu => cmp_f(x.times.on_cpu_pct(), y.times.on_cpu_pct()),
            };
            let primary = if self.sort_desc {
                primary.reverse()
            } else {
                primary
            };
            // Ties: stable, by interpreter then thread key.
            primary.then_with(|| key(x).cmp(&key(y)))
        });
        rows
    }

    /// Selectable threads in list order.
    fn thread_order(&self, vm: &ViewModel) -> Vec<ThreadKey> {
        if self.table {
            self.table_rows(vm)
                .iter()
                .map(|r| vm.interpreters[r.interp].threads[r.thread].key)
                .collect()
        } else {
            vm.threads().map(|(_, t)| t.key).collect()
        }
    }

    /// Index in the list of the selected thread's row, and whether the row
    /// above it is that thread's interpreter heading.
    fn selected_row(&self, vm: &ViewModel) -> Option<(usize, bool)> {
        let key = self.selected?;
        if self.table {
            let i = self.thread_order(vm).iter().position(|k| *k == key)?;
            Some((i, false))
        } else {
            let rows = Self::lane_rows(vm);
            let i = rows.iter().position(|r| match *r {
                Row::Thread(i, t) => vm.interpreters[i].threads[t].key == key,
                Row::Interp(_) | Row::Parallel => false,
            })?;
            Some((i, i > 0 && matches!(rows[i - 1], Row::Interp(_))))
        }
    }

    fn list_len(&self, vm: &ViewModel) -> usize {
        if self.table {
            vm.thread_count()
        } else {
            vm.thread_count() + vm.interpreters.len()
        }
    }

    /// The first visible row, adjusted so the selection is visible and no
    /// space is wasted below the end of the list. Pure: `draw` uses it too.
    pub(crate) fn effective_scroll(&self, vm: &ViewModel) -> usize {
        let rows = self.areas().list_rows(self.table).max(1);
        let len = self.list_len(vm);
        let mut top = self.scroll.min(len.saturating_sub(rows));
        if let Some((sel, heading_above)) = self.selected_row(vm) {
            // Show the interpreter heading along with its first thread.
            let want = if heading_above { sel - 1 } else { sel };
            if want < top {
                top = want;
            } else if sel >= top + rows {
                top = sel + 1 - rows;
            }
        }
        top
    }

    fn fix_scroll(&mut self, vm: &ViewModel) {
        self.scroll = self.effective_scroll(vm);
    }

    fn move_selection(&mut self, vm: &ViewModel, delta: isize) {
        let order = self.thread_order(vm);
        if order.is_empty() {
            self.selected = None;
            return;
        }
        let cur = self
            .selected
            .and_then(|k| order.iter().position(|o| *o == k));
        let next = match cur {
            None if delta >= 0 => 0,
            None => order.len() - 1,
            Some(c) => (c as isize + delta).clamp(0, order.len() as isize - 1) as usize,
        };
        self.selected = Some(order[next]);
        self.fix_scroll(vm);
    }

    fn set_fixed(&mut self, vm: &ViewModel, start: u64, width: u64) {
        let r = vm.time_range;
        let full = r.duration_ns().max(1);
        if !vm.live && width >= full {
            self.window = Window::Fit;
            return;
        }
        let width = width.max(MIN_WINDOW_NS);
        let hi = r.end_ns.max(r.start_ns + width);
        let start = start.clamp(r.start_ns, hi - width);
        self.window = Window::Fixed {
            start,
            end: start + width,
        };
    }

    /// Zoom by `factor` (> 1 zooms out) keeping the time at `anchor`
    /// (0..1 across the window) in place.
    fn zoom(&mut self, vm: &ViewModel, factor: f64, anchor: f64) {
        let (a, b) = self.window(vm);
        let w = b - a;
        let full = vm.time_range.duration_ns().max(1);
        let mut nw = ((w as f64) * factor).round().max(MIN_WINDOW_NS as f64) as u64;
        if !vm.live {
            nw = nw.min(full.max(1_000_000_000));
        }
        match self.window {
            Window::Follow { .. } => self.window = Window::Follow { span: nw },
            Window::Fit if vm.live => self.window = Window::Follow { span: nw },
            _ => {
                let at = a as f64 + w as f64 * anchor.clamp(0.0, 1.0);
                let start = (at - nw as f64 * anchor.clamp(0.0, 1.0)).max(0.0) as u64;
                self.set_fixed(vm, start, nw);
            }
        }
    }

    /// Pan by `frac` of the window (negative: back in time).
    fn pan(&mut self, vm: &ViewModel, frac: f64) {
        let (a, b) = self.window(vm);
        let w = b - a;
        if matches!(self.window, Window::Fit) {
            return;
        }
        if frac > 0.0 && matches!(self.window, Window::Follow { .. }) {
            return;
        }
        let shift = (w as f64 * frac.abs()).round().max(1.0) as u64;
        let start = if frac < 0.0 {
            a.saturating_sub(shift)
        } else {
            a.saturating_add(shift)
        };
        self.set_fixed(vm, start, w);
        if vm.live {
            if let Window::Fixed { end, .. } = self.window {
                if frac > 0.0 && end >= vm.time_range.end_ns {
                    self.window = Window::Follow { span: w };
                }
            }
        }
    }

    fn jump_start(&mut self, vm: &ViewModel) {
        let (a, b) = self.window(vm);
        if matches!(self.window, Window::Fit) {
            return;
        }
        self.set_fixed(vm, vm.time_range.start_ns, b - a);
    }

    fn jump_end(&mut self, vm: &ViewModel) {
        let (a, b) = self.window(vm);
        let w = b - a;
        if vm.live {
            if !matches!(self.window, Window::Fit) {
                self.window = Window::Follow { span: w };
            }
        } else if !matches!(self.window, Window::Fit) {
            self.set_fixed(vm, vm.time_range.end_ns.saturating_sub(w), w);
        }
    }

    fn toggle_pause(&mut self, vm: &ViewModel) -> Action {
        if !vm.live {
            return Action::None;
        }
        let (a, b) = self.window(vm);
        match self.window {
            Window::Fixed { .. } => {
                self.window = Window::Follow { span: b - a };
                Action::Pause(false)
            }
            _ => {
                self.window = Window::Fixed { start: a, end: b };
                Action::Pause(true)
            }
        }
    }

    fn set_sort(&mut self, s: SortBy) {
        if self.sort == s {
            self.sort_desc = !self.sort_desc;
        } else {
            self.sort = s;
            self.sort_desc = s.natural_desc();
        }
    }

    fn step_sort(&mut self, delta: isize) {
        let n = SortBy::ALL.len() as isize;
        let i = (self.sort.index() as isize + delta).rem_euclid(n) as usize;
        self.sort = SortBy::ALL[i];
        self.sort_desc = self.sort.natural_desc();
    }

    /// Apply one input. `vm` is the model currently shown.
    pub fn update(&mut self, input: Input, vm: &ViewModel) -> Action {
        match input {
            Input::Resize(w, h) => {
                self.size = (w, h);
                self.fix_scroll(vm);
                Action::None
            }
            Input::Tick => {
                // Threads may have come or gone: keep the selection in view.
                if self.selected.is_some_and(|k| vm.thread(k).is_none()) {
                    self.selected = None;
                    self.stacks_open = false;
                }
                self.fix_scroll(vm);
                Action::None
            }
            Input::Key(k) => self.key(k, vm),
            Input::Mouse(m) => self.mouse(m, vm),
        }
    }

    fn key(&mut self, k: Key, vm: &ViewModel) -> Action {
        if k == Key::Ctrl('c') {
            return Action::Quit;
        }
        if self.help {
            // Any key closes the help.
            self.help = false;
            return Action::None;
        }
        let page = self.areas().list_rows(self.table).max(2) as isize - 1;
        match k {
            Key::Char('q') => return Action::Quit,
            Key::Esc => {
                if self.stacks_open {
                    self.stacks_open = false;
                } else {
                    return Action::Quit;
                }
            }
            Key::Char('?') => self.help = true,
            Key::Left | Key::Char('h') => self.pan(vm, -KEY_PAN),
            Key::Right | Key::Char('l') => self.pan(vm, KEY_PAN),
            Key::ShiftLeft | Key::Char('H') => self.pan(vm, -1.0),
            Key::ShiftRight | Key::Char('L') => self.pan(vm, 1.0),
            Key::Char('+') | Key::Char('=') => self.zoom(vm, 1.0 / KEY_ZOOM, 0.5),
            Key::Char('-') | Key::Char('_') => self.zoom(vm, KEY_ZOOM, 0.5),
            Key::Char('0') => {
                self.window = if vm.live {
                    Window::Follow {
                        span: self.opts.live_span_ns.max(MIN_WINDOW_NS),
                    }
                } else {
                    Window::Fit
                }
            }
            Key::Home | Key::Char('g') => self.jump_start(vm),
            Key::End | Key::Char('G') => self.jump_end(vm),
            Key::Up | Key::Char('k') => self.move_selection(vm, -1),
            Key::Down | Key::Char('j') => self.move_selection(vm, 1),
            Key::PageUp => self.move_selection(vm, -page),
            Key::PageDown => self.move_selection(vm, page),
            Key::Enter => {
                if self.selected.is_none() {
                    self.move_selection(vm, 1);
                }
                self.stacks_open = self.selected.is_some() && !self.stacks_open;
                self.fix_scroll(vm);
            }
            Key::Char('t') | Key::Tab | Key::BackTab => {
                self.table = !self.table;
                self.fix_scroll(vm);
            }
            Key::Char('>') | Key::Char('s') => {
                self.step_sort(1);
                self.fix_scroll(vm);
            }
            Key::Char('<') => {
                self.step_sort(-1);
                self.fix_scroll(vm);
            }
            Key::Char('i') => {
                self.sort_desc = !self.sort_desc;
                self.fix_scroll(vm);
            }
            Key::Char(c @ '1'..='8') => {
                self.set_sort(SortBy::ALL[c as usize - '1' as usize]);
                self.fix_scroll(vm);
            }
            Key::Char(' ') => return self.toggle_pause(vm),
            Key::Char('r') if vm.live => return Action::ToggleRecording,
            _ => {}
        }
        Action::None
    }

    /// The thread drawn on screen row `y` of the list, if any.
    fn thread_at_row(&self, vm: &ViewModel, y: u16) -> Option<ThreadKey> {
        let areas = self.areas();
        let body = areas.body;
        let first = body.y + u16::from(self.table);
        if y < first || y >= body.y + body.height {
            return None;
        }
        let idx = self.effective_scroll(vm) + (y - first) as usize;
        if self.table {
            self.thread_order(vm).get(idx).copied()
        } else {
            match Self::lane_rows(vm).get(idx)? {
                Row::Thread(i, t) => Some(vm.interpreters[*i].threads[*t].key),
                Row::Interp(_) | Row::Parallel => None,
            }
        }
    }

    fn mouse(&mut self, m: Mouse, vm: &ViewModel) -> Action {
        if self.help {
            if m.kind == MouseKind::Click {
                self.help = false;
            }
            return Action::None;
        }
        let areas = self.areas();
        if areas.too_small {
            return Action::None;
        }
        let lanes = areas.lanes();
        let in_body = m.row >= areas.body.y && m.row < areas.body.y + areas.body.height;
        let on_axis = areas.axis.is_some_and(|a| m.row == a.y);
        let over_lanes = !self.table && (in_body || on_axis) && m.column >= lanes.x;
        let anchor = if lanes.width > 0 {
            (m.column.saturating_sub(lanes.x) as f64 + 0.5) / lanes.width as f64
        } else {
            0.5
        };
        match m.kind {
            MouseKind::ScrollLeft => self.pan(vm, -KEY_PAN),
            MouseKind::ScrollRight => self.pan(vm, KEY_PAN),
            MouseKind::ScrollUp | MouseKind::ScrollDown => {
                let up = m.kind == MouseKind::ScrollUp;
                if m.shift {
                    self.pan(vm, if up { -KEY_PAN } else { KEY_PAN });
                } else if over_lanes {
                    let f = if up { 1.0 / WHEEL_ZOOM } else { WHEEL_ZOOM };
                    self.zoom(vm, f, anchor);
                } else if in_body {
                    self.move_selection(vm, if up { -1 } else { 1 });
                }
            }
            MouseKind::Click => {
                if self.table && m.row == areas.body.y {
                    if let Some(col) = crate::draw::table_column_at(&areas, vm, m.column) {
                        self.set_sort(col);
                        self.fix_scroll(vm);
                    }
                } else if let Some(key) = self.thread_at_row(vm, m.row) {
                    if self.selected == Some(key) {
                        self.stacks_open = !self.stacks_open;
                    } else {
                        self.selected = Some(key);
                    }
                    self.fix_scroll(vm);
                }
            }
        }
        Action::None
    }
}
