//! Command-line interface: one file per verb.

pub mod agent;
pub mod crdgen;

use clap::{Parser, Subcommand};

/// detour steers individual requests to sandbox forks of services, with eBPF
/// at the socket layer and a node-local proxy. No sidecars, no iptables.
#[derive(Debug, Parser)]
#[command(name = "detour", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent: load the eBPF programs, attach them to a cgroup, serve the proxy.
    Agent(Box<agent::AgentArgs>),
    /// Print the CRDs generated from the Rust types (used by `cargo xtask crdgen`).
    #[command(hide = true)]
    Crdgen {
        /// Directory to write one file per CRD to (default: print them).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
}

impl Cli {
    pub fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Agent(args) => agent::run(*args),
            Command::Crdgen { out } => crdgen::run(out.as_deref()),
        }
    }
}
