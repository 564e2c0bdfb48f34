//! A NetworkPolicy enforcer on the real node: kube-router's firewall alone
//! (`--run-firewall`, no routing, no service proxy), built by `cargo xtask
//! setup` from its Go module beside the Kubernetes tools. It enforces
//! policies with iptables rules and ipsets in the node's network namespace
//! (gone with the node), matching bridged pod traffic as the CNI bridge
//! forwards it. Run as a process on the node with the admin's kubeconfig,
//! as the node's other components are, rather than as its DaemonSet: the
//! enforcement is the same, and no image of it is needed.
//!
//! Like most enforcers it admits what comes from the node itself (the
//! kubelet's probes): a proxy that reached pods from the node's address
//! would walk around every ingress policy.

use super::{KubeNode, NODE_NAME};
use crate::controlplane::tool;

impl KubeNode {
    /// Starts enforcing NetworkPolicies.
    pub fn enforce_network_policies(&mut self) {
        let kubeconfig = self.plane.admin_kubeconfig.display().to_string();
        self.plane.spawn_program(
            "kube-router",
            &tool("kube-router"),
            vec![
                format!("--kubeconfig={kubeconfig}"),
                format!("--hostname-override={NODE_NAME}"),
                "--run-firewall=true".into(),
                "--run-router=false".into(),
                "--run-service-proxy=false".into(),
                "--enable-cni=false".into(),
                "--health-port=0".into(),
                "--metrics-port=0".into(),
                "--v=1".into(),
            ],
        );
    }
}
