//! The gilscope command line. The only place that wires the reader, the
//! model and the outputs together. Exit codes are documented in docs/cli.md.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use gilscope::output;
use gilscope::reader::{self, Reader, ReaderOptions};

mod cli_check;
mod cli_record;
mod cli_view;

#[derive(Parser)]
#[command(
    name = "gilscope",
    version,
    about = "Who holds the GIL, in which interpreter, and why is my parallel code not parallel?",
    long_about = "gilscope reads a running CPython process (3.9-3.15, sub-interpreters, \
                  free-threaded builds) from the outside and shows, for every thread of every \
                  interpreter, whether it holds that interpreter's GIL, waits for it, runs \
                  without it or sleeps. It never writes to the target and, by default, never \
                  pauses it."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print every interpreter, GIL and thread (with its Python stack) once.
    Dump(DumpArgs),
    /// Record GIL and thread states and stacks over time into a trace file.
    Record(RecordArgs),
    /// Summarize a trace: GIL busy %, hand-overs, per-thread held/waiting/idle, hot stacks.
    Summary(SummaryArgs),
    /// Browse a trace in the terminal: timeline lanes per thread, per interpreter.
    View(ViewArgs),
    /// Watch a process live in the terminal (`r` saves the session to a trace).
    Top(TopArgs),
    /// Draw a flame graph (SVG) of the stacks in one GIL state (default: held).
    Flame(FlameArgs),
    /// Convert a trace: Perfetto / chrome://tracing JSON, speedscope, folded stacks, SVG timeline.
    Export(ExportArgs),
    /// CI gate: run a command (e.g. pytest) and fail when native code holds a GIL too long.
    ///
    /// Exit status: 0 clean, 1 findings, 2 gilscope could not run; the command's own non-zero
    /// status wins unless --ignore-command-status (docs/ci.md).
    Check(CheckArgs),
}

#[derive(Args)]
struct CheckArgs {
    /// Report native code that holds a GIL continuously for longer than this
    /// (e.g. 50ms, 0.2s; a bare number is milliseconds). Default 50ms, or
    /// `max-hold` in [tool.gilscope].
    #[arg(long, value_name = "DURATION", value_parser = gilscope::check::config::parse_duration_ms)]
    max_hold: Option<f64>,
    /// Samples per second (default 1000, or `rate` in [tool.gilscope]).
    #[arg(long, value_parser = parse_rate)]
    rate: Option<f64>,
    /// Write the findings as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<std::path::PathBuf>,
    /// Write a JUnit XML report (one testcase per finding) to this file.
    #[arg(long, value_name = "FILE")]
    junit: Option<std::path::PathBuf>,
    /// Keep the full recording here (FILE.PID for subprocesses), for `gilscope view`.
    #[arg(long, value_name = "FILE")]
    trace: Option<std::path::PathBuf>,
    /// Also try importing every loaded extension module in an own-GIL
    /// sub-interpreter (3.12+) and report those that refuse.
    #[arg(long)]
    subinterpreters: bool,
    /// Exit with the check's status even when the command failed.
    #[arg(long)]
    ignore_command_status: bool,
    /// Also fail on holds while a module is being imported (dlopen, extension init);
    /// by default they are reported as allowed.
    #[arg(long)]
    include_imports: bool,
    /// Do not unwind native stacks (no ptrace; findings then name no shared object).
    #[arg(long)]
    no_native: bool,
    /// Print GitHub Actions annotations on stdout (default: when GITHUB_ACTIONS=true).
    #[arg(long)]
    github: bool,
    /// How GIL states are obtained (as in `record --mode`); the hold detection itself
    /// uses the sampled states.
    #[arg(long, value_enum, default_value = "sampling")]
    mode: cli_record::Mode,
    /// The configuration file (default: the nearest pyproject.toml from the current directory).
    #[arg(long, value_name = "PYPROJECT")]
    config: Option<std::path::PathBuf>,
    /// The command to check: `gilscope check -- python -m pytest`.
    #[arg(last = true, value_name = "CMD", required = true)]
    command: Vec<String>,
}

