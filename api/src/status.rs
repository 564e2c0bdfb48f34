//! What the sandbox controller reports on a Sandbox (the agent never
//! writes status: it runs on every node).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Written by the sandbox controller.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SandboxStatus {
    /// `Ready` (every fork has ready pods and the key is claimed),
    /// `ForksReady`, `KeyClaimed`; each with a reason and a message a
    /// person can act on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// One entry per fork, in `spec.forks` order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forks: Vec<ForkStatus>,
    /// When the TTL runs out (then the controller deletes the Sandbox).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// One fork's state.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ForkStatus {
    /// The baseline Service, `namespace/name`.
    pub service: String,
    /// The fork workload (`Deployment/name`), for `forkOf` forks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    pub ready_replicas: i32,
    /// Ready fork pod addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
}
