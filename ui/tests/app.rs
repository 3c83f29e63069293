//! How inputs change the UI state (no drawing).

use gilscope_ui::fixtures::{demo_view, many_threads_view, T0};
use gilscope_ui::{
    Action, App, Input, Key, Mouse, MouseKind, Options, SortBy, Theme, ViewModel, Window,
};
use ratatui::crossterm::event::{
    Event, KeyCode, KeyEvent, KeyEventKind, KeyEventState, KeyModifiers, MouseEvent, MouseEventKind,
};

const S: u64 = 1_000_000_000;

fn opts() -> Options {
    Options {
        theme: Theme { color: false },
        live_span_ns: 5 * S,
    }
}

fn key(app: &mut App, vm: &ViewModel, k: Key) -> Action {
    app.update(Input::Key(k), vm)
}

fn chars(app: &mut App, vm: &ViewModel, s: &str) {
    for c in s.chars() {
        key(app, vm, Key::Char(c));
    }
}

fn click(app: &mut App, vm: &ViewModel, column: u16, row: u16) {
    app.update(
        Input::Mouse(Mouse {
            kind: MouseKind::Click,
            column,
            row,
            shift: false,
        }),
        vm,
    );
}

fn live_demo() -> ViewModel {
    let mut vm = demo_view();
    vm.live = true;
    vm
}

#[test]
fn zoom_pan_and_jumps_stay_inside_the_trace() {
    let vm = demo_view();
    let mut app = App::new(opts(), (80, 24), false);
    assert_eq!(app.window(&vm), (T0, T0 + 10 * S));
    chars(&mut app, &vm, "++");
    assert_eq!(app.window(&vm), (T0 + 3_750_000_000, T0 + 6_250_000_000));
    // Pan far left: stops at the start.
    for _ in 0..20 {
        key(&mut app, &vm, Key::Left);
    }
    assert_eq!(app.window(&vm), (T0, T0 + 2_500_000_000));
    key(&mut app, &vm, Key::End);
    assert_eq!(app.window(&vm), (T0 + 7_500_000_000, T0 + 10 * S));
    key(&mut app, &vm, Key::ShiftRight);
    assert_eq!(app.window(&vm), (T0 + 7_500_000_000, T0 + 10 * S));
    key(&mut app, &vm, Key::Char('g'));
    assert_eq!(app.window(&vm).0, T0);
    // Zooming out past the whole trace fits it again.
    chars(&mut app, &vm, "---");
    assert_eq!(app.window_mode(), Window::Fit);
    // Zoom in a lot: stops at the narrowest window.
    chars(&mut app, &vm, &"+".repeat(60));
    let (a, b) = app.window(&vm);
    assert_eq!(b - a, 10_000);
    chars(&mut app, &vm, "0");
    assert_eq!(app.window_mode(), Window::Fit);
}

#[test]
fn live_window_follows_pauses_and_resumes() {
    let mut vm = live_demo();
    let mut app = App::new(opts(), (80, 24), true);
    assert!(!app.paused(&vm));
    // Shorter than the span: drawn from the start.
    vm.time_range.end_ns = T0 + 2 * S;
    assert_eq!(app.window(&vm), (T0, T0 + 5 * S));
    vm.time_range.end_ns = T0 + 8 * S;
    assert_eq!(app.window(&vm), (T0 + 3 * S, T0 + 8 * S));
    // Zooming keeps following.
    key(&mut app, &vm, Key::Char('+'));
    assert_eq!(app.window(&vm), (T0 + 5_500_000_000, T0 + 8 * S));
    // Space pauses: the window stays put as data arrives.
    assert_eq!(key(&mut app, &vm, Key::Char(' ')), Action::Pause(true));
    vm.time_range.end_ns = T0 + 9 * S;
    assert!(app.paused(&vm));
    assert_eq!(app.window(&vm), (T0 + 5_500_000_000, T0 + 8 * S));
    assert_eq!(key(&mut app, &vm, Key::Char(' ')), Action::Pause(false));
    assert_eq!(app.window(&vm), (T0 + 6_500_000_000, T0 + 9 * S));
    // Panning back pauses; panning forward to the edge resumes.
    key(&mut app, &vm, Key::Left);
    assert!(app.paused(&vm));
    key(&mut app, &vm, Key::Right);
    assert!(!app.paused(&vm));
    key(&mut app, &vm, Key::Home);
    assert!(app.paused(&vm));
    key(&mut app, &vm, Key::End);
    assert!(!app.paused(&vm));
}

