//! The node tests' images, built the way the detour image is (no engine,
//! never pulled), into `target/image/test/`:
//! - the pod sandbox ("pause") image, compiled statically from
//!   `build/pause/linux/pause.c` of the Kubernetes module the node tools are
//!   built from, under the name containerd is told to use;
//! - `detour.dev/test-node` (tags 1 and 2: the same image under two names,
//!   so that a Sandbox can override a baseline's image): the base layer of
//!   the detour image, curl with the Debian packages it needs, and the
//!   static Go programs of `tests/node-images/` (`echo`, the server that
//!   names its pod, and `grpc-probe`, a gRPC client). It runs `echo`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context;

use super::{base_layer, debian, oci, source_date_epoch};
use crate::{build::target_dir, exec, k8s_tools, root};

use detour_tests::node::config::PAUSE_IMAGE as PAUSE;

/// The test server and client image, under its two names.
pub const TEST_NODE: [&str; 2] = ["detour.dev/test-node:1", "detour.dev/test-node:2"];

/// Builds the detour image and the test images; returns the directory
/// holding all their archives (what the real node imports).
pub fn build() -> anyhow::Result<PathBuf> {
    let detour = super::build(None)?;
    let epoch = source_date_epoch()?;
    let out = target_dir().join(super::IMAGE_DIR).join("node");
    std::fs::create_dir_all(&out)?;
    pause(&out, epoch)?;
    test_node(&out, epoch)?;
    for file in [&detour.archive, &detour.sbom] {
        let copy = out.join(file.file_name().context("a file name")?);
        std::fs::copy(file, &copy).with_context(|| format!("cannot copy {}", file.display()))?;
    }
    Ok(out)
}

fn pause(out: &Path, epoch: u64) -> anyhow::Result<()> {
    let source = k8s_tools::kubernetes_module()?.join("build/pause/linux/pause.c");
    let binary = out.join("pause");
    exec(
        Command::new("gcc")
            .args(["-Os", "-Wall", "-Werror", "-static"])
            .arg("-DVERSION=v3.10.2-detour")
            .arg("-o")
            .arg(&binary)
            .arg(&source),
    )
    .context("cannot compile the pause image's program (gcc, static glibc)")?;
    let mut layer = oci::Layer::default();
    layer.file("pause", &binary, 0o755);
    oci::Image {
        names: vec![PAUSE.to_owned()],
        layers: vec![layer.tar(epoch)?],
        run: run_config(&["/pause"], "65535"),
        epoch,
    }
    .write(&out.join("pause.oci.tar"))?;
    Ok(())
}

fn test_node(out: &Path, epoch: u64) -> anyhow::Result<()> {
    let (base, base_debs) = base_layer(out)?;
    let base_names: Vec<&str> = base_debs.iter().map(|p| p.name.as_str()).collect();
    let curl: Vec<String> = debian::with_dependencies(&["curl".to_owned()])?
        .into_iter()
        .filter(|name| !base_names.contains(&name.as_str()))
        .collect();
    let rootfs = out.join("curl-rootfs");
    let _ = std::fs::remove_dir_all(&rootfs);
    debian::extract(&curl, &super::cache_dir()?.join("debs"), &rootfs)?;
    let mut tools = oci::Layer::default();
    tools.add_tree(&rootfs)?;
    debian::prune(&mut tools);
    tools.remove("usr/share/doc");

    let bin = out.join("bin");
    std::fs::create_dir_all(&bin)?;
    exec(
        Command::new("go")
            .current_dir(root().join("tests/node-images"))
            .env("CGO_ENABLED", "0")
            .env("GOTOOLCHAIN", "local")
            .env("GOFLAGS", "-buildvcs=false")
            .args([
                "build",
                "-mod=readonly",
                "-trimpath",
                "-ldflags=-s -w",
                "-o",
            ])
            .arg(&bin)
            .arg("./cmd/..."),
    )?;
    let mut programs = oci::Layer::default();
    programs.dir("usr/local/bin", 0o755, 0);
    for program in ["echo", "grpc-probe"] {
        programs.file(
            &format!("usr/local/bin/{program}"),
            &bin.join(program),
            0o755,
        );
    }
    oci::Image {
        names: TEST_NODE.map(str::to_owned).to_vec(),
        layers: vec![base.tar(epoch)?, tools.tar(epoch)?, programs.tar(epoch)?],
        run: run_config(&["/usr/local/bin/echo"], "0"),
        epoch,
    }
    .write(&out.join("test-node.oci.tar"))?;
    Ok(())
}

fn run_config(entrypoint: &[&str], user: &str) -> oci::RunConfig {
    oci::RunConfig {
        entrypoint: entrypoint.iter().map(|s| (*s).to_owned()).collect(),
        cmd: Vec::new(),
        env: vec!["PATH=/usr/local/bin:/usr/bin:/bin".to_owned()],
        user: user.to_owned(),
        labels: std::collections::BTreeMap::new(),
    }
}
