//! Command-line interface: one file per verb.
//!
//! `detour agent` runs the node agent. The other verbs inspect it, as
//! `bpfman` and `cilium-dbg` do: they ask the running agent over its admin
//! socket ([`client`]), or, for `detour bpf`, read the maps it pinned, so
//! that those work while it is down. Every verb prints a table for people or
//! `-o json` for scripts ([`output`], [`table`]), and fails with one line
//! that names the cause and the next step, and a documented exit code
//! ([`exit_code`]).

pub mod agent;
pub mod bpf;
pub mod client;
pub mod completions;
pub mod crdgen;
pub mod exit;
pub mod explain;
pub mod flows;
pub mod log_level;
pub mod man;
pub mod output;
pub mod routes;
pub mod status;
pub mod table;
pub mod trace;
pub mod version;

#[cfg(test)]
mod tests;

use clap::{Parser, Subcommand};

use crate::datapath::pinned::PinnedError;

/// detour steers individual requests to sandbox forks of services, with eBPF
/// at the socket layer and a node-local proxy. No sidecars, no iptables.
///
/// Exit codes: 0 success, 1 failure, 2 usage, 3 agent not running or
/// unreachable, 4 permission denied, 5 not found (no pinned maps, unknown
/// service or key).
#[derive(Debug, Parser)]
#[command(name = "detour", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,

    #[command(flatten)]
    global: output::Global,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent: load the eBPF programs, attach them to a cgroup, serve the proxy.
    Agent(Box<agent::AgentArgs>),
    Status(status::StatusArgs),
    Routes(routes::RoutesArgs),
    Flows(flows::FlowsArgs),
    Trace(trace::TraceArgs),
    Explain(explain::ExplainArgs),
    Bpf(bpf::BpfArgs),
    LogLevel(log_level::LogLevelArgs),
    Version(version::VersionArgs),
    Completions(completions::CompletionsArgs),
    Man(man::ManArgs),
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
        let global = &self.global;
        match self.command {
            Command::Agent(args) => agent::run(*args),
            Command::Status(args) => status::run(&args, global),
            Command::Routes(args) => routes::run(&args, global),
            Command::Flows(args) => flows::run(&args, global),
            Command::Trace(args) => trace::run(&args, global),
            Command::Explain(args) => explain::run(&args, global),
            Command::Bpf(args) => bpf::run(&args, global),
            Command::LogLevel(args) => log_level::run(&args, global),
            Command::Version(args) => version::run(&args, global),
            Command::Completions(args) => completions::run(&args),
            Command::Man(args) => man::run(&args),
            Command::Crdgen { out } => crdgen::run(out.as_deref()),
        }
    }
}

/// The exit code for an error: the first error in its chain that has one
/// ([`exit`]).
pub fn exit_code(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if let Some(client) = cause.downcast_ref::<client::ClientError>() {
            return client.exit_code();
        }
        if let Some(failure) = cause.downcast_ref::<output::Failure>() {
            return failure.code;
        }
        if let Some(pinned) = cause.downcast_ref::<PinnedError>() {
            return match pinned {
                PinnedError::Missing { .. } => exit::NOT_FOUND,
                PinnedError::Permission { .. } => exit::PERMISSION,
                PinnedError::Map { .. } => exit::FAILURE,
            };
        }
    }
    exit::FAILURE
}
