//! Connections that predate steering are made to reconnect through detour.
//!
//! detour decides at `connect()`: a connection opened while its destination
//! was not steered (before a Sandbox forked the service, or while no agent
//! ran) goes straight to baseline for as long as it lives, and keyed
//! requests on it would reach baseline. So whenever destinations become
//! steered (a route update, and the agent's start), the [`Sweeper`] finds
//! the established TCP connections from processes of the attached cgroup to
//! those destinations in the kernel (`sock_diag`, one network namespace at
//! a time) and closes them (`SOCK_DESTROY`), so the client's next request
//! opens a connection that is steered.
//!
//! Gently: a connection with nothing in flight (no queued bytes, and its last
//! event an answer received rather than a request sent) is closed at once;
//! a busy one is looked at again every [`RECHECK`] and closed when quiet, or
//! when the grace period (`--reconnect-grace`) is over. The agent's own
//! sockets (its mark) and processes outside the cgroup are never touched. A
//! connection to a destination that stops being steered is left alone: it
//! goes through the proxy to baseline until it closes.
//!
//! Needs `CONFIG_INET_DIAG_DESTROY` (kernel ≥ 4.5; on by default in the
//! major distributions). Without it the first attempt warns, `detour status`
//! says so, and connections that predate steering stay direct as before.

mod diag;
mod scope;

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use self::{diag::Diag, scope::Scope};
use crate::{
    health::{Area, Health, Reporter},
    metrics::Label,
};

/// How often a busy connection is looked at again.
pub const RECHECK: Duration = Duration::from_millis(200);

/// Destinations that just became steered, and the service of each.
pub type Batch = HashMap<SocketAddr, Arc<str>>;

/// Where the route updater sends newly steered destinations.
#[derive(Debug, Clone)]
pub struct SweepHandle(mpsc::UnboundedSender<Batch>);

