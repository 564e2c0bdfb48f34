//! `detour-controller`: flags in, [`detour_controller::run`] out.

use std::net::SocketAddr;

use clap::Parser;
use detour_controller::{leader::LeaseConfig, run};
use tracing_subscriber::EnvFilter;

/// The sandbox controller: makes each Sandbox's forkOf forks, keeps them,
/// deletes them with it, and reports its status.
#[derive(Debug, Parser)]
#[command(name = "detour-controller", version)]
struct Args {
    /// Where `/metrics`, `/healthz` and `/readyz` listen.
    #[arg(
        long,
        env = "DETOUR_CONTROLLER_METRICS_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    metrics_addr: SocketAddr,
    /// The namespace of the leader-election Lease (the controller's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "detour")]
    lease_namespace: String,
    /// The Lease's name.
    #[arg(long, default_value = "detour-controller")]
    lease_name: String,
    /// This replica's name in the Lease (default: the pod's name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds a leader may go without renewing before another takes over.
    #[arg(long, default_value_t = 15)]
    lease_duration: u64,
    /// Log format.
    #[arg(long, env = "DETOUR_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = EnvFilter::try_from_env("DETOUR_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    if args.log_format == "json" {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        // Colours only on a terminal: a log file or collector gets plain text.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
        tracing_subscriber::fmt()
            .with_ansi(ansi)
            .with_env_filter(filter)
            .init();
    }
    let identity = args.identity.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let client = kube::Client::try_default().await?;
    run::run(
        client,
        run::Config {
            metrics_addr: args.metrics_addr,
            lease: LeaseConfig {
                namespace: args.lease_namespace,
                name: args.lease_name,
                identity,
                duration: args.lease_duration,
            },
        },
    )
    .await
}
