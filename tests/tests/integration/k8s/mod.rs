//! The Kubernetes route source and manifests: against the real control
//! plane (steering, route objects' rules, RBAC, a cluster-sized table, the
//! control plane itself) and against the in-process stand-in for faults
//! only it can make on demand.

mod control_plane;
mod fake;
mod fake_apiserver;
mod rbac;
mod routes;
mod scale;
mod steering;
