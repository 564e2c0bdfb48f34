//! detour as users install it, on a real node: the image built by `cargo
//! xtask image`, `kubectl apply -k deploy/` unedited, the DaemonSet's pod
//! started by a real kubelet in containerd beside the real kube-proxy and
//! the CNI bridge, and pods of the test image (`tests/node-images/`)
//! calling a ClusterIP Service that a Sandbox forks.

mod cli;
mod coexistence;
mod controller;
mod helm;
mod lifecycle;
mod load;
mod network_policy;
mod setup;

use detour_tests::node::require_node;
use setup::{KEYED, assert_steers, cluster_ip, installed};

#[test]
fn the_installed_daemonset_steers_keyed_requests_from_a_pod_to_the_fork() {
    if !require_node() {
        return;
    }
    let node = installed();
    // Two controller replicas Ready, one of them leading.
    let replicas = node.kubectl(&[
        "-n",
        "detour",
        "get",
        "deployment/detour-controller",
        "-o",
        "jsonpath={.status.readyReplicas}",
    ]);
    assert_eq!(replicas, "2");
    let pods = node.kubectl(&[
        "-n",
        "detour",
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/component=controller",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    let leader = controller::leader(&node);
    assert!(
        pods.split_whitespace().any(|pod| pod == leader),
        "the Lease is held by a replica: {leader} of {pods}"
    );
    assert_steers(&node, 5);
    let grpc = format!("{}:9090", cluster_ip(&node));
    let output = node.kubectl(&[
        "exec",
        "client",
        "--",
        "grpc-probe",
        "-n",
        "4",
        "-H",
        KEYED,
        &grpc,
    ]);
    assert_eq!(
        output.matches("served-by reviews-v1-feature-x-").count(),
        4,
        "keyed gRPC calls reach the fork: {output}"
    );
    let output = node.kubectl(&["exec", "client", "--", "grpc-probe", "-n", "4", &grpc]);
    assert_eq!(
        output.matches("served-by reviews-v1-").count() - output.matches("feature-x").count(),
        4,
        "unkeyed gRPC calls reach baseline: {output}"
    );
}
