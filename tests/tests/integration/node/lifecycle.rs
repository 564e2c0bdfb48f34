//! The DaemonSet's life on a real node, under keyed load from a pod: a
//! rolling update to a new image tag (the surge pod takes the sockets
//! over), the agent's pod deleted, its container killed (fail-open, the
//! next agent steers again and closes what went direct meanwhile), and the
//! uninstall (nothing of detour left, traffic as before).

use std::time::{Duration, Instant};

use detour_tests::node::{KubeNode, NODE_IP, require_node};

use super::{
    load::Load,
    setup::{BASELINE, DEPLOY, FORK, KEYED, cluster_ip, curl, installed, wait_steered},
};

const CLOSE: &str = "Connection: close";

/// Waits until the agent's DaemonSet has a Ready pod again.
fn agent_ready(node: &KubeNode) {
    node.kubectl(&[
        "-n",
        "detour",
        "rollout",
        "status",
        "daemonset/detour",
        "--timeout=120s",
    ]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while agent_pods(
        node,
        "{.items[*].status.conditions[?(@.type==\"Ready\")].status}",
    ) != "True"
    {
        assert!(Instant::now() < deadline, "no Ready agent pod");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `jsonpath` of the agent's pods (all of them, one line).
fn agent_pods(node: &KubeNode, jsonpath: &str) -> String {
    let output = node.kubectl_output(&[
        "-n",
        "detour",
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/component=agent",
        "-o",
        &format!("jsonpath={jsonpath}"),
    ]);
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The agent's metric `name` (summed over its label sets).
fn metric(node: &KubeNode, name: &str) -> f64 {
    let output = node.on_node("curl", &["-s", &format!("http://{NODE_IP}:15020/metrics")]);
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.starts_with(name))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn a_rolling_update_to_a_new_tag_fails_nothing_and_sends_no_keyed_request_to_baseline() {
    if !require_node() {
        return;
    }
    let node = installed();
    wait_steered(&node);
    node.ctr(&[
        "images",
        "tag",
        "docker.io/library/detour:0.1.0",
        "docker.io/library/detour:rollout",
    ]);
    let keepalive = Load::start(&node, &[KEYED], 200, 10);
    let fresh = Load::start(&node, &[KEYED, CLOSE], 200, 10);
    std::thread::sleep(Duration::from_secs(2));
    node.kubectl(&[
        "-n",
        "detour",
        "set",
        "image",
        "daemonset/detour",
        "agent=detour:rollout",
    ]);
    agent_ready(&node);
    for (what, seen) in [
        ("keep-alive", keepalive.finish()),
        ("new connections", fresh.finish()),
    ] {
        assert!(seen.failures.is_empty(), "{what}: {:?}", seen.failures);
        assert_eq!(seen.answers.len(), 200, "{what}: {:?}", seen.answers);
        assert!(
            seen.not_from(FORK).is_empty(),
            "{what}: keyed requests at baseline: {:?}",
            seen.not_from(FORK)
        );
    }
    let image = agent_pods(&node, "{.items[*].spec.containers[0].image}");
    assert_eq!(image, "detour:rollout", "one agent, of the new tag");
}

/// After the agent comes back, a keep-alive client that went direct while
/// it was away reaches the fork again within seconds (its direct
/// connection is closed), and clients opening new connections saw no
/// failure (besides `in_flight` requests the kill cut off).
fn comes_back(node: &KubeNode, what: &str, away: impl FnOnce(), in_flight: usize) {
    let mut keyed = Load::start(node, &[KEYED], 600, 10);
    let unkeyed = Load::start(node, &[CLOSE], 600, 10);
    std::thread::sleep(Duration::from_secs(2));
    away();
    agent_ready(node);
    // The keep-alive client is steered again: its last answers are the fork's.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = keyed.so_far();
        let last: Vec<&String> = seen.answers.iter().rev().take(10).collect();
        if last.len() == 10 && last.iter().all(|a| a.starts_with(FORK)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the keep-alive client is not steered again: {:?}",
            &seen.answers[seen.answers.len().saturating_sub(20)..]
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let keyed = keyed.stop();
    let unkeyed = unkeyed.stop();
    assert!(
        unkeyed.failures.len() <= in_flight,
        "{what}: new connections fail open: {:?}",
        unkeyed.failures
    );
    assert!(
        unkeyed
            .answers
            .iter()
            .all(|a| a.starts_with(BASELINE) && !a.starts_with(FORK)),
        "{what}: unkeyed requests reach baseline: {:?}",
        unkeyed.answers
    );
    assert!(
        keyed.failures.len() <= in_flight,
        "{what}: {:?}",
        keyed.failures
    );
    assert!(
        metric(node, "detour_stale_connections_closed_total") >= 1.0,
        "{what}: the direct connection was closed by the new agent"
    );
}

#[test]
fn the_agent_deleted_or_killed_fails_open_and_the_next_one_steers_again() {
    if !require_node() {
        return;
    }
    let node = installed();
    wait_steered(&node);
    comes_back(
        &node,
        "pod deleted",
        || {
            node.kubectl(&[
                "-n",
                "detour",
                "delete",
                "pod",
                "-l",
                "app.kubernetes.io/component=agent",
                "--wait=false",
            ]);
        },
        0,
    );
    // The container killed outright, as `crictl stop --timeout 0` or the
    // OOM killer does; the kubelet starts it again in the same pod.
    comes_back(
        &node,
        "container killed",
        || {
            let listed = node.ctr(&[
                "containers",
                "ls",
                "-q",
                "labels.\"io.kubernetes.container.name\"==agent",
            ]);
            for id in listed.lines().filter(|l| !l.is_empty()) {
                let _ = node.ctr(&["tasks", "kill", "-s", "SIGKILL", id]);
            }
        },
        2,
    );
}

#[test]
fn uninstalling_leaves_nothing_of_detour_and_traffic_flows_as_before() {
    if !require_node() {
        return;
    }
    let node = installed();
    wait_steered(&node);
    // As deploy/README.md says: the Sandboxes first, while the controller
    // runs to delete their forks (each holds its finalizer until then),
    // then everything `deploy/` made.
    node.kubectl(&[
        "delete",
        "sandboxes,routegroups",
        "--all",
        "-A",
        "--timeout=60s",
    ]);
    node.kubectl(&["delete", "-k", DEPLOY, "--timeout=120s"]);
    let kubepods = node.kubepods().display().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let tree = node.on_node("bpftool", &["cgroup", "tree", &kubepods]);
        let tree = String::from_utf8_lossy(&tree.stdout).into_owned();
        let pins = node.on_node("ls", &["/sys/fs/bpf"]);
        let pins = String::from_utf8_lossy(&pins.stdout).into_owned();
        let forks = node.kubectl(&["get", "deployments", "-A", "-o", "name"]);
        if !tree.contains("detour") && !pins.contains("detour") && !forks.contains("feature-x") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: programs {tree:?}, pins {pins:?}, deployments {forks:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let rules = node.on_node("iptables-save", &[]);
    let rules = String::from_utf8_lossy(&rules.stdout).into_owned();
    let ours: Vec<&str> = rules.lines().filter(|l| l.contains("detour")).collect();
    assert!(ours.is_empty(), "no iptables rule of detour's: {ours:?}");
    let url = format!("http://{}/", cluster_ip(&node));
    for headers in [&[KEYED][..], &[][..]] {
        let body = curl(&node, &url, headers);
        assert!(
            body.starts_with(BASELINE) && !body.starts_with(FORK),
            "as without detour: {body}"
        );
    }
}
