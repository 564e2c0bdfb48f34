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

use std::{
    net::SocketAddrV4,
    process::Stdio,
    time::{Duration, Instant},
};

use detour_tests::node::{
    KUBERNETES_SERVICE_IP, KubeNode, NODE_IP, require_node, socket_lb::SocketLb,
};

use super::setup::{
    APP, BASELINE, DEPLOY, FORK, KEYED, cluster_ip, curl, detour_json, diagnose, sandbox_example,
    wait_steered,
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
    node.plane.apply(APP);
    for pod in ["pod/client", "pod -l app=reviews"] {
        let mut args = vec!["wait", "--for=condition=Ready", "--timeout=120s"];
        args.extend(pod.split(' '));
        node.kubectl(&args);
    }
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
    let url = format!("http://{vip}/");
    let before = curl(&node, &url, &[KEYED]);
    assert!(
        before.starts_with(BASELINE),
        "the balancer alone serves the Service: {before}"
    );

    node.kubectl(&["apply", "-k", DEPLOY]);
    node.kubectl(&[
        "-n",
        "detour",
        "rollout",
        "status",
        "daemonset/detour",
        "deployment/detour-controller",
        "--timeout=180s",
    ]);
    node.plane.apply(&sandbox_example());
    node.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "sandbox/feature-x",
        "--timeout=120s",
    ]);
    wait_steered(&node);
    for _ in 0..3 {
        let keyed = curl(&node, &url, &[KEYED]);
        assert!(keyed.starts_with(FORK), "{keyed}\n{}", diagnose(&node));
        let unkeyed = curl(&node, &url, &[]);
        assert!(
            unkeyed.starts_with(BASELINE) && !unkeyed.starts_with(FORK),
            "{unkeyed}"
        );
    }

    // What detour saw: the ClusterIP the client dialled, not the backend.
    let grpc = format!("{vip}:9090");
    let mut channel = node
        .plane
        .kubectl_command(&[
            "exec",
            "client",
            "--",
            "grpc-probe",
            "-n",
            "30",
            "-interval",
            "200ms",
            "-H",
            KEYED,
            &grpc,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("grpc-probe");
    let deadline = Instant::now() + Duration::from_secs(15);
    let flow = loop {
        let flows = detour_json(&node, &["flows"]);
        let found = flows["flows"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|f| f["service"] == "default/reviews")
            .cloned();
        if let Some(flow) = found {
            break flow;
        }
        assert!(Instant::now() < deadline, "no flow of the channel: {flows}");
        std::thread::sleep(Duration::from_millis(300));
    };
    let _ = channel.kill();
    let _ = channel.wait();
    assert_eq!(flow["original_dst"], grpc.as_str(), "{flow}");
}
