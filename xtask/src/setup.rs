//! `cargo xtask setup`: installs the toolchain pieces the eBPF build needs and
//! the tools the tests and demo run (see ARCHITECTURE.md, "Toolchain").
//! Idempotent: checks first, installs only what is missing.

use std::{path::Path, process::Command};

use anyhow::{Context, bail};

use crate::{exec, is_root};

const BPF_LINKER_VERSION: &str = "0.13.0";
/// Release binaries carry their dependency list (`cargo auditable build`).
const CARGO_AUDITABLE_VERSION: &str = "0.7.7";

/// What the build needs: (what must exist, apt package that provides it).
/// A path is checked as a file or directory; a bare name is looked up in
/// PATH.
const BUILD_REQUIREMENTS: &[(&str, &str)] = &[
    ("/usr/bin/rustc", "rustc-web"),
    (
        "/usr/lib/rustlib/bpfel-unknown-none",
        "libstd-rust-web-dev-bpf",
    ),
    ("/usr/lib/llvm-22/lib", "llvm-22-dev"),
    // The image (`cargo xtask image`): the binaries' debug info is
    // stripped; the pause program of the test images is linked statically.
    ("strip", "binutils"),
    ("/usr/lib/x86_64-linux-gnu/libc.a", "libc6-dev"),
];

/// What the tests and the demo run besides: same form.
const TEST_REQUIREMENTS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("nsenter", "util-linux"),
    ("curl", "curl"),
    ("python3", "python3"),
    // gRPC and raw HTTP/2 test peers (tests/servers/grpc_server.py,
    // tests/clients/grpc_client.py, tests/clients/h2raw.py): Debian's builds,
    // which those scripts run under /usr/bin/python3.
    ("/usr/lib/python3/dist-packages/grpc", "python3-grpcio"),
    ("/usr/lib/python3/dist-packages/h2", "python3-h2"),
    ("h2load", "nghttp2-client"),
    // An h2c (prior knowledge) file server: a plain HTTP/2 upstream.
    ("nghttpd", "nghttp2-server"),
    ("bpftool", "bpftool"),
    ("iptables", "iptables"),
    // Debian's kubectl, for `kubectl kustomize` in the manifest tests (the
    // control plane tests use the kubectl built beside their API server).
    ("kubectl", "kubernetes-client"),
    // Keys and certificates of the tests' control plane.
    ("openssl", "openssl"),
    // The real node (`cargo xtask cluster`): the container runtime, its OCI
    // runtime and the CNI plugins, Debian's builds (kubelet accepts
    // containerd 1.6 over CRI v1); conntrack for kube-proxy.
    ("containerd", "containerd"),
    ("runc", "runc"),
    ("/usr/lib/cni/bridge", "containernetworking-plugins"),
    ("conntrack", "conntrack"),
    // The real node's NetworkPolicy enforcer (kube-router) manages ipsets.
    ("ipset", "ipset"),
    // Forked databases and caches (the sandbox tests): real servers and
    // their clients (psql, pg_isready; redis-cli).
    ("/usr/lib/postgresql", "postgresql"),
    ("redis-server", "redis-server"),
    // Kafka (the Kafka tests): the broker runs on Java and is fetched by
    // Maven ([`crate::kafka`]); a librdkafka client, Debian's build.
    ("java", "default-jre-headless"),
    ("mvn", "maven"),
    (
        "/usr/lib/python3/dist-packages/confluent_kafka",
        "python3-confluent-kafka",
    ),
];

/// Everything: the build's toolchain and the test tools, including the
/// Kubernetes control plane built from its Go modules ([`crate::k8s_tools`]).
/// Returns the directory of the Kubernetes tools.
pub fn all() -> anyhow::Result<std::path::PathBuf> {
    run()?;
    crate::kafka::ensure()?;
    if crate::cmd_exists("go") {
        crate::k8s_tools::ensure()
    } else {
        bail!(
            "`go` is not in PATH: the tests' Kubernetes control plane is built from its Go modules \
             (Go {} or newer, with the Go module proxy)",
            crate::k8s_tools::GO_VERSION
        )
    }
}

/// The build's toolchain and the system packages the tests and demo use
/// (apt packages, bpf-linker); a fast no-op when present.
pub fn run() -> anyhow::Result<()> {
    install(BUILD_REQUIREMENTS.iter().chain(TEST_REQUIREMENTS))
}

/// The build's toolchain only (what `cargo xtask image` needs, also inside
/// the Dockerfile's build stage).
pub fn build_tools() -> anyhow::Result<()> {
    install(BUILD_REQUIREMENTS.iter())
}

fn install<'a>(requirements: impl Iterator<Item = &'a (&'a str, &'a str)>) -> anyhow::Result<()> {
    let missing: Vec<&str> = requirements
        .filter(|(what, _)| !present(what))
        .map(|(_, package)| *package)
        .collect();
    if !missing.is_empty() {
        if !is_root() {
            bail!(
                "missing packages {missing:?}: run `sudo cargo xtask setup` (or install them with apt)"
            );
        }
        eprintln!("setup: installing {}", missing.join(" "));
        apt(&["update", "-q"])?;
        let mut install = vec!["install", "-y", "-q", "--no-install-recommends"];
        install.extend(&missing);
        apt(&install)?;
    }
    if !bpf_linker_ok() {
        eprintln!("setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (1-2 minutes)");
        exec(
            Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
                .args([
                    "install",
                    "--locked",
                    &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                ])
                .args(["--no-default-features", "--features", "llvm-22"])
                .env("LLVM_PREFIX", "/usr/lib/llvm-22"),
        )?;
    }
    let auditable = format!("cargo-auditable v{CARGO_AUDITABLE_VERSION}:");
    if !tool_version_ok("cargo", &["install", "--list"], &auditable) {
        eprintln!("setup: building cargo-auditable {CARGO_AUDITABLE_VERSION} (about a minute)");
        exec(
            Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())).args([
                "install",
                "--locked",
                &format!("cargo-auditable@{CARGO_AUDITABLE_VERSION}"),
            ]),
        )?;
    }
    Ok(())
}

/// Whether `program ARGS` runs and prints `version`.
fn tool_version_ok(program: &str, args: &[&str], version: &str) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .is_some_and(|o| String::from_utf8_lossy(&o.stdout).contains(version))
}

/// `apt-get ARGS`, non-interactive, waiting for a concurrent apt's lock.
pub fn apt(args: &[&str]) -> anyhow::Result<()> {
    exec(
        Command::new("apt-get")
            .args(["-o", "DPkg::Lock::Timeout=600"])
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .context("apt-get failed")
}

fn present(what: &str) -> bool {
    if what.starts_with('/') {
        Path::new(what).exists()
    } else {
        detour_tests::cmd::which(what).is_some()
    }
}

fn bpf_linker_ok() -> bool {
    Command::new("bpf-linker")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .is_some_and(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION))
        || home_bpf_linker_ok()
}

fn home_bpf_linker_ok() -> bool {
    let Some(home) = std::env::var_os("HOME") else {
        return false;
    };
    let path = Path::new(&home).join(".cargo/bin/bpf-linker");
    Command::new(path)
        .arg("--version")
        .output()
        .ok()
        .is_some_and(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION))
}
