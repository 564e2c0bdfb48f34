//! The test control plane itself, and what only a real API server can say
//! about detour's manifests: `deploy/` applies (CRD schemas accepted as
//! structural, RBAC objects valid), `kubectl explain` documents the CRDs,
//! and a Deployment's pods run on the simulated node and become
//! EndpointSlice endpoints through the real controllers.
//!
//! These need root. Without it each test fails and says so, unless
//! `DETOUR_SKIP_ROOT_TESTS=1` is set.

use std::time::{Duration, Instant};

use detour_tests::{
    Cgroup, ControlPlane, Topology, controlplane::kubelet::NodeSim, require_root, unique_name,
};
use serde_json::Value;

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");
const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");

/// The YAML files directly in `dir`.
fn yaml_files(dir: &str) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            (path.extension()? == "yaml").then(|| path.display().to_string())
        })
        .collect();
    files.sort();
    files
}

/// A Sandbox with `spec` (YAML flow mapping).
fn sandbox(spec: &str) -> String {
    format!(
        "apiVersion: detour.dev/v1alpha1\nkind: Sandbox\nmetadata: {{name: s, namespace: default}}\nspec: {spec}\n"
    )
}

fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what} not within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn deploy_applies_to_a_real_api_server_and_its_crds_are_documented() {
    if !require_root() {
        return;
    }
    let net = Topology::builder("dcp").build();
    let plane = ControlPlane::start_in(net.node());
    plane.kubectl(&["apply", "-k", DEPLOY]);
    for crd in ["sandboxes.detour.dev", "routegroups.detour.dev"] {
        plane.kubectl(&[
            "wait",
            "--for=condition=Established",
            &format!("crd/{crd}"),
            "--timeout=30s",
        ]);
    }
    // The API server publishes a new CRD's OpenAPI a moment after the CRD
    // is established.
    let explained = wait_for(
        "kubectl explain sandbox.spec",
        Duration::from_secs(60),
        || {
            let output = plane.kubectl_output(&["explain", "sandbox.spec"]);
            output
                .status
                .success()
                .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
        },
    );
    assert!(explained.contains("routingKey"), "{explained}");
    assert!(explained.contains("forks"), "{explained}");
    // The agent's ServiceAccount exists, with the read-only grants.
    let can = plane.kubectl(&[
        "auth",
        "can-i",
        "watch",
        "sandboxes.detour.dev",
        "--as=system:serviceaccount:detour:detour",
    ]);
    assert_eq!(can.trim(), "yes");
    let cannot = plane.kubectl_output(&[
        "auth",
        "can-i",
        "delete",
        "pods",
        "--as=system:serviceaccount:detour:detour",
    ]);
    assert_eq!(String::from_utf8_lossy(&cannot.stdout).trim(), "no");

    // Every manifest a user applies is accepted by the server as it stands
    // (a server-side dry run: admission, schemas, field validation).
    let routes_file = format!("{EXAMPLES}/routes.yaml");
    for file in yaml_files(DEPLOY)
        .into_iter()
        .chain(yaml_files(&format!("{DEPLOY}/crds")))
        .chain(yaml_files(EXAMPLES))
        .filter(|f| *f != routes_file && !f.ends_with("kustomization.yaml"))
    {
        plane.kubectl(&["apply", "--dry-run=server", "-f", &file]);
    }
}

#[test]
fn the_api_server_rejects_invalid_sandboxes_with_a_clear_message() {
    if !require_root() {
        return;
    }
    let net = Topology::builder("dcp").build();
    let plane = ControlPlane::start_in(net.node());
    plane.kubectl(&["apply", "-f", &format!("{DEPLOY}/crds")]);
    plane.kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/sandboxes.detour.dev",
        "--timeout=30s",
    ]);
    let selector = "{matchLabels: {app: reviews}}";
    let valid = sandbox(&format!(
        "{{routingKey: feature-x, ttl: 2h, forks: [{{service: {{name: reviews}}, selector: {selector}}}]}}"
    ));
    plane.apply(&valid);
    // A fork the controller makes, with every customization.
    plane.apply(&sandbox(
        "{routingKey: pr-7, forks: [{service: {name: reviews}, forkOf: {kind: Deployment, name: reviews}, \
         customizations: {images: [{container: reviews, image: 'reviews:pr-7'}], \
         env: [{name: FEATURE, value: 'on'}], replicas: 2, \
         patch: {type: json, patch: [{op: add, path: /metadata/annotations/x, value: y}]}}}]}",
    ));
    for (spec, message) in [
        (
            format!(
                "{{routingKey: 'has space', forks: [{{service: {{name: reviews}}, selector: {selector}}}]}}"
            ),
            "spec.routingKey",
        ),
        (
            format!(
                "{{routingKey: k, ttl: forever, forks: [{{service: {{name: reviews}}, selector: {selector}}}]}}"
            ),
            "spec.ttl",
        ),
        (
            "{routingKey: k, forks: [{service: {name: reviews}, selector: {}}]}".to_owned(),
            "an empty one would select every pod",
        ),
        (
            "{routingKey: k, forks: [{service: {name: reviews}}]}".to_owned(),
            "a fork needs forkOf",
        ),
        (
            "{routingKey: k, forks: [{service: {name: reviews}, forkOf: {kind: DaemonSet, name: db}}]}".to_owned(),
            "spec.forks[0].forkOf.kind",
        ),
        (
            format!(
                "{{routingKey: k, forkz: [], forks: [{{service: {{name: reviews}}, selector: {selector}}}]}}"
            ),
            "unknown field \"spec.forkz\"",
        ),
    ] {
        let output = plane.kubectl_as(
            &plane.admin_kubeconfig,
            &["apply", "-f", "-"],
            Some(&sandbox(&spec)),
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "accepted: {spec}");
        assert!(stderr.contains(message), "{spec}: {stderr}");
    }
}

