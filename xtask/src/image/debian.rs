//! Debian packages as image content, without an engine: `apt-get download`
//! of each package (and, for a tool, the packages it depends on) into a
//! cache keyed by name and version, then `dpkg-deb -x` into a root
//! filesystem. What was taken is listed for the SBOM.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};

use crate::exec;

/// One package as it went into an image.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub arch: String,
}

/// Package names of a list file: one per line, `#` comments.
pub fn read_list(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    Ok(text
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default().trim())
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect())
}

/// `names` and everything they depend on (Depends and Pre-Depends, no
/// recommendations), without virtual packages, sorted.
pub fn with_dependencies(names: &[String]) -> anyhow::Result<Vec<String>> {
    let output = Command::new("apt-cache")
        .args([
            "depends",
            "--recurse",
            "--no-recommends",
            "--no-suggests",
            "--no-conflicts",
            "--no-breaks",
            "--no-replaces",
            "--no-enhances",
        ])
        .args(names)
        .output()
        .context("cannot run apt-cache")?;
    if !output.status.success() {
        bail!(
            "apt-cache depends {names:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let mut all: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| !line.starts_with(' ') && !line.starts_with('<'))
        .map(|line| line.trim().to_owned())
        .filter(|name| !name.is_empty())
        .collect();
    all.sort();
    all.dedup();
    Ok(all)
}

/// The version apt would install of `name`, and its architecture.
fn candidate(name: &str) -> anyhow::Result<Package> {
    let output = Command::new("apt-cache")
        .args(["show", "--no-all-versions", name])
        .output()
        .context("cannot run apt-cache")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let field = |key: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(key))
            .map(|value| value.trim().to_owned())
    };
    match (field("Version:"), field("Architecture:")) {
        (Some(version), Some(arch)) => Ok(Package {
            name: name.to_owned(),
            version,
            arch,
        }),
        _ => bail!(
            "Debian package {name} not found (run `apt-get update`?): {}",
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

/// Downloads (once) each package into `cache` and extracts it into
/// `rootfs`. Returns what was extracted, sorted.
pub fn extract(names: &[String], cache: &Path, rootfs: &Path) -> anyhow::Result<Vec<Package>> {
    std::fs::create_dir_all(cache)?;
    std::fs::create_dir_all(rootfs)?;
    let mut packages = Vec::new();
    for name in names {
        let mut package = candidate(name)?;
        let deb = match fetch(&package, cache) {
            Ok(deb) => deb,
            Err(_) => {
                // Package lists older than the archive (a security update
                // replaced that version): refresh them, and ask again.
                crate::setup::apt(&["update", "-q"])?;
                package = candidate(name)?;
                fetch(&package, cache)?
            }
        };
        exec(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(rootfs))?;
        packages.push(package);
    }
    packages.sort();
    Ok(packages)
}

/// The cached `.deb` of `package`, downloaded first if missing.
fn fetch(package: &Package, cache: &Path) -> anyhow::Result<PathBuf> {
    let file = cache.join(format!(
        "{}_{}_{}.deb",
        package.name,
        package.version.replace(':', "%3a"),
        package.arch
    ));
    if file.exists() {
        return Ok(file);
    }
    let staging = cache.join(format!(".download-{}", package.name));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)?;
    exec(
        Command::new("apt-get")
            .current_dir(&staging)
            // Root downloads into root's cache: no `_apt` sandbox to warn about.
            .args(["-qq", "-o", "APT::Sandbox::User=root", "download"])
            .arg(format!("{}={}", package.name, package.version)),
    )
    .with_context(|| format!("cannot download Debian package {}", package.name))?;
    let downloaded = std::fs::read_dir(&staging)?
        .flatten()
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|ext| ext == "deb"))
        .with_context(|| format!("apt-get download {} wrote no .deb", package.name))?;
    std::fs::rename(&downloaded, &file)?;
    let _ = std::fs::remove_dir_all(&staging);
    Ok(file)
}

/// The CA bundle `update-ca-certificates` would write at install (the
/// package ships the certificates, its maintainer script the bundle): every
/// certificate of `usr/share/ca-certificates`, in name order.
pub fn ca_bundle(rootfs: &Path) -> anyhow::Result<Vec<u8>> {
    let mut certificates = Vec::new();
    let mut pending = vec![rootfs.join("usr/share/ca-certificates")];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("{}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "crt") {
                certificates.push(path);
            }
        }
    }
    certificates.sort();
    anyhow::ensure!(!certificates.is_empty(), "no CA certificates in the base");
    let mut bundle = Vec::new();
    for path in certificates {
        let mut pem = std::fs::read(&path)?;
        if !pem.ends_with(b"\n") {
            pem.push(b'\n');
        }
        bundle.extend(pem);
    }
    Ok(bundle)
}

/// Drops what an image without a shell or man reader never uses.
pub fn prune(layer: &mut super::oci::Layer) {
    for path in [
        "usr/share/man",
        "usr/share/info",
        "usr/share/lintian",
        "usr/share/doc-base",
        "usr/share/bug",
        "usr/share/locale",
    ] {
        layer.remove(path);
    }
}
