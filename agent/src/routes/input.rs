//! What a route source delivers, in one source-neutral shape: the routes file
//! and the Kubernetes source both produce a [`RouteInput`], and the snapshot
//! is built from it in one place.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf};

use super::{Protocol, RoutesFile, file::ForkSpec};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteInput {
    pub services: Vec<ServiceInput>,
    /// Sandboxes whose routing keys are unique (the source resolved conflicts).
    pub sandboxes: Vec<SandboxInput>,
    pub groups: Vec<GroupInput>,
}

/// A baseline service and every destination (address:port) that is steered
/// for it: ClusterIPs with Service ports, pod IPs with target ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInput {
    pub namespace: String,
    pub name: String,
    pub destinations: Vec<(SocketAddr, Protocol)>,
    /// Steered for fork pods' connects only: a Service no sandbox forks,
    /// whose requests from a fork inherit its key. Everyone else's connects
    /// to it go direct.
    pub fork_sources_only: bool,
}

impl ServiceInput {
    /// `namespace/name`, the identity forks refer to.
    pub fn label(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxInput {
    pub name: String,
    pub routing_key: String,
    pub forks: Vec<ForkInput>,
    /// The sandbox's fork pods on this node that belong to none of its
    /// forks in particular (each fork's own are in [`ForkInput::pods`]).
    pub fork_pods: Vec<ForkPod>,
    /// Whether its fork pods' requests without a routing key inherit its
    /// key (the default; a Sandbox can opt out).
    pub inherit_key: bool,
}

/// A fork pod on this node, as a source names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ForkPod {
    /// Its cgroup v2 directory (the routes file).
    Cgroup(PathBuf),
    /// A Kubernetes pod: `namespace/name` and its UID, whose cgroup the
    /// kubelet makes under the node's pod cgroup (the agent finds it).
    Pod { name: String, uid: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForkInput {
    /// `namespace/name` of a service in [`RouteInput::services`].
    pub service: String,
    /// Endpoints for a request whatever its destination port.
    pub endpoints: Vec<SocketAddr>,
    /// Endpoints by the destination port the client asked for; a port listed
    /// here takes precedence over `endpoints`.
    pub by_port: BTreeMap<u16, Vec<SocketAddr>>,
    /// The fork's own pods on this node: fork pods of the sandbox whose
    /// connects to this service's keyless ports still reach its baseline,
    /// so that a fork can seed itself from baseline.
    pub pods: Vec<ForkPod>,
}

impl SandboxInput {
    /// Whether the sandbox has fork pods on this node, of any fork or none.
    pub fn has_fork_pods(&self) -> bool {
        !self.fork_pods.is_empty() || self.forks.iter().any(|f| !f.pods.is_empty())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInput {
    pub name: String,
    pub routing_key: String,
    /// Member sandbox names, in order.
    pub sandboxes: Vec<String>,
}

impl From<&RoutesFile> for RouteInput {
    fn from(file: &RoutesFile) -> Self {
        let services = file
            .services
            .iter()
            .map(|spec| ServiceInput {
                namespace: spec.namespace.clone(),
                name: spec.name.clone(),
                destinations: spec
                    .ports
                    .iter()
                    .flat_map(|port| {
                        spec.addresses
                            .iter()
                            .map(move |ip| (SocketAddr::new(*ip, port.port), port.protocol))
                    })
                    .collect(),
                fork_sources_only: false,
            })
            .collect();
        let sandboxes = file
            .sandboxes
            .iter()
            .map(|sandbox| SandboxInput {
                name: sandbox.name.clone(),
                routing_key: sandbox.routing_key.clone(),
                forks: sandbox
                    .forks
                    .iter()
                    .map(|fork| ForkInput {
                        service: fork.service.clone(),
                        endpoints: fork.endpoints.clone(),
                        by_port: same_port_endpoints(file, fork),
                        pods: fork
                            .pod_cgroups
                            .iter()
                            .cloned()
                            .map(ForkPod::Cgroup)
                            .collect(),
                    })
                    .collect(),
                fork_pods: sandbox
                    .pod_cgroups
                    .iter()
                    .cloned()
                    .map(ForkPod::Cgroup)
                    .collect(),
                inherit_key: sandbox.inherit_key,
            })
            .collect();
        let groups = file
            .route_groups
            .iter()
            .map(|group| GroupInput {
                name: group.name.clone(),
                routing_key: group.routing_key.clone(),
                sandboxes: group.sandboxes.clone(),
            })
            .collect();
        Self {
            services,
            sandboxes,
            groups,
        }
    }
}

/// A fork's endpoints listed with one of its service's ports serve that
/// port only (a fork of a service with a database port and a cache port
/// lists one endpoint for each); the others serve every port.
fn same_port_endpoints(file: &RoutesFile, fork: &ForkSpec) -> BTreeMap<u16, Vec<SocketAddr>> {
    let service = file
        .services
        .iter()
        .find(|s| format!("{}/{}", s.namespace, s.name) == fork.service);
    let mut by_port: BTreeMap<u16, Vec<SocketAddr>> = BTreeMap::new();
    for port in service.into_iter().flat_map(|s| &s.ports) {
        for endpoint in fork.endpoints.iter().filter(|e| e.port() == port.port) {
            by_port.entry(port.port).or_default().push(*endpoint);
        }
    }
    by_port
}
