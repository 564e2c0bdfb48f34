//! Waiting for a keep-alive client's next request, in two steps.
//!
//! For [`PARK_AFTER`], the connection keeps everything: its upstream
//! connection and its buffers, so a busy client's next request costs no pool
//! lookup and no allocation. After that, the connection parks: its upstream
//! connection goes back to the shared, bounded [pool](super::pool) (where
//! other client connections can use it, or it is dropped), and its buffers
//! are freed. A parked connection holds only its socket and its task, so
//! thousands of idle keep-alive clients cost thousands of sockets, not
//! thousands of upstream connections and buffers; the next request
//! allocates again when bytes arrive.
//!
//! Either step ends at once when the agent starts draining (SIGTERM): an
//! idle client must not hold the drain.

use std::time::Duration;

use bytes::BytesMut;
use tokio::{net::TcpStream, time::Instant};
use tracing::debug;

use super::{Current, Http1, body};
use crate::proxy::ProxyContext;

/// How long a keep-alive client connection holds its upstream connection
/// and buffers between requests.
pub const PARK_AFTER: Duration = Duration::from_secs(1);

/// Waits, at most the idle timeout, for the first bytes of the client's next
/// request, and reads them into `buf`. `false`: the client closed, went
/// idle past the timeout, or the agent is draining.
pub async fn next_request(
    client: &mut TcpStream,
    buf: &mut BytesMut,
    ubuf: &mut BytesMut,
    current: &mut Option<Current>,
    ctx: &ProxyContext,
    h1: &Http1,
) -> bool {
    let deadline = Instant::now() + h1.settings.idle_timeout;
    let park_at = (Instant::now() + PARK_AFTER).min(deadline);
    tokio::select! {
        read = tokio::time::timeout_at(park_at, body::fill(client, buf)) => match read {
            Ok(Ok(true)) => return true,
            Ok(read) => {
                debug!(error = ?read.err(), "client closed between requests");
                return false;
            }
            Err(_) if park_at == deadline => return false,
            Err(_) => {}
        },
        () = ctx.draining.cancelled() => return false,
    }

    if let Some(held) = current.take() {
        h1.pool.checkin(held.target, held.stream);
    }
    *buf = BytesMut::new();
    *ubuf = BytesMut::new();
    // Readiness first, so that nothing is allocated until bytes are there.
    tokio::select! {
        ready = tokio::time::timeout_at(deadline, client.readable()) => {
            if !matches!(ready, Ok(Ok(()))) {
                debug!(?ready, "parked connection idle past the timeout, or failed");
                return false;
            }
        }
        () = ctx.draining.cancelled() => return false,
    }
    let read = tokio::time::timeout_at(deadline, body::fill(client, buf)).await;
    if !matches!(read, Ok(Ok(true))) {
        debug!(?read, "parked connection closed");
        return false;
    }
    true
}
