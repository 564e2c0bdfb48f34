//! The agent's composition root and life cycle: one place that builds the
//! agent from its [`Config`] and runs it from start to exit. The `detour
//! agent` verb only turns flags into a `Config` and calls [`run`].
//!
//! Start-up order:
//! 1. logging, the privilege check, the open-file limit;
//! 2. the route source is validated (a bad routes file stops the agent
//!    before it touches the kernel: never half-configured);
//! 3. if an agent already runs on the node, it hands over its listening
//!    sockets and its map (`handover`); otherwise the proxy and metrics
//!    listeners are bound;
//! 4. the programs are attached and the maps created ([`Datapath::start`]);
//! 5. the route updater applies the first routes and follows the source;
//!    connections to steered destinations that bypass the proxy (opened
//!    while no agent ran) are closed, and so are those to destinations that
//!    become steered later (`reconnect`);
//! 6. the proxy acceptors (after the first sync when the sockets were handed
//!    over), the admin and handover sockets (then, too) and the metrics
//!    endpoint start, and the agent reports ready once the routes are synced.
//!
//! [`build`] makes all of it (steps 1 to 5 but following the source), then
//! [`lifecycle`] runs it (step 6) and stops it, in one of two orders: with a
//! ready successor, stop accepting before detaching (no connect goes
//! direct); without one, detach first (fail-open).

mod build;
mod lifecycle;
mod source;
mod stage;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context;
use build::Agent;
use lifecycle::Shutdown;
use source::Source;
use tracing::info;

use crate::{
    datapath::{
        Capacities, Datapath,
        cgroup::{self, ChosenCgroup},
    },
    http::routing_key::RoutingKeys,
    proxy::{http1, upstream::Upstream},
    telemetry::{self, LogControl, LogFormat},
};

/// Everything the agent is built from (the `detour agent` flags).
#[derive(Debug)]
pub struct Config {
    /// A routes file (standalone), or `None` for the Kubernetes API.
    pub routes: Option<PathBuf>,
    /// The Kubernetes node the agent runs on, for its fork pods.
    pub node_name: Option<String>,
    /// `None`: the node's kubepods cgroup, detected.
    pub cgroup: Option<PathBuf>,
    pub proxy_addrs: Vec<SocketAddr>,
    pub metrics_addr: SocketAddr,
    pub admin_socket: PathBuf,
    /// Where a running agent hands its sockets to its successor.
    pub handover_socket: PathBuf,
    /// `None`: no pinned maps (`--pin-dir none`).
    pub pin_dir: Option<PathBuf>,
    pub keys: RoutingKeys,
    pub upstream: Upstream,
    pub http1: http1::Settings,
    pub detect_timeout: Duration,
    /// How long a busy connection that bypasses the proxy may finish what
    /// it is doing before it is closed anyway (`reconnect`).
    pub reconnect_grace: Duration,
    /// `None`: the default, fitted to the open-file limit.
    pub max_connections: Option<usize>,
    pub capacities: Capacities,
    /// Relay spliced connections in the kernel (`sk_skb`).
    pub kernel_relay: bool,
    /// Upstream connections leave from the client's namespace
    /// (`--client-address client`).
    pub keep_client_address: bool,
    pub worker_threads: Option<u16>,
    pub log_format: LogFormat,
}

/// Runs the agent until SIGTERM or SIGINT.
pub fn run(config: Config) -> anyhow::Result<()> {
    crate::limits::fix_allocator_thresholds();
    let (debug, log) = telemetry::init(config.log_format);
    // Before anything is bound or created: a missing privilege is named here.
    Datapath::check_privileges()?;
    let source = Source::load(config.routes.as_deref())?;
    let cgroup = cgroup::choose(config.cgroup.as_deref())?;
    Datapath::check_cgroup(&cgroup.path)?;
    info!(cgroup = %cgroup.path.display(), reason = %cgroup.reason, "cgroup chosen");
    if let Some(dir) = &config.pin_dir
        && crate::datapath::pinned::prepare(dir)?
    {
        info!(
            bpffs = crate::datapath::pinned::NODE_BPFFS,
            "bpf filesystem mounted"
        );
    }
    // Once the configuration is known to be good: its errors come first.
    let max_connections = crate::limits::raise_open_files(config.max_connections);
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = config.worker_threads {
        runtime.worker_threads(usize::from(threads));
    }
    let runtime = runtime
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(
        config,
        Resolved {
            source,
            cgroup,
            max_connections,
        },
        debug,
        log,
    ))
}

/// What start-up made of the configuration before the runtime starts.
struct Resolved {
    source: Source,
    cgroup: ChosenCgroup,
    max_connections: usize,
}

async fn serve(
    config: Config,
    resolved: Resolved,
    debug: bool,
    log: Option<LogControl>,
) -> anyhow::Result<()> {
    let mut shutdown = Shutdown::install()?;
    let running = Agent::build(config, resolved, debug, log).await?.start();
    info!(
        version = env!("CARGO_PKG_VERSION"),
        "detour agent started; ready once routes are synced"
    );
    shutdown.wait().await;
    running.shutdown().await
}
