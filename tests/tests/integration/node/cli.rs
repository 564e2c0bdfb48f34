//! The node CLI as operators reach it: `kubectl exec -n detour ds/detour --
//! detour ...` in the distroless image (no shell), against the agent of the
//! same pod (admin socket under the host's /run/detour, maps pinned on the
//! node's bpffs), and the agent's JSON log through `kubectl logs`.

use std::{
    io::Read,
    process::Stdio,
    time::{Duration, Instant},
};

use detour_tests::node::require_node;
use serde_json::Value;

use super::setup::{
    KEYED, cluster_ip, curl, detour, detour_json, installed, live_grpc_flow, wait_steered,
};

#[test]
fn status_routes_flows_explain_trace_and_bpf_work_through_kubectl_exec() {
    if !require_node() {
        return;
    }
    let node = installed();
    wait_steered(&node);

    let status = detour_json(&node, &["status"]);
    assert_eq!(status["ready"], true, "{status}");
    assert_eq!(status["route_source"]["kind"], "kubernetes", "{status}");
    // This machine's hybrid layout under the kubelet's cgroup root, found by
    // the agent itself from its own cgroup.
    assert_eq!(
        status["cgroup"],
        node.kubepods().display().to_string(),
        "{status}"
    );
    assert!(
        status["cgroup_reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("detected")),
        "{status}"
    );
    assert_eq!(status["pin_dir"], "/sys/fs/bpf/detour", "{status}");
    let table = detour(&node, &["status"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("Cgroup:") && table.contains("detected"),
        "{table}"
    );

    let routes = detour_json(&node, &["routes", "--key", "feature-x"]);
    assert!(
        routes.to_string().contains("default/reviews"),
        "the fork's route: {routes}"
    );

    // A long-lived gRPC channel, while `flows` looks.
    let flow = live_grpc_flow(&node, &format!("{}:9090", cluster_ip(&node)));
    assert_eq!(flow["service"], "default/reviews", "{flow}");

    let explained = detour_json(
        &node,
        &["explain", "--service", "default/reviews", "-H", KEYED],
    );
    assert!(
        explained.to_string().contains("feature-x"),
        "a keyed request would reach the fork: {explained}"
    );

    // `trace` streams: one keyed request while it listens.
    let mut trace = node
        .plane
        .kubectl_command(&[
            "exec",
            "-n",
            "detour",
            "ds/detour",
            "--",
            "detour",
            "trace",
            "--key",
            "feature-x",
            "--limit",
            "1",
            "-o",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("detour trace");
    let url = format!("http://{}/", cluster_ip(&node));
    let deadline = Instant::now() + Duration::from_secs(20);
    while trace.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        curl(&node, &url, &[KEYED]);
        std::thread::sleep(Duration::from_millis(300));
    }
    let _ = trace.kill();
    let mut traced = String::new();
    let _ = trace
        .stdout
        .take()
        .expect("trace stdout")
        .read_to_string(&mut traced);
    let _ = trace.wait();
    let event: Value = serde_json::from_str(traced.lines().next().unwrap_or_default())
        .unwrap_or_else(|e| panic!("a trace event: {e}: {traced:?}"));
    assert_eq!(event["service"], "default/reviews", "{event}");
    assert_eq!(event["sandbox"], "default/feature-x", "{event}");

    let maps = detour_json(&node, &["bpf", "maps"]);
    assert!(maps.to_string().contains("STEERED"), "{maps}");
    let counters = detour_json(&node, &["bpf", "counters"]);
    assert!(counters.to_string().contains("redirected"), "{counters}");

    let log = node.kubectl(&["logs", "-n", "detour", "ds/detour"]);
    let lines: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|line| line.to_string().contains("cgroup chosen")),
        "the agent's JSON log says which cgroup: {log}"
    );
}
