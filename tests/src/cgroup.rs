//! A child cgroup v2 directory for a test: programs attach here, never to the
//! root of the hierarchy. Removed on drop, after its processes are gone.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// Where cgroup v2 is mounted: unified-only hosts, then hybrid hosts.
pub fn cgroup2_root() -> PathBuf {
    for candidate in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
        let path = Path::new(candidate);
        if path.join("cgroup.procs").is_file() && path.join("cgroup.controllers").is_file() {
            return path.to_owned();
        }
    }
    panic!("no cgroup v2 hierarchy at /sys/fs/cgroup/unified or /sys/fs/cgroup (mount cgroup2)");
}

#[derive(Debug)]
pub struct Cgroup {
    path: PathBuf,
}

impl Cgroup {
    pub fn new(name: &str) -> Self {
        let path = cgroup2_root().join(name);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create cgroup {}: {e}", path.display()));
        Self { path }
    }

    /// The cgroup at `path` (made if need be), removed on drop.
    pub fn at(path: &Path) -> Self {
        std::fs::create_dir_all(path)
            .unwrap_or_else(|e| panic!("cannot create cgroup {}: {e}", path.display()));
        Self {
            path: path.to_owned(),
        }
    }

    /// Moves process `pid` (one we started) into this cgroup.
    pub fn adopt(&self, pid: u32) {
        std::fs::write(self.path.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("cannot move {pid} into {}: {e}", self.path.display()));
    }

    /// A cgroup inside this one (a pod's, under the node's), removed on
    /// drop; drop it before its parent.
    pub fn child(&self, name: &str) -> Self {
        let path = self.path.join(name);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create cgroup {}: {e}", path.display()));
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Shell prefix that moves the shell into this cgroup, then execs `"$@"`.
    pub fn enter_script(&self) -> String {
        format!(
            "echo $$ > {}/cgroup.procs && exec \"$@\"",
            self.path.display()
        )
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Processes we started are killed by their own guards first; give the
        // kernel a moment to reap them before removing the directory.
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::remove_dir(&self.path).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
