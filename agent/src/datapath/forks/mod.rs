//! The fork programs: per group of fork pods on this node (a sandbox's, or
//! one fork's own: see `routes::fork_pods`), one load of the fork object
//! (`ebpf/detour-ebpf/src/fork/main.rs`), its `FORK_DEPS` map kept equal to
//! the group's keyless forked destinations, and its two connect programs
//! attached to each fork pod's cgroup; their outcomes are counted by
//! sandbox ([`ForkCounters`]).
//!
//! Their links are pinned under `<pin dir>/forks/<run>/<group>-<load>/`, so they
//! outlive the agent: while no agent runs, a fork's connects still reach its
//! own database, never the baseline one (the node's programs fail open; a
//! fork's database traffic must not). A link goes when its pod stops being
//! a fork, or with the pod's cgroup. A new agent attaches its own links
//! first, then removes an earlier run's pins: both rewrite a connect the
//! same way, so there is no moment in which a fork pod has none. Without a
//! pin directory (`--pin-dir none`) the links end with the agent.

mod counters;
mod programs;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

pub use counters::ForkCounters;
use detour_common::maps;
use programs::SandboxPrograms;
use tracing::{info, warn};

use super::pod_cgroup;
use crate::routes::{ForkPod, ForkPods};

/// How long a Kubernetes fork pod may have no cgroup (the kubelet is still
/// making it) before `detour status` says so.
const PENDING_PROBLEM_AFTER: Duration = Duration::from_secs(10);

/// The fork object, built by `build.rs`.
static FORK_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fork.bpf.o"));

/// The fork object's programs, each attached to every fork pod's cgroup.
pub const FORK_PROGRAMS: [&str; 2] = ["detour_fork_connect4", "detour_fork_connect6"];

/// The fork programs of every sandbox with fork pods on this node.
pub struct Forks {
    /// `<pin dir>/forks`, where every run pins its links; `None`: no pins.
    root: Option<PathBuf>,
    /// This run's directory under `root`.
    run: Option<PathBuf>,
    /// The node's pod cgroup, under which Kubernetes pods' cgroups are.
    node_cgroup: PathBuf,
    /// Fork pods whose cgroup is not there yet, since when.
    pending: std::collections::HashMap<ForkPod, Instant>,
    /// Whether earlier runs' pins are gone (after this run's first apply).
    earlier_removed: bool,
    /// The node object's pinned `FORK_SOURCES`, which the fork objects
    /// share; `None` without pins (then nothing inherits a key).
    sources: Option<PathBuf>,
    /// Loads so far: each load pins under a directory of its own.
    loads: u64,
    /// Every load's outcome counters, for the metrics.
    counters: ForkCounters,
    sandboxes: BTreeMap<Arc<str>, SandboxPrograms>,
}

/// What one apply left in force, and what it could not do.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ForksApplied {
    /// Fork pods whose connects the fork programs see.
    pub pods: usize,
    /// Keyless forked destinations, over every sandbox.
    pub dependencies: usize,
    /// Kubernetes fork pods whose cgroup the kubelet has not made yet: the
    /// caller applies again shortly.
    pub pending: usize,
    /// For `detour status`: pods not attached, destinations not installed.
    pub problems: Vec<String>,
}

impl Forks {
    /// Fork programs pinned under `pin_dir` (when there is one).
    pub fn new(pin_dir: Option<&Path>, node_cgroup: &Path) -> Self {
        let root = pin_dir.map(|dir| dir.join("forks"));
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let run = root
            .as_ref()
            .map(|root| root.join(format!("run-{started}")));
        Self {
            root,
            run,
            node_cgroup: node_cgroup.to_owned(),
            pending: std::collections::HashMap::new(),
            earlier_removed: false,
            sources: pin_dir.map(|dir| dir.join(maps::FORK_SOURCES)),
            loads: 0,
            counters: ForkCounters::default(),
            sandboxes: BTreeMap::new(),
        }
    }

    /// The outcome counters of every load, for the metrics registry.
    pub fn counters(&self) -> ForkCounters {
        self.counters.clone()
    }

