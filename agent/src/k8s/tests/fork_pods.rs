//! A Sandbox's fork pods on the agent's node, named by UID for the fork
//! programs, each with the fork it belongs to: ready or not, never another
//! node's, never a finished pod's.

use kube::runtime::watcher::Event;
use serde_json::json;

use super::{Cluster, fork_pod, object, sandbox};
use crate::routes::ForkPod;

fn pods_of(cluster: &Cluster, sandbox: &str) -> Vec<ForkPod> {
    let translation = super::translate(
        &cluster.state(),
        "2026-01-01T00:00:00Z".parse().expect("time"),
    );
    translation
        .input
        .sandboxes
        .iter()
        .find(|s| s.name == sandbox)
        .map(|s| {
            assert!(s.fork_pods.is_empty(), "every pod belongs to its fork");
            s.forks.iter().flat_map(|f| f.pods.clone()).collect()
        })
        .unwrap_or_default()
}

fn pod(name: &str) -> ForkPod {
    ForkPod::Pod {
        name: format!("default/{name}"),
        uid: format!("uid-{name}"),
    }
}

#[test]
fn a_sandboxs_fork_pods_on_this_node_ready_or_not_are_named_by_uid() {
    let mut cluster = Cluster::new();
    cluster
        .sandboxes
        .1
        .apply_watcher_event(&Event::Apply(sandbox(
            "x",
            "x",
            "x",
            "2026-01-01T00:00:00Z",
            None,
        )));
    let starting = fork_pod("fork-x-starting", "10.2.0.2", "x", false);
    cluster.pods.1.apply_watcher_event(&Event::Apply(starting));
    let mut elsewhere = fork_pod("fork-x-elsewhere", "10.2.0.3", "x", true);
    elsewhere.spec.as_mut().expect("spec").node_name = Some("node-b".into());
    cluster.pods.1.apply_watcher_event(&Event::Apply(elsewhere));
    let finished: k8s_openapi::api::core::v1::Pod = object(json!({
        "metadata": {"name": "fork-x-done", "namespace": "default", "uid": "uid-fork-x-done",
                     "labels": {"app": "reviews", "version": "x", "detour.dev/fork": "true"}},
        "spec": {"nodeName": super::NODE, "containers": [{"name": "app"}]},
        "status": {"phase": "Failed"}
    }));
    cluster.pods.1.apply_watcher_event(&Event::Apply(finished));

    let mut pods = pods_of(&cluster, "default/x");
    pods.sort();
    assert_eq!(pods, [pod("fork-x"), pod("fork-x-starting")]);
}

#[test]
fn without_a_node_name_no_fork_pod_is_known() {
    let mut cluster = Cluster::new();
    cluster
        .sandboxes
        .1
        .apply_watcher_event(&Event::Apply(sandbox(
            "x",
            "x",
            "x",
            "2026-01-01T00:00:00Z",
            None,
        )));
    let mut state = cluster.state();
    state.node_name = None;
    let translation = super::translate(&state, "2026-01-01T00:00:00Z".parse().expect("time"));
    assert!(
        translation
            .input
            .sandboxes
            .iter()
            .all(|s| !s.has_fork_pods())
    );
}

#[test]
fn the_http_and_kafka_ports_of_unforked_services_are_steered_for_fork_pods_only() {
    let mut cluster = Cluster::new();
    cluster
        .sandboxes
        .1
        .apply_watcher_event(&Event::Apply(sandbox(
            "x",
            "x",
            "x",
            "2026-01-01T00:00:00Z",
            None,
        )));
    cluster
        .services
        .1
        .apply_watcher_event(&Event::Apply(object(json!({
            "metadata": {"name": "shop", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.30", "ports": [
                {"name": "db", "port": 5432, "appProtocol": "tcp"},
                {"name": "http-web", "port": 8080},
                {"name": "metrics", "port": 9090},
                {"name": "api", "port": 8443, "appProtocol": "kubernetes.io/h2c"},
                {"name": "broker", "port": 9092, "appProtocol": "kafka"}
            ]}
        }))));
    let fork_only = |cluster: &Cluster| -> Vec<(String, crate::routes::Protocol)> {
        let (snapshot, _) = cluster.snapshot_at("2026-01-01T00:00:00Z");
        snapshot
            .destinations
            .iter()
            .filter(|(addr, d)| d.fork_sources_only && addr.ip().to_string() == "10.96.0.30")
            .map(|(addr, d)| (addr.to_string(), d.protocol))
            .collect()
    };
    assert_eq!(
        fork_only(&cluster),
        [
            ("10.96.0.30:8080".to_owned(), crate::routes::Protocol::Auto),
            ("10.96.0.30:8443".to_owned(), crate::routes::Protocol::H2c),
            ("10.96.0.30:9092".to_owned(), crate::routes::Protocol::Kafka),
        ],
        "HTTP ports, declared or named so, and Kafka's; tcp and unnamed ports stay direct"
    );

    // No fork pod on this node: nothing is steered for fork pods.
    let mut elsewhere = fork_pod("fork-x", "10.2.0.1", "x", true);
    elsewhere.spec.as_mut().expect("spec").node_name = Some("node-b".into());
    cluster.pods.1.apply_watcher_event(&Event::Apply(elsewhere));
    assert!(fork_only(&cluster).is_empty());
}

#[test]
fn a_sandbox_that_opts_out_lends_no_key_and_steers_nothing_for_its_pods() {
    let mut cluster = Cluster::new();
    let mut opted_out = sandbox("x", "x", "x", "2026-01-01T00:00:00Z", None);
    opted_out.spec.inherit_key = Some(false);
    cluster
        .sandboxes
        .1
        .apply_watcher_event(&Event::Apply(opted_out));
    let (snapshot, _) = cluster.snapshot_at("2026-01-01T00:00:00Z");
    assert!(snapshot.inherited.is_empty());
    assert!(snapshot.destinations.values().all(|d| !d.fork_sources_only));
}
