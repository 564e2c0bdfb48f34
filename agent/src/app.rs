//! The agent's composition root and life cycle: one place that builds the
//! agent from its [`Config`] and runs it from start to exit. The `detour
//! agent` verb only turns flags into a `Config` and calls [`run`].
//!
//! Start-up order:
//! 1. logging, the privilege check, the open-file limit;
//! 2. the route source is validated (a bad routes file stops the agent
//!    before it touches the kernel: never half-configured);
//! 3. the proxy and metrics listeners are bound;
//! 4. the programs are attached and the maps created ([`Datapath::start`]);
//! 5. the route updater applies the first routes and follows the source;
//!    connections to steered destinations that bypass the proxy (opened
//!    while no agent ran) are closed, and so are those to destinations that
//!    become steered later (`reconnect`);
//! 6. the proxy acceptors, the admin socket and the metrics endpoint start,
//!    and the agent reports ready once the routes are synced.
//!
//! Shutdown (SIGTERM, SIGINT), in this order: not ready; the route updater
//! stops and the programs are detached (new connects go direct); the
//! listeners stop accepting and connections drain, bounded by
//! `DRAIN_TIMEOUT_SECS`; then metrics and the admin socket stop. A kill -9
//! skips all of it and the kernel detaches the programs (fail-open).

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
use prometheus_client::registry::Registry;
use tokio::{net::TcpListener, signal::unix::SignalKind, task::JoinHandle};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{info, warn};

use crate::{
    admin,
    datapath::{Capacities, Datapath, DatapathOptions},
    defaults,
    http::routing_key::RoutingKeys,
    k8s, metrics,
    proxy::{
        self, Proxy, ProxyContext, ProxyMetrics,
        h2::{self, H2},
        http1::{self, Http1, pool::Pool},
        upstream::Upstream,
    },
    reconnect::Sweeper,
    routes::{self, RoutesError, RoutesFile},
    telemetry::{self, LogControl, LogFormat},
    updater::{RouteMetrics, RouteUpdater},
};

/// Everything the agent is built from (the `detour agent` flags).
#[derive(Debug)]
pub struct Config {
    /// A routes file (standalone), or `None` for the Kubernetes API.
    pub routes: Option<PathBuf>,
    pub cgroup: PathBuf,
    pub proxy_addrs: Vec<SocketAddr>,
    pub metrics_addr: SocketAddr,
    pub admin_socket: PathBuf,
    pub pin_dir: PathBuf,
    pub keys: RoutingKeys,
    pub upstream: Upstream,
    pub http1: http1::Settings,
    pub detect_timeout: Duration,
    /// How long a busy connection that bypasses the proxy may finish what
    /// it is doing before it is closed anyway (`reconnect`).
    pub reconnect_grace: Duration,
    pub max_connections: usize,
    pub capacities: Capacities,
    pub worker_threads: Option<u16>,
    pub log_format: LogFormat,
}

/// Runs the agent until SIGTERM or SIGINT.
pub fn run(config: Config) -> anyhow::Result<()> {
    let (debug, log) = telemetry::init(config.log_format);
    // Before anything is bound or created: a missing privilege is named here.
    Datapath::check_privileges()?;
    crate::limits::raise_open_files(config.max_connections);
    let source = Source::load(config.routes.as_deref())?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = config.worker_threads {
        runtime.worker_threads(usize::from(threads));
    }
    let runtime = runtime
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(config, source, debug, log))
}

/// Where routes come from, validated before the runtime starts.
enum Source {
    File {
        path: PathBuf,
        text: String,
        file: RoutesFile,
    },
    Kubernetes,
}

impl Source {
    fn load(routes: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let Some(path) = routes else {
            return Ok(Self::Kubernetes);
        };
        let text = std::fs::read_to_string(path).map_err(|source| RoutesError::Read {
            path: path.to_owned(),
            source,
        })?;
        let file = RoutesFile::parse(&text).map_err(|error| error.in_file(path))?;
        Ok(Self::File {
            path: path.to_owned(),
            text,
            file,
        })
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::File { .. } => "file",
            Self::Kubernetes => "kubernetes",
        }
    }

    fn path(&self) -> Option<PathBuf> {
        match self {
            Self::File { path, .. } => Some(path.clone()),
            Self::Kubernetes => None,
        }
    }
}