#[test]
fn the_helm_chart_lints_clean_and_installs_into_a_real_cluster() {
    if !require_root() {
        return;
    }
    let net = Topology::builder("dcp").build();
    let plane = ControlPlane::start_in(net.node());
    let chart = format!("{DEPLOY}/helm/detour");
    let helm = |args: &[&str]| {
        let output = net.node().exec(
            &detour_tests::controlplane::tool("helm")
                .display()
                .to_string(),
            &[
                &[
                    "--kubeconfig",
                    &plane.admin_kubeconfig.display().to_string(),
                ],
                args,
            ]
            .concat(),
        );
        assert!(
            output.status.success(),
            "helm {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let lint = helm(&["lint", &chart]);
    assert!(lint.contains("0 chart(s) failed"), "{lint}");
    helm(&[
        "install",
        "detour",
        &chart,
        "--namespace",
        "detour",
        "--create-namespace",
    ]);
    let daemonset = plane.kubectl(&["get", "daemonset", "detour", "-n", "detour", "-o", "json"]);
    let daemonset: Value = serde_json::from_str(&daemonset).expect("daemonset");
    assert_eq!(
        daemonset["spec"]["updateStrategy"]["rollingUpdate"]["maxSurge"],
        1
    );
    plane.kubectl(&[
        "get",
        "crd",
        "sandboxes.detour.dev",
        "routegroups.detour.dev",
    ]);
    plane.kubectl(&["get", "clusterrole", "detour"]);
}

#[test]
fn a_deployments_pods_run_on_the_simulated_node_and_become_endpoints() {
    if !require_root() {
        return;
    }
    let net = Topology::builder("dcp").pod("client").build();
    let plane = ControlPlane::start_in(net.node());
    let pods = Cgroup::new(&unique_name("detour-dcp-"));
    let _node = NodeSim::start(
        net.node(),
        net.base(),
        plane.admin_kubeconfig.clone(),
        pods.path().to_owned(),
    );
    plane.apply(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: reviews}}
  template:
    metadata: {labels: {app: reviews}}
    spec:
      containers:
        - name: reviews
          image: detour.dev/test-echo:1
          ports: [{containerPort: 8080}]
          env: [{name: SERVED_BY, value: reviews}]
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  selector: {app: reviews}
  ports: [{port: 80, targetPort: 8080}]
"#,
    );
    let endpoints: Vec<String> = wait_for("two ready endpoints", Duration::from_secs(60), || {
        let json = plane.kubectl(&[
            "get",
            "endpointslices",
            "-n",
            "default",
            "-l",
            "kubernetes.io/service-name=reviews",
            "-o",
            "json",
        ]);
        let slices: Value = serde_json::from_str(&json).ok()?;
        let ready: Vec<String> = slices["items"]
            .as_array()?
            .iter()
            .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
            .filter(|e| e["conditions"]["ready"] == true)
            .filter_map(|e| e["addresses"][0].as_str().map(str::to_owned))
            .collect();
        (ready.len() == 2).then_some(ready)
    });
    // The endpoints are real processes: each answers on its pod IP.
    for ip in &endpoints {
        let output = net
            .pod("client")
            .exec("curl", &["-sf", "-m", "2", &format!("http://{ip}:8080/")]);
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("hello from reviews"),
            "{ip}: {output:?}"
        );
    }
    // Scaled down: a pod is deleted, its process stopped, its endpoint gone.
    plane.kubectl(&["scale", "deployment/reviews", "--replicas=1"]);
    wait_for("one endpoint", Duration::from_secs(60), || {
        let json = plane.kubectl(&["get", "pods", "-n", "default", "-o", "json"]);
        let pods: Value = serde_json::from_str(&json).ok()?;
        (pods["items"].as_array()?.len() == 1).then_some(())
    });
}
