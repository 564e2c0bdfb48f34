//! The route objects' rules against a real control plane, with real
//! requests: a Sandbox's TTL, a RouteGroup's key, two Sandboxes claiming one
//! key (the older wins, the other is reported), a Service whose `targetPort`
//! is named (resolved on the fork's pods, where it is another number), and
//! a client that dials a baseline pod's IP instead of the ClusterIP.
//!
//! These need root. Without it each test fails and says so, unless
//! `DETOUR_SKIP_ROOT_TESTS=1` is set.

use std::time::{Duration, Instant};

use detour_tests::{Agent, Cluster, cluster::echo_deployment, detour_bin, require_root};
use serde_json::Value;

const CLUSTER_IP: &str = "10.96.0.20";
const PORT: u16 = 8080;
/// The fork listens elsewhere: the Service's named `targetPort` finds it.
const FORK_PORT: u16 = 9090;

fn workloads() -> String {
    format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: reviews, namespace: default}}
spec:
  clusterIP: {CLUSTER_IP}
  selector: {{app: reviews, version: v1}}
  ports: [{{name: web, port: {PORT}, targetPort: http, appProtocol: http}}]
{baseline}{fork}{fork2}"#,
        baseline = echo_deployment("reviews", "v1", PORT, false),
        fork = echo_deployment("reviews-fork", "feature-x", FORK_PORT, true),
        fork2 = echo_deployment("reviews-fork2", "feature-y", FORK_PORT, true),
    )
}

fn sandbox(name: &str, key: &str, version: &str, ttl: &str) -> String {
    format!(
        r#"
apiVersion: detour.dev/v1alpha1
kind: Sandbox
metadata: {{name: {name}, namespace: default}}
spec:
  routingKey: {key}
  {ttl}
  forks:
    - service: {{name: reviews}}
      selector: {{matchLabels: {{app: reviews, version: {version}}}}}
"#
    )
}

fn problems(agent: &Agent) -> Vec<String> {
    let output = std::process::Command::new(detour_bin())
        .arg("--socket")
        .arg(agent.admin_socket())
        .args(["status", "-o", "json"])
        .output()
        .expect("detour status");
    let status: Value = serde_json::from_slice(&output.stdout).expect("status JSON");
    status["route_source"]["problems"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_str().map(str::to_owned))
        .collect()
}

#[test]
fn ttl_route_groups_key_conflicts_named_ports_and_pod_ips_follow_the_api() {
    if !require_root() {
        return;
    }
    let cluster = Cluster::start("dkr");
    cluster.apply(&workloads());
    let baseline_ip = cluster.ready_pods("default", "app=reviews,version=v1")[0].clone();
    cluster.ready_pods("default", "version=feature-x");
    cluster.ready_pods("default", "version=feature-y");
    cluster.route_cluster_ip(CLUSTER_IP, &baseline_ip);
    let agent = cluster.agent().spawn();
    let cluster_ip = format!("{CLUSTER_IP}:{PORT}");

    // A named targetPort: the fork pods' `http` is 9090, the baseline's 8080.
    cluster.apply(&sandbox("feature-x", "feature-x", "feature-x", ""));
    cluster.key_reaches(
        &cluster_ip,
        "feature-x",
        "reviews-fork",
        Duration::from_secs(10),
    );
    // A client dialling a baseline pod directly is steered too.
    let pod_addr = format!("{baseline_ip}:{PORT}");
    assert_eq!(cluster.served_by(&pod_addr, "feature-x"), "reviews-fork");
    assert_eq!(cluster.served_by(&pod_addr, "none"), "reviews");

    // A later Sandbox claiming the same key is ignored, and reported.
    std::thread::sleep(Duration::from_millis(1100));
    cluster.apply(&sandbox("feature-y", "feature-x", "feature-y", ""));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !problems(&agent)
        .iter()
        .any(|p| p.contains("feature-y") && p.contains("feature-x"))
    {
        assert!(
            Instant::now() < deadline,
            "conflict not reported: {:?}",
            problems(&agent)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for _ in 0..5 {
        assert_eq!(
            cluster.served_by(&cluster_ip, "feature-x"),
            "reviews-fork",
            "the older Sandbox keeps the key"
        );
    }
    // The older one gone, the other takes the key.
    cluster
        .plane
        .kubectl(&["delete", "sandbox", "feature-x", "-n", "default"]);
    cluster.key_reaches(
        &cluster_ip,
        "feature-x",
        "reviews-fork2",
        Duration::from_secs(10),
    );

    // A RouteGroup's key routes to its member's fork.
    cluster.apply(
        "apiVersion: detour.dev/v1alpha1\nkind: RouteGroup\nmetadata: {name: team-a, namespace: default}\nspec: {routingKey: team-a, sandboxes: [feature-y]}\n",
    );
    cluster.key_reaches(
        &cluster_ip,
        "team-a",
        "reviews-fork2",
        Duration::from_secs(10),
    );

    // A TTL: routes withdrawn once it runs out.
    cluster.apply(&sandbox("short", "short-lived", "feature-x", "ttl: 4s"));
    cluster.key_reaches(
        &cluster_ip,
        "short-lived",
        "reviews-fork",
        Duration::from_secs(10),
    );
    cluster.key_reaches(
        &cluster_ip,
        "short-lived",
        "reviews",
        Duration::from_secs(10),
    );
}
