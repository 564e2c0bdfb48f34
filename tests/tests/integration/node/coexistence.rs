//! detour beside Cilium's socket-level load balancing (its kube-proxy
//! replacement), the most common eBPF dataplane: a `cgroup/connect4`
//! program at the cgroup above the pods' rewrites each Service's
//! ClusterIP:port to a backend at `connect()`, and no kube-proxy runs (see
//! `detour_tests::node::socket_lb` for the stand-in and why).
//!
//! The kernel runs a socket's cgroup programs from its own cgroup up to the
//! root: detour's, attached at `kubepods`, before the balancer's above it.
//! So detour sees the ClusterIP the client dialled and redirects it to its
//! proxy, and the balancer then leaves the proxy's address alone; the
//! proxy's own upstream connection (marked, so detour lets it pass) is the
//! one the balancer translates for baseline requests.

use std::net::SocketAddrV4;

use detour_tests::node::{
    KUBERNETES_SERVICE_IP, KubeNode, NODE_IP, require_node, socket_lb::SocketLb,
};

use super::setup::{
    BASELINE, KEYED, apply_app, apply_sandbox, assert_steers, cluster_ip, curl, install_deploy,
    live_grpc_flow,
};

fn addr(ip: &str, port: u16) -> SocketAddrV4 {
    format!("{ip}:{port}")
        .parse()
        .expect("an IPv4 socket address")
}

#[test]
fn with_a_socket_load_balancer_above_the_pods_detour_sees_the_cluster_ip_and_steers() {
    if !require_node() {
        return;
    }
    let node = KubeNode::without_kube_proxy();
    apply_app(&node);
    let vip = cluster_ip(&node);
    let backend = node.kubectl(&[
        "get",
        "pods",
        "-l",
        "app=reviews",
        "-o",
        "jsonpath={.items[0].status.podIP}",
    ]);
    let _balancer = SocketLb::attach(
        node.cgroup_root(),
        &[
            (addr(KUBERNETES_SERVICE_IP, 443), addr(NODE_IP, 6443)),
            (addr(&vip, 80), addr(&backend, 8080)),
            (addr(&vip, 9090), addr(&backend, 9090)),
        ],
    )
    .expect("the socket load balancer loads and attaches");
    let before = curl(&node, &format!("http://{vip}/"), &[KEYED]);
    assert!(
        before.starts_with(BASELINE),
        "the balancer alone serves the Service: {before}"
    );

    install_deploy(&node);
    apply_sandbox(&node);
    assert_steers(&node, 3);
    // What detour saw: the ClusterIP the client dialled, not the backend.
    let grpc = format!("{vip}:9090");
    let flow = live_grpc_flow(&node, &grpc);
    assert_eq!(flow["original_dst"], grpc.as_str(), "{flow}");
}
