//! Idle upstream connections, per destination, for reuse across requests and
//! client connections.
//!
//! Bounded: at most [`MAX_IDLE_PER_DESTINATION`] idle connections per
//! destination, each dropped after [`IDLE_TIMEOUT`]. A connection is checked
//! with a non-blocking read before reuse, so one the server closed while idle
//! is discarded rather than handed out.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use tokio::net::TcpStream;

pub const MAX_IDLE_PER_DESTINATION: usize = 64;
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

struct Idle {
    stream: TcpStream,
    since: Instant,
}

#[derive(Default)]
pub struct Pool {
    idle: Mutex<HashMap<SocketAddr, Vec<Idle>>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").finish_non_exhaustive()
    }
}

impl Pool {
    /// An idle connection to `dst` that still looks alive, if any.
    pub fn checkout(&self, dst: SocketAddr) -> Option<TcpStream> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let conns = idle.get_mut(&dst)?;
        while let Some(conn) = conns.pop() {
            if conn.since.elapsed() < IDLE_TIMEOUT && looks_alive(&conn.stream) {
                return Some(conn.stream);
            }
        }
        None
    }

    /// Returns a connection after a complete exchange.
    pub fn checkin(&self, dst: SocketAddr, stream: TcpStream) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let conns = idle.entry(dst).or_default();
        conns.retain(|c| c.since.elapsed() < IDLE_TIMEOUT);
        if conns.len() < MAX_IDLE_PER_DESTINATION {
            conns.push(Idle {
                stream,
                since: Instant::now(),
            });
        }
    }
}

/// An idle HTTP/1 connection has nothing to read; EOF or stray bytes mean it
/// must not be reused.
pub fn looks_alive(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}
