//! Reading manifests into their typed Kubernetes objects, strictly: a field
//! the type does not know (a typo, a wrong indent) or a value of the wrong
//! type fails, where a plain `serde` deserialize would drop it silently.

use std::path::Path;

use detour::k8s::crd::{RouteGroup, Sandbox};
use k8s_openapi::{
    api::admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding},
    api::{
        apps::v1::{DaemonSet, Deployment},
        core::v1::{Namespace, ServiceAccount},
        rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value as Json;
use yaml_serde::Value;

/// One Kubernetes object from a manifest: where it came from, and its typed
/// form serialized back to JSON (so that two sources compare equal exactly
/// when they describe the same object).
#[derive(Debug, Clone)]
pub struct Object {
    pub origin: String,
    pub kind: String,
    pub name: String,
    pub json: Json,
}

impl Object {
    /// Deserializes the object's JSON again, into `T`.
    pub fn to<T: DeserializeOwned>(&self) -> T {
        serde_json::from_value(self.json.clone())
            .unwrap_or_else(|e| panic!("{}: {} {}: {e}", self.origin, self.kind, self.name))
    }
}

/// The non-empty YAML documents of `text`.
pub fn documents(origin: &str, text: &str) -> Vec<Value> {
    yaml_serde::Deserializer::from_str(text)
        .map(|document| {
            Value::deserialize(document).unwrap_or_else(|e| panic!("{origin}: not YAML: {e}"))
        })
        .filter(|value| !value.is_null())
        .collect()
}

/// The objects in a file.
pub fn read_file(path: &Path) -> Vec<Object> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let origin = path.display().to_string();
    parse_all(&origin, &text)
}

/// The objects in a (multi-document) manifest.
pub fn parse_all(origin: &str, text: &str) -> Vec<Object> {
    documents(origin, text)
        .iter()
        .map(|document| parse(origin, document))
        .collect()
}

/// Reads one document into the type its `apiVersion` and `kind` name.
pub fn parse(origin: &str, document: &Value) -> Object {
    let field = |key: &str| {
        document
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{origin}: a document without `{key}`"))
            .to_owned()
    };
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    let json = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => strict::<Namespace>(origin, document),
        ("v1", "ServiceAccount") => strict::<ServiceAccount>(origin, document),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => strict::<ClusterRole>(origin, document),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            strict::<ClusterRoleBinding>(origin, document)
        }
        ("rbac.authorization.k8s.io/v1", "Role") => strict::<Role>(origin, document),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => strict::<RoleBinding>(origin, document),
        ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy") => {
            strict::<ValidatingAdmissionPolicy>(origin, document)
        }
        ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding") => {
            strict::<ValidatingAdmissionPolicyBinding>(origin, document)
        }
        ("apps/v1", "DaemonSet") => strict::<DaemonSet>(origin, document),
        ("apps/v1", "Deployment") => strict::<Deployment>(origin, document),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
            strict::<CustomResourceDefinition>(origin, document)
        }
        ("detour.dev/v1alpha1", "Sandbox") => strict::<Sandbox>(origin, document),
        ("detour.dev/v1alpha1", "RouteGroup") => strict::<RouteGroup>(origin, document),
        _ => panic!("{origin}: unexpected object {api_version} {kind}: add it to objects::parse"),
    };
    let name = json
        .pointer("/metadata/name")
        .and_then(Json::as_str)
        .unwrap_or_else(|| panic!("{origin}: {kind} without metadata.name"))
        .to_owned();
    Object {
        origin: origin.to_owned(),
        kind,
        name,
        json,
    }
}

/// Deserializes into `T` and checks that serializing `T` again keeps every
/// field of the document with the same value.
fn strict<T: DeserializeOwned + Serialize>(origin: &str, document: &Value) -> Json {
    let original =
        serde_json::to_value(document).unwrap_or_else(|e| panic!("{origin}: not JSON-like: {e}"));
    let typed: T = serde_json::from_value(original.clone())
        .unwrap_or_else(|e| panic!("{origin}: not a valid {}: {e}", std::any::type_name::<T>()));
    let back = serde_json::to_value(&typed).unwrap_or_else(|e| panic!("{origin}: {e}"));
    if let Some(path) = lost(&original, &back, String::new()) {
        panic!(
            "{origin}: `{path}` is not a field of {} (or has the wrong type)",
            std::any::type_name::<T>()
        );
    }
    back
}

/// Where two objects differ first, if they do.
pub fn difference(a: &Json, b: &Json) -> Option<String> {
    lost(a, b, String::new()).or_else(|| lost(b, a, String::new()))
}

/// The first path in `original` that `back` lacks or holds differently.
fn lost(original: &Json, back: &Json, path: String) -> Option<String> {
    match (original, back) {
        (Json::Object(original), Json::Object(back)) => original.iter().find_map(|(key, value)| {
            let path = format!("{path}.{key}");
            match back.get(key) {
                Some(kept) => lost(value, kept, path),
                None => Some(path),
            }
        }),
        (Json::Array(original), Json::Array(back)) if original.len() == back.len() => original
            .iter()
            .zip(back)
            .enumerate()
            .find_map(|(i, (value, kept))| lost(value, kept, format!("{path}[{i}]"))),
        // 65535 and 65535.0 are one JSON number (kustomize writes the former
        // for the latter).
        (Json::Number(original), Json::Number(back)) if original.as_f64() == back.as_f64() => None,
        _ if original == back => None,
        _ => Some(path),
    }
}
