//! What every real-node test starts from: a node with detour installed
//! from `deploy/` as a user does, the `reviews` app, a client pod, and the
//! example Sandbox; and the ways a test calls into it.

use std::{
    process::Output,
    time::{Duration, Instant},
};

use detour_tests::node::KubeNode;

pub const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");
const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");

/// The baseline `reviews-v1` (HTTP on 8080, gRPC on 9090, answering with
/// its pod's name), its ClusterIP Service, and a `client` pod to call it
/// from; all from the test image.
pub const APP: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v1, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: reviews, version: v1}}
  template:
    metadata: {labels: {app: reviews, version: v1}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: reviews
          image: detour.dev/test-node:1
          env:
            - name: POD_NAME
              valueFrom: {fieldRef: {fieldPath: metadata.name}}
          ports: [{name: http, containerPort: 8080}, {name: grpc, containerPort: 9090}]
          readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  selector: {app: reviews}
  ports:
    - {name: http, port: 80, targetPort: http, appProtocol: http}
    - {name: grpc, port: 9090, targetPort: grpc, appProtocol: grpc}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: default, labels: {app: client}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: client
      image: detour.dev/test-node:1
      env: [{name: POD_NAME, value: client}]
"#;

pub const KEYED: &str = "baggage: detour-routing-key=feature-x";

/// A node with detour installed from `deploy/`, the app, and the example
/// Sandbox (its fork's image set to the test image's second tag).
pub fn installed() -> KubeNode {
    let node = KubeNode::start();
    install_deploy(&node);
    apply_app(&node);
    apply_sandbox(&node);
    node
}

/// `kubectl apply -k deploy/`, until the agent and the controller are
/// rolled out.
pub fn install_deploy(node: &KubeNode) {
    node.kubectl(&["apply", "-k", DEPLOY]);
    node.kubectl(&[
        "-n",
        "detour",
        "rollout",
        "status",
        "daemonset/detour",
        "deployment/detour-controller",
        "--timeout=180s",
    ]);
}

/// The app ([`APP`]), until its pods are Ready.
pub fn apply_app(node: &KubeNode) {
    node.plane.apply(APP);
    for selector in [&["pod/client"][..], &["pod", "-l", "app=reviews"][..]] {
        let mut args = vec!["wait", "--for=condition=Ready", "--timeout=120s"];
        args.extend(selector);
        node.kubectl(&args);
    }
}

/// The example Sandbox, until it is Ready.
pub fn apply_sandbox(node: &KubeNode) {
    node.plane.apply(&sandbox_example());
    node.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "sandbox/feature-x",
        "--timeout=120s",
    ]);
}

/// `examples/sandbox.yaml` as a user applies it, its fork's image set to
/// the test image's second tag (the example names an image from a registry).
pub fn sandbox_example() -> String {
    std::fs::read_to_string(format!("{EXAMPLES}/sandbox.yaml"))
        .expect("examples/sandbox.yaml")
        .replace(
            "docker.io/istio/examples-bookinfo-reviews-v2:1.20.2",
            "detour.dev/test-node:2",
        )
}

/// The `reviews` Service's ClusterIP.
pub fn cluster_ip(node: &KubeNode) -> String {
    node.kubectl(&[
        "get",
        "service",
        "reviews",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ])
}

/// `curl` in the client pod; the body, or why nothing answered.
pub fn curl(node: &KubeNode, url: &str, headers: &[&str]) -> String {
    curl_from(node, "client", url, headers)
}

