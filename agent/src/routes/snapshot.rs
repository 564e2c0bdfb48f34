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
}

impl ServiceIds {
    pub fn id(&mut self, label: &str) -> u32 {
        if let Some(id) = self.ids.get(label) {
            return *id;
        }
        self.next = self.next.saturating_add(1);
        self.ids.insert(label.to_owned(), self.next);
        self.next
    }
}

/// The id that marks sandbox `name`'s fork pods' connects
/// (`OrigDst::source_sandbox`): a hash of the name (FNV-1a, folded to 32
/// bits, never 0), so that every agent, of any version, numbers a sandbox
/// alike; an old agent's records read the same in its successor.
pub fn sandbox_id(name: &str) -> u32 {
    use std::hash::Hasher;
    let mut hasher = fnv::FnvHasher::default();
    hasher.write(name.as_bytes());
    let hash = hasher.finish();
    let folded = (hash ^ (hash >> 32)) as u32;
    folded.max(1)
}

/// The ids of the sandboxes whose fork pods' requests inherit their key:
/// those that lend it, less any two whose ids collide (neither inherits:
/// a mark must name one sandbox).
pub fn inheriting(input: &RouteInput) -> HashMap<&str, u32> {
    inheriting_by(input, sandbox_id)
}

fn inheriting_by(input: &RouteInput, id_of: impl Fn(&str) -> u32) -> HashMap<&str, u32> {
    let mut by_id: HashMap<u32, Vec<&str>> = HashMap::new();
    for sandbox in input.sandboxes.iter().filter(|s| s.inherit_key) {
        by_id
            .entry(id_of(&sandbox.name))
            .or_default()
            .push(&sandbox.name);
    }
    by_id
        .into_iter()
        .filter(|(_, names)| names.len() == 1)
        .map(|(id, names)| (names[0], id))
        .collect()
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
        let inheriting = inheriting(input);
        snapshot.fork_pods = fork_pods(input, &inheriting);
        for sandbox in &input.sandboxes {
            if let Some(id) = inheriting.get(sandbox.name.as_str()) {
                snapshot.inherited.insert(
                    *id,
                    Inherited {
                        sandbox: sandbox.name.as_str().into(),
                        key: sandbox.routing_key.as_str().into(),
                    },
                );
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::SandboxInput;

    fn sandbox(name: &str, inherit_key: bool) -> SandboxInput {
        SandboxInput {
            name: name.into(),
            routing_key: name.into(),
            forks: vec![],
            fork_pods: vec![],
            inherit_key,
        }
    }

    #[test]
    fn a_sandboxs_id_is_the_same_in_every_agent_and_version() {
        // Pinned: a successor agent must read its predecessor's marks.
        // FNV-1a 64 of the name, its halves xored: 0xd81a1604.
        assert_eq!(sandbox_id("default/feature-x"), 0xd81a_1604);
        assert_ne!(
            sandbox_id("default/feature-y"),
            sandbox_id("default/feature-x")
        );
    }

    #[test]
    fn sandboxes_whose_ids_collide_lend_no_key_and_opted_out_ones_none() {
        let input = RouteInput {
            sandboxes: vec![
                sandbox("a", true),
                sandbox("b", true),
                sandbox("c", true),
                sandbox("d", false),
            ],
            ..RouteInput::default()
        };
        let colliding = |name: &str| if name == "c" { 7 } else { 5 };
        let ids = inheriting_by(&input, colliding);
        assert_eq!(
            ids,
            HashMap::from([("c", 7)]),
            "a and b collide; d opted out"
        );
    }
}
