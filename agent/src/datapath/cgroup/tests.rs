//! Detection on every layout the module docs name, from the mountinfo and
//! `/proc/self/cgroup` an agent pod sees there.

use std::{collections::HashSet, path::Path};

use super::*;

/// A host's `/sys/fs/cgroup` as cgroup2 (unified), over the container's own.
const UNIFIED: &str = "\
1270 1180 0:30 / /sys/fs/cgroup ro,nosuid - cgroup2 cgroup rw
1281 1180 0:30 / /sys/fs/cgroup ro,relatime - cgroup2 cgroup2 rw,nsdelegate
1282 1180 0:55 / /sys/fs/bpf rw,relatime - bpf bpf rw
";

/// A hybrid host (v1 controllers on a tmpfs, cgroup2 at `unified`) mounted
/// with its submounts over the container's own cgroup v1 tmpfs.
const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup ro - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu ro - cgroup cgroup rw,cpu
33 31 0:40 / /sys/fs/cgroup/unified ro - cgroup2 cgroup2 rw
131 123 0:28 / /sys/fs/cgroup ro - tmpfs tmpfs rw,mode=755
132 131 0:29 / /sys/fs/cgroup/cpu ro - cgroup cgroup rw,cpu
140 131 0:40 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
";

fn detect_in(
    mountinfo: &str,
    self_cgroup: &str,
    dirs: &[&str],
) -> Result<ChosenCgroup, DetectError> {
    let dirs: HashSet<&Path> = dirs.iter().map(Path::new).collect();
    detect(&NodeView {
        mountinfo,
        self_cgroup,
        is_dir: &|path: &Path| dirs.contains(path),
    })
}

fn chosen(result: Result<ChosenCgroup, DetectError>) -> String {
    result
        .expect("a cgroup is found")
        .path
        .display()
        .to_string()
}

#[test]
fn systemd_driver_from_the_agents_own_cgroup() {
    let own = "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-ab.scope\n";
    let found =
        detect_in(UNIFIED, own, &["/sys/fs/cgroup/kubepods.slice"]).expect("a cgroup is found");
    assert_eq!(found.path, Path::new("/sys/fs/cgroup/kubepods.slice"));
    assert!(found.reason.contains("own cgroup"), "{}", found.reason);
}

#[test]
fn cgroupfs_driver_from_the_agents_own_cgroup() {
    let own = "0::/kubepods/burstable/pod1/ab\n";
    assert_eq!(
        chosen(detect_in(UNIFIED, own, &["/sys/fs/cgroup/kubepods"])),
        "/sys/fs/cgroup/kubepods"
    );
}

#[test]
fn kind_from_the_agents_own_cgroup() {
    let own = "0::/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/x.scope\n";
    let dirs = ["/sys/fs/cgroup/kubelet.slice/kubelet-kubepods.slice"];
    assert_eq!(chosen(detect_in(UNIFIED, own, &dirs)), dirs[0]);
}

#[test]
fn hybrid_layout_from_the_agents_own_cgroup() {
    // v1 lines first, as the kernel lists them; the unified one is `0::`.
    let own = "9:name=systemd:/kubepods/burstable/pod1/ab\n0::/kubepods/burstable/pod1/ab\n";
    assert_eq!(
        chosen(detect_in(HYBRID, own, &["/sys/fs/cgroup/unified/kubepods"])),
        "/sys/fs/cgroup/unified/kubepods"
    );
}

#[test]
fn a_private_cgroup_namespace_falls_back_to_the_known_layouts() {
    for (layout, mountinfo) in [
        ("/sys/fs/cgroup/kubepods.slice", UNIFIED),
        ("/sys/fs/cgroup/kubepods", UNIFIED),
        (
            "/sys/fs/cgroup/kubelet.slice/kubelet-kubepods.slice",
            UNIFIED,
        ),
        ("/sys/fs/cgroup/kubelet/kubepods", UNIFIED),
        ("/sys/fs/cgroup/unified/kubepods", HYBRID),
        ("/sys/fs/cgroup/unified/kubepods.slice", HYBRID),
    ] {
        let found = detect_in(mountinfo, "0::/\n", &[layout]).expect("a cgroup is found");
        assert_eq!(found.path, Path::new(layout));
        assert!(
            found.reason.contains("known kubepods layout"),
            "{}",
            found.reason
        );
    }
}

#[test]
fn the_agents_own_cgroup_wins_over_an_earlier_layout() {
    // Both exist (a node that changed driver): the one holding the pods wins.
    let own = "0::/kubepods/besteffort/pod1/ab\n";
    let dirs = ["/sys/fs/cgroup/kubepods.slice", "/sys/fs/cgroup/kubepods"];
    assert_eq!(
        chosen(detect_in(UNIFIED, own, &dirs)),
        "/sys/fs/cgroup/kubepods"
    );
}

#[test]
fn hidden_mounts_are_not_used() {
    // The container's own cgroup2 at /sys/fs/cgroup, then the hybrid host's
    // tmpfs over it: only the host's unified mount is seen.
    let mountinfo = "\
10 1 0:30 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw
11 1 0:28 / /sys/fs/cgroup ro - tmpfs tmpfs rw
12 11 0:40 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
";
    let found = detect_in(
        mountinfo,
        "0::/\n",
        &["/sys/fs/cgroup/kubepods", "/sys/fs/cgroup/unified/kubepods"],
    );
    assert_eq!(chosen(found), "/sys/fs/cgroup/unified/kubepods");
}

#[test]
fn a_mount_of_a_subtree_is_not_the_hierarchy() {
    let mountinfo = "10 1 0:30 /kubepods/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
    assert_eq!(
        detect_in(mountinfo, "0::/\n", &[]),
        Err(DetectError::NoCgroup2)
    );
}

#[test]
fn nothing_found_names_where_it_looked_and_the_override() {
    let error =
        detect_in(UNIFIED, "0::/system.slice/agent.service\n", &[]).expect_err("nothing is found");
    let message = error.to_string();
    assert!(message.contains("/sys/fs/cgroup"), "{message}");
    assert!(message.contains("/system.slice/agent.service"), "{message}");
    assert!(message.contains("kubepods.slice, kubepods"), "{message}");
    assert!(message.contains("DETOUR_CGROUP"), "{message}");
}

#[test]
fn no_cgroup2_at_all() {
    let v1_only = "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
    assert_eq!(detect_in(v1_only, "", &[]), Err(DetectError::NoCgroup2));
}

#[test]
fn the_flag_wins_without_looking() {
    let chosen = choose(Some(Path::new("/sys/fs/cgroup/mine"))).expect("the flag is taken");
    assert_eq!(chosen.path, Path::new("/sys/fs/cgroup/mine"));
    assert!(chosen.reason.contains("DETOUR_CGROUP"));
}

#[test]
fn escaped_mount_points() {
    assert_eq!(unescape(r"/mnt/with\040space"), "/mnt/with space");
    assert_eq!(unescape(r"/plain"), "/plain");
    assert_eq!(unescape(r"/trailing\\"), r"/trailing\\");
}
