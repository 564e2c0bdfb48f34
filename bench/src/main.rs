//! `detour-bench`: benchmarks that print ratios against peers measured in
//! the same run, and publish their table to `bench/RESULTS.md`
//! ([`results`]), each suite in its own block. `cargo xtask bench SUITE`
//! runs it, after it has set the machine up and built the release agent
//! it measures (`DETOUR_BIN`).
//!
//! - [`connect`]: connect()+close() cost with no agent, with the agent
//!   attached but the destination not steered, steered, and through iptables
//!   NAT rules instead of detour.
//! - `connect::client`, `connect::server`: the hidden `client` / `server`
//!   subcommands it runs inside its network namespaces (this binary
//!   itself, so the benchmark needs no tool beyond the repository).
//! - `connect::workers`: driving the clients, one per mode, interleaved.
//! - [`procs`]: CPU pinning, the listeners, iptables, kernel counters.
//! - `connect::report`: the table and targets it prints.
//! - [`http`]: HTTP/1.1 requests through detour against direct, nginx,
//!   haproxy and Envoy routing on the same `baggage` header, keep-alive and
//!   connection per request; with [`stage`] (the namespaces, backends, agent
//!   and proxies it measures on, `stage::peers`: what is compared, and
//!   their configs), [`daemon`] (the servers' processes,
//!   CPU and memory accounting), `http::load` (wrk and the idle-connection
//!   client), `http::checks`, `http::report`, [`table`] (cells, medians,
//!   the memory table) and [`tools`] (installing nginx, haproxy, wrk,
//!   h2load, Envoy).
//! - [`h2`]: the same over HTTP/2 (h2c, many streams per connection, routed
//!   per stream), on the same stage with every server speaking h2c; its
//!   load is h2load and a python3-h2 client (`h2::load`), with
//!   `h2::checks` and `h2::report`; both are rounds of measured intervals
//!   ([`suite`]).
//! - [`relay`]: bulk transfer over a spliced connection through the
//!   in-kernel relay, the proxy's user-space splice, haproxy (`mode tcp`)
//!   and direct: CPU per GiB of the whole machine; its sender is
//!   `relay::bulk_client` (the hidden `bulk-client`).
//! - [`sandbox`]: from `kubectl apply` of a Sandbox to its first keyed
//!   request reaching the fork, one at a time and many at once, on the test
//!   control plane with the sandbox controller.
//! - [`soak`]: minutes of mixed traffic with route churn and an agent
//!   restart, failures by reason, p99 and RSS per minute; then the route
//!   table at scale and thousands of idle connections (`soak::memory`).
//!   Its traffic is `soak::client` (the hidden `soak-client`), its
//!   routes `soak::routes`, its tables `soak::report`.
//! - [`origins`]: what keeping the client's address costs (upstream
//!   connections pooled per client pod, made in its network namespace),
//!   against `--client-address node`.

mod connect;
mod daemon;
mod h2;
mod host;
mod http;
mod inherit;
mod origins;
mod procs;
mod relay;
mod results;
mod sandbox;
mod soak;
mod stage;
mod suite;
mod table;
mod tools;

use std::{path::PathBuf, process::Command};

