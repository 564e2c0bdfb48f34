//! The Kubernetes route source: custom resources, the reflectors that keep
//! cluster state in memory, and the pure translation from that state to the
//! same [`RouteInput`](crate::routes::RouteInput) the routes file produces.

pub mod crd;
mod endpoints;
pub mod source;
#[cfg(test)]
mod tests;
pub mod translate;

/// A resource the agent lists and watches, cluster-wide. The RBAC rules in
/// `deploy/` grant exactly these (verbs `list` and `watch`), which a test
/// checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watched {
    /// API group ("" for core).
    pub group: &'static str,
    pub version: &'static str,
    /// Plural resource name.
    pub resource: &'static str,
    /// Label selector the watch uses, if any.
    pub label_selector: Option<&'static str>,
}

/// Everything the agent watches.
pub const WATCHED: [Watched; 5] = [
    Watched {
        group: "",
        version: "v1",
        resource: "services",
        label_selector: None,
    },
    Watched {
        group: "discovery.k8s.io",
        version: "v1",
        resource: "endpointslices",
        label_selector: None,
    },
    Watched {
        group: "",
        version: "v1",
        resource: "pods",
        label_selector: Some(crd::FORK_LABEL),
    },
    Watched {
        group: "detour.dev",
        version: "v1alpha1",
        resource: "sandboxes",
        label_selector: None,
    },
    Watched {
        group: "detour.dev",
        version: "v1alpha1",
        resource: "routegroups",
        label_selector: None,
    },
];
