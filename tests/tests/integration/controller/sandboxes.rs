//! The sandbox controller on the real control plane: one Sandbox naming
//! `forkOf: deployment/reviews` and an image override becomes a fork
//! Deployment whose pods the node simulator runs; the Sandbox turns Ready,
//! keyed requests reach the fork and unkeyed ones baseline, the baseline
//! Service never selects a fork pod, and deleting the Sandbox leaves
//! nothing. An unknown container is reported in status and nothing is
//! created.
//!
//! These need root. Without it each test fails and says so, unless
//! `DETOUR_SKIP_ROOT_TESTS=1` is set.

use std::time::{Duration, Instant};

use detour_tests::{Cluster, cluster::echo_deployment, require_root};

const CLUSTER_IP: &str = "10.96.0.40";
const PORT: u16 = 8080;

/// A Sandbox for pull request `pr` forking `reviews` with the image's tag
/// set to `tag` in container `container`, answering as `reviews-<pr>`.
fn sandbox(pr: &str, container: &str) -> String {
    format!(
        r#"
apiVersion: detour.dev/v1alpha1
kind: Sandbox
metadata: {{name: {pr}, namespace: default}}
spec:
  routingKey: {pr}
  forks:
    - service: {{name: reviews}}
      forkOf: {{kind: Deployment, name: reviews}}
      customizations:
        images: [{{container: {container}, image: "detour.dev/test-echo:{pr}"}}]
        env: [{{name: SERVED_BY, value: reviews-{pr}}}]
"#
    )
}

