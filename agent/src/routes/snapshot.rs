//! The route snapshot: services and their steered destinations, sandboxes,
//! forks and route groups, indexed for the request path.
//!
//! Built by one writer from a validated source and never mutated after, except
//! for each fork's round-robin cursor (an atomic). A request's decision is two
//! hash lookups: routing key, then service id (see [`super::decision`]).

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use detour_common::{STEERED_FORK_SOURCES_ONLY, SockKey, Steered};
use serde::Serialize;

use super::{ForkPods, Protocol, RouteInput, RoutesFile, fork_pods::fork_pods};

/// A steered service, as the proxy, metrics and CLI name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Service {
    /// Identifier carried through the kernel (`Steered::service_id`); never 0,
    /// stable across reloads for the same namespace/name.
    pub id: u32,
    pub namespace: String,
    pub name: String,
    /// `namespace/name`, precomputed for labels and logs.
    #[serde(skip)]
    pub label: Arc<str>,
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label)
    }
}

/// One steered destination and how to treat it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Destination {
    pub service_id: u32,
    pub protocol: Protocol,
    /// Steered for fork pods' connects only (`STEERED_FORK_SOURCES_ONLY`).
    pub fork_sources_only: bool,
}

/// Where requests with one routing key go for one service.
#[derive(Debug, Serialize)]
pub struct ForkTarget {
    /// The sandbox that forks the service.
    pub sandbox: Arc<str>,
    /// Ready endpoints of the fork for any destination port; empty (with no
    /// entry in `by_port`) means "fall back to baseline".
    pub endpoints: Vec<SocketAddr>,
    /// Ready endpoints by the destination port the client asked for.
    pub by_port: BTreeMap<u16, Vec<SocketAddr>>,
    #[serde(skip)]
    next: AtomicUsize,
}

impl ForkTarget {
    pub fn new(
        sandbox: Arc<str>,
        endpoints: Vec<SocketAddr>,
        by_port: BTreeMap<u16, Vec<SocketAddr>>,
    ) -> Self {
        Self {
            sandbox,
            endpoints,
            by_port,
            next: AtomicUsize::new(0),
        }
    }

    /// The endpoints for a request to `port`, and the one the next request
    /// would get, without moving the round-robin cursor (for `explain`).
    pub fn peek(&self, port: u16) -> (&[SocketAddr], Option<SocketAddr>) {
        let endpoints = self.by_port.get(&port).unwrap_or(&self.endpoints);
        let next = (!endpoints.is_empty())
            .then(|| {
                endpoints
                    .get(self.next.load(Ordering::Relaxed) % endpoints.len())
                    .copied()
            })
            .flatten();
        (endpoints, next)
    }

    /// The next endpoint for a request to `port`, round robin; `None` when
    /// the fork has none ready.
    pub fn pick(&self, port: u16) -> Option<SocketAddr> {
        let endpoints = self.by_port.get(&port).unwrap_or(&self.endpoints);
        if endpoints.is_empty() {
            return None;
        }
        let index = self.next.fetch_add(1, Ordering::Relaxed) % endpoints.len();
        endpoints.get(index).copied()
    }
}

/// Everything the data path needs, as plain data.
#[derive(Debug, Default, Serialize)]
pub struct RouteSnapshot {
    /// Services by id.
    pub services: BTreeMap<u32, Service>,
    /// Steered destinations (address:port) and the service each belongs to.
    pub destinations: BTreeMap<SocketAddr, Destination>,
    /// Routing key -> service id -> fork target. Route-group keys are
    /// expanded here too, so a lookup never walks a group.
    pub routes: HashMap<String, HashMap<u32, Arc<ForkTarget>>>,
    /// Sandbox names by routing key, and route groups (for the CLI and metrics).
    pub sandbox_keys: BTreeMap<String, String>,
    pub route_groups: BTreeMap<String, Vec<String>>,
    /// Route group names by routing key.
    pub group_keys: BTreeMap<String, String>,
    /// Sandboxes with fork pods on this node: their cgroups and keyless
    /// forked destinations, for the fork programs.
    pub fork_pods: BTreeMap<Arc<str>, ForkPods>,
    /// By sandbox id (`OrigDst::source_sandbox`): the key its fork pods'
    /// requests inherit.
    pub inherited: HashMap<u32, Inherited>,
}

/// Allocates service ids: the same namespace/name keeps its id across
/// reloads, so records already in the kernel still name the right service.
#[derive(Debug, Default)]
pub struct ServiceIds {
    ids: HashMap<String, u32>,
    next: u32,
    /// Sandbox ids, carried through the kernel the same way
    /// (`OrigDst::source_sandbox`): same rules, their own numbers.
    sandboxes: HashMap<String, u32>,
    next_sandbox: u32,
}

impl ServiceIds {
    pub fn id(&mut self, label: &str) -> u32 {
        Self::allocate(&mut self.ids, &mut self.next, label)
    }

