//! The Kubernetes route source end to end, against a real control plane
//! ([`detour_tests::Cluster`]: etcd, kube-apiserver with RBAC,
//! kube-controller-manager, pods run by the node simulator). The agent runs
//! as the DaemonSet's ServiceAccount, so `deploy/rbac.yaml` is enforced, not
//! just read. Workloads are Deployments and Services as a user writes them;
//! the real EndpointSlice controller makes the slices the agent watches.
//! Real requests follow what the API says: to the fork once a Sandbox
//! exists, back to baseline when its fork has no ready pod (also in the
//! middle of a keep-alive stream) or the Sandbox is gone, and steering goes
//! on with the last state while the API server restarts or hangs.
//!
//! These need root. Without it each test fails and says so, unless
//! `DETOUR_SKIP_ROOT_TESTS=1` is set.

use std::time::{Duration, Instant};

use detour_tests::{Agent, Cluster, cluster::echo_deployment, require_root};

const PORT: u16 = 8080;
/// In the API server's Service range.
const CLUSTER_IP: &str = "10.96.0.10";
const KEYED: &str = "baggage: detour-routing-key=feature-x";
const LOOP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/loop.py");
const FORK: &str = "app=reviews,version=feature-x";

/// A `reviews` Deployment and Service (v1 pods only), and a fork
/// Deployment (`version: feature-x`, labelled `detour.dev/fork`), each pod
/// answering with its Deployment's name.
fn workloads(service_annotations: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Service
metadata:
  name: reviews
  namespace: default
  annotations: {{{service_annotations}}}
spec:
  clusterIP: {CLUSTER_IP}
  selector: {{app: reviews, version: v1}}
  ports: [{{name: http, port: {PORT}, targetPort: {PORT}, appProtocol: http}}]
{baseline}{fork}"#,
        baseline = echo_deployment("reviews", "v1", PORT, false),
        fork = echo_deployment("reviews-fork", "feature-x", PORT, true),
    )
}

const SANDBOX: &str = r#"
apiVersion: detour.dev/v1alpha1
kind: Sandbox
metadata: {name: feature-x, namespace: default}
spec:
  routingKey: feature-x
  forks:
    - service: {name: reviews}
      selector: {matchLabels: {app: reviews, version: feature-x}}
"#;

struct Setup {
    cluster: Cluster,
}

impl Setup {
    fn new(service_annotations: &str) -> Self {
        let cluster = Cluster::start("dk");
        cluster.apply(&workloads(service_annotations));
        let baseline = cluster.ready_pods("default", "app=reviews,version=v1");
        cluster.ready_pods("default", FORK);
        cluster.route_cluster_ip(CLUSTER_IP, &baseline[0]);
        Self { cluster }
    }

