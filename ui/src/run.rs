//! The event loop, generic over the backend (tests pass a `TestBackend` and a
//! list of inputs), and the real-terminal wrapper around it.
//!
//! Data flows one way: inputs (keys, mouse, resize, ticks) arrive through one
//! channel → `App::update` → `App::draw` from the source's current model.

use std::io;
use std::panic;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ratatui::backend::{Backend, CrosstermBackend};
use ratatui::crossterm::event::{
    self, Event, KeyCode, KeyEventKind, KeyModifiers, MouseButton, MouseEventKind,
};
use ratatui::crossterm::{cursor, execute, terminal};
use ratatui::Terminal;

use crate::app::{Action, App, Input, Key, Mouse, MouseKind, Options};
use crate::view::ViewModel;

/// Where the UI gets the model to draw.
pub trait ViewSource {
    /// The model to draw now.
    fn view(&self) -> &ViewModel;

    /// Take in new data. Called on every [`Input::Tick`]; a static source
    /// does nothing.
    fn refresh(&mut self) {}

    /// An action only the caller can carry out ([`Action::ToggleRecording`]);
    /// also told about [`Action::Pause`]. Report the outcome through the
    /// model (`recording`, `notice`).
    fn action(&mut self, _action: Action) {}
}

/// A fixed model (`gilscope view`).
impl ViewSource for ViewModel {
    fn view(&self) -> &ViewModel {
        self
    }
}

/// Runs the UI until `q`/`Esc` (or the inputs end), drawing after every
/// input. Generic over the backend so tests can drive it with a
/// `TestBackend` and a list of inputs.
pub fn run<B: Backend>(
    terminal: &mut Terminal<B>,
    source: &mut dyn ViewSource,
    inputs: impl IntoIterator<Item = Input>,
    opts: Options,
) -> Result<()>
where
    B::Error: Send + Sync + 'static,
{
    let size = terminal.size()?;
    let mut app = App::new(opts, (size.width, size.height), source.view().live);
    terminal.draw(|f| app.draw(f, source.view()))?;
    for input in inputs {
        if input == Input::Tick {
            source.refresh();
        }
        match app.update(input, source.view()) {
            Action::Quit => break,
            Action::None => {}
            other => source.action(other),
        }
        terminal.draw(|f| app.draw(f, source.view()))?;
    }
    Ok(())
}

impl Input {
    /// Translate a crossterm event; `None` for events the UI ignores.
    pub fn from_crossterm(ev: &Event) -> Option<Input> {
        match ev {
            Event::Key(k) => {
                if k.kind == KeyEventKind::Release {
                    return None;
                }
                let shift = k.modifiers.contains(KeyModifiers::SHIFT);
                let key = match k.code {
                    KeyCode::Char(c) if k.modifiers.contains(KeyModifiers::CONTROL) => {
                        Key::Ctrl(c.to_ascii_lowercase())
                    }
                    KeyCode::Char(c) => Key::Char(c),
                    KeyCode::Left if shift => Key::ShiftLeft,
                    KeyCode::Right if shift => Key::ShiftRight,
                    KeyCode::Left => Key::Left,
                    KeyCode::Right => Key::Right,
                    KeyCode::Up => Key::Up,
                    KeyCode::Down => Key::Down,
                    KeyCode::Home => Key::Home,
                    KeyCode::End => Key::End,
                    KeyCode::PageUp => Key::PageUp,
                    KeyCode::PageDown => Key::PageDown,
                    KeyCode::Enter => Key::Enter,
                    KeyCode::Esc => Key::Esc,
                    KeyCode::Tab => Key::Tab,
                    KeyCode::BackTab => Key::BackTab,
                    _ => return None,
                };
                Some(Input::Key(key))
            }
            Event::Mouse(m) => {
                let kind = match m.kind {
                    MouseEventKind::ScrollUp => MouseKind::ScrollUp,
                    MouseEventKind::ScrollDown => MouseKind::ScrollDown,
                    MouseEventKind::ScrollLeft => MouseKind::ScrollLeft,
                    MouseEventKind::ScrollRight => MouseKind::ScrollRight,
                    MouseEventKind::Down(MouseButton::Left) => MouseKind::Click,
                    _ => return None,
                };
                Some(Input::Mouse(Mouse {
                    kind,
                    column: m.column,
                    row: m.row,
                    shift: m.modifiers.contains(KeyModifiers::SHIFT),
                }))
            }
            Event::Resize(w, h) => Some(Input::Resize(*w, *h)),
            _ => None,
        }
    }
}

