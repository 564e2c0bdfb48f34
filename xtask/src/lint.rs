//! `cargo xtask clippy` and `cargo xtask fmt`, for the host workspace and the
//! eBPF crate. The eBPF crate is linted for the host target: clippy has no
//! `core` for `bpfel-unknown-none` here, and the lints are target-independent.

use clap::Args;

use crate::{cargo, ebpf_dir, exec};

pub fn clippy() -> anyhow::Result<()> {
    crate::setup::run()?;
    exec(cargo().args([
        "clippy",
        "--locked",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    exec(
        cargo()
            .current_dir(ebpf_dir())
            .args([
                "clippy",
                "--locked",
                "--target",
                "x86_64-unknown-linux-gnu",
                "--",
                "-D",
                "warnings",
            ])
            .env("RUSTFLAGS", "--cfg bpf_target_arch=\"x86_64\"")
            .env("CARGO_TARGET_DIR", ebpf_dir().join("target/clippy")),
    )
}

#[derive(Debug, Args)]
pub struct FmtArgs {
    /// Check only; fail when a file is not formatted.
    #[arg(long)]
    pub check: bool,
}

pub fn fmt(args: &FmtArgs) -> anyhow::Result<()> {
    let check: &[&str] = if args.check { &["--check"] } else { &[] };
    exec(cargo().args(["fmt", "--all"]).args(check))?;
    exec(
        cargo()
            .current_dir(ebpf_dir())
            .args(["fmt", "--all"])
            .args(check),
    )
}
