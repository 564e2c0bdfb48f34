//! `detour`: the agent and the node-level CLI, in one binary.

use std::process::ExitCode;

use clap::Parser;
use detour::cli::Cli;

fn main() -> ExitCode {
    match Cli::parse().run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line that says what went wrong and, where we know it, what to do.
            eprintln!("detour: {error:#}");
            ExitCode::FAILURE
        }
    }
}
