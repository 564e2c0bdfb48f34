//! The custom resources detour reads (group `detour.dev`, version
//! `v1alpha1`). The CRD YAML in `deploy/crds/` is generated from these types
//! (`cargo xtask crdgen`) and a test fails when it drifts.
//!
//! The agent only reads them: it runs on every node, so it never writes
//! status. The `status` blocks are reserved for the sandbox controller (a
//! later milestone) and document what will appear there.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The label every fork pod carries (any value). The agent watches only pods
/// with it; a Sandbox's `selector` picks its fork's pods among them.
pub const FORK_LABEL: &str = "detour.dev/fork";

/// Service annotation: `"true"` keeps the Service steered even while no
/// Sandbox forks it, so that creating a sandbox for it never finds client
/// connections that bypass the proxy. The cost: every request to it passes
/// through the proxy.
pub const ALWAYS_STEERED_ANNOTATION: &str = "detour.dev/always-steered";

/// A sandbox: a routing key and the forks of baseline services that requests
/// carrying it reach.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "detour.dev",
    version = "v1alpha1",
    kind = "Sandbox",
    namespaced,
    shortname = "sbx",
    status = "SandboxStatus",
    printcolumn = r#"{"name": "Routing Key", "type": "string", "jsonPath": ".spec.routingKey"}"#,
    printcolumn = r#"{"name": "Forks", "type": "string", "jsonPath": ".spec.forks[*].service.name"}"#,
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.ready"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SandboxSpec {
    /// Requests whose routing key (W3C `baggage` member `detour-routing-key`,
    /// and the other sources the agent is configured with) equals this reach
    /// the forks below. Unique: if two Sandboxes claim one key, the older wins.
    #[schemars(length(min = 1, max = 256), regex(pattern = ROUTING_KEY_PATTERN))]
    pub routing_key: String,
    /// How long after creation the Sandbox's routes stay in force, e.g. `2h`
    /// or `30m`. After it, requests go to baseline again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = TTL_PATTERN))]
    pub ttl: Option<String>,
    /// The services this sandbox forks (at most 64: the bound lets the API
    /// server afford the selector's validation rule for each).
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub forks: Vec<Fork>,
}

/// One forked service.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Fork {
    /// The baseline Service whose traffic the fork takes.
    pub service: ServiceRef,
    /// Labels of the fork's pods, in the Sandbox's namespace. The pods must
    /// also carry the `detour.dev/fork` label.
    #[schemars(extend("x-kubernetes-validations" = [
        {
            "rule": "has(self.matchLabels) && size(self.matchLabels) > 0 || has(self.matchExpressions) && size(self.matchExpressions) > 0",
            "message": "the selector must name at least one label: an empty one would select every pod"
        }
    ]))]
    pub selector: LabelSelector,
    /// Service port -> fork container port. A Service port not listed goes
    /// to the Service's `targetPort` on the fork pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ForkPort>,
}

/// A baseline Service.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRef {
    /// Defaults to the Sandbox's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
}

/// Where one Service port goes on the fork.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ForkPort {
    /// The Service port.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// The fork container port.
    #[schemars(range(min = 1, max = 65535))]
    pub target_port: i32,
}

/// Written by the sandbox controller (not by the agent).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SandboxStatus {
    /// Every fork has ready endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    /// Human-readable state, e.g. a routing-key conflict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What the API server accepts as a routing key: what the agent accepts
/// (`is_valid_routing_key`: no control characters, no whitespace).
pub const ROUTING_KEY_PATTERN: &str = r"^[^\p{Cc}\p{Z}]+$";
/// What the API server accepts as a TTL: numbers with units (`2h`, `30m`,
/// `1h 30m`); the agent's duration parser judges the units.
pub const TTL_PATTERN: &str = r"^\s*([0-9]+\s*[a-zA-Z]+\s*)+$";

/// A routing key shared by several Sandboxes: for each service, requests go
/// to the first member (in order) that forks it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "detour.dev",
    version = "v1alpha1",
    kind = "RouteGroup",
    namespaced,
    shortname = "rg",
    printcolumn = r#"{"name": "Routing Key", "type": "string", "jsonPath": ".spec.routingKey"}"#,
    printcolumn = r#"{"name": "Sandboxes", "type": "string", "jsonPath": ".spec.sandboxes"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RouteGroupSpec {
    /// The group's key; unique among Sandboxes and RouteGroups.
    #[schemars(length(min = 1, max = 256), regex(pattern = ROUTING_KEY_PATTERN))]
    pub routing_key: String,
    /// Member Sandboxes by name, in the RouteGroup's namespace, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sandboxes: Vec<String>,
    /// Further members: Sandboxes in the namespace matching these labels
    /// (after the named ones, oldest first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_selector: Option<LabelSelector>,
}

#[cfg(test)]
mod tests {
    use crate::cli::crdgen;

    /// `deploy/crds/` must be what the types generate: run `cargo xtask
    /// crdgen` after changing them.
    #[test]
    fn committed_crds_match_the_types() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds");
        for (name, yaml) in crdgen::documents().expect("generate") {
            let path = dir.join(name);
            let committed = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}; run `cargo xtask crdgen`", path.display()));
            assert!(
                committed == yaml,
                "{} differs from the types; run `cargo xtask crdgen`",
                path.display()
            );
        }
    }
}
