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
use clap::Args;
use prometheus_client::registry::Registry;
use tokio::{net::TcpListener, signal::unix::SignalKind};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{info, warn};

use crate::{
    datapath::{Datapath, DatapathOptions},
    defaults,
    http::routing_key::{DEFAULT_KEY_NAMES, RoutingKeys},
    metrics,
    proxy::{self, HttpSettings, ProxyContext, ProxyMetrics, http1::pool::Pool},
    routes::{self, RoutesError, RoutesFile},
    telemetry::{self, LogFormat},
    updater::{RouteMetrics, RouteUpdater},
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

    /// Key names looked up in `baggage`, `tracestate`, `uberctx-<name>` and
    /// `ot-baggage-<name>`; repeat for several. Replaces the default list.
    #[arg(long = "routing-key-name", env = "DETOUR_ROUTING_KEY_NAME", value_delimiter = ',', default_values_t = DEFAULT_KEY_NAMES.map(String::from))]
    routing_key_names: Vec<String>,

    /// Extra headers whose whole value is the routing key; repeatable.
    #[arg(
        long = "routing-header",
        env = "DETOUR_ROUTING_HEADER",
        value_delimiter = ','
    )]
    routing_headers: Vec<String>,

    /// Protocol detection timeout on `auto` ports (then: splice to baseline).
    #[arg(long, env = "DETOUR_DETECT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    detect_timeout: Duration,

    /// A request head must arrive within this; 408 otherwise.
    #[arg(long, env = "DETOUR_HEAD_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    head_timeout: Duration,

    /// Keep-alive connections idle this long between requests are closed.
    #[arg(long, env = "DETOUR_IDLE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,

    /// Upstream connect timeout; 504 beyond it, 502 when refused.
    #[arg(long, env = "DETOUR_CONNECT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    connect_timeout: Duration,

    /// How long to wait for an upstream's response head; 504 beyond it.
    #[arg(long, env = "DETOUR_UPSTREAM_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    upstream_timeout: Duration,

    /// Log format.
    #[arg(long, env = "DETOUR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    let debug = telemetry::init(args.log_format);
    let Some(routes_path) = args.routes.clone() else {
        bail!("no route source: pass --routes FILE (or set DETOUR_ROUTES)");
    };
    let keys = RoutingKeys::new(&args.routing_key_names, &args.routing_headers)?;
    // Validate before touching the kernel: never start half-configured.
    let routes_text =
        std::fs::read_to_string(&routes_path).map_err(|source| RoutesError::Read {
            path: routes_path.clone(),
            source,
        })?;
    let file = RoutesFile::parse(&routes_text).map_err(|error| error.in_file(&routes_path))?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(
        args,
        Start {
            routes_path,
            routes_text,
            file,
            keys,
        },
        debug,
    ))
}

/// What start-up has validated before the runtime starts.
struct Start {
    routes_path: PathBuf,
    routes_text: String,
    file: RoutesFile,
    keys: RoutingKeys,
}

async fn serve(args: AgentArgs, start: Start, debug: bool) -> anyhow::Result<()> {
    let mut listeners = Vec::new();
    for addr in &args.proxy_addrs {
        let listener = proxy::listen(*addr)
            .with_context(|| format!("cannot listen on proxy address {addr}"))?;
        listeners.push(listener);
    }
    let metrics_listener = TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("cannot listen on metrics address {}", args.metrics_addr))?;
    let watch = routes::watch::watch(&start.routes_path)?;

    let options = DatapathOptions {
        cgroup: args.cgroup.clone(),
        proxy_addrs: args.proxy_addrs.clone(),
        mark: args.mark,
        bpf_log: debug,
    };
    let (datapath, orig_dst, counters) = Datapath::start(&options)?;
    let mut registry = Registry::with_prefix(metrics::PREFIX);
    let mut updater = RouteUpdater::new(datapath, RouteMetrics::new(&mut registry));
    updater.apply(&start.file);
    let proxy_metrics = ProxyMetrics::new(&mut registry);
    registry.register_collector(Box::new(counters));
    let ready = Arc::new(AtomicBool::new(false));

    let ctx = Arc::new(ProxyContext {
        orig_dst,
        routes: updater.store(),
        metrics: proxy_metrics,
        keys: start.keys,
        pool: Pool::default(),
        http: HttpSettings {
            detect_timeout: args.detect_timeout,
            head_timeout: args.head_timeout,
            idle_timeout: args.idle_timeout,
            connect_timeout: args.connect_timeout,
            upstream_timeout: args.upstream_timeout,
        },
        mark: args.mark,
    });
    let stop_updates = CancellationToken::new();
    let updates = tokio::spawn(updater.follow_file(
        start.routes_path,
        start.routes_text,
        watch,
        stop_updates.clone(),
    ));

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
    stop_updates.cancel();
    // New connects go straight to their destination from here on.
    let mut datapath = updates.await.context("route updater failed")?;
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
