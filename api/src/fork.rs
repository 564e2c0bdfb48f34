//! One fork of a Sandbox: the baseline Service whose traffic it takes, and
//! either the baseline workload the sandbox controller copies (`forkOf`,
//! with `customizations`) or a selector for pods the user runs.

use k8s_openapi::{api::core::v1::EnvVarSource, apimachinery::pkg::apis::meta::v1::LabelSelector};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// One forked service.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.forkOf) || has(self.selector)",
        "message": "a fork needs forkOf (the controller makes its pods) or a selector (for pods you run)"
    },
    {
        "rule": "!has(self.customizations) || has(self.forkOf)",
        "message": "customizations apply to a forkOf workload"
    }
]))]
pub struct Fork {
    /// The baseline Service whose traffic the fork takes.
    pub service: ServiceRef,
    /// The baseline workload to copy, in the Service's namespace: the
    /// sandbox controller creates the fork from its current spec plus
    /// `customizations`, and deletes it with the Sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fork_of: Option<WorkloadRef>,
    /// Changes to the copy of `forkOf`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customizations: Option<Customizations>,
    /// Labels of fork pods you run yourself, in the Sandbox's namespace
    /// (they must also carry the `detour.dev/fork` label). Not needed with
    /// `forkOf`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [
        {
            "rule": "has(self.matchLabels) && size(self.matchLabels) > 0 || has(self.matchExpressions) && size(self.matchExpressions) > 0",
            "message": "the selector must name at least one label: an empty one would select every pod"
        }
    ]))]
    pub selector: Option<LabelSelector>,
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

/// A baseline workload.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRef {
    pub kind: WorkloadKind,
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// The workload kinds the controller can fork.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum WorkloadKind {
    Deployment,
    /// The fork gets volume claims of its own, from the baseline's claim
    /// templates and named after the fork; they are deleted with it.
    StatefulSet,
}

impl WorkloadKind {
    /// The kind as the API names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deployment => "Deployment",
            Self::StatefulSet => "StatefulSet",
        }
    }
}

/// Changes to the copy of the baseline workload, applied in this order;
/// one that does not apply (an unknown container, a patch that fails) is
/// reported in the Sandbox's status and nothing is created or changed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Customizations {
    /// Container images to replace, by container name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageOverride>,
    /// Environment variables to add or replace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvOverride>,
    /// Pods of the fork (default 1, whatever the baseline runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: Option<i32>,
    /// Anything else: a patch applied to the generated Deployment last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<WorkloadPatch>,
}

/// A container's image in the fork.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageOverride {
    pub container: String,
    #[schemars(length(min = 1))]
    pub image: String,
}

/// An environment variable of the fork: on `container`, or on every
/// container when it is not given.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.value) != has(self.valueFrom)", "message": "give exactly one of value and valueFrom"}
]))]
pub struct EnvOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[schemars(length(min = 1))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvVarSource>,
}

/// A patch to the generated Deployment.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadPatch {
    #[serde(rename = "type")]
    pub type_: PatchType,
    /// The patch: a list of operations (`json`) or a partial object
    /// (`merge`).
    #[schemars(schema_with = "any_json")]
    pub patch: serde_json::Value,
}

/// How a patch is read.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PatchType {
    /// RFC 6902 JSON patch: a list of operations.
    Json,
    /// RFC 7386 JSON merge patch.
    Merge,
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

/// Any JSON value, kept as given (a structural schema's escape hatch).
fn any_json(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"x-kubernetes-preserve-unknown-fields": true})
}
