//! `detour-controller`: the sandbox controller. It turns each Sandbox's
//! `forkOf` forks into fork Deployments or StatefulSets in the baseline's
//! namespace ([`fork`], [`workloads`]), keeps them as the Sandbox and the baseline say, deletes them
//! with the Sandbox or when its TTL runs out ([`reconcile`]), and reports
//! the Sandbox's status ([`status`]). It needs no eBPF and no privilege: it
//! only talks to the Kubernetes API.

pub mod access;
pub mod fork;
pub mod leader;
pub mod metrics;
pub mod reconcile;
pub mod run;
pub mod sandbox;
pub mod status;
pub mod workloads;
