//! Idle upstream connections, per origin and destination, for reuse across
//! requests and client connections. A connection serves only clients of the
//! namespace it was made in (see `proxy::origin`): one client pod's
//! connections never carry another's requests, or its address.
//!
//! Bounded: at most [`MAX_IDLE_PER_DESTINATION`] idle connections per
//! destination, each dropped after [`IDLE_TIMEOUT`]. A connection is checked
//! with a non-blocking read before reuse, so one the server closed while idle
//! is discarded rather than handed out.

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use tokio::net::TcpStream;

use crate::proxy::origin::Origin;

pub const MAX_IDLE_PER_DESTINATION: usize = 64;
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

struct Idle {
    stream: TcpStream,
    since: Instant,
}

/// Each destination's idle connections, oldest first: the newest is reused
/// (warm, least likely closed by the server), the oldest expire.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<HashMap<(u64, SocketAddr), VecDeque<Idle>>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").finish_non_exhaustive()
    }
}

impl Pool {
    /// An idle connection from `origin` to `dst` that still looks alive,
    /// if any.
    pub fn checkout(&self, origin: &Origin, dst: SocketAddr) -> Option<TcpStream> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (origin.key(), dst);
        let conns = idle.get_mut(&key)?;
        let now = Instant::now();
        let mut found = None;
        while let Some(conn) = conns.pop_back() {
            if now.duration_since(conn.since) < IDLE_TIMEOUT && looks_alive(&conn.stream) {
                found = Some(conn.stream);
                break;
            }
        }
        // No entry is left empty: client pods come and go.
        if conns.is_empty() {
            idle.remove(&key);
        }
        found
    }

    /// Returns a connection after a complete exchange.
    pub fn checkin(&self, origin: &Origin, dst: SocketAddr, stream: TcpStream) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let conns = idle.entry((origin.key(), dst)).or_default();
        let now = Instant::now();
        while conns
            .front()
            .is_some_and(|c| now.duration_since(c.since) >= IDLE_TIMEOUT)
        {
            conns.pop_front();
        }
        if conns.len() < MAX_IDLE_PER_DESTINATION {
            conns.push_back(Idle { stream, since: now });
        }
    }
}

/// An idle HTTP/1 connection has nothing to read; EOF or stray bytes mean it
/// must not be reused.
pub fn looks_alive(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}