#[test]
fn recording_and_pause_only_when_live() {
    let vm = demo_view();
    let mut app = App::new(opts(), (80, 24), false);
    assert_eq!(key(&mut app, &vm, Key::Char('r')), Action::None);
    assert_eq!(key(&mut app, &vm, Key::Char(' ')), Action::None);
    let vm = live_demo();
    let mut app = App::new(opts(), (80, 24), true);
    assert_eq!(key(&mut app, &vm, Key::Char('r')), Action::ToggleRecording);
}

#[test]
fn quitting_closes_overlays_first() {
    let vm = demo_view();
    let mut app = App::new(opts(), (80, 24), false);
    key(&mut app, &vm, Key::Char('?'));
    assert!(app.help_shown());
    // Any key closes the help, q included.
    assert_eq!(key(&mut app, &vm, Key::Char('q')), Action::None);
    assert!(!app.help_shown());
    key(&mut app, &vm, Key::Enter);
    assert!(app.stacks_shown());
    assert_eq!(app.selected(), Some(vm.interpreters[0].threads[0].key));
    assert_eq!(key(&mut app, &vm, Key::Esc), Action::None);
    assert!(!app.stacks_shown());
    assert_eq!(key(&mut app, &vm, Key::Esc), Action::Quit);
    assert_eq!(key(&mut app, &vm, Key::Ctrl('c')), Action::Quit);
    key(&mut app, &vm, Key::Char('?'));
    assert_eq!(key(&mut app, &vm, Key::Ctrl('c')), Action::Quit);
}

#[test]
fn selection_moves_over_interpreters_and_clamps() {
    let vm = demo_view();
    let mut app = App::new(opts(), (80, 24), false);
    key(&mut app, &vm, Key::Up);
    let last = vm.interpreters[2].threads[0].key;
    assert_eq!(app.selected(), Some(last));
    for _ in 0..3 {
        key(&mut app, &vm, Key::Down);
    }
    assert_eq!(app.selected(), Some(last));
    // From the last thread of interp 0 to the first of interp 1.
    app.select(Some(vm.interpreters[0].threads[5].key));
    key(&mut app, &vm, Key::Char('j'));
    assert_eq!(app.selected(), Some(vm.interpreters[1].threads[0].key));
    key(&mut app, &vm, Key::PageUp);
    assert_eq!(app.selected(), Some(vm.interpreters[0].threads[0].key));
}

#[test]
fn mouse_selects_opens_and_sorts() {
    let vm = demo_view();
    let mut app = App::new(opts(), (80, 24), false);
    // Row 2 is interp 0's heading, row 3 MainThread, row 4 io-poller.
    click(&mut app, &vm, 5, 2);
    assert_eq!(app.selected(), None);
    click(&mut app, &vm, 5, 4);
    assert_eq!(app.selected(), Some(vm.interpreters[0].threads[1].key));
    assert!(!app.stacks_shown());
    click(&mut app, &vm, 40, 4);
    assert!(app.stacks_shown());
    // Table: the header sorts, a row selects.
    key(&mut app, &vm, Key::Char('t'));
    assert_eq!(app.sort(), (SortBy::Held, true));
    click(&mut app, &vm, 1, 1);
    assert_eq!(app.sort(), (SortBy::Thread, false));
    click(&mut app, &vm, 1, 1);
    assert_eq!(app.sort(), (SortBy::Thread, true));
    // Sorted by name, descending: worker-3 first.
    click(&mut app, &vm, 1, 2);
    let (_, t) = vm.thread(app.selected().unwrap()).unwrap();
    assert_eq!(t.name, "worker-3");
    // Wheel over the table moves the selection.
    app.update(
        Input::Mouse(Mouse {
            kind: MouseKind::ScrollDown,
            column: 1,
            row: 5,
            shift: false,
        }),
        &vm,
    );
    let (_, t) = vm.thread(app.selected().unwrap()).unwrap();
    assert_eq!(t.name, "worker-2");
}