impl SweepHandle {
    pub fn sweep(&self, batch: Batch) {
        if !batch.is_empty() {
            let _ = self.0.send(batch);
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: Label,
}

/// Closes connections that bypass the proxy.
pub struct Sweeper {
    pub cgroup: PathBuf,
    /// The agent's `SO_MARK`: its own sockets are never closed.
    pub mark: u32,
    pub grace: Duration,
    closed: Family<ServiceLabels, Counter>,
    /// Set once closing is known to be unavailable on this node.
    unavailable: AtomicBool,
    /// Why, as a warning in `detour status`.
    reporter: Reporter,
}

impl Sweeper {
    pub fn new(
        cgroup: PathBuf,
        mark: u32,
        grace: Duration,
        registry: &mut Registry,
        health: &Health,
    ) -> Self {
        let closed = Family::default();
        registry.register(
            "stale_connections_closed",
            "Connections from the attached cgroup to a newly steered destination that bypassed \
             the proxy and were closed so that the client reconnects through it, by service",
            closed.clone(),
        );
        Self {
            cgroup,
            mark,
            grace,
            closed,
            unavailable: AtomicBool::new(false),
            reporter: health.reporter("reconnect", Area::Agent),
        }
    }

    /// Starts sweeping what the returned handle is sent.
    pub fn spawn(self: Arc<Self>) -> SweepHandle {
        let (send, mut receive) = mpsc::unbounded_channel::<Batch>();
        let sweeper = self;
        tokio::spawn(async move {
            while let Some(mut batch) = receive.recv().await {
                // Coalesce what queued up meanwhile.
                while let Ok(more) = receive.try_recv() {
                    batch.extend(more);
                }
                let sweeper = Arc::clone(&sweeper);
                let _ = tokio::task::spawn_blocking(move || sweeper.sweep(&batch)).await;
            }
        });
        SweepHandle(send)
    }

    /// Closes every connection that bypasses the proxy to a destination of
    /// `batch`: quiet ones at once, busy ones when quiet or at the grace's end.
    fn sweep(&self, batch: &Batch) {
        if self.is_unavailable() {
            return;
        }
        let deadline = Instant::now() + self.grace;
        let destinations: Arc<HashSet<SocketAddr>> = Arc::new(batch.keys().copied().collect());
        loop {
            let scope = match Scope::of(&self.cgroup) {
                Ok(scope) => scope,
                Err(error) => {
                    warn!(cgroup = %self.cgroup.display(), %error, "cannot list the cgroup's processes; connections that predate steering are not closed");
                    return;
                }
            };
            let last_try = Instant::now() >= deadline;
            let ids = Arc::new(scope.cgroup_ids);
            let mut busy = 0;
            for namespace in scope.namespaces.values() {
                let (destinations, ids, mark) =
                    (Arc::clone(&destinations), Arc::clone(&ids), self.mark);
                let swept = scope::in_namespace(namespace, move || {
                    let mut diag = Diag::new()?;
                    let mut swept = Swept::default();
                    for conn in diag.established()? {
                        if !bypasses(&conn, &destinations, &ids, mark) {
                            continue;
                        }
                        debug!(
                            client = %conn.local,
                            destination = %conn.remote,
                            queued = conn.queued,
                            since_sent_ms = conn.since_sent_ms,
                            since_received_ms = conn.since_received_ms,
                            segments_out = conn.segments_out,
                            segments_in = conn.segments_in,
                            "bypassing connection"
                        );
                        if !conn.is_quiet() && !last_try {
                            swept.busy += 1;
                            continue;
                        }
                        diag.destroy(&conn)?;
                        swept
                            .closed
                            .push((conn.local, conn.remote, conn.is_quiet()));
                    }
                    Ok(swept)
                });
                match swept {
                    Ok(swept) => {
                        busy += swept.busy;
                        for (client, destination, quiet) in swept.closed {
                            let service = batch
                                .get(&destination)
                                .map_or_else(|| Arc::from(""), Arc::clone);
                            info!(%service, %client, %destination, quiet, "closed a connection that bypassed the proxy; the client reconnects through it");
                            self.closed
                                .get_or_create(&ServiceLabels {
                                    service: Label(service),
                                })
                                .inc();
                        }
                    }
                    Err(error) if self.is_fatal(&error) => return,
                    Err(error) => debug!(%error, "a namespace could not be swept"),
                }
            }
            if busy == 0 || last_try {
                return;
            }
            std::thread::sleep(RECHECK);
        }
    }

    /// How many established connections from the cgroup to `destinations`
    /// bypass the proxy right now (`None`: they cannot be found here).
    /// Blocking: one thread per network namespace.
    pub fn census(&self, destinations: &HashSet<SocketAddr>) -> Option<u64> {
        if self.is_unavailable() {
            return None;
        }
        if destinations.is_empty() {
            return Some(0);
        }
        let scope = Scope::of(&self.cgroup).ok()?;
        let ids = Arc::new(scope.cgroup_ids);
        let destinations = Arc::new(destinations.clone());
        let mut count = 0;
        for namespace in scope.namespaces.values() {
            let (destinations, ids, mark) =
                (Arc::clone(&destinations), Arc::clone(&ids), self.mark);
            let counted = scope::in_namespace(namespace, move || {
                let conns = Diag::new()?.established()?;
                Ok(conns
                    .iter()
                    .filter(|conn| bypasses(conn, &destinations, &ids, mark))
                    .count() as u64)
            });
            match counted {
                Ok(n) => count += n,
                Err(error) if self.is_fatal(&error) => return None,
                // The namespace went meanwhile.
                Err(_) => {}
            }
        }
        Some(count)
    }

    /// Whether `error` means no connection can be closed on this node (and
    /// if so, says so once, for the log and `detour status`).
    fn is_fatal(&self, error: &std::io::Error) -> bool {
        let why = match error.raw_os_error() {
            Some(libc::EOPNOTSUPP) => format!(
                "connections that predate steering cannot be closed: the kernel lacks \
                 CONFIG_INET_DIAG_DESTROY ({error}); they stay direct until their clients replace them"
            ),
            Some(libc::EPERM) => format!(
                "connections that predate steering cannot be closed: entering the pods' network \
                 namespaces needs CAP_SYS_ADMIN ({error}); they stay direct until their clients \
                 replace them"
            ),
            _ => return false,
        };
        self.set_unavailable(why);
        true
    }

    fn is_unavailable(&self) -> bool {
        self.unavailable.load(Ordering::Acquire)
    }

    fn set_unavailable(&self, why: String) {
        warn!("{why}");
        self.reporter.report(vec![why]);
        self.unavailable.store(true, Ordering::Release);
    }
}

/// A connection from the cgroup (not the agent's own) to one of
/// `destinations`: it did not go through the proxy.
fn bypasses(
    conn: &diag::TcpConn,
    destinations: &HashSet<SocketAddr>,
    cgroup_ids: &HashSet<u64>,
    mark: u32,
) -> bool {
    destinations.contains(&conn.remote) && cgroup_ids.contains(&conn.cgroup_id) && conn.mark != mark
}

/// What one namespace's sweep did.
#[derive(Debug, Default)]
struct Swept {
    /// (client, destination, quiet) of each connection closed.
    closed: Vec<(SocketAddr, SocketAddr, bool)>,
    busy: usize,
}
