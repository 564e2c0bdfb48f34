//! The composition root's first half: everything the agent is made of,
//! built in start-up order and wired together, before any task runs
//! (`lifecycle` runs it).
//!
//! By the end of [`Agent::build`] the listeners are bound (or taken over),
//! the programs attached, a routes file's routes applied, and the proxy, the
//! admin API's context and the health registry exist; nothing accepts yet.

use std::sync::Arc;

use anyhow::Context;
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;

use super::{Config, Resolved, source::Source};
use crate::{
    admin::{self, AdminContext},
    datapath::{Datapath, DatapathOptions, OrigDstTable},
    flows::FlowTable,
    handover::{self, Inherited, Offered},
    health::{Condition, Health},
    k8s::{self, source::WatchFailures},
    metrics,
    proxy::{
        self, Proxy, ProxyContext, ProxyMetrics,
        h2::{self, H2},
        http1::{Http1, parking::ParkingLot, pool::Pool},
        origin::Origins,
    },
    reconnect::Sweeper,
    routes::watch::{self, FileWatch},
    socket_file::{self, Live, SocketFile},
    telemetry::LogControl,
    updater::{RouteMetrics, RouteUpdater},
};

/// Where the routes come from once the agent runs.
pub enum Follow {
    File {
        path: std::path::PathBuf,
        text: String,
        watch: FileWatch,
    },
    Kubernetes {
        client: kube::Client,
        failures: WatchFailures,
        /// For the Sandboxes' fork pods on this node.
        node_name: Option<String>,
    },
}

/// The agent, built and not yet running.
pub struct Agent {
    pub config: Config,
    /// A running agent's sockets and map, when this one takes over.
    pub inherited: Option<Inherited>,
    pub listeners: Vec<TcpListener>,
    pub metrics_listener: TcpListener,
    /// Bound at start by a first agent; bound once accepting by one that
    /// took over (it replaces its predecessor's).
    pub admin_socket: Option<(UnixListener, SocketFile)>,
    pub handover_socket: Option<(UnixListener, SocketFile)>,
    /// What this agent offers a successor.
    pub offered: Arc<Offered>,
    pub orig_dst: Arc<OrigDstTable>,
    pub updater: RouteUpdater,
    pub follow: Follow,
    pub health: Health,
    /// The agent's own condition of readiness: started, and not stopping.
    pub started: Condition,
    pub registry: Registry,
    pub proxy: Arc<Proxy>,
    pub admin: Arc<AdminContext>,
}

impl Agent {
    pub async fn build(
        config: Config,
        resolved: Resolved,
        debug: bool,
        log: Option<LogControl>,
    ) -> anyhow::Result<Self> {
        let Resolved {
            source,
            cgroup,
            max_connections,
        } = resolved;
        // Before binding anything: a running agent hands its sockets over.
        let mut inherited = handover::take_over(&config.handover_socket).await;
        let mut listeners = Vec::new();
        for addr in &config.proxy_addrs {
            let listener = match inherited.as_mut().and_then(|i| i.listener(*addr)) {
                Some(listener) => listener,
                None => proxy::listen(*addr),
            };
            listeners
                .push(listener.with_context(|| format!("cannot listen on proxy address {addr}"))?);
        }
        let metrics_listener = match inherited
            .as_mut()
            .and_then(|i| i.listener(config.metrics_addr))
        {
            Some(listener) => listener,
            None => TcpListener::bind(config.metrics_addr).await,
        }
        .with_context(|| format!("cannot listen on metrics address {}", config.metrics_addr))?;
        let health = Health::default();
        let started = health.condition("started");
        let follow = match &source {
            Source::File { path, text, .. } => Follow::File {
                watch: watch::watch(path)?,
                path: path.clone(),
                text: text.clone(),
            },
            Source::Kubernetes => Follow::Kubernetes {
                client: k8s::source::client().await?,
                failures: WatchFailures::register(&health),
                node_name: config.node_name.clone(),
            },
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
        crate::limits::release_freed_memory();
        let orig_dst = Arc::new(handles.orig_dst);
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
        let (admin_socket, handover_socket) = match &inherited {
            Some(_) => (None, None),
            None => (
                Some(socket_file::bind(&config.admin_socket, Live::Refuse)?),
                Some(socket_file::bind(&config.handover_socket, Live::Refuse)?),
            ),
        };

        let mut registry = Registry::with_prefix(metrics::PREFIX);
        let mut updater = RouteUpdater::new(datapath, RouteMetrics::new(&mut registry), &health);
        // Before the first routes: the agent's start closes what went direct
        // while no agent ran.
        let sweeper = Arc::new(Sweeper::new(
            cgroup.path.clone(),
            config.upstream.mark,
            config.reconnect_grace,
            &mut registry,
            &health,
        ));
        updater.set_sweeper(Arc::clone(&sweeper).spawn());
        if let Source::File { file, .. } = &source {
            updater.apply(file);
        }
        let proxy_metrics = ProxyMetrics::new(&mut registry);
        registry.register_collector(Box::new(handles.counters));
        registry.register_collector(Box::new(handles.fork_counters));
        let flows = Arc::new(FlowTable::default());
        let origins = Arc::new(Origins::new(config.keep_client_address));
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
        let admin = Arc::new(AdminContext {
            info: admin::StartInfo {
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
            },
            flows,
            routes: updater.store(),
            keys: config.keys.clone(),
            log,
            health: health.clone(),
            synced: updater.synced(),
            bypass: Some(sweeper),
            origins,
        });
        Ok(Self {
            config,
            inherited,
            listeners,
            metrics_listener,
            admin_socket,
            handover_socket,
            offered,
            orig_dst,
            updater,
            follow,
            health,
            started,
            registry,
            proxy,
            admin,
        })
    }
}
