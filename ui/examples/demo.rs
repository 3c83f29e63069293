//! Runs the UI full-screen on a fixture, in the real terminal:
//!
//!     cargo run -p gilscope-ui --example demo            # like `gilscope view`
//!     cargo run -p gilscope-ui --example demo -- --live  # like `gilscope top`
//!     cargo run -p gilscope-ui --example demo -- --free-threaded
//!     cargo run -p gilscope-ui --example demo -- --many 64
//!     cargo run -p gilscope-ui --example demo -- --panic # checks the terminal is restored
//!
//! `--live` replays the demo trace as if sampled live, one second of trace
//! per refresh, looping.

use gilscope_ui::fixtures::{demo_view, free_threaded_view, many_threads_view};
use gilscope_ui::{
    run_in_terminal, Action, GilSegment, GilTrack, Lane, Options, Segment, ViewModel, ViewSource,
};

/// Replays a finished view as a growing live session.
struct Replay {
    full: ViewModel,
    vm: ViewModel,
    ticks: u64,
    panic_after: Option<u64>,
}

impl ViewSource for Replay {
    fn view(&self) -> &ViewModel {
        &self.vm
    }

    fn refresh(&mut self) {
        self.ticks += 1;
        if self.panic_after == Some(self.ticks) {
            panic!("demo panic (the terminal should be usable after this)");
        }
        let r = self.full.time_range;
        let step = 250_000_000;
        let mut end = self.vm.time_range.end_ns + step;
        if end > r.end_ns {
            end = r.start_ns + step;
        }
        self.vm = cut(&self.full, end, std::mem::take(&mut self.vm));
    }

    fn action(&mut self, action: Action) {
        match action {
            Action::ToggleRecording => {
                self.vm.recording = match self.vm.recording {
                    None => Some("demo-live.gilscope".into()),
                    Some(_) => None,
                };
                self.vm.notice = Some(match &self.vm.recording {
                    Some(p) => format!("recording to {p}"),
                    None => "recording stopped".into(),
                });
            }
            Action::Pause(p) => {
                self.vm.notice = Some(if p { "paused" } else { "following" }.into());
            }
            _ => {}
        }
    }
}

/// `full` as it looked at `end`: segments after it dropped or cut. Keeps
/// the old model's recording state and notice.
fn cut(full: &ViewModel, end: u64, old: ViewModel) -> ViewModel {
    let mut vm = full.clone();
    vm.time_range.end_ns = end;
    vm.recording = old.recording;
    vm.notice = old.notice;
    for it in &mut vm.interpreters {
        for t in &mut it.threads {
            t.lane = Lane::from_segments(t.lane.segments().iter().filter_map(|s| {
                (s.start_ns < end).then_some(Segment {
                    end_ns: s.end_ns.min(end),
                    ..*s
                })
            }));
        }
    }
    for g in &mut vm.gils {
        g.track = GilTrack::from_segments(g.track.segments().iter().filter_map(|s| {
            (s.start_ns < end).then_some(GilSegment {
                end_ns: s.end_ns.min(end),
                ..*s
            })
        }));
    }
    vm
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let has = |f: &str| args.iter().any(|a| a == f);
    let mut vm = if has("--free-threaded") {
        free_threaded_view()
    } else if let Some(i) = args.iter().position(|a| a == "--many") {
        let n = args.get(i + 1).and_then(|n| n.parse().ok()).unwrap_or(64);
        many_threads_view(n)
    } else {
        demo_view()
    };
    if has("--live") || has("--panic") {
        vm.live = true;
        let full = vm.clone();
        let vm = cut(
            &full,
            full.time_range.start_ns + 250_000_000,
            ViewModel::default(),
        );
        let mut src = Replay {
            full,
            vm,
            ticks: 0,
            panic_after: has("--panic").then_some(8),
        };
        let opts = Options {
            live_span_ns: 5_000_000_000,
            ..Options::default()
        };
        run_in_terminal(&mut src, opts)
    } else {
        run_in_terminal(&mut vm, Options::default())
    }
}
