//! Upstream HTTP/2 connections, pooled by origin and endpoint address, and
//! multiplexed.
//!
//! Keyed by the address the proxy connects to, never by authority: a fork
//! and its baseline are reached with the same `:authority`. And by origin,
//! the client namespace the connection leaves from (see `proxy::origin`):
//! streams of one client pod never ride another's connection, which would
//! carry them with the other pod's address. Clients in the node's
//! namespace share one origin. Each connection
//! counts the streams it carries against the peer's
//! `SETTINGS_MAX_CONCURRENT_STREAMS`; at the limit a new connection is
//! opened rather than queuing the stream behind others. A connection whose
//! peer sent GOAWAY, failed to open a stream, or ended takes no new streams
//! and leaves the pool. A connection with no stream for [`IDLE_AFTER`] is
//! closed on the next checkout for its address. Connections to one address
//! are opened one at a time: streams that arrive together while none is
//! open wait for the first one and share it, instead of each opening its own.
//!
//! A stream whose header list is over [`SHARED_HEADER_LIST_MAX`] gets a
//! connection of its own ([`Pool::checkout_alone`]): an upstream that
//! advertises a smaller `SETTINGS_MAX_HEADER_LIST_SIZE` (gRPC's is 8 KiB) may
//! fail every stream of the connection over it, and those would be other
//! clients' streams. (`h2` does not expose the peer's limit, so it cannot be
//! checked before sending.)
//!
//! Why `h2` directly and not hyper's client connection: hyper's HTTP/2
//! client queues a stream over the peer's limit inside the connection and
//! does not expose the limit, so it could not open a new connection instead.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use h2::client::SendRequest;
use tracing::debug;

use crate::proxy::{error::ProxyError, origin::Origin, upstream::Upstream};

/// An upstream connection with no stream for this long is closed.
pub const IDLE_AFTER: Duration = Duration::from_secs(60);

/// Streams a new connection may open before the peer's SETTINGS arrive.
const INITIAL_MAX_STREAMS: usize = 100;

/// Largest header list sent on a shared upstream connection (RFC 9113 size:
/// names, values and 32 bytes per field); larger go alone.
pub const SHARED_HEADER_LIST_MAX: usize = 8 * 1024;

/// Upstream HTTP/2 connections by origin and endpoint address.
#[derive(Debug, Default)]
pub struct Pool {
    conns: Mutex<HashMap<Key, Endpoint>>,
}

/// A pool's key: the origin's key (`Origin::key`) and the endpoint.
type Key = (u64, SocketAddr);

/// The connections to one address, and the turn to open a new one.
#[derive(Debug, Default)]
struct Endpoint {
    conns: Vec<Arc<Conn>>,
    opening: Arc<tokio::sync::Mutex<()>>,
}

/// One upstream connection.
#[derive(Debug)]
struct Conn {
    send: SendRequest<Bytes>,
    /// Streams open on it now (held by [`Slot`]s).
    streams: AtomicUsize,
    /// No new streams: GOAWAY, a failed stream open, or the connection ended.
    retired: AtomicBool,
    idle_since: Mutex<Instant>,
}

impl Conn {
    fn usable(&self) -> bool {
        !self.retired.load(Ordering::Acquire)
            && self.streams.load(Ordering::Acquire) < self.send.current_max_send_streams()
    }
}

/// One stream's hold on an upstream connection: counted until dropped.
#[derive(Debug)]
pub struct Slot {
    conn: Arc<Conn>,
    /// The connection's request sender, ready for this stream.
    pub send: SendRequest<Bytes>,
}

impl Slot {
    /// The peer refused the stream or went away: no new stream goes there.
    pub fn retire(&self) {
        self.conn.retired.store(true, Ordering::Release);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.conn.streams.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self
                .conn
                .idle_since
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Instant::now();
        }
    }
}

impl Pool {
    /// A stream slot on a connection from `origin` to `addr`: an existing
    /// one below its peer's limit, else a new connection.
    pub async fn checkout(
        self: &Arc<Self>,
        origin: &Origin,
        addr: SocketAddr,
        upstream: &Upstream,
    ) -> Result<Slot, ProxyError> {
        let key = (origin.key(), addr);
        if let Some(slot) = self.existing(key) {
            return Ok(slot);
        }
        let opening = Arc::clone(&self.lock().entry(key).or_default().opening);
        let _turn = opening.lock().await;
        // Whoever opened before us may have room for this stream.
        if let Some(slot) = self.existing(key) {
            return Ok(slot);
        }
        let conn = Box::pin(self.open(origin, addr, upstream)).await?;
        let slot = take(&conn);
        self.lock().entry(key).or_default().conns.push(conn);
        Ok(slot)
    }

