//! `cargo xtask crdgen`: writes the CRDs generated from the agent's Rust types
//! to `deploy/crds/` (one file per CRD) with `detour crdgen --out`. A unit
//! test in the agent fails when the committed files differ from what the
//! types generate.

use std::process::Command;

use crate::{exec, root};

pub fn run() -> anyhow::Result<()> {
    crate::setup::run()?;
    let binary = crate::build::run_build(true)?;
    let dir = root().join("deploy/crds");
    std::fs::create_dir_all(&dir)?;
    exec(Command::new(&binary).arg("crdgen").arg("--out").arg(&dir))
}
