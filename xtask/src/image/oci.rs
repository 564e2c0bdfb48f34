//! OCI images written directly, without a container engine: layers are
//! deterministic tars (sorted paths, one fixed time, root's ownership unless
//! said otherwise), and the archive is an OCI image layout (`oci-layout`,
//! `index.json`, `blobs/sha256/`) that also carries Docker's
//! `manifest.json`, so `ctr images import`, `docker load`, `podman load` and
//! `kind load image-archive` all take it. The same inputs give the same
//! bytes, so the same digest.

use std::{
    collections::BTreeMap,
    io::Write,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// What a layer holds, by path in the image (no leading `/`), sorted.
#[derive(Debug, Default)]
pub struct Layer {
    entries: BTreeMap<String, Entry>,
}

#[derive(Debug)]
enum Entry {
    Dir { mode: u32, owner: u64 },
    File { source: PathBuf, mode: u32 },
    Bytes { data: Vec<u8>, mode: u32 },
    Symlink { target: PathBuf },
}

impl Layer {
    /// Adds everything under `dir` at `/` of the image, keeping modes and
    /// symbolic links (a later add of a path replaces an earlier one).
    pub fn add_tree(&mut self, dir: &Path) -> anyhow::Result<()> {
        let mut pending = vec![dir.to_owned()];
        while let Some(current) = pending.pop() {
            for entry in
                std::fs::read_dir(&current).with_context(|| format!("{}", current.display()))?
            {
                let path = entry?.path();
                let relative = path
                    .strip_prefix(dir)
                    .context("a path under the tree")?
                    .to_string_lossy()
                    .into_owned();
                let meta = std::fs::symlink_metadata(&path)?;
                let mode = meta.permissions().mode() & 0o7777;
                let entry = if meta.file_type().is_symlink() {
                    Entry::Symlink {
                        target: std::fs::read_link(&path)?,
                    }
                } else if meta.is_dir() {
                    pending.push(path.clone());
                    Entry::Dir { mode, owner: 0 }
                } else if meta.is_file() {
                    Entry::File { source: path, mode }
                } else {
                    bail!(
                        "{} is neither a file, a directory nor a link",
                        path.display()
                    );
                };
                self.entries.insert(relative, entry);
            }
        }
        Ok(())
    }

    /// A directory, owned by `owner` (uid and gid).
    pub fn dir(&mut self, path: &str, mode: u32, owner: u64) {
        self.entries
            .insert(path.to_owned(), Entry::Dir { mode, owner });
    }

    /// A file copied from `source`.
    pub fn file(&mut self, path: &str, source: &Path, mode: u32) {
        self.entries.insert(
            path.to_owned(),
            Entry::File {
                source: source.to_owned(),
                mode,
            },
        );
    }

    /// A file with these bytes.
    pub fn bytes(&mut self, path: &str, data: Vec<u8>, mode: u32) {
        self.entries
            .insert(path.to_owned(), Entry::Bytes { data, mode });
    }

    /// Removes `path` and everything under it.
    pub fn remove(&mut self, path: &str) {
        let under = format!("{path}/");
        self.entries
            .retain(|name, _| name != path && !name.starts_with(&under));
    }

    /// The layer as an uncompressed tar, every time set to `epoch`.
    pub fn tar(&self, epoch: u64) -> anyhow::Result<Vec<u8>> {
        let mut builder = tar::Builder::new(Vec::new());
        builder.follow_symlinks(false);
        for (path, entry) in &self.entries {
            let mut header = tar::Header::new_ustar();
            header.set_mtime(epoch);
            header.set_uid(0);
            header.set_gid(0);
            header.set_size(0);
            match entry {
                Entry::Dir { mode, owner } => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(*mode);
                    header.set_uid(*owner);
                    header.set_gid(*owner);
                    builder.append_data(&mut header, format!("{path}/"), std::io::empty())?;
                }
                Entry::File { source, mode } => {
                    let data =
                        std::fs::read(source).with_context(|| format!("{}", source.display()))?;
                    append_file(&mut builder, &mut header, path, &data, *mode)?;
                }
                Entry::Bytes { data, mode } => {
                    append_file(&mut builder, &mut header, path, data, *mode)?;
                }
                Entry::Symlink { target } => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_mode(0o777);
                    builder.append_link(&mut header, path, target)?;
                }
            }
        }
        Ok(builder.into_inner()?)
    }
}

fn append_file(
    builder: &mut tar::Builder<Vec<u8>>,
    header: &mut tar::Header,
    path: &str,
    data: &[u8],
    mode: u32,
) -> anyhow::Result<()> {
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(mode);
    header.set_size(u64::try_from(data.len())?);
    builder.append_data(header, path, data)?;
    Ok(())
}

/// The image's run settings (the OCI config's `config`).
#[derive(Debug)]
pub struct RunConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub user: String,
    pub labels: BTreeMap<String, String>,
}

/// An image to write: its names (`docker.io/library/detour:0.1.0`; the
/// same image may carry several), layers (as tars), run settings and
/// creation time.
pub struct Image {
    pub names: Vec<String>,
    pub layers: Vec<Vec<u8>>,
    pub run: RunConfig,
    pub epoch: u64,
}