/// Whether [`run_in_terminal`] has the terminal set up (so that restoring
/// happens once: leaving the alternate screen twice would move the cursor
/// back over whatever was printed in between, such as a panic message).
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Put the terminal back the way a shell expects it: cooked mode, main
/// screen, no mouse capture, cursor shown. Does nothing unless
/// [`run_in_terminal`] set it up, so it is safe to call more than once
/// (e.g. from the CLI's own signal handling).
pub fn restore_terminal() {
    if !ACTIVE.swap(false, Ordering::SeqCst) {
        return;
    }
    let _ = terminal::disable_raw_mode();
    let _ = execute!(
        io::stdout(),
        event::DisableMouseCapture,
        terminal::LeaveAlternateScreen,
        cursor::Show
    );
}

/// Restores the terminal and stops the input thread when dropped, on every
/// way out (return, `?`, unwinding panic).
struct Session {
    stop: Arc<AtomicBool>,
}

impl Session {
    fn enter() -> Result<Session> {
        terminal::enable_raw_mode().context("cannot put the terminal in raw mode")?;
        ACTIVE.store(true, Ordering::SeqCst);
        let session = Session {
            stop: Arc::new(AtomicBool::new(false)),
        };
        execute!(
            io::stdout(),
            terminal::EnterAlternateScreen,
            event::EnableMouseCapture,
            cursor::Hide
        )
        .context("cannot set up the terminal")?;
        Ok(session)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        restore_terminal();
    }
}

type PanicHook = Box<dyn Fn(&panic::PanicHookInfo<'_>) + Sync + Send + 'static>;

/// Installs a panic hook that restores the terminal before the previous
/// hook prints the message; puts the previous hook back when dropped.
struct HookGuard {
    prev: Option<Arc<PanicHook>>,
}

impl HookGuard {
    fn install() -> HookGuard {
        let prev: Arc<PanicHook> = Arc::new(panic::take_hook());
        let chained = prev.clone();
        panic::set_hook(Box::new(move |info| {
            restore_terminal();
            chained(info);
        }));
        HookGuard { prev: Some(prev) }
    }
}

impl Drop for HookGuard {
    fn drop(&mut self) {
        if thread::panicking() {
            // Leave our hook in place while unwinding.
            return;
        }
        let _ = panic::take_hook();
        if let Some(prev) = self.prev.take() {
            panic::set_hook(Box::new(move |info| prev(info)));
        }
    }
}

/// How often a live view refreshes.
pub const LIVE_TICK: Duration = Duration::from_millis(250);

/// Run the UI full-screen in this process's terminal: alternate screen, raw
/// mode, mouse capture; restored on every exit path, panics included.
/// Resizes are followed. A live source (`view().live`) is refreshed every
/// [`LIVE_TICK`].
pub fn run_in_terminal(source: &mut dyn ViewSource, opts: Options) -> Result<()> {
    let hook = HookGuard::install();
    let session = Session::enter()?;
    let mut terminal =
        Terminal::new(CrosstermBackend::new(io::stdout())).context("cannot use the terminal")?;
    terminal.clear()?;

    let tick = source.view().live.then_some(LIVE_TICK);
    let (tx, rx) = mpsc::channel::<Input>();
    let stop = session.stop.clone();
    let reader = thread::Builder::new()
        .name("gilscope-ui-input".into())
        .spawn(move || -> io::Result<()> {
            let mut last_tick = Instant::now();
            while !stop.load(Ordering::SeqCst) {
                // Short polls so that `stop` is noticed quickly.
                if event::poll(Duration::from_millis(50))? {
                    let ev = event::read()?;
                    if let Some(input) = Input::from_crossterm(&ev) {
                        if tx.send(input).is_err() {
                            break;
                        }
                    }
                }
                if let Some(t) = tick {
                    if last_tick.elapsed() >= t {
                        last_tick = Instant::now();
                        if tx.send(Input::Tick).is_err() {
                            break;
                        }
                    }
                }
            }
            Ok(())
        })
        .context("cannot start the input thread")?;

    let result = run(&mut terminal, source, rx.iter(), opts);
    session.stop.store(true, Ordering::SeqCst);
    drop(rx);
    let joined = reader.join();
    drop(session);
    drop(hook);
    result?;
    match joined {
        Ok(r) => r.context("reading terminal input"),
        Err(_) => anyhow::bail!("the terminal input thread panicked"),
    }
}