    /// A new connection to `addr` for one stream, never shared: it closes
    /// when the stream is done.
    pub async fn checkout_alone(
        self: &Arc<Self>,
        origin: &Origin,
        addr: SocketAddr,
        upstream: &Upstream,
    ) -> Result<Slot, ProxyError> {
        let conn = Box::pin(self.open(origin, addr, upstream)).await?;
        Ok(take(&conn))
    }

    /// Upstream connections open now, for tests and `detour status`.
    pub fn connections(&self) -> usize {
        self.lock()
            .values()
            .map(|endpoint| endpoint.conns.len())
            .sum()
    }

    fn existing(&self, key: Key) -> Option<Slot> {
        let mut conns = self.lock();
        let list = &mut conns.get_mut(&key)?.conns;
        list.retain(|conn| {
            let idle = conn.streams.load(Ordering::Acquire) == 0
                && conn
                    .idle_since
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .elapsed()
                    >= IDLE_AFTER;
            !conn.retired.load(Ordering::Acquire) && !idle
        });
        let conn = list.iter().find(|conn| conn.usable())?;
        Some(take(conn))
    }

    async fn open(
        self: &Arc<Self>,
        origin: &Origin,
        addr: SocketAddr,
        upstream: &Upstream,
    ) -> Result<Arc<Conn>, ProxyError> {
        let key = (origin.key(), addr);
        let stream = upstream.connect(origin, addr).await?;
        let handshake = h2::client::Builder::new()
            .initial_max_send_streams(INITIAL_MAX_STREAMS)
            .handshake::<_, Bytes>(stream);
        let (send, mut connection) =
            match tokio::time::timeout(upstream.connect_timeout, handshake).await {
                Ok(Ok(pair)) => pair,
                Ok(Err(error)) => {
                    debug!(%addr, %error, "upstream HTTP/2 handshake failed");
                    return Err(ProxyError::UpstreamConnect);
                }
                Err(_) => return Err(ProxyError::UpstreamTimeout),
            };
        let ping_pong = connection.ping_pong();
        let conn = Arc::new(Conn {
            send,
            streams: AtomicUsize::new(0),
            retired: AtomicBool::new(false),
            idle_since: Mutex::new(Instant::now()),
        });
        let pool = Arc::downgrade(self);
        let watched = Arc::downgrade(&conn);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                debug!(%addr, %error, "upstream HTTP/2 connection ended");
            }
            if let Some(conn) = watched.upgrade() {
                conn.retired.store(true, Ordering::Release);
                if let Some(pool) = pool.upgrade() {
                    pool.remove(key, &conn);
                }
            }
        });
        // The peer's SETTINGS (its stream limit) come before its answer to a
        // PING: once it answered, `current_max_send_streams` is the peer's.
        if let Some(mut ping_pong) = ping_pong {
            let settled = ping_pong.ping(h2::Ping::opaque());
            match tokio::time::timeout(upstream.connect_timeout, settled).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => {
                    debug!(%addr, %error, "upstream HTTP/2 connection failed before its SETTINGS");
                    return Err(ProxyError::UpstreamConnect);
                }
                Err(_) => return Err(ProxyError::UpstreamTimeout),
            }
        }
        debug!(%addr, "upstream HTTP/2 connection opened");
        Ok(conn)
    }

    fn remove(&self, key: Key, conn: &Arc<Conn>) {
        let mut conns = self.lock();
        if let Some(endpoint) = conns.get_mut(&key) {
            endpoint.conns.retain(|c| !Arc::ptr_eq(c, conn));
            if endpoint.conns.is_empty() && Arc::strong_count(&endpoint.opening) == 1 {
                conns.remove(&key);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Endpoint>> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn take(conn: &Arc<Conn>) -> Slot {
    conn.streams.fetch_add(1, Ordering::AcqRel);
    Slot {
        conn: Arc::clone(conn),
        send: conn.send.clone(),
    }
}
