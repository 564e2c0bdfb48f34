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
//! Shutdown, in one of two orders ([`lifecycle`]): with a ready successor,
//! stop accepting before detaching (no connect goes direct); without one,
//! detach first (fail-open).

mod lifecycle;
mod source;

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
use lifecycle::Shutdown;
use prometheus_client::registry::Registry;
use source::Source;
use tokio::{net::TcpListener, sync::watch};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::info;

use crate::{
    admin,
    datapath::{
        Capacities, Datapath, DatapathOptions,
        cgroup::{self, ChosenCgroup},
    },
    flows::FlowTable,
    handover::{self, Offered, Successor},
    http::routing_key::RoutingKeys,
    k8s, metrics,
    proxy::{
        self, Proxy, ProxyContext, ProxyMetrics,
        h2::{self, H2},
        http1::{
            self, Http1,
            parking::{self, ParkingLot},
            pool::Pool,
        },
        upstream::Upstream,
    },
    reconnect::Sweeper,
    routes,
    socket_file::{self, Live},
    telemetry::{self, LogControl, LogFormat},
    updater::{RouteMetrics, RouteUpdater},
};

/// Everything the agent is built from (the `detour agent` flags).
#[derive(Debug)]
pub struct Config {
    /// A routes file (standalone), or `None` for the Kubernetes API.
    pub routes: Option<PathBuf>,
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
    let Resolved {
        source,
        cgroup,
        max_connections,
    } = resolved;
    let mut shutdown = Shutdown::install()?;
    // Before binding anything: a running agent hands its sockets over.
    let mut inherited = handover::take_over(&config.handover_socket).await;
    let mut listeners = Vec::new();
    for addr in &config.proxy_addrs {
        let listener = match inherited.as_mut().and_then(|i| i.listener(*addr)) {
            Some(listener) => listener,
            None => proxy::listen(*addr),
        };
        listeners.push(listener.with_context(|| format!("cannot listen on proxy address {addr}"))?);
    }
    let metrics_listener = match inherited
        .as_mut()
        .and_then(|i| i.listener(config.metrics_addr))
    {
        Some(listener) => listener,
        None => TcpListener::bind(config.metrics_addr).await,
    }
    .with_context(|| format!("cannot listen on metrics address {}", config.metrics_addr))?;
    let watch = match &source {
        Source::File { path, .. } => Some(routes::watch::watch(path)?),
        Source::Kubernetes => None,
    };
    let client = match &source {
        Source::Kubernetes => Some(k8s::source::client().await?),
        Source::File { .. } => None,
    };

