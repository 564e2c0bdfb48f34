//! The sandbox controller through a Sandbox's life, on the real control
//! plane: two Sandboxes forking one baseline with different images, each
//! reached by its own key; replicas and a JSON patch; the Sandbox changing
//! (the fork follows); the baseline changing
//! (the fork follows and keeps its override); a TTL running out (Sandbox and
//! fork gone); a fork edited by hand (put back); Events and metrics; the controller killed between making a fork and recording it
//! (no orphan, no duplicate); and leader failover between two replicas
//! while Sandboxes are created (every one Ready, no duplicate fork).
//!
//! These need root. Without it each test fails and says so, unless
//! `DETOUR_SKIP_ROOT_TESTS=1` is set.

use std::time::{Duration, Instant};

use detour_tests::{Cluster, require_root};
use serde_json::Value;

const CLUSTER_IP: &str = "10.96.0.50";
const PORT: u16 = 8080;

/// The cluster with a `reviews` baseline behind its ClusterIP.
fn cluster(prefix: &str) -> Cluster {
    let cluster = Cluster::start(prefix);
    cluster.reviews_baseline(CLUSTER_IP, PORT, false);
    cluster
}

/// A Sandbox `pr` forking reviews, answering as `reviews-<pr>`, with more
/// `spec` lines (YAML, indented as customizations' fields) and a TTL.
fn sandbox(pr: &str, more: &str, ttl: &str) -> String {
    format!(
        r#"
apiVersion: detour.dev/v1alpha1
kind: Sandbox
metadata: {{name: {pr}, namespace: default}}
spec:
  routingKey: {pr}
  {ttl}
  forks:
    - service: {{name: reviews}}
      forkOf: {{kind: Deployment, name: reviews}}
      customizations:
        images: [{{container: reviews, image: "detour.dev/test-echo:{pr}"}}]
        env: [{{name: SERVED_BY, value: reviews-{pr}}}]
{more}"#
    )
}

fn wait_ready(cluster: &Cluster, name: &str) {
    let waited = cluster.plane.kubectl_output(&[
        "wait",
        "--for=condition=Ready",
        &format!("sandbox/{name}"),
        "--timeout=90s",
    ]);
    assert!(
        waited.status.success(),
        "Sandbox {name} not Ready: {}\n{}",
        String::from_utf8_lossy(&waited.stderr),
        cluster
            .plane
            .kubectl(&["get", "sandbox", name, "-o", "yaml"])
    );
}

