//! The machine the benchmarks run on: root, the workspace's directories,
//! and running the commands that set peers up.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};

/// Whether we run as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Fails unless we run as root, naming the suite's command.
pub fn require_root(suite: &str) -> anyhow::Result<()> {
    if !is_root() {
        bail!(
            "the benchmark creates network namespaces and attaches eBPF programs: run `sudo -E cargo xtask bench {suite}`"
        );
    }
    Ok(())
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// The workspace's target directory.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root().join("target"), |dir| root().join(dir))
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

/// `apt-get ARGS`, non-interactive, waiting for a held package lock.
pub fn apt(args: &[&str]) -> anyhow::Result<()> {
    exec(
        Command::new("apt-get")
            .args(["-o", "DPkg::Lock::Timeout=600"])
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .context("apt-get failed")
}