/// What was written.
#[derive(Debug)]
pub struct Written {
    pub path: PathBuf,
    /// `sha256:...` of the manifest: the image's digest.
    pub digest: String,
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

impl Image {
    /// Writes the image as an OCI layout archive at `path`.
    pub fn write(&self, path: &Path) -> anyhow::Result<Written> {
        let diff_ids: Vec<String> = self.layers.iter().map(|l| sha256(l)).collect();
        let created = rfc3339(self.epoch);
        let config = json!({
            "created": created,
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Entrypoint": self.run.entrypoint,
                "Cmd": self.run.cmd,
                "Env": self.run.env,
                "User": self.run.user,
                "WorkingDir": "/",
                "Labels": self.run.labels,
            },
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": self.layers.iter().map(|_| json!({"created": created, "created_by": "cargo xtask image"})).collect::<Vec<_>>(),
        });
        let config = serde_json::to_vec(&config)?;
        let mut blobs: Vec<(String, &[u8])> = Vec::new();
        let config_digest = sha256(&config);
        let layer_descriptors: Vec<Value> = self
            .layers
            .iter()
            .zip(&diff_ids)
            .map(|(layer, digest)| {
                json!({
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": digest,
                    "size": layer.len(),
                })
            })
            .collect();
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": layer_descriptors,
            "annotations": self.run.labels,
        }))?;
        let manifest_digest = sha256(&manifest);
        let manifests: Vec<Value> = self
            .names
            .iter()
            .map(|name| {
                let tag = name.rsplit_once(':').map_or("latest", |(_, tag)| tag);
                json!({
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": manifest_digest,
                    "size": manifest.len(),
                    "platform": {"architecture": "amd64", "os": "linux"},
                    "annotations": {
                        "io.containerd.image.name": name,
                        "org.opencontainers.image.ref.name": tag,
                    },
                })
            })
            .collect();
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        }))?;
        let blob_path = |digest: &str| format!("blobs/sha256/{}", &digest["sha256:".len()..]);
        let docker_manifest = serde_json::to_vec(&json!([{
            "Config": blob_path(&config_digest),
            "RepoTags": self.names.iter().map(|n| docker_tag(n)).collect::<Vec<_>>(),
            "Layers": diff_ids.iter().map(|d| blob_path(d)).collect::<Vec<_>>(),
        }]))?;
        blobs.push((config_digest.clone(), &config));
        blobs.push((manifest_digest.clone(), &manifest));
        for (layer, digest) in self.layers.iter().zip(&diff_ids) {
            blobs.push((digest.clone(), layer));
        }
        blobs.sort_by(|a, b| a.0.cmp(&b.0));
        blobs.dedup_by(|a, b| a.0 == b.0);

        let mut archive = tar::Builder::new(Vec::new());
        let mut add = |name: &str, data: &[u8], mode: u32| -> anyhow::Result<()> {
            let mut header = tar::Header::new_ustar();
            header.set_mtime(self.epoch);
            header.set_mode(mode);
            header.set_size(u64::try_from(data.len())?);
            header.set_entry_type(if name.ends_with('/') {
                tar::EntryType::Directory
            } else {
                tar::EntryType::Regular
            });
            archive.append_data(&mut header, name, data)?;
            Ok(())
        };
        add("blobs/", &[], 0o755)?;
        add("blobs/sha256/", &[], 0o755)?;
        for (digest, data) in &blobs {
            add(&blob_path(digest), data, 0o644)?;
        }
        add("index.json", &index, 0o644)?;
        add("manifest.json", &docker_manifest, 0o644)?;
        add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#, 0o644)?;
        let bytes = archive.into_inner()?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = std::fs::File::create(path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        file.write_all(&bytes)?;
        Ok(Written {
            path: path.to_owned(),
            digest: manifest_digest,
        })
    }
}

/// Docker's short form of a name: `docker.io/library/x:t` is `x:t`.
fn docker_tag(name: &str) -> &str {
    name.strip_prefix("docker.io/library/").unwrap_or(name)
}

/// `YYYY-MM-DDTHH:MM:SSZ` of seconds since the epoch (UTC).
pub fn rfc3339(epoch: u64) -> String {
    let days = i64::try_from(epoch / 86_400).unwrap_or(0);
    let seconds = epoch % 86_400;
    // Days to civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        seconds / 3_600,
        seconds % 3_600 / 60,
        seconds % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_796_637_443), "2026-12-07T09:57:23Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn a_layer_is_the_same_bytes_twice_and_sorted() {
        let mut layer = Layer::default();
        layer.bytes("b/file", b"two".to_vec(), 0o644);
        layer.dir("b", 0o755, 0);
        layer.bytes("a", b"one".to_vec(), 0o600);
        layer.dir("tmp", 0o1777, 0);
        let first = layer.tar(7).expect("tar");
        assert_eq!(first, layer.tar(7).expect("tar"));
        let mut archive = tar::Archive::new(first.as_slice());
        let names: Vec<String> = archive
            .entries()
            .expect("entries")
            .map(|e| {
                let e = e.expect("entry");
                assert_eq!(e.header().mtime().expect("mtime"), 7);
                e.path().expect("path").display().to_string()
            })
            .collect();
        assert_eq!(names, ["a", "b/", "b/file", "tmp/"]);
    }
}