fn forks_of(cluster: &Cluster, sandbox: &str) -> Vec<Value> {
    cluster.json(&[
        "get",
        "deployments",
        "-A",
        "-l",
        &format!("detour.dev/sandbox={sandbox}"),
    ])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The controller's `/metrics`, found at the address its log names.
fn controller_metrics(cluster: &Cluster, log: &str) -> String {
    let addr = log
        .lines()
        .find(|l| l.contains("metrics endpoint listening"))
        .and_then(|l| l.split("addr=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no metrics address in the log:\n{log}"))
        .to_owned();
    let output = cluster.net.node().exec(
        "curl",
        &["-sf", "-m", "2", &format!("http://{addr}/metrics")],
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn forks_follow_their_sandbox_and_baseline_and_go_with_it() {
    if !require_root() {
        return;
    }
    let cluster = cluster("dsl");
    let kubeconfig = cluster
        .plane
        .service_account_kubeconfig("detour", "detour-controller");
    let controller = cluster.controller(&kubeconfig, "controller-0");
    let agent = cluster.agent().spawn();
    let addr = format!("{CLUSTER_IP}:{PORT}");

    // Two Sandboxes fork one baseline with different images.
    cluster.apply(&sandbox(
        "pr-1",
        "        replicas: 2\n        patch: {type: json, patch: [{op: add, path: /metadata/annotations, value: {team: a}}]}\n",
        "",
    ));
    cluster.apply(&sandbox("pr-2", "", "ttl: 20s"));
    wait_ready(&cluster, "pr-1");
    wait_ready(&cluster, "pr-2");
    cluster.key_reaches(&addr, "pr-1", "reviews-pr-1", Duration::from_secs(10));
    cluster.key_reaches(&addr, "pr-2", "reviews-pr-2", Duration::from_secs(10));
    assert_eq!(
        cluster.served_by(&addr, "none"),
        "reviews",
        "{}",
        agent.logs()
    );
    let fork = &forks_of(&cluster, "pr-1")[0];
    assert_eq!(fork["spec"]["replicas"], 2);
    assert_eq!(fork["metadata"]["annotations"]["team"], "a");
    assert_eq!(cluster.pods("default", "detour.dev/sandbox=pr-1").len(), 2);

    // The Sandbox changes: its fork follows.
    cluster.apply(
        &sandbox("pr-1", "        replicas: 2\n", "")
            .replace("detour.dev/test-echo:pr-1", "detour.dev/test-echo:pr-1b"),
    );
    wait_until(
        "the fork follows the Sandbox",
        Duration::from_secs(30),
        || {
            forks_of(&cluster, "pr-1")[0]["spec"]["template"]["spec"]["containers"][0]["image"]
                == "detour.dev/test-echo:pr-1b"
        },
    );

    // A fork edited by hand is put back.
    cluster.plane.kubectl(&[
        "scale",
        "deployment/reviews-pr-1",
        "-n",
        "default",
        "--replicas=5",
    ]);
    wait_until("the hand edit reverted", Duration::from_secs(30), || {
        forks_of(&cluster, "pr-1")[0]["spec"]["replicas"] == 2
    });
    // Each step is an Event on the Sandbox, and counted.
    let events = cluster.json(&[
        "get",
        "events",
        "-n",
        "default",
        "--field-selector",
        "involvedObject.name=pr-1",
    ]);
    assert!(events.to_string().contains("ForkCreated"), "{events}");
    let metrics = controller_metrics(&cluster, &controller.logs());
    assert!(
        metrics.contains("detour_controller_reconciles_total{result=\"ok\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("detour_controller_leader 1"), "{metrics}");

    // pr-2's TTL runs out: the Sandbox and its fork are deleted.
    wait_until("pr-2 deleted at its TTL", Duration::from_secs(40), || {
        !cluster
            .plane
            .kubectl_output(&["get", "sandbox", "pr-2", "-n", "default"])
            .status
            .success()
    });
    wait_until("pr-2's fork gone", Duration::from_secs(20), || {
        forks_of(&cluster, "pr-2").is_empty()
    });
    cluster.key_reaches(&addr, "pr-2", "reviews", Duration::from_secs(10));

    // The baseline changes: the fork follows, keeping its override. (The
    // baseline rolls to a new pod, which the test's stand-in for kube-proxy
    // does not follow: no baseline request after this.)
    cluster.plane.kubectl(&[
        "set",
        "env",
        "deployment/reviews",
        "-n",
        "default",
        "RELEASE=2",
    ]);
    wait_until(
        "the fork follows the baseline",
        Duration::from_secs(30),
        || {
            let fork = &forks_of(&cluster, "pr-1")[0];
            let container = &fork["spec"]["template"]["spec"]["containers"][0];
            let env = container["env"].to_string();
            env.contains("RELEASE") && container["image"] == "detour.dev/test-echo:pr-1b"
        },
    );
    cluster.key_reaches(&addr, "pr-1", "reviews-pr-1", Duration::from_secs(30));
}

#[test]
fn a_controller_killed_after_making_a_fork_leaves_no_orphan_and_no_duplicate() {
    if !require_root() {
        return;
    }
    let cluster = cluster("dso");
    let kubeconfig = cluster
        .plane
        .service_account_kubeconfig("detour", "detour-controller");
    let mut controller = cluster.controller(&kubeconfig, "controller-0");
    cluster.apply(&sandbox("pr-3", "", ""));
    // Killed as soon as the fork exists, before it can write the status.
    wait_until("the fork made", Duration::from_secs(30), || {
        !forks_of(&cluster, "pr-3").is_empty()
    });
    controller.proc.signal(libc::SIGKILL);
    let _ = controller.proc.wait_timeout(Duration::from_secs(5));
    // Deleted while no controller runs: the finalizer holds it.
    cluster
        .plane
        .kubectl(&["delete", "sandbox", "pr-3", "-n", "default", "--wait=false"]);
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        cluster
            .plane
            .kubectl_output(&["get", "sandbox", "pr-3", "-n", "default"])
            .status
            .success(),
        "the finalizer keeps the Sandbox until its forks are gone"
    );
    cluster.apply(&sandbox("pr-4", "", ""));

    let _restarted = cluster.controller(&kubeconfig, "controller-1");
    wait_ready(&cluster, "pr-4");
    wait_until("pr-3 and its fork gone", Duration::from_secs(60), || {
        forks_of(&cluster, "pr-3").is_empty()
            && !cluster
                .plane
                .kubectl_output(&["get", "sandbox", "pr-3", "-n", "default"])
                .status
                .success()
    });
    assert_eq!(forks_of(&cluster, "pr-4").len(), 1, "one fork, not two");
}

#[test]
fn the_standby_replica_takes_over_when_the_leader_is_killed() {
    if !require_root() {
        return;
    }
    let cluster = cluster("dsf");
    let kubeconfig = cluster
        .plane
        .service_account_kubeconfig("detour", "detour-controller");
    let mut first = cluster.controller(&kubeconfig, "controller-a");
    wait_until("controller-a leads", Duration::from_secs(30), || {
        first.logs().contains("leading")
    });
    let _second = cluster.controller(&kubeconfig, "controller-b");
    for pr in ["pr-5", "pr-6"] {
        cluster.apply(&sandbox(pr, "", ""));
    }
    first.proc.signal(libc::SIGKILL);
    let _ = first.proc.wait_timeout(Duration::from_secs(5));
    for pr in ["pr-7", "pr-8"] {
        cluster.apply(&sandbox(pr, "", ""));
    }
    for pr in ["pr-5", "pr-6", "pr-7", "pr-8"] {
        wait_ready(&cluster, pr);
        assert_eq!(forks_of(&cluster, pr).len(), 1, "{pr}: one fork");
    }
    let lease = cluster.json(&["get", "lease", "detour-controller", "-n", "detour"]);
    assert_eq!(lease["spec"]["holderIdentity"], "controller-b", "{lease}");
}
