//! `gilscope flame` and `gilscope export`: stacks and timelines of a trace in the formats
//! other tools open (SVG flame graphs, Perfetto, speedscope, collapsed stacks, SVG timeline).

use anyhow::Result;
use clap::Args;

use gilscope::output;

/// Which runs a flame graph or stack export keeps, and how frames are labelled.
#[derive(Args)]
pub struct StackFilterArgs {
    /// GIL state: held, waiting, released, idle, attached, unknown or all
    /// (all puts the state at the root of every stack).
    #[arg(long, value_name = "STATE")]
    state: Option<output::flame::StateFilter>,
    /// Only runs in this interpreter.
    #[arg(long, value_name = "ID")]
    interpreter: Option<i64>,
    /// Only this thread (kernel TID, or thread name).
    #[arg(long, value_name = "TID")]
    thread: Option<output::flame::ThreadSelector>,
    /// Add `[interp N]` to every frame.
    #[arg(long)]
    annotate_interpreter: bool,
    /// Leave line numbers out of frame labels.
    #[arg(long)]
    no_lines: bool,
    /// Start every stack with a `thread NAME (TID)` frame.
    #[arg(long)]
    thread_roots: bool,
    /// Weight stacks by `time` (ns, default) or `samples`.
    #[arg(long, default_value = "time")]
    weight: output::flame::Weight,
}

impl StackFilterArgs {
    fn options(&self, default_state: output::flame::StateFilter) -> output::flame::FoldOptions {
        output::flame::FoldOptions {
            state: self.state.unwrap_or(default_state),
            interpreter: self.interpreter,
            thread: self.thread.clone(),
            annotate_interpreter: self.annotate_interpreter,
            no_lines: self.no_lines,
            thread_roots: self.thread_roots,
            weight: self.weight,
            blame: false,
        }
    }
}

#[derive(Args)]
pub struct FlameArgs {
    /// A trace written by `gilscope record`.
    file: std::path::PathBuf,
    /// The SVG to write (`-` for stdout).
    #[arg(long, short)]
    output: std::path::PathBuf,
    #[command(flatten)]
    filter: StackFilterArgs,
    /// Draw the stacks of the threads holding the GIL, weighted by the time others waited for
    /// it meanwhile (which code makes everyone else wait); `--thread` picks the waiter.
    #[arg(long, conflicts_with = "state")]
    blame: bool,
}

#[derive(Args)]
pub struct ExportArgs {
    /// A trace written by `gilscope record`.
    file: std::path::PathBuf,
    /// perfetto, speedscope, collapsed, timeline-svg or pprof (gzip'd profile.proto).
    #[arg(long, short)]
    format: output::export::Format,
    /// The file to write (`-` for stdout).
    #[arg(long, short)]
    output: std::path::PathBuf,
    #[command(flatten)]
    filter: StackFilterArgs,
    /// pprof: also label every sample with `thread_id` (the kernel TID). Off by default:
    /// one label value per thread makes many series in a profiling backend.
    #[arg(long)]
    thread_id: bool,
}

pub fn run_flame(args: &FlameArgs) -> Result<u8> {
    let mut opts = args.filter.options(output::flame::StateFilter::default());
    if args.blame {
        if opts.weight == output::flame::Weight::Samples {
            anyhow::bail!(
                "--blame weighs stacks by waiting time; --weight samples does not apply (leave it out)"
            );
        }
        opts.blame = true;
    }
    output::flame::flame_file(&args.file, &args.output, &opts)?;
    Ok(0)
}

pub fn run_export(args: &ExportArgs) -> Result<u8> {
    let opts = args.filter.options(args.format.default_state());
    output::export::export_file(&args.file, args.format, &args.output, &opts, args.thread_id)?;
    Ok(0)
}
