//! A cluster-sized route table through the real API server: 1,000
//! Services, 1,000 EndpointSlices and 200 Sandboxes created while the agent
//! watches. The agent takes them all in, and still steers a real keyed
//! request to its fork among them. The time from the last create to the
//! route table holding everything is printed (a figure for the notes, never
//! asserted: the machines are shared and noisy).
//!
//! These need root. Without it each test fails and says so, unless
//! `DETOUR_SKIP_ROOT_TESTS=1` is set.

use std::{
    fmt::Write as _,
    time::{Duration, Instant},
};

use detour_tests::{Cluster, cluster::echo_deployment, require_root};

const SERVICES: usize = 1_000;
const SANDBOXES: usize = 200;
const PORT: u16 = 8080;

/// Selector-less Services (their slices are written here, as a controller
/// other than Kubernetes' own would), one slice each, and Sandboxes forking
/// the first `SANDBOXES` of them.
fn objects() -> String {
    let mut yaml = String::new();
    for i in 0..SERVICES {
        let (high, low) = (i / 250, i % 250 + 1);
        let _ = write!(
            yaml,
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: default}}\n\
             spec: {{ports: [{{name: http, port: {PORT}, appProtocol: http}}]}}\n\
             ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: svc-{i}-1, namespace: default, labels: {{kubernetes.io/service-name: svc-{i}}}}}\n\
             addressType: IPv4\nendpoints: [{{addresses: [10.250.{high}.{low}], conditions: {{ready: true}}}}]\n\
             ports: [{{name: http, port: {PORT}, protocol: TCP}}]\n"
        );
    }
    for i in 0..SANDBOXES {
        let _ = write!(
            yaml,
            "---\napiVersion: detour.dev/v1alpha1\nkind: Sandbox\nmetadata: {{name: sbx-{i}, namespace: default}}\n\
             spec: {{routingKey: key-{i}, forks: [{{service: {{name: svc-{i}}}, selector: {{matchLabels: {{app: fork-{i}}}}}}}]}}\n"
        );
    }
    yaml
}

#[test]
fn a_thousand_services_and_two_hundred_sandboxes_through_the_api_are_taken_in() {
    if !require_root() {
        return;
    }
    let cluster = Cluster::start("dks");
    cluster.apply(&format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: reviews, namespace: default}}\n\
         spec: {{clusterIP: 10.96.0.30, selector: {{app: reviews, version: v1}}, \
         ports: [{{name: http, port: {PORT}, appProtocol: http}}]}}\n{}{}",
        echo_deployment("reviews", "v1", PORT, false),
        echo_deployment("reviews-fork", "feature-x", PORT, true),
    ));
    let baseline = cluster.ready_pods("default", "app=reviews,version=v1");
    cluster.ready_pods("default", "version=feature-x");
    cluster.route_cluster_ip("10.96.0.30", &baseline[0]);
    let agent = cluster.agent().log_filter("info").spawn();

    let file = std::env::temp_dir().join(detour_tests::unique_name("detour-scale-"));
    std::fs::write(&file, objects()).expect("objects file");
    let created = Instant::now();
    cluster
        .plane
        .kubectl(&["create", "-f", &file.display().to_string(), "-o", "name"]);
    let _ = std::fs::remove_file(&file);
    let creating = created.elapsed();
    let last_create = Instant::now();
    let sandboxes = "detour_routes{kind=\"sandboxes\"}";
    let deadline = last_create + Duration::from_secs(120);
    while agent.metric(sandboxes) < SANDBOXES as u64 {
        assert!(
            Instant::now() < deadline,
            "{} of {SANDBOXES} Sandboxes in the route table after 120 s\n{}",
            agent.metric(sandboxes),
            agent.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let taken_in = last_create.elapsed();
    eprintln!(
        "scale: {SERVICES} Services, {SERVICES} EndpointSlices and {SANDBOXES} Sandboxes created \
         through the API in {:.1} s; in the agent's route table {} ms after the last create",
        creating.as_secs_f64(),
        taken_in.as_millis()
    );

    // Among them, a real fork still answers its key.
    cluster.apply(
        "apiVersion: detour.dev/v1alpha1\nkind: Sandbox\nmetadata: {name: feature-x, namespace: default}\n\
         spec: {routingKey: feature-x, forks: [{service: {name: reviews}, selector: {matchLabels: {version: feature-x}}}]}\n",
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let output = cluster.net.pod("client").exec_in(
            &cluster.cgroup,
            "curl",
            &[
                "-sS",
                "-m",
                "5",
                "-o",
                "/dev/null",
                "-D",
                "-",
                "-H",
                "baggage: detour-routing-key=feature-x",
                &format!("http://10.96.0.30:{PORT}/"),
            ],
        );
        if String::from_utf8_lossy(&output.stdout).contains("X-Served-By: reviews-fork") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the keyed request never reached the fork\n{}",
            agent.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(agent.metric(sandboxes), SANDBOXES as u64 + 1);
}
