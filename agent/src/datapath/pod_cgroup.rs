//! Finding a Kubernetes pod's cgroup on the node: the kubelet makes one
//! directory per pod under the node's pod cgroup (the one the agent attaches
//! to), named after the pod's UID, one or two levels down by QoS class:
//!
//! | cgroup driver | a pod's directory |
//! |---|---|
//! | cgroupfs | `kubepods/pod<uid>`, `kubepods/burstable/pod<uid>`, `kubepods/besteffort/pod<uid>` |
//! | systemd | `kubepods.slice/kubepods-pod<uid_>.slice`, `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice`, likewise besteffort (`-` in the UID written `_`) |

use std::path::{Path, PathBuf};

/// How deep under the node's pod cgroup a pod's directory can be.
const MAX_DEPTH: usize = 3;

/// The cgroup directory of the pod with `uid` under `node_cgroup`, if the
/// kubelet has made it.
pub fn find(node_cgroup: &Path, uid: &str) -> Option<PathBuf> {
    let cgroupfs = format!("pod{uid}");
    let systemd = format!("pod{}.slice", uid.replace('-', "_"));
    let is_pod = |name: &str| name == cgroupfs || name.ends_with(&systemd);
    let mut level = vec![node_cgroup.to_owned()];
    for _ in 0..MAX_DEPTH {
        let mut next = Vec::new();
        for dir in &level {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if is_pod(&name) {
                    return Some(entry.path());
                }
                // Only QoS levels hold pods; another pod's containers do
                // not (note `kubepods-burstable.slice` is a QoS level).
                let another_pod = name.starts_with("pod") || name.contains("-pod");
                if !another_pod {
                    next.push(entry.path());
                }
            }
        }
        level = next;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::find;

    const UID: &str = "0f9c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b";

    /// A directory tree of `dirs` under a fresh root named `name`.
    fn tree(name: &str, dirs: &[&str]) -> std::path::PathBuf {
        let root =
            std::env::temp_dir().join(format!("detour-pod-cgroup-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for dir in dirs {
            std::fs::create_dir_all(root.join(dir)).expect("mkdir");
        }
        root
    }

    #[test]
    fn finds_a_pod_in_every_layout_and_qos_class() {
        let layouts = [
            format!("pod{UID}"),
            format!("burstable/pod{UID}"),
            format!("besteffort/pod{UID}"),
            format!("kubepods-pod{}.slice", UID.replace('-', "_")),
            format!(
                "kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
                UID.replace('-', "_")
            ),
        ];
        for (i, layout) in layouts.iter().enumerate() {
            let other = "burstable/pod11111111-2222-3333-4444-555555555555/container";
            let root = tree(&format!("layout-{i}"), &[other, layout.as_str()]);
            assert_eq!(find(&root, UID), Some(root.join(layout)), "{layout}");
            let _ = std::fs::remove_dir_all(&root);
        }
    }

    #[test]
    fn a_pod_whose_cgroup_is_not_made_yet_is_not_found() {
        let root = tree("not-made", &["burstable", "besteffort/podother"]);
        assert_eq!(find(&root, UID), None);
        let _ = std::fs::remove_dir_all(&root);
    }
}
