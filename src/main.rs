//! The `intone` command. `main` parses arguments and runs the command; `cli` maps the outcome
//! to an exit code: 0 ok, 1 a check failed, 2 error.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
