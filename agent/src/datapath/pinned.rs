//! The maps as pinned under the pin directory (default
//! `/sys/fs/bpf/detour`): the agent pins them at start, replacing any left
//! by an earlier run, and `detour bpf` reads them from there, so the kernel
//! side can be inspected while the agent is down.

use std::path::{Path, PathBuf};

use aya::maps::{Array, HashMap, MapData, MapError, PerCpuArray};
use detour_common::{Config, OrigDst, SockKey, Steered, counter, maps};

/// `BPF_FS_MAGIC` from `linux/magic.h`.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Every map the agent pins, by name. Their capacities are read from the
/// kernel: the agent may have been started with other sizes than the
/// defaults.
pub const PINNED: [&str; 5] = [
    maps::STEERED,
    maps::ORIG_BY_COOKIE,
    maps::ORIG_BY_PEER,
    maps::CONFIG,
    maps::COUNTERS,
];

/// Maps pinned to be shared, not read by `detour bpf`: the fork objects
/// load `FORK_SOURCES` from its pin.
pub const SHARED: [&str; 1] = [maps::FORK_SOURCES];

#[derive(Debug, thiserror::Error)]
pub enum PinnedError {
    #[error(
        "no pinned maps under {dir}: the agent has never run on this node, or runs with another --pin-dir"
    )]
    Missing { dir: PathBuf },
    #[error("permission denied reading {path}: run as root")]
    Permission { path: PathBuf },
    #[error("cannot read pinned map {path}")]
    Map {
        path: PathBuf,
        #[source]
        source: MapError,
    },
}

/// Where a node mounts its bpf filesystem.
pub const NODE_BPFFS: &str = "/sys/fs/bpf";

