//! Which cgroup the programs attach to: the node's kubepods cgroup, found by
//! the agent itself unless `--cgroup` (`DETOUR_CGROUP`) names one.
//!
//! The cgroup that holds every pod differs by container runtime, cgroup
//! driver and distribution, and an agent attached to the wrong one steers
//! nothing. Where it is:
//!
//! | layout | kubepods cgroup |
//! |---|---|
//! | cgroup v2, systemd driver (most distributions, EKS, GKE, AKS) | `/sys/fs/cgroup/kubepods.slice` |
//! | cgroup v2, cgroupfs driver (k3s, kubeadm with cgroupfs) | `/sys/fs/cgroup/kubepods` |
//! | kind (kubelet `--cgroup-root=/kubelet`, systemd driver) | `/sys/fs/cgroup/kubelet.slice/kubelet-kubepods.slice` |
//! | kind with the cgroupfs driver | `/sys/fs/cgroup/kubelet/kubepods` |
//! | hybrid v1/v2 (cgroup2 at `/sys/fs/cgroup/unified`), either driver | `/sys/fs/cgroup/unified/kubepods`, `.../kubepods.slice` |
//!
//! The agent looks in two ways, in this order:
//! 1. **Its own cgroup.** The agent runs in a pod, so its own cgroup v2 path
//!    (`0::` in `/proc/self/cgroup`) runs through the kubepods cgroup: the
//!    path up to its first component that names `kubepods` is that cgroup,
//!    found under a cgroup2 mount point. This follows any cgroup root the
//!    kubelet was given. It does not work in a private cgroup namespace
//!    (the path is then `/`).
//! 2. **The known layouts** above, under every cgroup2 mount point, the
//!    first that exists.
//!
//! Nothing found is an error that names where it looked and the override.

use std::path::{Path, PathBuf};

/// Kubepods cgroups of the known layouts, relative to a cgroup2 mount point,
/// in the order they are tried.
pub const LAYOUTS: [&str; 4] = [
    "kubepods.slice",
    "kubepods",
    "kubelet.slice/kubelet-kubepods.slice",
    "kubelet/kubepods",
];

/// The cgroup chosen, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChosenCgroup {
    pub path: PathBuf,
    pub reason: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DetectError {
    #[error(
        "no cgroup2 filesystem is mounted (looked in /proc/self/mountinfo): mount the host's \
         /sys/fs/cgroup into the agent, or set --cgroup/DETOUR_CGROUP"
    )]
    NoCgroup2,
    #[error(
        "no kubepods cgroup found under {}: the agent's own cgroup ({own}) names none, and none \
         of {} exists; set --cgroup/DETOUR_CGROUP to the cgroup v2 directory holding the node's \
         pods",
        list(mounts), LAYOUTS.join(", ")
    )]
    NotFound { mounts: Vec<PathBuf>, own: String },
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What detection reads of the node: text of `/proc/self/mountinfo` and
/// `/proc/self/cgroup`, and whether a directory exists.
pub struct NodeView<'a> {
    pub mountinfo: &'a str,
    pub self_cgroup: &'a str,
    pub is_dir: &'a dyn Fn(&Path) -> bool,
}

/// `flag` when set; otherwise the kubepods cgroup of this node.
pub fn choose(flag: Option<&Path>) -> Result<ChosenCgroup, DetectError> {
    if let Some(path) = flag {
        return Ok(ChosenCgroup {
            path: path.to_owned(),
            reason: "set by --cgroup/DETOUR_CGROUP".to_owned(),
        });
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let self_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    detect(&NodeView {
        mountinfo: &mountinfo,
        self_cgroup: &self_cgroup,
        is_dir: &|path: &Path| path.is_dir(),
    })
}

/// Finds the kubepods cgroup (see the module docs).
pub fn detect(node: &NodeView<'_>) -> Result<ChosenCgroup, DetectError> {
    let mounts = cgroup2_mounts(node.mountinfo);
    if mounts.is_empty() {
        return Err(DetectError::NoCgroup2);
    }
    let own = own_cgroup(node.self_cgroup);
    if let Some(prefix) = own.as_deref().and_then(kubepods_prefix) {
        for mount in &mounts {
            let path = mount.join(prefix);
            if (node.is_dir)(&path) {
                return Ok(ChosenCgroup {
                    reason: format!(
                        "detected: the agent's own cgroup {} lies under it",
                        own.as_deref().unwrap_or_default()
                    ),
                    path,
                });
            }
        }
    }
    for mount in &mounts {
        for layout in LAYOUTS {
            let path = mount.join(layout);
            if (node.is_dir)(&path) {
                return Ok(ChosenCgroup {
                    reason: format!("detected: the first known kubepods layout found ({layout})"),
                    path,
                });
            }
        }
    }
    Err(DetectError::NotFound {
        mounts,
        own: own.unwrap_or_else(|| "unknown".to_owned()),
    })
}

/// Mount points of cgroup2 filesystems that show the whole hierarchy (their
/// root is `/`), in mount order. A mount hides every earlier one at its
/// point or beneath it (a host's `/sys/fs/cgroup` mounted over the
/// container's own).
fn cgroup2_mounts(mountinfo: &str) -> Vec<PathBuf> {
    let mut mounts: Vec<PathBuf> = Vec::new();
    for line in mountinfo.lines() {
        // id parent major:minor root mount-point options [optional...] - type source super
        let Some((before, after)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = before.split(' ').collect();
        let fs_type = after.split(' ').next().unwrap_or_default();
        let (Some(root), Some(point)) = (fields.get(3), fields.get(4)) else {
            continue;
        };
        let point = PathBuf::from(unescape(point));
        mounts.retain(|m| !m.starts_with(&point));
        if fs_type == "cgroup2" && *root == "/" {
            mounts.push(point);
        }
    }
    mounts
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|digits| {
            std::str::from_utf8(digits)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup v2 path of `/proc/self/cgroup` (its `0::` line).
fn own_cgroup(self_cgroup: &str) -> Option<String> {
    self_cgroup
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(str::to_owned)
}

/// The part of a cgroup path up to and including its first component that
/// names kubepods, relative (no leading `/`).
fn kubepods_prefix(own: &str) -> Option<&str> {
    let own = own.trim_start_matches('/');
    let mut end = 0;
    for component in own.split('/') {
        end += component.len();
        if component.contains("kubepods") {
            return Some(&own[..end]);
        }
        end += 1;
    }
    None
}

#[cfg(test)]
#[path = "cgroup/tests.rs"]
mod tests;
