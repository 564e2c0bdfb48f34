//! Route computation from cluster state: watcher events are applied to real
//! reflector stores (as the watch streams would), then translated.

use std::net::SocketAddr;

use k8s_openapi::{
    api::{
        core::v1::{Pod, Service},
        discovery::v1::EndpointSlice,
    },
    jiff::Timestamp,
};
use kube::runtime::{
    reflector::{self, store::Writer},
    watcher::Event,
};
use serde_json::json;

use super::{
    crd::{RouteGroup, Sandbox},
    translate::{ClusterState, translate},
};
use crate::routes::{Decision, Protocol, RouteSnapshot, ServiceIds};

mod fork_pods;

fn object<K: serde::de::DeserializeOwned>(value: serde_json::Value) -> K {
    serde_json::from_value(value).expect("valid object")
}

fn service(name: &str, cluster_ip: &str) -> Service {
    object(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"clusterIP": cluster_ip, "clusterIPs": [cluster_ip], "ports": [
            {"name": "http", "port": 80, "targetPort": "web", "protocol": "TCP", "appProtocol": "http"},
            {"name": "dns", "port": 53, "protocol": "UDP"}
        ]}
    }))
}

fn slice(service: &str, pod_ip: &str) -> EndpointSlice {
    object(json!({
        "metadata": {"name": format!("{service}-abc"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [pod_ip], "conditions": {"ready": true}}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
    }))
}

/// The node the tests' agent runs on.
const NODE: &str = "node-a";

fn fork_pod(name: &str, ip: &str, version: &str, ready: bool) -> Pod {
    object(json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
                     "labels": {"app": "reviews", "version": version, "detour.dev/fork": "true"}},
        "spec": {"nodeName": NODE,
                 "containers": [{"name": "app", "ports": [{"name": "web", "containerPort": 9090}]}]},
        "status": {"podIP": ip, "phase": "Running",
                   "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
    }))
}

fn sandbox(name: &str, key: &str, version: &str, created: &str, ttl: Option<&str>) -> Sandbox {
    let mut value = json!({
        "apiVersion": "detour.dev/v1alpha1", "kind": "Sandbox",
        "metadata": {"name": name, "namespace": "default", "creationTimestamp": created,
                     "labels": {"team": "a"}},
        "spec": {"routingKey": key, "forks": [
            {"service": {"name": "reviews"}, "selector": {"matchLabels": {"app": "reviews", "version": version}}}
        ]}
    });
    if let Some(ttl) = ttl {
        value["spec"]["ttl"] = json!(ttl);
    }
    object(value)
}

fn group(key: &str, names: &[&str], selector: bool) -> RouteGroup {
    let mut value = json!({
        "apiVersion": "detour.dev/v1alpha1", "kind": "RouteGroup",
        "metadata": {"name": "team", "namespace": "default", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"routingKey": key, "sandboxes": names}
    });
    if selector {
        value["spec"]["sandboxSelector"] = json!({"matchLabels": {"team": "a"}});
    }
    object(value)
}

/// Reflector stores fed by watcher events.
struct Cluster {
    services: (reflector::Store<Service>, Writer<Service>),
    slices: (reflector::Store<EndpointSlice>, Writer<EndpointSlice>),
    pods: (reflector::Store<Pod>, Writer<Pod>),
    sandboxes: (reflector::Store<Sandbox>, Writer<Sandbox>),
    groups: (reflector::Store<RouteGroup>, Writer<RouteGroup>),
}

impl Cluster {
    fn new() -> Self {
        let mut cluster = Self {
            services: reflector::store(),
            slices: reflector::store(),
            pods: reflector::store(),
            sandboxes: reflector::store(),
            groups: reflector::store(),
        };
        cluster
            .services
            .1
            .apply_watcher_event(&Event::Apply(service("reviews", "10.96.0.20")));
        cluster
            .services
            .1
            .apply_watcher_event(&Event::Apply(service("ratings", "10.96.0.21")));
        cluster
            .slices
            .1
            .apply_watcher_event(&Event::Apply(slice("reviews", "10.1.0.5")));
        cluster
            .slices
            .1
            .apply_watcher_event(&Event::Apply(slice("ratings", "10.1.0.6")));
        cluster
            .pods
            .1
            .apply_watcher_event(&Event::Apply(fork_pod("fork-x", "10.2.0.1", "x", true)));
        cluster
    }

    fn state(&self) -> ClusterState {
        ClusterState {
            services: self.services.0.state(),
            slices: self.slices.0.state(),
            pods: self.pods.0.state(),
            sandboxes: self.sandboxes.0.state(),
            groups: self.groups.0.state(),
            node_name: Some(NODE.to_owned()),
        }
    }

