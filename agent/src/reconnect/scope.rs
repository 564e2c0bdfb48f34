//! Where to look for connections that bypass the proxy: the cgroup ids of
//! the attached cgroup and every cgroup below it (a socket belongs to the
//! cgroup of the process that made it), and one handle on each network
//! namespace their sockets may live in.
//!
//! Namespaces are found three ways, and the union is swept (a socket is
//! only ever closed when its cgroup is one of the ids, so a namespace too
//! many costs a query, never a wrong close):
//! - the agent's own (the node's, for `hostNetwork` pods);
//! - each process of those cgroups (`/proc/PID/ns/net`): works where the
//!   agent sees the pods' processes (standalone; `hostPID`);
//! - the runtime's named namespaces, [`NETNS_DIR`] (containerd and CRI-O
//!   bind every pod sandbox's namespace there; the DaemonSet mounts it):
//!   works in a pod of its own PID namespace, where the pods' PIDs are not
//!   seen.

use std::{
    collections::{BTreeMap, HashSet},
    fs::File,
    io,
    os::unix::fs::MetadataExt,
    path::Path,
};

use crate::netns::NETNS_DIR;

/// The cgroup tree under the attached cgroup, and its processes' network
/// namespaces.
#[derive(Debug, Default)]
pub struct Scope {
    /// cgroup v2 ids (the directories' inode numbers).
    pub cgroup_ids: HashSet<u64>,
    /// One open `/proc/PID/ns/net` per namespace, by namespace inode.
    pub namespaces: BTreeMap<u64, File>,
}

impl Scope {
    /// Walks `cgroup` and its descendants, and [`NETNS_DIR`].
    pub fn of(cgroup: &Path) -> io::Result<Self> {
        let mut scope = Self::default();
        scope.add_namespace_file(Path::new("/proc/self/ns/net"));
        if let Ok(entries) = std::fs::read_dir(NETNS_DIR) {
            for entry in entries.flatten() {
                scope.add_namespace_file(&entry.path());
            }
        }
        let mut pending = vec![cgroup.to_owned()];
        while let Some(dir) = pending.pop() {
            scope.cgroup_ids.insert(std::fs::metadata(&dir)?.ino());
            if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                for pid in procs
                    .lines()
                    .filter_map(|line| line.trim().parse::<u32>().ok())
                {
                    scope.add_namespace_of(pid);
                }
            }
            for entry in std::fs::read_dir(&dir)?.flatten() {
                if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                    pending.push(entry.path());
                }
            }
        }
        Ok(scope)
    }

    fn add_namespace_of(&mut self, pid: u32) {
        self.add_namespace_file(Path::new(&format!("/proc/{pid}/ns/net")));
    }

    /// Keeps a handle on the namespace at `path`, once per namespace. A
    /// process may exit, or a pod go, meanwhile: skipped then.
    fn add_namespace_file(&mut self, path: &Path) {
        let Ok(inode) = std::fs::metadata(path).map(|m| m.ino()) else {
            return;
        };
        if let std::collections::btree_map::Entry::Vacant(entry) = self.namespaces.entry(inode)
            && let Ok(file) = File::open(path)
        {
            entry.insert(file);
        }
    }
}

/// Runs `work` on a new thread that has joined the network namespace of
/// `namespace` (threads can change namespace; the agent's others do not).
pub fn in_namespace<T: Send + 'static>(
    namespace: &File,
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let namespace = namespace.try_clone()?;
    let own = std::fs::metadata("/proc/thread-self/ns/net").map(|m| m.ino())?;
    let theirs = namespace.metadata()?.ino();
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        // The agent's own namespace needs no entering (nor CAP_SYS_ADMIN).
        // SAFETY: setns(2) on an fd we own, for this thread only.
        if theirs != own && unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        work()
    })
    .join()
    .unwrap_or_else(|_| Err(io::Error::other("namespace worker panicked")))
}
