//! detour's Kubernetes API: the custom resources (group `detour.dev`,
//! version `v1alpha1`) and the labels and annotations that connect them to
//! Services and pods. A crate of its own, without eBPF or the proxy, so that
//! the agent, the sandbox controller and `crdgen` share one definition.
//!
//! The CRD YAML in `deploy/crds/` is generated from these types (`cargo
//! xtask crdgen`) and a test fails when it drifts.

mod route_group;
mod sandbox;

pub use route_group::{RouteGroup, RouteGroupSpec};
pub use sandbox::{Fork, ForkPort, Sandbox, SandboxSpec, SandboxStatus, ServiceRef};

/// The label every fork pod carries (any value). The agent watches only pods
/// with it; a Sandbox's `selector` picks its fork's pods among them.
pub const FORK_LABEL: &str = "detour.dev/fork";

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
