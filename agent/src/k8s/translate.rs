//! Cluster state -> [`RouteInput`]: a pure function, so it is tested by
//! feeding objects (or watcher events into reflector stores) and asserting
//! the routes, without a cluster.
//!
//! Rules:
//! - Sandboxes and RouteGroups claim routing keys; the oldest claimant of a
//!   key wins (creation time, then namespace/name), later ones are ignored
//!   and reported. Expired Sandboxes (`creationTimestamp + ttl` passed) and
//!   ones with an unparseable `ttl` claim nothing.
//! - A forked Service is steered at its ClusterIPs (Service ports) and at its
//!   baseline pod IPs from EndpointSlices (slice ports), so that direct
//!   pod-IP and headless clients are covered too. A Service no live Sandbox
//!   forks is not steered at all, unless it is annotated
//!   `detour.dev/always-steered: "true"`.
//! - A fork's endpoints are its ready pods (selector match, `Ready=True`,
//!   a pod IP, not terminating) at the fork port of each Service port: the
//!   Sandbox's `ports` entry, else the Service's `targetPort` (a named one is
//!   resolved on each fork pod's containers).
//! - A Sandbox's fork pods on this node (`--node-name`), ready or not, are
//!   named by UID for the fork programs (docs/sandboxes.md). While some
//!   inherit a key, the HTTP ports of every Service no Sandbox forks are
//!   steered for fork pods only.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use k8s_openapi::{
    api::{core::v1::Service, discovery::v1::EndpointSlice},
    jiff::{SignedDuration, Timestamp},
};
use kube::ResourceExt;

use super::{
    crd::{ALWAYS_STEERED_ANNOTATION, RouteGroup, Sandbox},
    endpoints::{ForkPods, fork_source_destinations, service_destinations},
};
use crate::{
    http::routing_key::is_valid_routing_key,
    routes::{ForkInput, GroupInput, RouteInput, SandboxInput, ServiceInput},
};

/// The contents of the reflector stores at one moment.
#[derive(Debug, Default, Clone)]
pub struct ClusterState {
    pub services: Vec<Arc<Service>>,
    pub slices: Vec<Arc<EndpointSlice>>,
    pub pods: Vec<Arc<k8s_openapi::api::core::v1::Pod>>,
    pub sandboxes: Vec<Arc<Sandbox>>,
    pub groups: Vec<Arc<RouteGroup>>,
    /// The node the agent runs on (`--node-name`): its Sandboxes' fork pods
    /// there are known to the data path. `None`: none are.
    pub node_name: Option<String>,
}

/// The routes, what was wrong in the cluster's objects, and when the result
/// changes by itself next (a Sandbox's TTL running out).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Translation {
    pub input: RouteInput,
    pub problems: Vec<String>,
    pub next_expiry: Option<Timestamp>,
}

/// `namespace/name` of any object.
pub fn label_of<K: ResourceExt>(object: &K) -> String {
    format!(
        "{}/{}",
        object.namespace().unwrap_or_default(),
        object.name_any()
    )
}

fn created<K: ResourceExt>(object: &K) -> Timestamp {
    object
        .creation_timestamp()
        .map_or(Timestamp::UNIX_EPOCH, |t| t.0)
}

