//! `detour crdgen` (hidden): prints the CustomResourceDefinitions generated
//! from the Rust types, as `cargo xtask crdgen` writes them to `deploy/crds/`.

use anyhow::Context;
use kube::CustomResourceExt;

use crate::k8s::crd::{RouteGroup, Sandbox};

/// The YAML of every CRD, one document each, by file name.
pub fn documents() -> anyhow::Result<Vec<(&'static str, String)>> {
    Ok(vec![
        (
            "sandboxes.detour.dev.yaml",
            yaml_serde::to_string(&Sandbox::crd())?,
        ),
        (
            "routegroups.detour.dev.yaml",
            yaml_serde::to_string(&RouteGroup::crd())?,
        ),
    ])
}

/// Writes each CRD to `out/<name>`, or prints them all when `out` is `None`.
pub fn run(out: Option<&std::path::Path>) -> anyhow::Result<()> {
    for (name, yaml) in documents()? {
        match out {
            Some(dir) => {
                let path = dir.join(name);
                std::fs::write(&path, yaml)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                println!("wrote {}", path.display());
            }
            None => println!("---\n{yaml}"),
        }
    }
    Ok(())
}
