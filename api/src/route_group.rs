//! `RouteGroup`: one routing key for several Sandboxes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ROUTING_KEY_PATTERN;

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
