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
    admin,
    datapath::{Capacities, Datapath, DatapathOptions},
    defaults,
    http::routing_key::{DEFAULT_KEY_NAMES, RoutingKeys},
    k8s, metrics,
    proxy::{
        self, Proxy, ProxyContext, ProxyMetrics,
        http1::{self, Http1, pool::Pool},
        upstream::Upstream,
    },
    routes::{self, RoutesError, RoutesFile},
    telemetry::{self, LogControl, LogFormat},
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
    /// Routes file (standalone mode); see the README for the format.
    #[arg(
        long,
        env = "DETOUR_ROUTES",
        value_name = "FILE",
        conflicts_with = "kubernetes"
    )]
    routes: Option<PathBuf>,

    /// Take routes from the Kubernetes API (Sandboxes, RouteGroups, Services,
    /// EndpointSlices, fork Pods): the default inside a pod. The client is
    /// configured from the pod's service account, or `KUBECONFIG`.
    #[arg(long, env = "DETOUR_KUBERNETES")]
    kubernetes: bool,

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

    /// Most connections proxied at once; more are closed at accept and
    /// counted in `detour_connections_rejected_total{reason="over_limit"}`.
    #[arg(long, env = "DETOUR_MAX_CONNECTIONS", default_value_t = defaults::MAX_CONNECTIONS)]
    max_connections: usize,

    /// Capacity of the STEERED map: steered destinations (address:port) the
    /// kernel can hold. Beyond it, destinations are not steered (their
    /// connects go direct), counted in `detour_steered_not_installed` and
    /// listed by `detour status`.
    #[arg(long, env = "DETOUR_STEERED_CAPACITY", value_name = "N", default_value_t = detour_common::capacity::STEERED, value_parser = clap::value_parser!(u32).range(1..))]
    steered_capacity: u32,

    /// Capacity of each of ORIG_BY_COOKIE and ORIG_BY_PEER (default 16384
    /// and 65536): redirected connects not yet accepted by the proxy. Beyond
    /// it the oldest records are evicted and the proxy closes their
    /// connections (`detour_connections_rejected_total{reason="no_original_destination"}`).
    #[arg(long, env = "DETOUR_ORIG_DST_CAPACITY", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    orig_dst_capacity: Option<u32>,

    /// Proxy worker threads (default: one per CPU).
    #[arg(long, env = "DETOUR_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    worker_threads: Option<u16>,

    /// The admin socket the CLI talks to (mode 0600: root only).
    #[arg(long, env = "DETOUR_ADMIN_SOCKET", default_value = defaults::ADMIN_SOCKET)]
    admin_socket: PathBuf,

    /// Where to pin the maps so that `detour bpf` can read them while the
    /// agent is down (must be on a bpf filesystem).
    #[arg(long, env = "DETOUR_PIN_DIR", default_value = defaults::PIN_DIR)]
    pin_dir: PathBuf,

    /// Log format.
    #[arg(long, env = "DETOUR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

impl AgentArgs {
    /// The map sizes the flags ask for.
    pub fn capacities(&self) -> Capacities {
        Capacities {
            steered: self.steered_capacity,
            ..Capacities::default().with_orig_dst(self.orig_dst_capacity)
        }
    }
}

pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    let (debug, log) = telemetry::init(args.log_format);
    // Before anything is bound or created: a missing privilege is named here.
    Datapath::check_privileges()?;
    crate::limits::raise_open_files(args.max_connections);
    let keys = RoutingKeys::new(&args.routing_key_names, &args.routing_headers)?;
    let source = match (&args.routes, args.kubernetes || in_cluster()) {
        (Some(path), _) => {
            // Validate before touching the kernel: never start half-configured.
            let text = std::fs::read_to_string(path).map_err(|source| RoutesError::Read {
                path: path.clone(),
                source,
            })?;
            let file = RoutesFile::parse(&text).map_err(|error| error.in_file(path))?;
            Source::File {
                path: path.clone(),
                text,
                file,
            }
        }
        (None, true) => Source::Kubernetes,
        (None, false) => bail!("no route source: pass --routes FILE (standalone) or --kubernetes"),
    };

    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.worker_threads {
        runtime.worker_threads(usize::from(threads));
    }
    let runtime = runtime
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(args, source, keys, debug, log))
}

/// Inside a pod, Kubernetes sets this for every container.
fn in_cluster() -> bool {
    std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
}

/// Where routes come from, as validated before the runtime starts.
enum Source {
    File {
        path: PathBuf,
        text: String,
        file: RoutesFile,
    },
    Kubernetes,
}

