//! The composition root's second half: the built agent's tasks started in
//! stages ([`Stage`]), and stopped in one of two orders.
//!
//! Start: the route sources and the updater; the parking lot; the proxy
//! acceptors (after the first sync when the sockets were handed over); the
//! admin and handover sockets (then, too); the metrics endpoint; then the
//! agent is started (ready once the routes are synced).
//!
//! - **Fail-open** (no successor): not ready; the route updater stops and
//!   the programs are detached (new connects go direct) and the maps' pins
//!   removed; the listeners stop accepting and connections drain, bounded
//!   by `DRAIN_TIMEOUT_SECS`; then metrics and the admin socket stop.
//! - **Hand over** (a successor took the sockets and is ready, see
//!   `handover`): not ready; metrics stop (the successor answers probes on
//!   the shared socket); the listeners stop accepting (the successor accepts
//!   from the same queue); then the programs are detached (the successor's
//!   programs redirect from here on); then connections drain. No connect
//!   goes direct at any moment.
//!
//! A kill -9 skips all of it and the kernel detaches the programs
//! (fail-open); the next agent closes the connections that went direct
//! meanwhile (`reconnect`).

use std::{path::Path, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::{
    net::{TcpListener, UnixListener},
    signal::unix::SignalKind,
    sync::watch,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{info, warn};

use super::{
    build::{Agent, Follow},
    stage::Stage,
};
use crate::{
    admin,
    datapath::Datapath,
    defaults, handover,
    handover::{Offered, Successor},
    health::Condition,
    k8s, metrics,
    proxy::{self, Proxy, http1::parking},
    routes::{feed, watch as file_source},
    socket_file::{self, Live, SocketFile},
};

/// How long a shutdown waits for a successor that holds the sockets but
/// has not synced its routes yet, before falling back to fail-open.
const SUCCESSOR_READY_WAIT: Duration = Duration::from_secs(15);

/// The agent's running stages, in the order they stop.
pub struct Running {
    started: Condition,
    proxy: Arc<Proxy>,
    /// Every connection's task, waited for by the drain.
    connections: TaskTracker,
    offered: Arc<Offered>,
    successor: watch::Receiver<Successor>,
    /// The handover socket, where a successor asks for the sockets.
    handover: Stage,
    /// The proxy's acceptors.
    accepting: Stage,
    /// The route updater, which returns the data path to detach.
    updater: Stage<Datapath>,
    /// The route sources, and the client namespaces' follower.
    sources: Stage,
    metrics: Stage,
    admin: Stage,
}

impl Agent {
    /// Starts every stage; the agent is started once they are.
    pub fn start(self) -> Running {
        let Self {
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
        } = self;
        let synced = updater.synced();
        let (route_feed, route_updates) = feed::feed();
        let mut updater_stage = Stage::new("route updater");
        updater_stage.spawn(|stop| updater.run(route_updates, stop));
        let mut sources = Stage::new("route sources");
        let origins = Arc::clone(&proxy.ctx.origins);
        sources.spawn(|stop| origins.follow(stop));
        match follow {
            Follow::File { path, text, watch } => {
                sources.spawn(|stop| file_source::follow(path, text, watch, route_feed, stop));
            }
            Follow::Kubernetes {
                client,
                failures,
                node_name,
            } => {
                sources.spawn(|stop| {
                    k8s::source::follow(client, route_feed, failures, node_name, stop)
                });
            }
        }

        let connections = TaskTracker::new();
        connections.spawn(parking::run(Arc::clone(&proxy), connections.clone()));
        let (accepting_tx, accepting) = watch::channel(false);
        let gate = inherited.is_some().then(|| synced.clone());
        let mut accepting_stage = Stage::new("proxy acceptors");
        accepting_stage.spawn({
            let (proxy, connections) = (Arc::clone(&proxy), connections.clone());
            |stop| accept(listeners, proxy, connections, stop, gate, accepting_tx)
        });

        let (successor_tx, successor) = watch::channel(Successor::None);
        let mut admin_stage = Stage::new("admin socket");
        admin_stage.spawn({
            let (path, accepting, successor) = (
                config.admin_socket.clone(),
                accepting.clone(),
                successor.clone(),
            );
            |stop| async move {
                if let Some((listener, file)) =
                    bind_when_accepting(admin_socket, &path, accepting, &stop).await
                {
                    admin::server::serve(listener, file, admin, successor, stop).await;
                }
            }
        });
        let mut handover_stage = Stage::new("handover socket");
        handover_stage.spawn({
            let (path, accepting, offered) = (
                config.handover_socket.clone(),
                accepting.clone(),
                Arc::clone(&offered),
            );
            |stop| async move {
                if let Some((listener, file)) =
                    bind_when_accepting(handover_socket, &path, accepting, &stop).await
                {
                    handover::serve(listener, file, offered, successor_tx, stop).await;
                }
            }
        });
        if let Some(inherited) = inherited {
            let mut accepting = accepting;
            tokio::spawn(async move {
                if accepting.wait_for(|a| *a).await.is_ok() {
                    inherited.ready_then_follow(&orig_dst).await;
                }
            });
        }
        let mut metrics_stage = Stage::new("metrics endpoint");
        let endpoint = Arc::new(metrics::Endpoint::new(registry, health));
        metrics_stage.spawn(|stop| metrics::serve(metrics_listener, endpoint, stop));
        started.set(true);
        Running {
            started,
            proxy,
            connections,
            offered,
            successor,
            handover: handover_stage,
            accepting: accepting_stage,
            updater: updater_stage,
            sources,
            metrics: metrics_stage,
            admin: admin_stage,
        }
    }
}

impl Running {
    /// Stops the agent: hands over to a ready successor (stop accepting,
    /// then detach), or fails open (detach, then stop accepting); then one
    /// drain of the connections; then metrics and the admin socket.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.started.set(false);
        let successor = ready_successor(&mut self.successor).await;
        self.handover.stop().await;
        // From here no one else gets the sockets; the copies kept for a
        // successor must not keep a listener open that nobody accepts on.
        self.offered.withdraw();
        if let Some(pid) = successor {
            info!(
                successor = pid,
                "handing over: stop accepting, then detach; the successor serves new connections"
            );
            self.metrics.stop().await;
            self.accepting.stop().await;
            self.detach().await?;
        } else {
            // New connects go straight to their destination from here on.
            let mut datapath = self.detach().await?;
            // Nothing of detour stays on the node (an uninstall, a drain);
            // a crash leaves its pins for `detour bpf`.
            datapath.unpin();
            self.accepting.stop().await;
        }
        self.drain().await;
        self.metrics.stop().await;
        self.admin.stop().await;
        info!("detour agent stopped");
        Ok(())
    }

    /// Stops the route sources and the updater, and detaches the programs.
    async fn detach(&mut self) -> anyhow::Result<Datapath> {
        self.sources.stop().await;
        let mut datapath = self
            .updater
            .stop()
            .await
            .pop()
            .context("route updater failed")?;
        datapath.detach();
        Ok(datapath)
    }

    /// The drain: keep-alive connections close after their current request,
    /// and in-flight ones finish, for at most the drain bound.
    async fn drain(&self) {
        self.proxy.ctx.draining.cancel();
        let connections = &self.connections;
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
}

/// The successor to hand over to: one that is ready, or becomes ready
/// within [`SUCCESSOR_READY_WAIT`].
async fn ready_successor(successor: &mut watch::Receiver<Successor>) -> Option<u32> {
    let waited = tokio::time::timeout(
        SUCCESSOR_READY_WAIT,
        successor.wait_for(|s| !matches!(s, Successor::Starting { .. })),
    )
    .await;
    match waited {
        Ok(Ok(state)) => match *state {
            Successor::Ready { pid } => Some(pid),
            Successor::None | Successor::Starting { .. } => None,
        },
        Ok(Err(_)) => None,
        Err(_) => {
            warn!(
                waited = ?SUCCESSOR_READY_WAIT,
                "the successor is not ready in time; shutting down fail-open"
            );
            None
        }
    }
}

/// Accepts on every proxy listener until `stop`. With `gate` (a successor
/// sharing its predecessor's sockets), not before the routes are synced: a
/// connection accepted earlier would be routed without them.
async fn accept(
    listeners: Vec<TcpListener>,
    proxy: Arc<Proxy>,
    connections: TaskTracker,
    stop: CancellationToken,
    gate: Option<Condition>,
    accepting: watch::Sender<bool>,
) {
    if let Some(synced) = gate {
        while !synced.holds() {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    }
    let acceptors: Vec<_> = listeners
        .into_iter()
        .map(|listener| {
            if let Ok(addr) = listener.local_addr() {
                info!(%addr, "proxy accepting");
            }
            tokio::spawn(proxy::serve(
                listener,
                Arc::clone(&proxy),
                connections.clone(),
                stop.clone(),
            ))
        })
        .collect();
    accepting.send_replace(true);
    for acceptor in acceptors {
        let _ = acceptor.await;
    }
}

/// The Unix socket a task serves: `bound` when the agent started on its
/// own; otherwise (it took over) bound at `path`, replacing the
/// predecessor's, once this agent accepts. `None` if stopped first or the
/// bind fails (logged: the agent runs on without that socket).
async fn bind_when_accepting(
    bound: Option<(UnixListener, SocketFile)>,
    path: &Path,
    mut accepting: watch::Receiver<bool>,
    stop: &CancellationToken,
) -> Option<(UnixListener, SocketFile)> {
    if bound.is_some() {
        return bound;
    }
    tokio::select! {
        () = stop.cancelled() => return None,
        waited = accepting.wait_for(|a| *a) => waited.ok()?,
    };
    socket_file::bind(path, Live::Replace)
        .inspect_err(|error| warn!(%error, "socket not taken over"))
        .ok()
}

/// SIGTERM and SIGINT, caught from the first moment of `serve` (a signal
/// before the handlers exist would kill the agent without a clean detach).
pub struct Shutdown {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Shutdown {
    pub fn install() -> anyhow::Result<Self> {
        Ok(Self {
            term: tokio::signal::unix::signal(SignalKind::terminate())
                .context("cannot handle SIGTERM")?,
            int: tokio::signal::unix::signal(SignalKind::interrupt())
                .context("cannot handle SIGINT")?,
        })
    }

    pub async fn wait(&mut self) {
        tokio::select! {
            _ = self.term.recv() => info!(signal = "SIGTERM", "shutting down"),
            _ = self.int.recv() => info!(signal = "SIGINT", "shutting down"),
        }
    }
}
