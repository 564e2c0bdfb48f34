//! The kernel side of the agent: loads detour's eBPF object (embedded in the
//! binary), attaches its programs to one cgroup v2 directory, and owns the
//! maps.
//!
//! Links are held by this process and never pinned, so if the agent dies the
//! kernel detaches the programs and connects go where they were addressed:
//! fail-open by construction.

mod capacities;
pub mod caps;
pub mod cgroup;
mod counters;
mod forks;
mod orig_dst;
pub mod pinned;
mod pod_cgroup;
mod relay;
mod steered;

use std::{
    collections::BTreeMap,
    fs::File,
    net::{IpAddr, SocketAddr},
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, MapError, PerCpuArray, SockHash},
    programs::{CgroupAttachMode, CgroupSockAddr, ProgramError, SkSkb, SockOps},
};
pub use capacities::Capacities;
pub use counters::BpfCounters;
use detour_common::{
    CONFIG_HAS_PROXY4, CONFIG_HAS_PROXY6, Config, SockKey, Steered, ip6_words, maps,
};
use forks::Forks;
pub use forks::{FORK_PROGRAMS, ForkCounters, ForksApplied};
pub use orig_dst::OrigDstTable;
pub use relay::{Relay, RelayError};
pub use steered::Applied;
use tracing::{info, warn};

use crate::routes::RouteSnapshot;

/// The eBPF object, built by `build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/detour.bpf.o"));

