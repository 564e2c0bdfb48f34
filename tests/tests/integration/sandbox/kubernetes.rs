//! Fork pods from the Kubernetes API: on the real control plane, with pods
//! run by the node simulator each in a cgroup of its own (`pod<uid>` under
//! the node's, as the kubelet's cgroupfs driver makes them), a Sandbox
//! forks an HTTP service `app` and a keyless one, `db` (its port declared
//! `appProtocol: tcp`). The agent, told its node (`--node-name`), finds the
//! fork pods' cgroups from their UIDs: a process of the `app` fork's pod
//! that connects to `db`'s ClusterIP reaches the `db` fork; the same connect
//! from another pod reaches baseline; the Sandbox deleted, the fork pod
//! reaches baseline too. A request from the fork pod to `web`, an HTTP
//! Service nobody forks, goes through the proxy and carries the sandbox's
//! key; another pod's goes direct.
//!
//! These need root. Without it each test fails and says so, unless
//! `DETOUR_SKIP_ROOT_TESTS=1` is set.

use std::time::{Duration, Instant};

use detour_tests::{
    Cluster, cluster::echo_deployment, controlplane::kubelet::NODE_NAME, require_root,
};
use serde_json::Value;

const PORT: u16 = 8080;
/// `db`'s ClusterIP, in the API server's Service range.
const DB_IP: &str = "10.96.0.12";
/// `web`'s: an HTTP Service no Sandbox forks.
const WEB_IP: &str = "10.96.0.13";

fn workloads() -> String {
    format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: db, namespace: default}}
spec:
  clusterIP: {DB_IP}
  selector: {{app: reviews, version: db-v1}}
  ports: [{{name: db, port: {PORT}, targetPort: {PORT}, appProtocol: tcp}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec:
  clusterIP: {WEB_IP}
  selector: {{app: reviews, version: web-v1}}
  ports: [{{name: http, port: {PORT}, targetPort: {PORT}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: app, namespace: default}}
spec:
  selector: {{app: reviews, version: app-v1}}
  ports: [{{name: http, port: {PORT}, targetPort: {PORT}, appProtocol: http}}]
---
apiVersion: detour.dev/v1alpha1
kind: Sandbox
metadata: {{name: feature-x, namespace: default}}
spec:
  routingKey: feature-x
  forks:
    - service: {{name: app}}
      selector: {{matchLabels: {{app: reviews, version: app-x}}}}
    - service: {{name: db}}
      selector: {{matchLabels: {{app: reviews, version: db-x}}}}
{db}{web}{app_fork}{db_fork}"#,
        db = echo_deployment("db", "db-v1", PORT, false),
        web = echo_deployment("web", "web-v1", PORT, false),
        app_fork = echo_deployment("app-fork", "app-x", PORT, true),
        db_fork = echo_deployment("db-fork", "db-x", PORT, true),
    )
}

/// Which Deployment answered `GET http://DB_IP:8080/` run as a process of
/// `pod`, or why none did.
fn db_served_to(cluster: &Cluster, pod: &Value) -> String {
    let url = format!("http://{DB_IP}:{PORT}/");
    let output = cluster.exec_in_pod(
        pod,
        "curl",
        &["-sS", "-m", "5", "-D", "-", "-o", "/dev/null", &url],
    );
    if !output.status.success() {
        return format!(
            "nothing ({})",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("X-Served-By: "))
        .map_or_else(
            || "no X-Served-By".to_owned(),
            |name| name.trim().to_owned(),
        )
}

#[test]
fn fork_pods_found_by_uid_reach_keyless_forks_and_lend_their_key_to_unforked_services() {
    if !require_root() {
        return;
    }
    let cluster = Cluster::start("sk");
    cluster.apply(&workloads());
    let baseline = cluster.ready_pods("default", "version=db-v1");
    let web = cluster.ready_pods("default", "version=web-v1");
    cluster.ready_pods("default", "version in (app-x, db-x)");
    cluster.route_cluster_ip(DB_IP, &baseline[0]);
    cluster.route_cluster_ip(WEB_IP, &web[0]);
    let fork_pod = cluster.pods("default", "version=app-x").remove(0);
    let baseline_pod = cluster.pods("default", "version=db-v1").remove(0);
    let agent = cluster.agent().arg("--node-name").arg(NODE_NAME).spawn();

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let served = db_served_to(&cluster, &fork_pod);
        if served == "db-fork" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the fork pod's connect reached {served}, not db-fork"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(db_served_to(&cluster, &baseline_pod), "db");

    // `web`, forked by nobody: the fork pod's request reaches it through
    // the proxy and carries the sandbox's key; another pod's goes direct.
    let headers = |pod: &Value| {
        let url = format!("http://{WEB_IP}:{PORT}/headers");
        let output = cluster.exec_in_pod(pod, "curl", &["-sS", "-m", "5", &url]);
        assert!(output.status.success(), "curl {url} failed");
        String::from_utf8_lossy(&output.stdout).to_ascii_lowercase()
    };
    assert!(
        headers(&fork_pod).contains("baggage: detour-routing-key=feature-x\r\n"),
        "the fork pod's request inherits the key"
    );
    assert!(!headers(&baseline_pod).contains("baggage"));
    assert_eq!(
        agent.metric("detour_connections_total{service=\"default/web\"}"),
        1,
        "only the fork pod's connection is proxied"
    );

    cluster
        .plane
        .kubectl(&["delete", "sandbox", "feature-x", "-n", "default"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let served = db_served_to(&cluster, &fork_pod);
        if served == "db" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "with the Sandbox gone, the fork pod reached {served}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
