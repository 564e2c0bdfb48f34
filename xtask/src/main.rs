//! `cargo xtask`: the project's tasks, so that a fresh machine needs nothing
//! but the repository and `cargo`.

mod bench;
mod build;
mod cluster;
mod crdgen;
mod demo;
mod fuzz;
mod image;
mod k8s_tools;
mod kafka;
mod lint;
mod setup;
mod test;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install what the build and tests need (apt packages, bpf-linker, the Kubernetes tools); a fast no-op when present.
    Setup,
    /// Build the agent (with its embedded eBPF programs).
    Build(build::BuildArgs),
    /// Setup, build, then run every test, including the root-only namespace tests.
    Test(test::TestArgs),
    /// Show detour steering a real curl between network namespaces.
    Demo,
    /// Clippy with -D warnings on the host workspace and the eBPF crate.
    Clippy,
    /// rustfmt on the host workspace and the eBPF crate.
    Fmt(lint::FmtArgs),
    /// Write the CRDs generated from the Rust types to deploy/crds/.
    Crdgen,
    /// Build the detour image (OCI archive under target/image/) without a container engine.
    Image(image::ImageArgs),
    /// A real one-node Kubernetes cluster on this machine: up, down, status.
    Cluster(cluster::ClusterArgs),
    /// Benchmarks that print ratios against peers measured in the same run (the bench/ crate), or `micro`.
    Bench(bench::BenchArgs),
    /// Build (once; then cached) the real Kubernetes tools the tests run, and print their directory.
    K8sTools(k8s_tools::K8sToolsArgs),
    /// Run the libFuzzer targets in fuzz/ for a bounded time (not part of CI).
    Fuzz(fuzz::FuzzArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Task::Setup => setup::all().map(|_| ()),
        Task::Build(args) => build::run(&args).map(|_| ()),
        Task::Test(args) => test::run(&args),
        Task::Demo => demo::run(),
        Task::Clippy => lint::clippy(),
        Task::Fmt(args) => lint::fmt(&args),
        Task::Crdgen => crdgen::run(),
        Task::Image(args) => image::run(&args),
        Task::Cluster(args) => cluster::run(&args),
        Task::Bench(args) => bench::run(&args),
        Task::Fuzz(args) => fuzz::run(&args),
        Task::K8sTools(args) => k8s_tools::run(&args),
    }
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// `~/.cache/detour` (or under `XDG_CACHE_HOME`): what setup builds and
/// downloads, outside the source tree, kept across clones.
pub fn cache_home() -> anyhow::Result<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))
        .ok_or_else(|| anyhow::anyhow!("neither XDG_CACHE_HOME nor HOME is set"))?;
    Ok(base.join("detour"))
}

/// The eBPF crate's directory (its own workspace).
pub fn ebpf_dir() -> PathBuf {
    root().join("ebpf/detour-ebpf")
}

/// `cargo`, as the one running us.
pub fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(root());
    command
}

/// Runs a command; fails with its description when it does not succeed.
pub fn exec(command: &mut Command) -> anyhow::Result<()> {
    let description = format!("{command:?}");
    let status = command
        .status()
        .with_context(|| format!("cannot run {description}"))?;
    if !status.success() {
        bail!("{description} failed ({status})");
    }
    Ok(())
}

/// Whether `program` is found in PATH.
pub fn cmd_exists(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Whether we run as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