    /// Which Deployment served `GET http://CLUSTER_IP:8080/` from the client
    /// (in the cgroup), with `headers`.
    fn served_by(&self, headers: &[&str]) -> String {
        let url = format!("http://{CLUSTER_IP}:{PORT}/");
        let mut args = vec!["-sS", "-m", "5", "-o", "/dev/null", "-D", "-"];
        for header in headers {
            args.extend(["-H", header]);
        }
        args.push(&url);
        let net = &self.cluster.net;
        let output = net
            .pod("client")
            .exec_in(&self.cluster.cgroup, "curl", &args);
        assert!(
            output.status.success(),
            "curl failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .find_map(|line| line.strip_prefix("X-Served-By: "))
            .map(|name| name.trim().to_owned())
            .unwrap_or_else(|| panic!("no X-Served-By in {:?}", output.stdout))
    }

    /// Polls until a keyed request is served by `pod`, for up to 10 s.
    fn keyed_reaches(&self, pod: &str, agent: &Agent, why: &str) {
        self.keyed_reaches_within(pod, agent, why, Duration::from_secs(10));
    }

    fn keyed_reaches_within(&self, pod: &str, agent: &Agent, why: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut last = String::new();
        while Instant::now() < deadline {
            last = self.served_by(&[KEYED]);
            if last == pod {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "{why}: a keyed request still reaches {last}, not {pod}, after {limit:?}\n--- agent log ---\n{}",
            agent.logs()
        );
    }

    /// `loop.py` for `seconds`: keyed requests on one keep-alive connection.
    fn keyed_loop(&self, seconds: &str) -> std::process::Child {
        let (name, value) = KEYED.split_once(": ").expect("header");
        self.cluster.net.pod("client").spawn_in(
            &self.cluster.cgroup,
            "python3",
            &[LOOP, CLUSTER_IP, &PORT.to_string(), seconds, name, value],
        )
    }
}

/// The outcome of each request of a `loop.py` run ("200 reviews-fork").
fn outcomes(client: std::process::Child) -> Vec<String> {
    let output = client.wait_with_output().expect("loop client");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            line.split_whitespace()
                .skip(1)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

#[test]
fn a_sandbox_steers_keyed_requests_with_the_daemonsets_own_permissions() {
    if !require_root() {
        return;
    }
    let setup = Setup::new("");
    let agent = setup.cluster.agent().spawn();

    // No Sandbox: the Service has no fork, so it is not even steered.
    assert_eq!(setup.served_by(&[KEYED]), "reviews");
    assert_eq!(agent.bpf_event("redirected"), 0);

    setup.cluster.apply(SANDBOX);
    setup.keyed_reaches("reviews-fork", &agent, "after the Sandbox was created");
    assert_eq!(setup.served_by(&[]), "reviews", "an unkeyed request");
    assert_eq!(
        setup.served_by(&["baggage: detour-routing-key=other"]),
        "reviews",
        "another key"
    );

    // The fork's pod fails its readiness probe: its endpoint turns unready
    // and keyed requests fall back to baseline; then it recovers.
    setup.cluster.set_ready("default", FORK, false);
    setup.keyed_reaches("reviews", &agent, "after the fork pod turned unready");
    setup.cluster.set_ready("default", FORK, true);
    setup.keyed_reaches("reviews-fork", &agent, "after the fork pod was ready again");

    setup
        .cluster
        .plane
        .kubectl(&["delete", "sandbox", "feature-x", "-n", "default"]);
    setup.keyed_reaches("reviews", &agent, "after the Sandbox was deleted");
    assert_eq!(setup.served_by(&[]), "reviews");
    let log = agent.logs();
    assert!(
        !log.contains("forbidden"),
        "the ServiceAccount's grants were enough:\n{log}"
    );
}

#[test]
fn a_fork_going_unready_mid_stream_sends_the_next_requests_to_baseline() {
    if !require_root() {
        return;
    }
    let setup = Setup::new("");
    let agent = setup.cluster.agent().spawn();
    setup.cluster.apply(SANDBOX);
    setup.keyed_reaches("reviews-fork", &agent, "after the Sandbox was created");

    let client = setup.keyed_loop("5");
    std::thread::sleep(Duration::from_millis(1500));
    setup.cluster.set_ready("default", FORK, false);
    let lines = outcomes(client);
    let switch = lines
        .iter()
        .position(|line| line == "200 reviews")
        .unwrap_or_else(|| panic!("never fell back to baseline: {lines:?}"));
    assert!(switch > 10, "the fork served the stream first: {lines:?}");
    assert!(
        lines[..switch].iter().all(|l| l == "200 reviews-fork")
            && lines[switch..].iter().all(|l| l == "200 reviews"),
        "the fork until its pod was unready, baseline after, nothing failed: {lines:?}"
    );
}

#[test]
fn an_always_steered_service_takes_a_new_sandbox_on_an_open_keep_alive_connection() {
    if !require_root() {
        return;
    }
    let setup = Setup::new(r#""detour.dev/always-steered": "true""#);
    let agent = setup.cluster.agent().spawn();
    let connections = "detour_connections_total{service=\"default/reviews\"}";
    // Steered with no Sandbox: through the proxy to baseline.
    assert_eq!(setup.served_by(&[KEYED]), "reviews");
    assert_eq!(agent.metric(connections), 1, "{}", agent.logs());

    let client = setup.keyed_loop("5");
    std::thread::sleep(Duration::from_millis(1500));
    setup.cluster.apply(SANDBOX);
    let lines = outcomes(client);
    let switch = lines
        .iter()
        .position(|line| line == "200 reviews-fork")
        .unwrap_or_else(|| panic!("the open connection never reached the fork: {lines:?}"));
    assert!(
        switch > 10,
        "baseline served it before the Sandbox: {lines:?}"
    );
    assert!(
        lines[..switch].iter().all(|l| l == "200 reviews")
            && lines[switch..].iter().all(|l| l == "200 reviews-fork"),
        "baseline until the Sandbox, the fork after, nothing failed: {lines:?}"
    );
    assert_eq!(
        agent.metric(connections),
        2,
        "all on the one connection opened before the Sandbox"
    );
}

#[test]
fn steering_goes_on_while_the_api_server_restarts_or_hangs_and_resyncs_after() {
    if !require_root() {
        return;
    }
    let mut setup = Setup::new("");
    let agent = setup.cluster.agent().spawn();
    setup.cluster.apply(SANDBOX);
    setup.keyed_reaches("reviews-fork", &agent, "after the Sandbox was created");

    // Restarted under load: every request is answered, by the fork.
    let client = setup.keyed_loop("6");
    std::thread::sleep(Duration::from_millis(500));
    setup.cluster.plane.restart_apiserver();
    let lines = outcomes(client);
    assert!(lines.len() > 50, "{lines:?}");
    assert!(
        lines.iter().all(|l| l == "200 reviews-fork"),
        "the last state steers while the API server is away: {lines:?}"
    );
    // Re-synced: a change after the restart arrives.
    setup.cluster.set_ready("default", FORK, false);
    setup.keyed_reaches("reviews", &agent, "a change after the API server restarted");
    setup.cluster.set_ready("default", FORK, true);
    setup.keyed_reaches("reviews-fork", &agent, "the fork ready again");

    // Hung (SIGSTOP): connections to it stay open and unanswered.
    setup.cluster.plane.freeze_apiserver(true);
    let client = setup.keyed_loop("3");
    let lines = outcomes(client);
    setup.cluster.plane.freeze_apiserver(false);
    assert!(
        !lines.is_empty() && lines.iter().all(|l| l == "200 reviews-fork"),
        "the last state steers while the API server hangs: {lines:?}"
    );
    assert!(agent.http_get("/readyz").is_some(), "still ready");
    setup
        .cluster
        .plane
        .kubectl(&["delete", "sandbox", "feature-x", "-n", "default"]);
    setup.keyed_reaches("reviews", &agent, "a change after the API server came back");
    let _ = &mut setup;
}

#[test]
fn a_change_made_while_the_agent_could_not_watch_arrives_through_a_relist_after_compaction() {
    if !require_root() {
        return;
    }
    let mut setup = Setup::new("");
    let agent = setup.cluster.agent().spawn();
    setup.cluster.apply(SANDBOX);
    setup.keyed_reaches("reviews-fork", &agent, "after the Sandbox was created");

    // While the agent's API server is away, the Sandbox is deleted through
    // another, and etcd compacts the history the agent would resume from.
    setup.cluster.plane.change_while_away(|plane, kubeconfig| {
        let deleted = plane.kubectl_as(
            kubeconfig,
            &["delete", "sandbox", "feature-x", "-n", "default"],
            None,
        );
        assert!(deleted.status.success(), "{deleted:?}");
    });
    // Steering went on with the last state; the re-list brings the change.
    // A watch that failed repeatedly while the API server was away retries
    // with its backoff (kube-runtime's default: up to 30 s between tries).
    setup.keyed_reaches_within(
        "reviews",
        &agent,
        "after the re-list",
        Duration::from_secs(45),
    );
    let log = agent.logs();
    assert!(
        log.contains("410") || log.contains("too old resource version") || log.contains("Expired"),
        "the agent's watches were told their version is gone:\n{log}"
    );
}
