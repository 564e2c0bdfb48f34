//! `cargo xtask bench SUITE [FLAGS]`: the entry point of the benchmarks,
//! which live in their own crate (`bench/`, the `detour-bench` binary).
//! This glue sets the machine up, builds the release agent the benchmarks
//! measure (or takes `DETOUR_BIN`, a prebuilt one, e.g. another commit's,
//! for a paired run), and runs `detour-bench run SUITE [FLAGS]` with it.
//! `cargo xtask bench micro` runs the micro-benchmarks of the agent's hot
//! pure functions instead (`cargo bench -p detour-bench`).

use std::{ffi::OsString, path::PathBuf, process::Command};

use anyhow::bail;
use clap::Args;

use crate::{cargo, exec, root};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The suite (connect, http, h2, relay, soak, sandbox, origins,
    /// inherit, or micro) and its flags: `cargo xtask bench http --help` lists them.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<OsString>,
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let suite = args.args.first().and_then(|s| s.to_str()).unwrap_or("");
    if suite == "micro" {
        return exec(
            cargo()
                .args([
                    "bench",
                    "--locked",
                    "-p",
                    "detour-bench",
                    "--bench",
                    "hot_paths",
                    "--",
                ])
                .args(&args.args[1..]),
        );
    }
    let asks_help = args.args.iter().any(|a| a == "--help" || a == "-h");
    let mut command = cargo();
    command.args([
        "run",
        "--quiet",
        "--locked",
        "-p",
        "detour-bench",
        "--",
        "run",
    ]);
    command.args(&args.args);
    if !asks_help {
        // The sandbox suite runs the tests' control plane: its tools too.
        if suite == "sandbox" {
            command.env(detour_tests::controlplane::TOOLS_ENV, crate::setup::all()?);
        } else {
            crate::setup::run()?;
        }
        let (agent, name) = agent_binary()?;
        command
            .env("DETOUR_BIN", agent)
            .env("DETOUR_BIN_NAME", name);
    }
    exec(&mut command)
}

/// The agent binary to measure, and how the table names it: `$DETOUR_BIN`
/// when it is set (a prebuilt binary, e.g. of another commit), else a fresh
/// release build, named by its commit (`-dirty` with uncommitted changes).
fn agent_binary() -> anyhow::Result<(PathBuf, String)> {
    if let Some(path) = std::env::var_os("DETOUR_BIN") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("DETOUR_BIN={} is not a file", path.display());
        }
        eprintln!(
            "bench: measuring DETOUR_BIN={} (not rebuilt)",
            path.display()
        );
        let name = format!("prebuilt agent `{}`", path.display());
        return Ok((path, name));
    }
    let path = crate::build::run_build(false)?;
    let commit = Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .current_dir(root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(
            || "unknown".to_owned(),
            |o| String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        );
    Ok((path, format!("agent built from commit {commit}")))
}
