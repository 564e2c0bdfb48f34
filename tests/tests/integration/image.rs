//! The detour image as `cargo xtask image` writes it (the archive in
//! `$DETOUR_IMAGES`, which `cargo xtask test` builds): what platform teams
//! check before they run a privileged agent, and that the same inputs give
//! the same digest. Part of the real-node tier (`DETOUR_SKIP_NODE_TESTS`
//! skips it with the image build).

use std::{
    collections::BTreeMap,
    io::Read,
    path::{Path, PathBuf},
    process::Command,
};

use detour_tests::node::{IMAGES_ENV, SKIP_ENV};
use serde_json::Value;

/// The archive's entries, by name.
fn entries(archive: &Path) -> BTreeMap<String, Vec<u8>> {
    let file = std::fs::File::open(archive).expect("the image archive");
    let mut tar = tar::Archive::new(file);
    tar.entries()
        .expect("a tar")
        .map(|entry| {
            let mut entry = entry.expect("an entry");
            let name = entry.path().expect("a name").display().to_string();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).expect("its bytes");
            (name, data)
        })
        .collect()
}

/// The image archive, or `None` when the tier is skipped.
fn archive() -> Option<PathBuf> {
    if std::env::var_os(SKIP_ENV).is_some() {
        eprintln!("skipped: {SKIP_ENV} is set");
        return None;
    }
    let dir = std::env::var_os(IMAGES_ENV).unwrap_or_else(|| {
        panic!("{IMAGES_ENV} is not set: run the tests with `cargo xtask test`, which builds the images")
    });
    let found = std::fs::read_dir(&dir)
        .expect("the images directory")
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with("detour-") && name.ends_with(".oci.tar")
        })
        .expect("the detour image's archive");
    Some(found)
}

fn blob<'a>(entries: &'a BTreeMap<String, Vec<u8>>, digest: &str) -> &'a [u8] {
    let name = format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
    entries
        .get(&name)
        .unwrap_or_else(|| panic!("no blob {name}"))
}

#[test]
fn the_image_holds_the_binaries_an_sbom_and_no_shell_and_runs_the_agent() {
    let Some(archive) = archive() else {
        return;
    };
    let entries = entries(&archive);
    let index: Value = serde_json::from_slice(&entries["index.json"]).expect("index.json");
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .expect("a manifest");
    assert_eq!(
        index["manifests"][0]["annotations"]["io.containerd.image.name"],
        "docker.io/library/detour:0.1.0"
    );
    let manifest: Value =
        serde_json::from_slice(blob(&entries, manifest_digest)).expect("manifest");
    let config: Value = serde_json::from_slice(blob(
        &entries,
        manifest["config"]["digest"].as_str().expect("config"),
    ))
    .expect("config");
    assert_eq!(config["config"]["Entrypoint"][0], "/usr/local/bin/detour");
    assert_eq!(config["config"]["Cmd"][0], "agent");
    assert_eq!(config["config"]["User"], "0");
    let labels = &config["config"]["Labels"];
    for label in ["version", "revision"] {
        let value = labels[format!("org.opencontainers.image.{label}")].as_str();
        assert!(
            value.is_some_and(|v| !v.is_empty()),
            "label {label}: {labels}"
        );
    }
    assert_eq!(labels["org.opencontainers.image.version"], "0.1.0");

    // The files, every layer applied in order.
    let mut files: BTreeMap<String, (u32, u64, Vec<u8>)> = BTreeMap::new();
    for layer in manifest["layers"].as_array().expect("layers") {
        let mut tar = tar::Archive::new(blob(&entries, layer["digest"].as_str().expect("digest")));
        for entry in tar.entries().expect("a layer") {
            let mut entry = entry.expect("an entry");
            let header = entry.header().clone();
            let name = entry.path().expect("a path").display().to_string();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).expect("bytes");
            files.insert(
                name.trim_end_matches('/').to_owned(),
                (
                    header.mode().expect("mode"),
                    header.uid().expect("uid"),
                    data,
                ),
            );
        }
    }
    for binary in ["usr/local/bin/detour", "usr/local/bin/detour-controller"] {
        let (mode, _, data) = files.get(binary).unwrap_or_else(|| panic!("no {binary}"));
        assert_eq!(mode & 0o111, 0o111, "{binary} is executable");
        // cargo auditable's section: the dependency list, readable back.
        assert!(
            data.windows(8).any(|w| w == b".dep-v0\0"),
            "{binary} carries its dependency list (.dep-v0)"
        );
    }
    for absent in ["bin/sh", "bin/bash", "usr/bin/apt", "usr/bin/dpkg"] {
        assert!(!files.contains_key(absent), "{absent} in the image");
    }
    for present in [
        "lib64/ld-linux-x86-64.so.2",
        "lib/x86_64-linux-gnu/libc.so.6",
        "lib/x86_64-linux-gnu/libgcc_s.so.1",
        "etc/ssl/certs/ca-certificates.crt",
        "usr/share/zoneinfo/UTC",
    ] {
        assert!(files.contains_key(present), "{present} missing");
    }
    let passwd = String::from_utf8_lossy(&files["etc/passwd"].2).into_owned();
    assert!(passwd.contains("nonroot:x:65532:65532:"), "{passwd}");
    assert_eq!(files["tmp"].0, 0o1777, "/tmp");
    assert_eq!(files["home/nonroot"].1, 65_532, "/home/nonroot's owner");

    let sbom: Value =
        serde_json::from_slice(&files["usr/share/detour/sbom.spdx.json"].2).expect("the SBOM");
    assert_eq!(sbom["spdxVersion"], "SPDX-2.3");
    let names: Vec<&str> = sbom["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for name in [
        "detour",
        "detour-controller",
        "aya",
        "tokio",
        "kube-client",
        "libc6",
        "ca-certificates",
    ] {
        assert!(names.contains(&name), "{name} is not in the SBOM");
    }
    let beside = archive.with_file_name("detour-0.1.0.spdx.json");
    assert_eq!(
        serde_json::from_slice::<Value>(
            &std::fs::read(&beside).expect("the SBOM beside the archive")
        )
        .expect("JSON"),
        sbom,
        "the SBOM beside the archive is the image's"
    );
}

/// `cargo xtask image --tag TAG`: the digest it prints (the archive and
/// its SBOM are removed).
fn build(tag: &str) -> String {
    let output = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args(["xtask", "image", "--tag", tag])
        .output()
        .expect("cargo xtask image");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "cargo xtask image failed: {stderr}"
    );
    let archive = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let _ = std::fs::remove_file(&archive);
    let _ = std::fs::remove_file(archive.replace(".oci.tar", ".spdx.json"));
    stderr
        .lines()
        .find_map(|line| line.split("(sha256:").nth(1))
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("no digest printed: {stderr}"))
        .to_owned()
}

#[test]
fn the_same_inputs_give_the_same_digest() {
    if archive().is_none() {
        return;
    }
    let first = build("reproducible");
    let second = build("reproducible");
    assert_eq!(first, second, "two builds of the same commit");
    let other = build("another-tag");
    assert_ne!(first, other, "the tag is part of the image");
}
