//! `Sandbox`: a routing key and the forks of baseline services that
//! requests carrying it reach.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Fork, ROUTING_KEY_PATTERN, SandboxStatus, TTL_PATTERN};

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
    printcolumn = r#"{"name": "Key", "type": "string", "jsonPath": ".spec.routingKey"}"#,
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name": "Forks", "type": "string", "jsonPath": ".spec.forks[*].service.name"}"#,
    printcolumn = r#"{"name": "Expires", "type": "date", "jsonPath": ".status.expiresAt"}"#,
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
    /// Whether requests that the forks' pods send without a routing key
    /// are routed with this Sandbox's key and forwarded carrying it (a
    /// `baggage` member), so that a fork that does not propagate the key
    /// still reaches the Sandbox's other forks. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inherit_key: Option<bool>,
}
