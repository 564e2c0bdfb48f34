//! The running agent's tasks and its two shutdown orders.
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

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use tokio::{
    net::{TcpListener, UnixListener},
    signal::unix::SignalKind,
    sync::watch,
    task::JoinHandle,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{info, warn};

use crate::{
    datapath::Datapath,
    defaults,
    handover::{Offered, Successor},
    proxy::{self, Proxy},
    socket_file::{self, Live, SocketFile},
};

/// How long a shutdown waits for a successor that holds the sockets but
/// has not synced its routes yet, before falling back to fail-open.
const SUCCESSOR_READY_WAIT: Duration = Duration::from_secs(15);

/// Everything `serve` started, stopped in one of the two orders.
pub struct Running {
    pub ready: Arc<AtomicBool>,
    pub proxy: Arc<Proxy>,
    pub connections: TaskTracker,
    pub accepting: JoinHandle<()>,
    pub stop_accepting: CancellationToken,
    pub updates: JoinHandle<Datapath>,
    pub stop_updates: CancellationToken,
    pub offered: Arc<Offered>,
    pub successor: watch::Receiver<Successor>,
    pub stop_handover: CancellationToken,
    pub handover_task: JoinHandle<()>,
    pub metrics_task: JoinHandle<()>,
    pub stop_metrics: CancellationToken,
    pub admin_task: JoinHandle<()>,
    pub stop_admin: CancellationToken,
}

impl Running {
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.ready.store(false, Ordering::Release);
        let successor = ready_successor(&mut self.successor).await;
        self.stop_handover.cancel();
        let _ = self.handover_task.await;
        // From here no one else gets the sockets; the copies kept for a
        // successor must not keep a listener open that nobody accepts on.
        self.offered.withdraw();
        if let Some(pid) = successor {
            info!(
                successor = pid,
                "handing over: stop accepting, then detach; the successor serves new connections"
            );
            self.stop_metrics.cancel();
            self.stop_accepting.cancel();
            let _ = self.accepting.await;
            self.stop_updates.cancel();
            let mut datapath = self.updates.await.context("route updater failed")?;
            datapath.detach();
        } else {
            self.stop_updates.cancel();
            // New connects go straight to their destination from here on.
            let mut datapath = self.updates.await.context("route updater failed")?;
            datapath.detach();
            // Nothing of detour stays on the node (an uninstall, a drain);
            // a crash leaves its pins for `detour bpf`.
            datapath.unpin();
            self.stop_accepting.cancel();
            let _ = self.accepting.await;
        }
        self.proxy.ctx.draining.cancel();
        drain(&self.connections).await;
        self.stop_metrics.cancel();
        let _ = self.metrics_task.await;
        self.stop_admin.cancel();
        let _ = self.admin_task.await;
        info!("detour agent stopped");
        Ok(())
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
pub async fn accept(
    listeners: Vec<TcpListener>,
    proxy: Arc<Proxy>,
    connections: TaskTracker,
    stop: CancellationToken,
    gate: Option<Arc<AtomicBool>>,
    accepting: watch::Sender<bool>,
) {
    if let Some(synced) = gate {
        while !synced.load(Ordering::Acquire) {
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
pub async fn bind_when_accepting(
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
