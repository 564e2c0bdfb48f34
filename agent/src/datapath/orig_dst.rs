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

use std::{
    net::SocketAddr,
    os::fd::{AsFd, OwnedFd},
    sync::Mutex,
};

use aya::maps::{HashMap, IterableMap, MapData, MapError};
use detour_common::{OrigDst, SockKey};

type OrigMap = HashMap<MapData, SockKey, OrigDst>;

pub struct OrigDstTable {
    // Writes need `&mut`; the lock is held for two syscalls and is
    // uncontended except under accept bursts on two listeners.
    own: Mutex<OrigMap>,
    /// The predecessor's or successor's map while two agents overlap.
    other: Mutex<Option<OrigMap>>,
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
        Self {
            own: Mutex::new(map),
            other: Mutex::new(None),
        }
    }

    /// The original destination of a redirected connection from `peer`, or
    /// `None` when the connection was not redirected by detour.
    pub fn take(&self, peer: SocketAddr) -> Result<Option<Taken>, MapError> {
        let key = SockKey::new(peer);
        if let Some(record) = take_from(&mut lock(&self.own), &key)? {
            return Ok(Some(Taken {
                record,
                foreign: false,
            }));
        }
        let mut other = lock(&self.other);
        let Some(map) = other.as_mut() else {
            return Ok(None);
        };
        Ok(take_from(map, &key)?.map(|record| Taken {
            record,
            foreign: true,
        }))
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

fn take_from(map: &mut OrigMap, key: &SockKey) -> Result<Option<OrigDst>, MapError> {
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
