//! `detour agent`: the long-running node agent.
//!
//! Start-up order: routes are loaded and validated first (a bad file stops
//! the agent before it touches the kernel), then the proxy listeners are
//! bound, then the programs are attached and the steered destinations
//! written. On SIGTERM or SIGINT the programs are detached first (new
//! connects go direct), the listeners stop, and in-flight connections get
//! a bounded time to finish.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, bail};
use arc_swap::ArcSwap;
use clap::Args;
use prometheus_client::registry::Registry;
use tokio::{net::TcpListener, signal::unix::SignalKind};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{info, warn};

use crate::{
    datapath::{Datapath, DatapathOptions},
    defaults, metrics,
    proxy::{self, ProxyContext, ProxyMetrics},
    routes::{RouteSnapshot, RoutesFile},
    telemetry::{self, LogFormat},
};

/// Run the node agent.
///
/// Examples:
///   detour agent --routes examples/routes.yaml --cgroup /sys/fs/cgroup/unified/demo
///   detour agent --routes routes.yaml --cgroup /sys/fs/cgroup/kubepods.slice \
///       --proxy-addr 10.0.0.5:15001 --log-format json
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct AgentArgs {
    /// Routes file (standalone mode); see DESIGN.md for the format.
    #[arg(long, env = "DETOUR_ROUTES", value_name = "FILE")]
    routes: Option<PathBuf>,

    /// cgroup v2 directory whose processes' connects are steered.
    #[arg(long, env = "DETOUR_CGROUP", value_name = "PATH")]
    cgroup: PathBuf,

    /// Proxy listen address and redirect target; repeat for one IPv4 and one
    /// IPv6 address. Must be reachable from the clients' network namespaces.
    #[arg(long = "proxy-addr", env = "DETOUR_PROXY_ADDR", value_delimiter = ',', default_value = defaults::PROXY_ADDR)]
    proxy_addrs: Vec<SocketAddr>,

    /// Prometheus metrics, /healthz and /readyz.
    #[arg(long, env = "DETOUR_METRICS_ADDR", default_value = defaults::METRICS_ADDR)]
    metrics_addr: SocketAddr,

    /// SO_MARK of the agent's upstream sockets, which are never redirected.
    #[arg(long, env = "DETOUR_MARK", default_value_t = defaults::SOCKET_MARK)]
    mark: u32,

    /// Log format.
    #[arg(long, env = "DETOUR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    let debug = telemetry::init(args.log_format);
    let Some(routes_path) = args.routes.clone() else {
        bail!("no route source: pass --routes FILE (or set DETOUR_ROUTES)");
    };
    // Validate before touching the kernel: never start half-configured.
    let file = RoutesFile::load(&routes_path)?;
    let snapshot = RouteSnapshot::from_file(&file);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(args, snapshot, debug))
}

async fn serve(args: AgentArgs, snapshot: RouteSnapshot, debug: bool) -> anyhow::Result<()> {
    let mut listeners = Vec::new();
    for addr in &args.proxy_addrs {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on proxy address {addr}"))?;
        listeners.push(listener);
    }
    let metrics_listener = TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("cannot listen on metrics address {}", args.metrics_addr))?;

    let options = DatapathOptions {
        cgroup: args.cgroup.clone(),
        proxy_addrs: args.proxy_addrs.clone(),
        mark: args.mark,
        bpf_log: debug,
    };
    let (mut datapath, orig_dst, counters) = Datapath::start(&options)?;
    datapath.apply(&snapshot)?;

    let mut registry = Registry::with_prefix(metrics::PREFIX);
    let proxy_metrics = ProxyMetrics::new(&mut registry);
    registry.register_collector(Box::new(counters));
    let ready = Arc::new(AtomicBool::new(false));

    let ctx = Arc::new(ProxyContext {
        orig_dst,
        routes: Arc::new(ArcSwap::from_pointee(snapshot)),
        metrics: proxy_metrics,
        mark: args.mark,
        connect_timeout: Duration::from_secs(defaults::UPSTREAM_CONNECT_TIMEOUT_SECS),
    });
    let stop_accepting = CancellationToken::new();
    let connections = TaskTracker::new();
    let mut acceptors = Vec::new();
    for listener in listeners {
        if let Ok(addr) = listener.local_addr() {
            info!(%addr, "proxy listening");
        }
        acceptors.push(tokio::spawn(proxy::serve(
            listener,
            Arc::clone(&ctx),
            connections.clone(),
            stop_accepting.clone(),
        )));
    }
    let stop_metrics = CancellationToken::new();
    let endpoint = Arc::new(metrics::Endpoint::new(registry, Arc::clone(&ready)));
    let metrics_task = tokio::spawn(metrics::serve(
        metrics_listener,
        endpoint,
        stop_metrics.clone(),
    ));
    ready.store(true, Ordering::Release);
    info!(version = env!("CARGO_PKG_VERSION"), "detour agent ready");

    wait_for_signal().await?;
    ready.store(false, Ordering::Release);
    // New connects go straight to their destination from here on.
    datapath.detach();
    stop_accepting.cancel();
    for acceptor in acceptors {
        let _ = acceptor.await;
    }
    connections.close();
    let drain = Duration::from_secs(defaults::DRAIN_TIMEOUT_SECS);
    if tokio::time::timeout(drain, connections.wait())
        .await
        .is_err()
    {
        warn!(
            remaining = connections.len(),
            ?drain,
            "in-flight connections cut at shutdown"
        );
    }
    stop_metrics.cancel();
    let _ = metrics_task.await;
    info!("detour agent stopped");
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term =
        tokio::signal::unix::signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int =
        tokio::signal::unix::signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    tokio::select! {
        _ = term.recv() => info!(signal = "SIGTERM", "shutting down"),
        _ = int.recv() => info!(signal = "SIGINT", "shutting down"),
    }
    Ok(())
}
