//! Waiting for a keep-alive client's next request, holding nothing.
//!
//! When a response is done and the client has sent nothing more, the
//! connection parks: its upstream connection has gone back to the shared,
//! bounded [pool](super::pool), its buffers to the
//! [buffer pool](crate::proxy::buffers), and the state of its last exchange
//! has been dropped. A parked connection holds its socket, what it knows of
//! its original destination, and this wait, a few hundred bytes in all: ten
//! thousand idle keep-alive clients cost ten thousand sockets, not ten
//! thousand upstream connections and buffers. A buffer is taken when the
//! socket is readable, not before.
//!
//! The wait ends at once when the agent starts draining (SIGTERM): an idle
//! client must not hold the drain.

use std::io::ErrorKind;

use bytes::BytesMut;
use tokio::{net::TcpStream, time::Instant};
use tracing::debug;

use super::Http1;
use crate::proxy::ProxyContext;

/// Waits, at most the idle timeout, for the first bytes of the client's
/// next request, and returns them in a pooled buffer. `None`: the client
/// closed, stayed idle past the timeout, or the agent is draining.
pub async fn next_request(client: &TcpStream, ctx: &ProxyContext, h1: &Http1) -> Option<BytesMut> {
    let deadline = Instant::now() + h1.settings.idle_timeout;
    loop {
        tokio::select! {
            ready = tokio::time::timeout_at(deadline, client.readable()) => {
                if !matches!(ready, Ok(Ok(()))) {
                    debug!(?ready, "idle keep-alive connection timed out, or failed");
                    return None;
                }
            }
            () = ctx.draining.cancelled() => return None,
        }
        let mut buf = ctx.buffers.take();
        match client.try_read_buf(&mut buf) {
            Ok(0) => debug!("client closed between requests"),
            Ok(_) => return Some(buf),
            // Readiness was stale: wait again, without the buffer.
            Err(error) if error.kind() == ErrorKind::WouldBlock => {
                ctx.buffers.give(buf);
                continue;
            }
            Err(error) => debug!(%error, "client failed between requests"),
        }
        ctx.buffers.give(buf);
        return None;
    }
}