/// Why the maps cannot be pinned. The agent refuses to start then: a node
/// whose maps `detour bpf` cannot read is one that cannot be debugged.
#[derive(Debug, thiserror::Error)]
pub enum PinDirError {
    /// `reason` is part of the message, before the advice: not a `#[source]`.
    #[error(
        "cannot pin the maps under {dir}: {NODE_BPFFS} is not a bpf filesystem and mounting one \
         there failed ({reason}); mount it on the node (`mount -t bpf bpf {NODE_BPFFS}`), or pass \
         --pin-dir none to run without pinned maps (`detour bpf` then cannot read them)"
    )]
    CannotMount { dir: PathBuf, reason: String },
    #[error(
        "cannot pin the maps under {dir}: it is not on a bpf filesystem; pass a --pin-dir on one \
         (usually under {NODE_BPFFS}), or --pin-dir none to run without pinned maps"
    )]
    NotBpffs { dir: PathBuf },
    #[error("cannot pin the maps under {dir}")]
    Create {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Makes sure maps can be pinned under `dir`: when it lies under the node's
/// [`NODE_BPFFS`] and that is not mounted, mounts it, as Cilium's agent
/// does (it stays mounted: pins outlive the agent by design). Returns
/// whether it mounted. Any other directory must already be on a bpffs.
pub fn prepare(dir: &Path) -> Result<bool, PinDirError> {
    let mut mounted = false;
    if !on_bpffs(dir) {
        let node = Path::new(NODE_BPFFS);
        if !dir.starts_with(node) {
            return Err(PinDirError::NotBpffs {
                dir: dir.to_owned(),
            });
        }
        nix::mount::mount(
            Some("bpf"),
            node,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            Some("mode=0700"),
        )
        .map_err(|errno| PinDirError::CannotMount {
            dir: dir.to_owned(),
            reason: errno.desc().to_owned(),
        })?;
        mounted = true;
    }
    std::fs::create_dir_all(dir).map_err(|source| PinDirError::Create {
        dir: dir.to_owned(),
        source,
    })?;
    Ok(mounted)
}

/// Whether `dir` (or the directory it would be created in) is on a bpf
/// filesystem, where maps can be pinned.
pub fn on_bpffs(dir: &Path) -> bool {
    let Some(probe) = dir.ancestors().find(|path| path.exists()) else {
        return false;
    };
    let Ok(c_path) = std::ffi::CString::new(probe.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: `statfs` writes into a zeroed struct we own; the path is NUL-terminated.
    let (rc, magic) = unsafe {
        let mut stat: libc::statfs = std::mem::zeroed();
        let rc = libc::statfs(c_path.as_ptr(), &mut stat);
        (rc, stat.f_type)
    };
    rc == 0 && magic == BPF_FS_MAGIC
}

/// The pins this agent made, by path and the kernel's id of the map each
/// holds: a successor pins its own maps at the same paths, so only a pin
/// still holding this agent's map is this agent's to remove.
#[derive(Debug, Default)]
pub struct OwnPins(Vec<(PathBuf, u32)>);

impl OwnPins {
    /// Records the maps pinned under `dir` now.
    pub fn record(dir: &Path) -> Self {
        Self(
            PINNED
                .iter()
                .chain(&SHARED)
                .filter_map(|name| {
                    let path = dir.join(name);
                    let id = MapData::from_pin(&path).ok()?.info().ok()?.id();
                    Some((path, id))
                })
                .collect(),
        )
    }

    /// Removes the pins that still hold this agent's maps, and their
    /// directory once empty (a graceful stop without a successor: nothing
    /// of detour is left on the node). Returns how many.
    pub fn remove(&self) -> usize {
        let mut removed = 0;
        for (path, id) in &self.0 {
            let ours = MapData::from_pin(path)
                .ok()
                .and_then(|map| map.info().ok())
                .is_some_and(|info| info.id() == *id);
            if ours && std::fs::remove_file(path).is_ok() {
                removed += 1;
            }
        }
        if let Some(dir) = self.0.first().and_then(|(path, _)| path.parent()) {
            // Fails, as it should, while a successor's pins are in it.
            let _ = std::fs::remove_dir(dir);
        }
        removed
    }
}

/// What the pinned maps hold.
#[derive(Debug, Default)]
pub struct PinnedMaps {
    pub steered: Vec<(SockKey, Steered)>,
    pub orig_by_cookie: usize,
    pub orig_by_peer: Vec<(SockKey, OrigDst)>,
    pub config: Config,
    /// In [`counter::NAMES`] order, summed over CPUs.
    pub counters: [u64; counter::COUNT as usize],
    /// Capacity of each map, in [`PINNED`] order, as the kernel reports it.
    pub max_entries: [u32; 5],
}

impl PinnedMaps {
    /// Name, entries and capacity of each pinned map, in [`PINNED`] order.
    pub fn sizes(&self) -> [(&'static str, usize, u32); 5] {
        let entries = [
            self.steered.len(),
            self.orig_by_cookie,
            self.orig_by_peer.len(),
            1,
            counter::COUNT as usize,
        ];
        let mut sizes = [("", 0, 0); 5];
        for (slot, ((name, entries), max)) in sizes
            .iter_mut()
            .zip(PINNED.into_iter().zip(entries).zip(self.max_entries))
        {
            *slot = (name, entries, max);
        }
        sizes
    }
}

fn open(dir: &Path, name: &str) -> Result<MapData, PinnedError> {
    let path = dir.join(name);
    if !path.exists() {
        return Err(PinnedError::Missing {
            dir: dir.to_owned(),
        });
    }
    MapData::from_pin(&path).map_err(|source| match &source {
        MapError::SyscallError(e) if e.io_error.kind() == std::io::ErrorKind::PermissionDenied => {
            PinnedError::Permission { path: path.clone() }
        }
        _ => PinnedError::Map {
            path: path.clone(),
            source,
        },
    })
}

/// The map and its capacity.
fn typed<T: TryFrom<aya::maps::Map, Error = MapError>>(
    dir: &Path,
    name: &str,
    wrap: fn(MapData) -> aya::maps::Map,
) -> Result<(T, u32), PinnedError> {
    let failed = |source| PinnedError::Map {
        path: dir.join(name),
        source,
    };
    let data = open(dir, name)?;
    let max_entries = data.info().map_err(failed)?.max_entries();
    let map = T::try_from(wrap(data)).map_err(failed)?;
    Ok((map, max_entries))
}

/// Reads every pinned map in `dir`.
pub fn read(dir: &Path) -> Result<PinnedMaps, PinnedError> {
    let (steered, steered_max): (HashMap<MapData, SockKey, Steered>, _) =
        typed(dir, maps::STEERED, aya::maps::Map::HashMap)?;
    let (cookies, cookies_max): (HashMap<MapData, u64, OrigDst>, _) =
        typed(dir, maps::ORIG_BY_COOKIE, aya::maps::Map::LruHashMap)?;
    let (peers, peers_max): (HashMap<MapData, SockKey, OrigDst>, _) =
        typed(dir, maps::ORIG_BY_PEER, aya::maps::Map::LruHashMap)?;
    let (config, config_max): (Array<MapData, Config>, _) =
        typed(dir, maps::CONFIG, aya::maps::Map::Array)?;
    let (counters, counters_max): (PerCpuArray<MapData, u64>, _) =
        typed(dir, maps::COUNTERS, aya::maps::Map::PerCpuArray)?;

    let mut out = PinnedMaps {
        steered: steered.iter().filter_map(Result::ok).collect(),
        orig_by_cookie: cookies.keys().filter_map(Result::ok).count(),
        orig_by_peer: peers.iter().filter_map(Result::ok).collect(),
        config: config.get(&0, 0).unwrap_or_default(),
        counters: [0; counter::COUNT as usize],
        max_entries: [
            steered_max,
            cookies_max,
            peers_max,
            config_max,
            counters_max,
        ],
    };
    out.steered.sort_by_key(|(key, _)| *key);
    out.orig_by_peer.sort_by_key(|(key, _)| *key);
    for (index, total) in (0u32..).zip(out.counters.iter_mut()) {
        if let Ok(values) = counters.get(&index, 0) {
            *total = values.iter().sum();
        }
    }
    Ok(out)
}
