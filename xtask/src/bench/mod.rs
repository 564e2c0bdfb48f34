//! `cargo xtask bench`: benchmarks that print ratios against peers measured
//! in the same run.
//!
//! - [`connect`]: connect()+close() cost with no agent, with the agent
//!   attached but the destination not steered, steered, and through iptables
//!   NAT rules instead of detour.
//! - [`client`], [`server`]: the hidden `bench-client` / `bench-server`
//!   subcommands it runs inside its network namespaces (the xtask binary
//!   itself, so the benchmark needs no tool beyond the repository).
//! - [`workers`]: driving the clients, one per mode, interleaved.
//! - [`procs`]: CPU pinning, the listeners, iptables, kernel counters.
//! - [`report`]: the table and targets it prints.

mod client;
mod connect;
mod procs;
mod report;
mod server;
mod workers;

use clap::{Args, ValueEnum};
pub use client::ClientArgs;
pub use server::ServerArgs;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Suite {
    /// connect()+close() cost: no agent, attached-not-steered, steered, iptables DNAT/REDIRECT.
    Connect,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Which benchmark to run.
    #[arg(value_enum, default_value_t = Suite::Connect)]
    pub suite: Suite,
    /// Rounds; each mode's median operation per round is one sample, and
    /// the median over rounds is reported.
    #[arg(long, default_value_t = 60)]
    pub rounds: u32,
    /// Timed connect+close operations per mode per round.
    #[arg(long, default_value_t = 250)]
    pub iterations: u32,
    /// Operations of one mode before switching to the next mode.
    #[arg(long, default_value_t = 50)]
    pub batch: u32,
    /// Untimed spin after each connect+close, in microseconds, so that the
    /// proxies and servers drain their accept queues between operations.
    #[arg(long, default_value_t = 100)]
    pub gap_us: u64,
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    match args.suite {
        Suite::Connect => connect::run(args),
    }
}

/// `cargo xtask bench-client` (hidden): the timed loop of `bench connect`.
pub fn run_client(args: &ClientArgs) -> anyhow::Result<()> {
    client::run(args)
}

/// `cargo xtask bench-server` (hidden): a listener of `bench connect`.
pub fn run_server(args: &ServerArgs) -> anyhow::Result<()> {
    server::run(args)
}
