//! `deploy/controller.yaml` grants exactly the calls the controller makes
//! (`detour_controller::access`): nothing missing, nothing more.

use std::collections::BTreeSet;

use detour_controller::access::{ApiCall, CLUSTER_CALLS, NAMESPACE_CALLS};
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role};
use serde::Deserialize;

fn documents() -> Vec<yaml_serde::Value> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/controller.yaml");
    let text = std::fs::read_to_string(path).expect("deploy/controller.yaml");
    yaml_serde::Deserializer::from_str(&text)
        .map(|d| yaml_serde::Value::deserialize(d).expect("YAML"))
        .collect()
}

fn object<T: serde::de::DeserializeOwned>(kind: &str, name: &str) -> T {
    let document = documents()
        .into_iter()
        .find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} {name} in deploy/controller.yaml"));
    serde_json::from_value(serde_json::to_value(document).expect("JSON")).expect(kind)
}

fn granted(rules: &[PolicyRule]) -> BTreeSet<(String, String, String)> {
    let mut granted = BTreeSet::new();
    for rule in rules {
        assert!(
            rule.resource_names.is_none() && rule.non_resource_urls.is_none(),
            "{rule:?}"
        );
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    granted.insert((group.clone(), resource.clone(), verb.clone()));
                }
            }
        }
    }
    granted
}

fn wanted(calls: &[ApiCall]) -> BTreeSet<(String, String, String)> {
    calls
        .iter()
        .map(|c| (c.group.to_owned(), c.resource.to_owned(), c.verb.to_owned()))
        .collect()
}

#[test]
fn the_cluster_role_grants_exactly_the_cluster_wide_calls() {
    let role: ClusterRole = object("ClusterRole", "detour-controller");
    assert_eq!(
        granted(role.rules.as_deref().unwrap_or_default()),
        wanted(CLUSTER_CALLS)
    );
}

#[test]
fn the_role_grants_exactly_the_lease_calls_in_the_controllers_namespace() {
    let role: Role = object("Role", "detour-controller-lease");
    assert_eq!(role.metadata.namespace.as_deref(), Some("detour"));
    assert_eq!(
        granted(role.rules.as_deref().unwrap_or_default()),
        wanted(NAMESPACE_CALLS)
    );
}
