//! The admin API: what the `detour` CLI asks a running agent. HTTP/1.1 +
//! JSON on a Unix socket; see [`api`] for the endpoints and wire types.

pub mod api;
mod explain;
mod flows;
mod routes;
pub mod server;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Instant};

use arc_swap::ArcSwap;
pub use explain::explain;
pub use routes::{protocol_name, routes};

use crate::{
    datapath::pinned,
    flows::FlowTable,
    health::{Area, Condition, Health},
    http::routing_key::RoutingKeys,
    routes::{ForkPod, RouteSnapshot},
    telemetry::LogControl,
};

/// Facts fixed at start.
#[derive(Debug, Clone)]
pub struct StartInfo {
    pub started: Instant,
    pub cgroup: PathBuf,
    /// Why that cgroup: set by flag, or how it was detected.
    pub cgroup_reason: String,
    pub programs: Vec<String>,
    pub proxy_addrs: Vec<SocketAddr>,
    pub pin_dir: Option<PathBuf>,
    /// `file` or `kubernetes`.
    pub source_kind: &'static str,
    pub source_path: Option<PathBuf>,
}

/// Everything the admin endpoints read.
pub struct AdminContext {
    pub info: StartInfo,
    pub flows: Arc<FlowTable>,
    pub routes: Arc<ArcSwap<RouteSnapshot>>,
    pub keys: RoutingKeys,
    pub log: Option<LogControl>,
    /// Readiness, route problems and warnings, as the subsystems report them.
    pub health: Health,
    /// Whether the routes are synced (one of the conditions in `health`).
    pub synced: Condition,
    /// Finds connections that bypass the proxy (`None` in tests).
    pub bypass: Option<Arc<crate::reconnect::Sweeper>>,
    /// Where upstream connections leave from.
    pub origins: Arc<crate::proxy::origin::Origins>,
}

impl AdminContext {
    /// Connections from the cgroup that bypass the proxy right now to the
    /// steered destinations `pick` chooses (all of them, or one service's).
    pub async fn bypassing(
        &self,
        pick: impl Fn(&RouteSnapshot) -> std::collections::HashSet<std::net::SocketAddr>,
    ) -> Option<u64> {
        let sweeper = Arc::clone(self.bypass.as_ref()?);
        let destinations = pick(&self.routes.load());
        tokio::task::spawn_blocking(move || sweeper.census(&destinations))
            .await
            .ok()
            .flatten()
    }

    pub fn status(&self, bypassing: Option<u64>) -> api::Status {
        let maps = self
            .info
            .pin_dir
            .as_deref()
            .and_then(|dir| pinned::read(dir).ok())
            .map(|read| {
                read.sizes()
                    .into_iter()
                    .map(|(name, entries, max)| api::MapStatus {
                        name: name.to_owned(),
                        entries: entries as u64,
                        max_entries: u64::from(max),
                    })
                    .collect()
            })
            .unwrap_or_default();
        api::Status {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            uptime_seconds: self.info.started.elapsed().as_secs(),
            cgroup: self.info.cgroup.display().to_string(),
            cgroup_reason: self.info.cgroup_reason.clone(),
            programs: self.info.programs.clone(),
            proxy_addrs: self.info.proxy_addrs.clone(),
            pin_dir: self.info.pin_dir.as_ref().map(|d| d.display().to_string()),
            maps,
            route_source: api::RouteSourceStatus {
                kind: self.info.source_kind.to_owned(),
                path: self
                    .info
                    .source_path
                    .as_ref()
                    .map(|p| p.display().to_string()),
                synced: self.synced.holds(),
                problems: self.health.problems(Area::Routes),
            },
            ready: self.health.is_ready(),
            flows: self.flows.count(),
            client_address: self.origins.describe(),
            bypassing_connections: bypassing,
            warnings: self.health.problems(Area::Agent),
            fork_pods: fork_pods(&self.routes.load()),
        }
    }
}

/// The snapshot's fork pods, as `detour status` lists them.
fn fork_pods(snapshot: &RouteSnapshot) -> Vec<api::ForkPodStatus> {
    snapshot
        .fork_pods
        .values()
        .flat_map(|pods| {
            pods.pods.iter().map(move |pod| api::ForkPodStatus {
                sandbox: pods.sandbox.to_string(),
                pod: match pod {
                    ForkPod::Cgroup(path) => path.display().to_string(),
                    ForkPod::Pod { name, .. } => name.clone(),
                },
                inherits_key: pods.inherit_as != 0,
                keyless_forks: pods.deps.len() as u64,
            })
        })
        .collect()
}