async fn serve(
    config: Config,
    source: Source,
    debug: bool,
    log: Option<LogControl>,
) -> anyhow::Result<()> {
    let mut shutdown = Shutdown::install()?;
    let mut listeners = Vec::new();
    for addr in &config.proxy_addrs {
        let listener = proxy::listen(*addr)
            .with_context(|| format!("cannot listen on proxy address {addr}"))?;
        listeners.push(listener);
    }
    let metrics_listener = TcpListener::bind(config.metrics_addr)
        .await
        .with_context(|| format!("cannot listen on metrics address {}", config.metrics_addr))?;
    let watch = match &source {
        Source::File { path, .. } => Some(routes::watch::watch(path)?),
        Source::Kubernetes => None,
    };
    let client = match &source {
        Source::Kubernetes => Some(k8s::source::client().await?),
        Source::File { .. } => None,
    };

    let (datapath, orig_dst, counters) = Datapath::start(&DatapathOptions {
        cgroup: config.cgroup.clone(),
        proxy_addrs: config.proxy_addrs.clone(),
        mark: config.upstream.mark,
        bpf_log: debug,
        pin_dir: Some(config.pin_dir.clone()),
        capacities: config.capacities,
    })?;
    let admin_listener = admin::server::bind(&config.admin_socket)?;
    let mut registry = Registry::with_prefix(metrics::PREFIX);
    let mut updater = RouteUpdater::new(datapath, RouteMetrics::new(&mut registry));
    // Before the first routes: the agent's start closes what went direct
    // while no agent ran.
    let sweeper = Arc::new(Sweeper::new(
        config.cgroup.clone(),
        config.upstream.mark,
        config.reconnect_grace,
        &mut registry,
    ));
    let reconnect_unavailable = sweeper.unavailable();
    updater.set_sweeper(Arc::clone(&sweeper).spawn());
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
        cgroup: config.cgroup.clone(),
        programs: crate::datapath::PROGRAMS
            .iter()
            .map(|p| (*p).to_owned())
            .collect(),
        proxy_addrs: config.proxy_addrs.clone(),
        pin_dir: updater.pin_dir(),
        source_kind: source.kind(),
        source_path: source.path(),
    };
    let proxy = Arc::new(Proxy {
        ctx: ProxyContext {
            draining: CancellationToken::new(),
            connection_slots: Arc::new(tokio::sync::Semaphore::new(config.max_connections)),
            observer: Arc::clone(&observer),
            orig_dst,
            routes: updater.store(),
            metrics: proxy_metrics,
            keys: config.keys.clone(),
            upstream: config.upstream,
            detect_timeout: config.detect_timeout,
        },
        http1: Http1 {
            pool: Pool::default(),
            settings: config.http1,
        },
        h2: H2 {
            pool: Arc::default(),
            settings: h2::Settings {
                handshake_timeout: config.http1.head_timeout,
                idle_timeout: config.http1.idle_timeout,
                ..h2::Settings::default()
            },
        },
    });

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
    let acceptors: Vec<JoinHandle<()>> = listeners
        .into_iter()
        .map(|listener| {
            if let Ok(addr) = listener.local_addr() {
                info!(%addr, "proxy listening");
            }
            tokio::spawn(proxy::serve(
                listener,
                Arc::clone(&proxy),
                connections.clone(),
                stop_accepting.clone(),
            ))
        })
        .collect();
    let stop_admin = CancellationToken::new();
    let admin_task = tokio::spawn(admin::server::serve(
        admin_listener,
        config.admin_socket.clone(),
        Arc::new(admin::AdminContext {
            info,
            observer,
            routes: Arc::clone(&proxy.ctx.routes),
            keys: config.keys.clone(),
            log,
            ready: vec![Arc::clone(&ready), Arc::clone(&synced)],
            synced: Arc::clone(&synced),
            problems,
            reconnect_unavailable,
            bypass: Some(sweeper),
        }),
        stop_admin.clone(),
    ));
    let stop_metrics = CancellationToken::new();
    let metrics_task = tokio::spawn(metrics::serve(
        metrics_listener,
        Arc::new(metrics::Endpoint::new(
            registry,
            vec![Arc::clone(&ready), synced],
        )),
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
    proxy.ctx.draining.cancel();
    for acceptor in acceptors {
        let _ = acceptor.await;
    }
    drain(&connections).await;
    stop_metrics.cancel();
    let _ = metrics_task.await;
    stop_admin.cancel();
    let _ = admin_task.await;
    info!("detour agent stopped");
    Ok(())
}

/// Lets in-flight connections finish, for at most the drain bound.
async fn drain(connections: &TaskTracker) {
    connections.close();
    let bound = Duration::from_secs(defaults::DRAIN_TIMEOUT_SECS);
    if tokio::time::timeout(bound, connections.wait())
        .await
        .is_err()
    {
        warn!(
            remaining = connections.len(),
            drain = ?bound,
            "in-flight connections cut at shutdown"
        );
    }
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