/// The programs attached to the cgroup, by name.
pub const PROGRAMS: [&str; 3] = ["detour_connect4", "detour_connect6", "detour_sockops"];
/// The in-kernel relay's program, attached to the `RELAY` map.
pub const RELAY_PROGRAM: &str = "detour_relay";
/// `CGROUP2_SUPER_MAGIC` from `linux/magic.h`.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("detour agent must run as root or with {}: missing {}", "CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON", missing.join(", "))]
    NotRoot { missing: Vec<&'static str> },
    #[error("cannot open cgroup {path}")]
    CgroupOpen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not a cgroup v2 directory (mount cgroup2, e.g. at /sys/fs/cgroup, and pass a directory in it)"
    )]
    NotCgroup2 { path: PathBuf },
    #[error("the kernel refused detour's eBPF object (with map capacities {capacities})")]
    Load {
        capacities: Capacities,
        #[source]
        source: Box<aya::EbpfError>,
    },
    #[error("eBPF program {name} missing from the object")]
    MissingProgram { name: &'static str },
    #[error("the kernel refused eBPF program {name}")]
    Program {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("eBPF map {name} missing from the object")]
    MissingMap { name: &'static str },
    #[error("eBPF map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("cannot pin map {path} (pass --pin-dir none to run without pinned maps)")]
    Pin {
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
    #[error("more than one proxy address for {family}: {first} and {second}")]
    DuplicateProxyFamily {
        family: &'static str,
        first: SocketAddr,
        second: SocketAddr,
    },
}

/// What the data path is told at start.
#[derive(Debug, Clone)]
pub struct DatapathOptions {
    pub cgroup: PathBuf,
    /// Redirect targets: at most one IPv4 and one IPv6 address.
    pub proxy_addrs: Vec<SocketAddr>,
    pub mark: u32,
    /// Enables the programs' debug logs (aya-log).
    pub bpf_log: bool,
    /// Where to pin the maps for `detour bpf`; `None`: don't.
    pub pin_dir: Option<PathBuf>,
    pub capacities: Capacities,
    /// Relay spliced connections in the kernel (`--kernel-relay`).
    pub kernel_relay: bool,
}

/// What the proxy and the metrics use of the data path.
pub struct Handles {
    pub orig_dst: OrigDstTable,
    pub counters: BpfCounters,
    /// The fork programs' counters, by sandbox.
    pub fork_counters: ForkCounters,
    /// `None`: the relay is off, or the kernel refused it.
    pub relay: Option<Relay>,
}

/// The loaded and attached programs, and the map the agent writes.
pub struct Datapath {
    /// Where the maps are pinned, if they are.
    pub pin_dir: Option<PathBuf>,
    own_pins: pinned::OwnPins,
    /// `None` once detached.
    ebpf: Option<Ebpf>,
    cgroup: PathBuf,
    steered: HashMap<MapData, SockKey, Steered>,
    steered_capacity: u32,
    /// What `STEERED` holds: only writes the kernel accepted are recorded.
    installed: BTreeMap<SockKey, Steered>,
    /// Fork pods' own programs (keyless forked destinations).
    forks: Forks,
}

impl Datapath {
    /// Loads the object, writes the config, attaches every program to the
    /// cgroup. Returns the data path and the handles the proxy and metrics use.
    /// Fails, naming what is missing, unless this process has the
    /// capabilities to load and attach the programs.
    pub fn check_privileges() -> Result<(), DatapathError> {
        let missing = caps::missing();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(DatapathError::NotRoot { missing })
        }
    }

    /// Fails, naming the path, unless `path` is a cgroup v2 directory the
    /// programs can be attached to.
    pub fn check_cgroup(path: &Path) -> Result<(), DatapathError> {
        open_cgroup2(path).map(drop)
    }

    pub fn start(options: &DatapathOptions) -> Result<(Self, Handles), DatapathError> {
        let cgroup = open_cgroup2(&options.cgroup)?;
        let config = bpf_config(&options.proxy_addrs, options.mark)?;
        let capacities = options.capacities;

        // aya-log-common's Level: 0 silences every log call; 4 is Debug.
        let log_level: u8 = if options.bpf_log { 4 } else { 0 };
        let mut ebpf = EbpfLoader::new()
            .override_global("AYA_LOG_LEVEL", &log_level, false)
            .map_max_entries(maps::STEERED, capacities.steered)
            .map_max_entries(maps::ORIG_BY_COOKIE, capacities.orig_by_cookie)
            .map_max_entries(maps::ORIG_BY_PEER, capacities.orig_by_peer)
            .load(OBJECT)
            .map_err(|source| DatapathError::Load {
                capacities,
                source: Box::new(source),
            })?;
        if options.bpf_log {
            start_bpf_logger(&mut ebpf);
        }
        let pin_dir = match options.pin_dir.as_deref() {
            Some(dir) => Some(pin_maps(&ebpf, dir)?),
            None => None,
        };

        let mut config_map: Array<MapData, Config> = take_map(&mut ebpf, maps::CONFIG)?;
        config_map
            .set(0, config, 0)
            .map_err(|source| DatapathError::Map {
                name: maps::CONFIG,
                source,
            })?;
        let steered = take_map(&mut ebpf, maps::STEERED)?;
        let orig_by_peer = take_map(&mut ebpf, maps::ORIG_BY_PEER)?;
        let counters: PerCpuArray<MapData, u64> = take_map(&mut ebpf, maps::COUNTERS)?;

        // Before the connect programs: a connection is never spliced before
        // the relay is there or known to be refused.
        let relay = if options.kernel_relay {
            start_relay(&mut ebpf)
        } else {
            info!(
                "in-kernel relay off (--kernel-relay false): spliced connections are copied in user space"
            );
            None
        };
        for name in PROGRAMS {
            attach(&mut ebpf, name, &cgroup)?;
        }
        info!(
            cgroup = %options.cgroup.display(),
            programs = ?PROGRAMS,
            %capacities,
            "eBPF programs attached"
        );
        let datapath = Self {
            own_pins: pin_dir
                .as_deref()
                .map(pinned::OwnPins::record)
                .unwrap_or_default(),
            pin_dir,
            ebpf: Some(ebpf),
            cgroup: options.cgroup.clone(),
            steered,
            steered_capacity: capacities.steered,
            installed: BTreeMap::new(),
            forks: Forks::new(options.pin_dir.as_deref(), &options.cgroup),
        };
        let handles = Handles {
            orig_dst: OrigDstTable::new(orig_by_peer),
            counters: BpfCounters::new(counters),
            fork_counters: datapath.forks.counters(),
            relay,
        };
        Ok((datapath, handles))
    }

    /// Makes `STEERED` hold the snapshot's destinations, touching only the
    /// entries that differ. Never stops at a failed write: what does not fit
    /// is not steered (its connects go direct) and is retried on the next
    /// call; the result says how much that is.
    pub fn apply(&mut self, snapshot: &RouteSnapshot) -> Applied {
        let desired = snapshot.steered_entries();
        steered::reconcile(&mut self.steered, &mut self.installed, &desired)
    }

    /// Makes the fork programs serve the snapshot's fork pods (see
    /// [`forks`]); what fails is reported and retried on the next call.
    pub fn apply_forks(&mut self, snapshot: &RouteSnapshot) -> ForksApplied {
        self.forks.apply(&snapshot.fork_pods)
    }

    /// The capacity `STEERED` was created with.
    pub fn steered_capacity(&self) -> u32 {
        self.steered_capacity
    }

    /// Removes the pins of this agent's maps (a stop with no successor).
    pub fn unpin(&mut self) {
        let removed = self.own_pins.remove();
        if removed > 0 {
            info!(pins = removed, "pinned maps removed");
        }
    }

    /// Detaches every program: from here on connects are untouched.
    pub fn detach(&mut self) {
        if self.ebpf.take().is_some() {
            info!(cgroup = %self.cgroup.display(), "eBPF programs detached");
        }
    }
}

/// Pins every map under `dir` (made ready by [`pinned::prepare`] at start),
/// replacing pins of an earlier run.
fn pin_maps(ebpf: &Ebpf, dir: &Path) -> Result<PathBuf, DatapathError> {
    for name in pinned::PINNED.into_iter().chain(pinned::SHARED) {
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        let map = ebpf.map(name).ok_or(DatapathError::MissingMap { name })?;
        map.pin(&path)
            .map_err(|source| DatapathError::Pin { path, source })?;
    }
    info!(dir = %dir.display(), "maps pinned");
    Ok(dir.to_owned())
}

fn open_cgroup2(path: &Path) -> Result<File, DatapathError> {
    let file = File::open(path).map_err(|source| DatapathError::CgroupOpen {
        path: path.to_owned(),
        source,
    })?;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        DatapathError::NotCgroup2 {
            path: path.to_owned(),
        }
    })?;
    // SAFETY: `statfs` writes into a zeroed struct we own; the path is NUL-terminated.
    let (rc, magic) = unsafe {
        let mut stat: libc::statfs = std::mem::zeroed();
        let rc = libc::statfs(c_path.as_ptr(), &mut stat);
        (rc, stat.f_type)
    };
    if rc != 0 || magic != CGROUP2_SUPER_MAGIC || !path.is_dir() {
        return Err(DatapathError::NotCgroup2 {
            path: path.to_owned(),
        });
    }
    Ok(file)
}

