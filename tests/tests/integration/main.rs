//! detour's integration tests: one binary, a module per area, each test
//! against the real `detour` binary in network namespaces and cgroups made
//! per test (the harness, `detour_tests`), real clients and servers, the
//! real kernel, and where the area needs it the real Kubernetes control
//! plane and a real node.
//!
//! `cargo xtask test -- AREA::` runs one area (`http1::`, `node::`, ...);
//! `tests/README.md` lists the tiers and what each needs.

mod agent;
mod cli;
mod controller;
mod datapath;
mod h2;
mod http1;
mod image;
mod k8s;
mod kafka;
mod node;
mod sandbox;