#[test]
fn sort_keys() {
    let vm = demo_view();
    let mut app = App::new(opts(), (80, 24), false);
    chars(&mut app, &vm, "t");
    chars(&mut app, &vm, ">");
    assert_eq!(app.sort(), (SortBy::Waiting, true));
    chars(&mut app, &vm, "i");
    assert_eq!(app.sort(), (SortBy::Waiting, false));
    chars(&mut app, &vm, "<<<<");
    assert_eq!(app.sort(), (SortBy::Thread, false));
    chars(&mut app, &vm, "<");
    assert_eq!(app.sort(), (SortBy::OnCpu, true));
    chars(&mut app, &vm, "2");
    assert_eq!(app.sort(), (SortBy::Tid, false));
}

#[test]
fn shrinking_the_terminal_keeps_the_selection_in_view() {
    let vm = many_threads_view(70);
    let mut app = App::new(opts(), (80, 60), false);
    for _ in 0..50 {
        key(&mut app, &vm, Key::Down);
    }
    app.update(Input::Resize(80, 24), &vm);
    // 21 list rows; the selected thread is row 51 (after the heading).
    let sel = app.selected().unwrap();
    assert_eq!(vm.thread(sel).unwrap().1.name, "pool-worker-49");
    // Selection survives a tick, and is dropped if the thread goes.
    app.update(Input::Tick, &vm);
    assert_eq!(app.selected(), Some(sel));
    let fewer = many_threads_view(10);
    app.update(Input::Tick, &fewer);
    assert_eq!(app.selected(), None);
}

#[test]
fn crossterm_events_translate() {
    let k = |code, modifiers| {
        Input::from_crossterm(&Event::Key(KeyEvent {
            code,
            modifiers,
            kind: KeyEventKind::Press,
            state: KeyEventState::NONE,
        }))
    };
    assert_eq!(
        k(KeyCode::Char('c'), KeyModifiers::CONTROL),
        Some(Input::Key(Key::Ctrl('c')))
    );
    assert_eq!(
        k(KeyCode::Char('G'), KeyModifiers::SHIFT),
        Some(Input::Key(Key::Char('G')))
    );
    assert_eq!(
        k(KeyCode::Left, KeyModifiers::SHIFT),
        Some(Input::Key(Key::ShiftLeft))
    );
    assert_eq!(k(KeyCode::F(5), KeyModifiers::NONE), None);
    let release = Event::Key(KeyEvent {
        code: KeyCode::Char('q'),
        modifiers: KeyModifiers::NONE,
        kind: KeyEventKind::Release,
        state: KeyEventState::NONE,
    });
    assert_eq!(Input::from_crossterm(&release), None);
    let wheel = Event::Mouse(MouseEvent {
        kind: MouseEventKind::ScrollUp,
        column: 3,
        row: 4,
        modifiers: KeyModifiers::SHIFT,
    });
    assert_eq!(
        Input::from_crossterm(&wheel),
        Some(Input::Mouse(Mouse {
            kind: MouseKind::ScrollUp,
            column: 3,
            row: 4,
            shift: true
        }))
    );
    assert_eq!(
        Input::from_crossterm(&Event::Resize(100, 40)),
        Some(Input::Resize(100, 40))
    );
}
