//! Frame render time on a big view model: 64 threads × 10 minutes sampled at
//! 1 kHz (about 2.6 M lane segments), drawn on a 200×60 TestBackend.
//! Prints the median and worst time per frame for a few screens; the target
//! is ≤ 16 ms per frame. Run it optimised:
//!
//!     cargo run --release -p gilscope-ui --example frame_time
//!
//! Not a test: timings depend on the machine.

use std::time::{Duration, Instant};

use gilscope_ui::fixtures::synthetic_view;
use gilscope_ui::{App, Input, Key, Options, Theme};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

const FRAMES: usize = 60;

fn main() {
    let t = Instant::now();
    let vm = synthetic_view(64, 600_000_000_000, 1_000_000, 42);
    let segments: usize = vm.threads().map(|(_, t)| t.lane.segments().len()).sum();
    println!(
        "built synthetic view in {:.2?}: 64 threads, 10 min at 1 kHz, {segments} lane segments \
         ({:.0} MiB of segments)",
        t.elapsed(),
        (segments * std::mem::size_of::<gilscope_ui::Segment>()) as f64 / (1 << 20) as f64
    );
    let opts = Options {
        theme: Theme { color: true },
        ..Options::default()
    };
    let (w, h) = (200, 60);
    let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
    let key = |c| Input::Key(Key::Char(c));
    let screens: Vec<(&str, Vec<Input>)> = vec![
        ("whole trace", vec![]),
        ("zoomed ×64 mid-trace", vec![key('+'); 6]),
        ("zoomed to ~1 s", vec![key('+'); 9]),
        (
            "thread selected + stacks",
            vec![key('j'), key('j'), Input::Key(Key::Enter)],
        ),
        ("thread table, sorted by waiting", vec![key('t'), key('5')]),
        (
            "scrolled to the last thread",
            vec![key('G'); 1]
                .into_iter()
                .chain(vec![Input::Key(Key::PageDown); 3])
                .collect(),
        ),
    ];
    for (name, inputs) in screens {
        let mut app = App::new(opts, (w, h), false);
        for i in inputs {
            app.update(i, &vm);
        }
        let mut times: Vec<Duration> = (0..FRAMES)
            .map(|_| {
                // Force a full redraw each time, like a resize or a pan would.
                term.clear().unwrap();
                let t = Instant::now();
                term.draw(|f| app.draw(f, &vm)).unwrap();
                t.elapsed()
            })
            .collect();
        times.sort();
        println!(
            "{name:<34} median {:>8.2?}  max {:>8.2?}  ({FRAMES} frames, {w}×{h})",
            times[FRAMES / 2],
            times[FRAMES - 1]
        );
    }
}
