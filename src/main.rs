//! The gilscope command. All of it is in `cli/`: the one layer that wires the reader, the
//! recorder, the model and the outputs together. Exit codes are documented in docs/cli.md.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
