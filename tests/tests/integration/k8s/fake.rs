//! The Kubernetes route source against faults only a stand-in can make on
//! demand: the real agent (`--kubernetes`) lists and watches an in-process
//! fake API server ([`detour_tests::FakeApiServer`]) that speaks the real
//! list/watch protocol. It holds one resource's initial list unanswered
//! while answering the others, which a real API server does not do on
//! demand: readiness must wait for every list. Everything else about
//! Kubernetes is tested against the real control plane
//! (`tests/tests/integration/k8s/`, `rbac.rs`, `control_plane.rs`).
//!
//! These need root. Without it each test fails and says so, unless
//! `DETOUR_SKIP_ROOT_TESTS=1` is set.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use detour_tests::{
    Agent, AgentBuilder, Cgroup, FakeApiServer, Topology, cmd::Proc, require_root, unique_name,
};
use serde_json::{Value, json};

const PORT: u16 = 8080;
const VIP: &str = "10.96.0.10";
const KEYED: &str = "baggage: detour-routing-key=feature-x";
/// The resources the agent lists and watches (agent/src/k8s WATCHED).
const WATCHED: [&str; 5] = [
    "services",
    "endpointslices",
    "pods",
    "sandboxes",
    "routegroups",
];

/// A client, the baseline `reviews` pod behind the Service VIP, and its
/// fork pod, each running the echo server; a fake API server in the node's
/// namespace, and a kubeconfig for it.
struct Setup {
    fake: FakeApiServer,
    kubeconfig: PathBuf,
    net: Topology,
    cgroup: Cgroup,
    _servers: Vec<Proc>,
}

impl Setup {
    fn new() -> Self {
        let net = Topology::builder("dk")
            .pod("client")
            .pod("reviews")
            .pod("reviews-fork")
            .vip("reviews", VIP)
            .build();
        let servers = vec![
            net.pod("reviews").echo_server(PORT),
            net.pod("reviews-fork").echo_server(PORT),
        ];
        let fake = FakeApiServer::start_in(Some(&net.node().path()));
        let kubeconfig = std::env::temp_dir().join(unique_name("detour-kubeconfig-"));
        fake.write_kubeconfig(&kubeconfig);
        let cgroup = Cgroup::new(&unique_name("detour-k8s-"));
        let setup = Self {
            fake,
            kubeconfig,
            net,
            cgroup,
            _servers: servers,
        };
        setup.apply_baseline();
        setup
    }

    /// The Service, its EndpointSlice (the baseline pod) and the fork pod.
    fn apply_baseline(&self) {
        self.apply_service(json!({}));
        self.fake.apply(json!({
            "kind": "EndpointSlice",
            "apiVersion": "discovery.k8s.io/v1",
            "metadata": {
                "name": "reviews-abc",
                "namespace": "default",
                "labels": {"kubernetes.io/service-name": "reviews"},
            },
            "addressType": "IPv4",
            "endpoints": [{
                "addresses": [self.net.pod("reviews").ip4.to_string()],
                "conditions": {"ready": true},
            }],
            "ports": [{"name": "http", "port": PORT, "protocol": "TCP"}],
        }));
        self.apply_fork_pod(true);
    }

    /// The `reviews` Service with these annotations.
    fn apply_service(&self, annotations: Value) {
        self.fake.apply(json!({
            "kind": "Service",
            "apiVersion": "v1",
            "metadata": {"name": "reviews", "namespace": "default", "annotations": annotations},
            "spec": {
                "type": "ClusterIP",
                "clusterIP": VIP,
                "clusterIPs": [VIP],
                "selector": {"app": "reviews"},
                "ports": [{
                    "name": "http", "port": PORT, "targetPort": PORT,
                    "protocol": "TCP", "appProtocol": "http",
                }],
            },
        }));
    }

    /// The fork pod, ready or not.
    fn apply_fork_pod(&self, ready: bool) {
        let ip = self.net.pod("reviews-fork").ip4.to_string();
        self.fake.apply(json!({
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {
                "name": "reviews-fork-1",
                "namespace": "default",
                "labels": {"app": "reviews", "version": "feature-x", "detour.dev/fork": "true"},
            },
            "spec": {"containers": [{"name": "app", "ports": [{"containerPort": PORT}]}]},
            "status": {
                "phase": "Running",
                "podIP": ip,
                "podIPs": [{"ip": ip}],
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
            },
        }));
    }

    fn apply_sandbox(&self) -> Value {
        self.fake.apply(json!({
            "apiVersion": "detour.dev/v1alpha1",
            "kind": "Sandbox",
            "metadata": {"name": "feature-x", "namespace": "default"},
            "spec": {
                "routingKey": "feature-x",
                "forks": [{
                    "service": {"name": "reviews"},
                    "selector": {"matchLabels": {"app": "reviews", "version": "feature-x"}},
                }],
            },
        }))
    }

    fn agent(&self) -> AgentBuilder<'_> {
        Agent::builder(&self.net, &self.cgroup).kubernetes(&self.kubeconfig)
    }

    /// Which pod served `GET http://VIP:8080/` from the client (in the
    /// cgroup), with `headers`.
    fn served_by(&self, headers: &[&str]) -> String {
        let url = format!("http://{VIP}:{PORT}/");
        let mut args = vec!["-sS", "-m", "5", "-o", "/dev/null", "-D", "-"];
        for header in headers {
            args.extend(["-H", header]);
        }
        args.push(&url);
        let output = self.net.pod("client").exec_in(&self.cgroup, "curl", &args);
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

    /// Polls until a keyed request is served by `pod`, for up to 5 s.
    fn keyed_reaches(&self, pod: &str, agent: &Agent, why: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut last = String::new();
        while Instant::now() < deadline {
            last = self.served_by(&[KEYED]);
            if last == pod {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "{why}: a keyed request still reaches {last}, not {pod}, after 5s\n\
             API requests: {:#?}\n--- agent log ---\n{}",
            self.fake.requests(),
            agent.logs()
        );
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.kubeconfig);
    }
}

#[test]
fn not_ready_until_every_initial_list_is_answered() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    setup.apply_sandbox();
    setup.fake.pause_lists("sandboxes");
    let mut agent = setup.agent().start();

    // Every other resource is listed and watched; sandboxes' list is held.
    let deadline = Instant::now() + Duration::from_secs(20);
    let others_watched = |fake: &FakeApiServer| {
        WATCHED
            .iter()
            .filter(|r| **r != "sandboxes")
            .all(|r| fake.watch_requests(r) >= 1)
    };
    while setup.fake.list_requests("sandboxes") == 0 || !others_watched(&setup.fake) {
        assert!(agent.is_running(), "agent exited:\n{}", agent.logs());
        assert!(
            Instant::now() < deadline,
            "the agent did not list everything within 20s: {:#?}\n{}",
            setup.fake.requests(),
            agent.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for _ in 0..10 {
        assert_eq!(
            agent.http_status("/readyz"),
            Some(503),
            "ready before the sandboxes list was answered"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    setup.fake.resume_lists("sandboxes");
    agent.wait_ready();
    assert_eq!(agent.http_status("/readyz"), Some(200));
    setup.keyed_reaches("reviews-fork", &agent, "once ready");
}
