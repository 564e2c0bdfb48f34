//! What the fake serves: the kinds (those the agent watches) and the
//! documents a client may ask for before it lists anything, `/version` and
//! API discovery (`/api`, `/apis`, `/api/v1`, `/apis/GROUP/VERSION`).
//! kube-rs's watchers ask none of these, but start-up checks and
//! `kube::Discovery` do.

use serde_json::{Value, json};

/// A resource the fake serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    pub kind: &'static str,
    /// `v1` or `group/version`, as in `apiVersion`.
    pub api_version: &'static str,
    /// Plural resource name, as in the URL.
    pub resource: &'static str,
    /// Built-in kinds' list items carry no `kind`/`apiVersion` (as the real
    /// API server sends them); custom resources' items do.
    pub builtin: bool,
}

/// Everything the fake serves: what the agent watches.
pub const KINDS: [Kind; 5] = [
    Kind {
        kind: "Service",
        api_version: "v1",
        resource: "services",
        builtin: true,
    },
    Kind {
        kind: "EndpointSlice",
        api_version: "discovery.k8s.io/v1",
        resource: "endpointslices",
        builtin: true,
    },
    Kind {
        kind: "Pod",
        api_version: "v1",
        resource: "pods",
        builtin: true,
    },
    Kind {
        kind: "Sandbox",
        api_version: "detour.dev/v1alpha1",
        resource: "sandboxes",
        builtin: false,
    },
    Kind {
        kind: "RouteGroup",
        api_version: "detour.dev/v1alpha1",
        resource: "routegroups",
        builtin: false,
    },
];

/// The kind named `kind` (e.g. `Sandbox`).
pub fn kind_named(kind: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.kind == kind)
}

/// The kind served at `api_version` (`v1`, `group/version`) and `resource`.
pub fn kind_at(api_version: &str, resource: &str) -> Option<&'static Kind> {
    KINDS
        .iter()
        .find(|k| k.api_version == api_version && k.resource == resource)
}

/// The document at `segments` (the URL path split on `/`), if it is one.
pub fn document(segments: &[&str]) -> Option<Value> {
    match segments {
        ["version"] => Some(version()),
        ["api"] => Some(json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [],
        })),
        ["apis"] => Some(groups()),
        ["api", "v1"] => resources("v1"),
        ["apis", group, version] => resources(&format!("{group}/{version}")),
        _ => None,
    }
}

fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-detour-fake",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `APIGroupList`: every named group (not core) of the served kinds.
fn groups() -> Value {
    let mut group_versions: Vec<&str> = KINDS
        .iter()
        .map(|kind| kind.api_version)
        .filter(|gv| gv.contains('/'))
        .collect();
    group_versions.dedup();
    let groups: Vec<Value> = group_versions
        .into_iter()
        .filter_map(|gv| {
            let (name, version) = gv.split_once('/')?;
            let entry = json!({"groupVersion": gv, "version": version});
            Some(json!({"name": name, "versions": [entry], "preferredVersion": entry}))
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `APIResourceList` for one group version, or `None` if it serves nothing.
fn resources(group_version: &str) -> Option<Value> {
    let resources: Vec<Value> = KINDS
        .iter()
        .filter(|kind| kind.api_version == group_version)
        .map(|kind| {
            json!({
                "name": kind.resource,
                "singularName": kind.kind.to_lowercase(),
                "namespaced": true,
                "kind": kind.kind,
                "verbs": ["get", "list", "watch"],
            })
        })
        .collect();
    (!resources.is_empty()).then(|| {
        json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version,
            "resources": resources,
        })
    })
}