fn bpf_config(proxy_addrs: &[SocketAddr], mark: u32) -> Result<Config, DatapathError> {
    let mut config = Config {
        mark,
        ..Config::default()
    };
    let mut v4: Option<SocketAddr> = None;
    let mut v6: Option<SocketAddr> = None;
    for addr in proxy_addrs {
        let (slot, family) = match addr.ip() {
            IpAddr::V4(_) => (&mut v4, "IPv4"),
            IpAddr::V6(_) => (&mut v6, "IPv6"),
        };
        if let Some(first) = slot {
            return Err(DatapathError::DuplicateProxyFamily {
                family,
                first: *first,
                second: *addr,
            });
        }
        *slot = Some(*addr);
        match addr.ip() {
            IpAddr::V4(ip) => {
                config.proxy_ip4 = u32::from_ne_bytes(ip.octets());
                config.proxy_port4 = addr.port().to_be();
                config.flags |= CONFIG_HAS_PROXY4;
            }
            IpAddr::V6(ip) => {
                config.proxy_ip6 = ip6_words(ip.octets());
                config.proxy_port6 = addr.port().to_be();
                config.flags |= CONFIG_HAS_PROXY6;
            }
        }
    }
    Ok(config)
}

fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, DatapathError>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or(DatapathError::MissingMap { name })?;
    T::try_from(map).map_err(|source| DatapathError::Map { name, source })
}

fn attach(ebpf: &mut Ebpf, name: &'static str, cgroup: &File) -> Result<(), DatapathError> {
    let program = ebpf
        .program_mut(name)
        .ok_or(DatapathError::MissingProgram { name })?;
    let refused = |source| DatapathError::Program { name, source };
    if let Ok(program) = <&mut CgroupSockAddr>::try_from(&mut *program) {
        program.load().map_err(refused)?;
        program
            .attach(cgroup, CgroupAttachMode::Single)
            .map_err(refused)?;
    } else {
        let program: &mut SockOps = program.try_into().map_err(refused)?;
        program.load().map_err(refused)?;
        program
            .attach(cgroup, CgroupAttachMode::Single)
            .map_err(refused)?;
    }
    Ok(())
}

/// Loads the relay's verdict program and attaches it to `RELAY`. Fail-open:
/// a kernel that refuses it gets spliced connections copied in user space.
fn start_relay(ebpf: &mut Ebpf) -> Option<Relay> {
    let started = (|| -> Result<Relay, DatapathError> {
        let map: SockHash<MapData, u64> = take_map(ebpf, maps::RELAY)?;
        let name = RELAY_PROGRAM;
        let program = ebpf
            .program_mut(name)
            .ok_or(DatapathError::MissingProgram { name })?;
        let refused = |source| DatapathError::Program { name, source };
        let program: &mut SkSkb = program.try_into().map_err(refused)?;
        program.load().map_err(refused)?;
        program.attach(map.fd()).map_err(refused)?;
        Ok(Relay::new(map))
    })();
    match started {
        Ok(relay) => {
            info!(program = RELAY_PROGRAM, "in-kernel relay attached");
            Some(relay)
        }
        Err(error) => {
            warn!(error = %anyhow::Error::from(error), "in-kernel relay unavailable: spliced connections are copied in user space");
            None
        }
    }
}

fn start_bpf_logger(ebpf: &mut Ebpf) {
    let logger = match aya_log::EbpfLogger::init(ebpf) {
        Ok(logger) => logger,
        Err(error) => {
            warn!(%error, "eBPF logs unavailable");
            return;
        }
    };
    // SAFETY: the logger owns the ring buffer's fd for as long as it lives,
    // and `as_raw_fd` always returns that fd.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
    };
    let fd = match registered {
        Ok(fd) => fd,
        Err(error) => {
            warn!(%error, "eBPF logs unavailable");
            return;
        }
    };
    tokio::spawn(async move {
        let mut fd = fd;
        loop {
            let Ok(mut guard) = fd.readable_mut().await else {
                return;
            };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
}
