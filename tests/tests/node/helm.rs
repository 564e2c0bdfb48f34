//! The chart, installed with the real helm on a real node: the same agent
//! and controller as `kubectl apply -k deploy/`, steering a pod's keyed
//! request to the example Sandbox's fork.

use detour_tests::{
    controlplane::tool,
    node::{KubeNode, require_node},
};

use super::setup::{
    APP, BASELINE, FORK, KEYED, cluster_ip, curl, diagnose, sandbox_example, wait_steered,
};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/helm/detour");

#[test]
fn helm_install_of_the_chart_steers_as_the_manifests_do() {
    if !require_node() {
        return;
    }
    let node = KubeNode::start();
    let kubeconfig = format!("--kubeconfig={}", node.plane.admin_kubeconfig.display());
    let helm = tool("helm");
    let installed = node.on_node(
        &helm.display().to_string(),
        &[
            &kubeconfig,
            "install",
            "detour",
            CHART,
            "--namespace",
            "detour",
            "--create-namespace",
            "--wait",
            "--timeout=180s",
        ],
    );
    assert!(
        installed.status.success(),
        "helm install: {}{}",
        String::from_utf8_lossy(&installed.stdout),
        String::from_utf8_lossy(&installed.stderr)
    );
    node.plane.apply(APP);
    node.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "pod/client",
        "--timeout=120s",
    ]);
    node.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "pod",
        "-l",
        "app=reviews",
        "--timeout=120s",
    ]);
    node.plane.apply(&sandbox_example());
    node.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "sandbox/feature-x",
        "--timeout=120s",
    ]);
    wait_steered(&node);
    let url = format!("http://{}/", cluster_ip(&node));
    let keyed = curl(&node, &url, &[KEYED]);
    assert!(keyed.starts_with(FORK), "{keyed}\n{}", diagnose(&node));
    let unkeyed = curl(&node, &url, &[]);
    assert!(
        unkeyed.starts_with(BASELINE) && !unkeyed.starts_with(FORK),
        "{unkeyed}"
    );
}