/// `curl` in `pod`; the body, or why nothing answered.
pub fn curl_from(node: &KubeNode, pod: &str, url: &str, headers: &[&str]) -> String {
    let mut args = vec!["exec", pod, "--", "curl", "-sS", "-m", "5"];
    for header in headers {
        args.extend(["-H", header]);
    }
    args.push(url);
    let mut attempts = 0;
    loop {
        let output = node.kubectl_output(&args);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
        // `kubectl exec` itself failed (the API server or the kubelet's
        // streaming, under load), not curl: curl did not run, so there is
        // nothing of detour to see yet; run it again.
        let exec_failed = stdout.is_empty() && !stderr.contains("curl:");
        attempts += 1;
        if !exec_failed || attempts == 3 {
            return format!("{stdout}{stderr}");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Polls `check` until it holds (the agent learns of the fork from its own
/// watches, a moment after the Sandbox is Ready).
pub fn eventually(what: &str, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match check() {
            Ok(()) => return,
            Err(last) if Instant::now() > deadline => panic!("{what}: {last}"),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// What an operator would look at when a request went astray: the pods,
/// the Sandboxes, the agent's routes and the end of its log.
pub fn diagnose(node: &KubeNode) -> String {
    let text = |output: Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    };
    [
        text(node.kubectl_output(&["get", "pods", "-A", "-o", "wide"])),
        text(node.kubectl_output(&["get", "sandboxes", "-A", "-o", "yaml"])),
        text(detour(node, &["routes"])),
        text(node.kubectl_output(&["logs", "-n", "detour", "ds/detour", "--tail=40"])),
    ]
    .join("\n")
}

/// `detour ARGS` in the agent's pod, as an operator runs it.
pub fn detour(node: &KubeNode, args: &[&str]) -> Output {
    let mut full = vec!["exec", "-n", "detour", "ds/detour", "--", "detour"];
    full.extend(args);
    node.kubectl_output(&full)
}

/// `detour ARGS -o json`, parsed; panics with its output if it fails.
pub fn detour_json(node: &KubeNode, args: &[&str]) -> serde_json::Value {
    let mut full = args.to_vec();
    full.extend(["-o", "json"]);
    let output = detour(node, &full);
    assert!(
        output.status.success(),
        "detour {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("detour {} -o json: {e}", args.join(" ")))
}

/// Waits until a keyed request from the client reaches the fork (the agent
/// learns of it from its own watches, a moment after the Sandbox is Ready).
pub fn wait_steered(node: &KubeNode) {
    let url = format!("http://{}/", cluster_ip(node));
    eventually("a keyed HTTP/1.1 request reaches the fork", || {
        let body = curl(node, &url, &[KEYED]);
        body.contains(FORK)
            .then_some(())
            .ok_or_else(|| format!("{body}\n{}", diagnose(node)))
    });
}

/// Once steered: keyed requests reach the fork and unkeyed ones baseline,
/// `times` each.
pub fn assert_steers(node: &KubeNode, times: usize) {
    wait_steered(node);
    let url = format!("http://{}/", cluster_ip(node));
    for _ in 0..times {
        let keyed = curl(node, &url, &[KEYED]);
        assert!(keyed.starts_with(FORK), "{keyed}\n{}", diagnose(node));
        let unkeyed = curl(node, &url, &[]);
        assert!(
            unkeyed.starts_with(BASELINE) && !unkeyed.starts_with(FORK),
            "{unkeyed}\n{}",
            diagnose(node)
        );
    }
}

/// The flow of a long-lived keyed gRPC channel from the client to `grpc`
/// (`ClusterIP:9090`), as `detour flows -o json` lists it while it lives.
pub fn live_grpc_flow(node: &KubeNode, grpc: &str) -> serde_json::Value {
    let mut channel = node
        .plane
        .kubectl_command(&[
            "exec",
            "client",
            "--",
            "grpc-probe",
            "-n",
            "30",
            "-interval",
            "200ms",
            "-H",
            KEYED,
            grpc,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("grpc-probe");
    let deadline = Instant::now() + Duration::from_secs(15);
    let flow = loop {
        let flows = detour_json(node, &["flows"]);
        let found = flows["flows"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|f| f["service"] == "default/reviews")
            .cloned();
        if let Some(flow) = found {
            break flow;
        }
        assert!(Instant::now() < deadline, "no flow of the channel: {flows}");
        std::thread::sleep(Duration::from_millis(300));
    };
    let _ = channel.kill();
    let _ = channel.wait();
    flow
}

/// What a fork pod's answers start with (`hello from <pod>`).
pub const FORK: &str = "hello from reviews-v1-feature-x-";
/// What a baseline pod's answers start with.
pub const BASELINE: &str = "hello from reviews-v1-";
