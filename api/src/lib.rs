//! detour's Kubernetes API: the custom resources (group `detour.dev`,
//! version `v1alpha1`) and the labels and annotations that connect them to
//! Services and pods. A crate of its own, without eBPF or the proxy, so that
//! the agent, the sandbox controller and `crdgen` share one definition.
//!
//! The CRD YAML in `deploy/crds/` is generated from these types (`cargo
//! xtask crdgen`) and a test fails when it drifts.

mod fork;
mod route_group;
mod sandbox;
mod status;

pub use fork::{
    Customizations, EnvOverride, Fork, ForkPort, ImageOverride, PatchType, ServiceRef,
    WorkloadKind, WorkloadPatch, WorkloadRef,
};
pub use route_group::{RouteGroup, RouteGroupSpec};
pub use sandbox::{Sandbox, SandboxSpec};
pub use status::{ForkStatus, SandboxStatus};

/// The label every fork pod carries (any value). The agent watches only pods
/// with it; a Sandbox's `selector` picks its fork's pods among them.
pub const FORK_LABEL: &str = "detour.dev/fork";

/// On controller-made forks (Deployment and pods): the Sandbox's name
/// ([`label_value`]).
pub const SANDBOX_LABEL: &str = "detour.dev/sandbox";

/// On controller-made forks: the Sandbox's namespace (the fork lives in the
/// forked Service's, which may be another).
pub const SANDBOX_NAMESPACE_LABEL: &str = "detour.dev/sandbox-namespace";

/// On controller-made forks: the name of the baseline workload copied
/// ([`label_value`]).
pub const FORK_OF_LABEL: &str = "detour.dev/fork-of";

/// The labels that pick a controller-made fork's pods: the Sandbox and the
/// baseline workload it copied.
pub fn fork_selector_labels(
    sandbox_namespace: &str,
    sandbox: &str,
    workload: &str,
) -> std::collections::BTreeMap<String, String> {
    [
        (SANDBOX_LABEL, label_value(sandbox)),
        (SANDBOX_NAMESPACE_LABEL, label_value(sandbox_namespace)),
        (FORK_OF_LABEL, label_value(workload)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// `name` as a label value: as is when it fits (63 characters; object names
/// may be longer), else its first 50 characters and a hash of the whole.
pub fn label_value(name: &str) -> String {
    const MAX: usize = 63;
    if name.len() <= MAX {
        return name.to_owned();
    }
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let head: String = name.chars().take(50).collect();
    format!(
        "{}-{:012x}",
        head.trim_end_matches(['-', '.']),
        hash & 0xffff_ffff_ffff
    )
}

/// Service annotation: `"true"` keeps the Service steered even while no
/// Sandbox forks it, so that creating a sandbox for it never finds client
/// connections that bypass the proxy. The cost: every request to it passes
/// through the proxy.
pub const ALWAYS_STEERED_ANNOTATION: &str = "detour.dev/always-steered";

/// What the API server accepts as a routing key: what the agent accepts
/// (`is_valid_routing_key`: no control characters, no whitespace).
pub const ROUTING_KEY_PATTERN: &str = r"^[^\p{Cc}\p{Z}]+$";
/// What the API server accepts as a TTL: numbers with units (`2h`, `30m`,
/// `1h 30m`); the agent's duration parser judges the units.
pub const TTL_PATTERN: &str = r"^\s*([0-9]+\s*[a-zA-Z]+\s*)+$";
