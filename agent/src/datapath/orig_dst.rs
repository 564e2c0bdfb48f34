//! The proxy's view of `ORIG_BY_PEER`: given the peer address of an accepted
//! connection, take (look up and delete) the original destination the client
//! asked for. A record is used once: a later connection from the same source
//! address must never inherit it.
//!
//! During a hitless upgrade two agents share one listening socket, and a
//! connection redirected by one agent's programs may be accepted by the
//! other: each then also looks in the other agent's map (`set_other`). A
//! record from there carries the other agent's service id, which means
//! nothing here: it is marked [`Taken::foreign`].
//!
//! A take is one system call on every accepted connection:
//! `BPF_MAP_LOOKUP_AND_DELETE_ELEM`, which returns the record and removes it
//! atomically. Kernels before 5.14 refuse that command on hash maps
//! (`EINVAL`, `ENOTSUPP`); the first refusal switches the table, for good,
//! to a lookup and a delete: two calls, same result.

use std::{
    io,
    net::SocketAddr,
    os::fd::{AsFd, AsRawFd, OwnedFd, RawFd},
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use aya::maps::{HashMap, IterableMap, MapData, MapError};
use detour_common::{OrigDst, SockKey};

type OrigMap = HashMap<MapData, SockKey, OrigDst>;

pub struct OrigDstTable {
    /// This agent's map, for the two-call fallback (aya's writes need `&mut`).
    own: Mutex<OrigMap>,
    /// The same map's descriptor, for the one-call take: no lock needed. It
    /// lives as long as `own`.
    own_fd: RawFd,
    /// The predecessor's or successor's map while two agents overlap.
    other: Mutex<Option<OrigMap>>,
    /// The kernel refused `BPF_MAP_LOOKUP_AND_DELETE_ELEM` on hash maps.
    two_calls: AtomicBool,
}

/// A record taken from a map.
#[derive(Debug, Clone, Copy)]
pub struct Taken {
    pub record: OrigDst,
    /// From the other agent's map: its `service_id` is not this agent's.
    pub foreign: bool,
}

impl OrigDstTable {
    pub fn new(map: OrigMap) -> Self {
        let own_fd = IterableMap::map(&map).fd().as_fd().as_raw_fd();
        Self {
            own: Mutex::new(map),
            own_fd,
            other: Mutex::new(None),
            two_calls: AtomicBool::new(false),
        }
    }

    /// The original destination of a redirected connection from `peer`, or
    /// `None` when the connection was not redirected by detour.
    pub fn take(&self, peer: SocketAddr) -> Result<Option<Taken>, MapError> {
        let key = SockKey::new(peer);
        let own = match self.one_call(self.own_fd, &key) {
            Some(taken) => taken?,
            None => take_in_two_calls(&mut lock(&self.own), &key)?,
        };
        if let Some(record) = own {
            return Ok(Some(Taken {
                record,
                foreign: false,
            }));
        }
        let mut other = lock(&self.other);
        let Some(map) = other.as_mut() else {
            return Ok(None);
        };
        let fd = IterableMap::map(&*map).fd().as_fd().as_raw_fd();
        let taken = match self.one_call(fd, &key) {
            Some(taken) => taken?,
            None => take_in_two_calls(map, &key)?,
        };
        Ok(taken.map(|record| Taken {
            record,
            foreign: true,
        }))
    }

    /// The one-call take; `None` when this kernel needs two calls.
    fn one_call(&self, map: RawFd, key: &SockKey) -> Option<Result<Option<OrigDst>, MapError>> {
        if self.two_calls.load(Ordering::Relaxed) {
            return None;
        }
        match lookup_and_delete(map, key) {
            Ok(found) => Some(Ok(found)),
            Err(error) if refused_by_kernel(&error) => {
                self.two_calls.store(true, Ordering::Relaxed);
                None
            }
            Err(io_error) => Some(Err(MapError::SyscallError(aya::sys::SyscallError {
                call: "bpf_map_lookup_and_delete_elem",
                io_error,
            }))),
        }
    }

    /// Also looks in another agent's map (or stops, with `None`).
    pub fn set_other(&self, map: Option<OrigMap>) {
        *lock(&self.other) = map;
    }

    /// A descriptor of this agent's own map, to hand to another agent.
    pub fn own_map_fd(&self) -> Option<OwnedFd> {
        let own = lock(&self.own);
        IterableMap::map(&*own)
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .ok()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The fallback for kernels without lookup-and-delete on hash maps.
fn take_in_two_calls(map: &mut OrigMap, key: &SockKey) -> Result<Option<OrigDst>, MapError> {
    match map.get(key, 0) {
        Ok(record) => {
            match map.remove(key) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(error) => return Err(error),
            }
            Ok(Some(record))
        }
        Err(MapError::KeyNotFound) => Ok(None),
        Err(error) => Err(error),
    }
}

/// `EINVAL` or the kernel-internal `ENOTSUPP` (524): this kernel's hash maps
/// do not implement the command (before 5.14).
fn refused_by_kernel(error: &io::Error) -> bool {
    const ENOTSUPP: i32 = 524;
    matches!(
        error.raw_os_error(),
        Some(libc::EINVAL | libc::EOPNOTSUPP | ENOTSUPP)
    )
}

/// The leading fields of `union bpf_attr` for the map element commands.
#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;

/// `bpf(BPF_MAP_LOOKUP_AND_DELETE_ELEM)`: the record under `key`, removed.
/// aya uses this command for queues and stacks only.
fn lookup_and_delete(map: RawFd, key: &SockKey) -> io::Result<Option<OrigDst>> {
    let mut value = std::mem::MaybeUninit::<OrigDst>::uninit();
    let attr = MapElemAttr {
        map_fd: map as u32,
        _pad: 0,
        key: std::ptr::from_ref(key) as u64,
        value: value.as_mut_ptr() as u64,
        flags: 0,
    };
    // SAFETY: `map` is an open map descriptor (the caller holds its map);
    // `attr` points at a live key and at writable storage of the map's value
    // size (the map was created with these types); the kernel
    // reads `size_of::<MapElemAttr>()` bytes of `attr` and zero-fills the rest.
    let result = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_LOOKUP_AND_DELETE_ELEM,
            std::ptr::from_ref(&attr),
            std::mem::size_of::<MapElemAttr>(),
        )
    };
    if result == 0 {
        // SAFETY: the kernel wrote the whole value on success.
        return Ok(Some(unsafe { value.assume_init() }));
    }
    let error = io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::ENOENT) {
        return Ok(None);
    }
    Err(error)
}