#[derive(Args)]
struct RecordArgs {
    /// Record this running process.
    #[arg(long, short, conflicts_with = "command")]
    pid: Option<u32>,
    /// The trace file to write.
    #[arg(long, short, default_value = "gilscope.trace")]
    output: std::path::PathBuf,
    /// Samples per second (GIL and thread state and stacks).
    #[arg(long, default_value_t = 1000.0, value_parser = parse_rate)]
    rate: f64,
    /// Stop after this many seconds (default: until Ctrl-C or the target exits).
    #[arg(long, value_parser = parse_secs)]
    duration: Option<std::time::Duration>,
    /// Pause the target while reading each sample (ptrace). Slower; off by default.
    #[arg(long)]
    blocking: bool,
    /// Also record Python processes started by the target, each into
    /// FILE.PID (e.g. gilscope.12345.trace).
    #[arg(long)]
    subprocesses: bool,
    /// Do not read Python stacks (state only; cheaper).
    #[arg(long)]
    no_stacks: bool,
    /// How GIL states are obtained: `exact` (uprobes on take_gil/drop_gil: exact
    /// boundaries; needs root and CPython's symbols), `sampling`, or `auto`
    /// (exact where possible, else sampling; says which and why).
    #[arg(long, value_enum, default_value = "auto")]
    mode: cli_record::Mode,
    /// After recording, also draw the flame graph of the GIL-holding stacks
    /// into this SVG (as `gilscope flame FILE -o SVG` would).
    #[arg(long, value_name = "SVG")]
    flame: Option<std::path::PathBuf>,
    /// Launch this command and record it until it exits: `gilscope record -- python app.py`.
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
}

#[derive(Args)]
struct ViewArgs {
    /// A trace written by `gilscope record` (or saved from `gilscope top`).
    file: std::path::PathBuf,
}

#[derive(Args)]
struct TopArgs {
    /// The process to watch.
    #[arg(long, short)]
    pid: u32,
    /// Samples per second.
    #[arg(long, default_value_t = 200.0, value_parser = parse_rate)]
    rate: f64,
    /// Pause the target while reading each sample (ptrace).
    #[arg(long)]
    blocking: bool,
}

/// Which runs a flame graph or stack export keeps, and how frames are labelled.
#[derive(Args)]
struct StackFilterArgs {
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
        }
    }
}

#[derive(Args)]
struct FlameArgs {
    /// A trace written by `gilscope record`.
    file: std::path::PathBuf,
    /// The SVG to write (`-` for stdout).
    #[arg(long, short)]
    output: std::path::PathBuf,
    #[command(flatten)]
    filter: StackFilterArgs,
}

#[derive(Args)]
struct ExportArgs {
    /// A trace written by `gilscope record`.
    file: std::path::PathBuf,
    /// perfetto, speedscope, collapsed or timeline-svg.
    #[arg(long, short)]
    format: output::export::Format,
    /// The file to write (`-` for stdout).
    #[arg(long, short)]
    output: std::path::PathBuf,
    #[command(flatten)]
    filter: StackFilterArgs,
}

#[derive(Args)]
struct SummaryArgs {
    /// A trace written by `gilscope record`.
    file: std::path::PathBuf,
    /// Print JSON (shape in docs/cli.md).
    #[arg(long)]
    json: bool,
    /// Hottest stacks listed per GIL.
    #[arg(long, default_value_t = 5)]
    top: usize,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if !(v.is_finite() && v > 0.0 && v <= 100_000.0) {
        return Err("the rate must be between 0 and 100000 Hz".into());
    }
    Ok(v)
}

fn parse_secs(s: &str) -> Result<std::time::Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(v.is_finite() && v > 0.0) {
        return Err("the duration must be a positive number of seconds".into());
    }
    Ok(std::time::Duration::from_secs_f64(v))
}

#[derive(Args)]
struct DumpArgs {
    /// The process to read.
    #[arg(long, short)]
    pid: u32,
    /// Print JSON (the shape is documented in docs/cli.md).
    #[arg(long)]
    json: bool,
    /// Pause the target while reading (ptrace), for a perfectly consistent
    /// reading. Off by default: gilscope then never stops the target.
    #[arg(long)]
    blocking: bool,
    /// Do not read Python stacks.
    #[arg(long)]
    no_stacks: bool,
}

/// Exit codes (docs/cli.md).
const EXIT_OTHER: u8 = 1;

fn run_dump(args: &DumpArgs) -> Result<()> {
    let opts = ReaderOptions {
        blocking: args.blocking,
        stacks: !args.no_stacks,
        ..ReaderOptions::default()
    };
    let mut reader = Reader::attach(args.pid, opts)?;
    let snap = reader.snapshot()?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        output::dump::write_json(&mut out, &snap).context("writing to stdout")?;
    } else {
        output::dump::write_text(&mut out, &snap).context("writing to stdout")?;
    }
    out.flush().context("writing to stdout")?;
    Ok(())
}

