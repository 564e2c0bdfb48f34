//! Sandboxes beyond routed requests: everything a fork pod does belongs to
//! its sandbox. Its requests without a routing key inherit the sandbox's
//! (`inherit`); its connects to the services the sandbox forks with no key
//! to carry (databases, caches: `tcp` ports) reach the sandbox's forks of
//! them, decided at `connect()`, with real PostgreSQL and Redis servers as
//! baseline and fork (`state`); fork pods are found from the Kubernetes API
//! (`kubernetes`); and a StatefulSet fork seeded from its baseline serves a
//! forked service on the real control plane (`stateful`).

mod inherit;
mod kubernetes;
mod state;
mod stateful;
