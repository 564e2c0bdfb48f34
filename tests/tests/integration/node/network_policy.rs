//! NetworkPolicies keep working through detour: a policy that admits only
//! the client pod to `reviews` (baseline and fork) still admits its
//! unkeyed requests to baseline and its keyed ones to the fork once a
//! Sandbox steers the Service, and a pod the policy does not admit stays
//! refused, keyed or not: detour is no way around a policy. The enforcer is
//! kube-router's firewall (`detour_tests::node::network_policy`), which
//! admits what comes from the node itself; so this holds only because the
//! proxy's upstream connections carry the client pod's address.

use detour_tests::node::{KubeNode, require_node};

use super::setup::{
    BASELINE, FORK, KEYED, apply_app, apply_sandbox, cluster_ip, curl_from, detour_json,
    eventually, install_deploy, wait_steered,
};

/// A pod the policy does not admit, from the test image.
const INTRUDER: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: intruder, namespace: default, labels: {app: intruder}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: intruder
      image: detour.dev/test-node:1
      env: [{name: POD_NAME, value: intruder}]
"#;

/// Only pods labelled `app: client` may reach the namespace's pods: the
/// baseline and its fork among them. (Every pod: the fork's pods carry
/// none of the baseline's selector labels, which the controller rewrites
/// to keep them out of the baseline's Service, so a policy selecting the
/// baseline by those labels does not select its fork.)
const POLICY: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: only-from-client, namespace: default}
spec:
  podSelector: {}
  policyTypes: [Ingress]
  ingress:
    - from: [{podSelector: {matchLabels: {app: client}}}]
"#;

fn pod_ip(node: &KubeNode, pod: &str) -> String {
    node.kubectl(&["get", "pod", pod, "-o", "jsonpath={.status.podIP}"])
}

#[test]
fn a_policy_admitting_only_the_client_pod_holds_through_detour_for_baseline_and_fork() {
    if !require_node() {
        return;
    }
    let mut node = KubeNode::start();
    node.enforce_network_policies();
    install_deploy(&node);
    apply_app(&node);
    node.plane.apply(INTRUDER);
    node.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "pod/intruder",
        "--timeout=120s",
    ]);
    let url = format!("http://{}/", cluster_ip(&node));
    let client_ip = pod_ip(&node, "client");

    // Before any Sandbox: the policy is in force (and detour steers nothing).
    node.plane.apply(POLICY);
    eventually("the policy refuses the intruder", || {
        let answer = curl_from(&node, "intruder", &url, &[]);
        (!answer.starts_with("hello from"))
            .then_some(())
            .ok_or(answer)
    });
    let direct = curl_from(&node, "client", &url, &[]);
    assert!(
        direct.starts_with(BASELINE) && direct.contains(&format!("you are {client_ip}:")),
        "the client is admitted, and seen as itself: {direct}"
    );

    // A Sandbox steers the Service through the proxy. Its fork is a new
    // pod: the enforcer covers it a moment after it starts (seen directly,
    // the fork's own address is not steered).
    apply_sandbox(&node);
    let fork = node.kubectl(&[
        "get",
        "pods",
        "-l",
        "detour.dev/fork=true",
        "-o",
        "jsonpath={.items[0].status.podIP}",
    ]);
    let fork_url = format!("http://{fork}:8080/");
    eventually("the policy refuses the intruder at the fork", || {
        let answer = curl_from(&node, "intruder", &fork_url, &[]);
        (!answer.starts_with("hello from"))
            .then_some(())
            .ok_or(answer)
    });
    wait_steered(&node);
    for _ in 0..3 {
        let unkeyed = curl_from(&node, "client", &url, &[]);
        assert!(
            unkeyed.starts_with(BASELINE)
                && !unkeyed.starts_with(FORK)
                && unkeyed.contains(&format!("you are {client_ip}:")),
            "unkeyed: baseline, from the client pod's address: {unkeyed}"
        );
        let keyed = curl_from(&node, "client", &url, &[KEYED]);
        assert!(
            keyed.starts_with(FORK) && keyed.contains(&format!("you are {client_ip}:")),
            "keyed: the fork, from the client pod's address: {keyed}"
        );
    }
    let status = detour_json(&node, &["status"]);
    assert!(
        status["client_address"]
            .as_str()
            .is_some_and(|s| s.starts_with("kept:")),
        "the agent in its pod enters the pods' namespaces: {status}"
    );
    for headers in [&[][..], &[KEYED][..]] {
        let answer = curl_from(&node, "intruder", &url, headers);
        assert!(
            !answer.contains("hello from"),
            "the intruder stays refused through detour ({headers:?}): {answer}"
        );
    }
}
