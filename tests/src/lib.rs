//! Test harness for detour's integration tests and demo: network namespaces
//! joined by a bridge, a child cgroup, and the real `detour` binary, each
//! behind an RAII guard that cleans up even when a test fails.
//!
//! Everything here shells out to the real tools (`ip`, `nsenter`, `curl`,
//! `python3`, `bpftool`): the point is to exercise detour exactly as a node
//! would, in the real kernel. Kubernetes is real too ([`ControlPlane`]:
//! etcd, kube-apiserver, kube-controller-manager, and a node simulator in
//! place of the kubelet; and [`node::KubeNode`], a real node with the
//! kubelet, containerd, the CNI bridge and kube-proxy running the built
//! image); the older Kubernetes tests still use an in-process stand-in
//! ([`FakeApiServer`]) that speaks the real list/watch protocol.

pub mod agent;
pub mod cgroup;
pub mod cluster;
pub mod cmd;
pub mod controlplane;
mod databases;
#[cfg(feature = "fake-apiserver")]
pub mod fake_apiserver;
pub mod fixture;
pub mod kafka;
pub mod netns;
pub mod node;
mod servers;
pub mod topology;

pub use agent::{Agent, AgentBuilder};
pub use cgroup::Cgroup;
pub use cluster::Cluster;
pub use controlplane::ControlPlane;
pub use databases::Postgres;
#[cfg(feature = "fake-apiserver")]
pub use fake_apiserver::FakeApiServer;
pub use fixture::{Forked, Servers};
pub use servers::RequestLog;
pub use topology::{Pod, Topology};

/// Environment variable that skips root-only tests (they fail otherwise).
pub const SKIP_ROOT_ENV: &str = "DETOUR_SKIP_ROOT_TESTS";

/// Fails the calling test, with the reason, when it cannot run here. Returns
/// `false` (skip) only when the explicit opt-out variable is set.
pub fn require_root() -> bool {
    if std::env::var_os(SKIP_ROOT_ENV).is_some() {
        eprintln!("skipped: {SKIP_ROOT_ENV} is set");
        return false;
    }
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root (network namespaces, cgroups, eBPF); run `sudo cargo xtask test`, \
         or set {SKIP_ROOT_ENV}=1 to skip it explicitly"
    );
    for tool in ["ip", "nsenter", "curl", "python3", "bpftool"] {
        assert!(
            cmd::which(tool).is_some(),
            "this test needs `{tool}` in PATH; run `cargo xtask setup`"
        );
    }
    true
}

/// The `detour` binary under test: `$DETOUR_BIN`, else the newer of the
/// workspace's release and debug builds.
pub fn detour_bin() -> std::path::PathBuf {
    if let Some(path) = std::env::var_os("DETOUR_BIN") {
        return path.into();
    }
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    ["release", "debug"]
        .iter()
        .map(|profile| target.join(profile).join("detour"))
        .filter_map(|path| Some((path.metadata().ok()?.modified().ok()?, path)))
        .max()
        .map(|(_, path)| path)
        .unwrap_or_else(|| panic!("no detour binary: run `cargo xtask build` or set DETOUR_BIN"))
}

/// The `detour-controller` binary under test: `$DETOUR_CONTROLLER_BIN`, else
/// the one beside the agent binary (`cargo xtask build` builds both).
pub fn controller_bin() -> std::path::PathBuf {
    if let Some(path) = std::env::var_os("DETOUR_CONTROLLER_BIN") {
        return path.into();
    }
    detour_bin().with_file_name("detour-controller")
}

/// A short name unique to this process and call, for namespaces and cgroups.
/// The clock's sub-second digits guard against a recycled PID meeting the
/// leftovers of an earlier run that was killed before it could clean up.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}{}-{n}-{:03}",
        std::process::id() % 100_000,
        nanos % 1000
    )
}
