//! `Sandbox`: a routing key and the forks of baseline services that
//! requests carrying it reach.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{ROUTING_KEY_PATTERN, TTL_PATTERN};

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