use clap::{Args, Parser, Subcommand, ValueEnum};
use connect::{client::ClientArgs, server::ServerArgs};
use relay::bulk_client::BulkClientArgs;
use soak::client::SoakClientArgs;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Suite {
    /// connect()+close() cost: no agent, attached-not-steered, steered, iptables DNAT/REDIRECT.
    Connect,
    /// HTTP/1.1 header routing: direct, detour, nginx, haproxy, Envoy; keep-alive and close.
    Http,
    /// HTTP/2 (h2c) per-stream header routing: direct, detour, nginx, haproxy, Envoy; h2load.
    H2,
    /// Bulk transfer over a spliced connection: in-kernel relay, user-space splice, haproxy, direct.
    Relay,
    /// Minutes of mixed traffic with route churn and an agent restart; memory at scale.
    Soak,
    /// From `kubectl apply` of a Sandbox to its fork answering, on the test control plane.
    Sandbox,
    /// What keeping the client's address costs: memory of per-pod pools, CPU per upstream connection.
    Origins,
    /// What an inherited routing key costs per request: a fork pod's unkeyed requests vs keyed ones.
    Inherit,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Which benchmark to run.
    #[arg(value_enum, default_value_t = Suite::Connect)]
    pub suite: Suite,
    /// Rounds (default: 60 for connect, 5 for http and h2). connect: each
    /// mode's median operation per round is one sample; http: one interval
    /// per mode and peer per round; h2: one interval per peer per round.
    /// The median over rounds is reported.
    #[arg(long)]
    pub rounds: Option<u32>,
    /// connect: timed connect+close operations per mode per round; origins:
    /// spliced connections per client pod per round.
    #[arg(long, default_value_t = 250)]
    pub iterations: u32,
    /// connect: operations of one mode before switching to the next mode.
    #[arg(long, default_value_t = 50)]
    pub batch: u32,
    /// connect: untimed spin after each connect+close, in microseconds, so
    /// that the proxies and servers drain their accept queues between
    /// operations.
    #[arg(long, default_value_t = 100)]
    pub gap_us: u64,
    /// http, h2: seconds of load per measured interval.
    #[arg(long, default_value_t = 4)]
    pub seconds: u32,
    /// http, h2: seconds of each warm-up interval (round 0, discarded).
    #[arg(long, default_value_t = 1)]
    pub warmup_seconds: u32,
    /// http: wrk's concurrent connections in keep-alive mode.
    #[arg(long, default_value_t = 32)]
    pub connections: u32,
    /// http: wrk's concurrent connections in connection-per-request mode.
    #[arg(long, default_value_t = 16)]
    pub close_connections: u32,
    /// h2: h2load's h2c connections.
    #[arg(long, default_value_t = 8)]
    pub h2_connections: u32,
    /// h2: h2load's concurrent streams per connection.
    #[arg(long, default_value_t = 32)]
    pub streams: u32,
    /// http, h2, soak: idle client connections held open for the memory
    /// figure (default: 1000 for http and h2, 10000 for soak).
    #[arg(long)]
    pub idle_connections: Option<u32>,
    /// http: requests per proxy and mode while its system calls are counted.
    #[arg(long, default_value_t = 20_000)]
    pub syscall_requests: u32,
    /// relay: MiB sent along each path per round.
    #[arg(long, default_value_t = 2048)]
    pub bulk_mib: u64,
    /// relay: connections sharing each transfer.
    #[arg(long, default_value_t = 1)]
    pub streams_bulk: u32,
    /// soak: minutes of traffic (the agent restarts half way).
    #[arg(long, default_value_t = 10)]
    pub minutes: u32,
    /// soak: routes file rewrites per second.
    #[arg(long, default_value_t = 5)]
    pub churn_hz: u32,
    /// sandbox: Sandboxes created one after the other, each timed alone.
    #[arg(long, default_value_t = 5)]
    pub sandboxes_serial: u32,
    /// sandbox: Sandboxes created at once.
    #[arg(long, default_value_t = 100)]
    pub sandboxes_burst: u32,
    /// soak: half way, upgrade the agent hitlessly (a successor takes over,
    /// then SIGTERM to the old one) instead of restarting it (SIGTERM, then
    /// a new agent).
    #[arg(long)]
    pub upgrade: bool,
    /// origins: client pods, each holding its own connections.
    #[arg(long, default_value_t = 16)]
    pub client_pods: u32,
    /// soak: requests per second of each of the 6 client workers.
    #[arg(long, default_value_t = 50)]
    pub rate: u32,
    /// soak: services in the scaled route table.
    #[arg(long, default_value_t = 10_000)]
    pub services: u32,
    /// soak: sandboxes in the scaled route table.
    #[arg(long, default_value_t = 1_000)]
    pub sandboxes: u32,
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    match args.suite {
        Suite::Connect => connect::run(args),
        Suite::Http => http::run(args),
        Suite::H2 => h2::run(args),
        Suite::Relay => relay::run(args),
        Suite::Soak => soak::run(args),
        Suite::Sandbox => sandbox::run(args),
        Suite::Origins => origins::run(args),
        Suite::Inherit => inherit::run(args),
    }
}

/// The agent binary to measure, and how the table names it: `DETOUR_BIN`,
/// named by `DETOUR_BIN_NAME` (`cargo xtask bench` sets both: a fresh
/// release build named by its commit, or a prebuilt binary by its path).
fn agent_binary() -> anyhow::Result<(PathBuf, String)> {
    let path = PathBuf::from(std::env::var_os("DETOUR_BIN").ok_or_else(|| {
        anyhow::anyhow!("DETOUR_BIN is not set: run the benchmarks with `cargo xtask bench`")
    })?);
    if !path.is_file() {
        anyhow::bail!("DETOUR_BIN={} is not a file", path.display());
    }
    let name = std::env::var("DETOUR_BIN_NAME")
        .unwrap_or_else(|_| format!("prebuilt agent `{}`", path.display()));
    Ok((path, name))
}

/// When and on what a benchmark ran, for its table's header.
pub struct RunInfo {
    /// `YYYY-MM-DD HH:MM UTC`.
    pub date: String,
    /// The kernel release.
    pub kernel: String,
    pub cpu_model: String,
    pub cpus: usize,
    /// The load average (1, 5, 15 min): how busy the machine was.
    pub load: String,
}

impl RunInfo {
    pub fn now() -> Self {
        let date = Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M UTC"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let cpu_model = read("/proc/cpuinfo")
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|(_, m)| m.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown CPU".to_owned());
        let load = read("/proc/loadavg")
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ");
        Self {
            date,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            cpu_model,
            cpus: std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
            load,
        }
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "detour-bench",
    about = "Benchmarks that print ratios against peers measured in the same run (run by `cargo xtask bench`)."
)]
struct Cli {
    #[command(subcommand)]
    command: Verb,
}

#[derive(Debug, Subcommand)]
enum Verb {
    /// Run a benchmark suite.
    Run(BenchArgs),
    /// Internal: the timed client of `connect` (runs inside its namespaces).
    #[command(hide = true)]
    Client(ClientArgs),
    /// Internal: the traffic of `soak` (runs inside its namespaces).
    #[command(hide = true)]
    SoakClient(SoakClientArgs),
    /// Internal: the bulk sender of `relay` (runs inside its namespaces).
    #[command(hide = true)]
    BulkClient(BulkClientArgs),
    /// Internal: a listener or forwarder of `connect`.
    #[command(hide = true)]
    Server(ServerArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Verb::Run(args) => run(&args),
        Verb::Client(args) => connect::client::run(&args),
        Verb::SoakClient(args) => soak::client::run(&args),
        Verb::BulkClient(args) => relay::bulk_client::run(&args),
        Verb::Server(args) => connect::server::run(&args),
    }
}
