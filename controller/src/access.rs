//! Every Kubernetes API call the controller makes, by group, resource and
//! verb: the single list `deploy/controller.yaml`'s ClusterRole and Role
//! must grant exactly (`controller/tests/rbac.rs` checks it; the cluster
//! tests run the controller as its ServiceAccount, so a missing grant fails
//! them).

/// One permission: API group, resource, verb, and what uses it.
#[derive(Debug, Clone, Copy)]
pub struct ApiCall {
    pub group: &'static str,
    pub resource: &'static str,
    pub verb: &'static str,
    pub why: &'static str,
}

const fn call(
    group: &'static str,
    resource: &'static str,
    verb: &'static str,
    why: &'static str,
) -> ApiCall {
    ApiCall {
        group,
        resource,
        verb,
        why,
    }
}

/// Cluster-wide calls (the ClusterRole).
pub const CLUSTER_CALLS: &[ApiCall] = &[
    call(
        "detour.dev",
        "sandboxes",
        "get",
        "the finalizer helper reads the Sandbox",
    ),
    call(
        "detour.dev",
        "sandboxes",
        "list",
        "the Controller's watch; key claims",
    ),
    call("detour.dev", "sandboxes", "watch", "the Controller's watch"),
    call(
        "detour.dev",
        "sandboxes",
        "patch",
        "adding and removing the finalizer",
    ),
    call(
        "detour.dev",
        "sandboxes",
        "delete",
        "a Sandbox whose TTL ran out",
    ),
    call("detour.dev", "sandboxes/status", "patch", "the status"),
    call("detour.dev", "routegroups", "list", "key claims"),
    call(
        "apps",
        "deployments",
        "get",
        "the baseline, and whether a fork exists",
    ),
    call("apps", "deployments", "list", "forks by label; the watches"),
    call(
        "apps",
        "deployments",
        "watch",
        "forks and baselines wake their Sandboxes",
    ),
    call(
        "apps",
        "deployments",
        "create",
        "server-side apply of a new fork",
    ),
    call(
        "apps",
        "deployments",
        "patch",
        "server-side apply of a fork",
    ),
    call(
        "apps",
        "deployments",
        "delete",
        "forks no longer named, and with their Sandbox",
    ),
    call(
        "apps",
        "statefulsets",
        "get",
        "the baseline, and whether a fork exists",
    ),
    call(
        "apps",
        "statefulsets",
        "list",
        "forks by label; the watches",
    ),
    call(
        "apps",
        "statefulsets",
        "watch",
        "forks and baselines wake their Sandboxes",
    ),
    call(
        "apps",
        "statefulsets",
        "create",
        "server-side apply of a new fork",
    ),
    call(
        "apps",
        "statefulsets",
        "patch",
        "server-side apply of a fork",
    ),
    call(
        "apps",
        "statefulsets",
        "delete",
        "forks no longer named, and with their Sandbox",
    ),
    call(
        "",
        "persistentvolumeclaims",
        "list",
        "a deleted StatefulSet fork's claims, by its pods' labels",
    ),
    call(
        "",
        "persistentvolumeclaims",
        "delete",
        "a deleted StatefulSet fork's claims",
    ),
    call(
        "",
        "services",
        "list",
        "Services selecting the baseline's pods",
    ),
    call("", "pods", "list", "fork pods ready, for status"),
    call("events.k8s.io", "events", "create", "Events on the Sandbox"),
    call("events.k8s.io", "events", "patch", "repeated Events"),
];

/// Calls in the controller's own namespace (the Role): the Lease.
pub const NAMESPACE_CALLS: &[ApiCall] = &[
    call("coordination.k8s.io", "leases", "get", "who leads"),
    call(
        "coordination.k8s.io",
        "leases",
        "create",
        "the first replica makes the Lease",
    ),
    call(
        "coordination.k8s.io",
        "leases",
        "patch",
        "taking and renewing it (server-side apply)",
    ),
];