#[test]
fn a_forkof_sandbox_becomes_a_ready_fork_that_keyed_requests_reach_and_leaves_nothing() {
    if !require_root() {
        return;
    }
    let cluster = Cluster::start("dsc");
    // The baseline Service selects by `app` only: the fork's pods carry the
    // same `app` in the template, so the controller must rewrite it.
    let baseline = cluster.reviews_baseline(CLUSTER_IP, PORT, false);
    // As its own ServiceAccount: the shipped ClusterRole, Role and
    // admission policy are what it gets.
    let kubeconfig = cluster
        .plane
        .service_account_kubeconfig("detour", "detour-controller");
    let controller = cluster.controller(&kubeconfig, "controller-0");
    let agent = cluster.agent().spawn();

    cluster.apply(&sandbox("pr-7", "reviews"));
    let waited = cluster.plane.kubectl_output(&[
        "wait",
        "--for=condition=Ready",
        "sandbox/pr-7",
        "--timeout=60s",
    ]);
    assert!(
        waited.status.success(),
        "Sandbox not Ready: {}\n{}\n--- controller ---\n{}",
        String::from_utf8_lossy(&waited.stderr),
        cluster
            .plane
            .kubectl(&["get", "sandbox", "pr-7", "-o", "yaml"]),
        controller.logs()
    );
    let status = cluster.json(&["get", "sandbox", "pr-7"])["status"].clone();
    assert_eq!(
        status["forks"][0]["workload"], "Deployment/reviews-pr-7",
        "{status}"
    );
    assert_eq!(status["forks"][0]["readyReplicas"], 1, "{status}");

    let addr = format!("{CLUSTER_IP}:{PORT}");
    cluster.key_reaches(&addr, "pr-7", "reviews-pr-7", Duration::from_secs(10));
    assert_eq!(
        cluster.served_by(&addr, "other"),
        "reviews",
        "{}",
        agent.logs()
    );

    // The baseline Service's slices hold the baseline pod only.
    let fork_ips: Vec<String> = cluster
        .pods("default", "detour.dev/sandbox=pr-7")
        .iter()
        .filter_map(|p| p["status"]["podIP"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(fork_ips.len(), 1);
    let slices = cluster.json(&[
        "get",
        "endpointslices",
        "-n",
        "default",
        "-l",
        "kubernetes.io/service-name=reviews",
    ]);
    let addresses: Vec<String> = slices["items"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e["addresses"][0].as_str().map(str::to_owned))
        .collect();
    assert_eq!(addresses, [baseline], "fork pods {fork_ips:?} stay out");

    // Deleted: the fork goes with it, and keyed requests go to baseline.
    cluster
        .plane
        .kubectl(&["delete", "sandbox", "pr-7", "--timeout=60s"]);
    let left = cluster.json(&["get", "deployments", "-A", "-l", "detour.dev/sandbox=pr-7"]);
    assert_eq!(left["items"].as_array().map(Vec::len), Some(0), "{left}");
    cluster.key_reaches(&addr, "pr-7", "reviews", Duration::from_secs(10));

    // An unknown container: reported, nothing created.
    cluster.apply(&sandbox("pr-8", "web"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let condition = loop {
        let status = cluster.json(&["get", "sandbox", "pr-8"])["status"].clone();
        let forks_ready = status["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "ForksReady")
            .cloned();
        if let Some(condition) = forks_ready {
            break condition;
        }
        assert!(
            Instant::now() < deadline,
            "no status\n{}",
            controller.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(condition["status"], "False", "{condition}");
    assert_eq!(condition["reason"], "InvalidCustomization", "{condition}");
    assert!(
        condition["message"]
            .as_str()
            .is_some_and(|m| m.contains("\"web\"")),
        "{condition}"
    );
    let created = cluster.json(&["get", "deployments", "-A", "-l", "detour.dev/sandbox=pr-8"]);
    assert_eq!(
        created["items"].as_array().map(Vec::len),
        Some(0),
        "{created}"
    );
}

#[test]
fn the_controllers_account_may_touch_forks_and_their_claims_only() {
    if !require_root() {
        return;
    }
    let cluster = Cluster::start("dsp");
    cluster.apply(&echo_deployment("reviews", "v1", PORT, false));
    let kubeconfig = cluster
        .plane
        .service_account_kubeconfig("detour", "detour-controller");
    // The admission policy takes a moment to be enforced after it is made.
    let deadline = Instant::now() + Duration::from_secs(30);
    let refused = loop {
        let output = cluster.plane.kubectl_as(
            &kubeconfig,
            &[
                "delete",
                "deployment",
                "reviews",
                "-n",
                "default",
                "--dry-run=server",
            ],
            None,
        );
        if !output.status.success() {
            break String::from_utf8_lossy(&output.stderr).into_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the controller's account deleted a baseline"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        refused.contains("may only create, change and delete fork Deployments"),
        "{refused}"
    );
    let fork = echo_deployment("reviews-fork", "feature-x", PORT, true).replace(
        "metadata: {name: reviews-fork, namespace: default}",
        "metadata: {name: reviews-fork, namespace: default, labels: {detour.dev/fork: \"true\"}}",
    );
    let created = cluster.plane.kubectl_as(
        &kubeconfig,
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&fork),
    );
    assert!(created.status.success(), "{created:?}");

    // A StatefulSet likewise; and of volume claims, only a Sandbox's.
    let claim = |name: &str, labels: &str| {
        format!(
            "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}, namespace: \
             default, labels: {{{labels}}}}}\nspec: {{accessModes: [ReadWriteOnce], resources: \
             {{requests: {{storage: 1Gi}}}}}}\n"
        )
    };
    let baseline_set = "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db, namespace: \
                        default}\nspec: {serviceName: db, selector: {matchLabels: {app: db}}, \
                        template: {metadata: {labels: {app: db}}, spec: {containers: [{name: db, \
                        image: detour.dev/test-host}]}}}\n";
    cluster.apply(&format!(
        "{baseline_set}---\n{}---\n{}",
        claim("data-db-0", "app: db"),
        claim("data-db-x-0", "app: db, detour.dev/sandbox: x")
    ));
    let as_controller = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["-n", "default", "--dry-run=server"]);
        cluster.plane.kubectl_as(&kubeconfig, &all, None)
    };
    let refused = as_controller(&["delete", "statefulset", "db"]);
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("fork Deployments and StatefulSets"),
        "{refused:?}"
    );
    let refused = as_controller(&["delete", "pvc", "data-db-0"]);
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("volume claims of a Sandbox's forks"),
        "{refused:?}"
    );
    let deleted = as_controller(&["delete", "pvc", "data-db-x-0"]);
    assert!(deleted.status.success(), "{deleted:?}");
}

#[test]
fn the_ci_example_script_runs_a_pull_requests_sandbox_end_to_end() {
    if !require_root() {
        return;
    }
    let cluster = Cluster::start("dci");
    // No SERVED_BY: each pod answers with its own name, so the fork
    // (a copy of this Deployment) is told apart by its pods' names.
    cluster.reviews_baseline(CLUSTER_IP, PORT, true);
    let kubeconfig = cluster
        .plane
        .service_account_kubeconfig("detour", "detour-controller");
    let _controller = cluster.controller(&kubeconfig, "controller-0");
    let _agent = cluster.agent().spawn();

    // The job's test: a keyed request from the client pod, in the cgroup.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/ci-sandbox.sh");
    let client = format!(
        "nsenter --net={} -- sh -c 'echo $$ > {}/cgroup.procs && curl -sf -D - -o /dev/null \
         -H \"baggage: detour-routing-key=$DETOUR_ROUTING_KEY\" http://{CLUSTER_IP}:{PORT}/'",
        cluster.net.pod("client").netns.path(),
        cluster.cgroup.path().display(),
    );
    let tools = detour_tests::controlplane::tool("kubectl");
    let path = format!(
        "{}:{}",
        tools.parent().expect("tools dir").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = std::process::Command::new("nsenter")
        .arg(format!("--net={}", cluster.net.node().path()))
        .args([
            "--",
            "sh",
            script,
            "9",
            "detour.dev/test-echo:pr-9",
            "sh",
            "-c",
            &client,
        ])
        .env("PATH", path)
        .env("KUBECONFIG", &cluster.plane.admin_kubeconfig)
        .output()
        .expect("ci-sandbox.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The fork answered (its pods are named after the fork Deployment).
    assert!(stdout.contains("X-Served-By: reviews-pr-9-"), "{stdout}");
    // And the script deleted the Sandbox on its way out.
    let deadline = Instant::now() + Duration::from_secs(30);
    while cluster
        .plane
        .kubectl_output(&["get", "sandbox", "pr-9", "-n", "default"])
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "the Sandbox outlived the job");
        std::thread::sleep(Duration::from_millis(200));
    }
}