async fn serve(
    args: AgentArgs,
    source: Source,
    keys: RoutingKeys,
    debug: bool,
    log: Option<LogControl>,
) -> anyhow::Result<()> {
    let mut shutdown = Shutdown::install()?;
    let mut listeners = Vec::new();
    for addr in &args.proxy_addrs {
        let listener = proxy::listen(*addr)
            .with_context(|| format!("cannot listen on proxy address {addr}"))?;
        listeners.push(listener);
    }
    let metrics_listener = TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("cannot listen on metrics address {}", args.metrics_addr))?;
    let watch = match &source {
        Source::File { path, .. } => Some(routes::watch::watch(path)?),
        Source::Kubernetes => None,
    };
    let client = match &source {
        Source::Kubernetes => Some(k8s::source::client().await?),
        Source::File { .. } => None,
    };

    let options = DatapathOptions {
        cgroup: args.cgroup.clone(),
        proxy_addrs: args.proxy_addrs.clone(),
        mark: args.mark,
        bpf_log: debug,
        pin_dir: Some(args.pin_dir.clone()),
        capacities: args.capacities(),
    };
    let (datapath, orig_dst, counters) = Datapath::start(&options)?;
    let admin_listener = admin::server::bind(&args.admin_socket)?;
    let mut registry = Registry::with_prefix(metrics::PREFIX);
    let mut updater = RouteUpdater::new(datapath, RouteMetrics::new(&mut registry));
    if let Source::File { file, .. } = &source {
        updater.apply(file);
    }
    let synced = updater.synced();
    let problems = updater.problems();
    let proxy_metrics = ProxyMetrics::new(&mut registry);
    registry.register_collector(Box::new(counters));
    let ready = Arc::new(AtomicBool::new(false));

    let observer = Arc::new(admin::Observer::default());
    let info = admin::StartInfo {
        started: std::time::Instant::now(),
        cgroup: args.cgroup.clone(),
        programs: crate::datapath::PROGRAMS
            .iter()
            .map(|p| (*p).to_owned())
            .collect(),
        proxy_addrs: args.proxy_addrs.clone(),
        pin_dir: updater.pin_dir(),
        source_kind: match &source {
            Source::File { .. } => "file",
            Source::Kubernetes => "kubernetes",
        },
        source_path: match &source {
            Source::File { path, .. } => Some(path.clone()),
            Source::Kubernetes => None,
        },
    };
    let proxy = Arc::new(Proxy {
        ctx: ProxyContext {
            draining: CancellationToken::new(),
            connection_slots: Arc::new(tokio::sync::Semaphore::new(args.max_connections)),
            observer: Arc::clone(&observer),
            orig_dst,
            routes: updater.store(),
            metrics: proxy_metrics,
            keys,
            upstream: Upstream {
                mark: args.mark,
                connect_timeout: args.connect_timeout,
                response_timeout: args.upstream_timeout,
            },
            detect_timeout: args.detect_timeout,
        },
        http1: Http1 {
            pool: Pool::default(),
            settings: http1::Settings {
                head_timeout: args.head_timeout,
                idle_timeout: args.idle_timeout,
            },
        },
    });
    let ctx = &proxy.ctx;
    let stop_updates = CancellationToken::new();
    let updates = match (source, watch, client) {
        (Source::File { path, text, .. }, Some(watch), _) => {
            tokio::spawn(updater.follow_file(path, text, watch, stop_updates.clone()))
        }
        (_, _, Some(client)) => {
            tokio::spawn(k8s::source::follow(client, updater, stop_updates.clone()))
        }
        _ => bail!("route source without its watch"),
    };

    let stop_accepting = CancellationToken::new();
    let connections = TaskTracker::new();
    let mut acceptors = Vec::new();
    for listener in listeners {
        if let Ok(addr) = listener.local_addr() {
            info!(%addr, "proxy listening");
        }
        acceptors.push(tokio::spawn(proxy::serve(
            listener,
            Arc::clone(&proxy),
            connections.clone(),
            stop_accepting.clone(),
        )));
    }
    let stop_admin = CancellationToken::new();
    let admin_ctx = Arc::new(admin::AdminContext {
        info,
        observer,
        routes: Arc::clone(&ctx.routes),
        keys: ctx.keys.clone(),
        log,
        ready: vec![Arc::clone(&ready), Arc::clone(&synced)],
        synced: Arc::clone(&synced),
        problems,
    });
    let admin_task = tokio::spawn(admin::server::serve(
        admin_listener,
        args.admin_socket.clone(),
        admin_ctx,
        stop_admin.clone(),
    ));
    let stop_metrics = CancellationToken::new();
    let endpoint = Arc::new(metrics::Endpoint::new(
        registry,
        vec![Arc::clone(&ready), synced],
    ));
    let metrics_task = tokio::spawn(metrics::serve(
        metrics_listener,
        endpoint,
        stop_metrics.clone(),
    ));
    ready.store(true, Ordering::Release);
    info!(
        version = env!("CARGO_PKG_VERSION"),
        "detour agent started; ready once routes are synced"
    );

    shutdown.wait().await;
    ready.store(false, Ordering::Release);
    stop_updates.cancel();
    // New connects go straight to their destination from here on.
    let mut datapath = updates.await.context("route updater failed")?;
    datapath.detach();
    stop_accepting.cancel();
    ctx.draining.cancel();
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
    stop_admin.cancel();
    let _ = admin_task.await;
    info!("detour agent stopped");
    Ok(())
}

/// SIGTERM and SIGINT, caught from the first moment of `serve` (a signal
/// before the handlers exist would kill the agent without a clean detach).
struct Shutdown {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Shutdown {
    fn install() -> anyhow::Result<Self> {
        Ok(Self {
            term: tokio::signal::unix::signal(SignalKind::terminate())
                .context("cannot handle SIGTERM")?,
            int: tokio::signal::unix::signal(SignalKind::interrupt())
                .context("cannot handle SIGINT")?,
        })
    }

    async fn wait(&mut self) {
        tokio::select! {
            _ = self.term.recv() => info!(signal = "SIGTERM", "shutting down"),
            _ = self.int.recv() => info!(signal = "SIGINT", "shutting down"),
        }
    }
}