    let (datapath, handles) = Datapath::start(&DatapathOptions {
        cgroup: cgroup.path.clone(),
        proxy_addrs: config.proxy_addrs.clone(),
        mark: config.upstream.mark,
        bpf_log: debug,
        pin_dir: config.pin_dir.clone(),
        capacities: config.capacities,
        kernel_relay: config.kernel_relay,
    })?;
    let (orig_dst, counters) = (handles.orig_dst, handles.counters);
    crate::limits::release_freed_memory();
    let orig_dst = Arc::new(orig_dst);
    if let Some(inherited) = inherited.as_mut() {
        inherited.share_maps(&orig_dst);
    }
    let offered = Arc::new(
        Offered::new(
            &listeners
                .iter()
                .chain(std::iter::once(&metrics_listener))
                .collect::<Vec<_>>(),
            Arc::clone(&orig_dst),
        )
        .context("cannot keep the listening sockets for a successor")?,
    );
    // A successor takes the node's socket paths over once it is ready; a
    // first agent refuses to replace a live one.
    let (admin_listener, admin_file) = match &inherited {
        Some(_) => None,
        None => Some(socket_file::bind(&config.admin_socket, Live::Refuse)?),
    }
    .unzip();
    let (handover_listener, handover_file) = match &inherited {
        Some(_) => None,
        None => Some(socket_file::bind(&config.handover_socket, Live::Refuse)?),
    }
    .unzip();
    let mut registry = Registry::with_prefix(metrics::PREFIX);
    let mut updater = RouteUpdater::new(datapath, RouteMetrics::new(&mut registry));
    // Before the first routes: the agent's start closes what went direct
    // while no agent ran.
    let sweeper = Arc::new(Sweeper::new(
        cgroup.path.clone(),
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
    let flows = Arc::new(FlowTable::default());
    let info = admin::StartInfo {
        started: std::time::Instant::now(),
        cgroup: cgroup.path.clone(),
        cgroup_reason: cgroup.reason.clone(),
        programs: crate::datapath::PROGRAMS
            .iter()
            .map(|p| (*p).to_owned())
            .collect(),
        proxy_addrs: config.proxy_addrs.clone(),
        pin_dir: updater.pin_dir(),
        source_kind: source.kind(),
        source_path: source.path(),
    };
    let origins = Arc::new(proxy::origin::Origins::new(config.keep_client_address));
    let proxy = Arc::new(Proxy {
        ctx: ProxyContext {
            draining: CancellationToken::new(),
            connection_slots: Arc::new(tokio::sync::Semaphore::new(max_connections)),
            flows: Arc::clone(&flows),
            orig_dst: Arc::clone(&orig_dst),
            relay: handles.relay.map(Arc::new),
            routes: updater.store(),
            metrics: proxy_metrics,
            keys: config.keys.clone(),
            upstream: config.upstream,
            origins: Arc::clone(&origins),
            buffers: proxy::buffers::BufferPool::default(),
            splice_buffers: proxy::buffers::BufferPool::for_splices(),
            detect_timeout: config.detect_timeout,
        },
        http1: Http1 {
            pool: Pool::default(),
            parking: ParkingLot::when_enabled(config.http1.park_after),
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
    tokio::spawn(Arc::clone(&origins).follow(stop_updates.clone()));
    let watch_failures = k8s::source::WatchFailures::new();
    let updates = match (source, watch, client) {
        (Source::File { path, text, .. }, Some(watch), _) => {
            tokio::spawn(updater.follow_file(path, text, watch, stop_updates.clone()))
        }
        (_, _, Some(client)) => tokio::spawn(k8s::source::follow(
            client,
            updater,
            watch_failures.clone(),
            stop_updates.clone(),
        )),
        _ => bail!("route source without its watch"),
    };
    let stop_accepting = CancellationToken::new();
    let connections = TaskTracker::new();
    connections.spawn(parking::run(Arc::clone(&proxy), connections.clone()));
    let (accepting_tx, accepting) = watch::channel(false);
    let gate = inherited.is_some().then(|| Arc::clone(&synced));
    let accepting_task = tokio::spawn(lifecycle::accept(
        listeners,
        Arc::clone(&proxy),
        connections.clone(),
        stop_accepting.clone(),
        gate,
        accepting_tx,
    ));
    let handover_accepting = accepting.clone();
    let (successor_tx, successor) = watch::channel(Successor::None);
    let stop_admin = CancellationToken::new();
    let admin_ctx = Arc::new(admin::AdminContext {
        info,
        flows,
        routes: Arc::clone(&proxy.ctx.routes),
        keys: config.keys.clone(),
        log,
        ready: vec![
            Arc::clone(&ready),
            Arc::clone(&synced),
            Arc::clone(&watch_failures.permitted),
        ],
        synced: Arc::clone(&synced),
        problems,
        watch_failures: watch_failures.clone(),
        reconnect_unavailable,
        bypass: Some(sweeper),
        origins,
    });
    let admin_task = tokio::spawn({
        let (path, stop, accepting, successor) = (
            config.admin_socket.clone(),
            stop_admin.clone(),
            accepting.clone(),
            successor.clone(),
        );
        async move {
            let bound = admin_listener.zip(admin_file);
            if let Some((listener, file)) =
                lifecycle::bind_when_accepting(bound, &path, accepting, &stop).await
            {
                admin::server::serve(listener, file, admin_ctx, successor, stop).await;
            }
        }
    });
    let stop_handover = CancellationToken::new();
    let handover_task = tokio::spawn({
        let (path, stop, offered) = (
            config.handover_socket.clone(),
            stop_handover.clone(),
            Arc::clone(&offered),
        );
        async move {
            let bound = handover_listener.zip(handover_file);
            if let Some((listener, file)) =
                lifecycle::bind_when_accepting(bound, &path, accepting, &stop).await
            {
                handover::serve(listener, file, offered, successor_tx, stop).await;
            }
        }
    });
    if let Some(inherited) = inherited {
        let (orig_dst, mut accepting) = (Arc::clone(&orig_dst), handover_accepting);
        tokio::spawn(async move {
            if accepting.wait_for(|a| *a).await.is_ok() {
                inherited.ready_then_follow(&orig_dst).await;
            }
        });
    }
    let stop_metrics = CancellationToken::new();
    let metrics_task = tokio::spawn(metrics::serve(
        metrics_listener,
        Arc::new(metrics::Endpoint::new(
            registry,
            vec![Arc::clone(&ready), synced, watch_failures.permitted],
        )),
        stop_metrics.clone(),
    ));
    ready.store(true, Ordering::Release);
    info!(
        version = env!("CARGO_PKG_VERSION"),
        "detour agent started; ready once routes are synced"
    );

    shutdown.wait().await;
    lifecycle::Running {
        ready,
        proxy,
        connections,
        accepting: accepting_task,
        stop_accepting,
        updates,
        stop_updates,
        offered,
        successor,
        stop_handover,
        handover_task,
        metrics_task,
        stop_metrics,
        admin_task,
        stop_admin,
    }
    .shutdown()
    .await
}
