//! `detour`: the agent and the node-level CLI, in one binary.

use std::process::ExitCode;

use clap::Parser;
use detour::cli::Cli;

fn main() -> ExitCode {
    match Cli::parse().run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line that says what went wrong and, where we know it, what to
            // do. Some causes carry pages of detail (the verifier's log): that
            // goes to the debug log, not the error line.
            let message = format!("{error:#}");
            let mut lines = message.lines();
            let first = lines.next().unwrap_or_default();
            if lines.next().is_some() {
                tracing::debug!(error = %message, "full error");
                eprintln!("detour: {first} (full detail with DETOUR_LOG=debug)");
            } else {
                eprintln!("detour: {first}");
            }
            ExitCode::from(detour::cli::exit_code(&error))
        }
    }
}
