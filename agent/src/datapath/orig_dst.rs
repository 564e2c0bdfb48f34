//! The proxy's view of `ORIG_BY_PEER`: given the peer address of an accepted
//! connection, take (look up and delete) the original destination the client
//! asked for. A record is used once: a later connection from the same source
//! address must never inherit it.

use std::{net::SocketAddr, sync::Mutex};

use aya::maps::{HashMap, MapData, MapError};
use detour_common::{OrigDst, SockKey};

pub struct OrigDstTable {
    // Writes need `&mut`; the lock is held for two syscalls and is
    // uncontended except under accept bursts on two listeners.
    map: Mutex<HashMap<MapData, SockKey, OrigDst>>,
}

impl OrigDstTable {
    pub fn new(map: HashMap<MapData, SockKey, OrigDst>) -> Self {
        Self {
            map: Mutex::new(map),
        }
    }

    /// The original destination of a redirected connection from `peer`, or
    /// `None` when the connection was not redirected by detour.
    pub fn take(&self, peer: SocketAddr) -> Result<Option<OrigDst>, MapError> {
        let key = SockKey::new(peer);
        let mut map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match map.get(&key, 0) {
            Ok(record) => {
                match map.remove(&key) {
                    Ok(()) | Err(MapError::KeyNotFound) => {}
                    Err(error) => return Err(error),
                }
                Ok(Some(record))
            }
            Err(MapError::KeyNotFound) => Ok(None),
            Err(error) => Err(error),
        }
    }
}
