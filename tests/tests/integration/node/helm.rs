//! The chart, installed with the real helm on a real node: the same agent
//! and controller as `kubectl apply -k deploy/`, steering a pod's keyed
//! request to the example Sandbox's fork.

use detour_tests::{
    controlplane::tool,
    node::{KubeNode, require_node},
};

use super::setup::{apply_app, apply_sandbox, assert_steers};

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
    apply_app(&node);
    apply_sandbox(&node);
    assert_steers(&node, 1);
}
