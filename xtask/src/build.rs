//! `cargo xtask build`: the agent, with its eBPF object built and embedded by
//! the agent's build script.

use std::path::PathBuf;

use clap::Args;

use crate::{cargo, exec, root};

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Build without optimisations (faster to compile; used by `test`).
    #[arg(long)]
    pub debug: bool,
}

/// Builds `detour` (and `detour-controller` beside it) and returns the
/// agent binary's path. A release build goes through `cargo auditable`
/// (installed by setup): the binaries carry their dependency list.
pub fn run_build(debug: bool) -> anyhow::Result<PathBuf> {
    let mut command = cargo();
    if !debug {
        command.arg("auditable");
    }
    command.args([
        "build",
        "--locked",
        "-p",
        "detour",
        "-p",
        "detour-controller",
    ]);
    if !debug {
        command.arg("--release");
    }
    exec(&mut command)?;
    let profile = if debug { "debug" } else { "release" };
    Ok(target_dir().join(profile).join("detour"))
}

/// Where cargo builds: `CARGO_TARGET_DIR` when set (relative to the
/// workspace, as cargo reads it), else the workspace's `target/`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root().join("target"), |dir| root().join(dir))
}

pub fn run(args: &BuildArgs) -> anyhow::Result<PathBuf> {
    crate::setup::run()?;
    let binary = run_build(args.debug)?;
    eprintln!("built {}", binary.display());
    Ok(binary)
}