    /// Makes the fork programs serve exactly `wanted`: loads them for new
    /// sandboxes, updates each one's destinations, then attaches them to new
    /// fork pods and detaches them from pods no longer forks. A failure
    /// never stops the rest; it is reported and retried on the next apply.
    pub fn apply(&mut self, wanted: &BTreeMap<Arc<str>, ForkPods>) -> ForksApplied {
        let mut applied = ForksApplied::default();
        let gone: Vec<Arc<str>> = self
            .sandboxes
            .keys()
            .filter(|name| !wanted.contains_key(*name))
            .cloned()
            .collect();
        for name in gone {
            if let Some(programs) = self.sandboxes.remove(&name) {
                self.counters.retire(programs.load);
                programs.release();
                info!(sandbox = %name, "fork programs removed");
            }
        }
        for (name, pods) in wanted {
            let inherit_as = match (&self.sources, pods.inherit_as) {
                (None, id) if id != 0 => {
                    applied.problems.push(format!(
                        "sandbox {name}: its fork pods' requests inherit no key: that needs \
                         the maps pinned (--pin-dir is none)"
                    ));
                    0
                }
                (_, id) => id,
            };
            // Programs marking with another id are replaced: the new ones
            // are attached before the old ones go.
            let replaced = match self.sandboxes.get(name) {
                Some(programs) if programs.inherit_as != inherit_as => self.sandboxes.remove(name),
                _ => None,
            };
            if !self.sandboxes.contains_key(name) {
                self.loads += 1;
                let dir = self
                    .run
                    .as_ref()
                    .map(|run| run.join(format!("{}-{}", pin_name(name), self.loads)));
                match SandboxPrograms::load(dir, inherit_as, self.sources.as_deref(), self.loads) {
                    Ok((programs, counters)) => {
                        let sandbox = Arc::clone(&pods.sandbox);
                        self.counters.track(self.loads, sandbox, counters);
                        self.sandboxes.insert(Arc::clone(name), programs);
                    }
                    Err(error) => {
                        applied.problems.push(format!(
                            "sandbox {name}: cannot load its fork programs, so its fork pods' \
                             connects go where they are addressed: {error:#}"
                        ));
                        if let Some(old) = replaced {
                            self.sandboxes.insert(Arc::clone(name), old);
                        }
                        continue;
                    }
                }
            }
            let cgroups = self.resolve(pods, &mut applied);
            let Some(programs) = self.sandboxes.get_mut(name) else {
                continue;
            };
            programs.apply(name, pods, &cgroups, &mut applied);
            if let Some(old) = replaced {
                self.counters.retire(old.load);
                old.release();
            }
        }
        self.pending
            .retain(|pod, _| wanted.values().any(|w| w.pods.contains(pod)));
        if !self.earlier_removed {
            self.remove_earlier_runs();
        }
        if self.sandboxes.is_empty() {
            // Nothing of this run is pinned: leave no empty directory.
            for dir in [&self.run, &self.root].into_iter().flatten() {
                let _ = std::fs::remove_dir(dir);
            }
        }
        applied
    }

    /// The cgroup of each fork pod that has one (yet).
    fn resolve(
        &mut self,
        pods: &ForkPods,
        applied: &mut ForksApplied,
    ) -> BTreeMap<ForkPod, PathBuf> {
        let mut cgroups = BTreeMap::new();
        for pod in &pods.pods {
            let found = match pod {
                ForkPod::Cgroup(path) => Some(path.clone()),
                ForkPod::Pod { uid, .. } => pod_cgroup::find(&self.node_cgroup, uid),
            };
            match found {
                Some(path) => {
                    self.pending.remove(pod);
                    cgroups.insert(pod.clone(), path);
                }
                None => {
                    applied.pending += 1;
                    let since = *self.pending.entry(pod.clone()).or_insert_with(Instant::now);
                    if let ForkPod::Pod { name, .. } = pod
                        && since.elapsed() > PENDING_PROBLEM_AFTER
                    {
                        applied.problems.push(format!(
                            "fork pod {name}: no cgroup for it under {} after {}s, so its \
                             connects go where they are addressed",
                            self.node_cgroup.display(),
                            PENDING_PROBLEM_AFTER.as_secs()
                        ));
                    }
                }
            }
        }
        cgroups
    }

    /// Removes the pins of earlier runs: their links detach once no process
    /// holds them (an old agent still running keeps its own until it exits).
    fn remove_earlier_runs(&mut self) {
        self.earlier_removed = true;
        let (Some(root), Some(run)) = (&self.root, &self.run) else {
            return;
        };
        let Ok(entries) = std::fs::read_dir(root) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if &path != run {
                match std::fs::remove_dir_all(&path) {
                    Ok(()) => {
                        info!(pins = %path.display(), "an earlier run's fork programs removed")
                    }
                    Err(error) => {
                        warn!(pins = %path.display(), %error, "cannot remove an earlier run's fork programs")
                    }
                }
            }
        }
    }
}

/// A sandbox name as one bpffs path component: `namespace/name` has a
/// slash, and bpffs refuses names with dots (`EPERM`), which Kubernetes
/// names may hold. Neither has `_`, so the result names one sandbox.
fn pin_name(sandbox: &str) -> String {
    sandbox.replace('/', "__").replace('.', "_")
}