    fn snapshot_at(&self, now: &str) -> (RouteSnapshot, Vec<String>) {
        let translation = translate(&self.state(), now.parse().expect("time"));
        (
            RouteSnapshot::build(&translation.input, &mut ServiceIds::default()),
            translation.problems,
        )
    }

    fn snapshot(&self) -> RouteSnapshot {
        self.snapshot_at("2026-06-01T00:00:00Z").0
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

/// Where a keyed request to reviews goes, by destination port.
fn routed(snapshot: &RouteSnapshot, port: u16, key: &str) -> String {
    let id = snapshot
        .services
        .values()
        .find(|s| s.name == "reviews")
        .map_or(0, |s| s.id);
    match snapshot.decide(id, port, Some(key)) {
        Decision::Fork { sandbox, endpoint } => format!("{sandbox} {endpoint}"),
        Decision::ForkNotReady { .. } => "fallback".into(),
        Decision::Baseline { .. } => "baseline".into(),
    }
}

#[test]
fn only_forked_services_are_steered_at_cluster_ip_and_pod_ips() {
    let mut cluster = Cluster::new();
    assert!(
        cluster.snapshot().destinations.is_empty(),
        "no sandbox, nothing steered"
    );

    cluster
        .sandboxes
        .1
        .apply_watcher_event(&Event::Apply(sandbox(
            "x",
            "key-x",
            "x",
            "2026-01-01T00:00:00Z",
            None,
        )));
    let snapshot = cluster.snapshot();
    let steered = |fork_pods_only: bool| -> Vec<_> {
        snapshot
            .destinations
            .iter()
            .filter(|(_, d)| d.fork_sources_only == fork_pods_only)
            .map(|(a, d)| (*a, d.protocol))
            .collect()
    };
    assert_eq!(
        steered(false),
        [
            (addr("10.1.0.5:8080"), Protocol::Http),
            (addr("10.96.0.20:80"), Protocol::Http)
        ],
        "TCP ports only; ratings not steered"
    );
    assert_eq!(
        steered(true),
        [
            (addr("10.1.0.6:8080"), Protocol::Http),
            (addr("10.96.0.21:80"), Protocol::Http)
        ],
        "ratings (HTTP, forked by nobody) steered for the fork pod on this node only"
    );
    assert_eq!(
        routed(&snapshot, 80, "key-x"),
        "default/x 10.2.0.1:9090",
        "named targetPort resolved on the fork pod"
    );
    assert_eq!(
        routed(&snapshot, 8080, "key-x"),
        "default/x 10.2.0.1:9090",
        "a pod-IP connection too"
    );
    assert_eq!(routed(&snapshot, 80, "other"), "baseline");
}

#[test]
fn fork_pods_becoming_unready_and_ready_change_the_endpoints() {
    let mut cluster = Cluster::new();
    cluster
        .sandboxes
        .1
        .apply_watcher_event(&Event::Apply(sandbox(
            "x",
            "key-x",
            "x",
            "2026-01-01T00:00:00Z",
            None,
        )));
    cluster
        .pods
        .1
        .apply_watcher_event(&Event::Apply(fork_pod("fork-x", "10.2.0.1", "x", false)));
    assert_eq!(
        routed(&cluster.snapshot(), 80, "key-x"),
        "fallback",
        "a fork with no ready pod falls back"
    );
    cluster
        .pods
        .1
        .apply_watcher_event(&Event::Apply(fork_pod("fork-x", "10.2.0.1", "x", true)));
    assert_eq!(
        routed(&cluster.snapshot(), 80, "key-x"),
        "default/x 10.2.0.1:9090"
    );
    cluster
        .pods
        .1
        .apply_watcher_event(&Event::Delete(fork_pod("fork-x", "10.2.0.1", "x", true)));
    assert_eq!(routed(&cluster.snapshot(), 80, "key-x"), "fallback");
}

#[test]
fn deleting_the_sandbox_withdraws_its_routes_and_steering() {
    let mut cluster = Cluster::new();
    let x = sandbox("x", "key-x", "x", "2026-01-01T00:00:00Z", None);
    cluster
        .sandboxes
        .1
        .apply_watcher_event(&Event::Apply(x.clone()));
    assert!(!cluster.snapshot().destinations.is_empty());
    cluster.sandboxes.1.apply_watcher_event(&Event::Delete(x));
    let snapshot = cluster.snapshot();
    assert!(snapshot.destinations.is_empty() && snapshot.routes.is_empty());
}

#[test]
fn a_relist_replaces_the_store_contents() {
    let mut cluster = Cluster::new();
    cluster
        .sandboxes
        .1
        .apply_watcher_event(&Event::Apply(sandbox(
            "x",
            "key-x",
            "x",
            "2026-01-01T00:00:00Z",
            None,
        )));
    // The watch was lost; the re-list no longer has x but has y.
    cluster.sandboxes.1.apply_watcher_event(&Event::Init);
    cluster
        .sandboxes
        .1
        .apply_watcher_event(&Event::InitApply(sandbox(
            "y",
            "key-y",
            "x",
            "2026-01-02T00:00:00Z",
            None,
        )));
    cluster.sandboxes.1.apply_watcher_event(&Event::InitDone);
    let snapshot = cluster.snapshot();
    assert_eq!(routed(&snapshot, 80, "key-x"), "baseline");
    assert_eq!(routed(&snapshot, 80, "key-y"), "default/y 10.2.0.1:9090");
}

#[test]
fn the_older_sandbox_keeps_a_contested_key_and_the_conflict_is_reported() {
    let mut cluster = Cluster::new();
    cluster
        .pods
        .1
        .apply_watcher_event(&Event::Apply(fork_pod("fork-y", "10.2.0.2", "y", true)));
    cluster
        .sandboxes
        .1
        .apply_watcher_event(&Event::Apply(sandbox(
            "newer",
            "shared",
            "y",
            "2026-02-01T00:00:00Z",
            None,
        )));
    cluster
        .sandboxes
        .1
        .apply_watcher_event(&Event::Apply(sandbox(
            "older",
            "shared",
            "x",
            "2026-01-01T00:00:00Z",
            None,
        )));
    let (snapshot, problems) = cluster.snapshot_at("2026-06-01T00:00:00Z");
    assert_eq!(
        routed(&snapshot, 80, "shared"),
        "default/older 10.2.0.1:9090"
    );
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("default/newer") && problems[0].contains("default/older"),
        "{problems:?}"
    );
}

#[test]
fn ttl_expiry_withdraws_routes_and_is_scheduled() {
    let mut cluster = Cluster::new();
    cluster
        .sandboxes
        .1
        .apply_watcher_event(&Event::Apply(sandbox(
            "x",
            "key-x",
            "x",
            "2026-01-01T00:00:00Z",
            Some("2h"),
        )));
    let before = translate(
        &cluster.state(),
        "2026-01-01T01:00:00Z".parse().expect("time"),
    );
    assert_eq!(
        before.next_expiry,
        Some("2026-01-01T02:00:00Z".parse::<Timestamp>().expect("time"))
    );
    assert_eq!(
        routed(&cluster.snapshot_at("2026-01-01T01:59:59Z").0, 80, "key-x"),
        "default/x 10.2.0.1:9090"
    );
    let (after, _) = cluster.snapshot_at("2026-01-01T02:00:00Z");
    assert_eq!(routed(&after, 80, "key-x"), "baseline");
    assert!(after.destinations.is_empty());

    cluster
        .sandboxes
        .1
        .apply_watcher_event(&Event::Apply(sandbox(
            "x",
            "key-x",
            "x",
            "2026-01-01T00:00:00Z",
            Some("soon"),
        )));
    let (snapshot, problems) = cluster.snapshot_at("2026-01-01T01:00:00Z");
    assert_eq!(
        routed(&snapshot, 80, "key-x"),
        "baseline",
        "an unparseable ttl withdraws the routes"
    );
    assert!(problems[0].contains("spec.ttl"), "{problems:?}");
}

#[test]
fn route_group_members_change_with_names_and_selector() {
    let mut cluster = Cluster::new();
    cluster
        .pods
        .1
        .apply_watcher_event(&Event::Apply(fork_pod("fork-y", "10.2.0.2", "y", true)));
    cluster
        .sandboxes
        .1
        .apply_watcher_event(&Event::Apply(sandbox(
            "x",
            "key-x",
            "x",
            "2026-01-01T00:00:00Z",
            None,
        )));
    cluster
        .sandboxes
        .1
        .apply_watcher_event(&Event::Apply(sandbox(
            "y",
            "key-y",
            "y",
            "2026-01-02T00:00:00Z",
            None,
        )));
    cluster
        .groups
        .1
        .apply_watcher_event(&Event::Apply(group("team", &["y", "x"], false)));
    assert_eq!(
        routed(&cluster.snapshot(), 80, "team"),
        "default/y 10.2.0.2:9090",
        "first named member"
    );
    cluster
        .groups
        .1
        .apply_watcher_event(&Event::Apply(group("team", &["x"], false)));
    assert_eq!(
        routed(&cluster.snapshot(), 80, "team"),
        "default/x 10.2.0.1:9090"
    );
    cluster
        .groups
        .1
        .apply_watcher_event(&Event::Apply(group("team", &[], true)));
    assert_eq!(
        routed(&cluster.snapshot(), 80, "team"),
        "default/x 10.2.0.1:9090",
        "selector members, oldest first"
    );
    cluster
        .groups
        .1
        .apply_watcher_event(&Event::Apply(group("team", &["missing"], false)));
    assert_eq!(routed(&cluster.snapshot(), 80, "team"), "baseline");
}

#[test]
fn sandbox_ports_override_the_target_port() {
    let mut cluster = Cluster::new();
    let mut x = sandbox("x", "key-x", "x", "2026-01-01T00:00:00Z", None);
    x.spec.forks[0].ports = vec![super::crd::ForkPort {
        port: 80,
        target_port: 7070,
    }];
    cluster.sandboxes.1.apply_watcher_event(&Event::Apply(x));
    assert_eq!(
        routed(&cluster.snapshot(), 80, "key-x"),
        "default/x 10.2.0.1:7070"
    );
}

#[test]
fn a_fork_with_an_invalid_selector_is_ignored_and_reported() {
    let mut cluster = Cluster::new();
    let mut x = sandbox("x", "key-x", "x", "2026-01-01T00:00:00Z", None);
    x.spec.forks[0].selector = object(
        json!({"matchExpressions": [{"key": "app", "operator": "Sometimes", "values": ["a"]}]}),
    );
    cluster.sandboxes.1.apply_watcher_event(&Event::Apply(x));
    let (snapshot, problems) = cluster.snapshot_at("2026-06-01T00:00:00Z");
    assert_eq!(routed(&snapshot, 80, "key-x"), "baseline");
    assert!(
        snapshot.destinations.is_empty(),
        "a fork that cannot select pods steers nothing"
    );
    assert!(
        problems.iter().any(|p| p.contains("invalid selector")),
        "{problems:?}"
    );
}

#[test]
fn a_service_with_hundreds_of_ports_is_steered_on_each() {
    let mut cluster = Cluster::new();
    let ports: Vec<serde_json::Value> = (1..=300)
        .map(|p| json!({"name": format!("p{p}"), "port": 1000 + p, "targetPort": 2000 + p, "protocol": "TCP"}))
        .collect();
    cluster
        .services
        .1
        .apply_watcher_event(&Event::Apply(object::<Service>(json!({
            "metadata": {"name": "reviews", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"], "ports": ports}
        }))));
    cluster
        .sandboxes
        .1
        .apply_watcher_event(&Event::Apply(sandbox(
            "x",
            "key-x",
            "x",
            "2026-01-01T00:00:00Z",
            None,
        )));
    let snapshot = cluster.snapshot();
    // 300 ClusterIP ports, and the baseline pod at its EndpointSlice's port
    // (ratings, steered for the fork pod only, aside).
    let for_everyone = snapshot
        .destinations
        .values()
        .filter(|d| !d.fork_sources_only);
    assert_eq!(for_everyone.count(), 301);
    assert_eq!(routed(&snapshot, 1001, "key-x"), "default/x 10.2.0.1:2001");
    assert_eq!(routed(&snapshot, 1300, "key-x"), "default/x 10.2.0.1:2300");
}

#[test]
fn an_always_steered_service_is_steered_without_a_fork() {
    let mut cluster = Cluster::new();
    let mut ratings = service("ratings", "10.96.0.21");
    ratings.metadata.annotations = Some(
        [("detour.dev/always-steered".to_owned(), "True".to_owned())]
            .into_iter()
            .collect(),
    );
    cluster
        .services
        .1
        .apply_watcher_event(&Event::Apply(ratings));
    let snapshot = cluster.snapshot();
    let steered: Vec<SocketAddr> = snapshot.destinations.keys().copied().collect();
    assert_eq!(
        steered,
        [addr("10.1.0.6:8080"), addr("10.96.0.21:80")],
        "ratings is steered with no sandbox; reviews (not annotated) is not"
    );
    let id = snapshot
        .services
        .values()
        .find(|s| s.name == "ratings")
        .map_or(0, |s| s.id);
    assert_eq!(
        snapshot.decide(id, 80, Some("key-x")),
        crate::routes::Decision::Baseline {
            reason: crate::routes::Reason::NoRouteForKey
        },
        "steered, but every request goes to baseline until a sandbox forks it"
    );
}