/// Returns the exit code: the launched command's when there was one.
fn run_record(args: &RecordArgs) -> Result<u8> {
    let plan = cli_record::RecordPlan {
        output: args.output.clone(),
        rate_hz: args.rate,
        duration: args.duration,
        blocking: args.blocking,
        subprocesses: args.subprocesses,
        stacks: !args.no_stacks,
        mode: args.mode,
    };
    match (args.pid, args.command.is_empty()) {
        (Some(pid), true) => {
            cli_record::record_pid(pid, &plan)?;
            flame_after_record(args)?;
            Ok(0)
        }
        (None, false) => {
            let launched = cli_record::record_command(&args.command, &plan)?;
            flame_after_record(args)?;
            if launched.status_code != 0 {
                eprintln!(
                    "gilscope: the command exited with status {}",
                    launched.status_code
                );
            }
            Ok(0)
        }
        _ => anyhow::bail!(
            "say what to record: `gilscope record --pid PID` or `gilscope record -- CMD ARGS...`"
        ),
    }
}

fn run_check(args: &CheckArgs) -> Result<u8> {
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let file = gilscope::check::config::load(args.config.as_deref(), &cwd)?;
    if let Some(p) = &file.path {
        if file != gilscope::check::config::FileConfig::default() {
            eprintln!("gilscope check: configuration from {}", p.display());
        }
    }
    let github = args.github
        || std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    let plan = cli_check::CheckPlan {
        command: args.command.clone(),
        max_hold_ms: args.max_hold.or(file.max_hold_ms).unwrap_or(50.0),
        rate_hz: args.rate.or(file.rate_hz).unwrap_or(1000.0),
        mode: args.mode,
        trace: args.trace.clone(),
        json: args.json.clone(),
        junit: args.junit.clone(),
        github,
        ignore_command_status: args.ignore_command_status,
        subinterpreters: args.subinterpreters || file.subinterpreters.unwrap_or(false),
        native: !args.no_native,
        include_imports: args.include_imports || file.include_imports.unwrap_or(false),
        allow: file.allow,
    };
    cli_check::run_check(&plan)
}

fn run_summary(args: &SummaryArgs) -> Result<()> {
    let replay = gilscope::trace::replay(&args.file)?;
    let opts = gilscope::analysis::summary::SummaryOptions {
        top_stacks: args.top,
    };
    let summary = gilscope::analysis::summary::summarize_replay(&replay, &opts);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        output::summary::write_json(&mut out, &summary).context("writing to stdout")?;
    } else {
        output::summary::write_text(&mut out, &summary).context("writing to stdout")?;
    }
    out.flush().context("writing to stdout")?;
    Ok(())
}

fn run_flame(args: &FlameArgs) -> Result<()> {
    let opts = args.filter.options(output::flame::StateFilter::default());
    output::flame::flame_file(&args.file, &args.output, &opts)?;
    Ok(())
}

fn run_export(args: &ExportArgs) -> Result<()> {
    let opts = args.filter.options(args.format.default_state());
    output::export::export_file(&args.file, args.format, &args.output, &opts)
}

/// `record --flame SVG`: draw the held-GIL flame graph of the trace just written.
fn flame_after_record(args: &RecordArgs) -> Result<()> {
    if let Some(svg) = &args.flame {
        let opts = output::flame::FoldOptions::default();
        output::flame::flame_file(&args.output, svg, &opts)
            .with_context(|| format!("drawing the flame graph {}", svg.display()))?;
        eprintln!("gilscope: flame graph → {}", svg.display());
    }
    Ok(())
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Dump(args) => run_dump(args).map(|()| 0),
        Command::Record(args) => run_record(args),
        Command::Summary(args) => run_summary(args).map(|()| 0),
        Command::View(args) => cli_view::run_view(&args.file).map(|()| 0),
        Command::Top(args) => cli_view::run_top(
            args.pid,
            args.rate,
            ReaderOptions {
                blocking: args.blocking,
                ..ReaderOptions::default()
            },
        )
        .map(|()| 0),
        Command::Flame(args) => run_flame(args).map(|()| 0),
        Command::Export(args) => run_export(args).map(|()| 0),
        Command::Check(args) => match run_check(args) {
            Ok(code) => Ok(code),
            Err(err) => {
                // Whatever stopped it, `check` says "could not run" (2), not a finding (1).
                eprintln!("gilscope check: error: {err:#}");
                return ExitCode::from(gilscope::check::EXIT_COULD_NOT_RUN);
            }
        },
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            let code = reader::classify(&err)
                .map(|k| k.exit_code())
                .unwrap_or(EXIT_OTHER);
            eprintln!("gilscope: error: {err:#}");
            ExitCode::from(code)
        }
    }
}
