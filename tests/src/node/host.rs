//! What a real node changes on the machine itself, kept and put back: the
//! global sysctls the kubelet writes, and the cgroups of its pods, in every
//! cgroup hierarchy, all under the kubelet's cgroup root ([`CGROUP_ROOT`]),
//! which the node makes and removes. And the lock that keeps two real nodes
//! (a test and `cargo xtask cluster up`) from sharing them.

use std::{
    fs::File,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

/// Sysctls the kubelet sets on start (`setupKernelTunables`) that are not
/// per network namespace: they hold for the whole machine.
pub const KUBELET_SYSCTLS: [&str; 6] = [
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
];

/// Values of [`KUBELET_SYSCTLS`] as they were before the node started.
#[derive(Debug, Clone)]
pub struct SavedSysctls(Vec<(String, String)>);

impl SavedSysctls {
    pub fn save() -> Self {
        Self(
            KUBELET_SYSCTLS
                .iter()
                .filter_map(|name| {
                    let value = std::fs::read_to_string(sysctl_path(name)).ok()?;
                    Some(((*name).to_owned(), value.trim().to_owned()))
                })
                .collect(),
        )
    }

    /// Writes every saved value back; returns those that differed.
    pub fn restore(&self) -> Vec<String> {
        let mut changed = Vec::new();
        for (name, value) in &self.0 {
            let path = sysctl_path(name);
            let now = std::fs::read_to_string(&path).unwrap_or_default();
            if now.trim() != value {
                let _ = std::fs::write(&path, value);
                changed.push(format!("{name}: {} -> {value}", now.trim()));
            }
        }
        changed
    }

    /// `name=value` lines, for a state file.
    pub fn lines(&self) -> String {
        self.0
            .iter()
            .map(|(name, value)| format!("{name}={value}\n"))
            .collect()
    }

    /// Reads [`Self::lines`] back.
    pub fn parse(text: &str) -> Self {
        Self(
            text.lines()
                .filter_map(|line| line.split_once('='))
                .map(|(name, value)| (name.to_owned(), value.to_owned()))
                .collect(),
        )
    }
}

fn sysctl_path(name: &str) -> PathBuf {
    Path::new("/proc/sys").join(name)
}

/// The kubelet's `cgroupRoot` (as kind's `/kubelet`): a child of each
/// hierarchy's root that the node makes, under which the kubelet and runc
/// put `kubepods` and every pod. Never a hierarchy's root itself.
pub const CGROUP_ROOT: &str = "detour-node";

/// Each cgroup hierarchy mounted under `/sys/fs/cgroup` (v1 controllers,
/// the unified hierarchy, or the v2 root).
fn hierarchies() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    if Path::new("/sys/fs/cgroup/cgroup.procs").exists() {
        roots.push(PathBuf::from("/sys/fs/cgroup"));
    }
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.join("cgroup.procs").exists() {
                roots.push(path);
            }
        }
    }
    roots
}

/// The node's cgroup root in each hierarchy, where it exists.
pub fn node_cgroups() -> Vec<PathBuf> {
    hierarchies()
        .into_iter()
        .map(|root| root.join(CGROUP_ROOT))
        .filter(|path| path.is_dir())
        .collect()
}

/// Makes the node's cgroup root in every hierarchy (the kubelet requires it
/// to exist), with a v1 cpuset's CPUs and memory nodes copied from its
/// parent (an empty cpuset takes no process). Returns the cgroup v2 one.
fn make_node_cgroups() -> PathBuf {
    let mut unified = None;
    for root in hierarchies() {
        let dir = root.join(CGROUP_ROOT);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot make {}: {e}", dir.display()));
        for setting in ["cpuset.cpus", "cpuset.mems"] {
            if let Ok(value) = std::fs::read_to_string(root.join(setting)) {
                let _ = std::fs::write(dir.join(setting), value.trim());
            }
        }
        if root.join("cgroup.controllers").exists() {
            unified = Some(dir);
        }
    }
    unified.expect("a cgroup v2 hierarchy (unified or hybrid)")
}

/// The node's cgroup roots, made at once and removed (with anything left in
/// them) on drop: a node that fails to start, at whatever step, leaves
/// none behind.
#[derive(Debug)]
pub struct NodeCgroups {
    /// The one in the cgroup v2 hierarchy.
    pub unified: PathBuf,
}

impl NodeCgroups {
    pub fn make() -> Self {
        Self {
            unified: make_node_cgroups(),
        }
    }
}

impl Drop for NodeCgroups {
    fn drop(&mut self) {
        for cgroup in node_cgroups() {
            remove_cgroup_tree(&cgroup);
        }
    }
}

/// Kills every process in `cgroup` and below (cgroup v2's `cgroup.kill`,
/// else each `cgroup.procs`), then removes the directories, deepest first.
pub fn remove_cgroup_tree(cgroup: &Path) {
    let kill = cgroup.join("cgroup.kill");
    if kill.exists() {
        let _ = std::fs::write(&kill, "1");
    }
    let mut dirs = Vec::new();
    let mut pending = vec![cgroup.to_owned()];
    while let Some(dir) = pending.pop() {
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                // SAFETY: kill(2) of a process in the node's pod cgroups,
                // which the node's own runtime started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            pending.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
        dirs.push(dir);
    }
    // A killed process leaves its cgroup a moment later.
    for dir in dirs.iter().rev() {
        for _ in 0..100 {
            if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// An exclusive lock on the one real node this machine may run.
#[derive(Debug)]
pub struct NodeLock(#[expect(dead_code, reason = "held for its lock, released on drop")] File);

/// The lock file.
pub const LOCK: &str = "/tmp/detour-real-node.lock";

impl NodeLock {
    /// Waits for the lock.
    pub fn acquire() -> Self {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK)
            .expect("the real node's lock file");
        // SAFETY: flock(2) on a descriptor we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "cannot lock {LOCK}");
        Self(file)
    }
}
