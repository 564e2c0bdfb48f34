//! Sandboxes beyond routed requests: everything a fork pod does belongs to
//! its sandbox. Its connects to the services the sandbox forks with no key
//! to carry (databases, caches: `tcp` ports) reach the sandbox's forks of
//! them, decided at `connect()`; real PostgreSQL and Redis servers serve
//! as baseline and fork; and fork pods found from the Kubernetes API.

mod kubernetes;
mod state;