    /// The id of sandbox `name`; never 0, stable across reloads.
    pub fn sandbox_id(&mut self, name: &str) -> u32 {
        Self::allocate(&mut self.sandboxes, &mut self.next_sandbox, name)
    }

    fn allocate(ids: &mut HashMap<String, u32>, next: &mut u32, name: &str) -> u32 {
        if let Some(id) = ids.get(name) {
            return *id;
        }
        *next = next.saturating_add(1);
        ids.insert(name.to_owned(), *next);
        *next
    }
}

/// The key a fork pod's requests without one inherit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Inherited {
    pub sandbox: Arc<str>,
    pub key: Arc<str>,
}

impl RouteSnapshot {
    /// Builds a snapshot from a validated routes file.
    pub fn from_file(file: &RoutesFile, ids: &mut ServiceIds) -> Self {
        Self::build(&RouteInput::from(file), ids)
    }

    /// Builds a snapshot from a route source's output.
    pub fn build(input: &RouteInput, ids: &mut ServiceIds) -> Self {
        let mut snapshot = Self::default();
        let mut by_label = HashMap::new();
        for spec in &input.services {
            let label: Arc<str> = spec.label().into();
            let id = ids.id(&label);
            by_label.insert(Arc::clone(&label), id);
            snapshot.services.insert(
                id,
                Service {
                    id,
                    namespace: spec.namespace.clone(),
                    name: spec.name.clone(),
                    label,
                },
            );
            for (destination, protocol) in &spec.destinations {
                snapshot.destinations.insert(
                    *destination,
                    Destination {
                        service_id: id,
                        protocol: *protocol,
                        fork_sources_only: spec.fork_sources_only,
                    },
                );
            }
        }

        // Forks of each sandbox, by service id.
        let mut forks_by_sandbox: HashMap<&str, HashMap<u32, Arc<ForkTarget>>> = HashMap::new();
        for sandbox in &input.sandboxes {
            let name: Arc<str> = sandbox.name.as_str().into();
            let forks = forks_by_sandbox.entry(sandbox.name.as_str()).or_default();
            for fork in &sandbox.forks {
                if let Some(id) = by_label.get(fork.service.as_str()) {
                    let target = ForkTarget::new(
                        Arc::clone(&name),
                        fork.endpoints.clone(),
                        fork.by_port.clone(),
                    );
                    forks.insert(*id, Arc::new(target));
                }
            }
            snapshot
                .sandbox_keys
                .insert(sandbox.routing_key.clone(), sandbox.name.clone());
            snapshot
                .routes
                .insert(sandbox.routing_key.clone(), forks.clone());
        }
        // A group's key routes each service to the first member that forks it.
        for group in &input.groups {
            let mut routes: HashMap<u32, Arc<ForkTarget>> = HashMap::new();
            for member in &group.sandboxes {
                for (id, target) in forks_by_sandbox.get(member.as_str()).into_iter().flatten() {
                    routes.entry(*id).or_insert_with(|| Arc::clone(target));
                }
            }
            snapshot
                .route_groups
                .insert(group.name.clone(), group.sandboxes.clone());
            snapshot.routes.insert(group.routing_key.clone(), routes);
        }
        snapshot.fork_pods = fork_pods(input, ids);
        for sandbox in input.sandboxes.iter().filter(|s| s.inherit_key) {
            snapshot.inherited.insert(
                ids.sandbox_id(&sandbox.name),
                Inherited {
                    sandbox: sandbox.name.as_str().into(),
                    key: sandbox.routing_key.as_str().into(),
                },
            );
        }
        snapshot
    }

    /// The `STEERED` map entries this snapshot calls for.
    pub fn steered_entries(&self) -> BTreeMap<SockKey, Steered> {
        self.destinations
            .iter()
            .map(|(dst, d)| {
                (
                    SockKey::new(*dst),
                    Steered {
                        service_id: d.service_id,
                        flags: if d.fork_sources_only {
                            STEERED_FORK_SOURCES_ONLY
                        } else {
                            0
                        },
                    },
                )
            })
            .collect()
    }

    pub fn service(&self, id: u32) -> Option<&Service> {
        self.services.get(&id)
    }

    /// A service by `namespace/name`.
    pub fn service_named(&self, label: &str) -> Option<&Service> {
        self.services.values().find(|s| &*s.label == label)
    }

    /// Counts for the `detour_routes{kind}` gauge.
    pub fn counts(&self) -> [(&'static str, usize); 5] {
        let forks = self.routes.values().map(HashMap::len).sum();
        [
            ("services", self.services.len()),
            ("destinations", self.destinations.len()),
            ("sandboxes", self.sandbox_keys.len()),
            ("route_groups", self.route_groups.len()),
            ("routes", forks),
        ]
    }
}