enum Claimant<'a> {
    Sandbox(&'a Sandbox),
    Group(&'a RouteGroup),
}

pub fn translate(state: &ClusterState, now: Timestamp) -> Translation {
    let mut out = Translation::default();

    // Key claimants, oldest first.
    let mut claimants: Vec<(Timestamp, String, Claimant<'_>)> = Vec::new();
    for sandbox in &state.sandboxes {
        match expiry(sandbox) {
            Err(problem) => out.problems.push(problem),
            Ok(Some(at)) if at <= now => {}
            Ok(expires) => {
                if let Some(at) = expires {
                    out.next_expiry = Some(out.next_expiry.map_or(at, |next| next.min(at)));
                }
                claimants.push((
                    created(sandbox.as_ref()),
                    label_of(sandbox.as_ref()),
                    Claimant::Sandbox(sandbox),
                ));
            }
        }
    }
    for group in &state.groups {
        claimants.push((
            created(group.as_ref()),
            label_of(group.as_ref()),
            Claimant::Group(group),
        ));
    }
    claimants.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));

    let mut owners: BTreeMap<&str, &str> = BTreeMap::new();
    let mut live_sandboxes: Vec<&Sandbox> = Vec::new();
    let mut live_groups: Vec<&RouteGroup> = Vec::new();
    for (_, name, claimant) in &claimants {
        let key = match claimant {
            Claimant::Sandbox(s) => s.spec.routing_key.as_str(),
            Claimant::Group(g) => g.spec.routing_key.as_str(),
        };
        if !is_valid_routing_key(key) {
            out.problems
                .push(format!("{name}: routing key {key:?} is not valid; ignored"));
            continue;
        }
        if let Some(owner) = owners.get(key) {
            out.problems.push(format!(
                "{name}: routing key {key:?} already belongs to {owner} (older); ignored"
            ));
            continue;
        }
        owners.insert(key, name);
        match claimant {
            Claimant::Sandbox(s) => live_sandboxes.push(s),
            Claimant::Group(g) => live_groups.push(g),
        }
    }

    // Services that some live sandbox forks, and the forks.
    let fork_pods = ForkPods::new(&state.pods);
    let mut forked: BTreeMap<String, &Service> = BTreeMap::new();
    for sandbox in &live_sandboxes {
        let namespace = sandbox.namespace().unwrap_or_default();
        let mut forks = Vec::new();
        for fork in &sandbox.spec.forks {
            let service_ns = fork
                .service
                .namespace
                .clone()
                .unwrap_or_else(|| namespace.clone());
            let service_label = format!("{service_ns}/{}", fork.service.name);
            let Some(service) = state
                .services
                .iter()
                .find(|s| label_of(s.as_ref()) == service_label)
            else {
                out.problems.push(format!(
                    "{}: service {service_label} not found; fork ignored",
                    label_of(*sandbox)
                ));
                continue;
            };
            let by_port = match fork_pods.endpoints(
                (&namespace, &sandbox.name_any()),
                fork,
                service,
                &state.slices,
            ) {
                Ok(by_port) => by_port,
                Err(problem) => {
                    out.problems
                        .push(format!("{}: {problem}", label_of(*sandbox)));
                    continue;
                }
            };
            let pods = state
                .node_name
                .as_ref()
                .and_then(|node| {
                    fork_pods
                        .on_node((&namespace, &sandbox.name_any()), fork, service, node)
                        .ok()
                })
                .unwrap_or_default();
            forked.insert(service_label.clone(), service);
            forks.push(ForkInput {
                service: service_label,
                endpoints: Vec::new(),
                by_port,
                pods,
            });
        }
        out.input.sandboxes.push(SandboxInput {
            name: label_of(*sandbox),
            routing_key: sandbox.spec.routing_key.clone(),
            forks,
            fork_pods: Vec::new(),
            inherit_key: sandbox.spec.inherit_key.unwrap_or(true),
        });
    }
    // Always-steered Services, forked or not.
    for service in &state.services {
        if always_steered(service) {
            forked
                .entry(label_of(service.as_ref()))
                .or_insert(service.as_ref());
        }
    }
    for (label, service) in forked {
        let (namespace, name) = label.split_once('/').unwrap_or(("", &label));
        out.input.services.push(ServiceInput {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            destinations: service_destinations(service, &state.slices),
            fork_sources_only: false,
        });
    }
    // With fork pods on this node whose requests inherit a key, the HTTP
    // and Kafka ports of every other Service are steered for fork pods only.
    let inheriting = out
        .input
        .sandboxes
        .iter()
        .any(|s| s.inherit_key && s.has_fork_pods());
    if inheriting {
        let steered: BTreeSet<String> =
            out.input.services.iter().map(ServiceInput::label).collect();
        for service in &state.services {
            let label = label_of(service.as_ref());
            let destinations = fork_source_destinations(service, &state.slices);
            if steered.contains(&label) || destinations.is_empty() {
                continue;
            }
            let (namespace, name) = label.split_once('/').unwrap_or(("", &label));
            out.input.services.push(ServiceInput {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                destinations,
                fork_sources_only: true,
            });
        }
    }
    for group in live_groups {
        out.input.groups.push(group_input(group, &live_sandboxes));
    }
    out
}

/// `detour.dev/always-steered: "true"` (any case).
fn always_steered(service: &Service) -> bool {
    service
        .annotations()
        .get(ALWAYS_STEERED_ANNOTATION)
        .is_some_and(|value| value.trim().eq_ignore_ascii_case("true"))
}

/// When a Sandbox's routes run out: `Ok(None)` without a TTL.
fn expiry(sandbox: &Sandbox) -> Result<Option<Timestamp>, String> {
    let Some(ttl) = &sandbox.spec.ttl else {
        return Ok(None);
    };
    let duration = humantime::parse_duration(ttl).map_err(|e| {
        format!(
            "{}: spec.ttl {ttl:?} is not a duration ({e}); its routes are withdrawn",
            label_of(sandbox)
        )
    })?;
    let duration = SignedDuration::try_from(duration)
        .map_err(|e| format!("{}: spec.ttl {ttl:?}: {e}", label_of(sandbox)))?;
    Ok(Some(
        created(sandbox)
            .saturating_add(duration)
            .unwrap_or(Timestamp::MAX),
    ))
}

/// Members: named ones in order, then selector matches oldest first; only
/// live Sandboxes of the group's namespace.
fn group_input(group: &RouteGroup, live: &[&Sandbox]) -> GroupInput {
    let namespace = group.namespace().unwrap_or_default();
    let in_namespace = || {
        live.iter()
            .filter(|s| s.namespace().as_deref() == Some(namespace.as_str()))
    };
    let mut members: Vec<String> = group
        .spec
        .sandboxes
        .iter()
        .filter(|name| in_namespace().any(|s| &s.name_any() == *name))
        .map(|name| format!("{namespace}/{name}"))
        .collect();
    if let Some(selector) = &group.spec.sandbox_selector
        && let Ok(selector) = kube::core::Selector::try_from(selector.clone())
    {
        use kube::core::SelectorExt;
        for sandbox in in_namespace() {
            let name = label_of(*sandbox);
            if selector.matches(sandbox.labels()) && !members.contains(&name) {
                members.push(name);
            }
        }
    }
    GroupInput {
        name: label_of(group),
        routing_key: group.spec.routing_key.clone(),
        sandboxes: members,
    }
}
