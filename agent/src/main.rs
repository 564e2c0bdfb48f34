//! `detour`: the agent and the node-level CLI, in one binary.

mod cli;
mod datapath;
mod defaults;
mod metrics;
mod proxy;
mod routes;
mod telemetry;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line that says what went wrong and, where we know it, what to do.
            eprintln!("detour: {error:#}");
            ExitCode::FAILURE
        }
    }
}
