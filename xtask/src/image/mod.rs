//! `cargo xtask image`: the detour image (the agent, which is also the node
//! CLI, and `detour-controller`), built without a container engine from the
//! release binaries, as an OCI archive under `target/image/`.
//!
//! The image is two layers:
//! 1. the base: the Debian 12 packages of `deploy/image/base-packages.txt`
//!    (glibc, libgcc, time zones, CA certificates: what distroless's
//!    cc-debian12 holds) extracted as they are, plus `deploy/image/rootfs/`
//!    (users `root` and `nonroot` 65532, nsswitch), `/tmp` and
//!    `/home/nonroot`; no shell, no package manager;
//! 2. the binaries in `/usr/local/bin/` (built with `cargo auditable`, so
//!    their dependency list can be read back from them; debug info
//!    stripped) and the SBOM in `/usr/share/detour/sbom.spdx.json`.
//!
//! It runs `/usr/local/bin/detour agent` as root by default (the agent needs
//! its capabilities); the controller's Deployment runs it as `nonroot`.
//! Timestamps are the commit's (`SOURCE_DATE_EPOCH` overrides), so the same
//! commit and the same Debian packages give the same digest. The Dockerfile
//! builds the same files from the same lists (deploy/README.md).

pub mod debian;
mod dockerfile;
pub mod oci;
mod sbom;
pub mod test_images;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context;
use clap::Args;

use crate::{build::target_dir, exec, root};

/// Where the image and its SBOM are written, under the target directory.
pub const IMAGE_DIR: &str = "image";
/// The image's repository name, as the manifests in `deploy/` name it.
pub const REPOSITORY: &str = "detour";
/// Where the image holds its SBOM.
pub const SBOM_IN_IMAGE: &str = "usr/share/detour/sbom.spdx.json";
/// How the image runs (the Dockerfile says the same; a test compares).
pub const ENTRYPOINT: &str = "/usr/local/bin/detour";
pub const CMD: &str = "agent";
pub const USER: &str = "0";
pub const ENV: [&str; 2] = [
    "PATH=/usr/local/bin:/usr/bin:/bin",
    "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
];

#[derive(Debug, Args)]
pub struct ImageArgs {
    /// The image's tag (default: the workspace version).
    #[arg(long)]
    pub tag: Option<String>,
    /// Also the real-node tests' images (pause, test-node); prints the
    /// directory holding every archive (what `DETOUR_IMAGES` names).
    #[arg(long, conflicts_with = "tag")]
    pub node: bool,
}

pub fn run(args: &ImageArgs) -> anyhow::Result<()> {
    if args.node {
        println!("{}", test_images::build()?.display());
        return Ok(());
    }
    let built = build(args.tag.as_deref())?;
    println!("{}", built.archive.display());
    let archive = built.archive.display();
    eprintln!(
        "image {} ({}), SBOM {}\nload it with one of: ctr -n k8s.io images import {archive}; \
         docker load -i {archive}; podman load -i {archive}; kind load image-archive {archive}",
        built.name,
        built.digest,
        built.sbom.display()
    );
    Ok(())
}

/// A built image.
#[derive(Debug)]
pub struct Built {
    /// `docker.io/library/detour:TAG`.
    pub name: String,
    pub archive: PathBuf,
    pub sbom: PathBuf,
    pub digest: String,
}

