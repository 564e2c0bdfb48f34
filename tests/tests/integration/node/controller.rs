//! The sandbox controller's Deployment on a real node: its leader's pod
//! deleted while Sandboxes are being created, and every Sandbox still
//! becomes Ready (the standby takes the Lease over).

use std::time::{Duration, Instant};

use detour_tests::node::{KubeNode, require_node};

use super::setup::installed;

/// A Sandbox forking `reviews-v1` under key `name`.
fn sandbox(name: &str) -> String {
    format!(
        r#"
apiVersion: detour.dev/v1alpha1
kind: Sandbox
metadata: {{name: {name}, namespace: default}}
spec:
  routingKey: {name}
  forks:
    - service: {{name: reviews}}
      forkOf: {{kind: Deployment, name: reviews-v1}}
      customizations:
        images: [{{container: reviews, image: detour.dev/test-node:2}}]
"#
    )
}

/// The pod holding the controller's Lease.
pub fn leader(node: &KubeNode) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let holder = node.kubectl(&[
            "get",
            "lease",
            "-n",
            "detour",
            "-o",
            "jsonpath={.items[*].spec.holderIdentity}",
        ]);
        if !holder.trim().is_empty() {
            return holder.trim().to_owned();
        }
        assert!(Instant::now() < deadline, "no controller leads");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn the_leader_pod_deleted_while_sandboxes_are_created_leaves_every_sandbox_ready() {
    if !require_node() {
        return;
    }
    let node = installed();
    let first = leader(&node);
    let names: Vec<String> = (1..=4).map(|n| format!("pr-{n}")).collect();
    for (index, name) in names.iter().enumerate() {
        node.plane.apply(&sandbox(name));
        if index == 1 {
            node.kubectl(&["delete", "pod", "-n", "detour", &first, "--wait=false"]);
        }
    }
    for name in &names {
        node.kubectl(&[
            "wait",
            "--for=condition=Ready",
            &format!("sandbox/{name}"),
            "--timeout=120s",
        ]);
    }
    let second = leader(&node);
    assert_ne!(first, second, "the standby leads now");
    let forks = node.kubectl(&[
        "get",
        "deployments",
        "-l",
        "detour.dev/sandbox",
        "-o",
        "name",
    ]);
    for name in &names {
        assert_eq!(
            forks.matches(&format!("reviews-v1-{name}\n")).count(),
            1,
            "one fork of {name}: {forks}"
        );
    }
}
