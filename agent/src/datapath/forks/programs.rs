//! One sandbox's fork programs: a load of the fork object, its `FORK_DEPS`
//! map kept equal to what the sandbox forks keylessly, and the links that
//! attach its two programs to each of its fork pods' cgroups (pinned when
//! there is a pin directory, so that they outlive the agent).

use std::{
    collections::BTreeMap,
    fs::File,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray},
    programs::{CgroupAttachMode, CgroupSockAddr, links::FdLink, links::PinnedLink},
};
use detour_common::{NO_FORK_ENDPOINT, SockKey, maps};
use tracing::info;

use super::{FORK_OBJECT, FORK_PROGRAMS, ForksApplied};
use crate::{
    datapath::{steered, take_map},
    routes::{ForkPod, ForkPods},
};

/// One sandbox's loaded fork programs, their map, and their links.
pub(super) struct SandboxPrograms {
    ebpf: Ebpf,
    deps: HashMap<MapData, SockKey, SockKey>,
    /// What `FORK_DEPS` holds: only writes the kernel accepted.
    installed: BTreeMap<SockKey, SockKey>,
    /// Links by fork pod.
    pods: BTreeMap<ForkPod, Vec<HeldLink>>,
    /// Where this sandbox's links are pinned.
    dir: Option<PathBuf>,
    /// The id its programs mark connects with (0: none).
    pub(super) inherit_as: u32,
    /// Which load of the fork object this is (its counters' key).
    pub(super) load: u64,
}

impl SandboxPrograms {
    /// Load number `load` of the fork object, with its `FORK_COUNTERS`.
    pub(super) fn load(
        dir: Option<PathBuf>,
        inherit_as: u32,
        sources: Option<&Path>,
        load: u64,
    ) -> anyhow::Result<(Self, PerCpuArray<MapData, u64>)> {
        let mut loader = EbpfLoader::new();
        loader.override_global("SANDBOX_ID", &inherit_as, true);
        if let Some(sources) = sources {
            loader.map_pin_path(maps::FORK_SOURCES, sources);
        }
        let mut ebpf = loader.load(FORK_OBJECT)?;
        for name in FORK_PROGRAMS {
            let program: &mut CgroupSockAddr = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow::anyhow!("program {name} missing from the fork object"))?
                .try_into()?;
            program.load()?;
        }
        let deps = take_map(&mut ebpf, maps::FORK_DEPS)?;
        let counters = take_map(&mut ebpf, maps::FORK_COUNTERS)?;
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir)?;
        }
        let programs = Self {
            ebpf,
            deps,
            installed: BTreeMap::new(),
            pods: BTreeMap::new(),
            dir,
            inherit_as,
            load,
        };
        Ok((programs, counters))
    }

    pub(super) fn apply(
        &mut self,
        name: &str,
        wanted: &ForkPods,
        cgroups: &BTreeMap<ForkPod, PathBuf>,
        applied: &mut ForksApplied,
    ) {
        // Destinations first: a pod attached next is steered from its first
        // connect.
        let deps = steered::reconcile(&mut self.deps, &mut self.installed, &wanted.deps);
        if deps.not_installed > 0 || deps.not_removed > 0 {
            applied.problems.push(format!(
                "sandbox {name}: {} of {} keyless forked destinations could not be written to \
                 its FORK_DEPS map: {}",
                deps.not_installed + deps.not_removed,
                deps.wanted,
                deps.first_error.as_deref().unwrap_or("the map is full")
            ));
        }
        applied.dependencies += deps.installed;
        let refused = wanted
            .deps
            .values()
            .filter(|endpoint| **endpoint == NO_FORK_ENDPOINT)
            .count();
        if refused > 0 && !wanted.pods.is_empty() {
            applied.problems.push(format!(
                "sandbox {name}: its fork of {refused} keyless destination(s) has no ready \
                 endpoint, so its fork pods' connects to them are refused (never sent to \
                 baseline) until one is ready"
            ));
        }

        let gone: Vec<ForkPod> = self
            .pods
            .keys()
            .filter(|pod| !wanted.pods.contains(*pod))
            .cloned()
            .collect();
        for pod in gone {
            for link in self.pods.remove(&pod).into_iter().flatten() {
                link.release();
            }
            info!(sandbox = name, ?pod, "fork pod detached");
        }
        for (pod, cgroup) in cgroups {
            if self.pods.contains_key(pod) {
                continue;
            }
            match self.attach(cgroup) {
                Ok(links) => {
                    info!(sandbox = name, ?pod, cgroup = %cgroup.display(), "fork pod attached");
                    self.pods.insert(pod.clone(), links);
                }
                Err(error) => applied.problems.push(format!(
                    "sandbox {name}: fork pod cgroup {}: cannot attach the fork programs, so \
                     its connects go where they are addressed: {error:#}; retried on every route \
                     change",
                    cgroup.display()
                )),
            }
        }
        applied.pods += self.pods.len();
    }

    /// Attaches both programs to `cgroup`, pinning their links when there
    /// is a pin directory. All or nothing.
    fn attach(&mut self, cgroup: &Path) -> anyhow::Result<Vec<HeldLink>> {
        let file = File::open(cgroup)?;
        let inode = file.metadata()?.ino();
        let mut links = Vec::new();
        for name in FORK_PROGRAMS {
            let program: &mut CgroupSockAddr = self
                .ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow::anyhow!("program {name} missing"))?
                .try_into()?;
            let id = program.attach(&file, CgroupAttachMode::Single)?;
            let link = FdLink::try_from(program.take_link(id)?)?;
            let held = match &self.dir {
                Some(dir) => {
                    let path = dir.join(format!("{inode}-{name}"));
                    let _ = std::fs::remove_file(&path);
                    match link.pin(&path) {
                        Ok(pinned) => HeldLink::Pinned(pinned),
                        Err(error) => {
                            links.into_iter().for_each(HeldLink::release);
                            return Err(error.into());
                        }
                    }
                }
                None => HeldLink::Held(link),
            };
            links.push(held);
        }
        Ok(links)
    }

    /// Detaches from every pod and removes this sandbox's pins.
    pub(super) fn release(mut self) {
        for link in std::mem::take(&mut self.pods).into_values().flatten() {
            link.release();
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// A link this agent holds, pinned or not.
enum HeldLink {
    Pinned(PinnedLink),
    Held(FdLink),
}

impl HeldLink {
    /// Detaches the program: the pin goes, then the last descriptor.
    fn release(self) {
        match self {
            // A pin a successor removed already fails to go: the
            // descriptor is closed all the same.
            Self::Pinned(pinned) => drop(pinned.unpin()),
            Self::Held(link) => drop(link),
        }
    }
}
