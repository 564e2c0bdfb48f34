//! `cargo xtask crdgen`: writes the CRDs generated from the agent's Rust types
//! to `deploy/crds/` (one file per CRD) with `detour crdgen --out`. A unit
//! test in the agent fails when the committed files differ from what the
//! types generate.

use std::process::Command;

use crate::{exec, root};

pub fn run() -> anyhow::Result<()> {
    crate::setup::run()?;
    let binary = crate::build::run_build(true)?;
    // The kustomization's copy and the Helm chart's (Helm installs CRDs only
    // from the chart's own crds/ directory); a test keeps them identical.
    for dir in ["deploy/crds", "deploy/helm/detour/crds"] {
        let dir = root().join(dir);
        std::fs::create_dir_all(&dir)?;
        exec(Command::new(&binary).arg("crdgen").arg("--out").arg(&dir))?;
    }
    Ok(())
}
