//! The image's software bill of materials, SPDX 2.3 JSON: every Rust crate
//! the two binaries are built from (from `cargo metadata`, Linux x86-64
//! only, build and dev dependencies left out) and every Debian package of
//! the base. It is written into the image (`/usr/share/detour/sbom.spdx.json`)
//! and beside the archive. Deterministic: sorted, and dated by the image's
//! creation time.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use serde_json::{Value, json};

use super::debian::Package;
use crate::cargo;

/// A Rust crate in the binaries.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Crate {
    pub name: String,
    pub version: String,
    /// `registry+https://github.com/rust-lang/crates.io-index`, or `None`
    /// for the workspace's own crates.
    pub source: Option<String>,
    pub license: Option<String>,
}

/// The crates `roots` (package names) depend on at run time, themselves
/// included.
pub fn crates(roots: &[&str]) -> anyhow::Result<Vec<Crate>> {
    let output = cargo()
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--filter-platform",
            "x86_64-unknown-linux-gnu",
        ])
        .output()
        .context("cannot run cargo metadata")?;
    anyhow::ensure!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout)?;
    let packages: BTreeMap<&str, &Value> = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["id"].as_str()?, p)))
        .collect();
    let nodes: BTreeMap<&str, &Value> = metadata["resolve"]["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| Some((n["id"].as_str()?, n)))
        .collect();
    let mut pending: Vec<&str> = packages
        .iter()
        .filter(|(_, p)| roots.contains(&p["name"].as_str().unwrap_or_default()))
        .map(|(id, _)| *id)
        .collect();
    let mut seen = BTreeSet::new();
    while let Some(id) = pending.pop() {
        if !seen.insert(id) {
            continue;
        }
        for dep in nodes
            .get(id)
            .and_then(|n| n["deps"].as_array())
            .into_iter()
            .flatten()
        {
            let normal = dep["dep_kinds"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|kind| kind["kind"].is_null());
            if normal && let Some(pkg) = dep["pkg"].as_str() {
                pending.push(pkg);
            }
        }
    }
    let mut crates: Vec<Crate> = seen
        .iter()
        .filter_map(|id| packages.get(id))
        .map(|p| Crate {
            name: p["name"].as_str().unwrap_or_default().to_owned(),
            version: p["version"].as_str().unwrap_or_default().to_owned(),
            source: p["source"].as_str().map(str::to_owned),
            license: p["license"].as_str().map(str::to_owned),
        })
        .collect();
    crates.sort();
    crates.dedup();
    Ok(crates)
}

/// The SPDX document for `image` (`name:version`).
pub fn spdx(image: &str, created: &str, crates: &[Crate], debs: &[Package]) -> Value {
    let mut packages = Vec::new();
    let mut relationships = Vec::new();
    let spdx_id = |kind: &str, name: &str, version: &str| {
        let clean = |s: &str| {
            s.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '.' {
                        c
                    } else {
                        '-'
                    }
                })
                .collect::<String>()
        };
        format!("SPDXRef-{kind}-{}-{}", clean(name), clean(version))
    };
    for krate in crates {
        let id = spdx_id("crate", &krate.name, &krate.version);
        let (download, purl) = match &krate.source {
            Some(_) => (
                format!(
                    "https://crates.io/api/v1/crates/{}/{}/download",
                    krate.name, krate.version
                ),
                format!("pkg:cargo/{}@{}", krate.name, krate.version),
            ),
            None => (
                "NOASSERTION".to_owned(),
                format!("pkg:cargo/{}@{}", krate.name, krate.version),
            ),
        };
        packages.push(json!({
            "name": krate.name,
            "SPDXID": id,
            "versionInfo": krate.version,
            "downloadLocation": download,
            "licenseDeclared": krate.license.clone().unwrap_or_else(|| "NOASSERTION".to_owned()),
            "filesAnalyzed": false,
            "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": purl}],
        }));
        relationships.push(json!({"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES", "relatedSpdxElement": id}));
    }
    for deb in debs {
        let id = spdx_id("deb", &deb.name, &deb.version);
        packages.push(json!({
            "name": deb.name,
            "SPDXID": id,
            "versionInfo": deb.version,
            "supplier": "Organization: Debian",
            "downloadLocation": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "filesAnalyzed": false,
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": format!("pkg:deb/debian/{}@{}?arch={}&distro=debian-12", deb.name, deb.version, deb.arch),
            }],
        }));
        relationships.push(json!({"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES", "relatedSpdxElement": id}));
    }
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": image,
        "documentNamespace": format!("https://detour.dev/spdx/{image}"),
        "creationInfo": {"created": created, "creators": ["Tool: cargo-xtask-image"]},
        "packages": packages,
        "relationships": relationships,
    })
}
