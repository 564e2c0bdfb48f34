//! The in-kernel relay from the proxy's side: puts the two sockets of a
//! spliced connection in `RELAY`, each under the other's socket cookie, and
//! the `sk_skb` stream verdict moves their bytes from then on.
//!
//! Order matters, because bytes must leave in the order they came:
//! 1. the upstream socket is held: its `SO_RCVLOWAT` is raised, so what it
//!    receives waits in its queue instead of reaching the verdict (which,
//!    until step 3, would find no peer and pass it to user space);
//! 2. the upstream socket goes in under the client's cookie (client bytes
//!    now have a way out, but the client socket has no verdict yet: what it
//!    receives stays queued);
//! 3. the client socket goes in under the upstream's cookie;
//! 4. both are kicked (`SO_RCVLOWAT` back to 1): the kernel runs the
//!    verdict over what each queued meanwhile, in order.
//!
//! The caller must hold no bytes read from either socket that are not yet
//! written to the other. Sockets leave the map when they close.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, RawFd},
    sync::Mutex,
};

use aya::maps::{MapData, MapError, SockHash};

pub struct Relay {
    map: Mutex<SockHash<MapData, u64>>,
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("cannot read a socket's cookie or set its receive low-water mark")]
    Socket(#[source] io::Error),
    #[error("the kernel refused the socket in the relay map")]
    Insert(#[source] MapError),
}

impl Relay {
    pub fn new(map: SockHash<MapData, u64>) -> Self {
        Self {
            map: Mutex::new(map),
        }
    }

    /// Relays `client` and `upstream` in the kernel from now on. On error
    /// nothing is relayed and both sockets are as they were: splice them in
    /// user space.
    pub fn insert(&self, client: &impl AsFd, upstream: &impl AsFd) -> Result<(), RelayError> {
        // `SO_COOKIE`: what `bpf_get_socket_cookie` returns for the socket.
        let (client, upstream) = (client.as_fd(), upstream.as_fd());
        let cookie = |socket| socket2::SockRef::from(&socket).cookie();
        let client_cookie = cookie(client).map_err(RelayError::Socket)?;
        let upstream_cookie = cookie(upstream).map_err(RelayError::Socket)?;
        let (client, upstream) = (client.as_raw_fd(), upstream.as_raw_fd());
        set_rcvlowat(upstream, i32::MAX).map_err(RelayError::Socket)?;
        let inserted = {
            let mut map = self
                .map
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            map.insert(client_cookie, upstream, 0).and_then(|()| {
                map.insert(upstream_cookie, client, 0).inspect_err(|_| {
                    let _ = map.remove(&client_cookie);
                })
            })
        };
        // Kicks both (or, on error, releases the hold).
        let kicked = set_rcvlowat(upstream, 1).and_then(|()| set_rcvlowat(client, 1));
        inserted.map_err(RelayError::Insert)?;
        kicked.map_err(RelayError::Socket)
    }
}

/// `SO_RCVLOWAT`. Lowering it runs the socket's data-ready callback when
/// bytes are queued: that is the kick.
fn set_rcvlowat(fd: RawFd, bytes: i32) -> io::Result<()> {
    // SAFETY: a plain integer option on a descriptor the caller holds.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            std::ptr::from_ref(&bytes).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