/// The workspace version (the image's default tag).
pub fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// Builds the release binaries and the image; returns where it is.
pub fn build(tag: Option<&str>) -> anyhow::Result<Built> {
    crate::setup::build_tools()?;
    crate::build::run_build(false)?;
    let tag = tag.unwrap_or(version());
    let epoch = source_date_epoch()?;
    let name = format!("docker.io/library/{REPOSITORY}:{tag}");
    let out = target_dir().join(IMAGE_DIR);
    std::fs::create_dir_all(&out)?;

    let (base, debs) = base_layer(&out)?;
    let crates = sbom::crates(&["detour", "detour-controller"])?;
    let sbom = serde_json::to_vec_pretty(&sbom::spdx(
        &format!("{REPOSITORY}:{tag}"),
        &oci::rfc3339(epoch),
        &crates,
        &debs,
    ))?;
    let sbom_path = out.join(format!("{REPOSITORY}-{tag}.spdx.json"));
    std::fs::write(&sbom_path, &sbom)?;

    let mut app = oci::Layer::default();
    app.dir("usr/local/bin", 0o755, 0);
    for binary in ["detour", "detour-controller"] {
        let stripped = out.join(binary);
        exec(
            Command::new("strip")
                .arg("--strip-debug")
                .arg("-o")
                .arg(&stripped)
                .arg(target_dir().join("release").join(binary)),
        )?;
        app.file(&format!("usr/local/bin/{binary}"), &stripped, 0o755);
    }
    app.dir("usr/share/detour", 0o755, 0);
    app.bytes(SBOM_IN_IMAGE, sbom, 0o644);

    let image = oci::Image {
        names: vec![name.clone()],
        layers: vec![base.tar(epoch)?, app.tar(epoch)?],
        run: oci::RunConfig {
            entrypoint: vec![ENTRYPOINT.to_owned()],
            cmd: vec![CMD.to_owned()],
            env: ENV.map(str::to_owned).to_vec(),
            user: USER.to_owned(),
            labels: labels(tag),
        },
        epoch,
    };
    let written = image.write(&out.join(format!("{REPOSITORY}-{tag}.oci.tar")))?;
    Ok(Built {
        name,
        archive: written.path,
        sbom: sbom_path,
        digest: written.digest,
    })
}

/// The base layer: Debian's packages and the image's own `/etc` files.
pub fn base_layer(out: &Path) -> anyhow::Result<(oci::Layer, Vec<debian::Package>)> {
    let names = debian::read_list(&root().join("deploy/image/base-packages.txt"))?;
    let rootfs = out.join("base-rootfs");
    let _ = std::fs::remove_dir_all(&rootfs);
    let debs = debian::extract(&names, &cache_dir()?.join("debs"), &rootfs)?;
    let mut layer = oci::Layer::default();
    layer.add_tree(&rootfs)?;
    debian::prune(&mut layer);
    layer.add_tree(&root().join("deploy/image/rootfs"))?;
    layer.bytes(
        "etc/ssl/certs/ca-certificates.crt",
        debian::ca_bundle(&rootfs)?,
        0o644,
    );
    layer.dir("tmp", 0o1777, 0);
    layer.dir("home", 0o755, 0);
    layer.dir("home/nonroot", 0o700, 65_532);
    layer.dir("root", 0o700, 0);
    Ok((layer, debs))
}

/// OCI labels (and manifest annotations): what platform teams check.
fn labels(tag: &str) -> BTreeMap<String, String> {
    // `DETOUR_REVISION` where there is no git checkout (an engine's build).
    let revision = std::env::var("DETOUR_REVISION")
        .ok()
        .or_else(|| git(&["rev-parse", "HEAD"]).ok())
        .unwrap_or_else(|| "unknown".to_owned());
    [
        ("org.opencontainers.image.title", "detour"),
        (
            "org.opencontainers.image.description",
            "detour: per-request traffic steering to sandbox forks (node agent, node CLI and sandbox controller)",
        ),
        ("org.opencontainers.image.version", tag),
        ("org.opencontainers.image.revision", revision.as_str()),
        ("org.opencontainers.image.licenses", "Apache-2.0"),
        ("dev.detour.sbom", SBOM_IN_IMAGE),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// `SOURCE_DATE_EPOCH`, else the commit's time, else 0 (no git checkout).
pub fn source_date_epoch() -> anyhow::Result<u64> {
    if let Some(epoch) = std::env::var_os("SOURCE_DATE_EPOCH") {
        return epoch
            .to_string_lossy()
            .parse()
            .context("SOURCE_DATE_EPOCH is not a number");
    }
    Ok(git(&["log", "-1", "--format=%ct"])
        .ok()
        .and_then(|time| time.parse().ok())
        .unwrap_or(0))
}

fn git(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("git")
        .current_dir(root())
        .args(args)
        .output()
        .context("cannot run git")?;
    anyhow::ensure!(output.status.success(), "git {args:?} failed");
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// `~/.cache/detour/image/`: downloaded packages and built test images.
pub fn cache_dir() -> anyhow::Result<PathBuf> {
    Ok(crate::cache_home()?.join("image"))
}
