//! The shipped ClusterRole is exactly enough, against a real API server's
//! RBAC: with it the agent syncs (`tests/tests/integration/k8s/steering.rs`); with any one
//! permission taken away (one verb on one resource) it is not ready, and
//! both its log and `detour status` name what it was refused.
//!
//! These need root. Without it each test fails and says so, unless
//! `DETOUR_SKIP_ROOT_TESTS=1` is set.

use std::time::{Duration, Instant};

use detour_tests::{Cluster, detour_bin, require_root};
use serde_json::{Value, json};

/// Whether the agent's status (`detour status -o json`) lists a problem
/// naming `resource`'s refusal.
fn status_names(socket: &std::path::Path, resource: &str) -> Option<String> {
    let output = std::process::Command::new(detour_bin())
        .arg("--socket")
        .arg(socket)
        .args(["status", "-o", "json"])
        .output()
        .ok()?;
    let status: Value = serde_json::from_slice(&output.stdout).ok()?;
    status["route_source"]["problems"]
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .find(|p| p.contains("forbidden") && p.contains(resource))
        .map(str::to_owned)
}

#[test]
fn without_any_one_permission_of_its_cluster_role_the_agent_is_not_ready_and_says_why() {
    if !require_root() {
        return;
    }
    let cluster = Cluster::start("dr");
    let role = cluster
        .plane
        .kubectl(&["get", "clusterrole", "detour", "-o", "json"]);
    let role: Value = serde_json::from_str(&role).expect("ClusterRole");
    let rules = role["rules"].as_array().expect("rules").clone();
    let mut checked = 0;
    for (index, rule) in rules.iter().enumerate() {
        for resource in rule["resources"].as_array().expect("resources") {
            for verb in rule["verbs"].as_array().expect("verbs") {
                let (resource, verb) = (
                    resource.as_str().expect("name"),
                    verb.as_str().expect("verb"),
                );
                // The shipped rules, less `verb` on `resource`.
                let mut reduced = rules.clone();
                reduced[index] = json!({
                    "apiGroups": rule["apiGroups"],
                    "resources": rule["resources"].as_array().expect("resources").iter().filter(|r| *r != resource).collect::<Vec<_>>(),
                    "verbs": rule["verbs"],
                });
                reduced.push(json!({
                    "apiGroups": rule["apiGroups"],
                    "resources": [resource],
                    "verbs": rule["verbs"].as_array().expect("verbs").iter().filter(|v| *v != verb).collect::<Vec<_>>(),
                }));
                reduced.retain(|r| {
                    r["resources"].as_array().is_some_and(|v| !v.is_empty())
                        && r["verbs"].as_array().is_some_and(|v| !v.is_empty())
                });
                let mut patched = role.clone();
                patched["rules"] = Value::Array(reduced);
                patched["metadata"] = json!({"name": "detour"});
                cluster.apply(&patched.to_string());

                let mut agent = cluster.agent().start();
                let deadline = Instant::now() + Duration::from_secs(20);
                let named = loop {
                    assert!(agent.is_running(), "agent exited:\n{}", agent.logs());
                    if let Some(problem) = status_names(agent.admin_socket(), resource) {
                        break problem;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "without {verb} on {resource}: no problem named it in detour status\n{}",
                        agent.logs()
                    );
                    std::thread::sleep(Duration::from_millis(200));
                };
                assert!(named.contains(verb), "{verb} on {resource}: {named}");
                for _ in 0..5 {
                    assert_eq!(
                        agent.http_status("/readyz"),
                        Some(503),
                        "ready without {verb} on {resource}"
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
                let log = agent.logs();
                assert!(
                    log.contains("forbidden") && log.contains(resource),
                    "the log names the refusal of {verb} on {resource}:\n{log}"
                );
                drop(agent);
                checked += 1;
            }
        }
    }
    assert_eq!(
        checked, 10,
        "every verb on every resource of the shipped role"
    );
    // With the shipped role back, the agent is ready.
    cluster.apply(&{
        let mut restored = role.clone();
        restored["metadata"] = json!({"name": "detour"});
        restored.to_string()
    });
    cluster.agent().spawn();
}
