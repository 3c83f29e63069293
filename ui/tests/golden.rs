//! Whole-screen snapshots on ratatui's TestBackend, compared with golden
//! files under `tests/golden/`. Re-bless after an intended change with
//!
//!     GILSCOPE_BLESS=1 cargo test -p gilscope-ui --test golden
//!
//! and review the diff of the `.txt` files like any other change.

use std::path::PathBuf;

use gilscope_ui::fixtures::{demo_view, free_threaded_view, many_threads_view};
use gilscope_ui::{
    run, Action, App, Input, Key, Mouse, MouseKind, Options, Theme, ViewModel, ViewSource,
};
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::style::Color;
use ratatui::Terminal;

fn opts() -> Options {
    Options {
        theme: Theme { color: true },
        live_span_ns: 5_000_000_000,
    }
}

fn keys(s: &str) -> Vec<Input> {
    s.chars().map(|c| Input::Key(Key::Char(c))).collect()
}

/// The screen as text: one line per row, trailing spaces cut.
fn text(buf: &Buffer) -> String {
    let area = buf.area;
    let mut out = String::new();
    for y in 0..area.height {
        let mut line = String::new();
        for x in 0..area.width {
            line.push_str(buf[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Drive an app with `inputs` over `vm` at `w`×`h` and return the last frame.
fn screen(vm: &ViewModel, w: u16, h: u16, inputs: &[Input]) -> (App, Buffer) {
    let mut app = App::new(opts(), (w, h), vm.live);
    for i in inputs {
        app.update(*i, vm);
    }
    let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
    let frame = term.draw(|f| app.draw(f, vm)).unwrap();
    (app, frame.buffer.clone())
}

fn golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.txt"));
    if std::env::var_os("GILSCOPE_BLESS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "missing golden file {}; create it with GILSCOPE_BLESS=1",
            path.display()
        )
    });
    if expected != actual {
        let mut diff = String::new();
        for (i, (e, a)) in expected.lines().zip(actual.lines()).enumerate() {
            if e != a {
                diff.push_str(&format!("row {i}:\n  want |{e}|\n  got  |{a}|\n"));
            }
        }
        if expected.lines().count() != actual.lines().count() {
            diff.push_str("(row counts differ)\n");
        }
        panic!(
            "screen differs from {}:\n{diff}\nwhole screen:\n{actual}\n\
             re-bless with GILSCOPE_BLESS=1 if intended",
            path.display()
        );
    }
}

fn snap(name: &str, vm: &ViewModel, w: u16, h: u16, inputs: &[Input]) -> (App, Buffer) {
    let (app, buf) = screen(vm, w, h, inputs);
    golden(name, &text(&buf));
    (app, buf)
}

#[test]
fn view_80x24() {
    snap("view_80x24", &demo_view(), 80, 24, &[]);
}

#[test]
fn view_160x48() {
    snap("view_160x48", &demo_view(), 160, 48, &[]);
}

#[test]
fn zoomed_in() {
    // Three zooms in (×8) around the middle, then a pan back in time.
    let mut inputs = keys("+++");
    inputs.push(Input::Key(Key::Left));
    let (app, _) = snap("zoomed_120x30", &demo_view(), 120, 30, &inputs);
    let vm = demo_view();
    let (a, b) = app.window(&vm);
    assert_eq!(b - a, 1_250_000_000);
}

#[test]
fn zoom_with_wheel_at_pointer() {
    let vm = demo_view();
    let wheel = |column| {
        Input::Mouse(Mouse {
            kind: MouseKind::ScrollUp,
            column,
            row: 5,
            shift: false,
        })
    };
    // Zooming at the right edge keeps the end of the trace in view.
    let inputs: Vec<Input> = (0..6).map(|_| wheel(79)).collect();
    let (app, _) = screen(&vm, 80, 24, &inputs);
    let (_, b) = app.window(&vm);
    let end = vm.time_range.end_ns;
    assert!(end - b < (end - vm.time_range.start_ns) / 50, "{}", end - b);
}

#[test]
fn stacks_panel() {
    // Select the second thread (io-poller), then the first, open its stacks.
    let inputs = [
        Input::Key(Key::Char('j')),
        Input::Key(Key::Char('j')),
        Input::Key(Key::Char('k')),
        Input::Key(Key::Enter),
    ];
    snap("stacks_80x24", &demo_view(), 80, 24, &inputs);
    let mut wide = inputs.to_vec();
    wide.extend([Input::Key(Key::Down), Input::Key(Key::Down)]);
    snap("stacks_160x48", &demo_view(), 160, 48, &wide);
}

#[test]
fn help_overlay() {
    snap("help_80x24", &demo_view(), 80, 24, &keys("?"));
}

#[test]
fn top_table_sorted_by_waiting() {
    let mut vm = demo_view();
    vm.live = true;
    vm.title = "pid 4242 (python app/main.py)".into();
    vm.recording = Some("app.gilscope".into());
    // Table, sort by waiting (column 5), then select the top row.
    let mut inputs = keys("t5");
    inputs.push(Input::Key(Key::Down));
    let (app, _) = snap("top_table_100x30", &vm, 100, 30, &inputs);
    assert!(app.table_shown());
    // Waiting first: the legacy plugin waits most, so it tops the list.
    let (_, t) = vm.thread(app.selected().unwrap()).unwrap();
    assert_eq!(t.name, "legacy-plugin");
}

#[test]
fn top_table_80x24_paused() {
    let mut vm = demo_view();
    vm.live = true;
    vm.title = "pid 4242".into();
    let inputs = keys("t ");
    snap("top_table_80x24_paused", &vm, 80, 24, &inputs);
}

#[test]
fn free_threaded() {
    snap("free_threaded_80x24", &free_threaded_view(), 80, 24, &[]);
    let mut inputs = keys("j");
    inputs.push(Input::Key(Key::Enter));
    snap(
        "free_threaded_stacks_100x30",
        &free_threaded_view(),
        100,
        30,
        &inputs,
    );
}

#[test]
fn many_threads_scroll() {
    let vm = many_threads_view(70);
    snap("many_threads_top_80x24", &vm, 80, 24, &[]);
    let inputs: Vec<Input> = (0..40).map(|_| Input::Key(Key::Char('j'))).collect();
    let (app, _) = snap("many_threads_scrolled_80x24", &vm, 80, 24, &inputs);
    let (_, t) = vm.thread(app.selected().unwrap()).unwrap();
    assert_eq!(t.name, "pool-worker-39");
    // And back up past the top: the interpreter heading comes back.
    let mut up = inputs.clone();
    up.extend((0..45).map(|_| Input::Key(Key::Up)));
    let (_, buf) = screen(&vm, 80, 24, &up);
    assert!(text(&buf).lines().nth(2).unwrap().starts_with("interp 0"));
}

#[test]
fn too_small() {
    snap("too_small_30x6", &demo_view(), 30, 6, &[]);
}

#[test]
fn no_color_keeps_glyphs() {
    let vm = demo_view();
    let mut app = App::new(
        Options {
            theme: Theme { color: false },
            ..opts()
        },
        (80, 24),
        false,
    );
    app.update(Input::Key(Key::Char('j')), &vm);
    let mut term = Terminal::new(TestBackend::new(80, 24)).unwrap();
    let mono = term.draw(|f| app.draw(f, &vm)).unwrap().buffer.clone();
    let (_, color) = screen(&vm, 80, 24, &keys("j"));
    // Same characters either way...
    assert_eq!(text(&mono), text(&color));
    // ...no colour at all without it...
    for cell in mono.content() {
        assert_eq!(cell.fg, Color::Reset);
        assert_eq!(cell.bg, Color::Reset);
    }
    // ...and a held cell is green with it.
    let held = color
        .content()
        .iter()
        .find(|c| c.symbol() == "█" && c.fg != Color::Yellow)
        .unwrap();
    assert_eq!(held.fg, Color::Green);
}

/// A live source whose session grows by one second per tick and records
/// what the UI asked of it.
struct Live {
    full: ViewModel,
    vm: ViewModel,
    actions: Vec<Action>,
}

impl Live {
    fn new() -> Live {
        let mut full = demo_view();
        full.live = true;
        let mut vm = full.clone();
        vm.time_range.end_ns = vm.time_range.start_ns + 2_000_000_000;
        Live {
            full,
            vm,
            actions: Vec::new(),
        }
    }
}

impl ViewSource for Live {
    fn view(&self) -> &ViewModel {
        &self.vm
    }
    fn refresh(&mut self) {
        let end = (self.vm.time_range.end_ns + 1_000_000_000).min(self.full.time_range.end_ns);
        self.vm.time_range.end_ns = end;
        // Keep the last 6 s only (bounded memory).
        self.vm.trim_before(end.saturating_sub(6_000_000_000));
    }
    fn action(&mut self, action: Action) {
        if action == Action::ToggleRecording {
            self.vm.recording = match self.vm.recording {
                None => Some("live.gilscope".into()),
                Some(_) => None,
            };
        }
        self.actions.push(action);
    }
}

#[test]
fn live_run_loop_follows_pauses_records() {
    let mut src = Live::new();
    let mut term = Terminal::new(TestBackend::new(80, 24)).unwrap();
    let mut inputs = vec![Input::Tick; 6];
    inputs.push(Input::Key(Key::Char('r')));
    inputs.push(Input::Key(Key::Char(' ')));
    inputs.extend([Input::Tick; 2]);
    run(&mut term, &mut src, inputs, opts()).unwrap();
    assert_eq!(
        src.actions,
        vec![Action::ToggleRecording, Action::Pause(true)]
    );
    golden("live_paused_80x24", &text(term.backend().buffer()));
    // Trimmed to the last 6 s of a 10 s session.
    let first = src.vm.interpreters[0].threads[0].lane.segments()[0];
    assert_eq!(first.start_ns, src.vm.time_range.start_ns + 4_000_000_000);
}

#[test]
fn run_quits_on_q_and_follows_resize() {
    let mut vm = demo_view();
    let mut term = Terminal::new(TestBackend::new(80, 24)).unwrap();
    term.backend_mut().resize(100, 30);
    let inputs = [
        Input::Resize(100, 30),
        Input::Key(Key::Char('q')),
        Input::Key(Key::Char('?')),
    ];
    run(&mut term, &mut vm, inputs, opts()).unwrap();
    let shown = text(term.backend().buffer());
    // Quit before '?' was seen: no help; the last frame is the screen laid out for the new
    // size, cell for cell what a 100x30 app with no keys draws.
    assert!(!shown.contains("any key closes"));
    let (_, want) = screen(&demo_view(), 100, 30, &[]);
    assert_eq!(
        shown,
        text(&want),
        "the frame after the resize is not the 100x30 screen"
    );
}

#[test]
fn any_size_any_screen_draws() {
    let mut empty_live = ViewModel {
        live: true,
        ..ViewModel::default()
    };
    empty_live.title = "pid 1".into();
    let models = [
        ViewModel::default(),
        empty_live,
        demo_view(),
        free_threaded_view(),
        many_threads_view(3),
    ];
    let scripts = [
        keys(""),
        keys("?"),
        keys("t"),
        keys("tj"),
        vec![Input::Key(Key::Enter)],
        keys("++++++++hhhlll"),
        keys("------GG"),
    ];
    for vm in &models {
        for (w, h) in [
            (1, 1),
            (39, 7),
            (40, 8),
            (41, 9),
            (60, 12),
            (80, 24),
            (250, 80),
        ] {
            for s in &scripts {
                let (_, buf) = screen(vm, w, h, s);
                assert_eq!(text(&buf).lines().count(), h as usize);
            }
        }
    }
}
