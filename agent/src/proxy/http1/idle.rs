//! Waiting for a keep-alive client's next request, holding nothing.
//!
//! When a response is done and the client has sent nothing more, the
//! connection parks: its upstream connection has gone back to the shared,
//! bounded [pool](super::pool), its buffers to the
//! [buffer pool](crate::proxy::buffers), and the state of its last exchange
//! has been dropped. A parked connection holds its socket, what it knows of
//! its original destination, and this wait: 576 bytes of task state, about
//! 1.5 KB with tokio's task and readiness registration and the flow record
//! (bench/RESULTS.md); ten thousand idle keep-alive clients cost ten thousand
//! sockets, not ten thousand upstream connections and buffers. A buffer is taken when the
//! socket is readable, not before.
//!
//! The wait ends at once when the agent starts draining (SIGTERM): an idle
//! client must not hold the drain.

use std::{future::Future, io::ErrorKind, task::Poll};

use bytes::BytesMut;
use tokio::net::TcpStream;
use tracing::debug;

use super::Http1;
use crate::proxy::ProxyContext;

/// Waits, at most the idle timeout, for the first bytes of the client's
/// next request, and returns them in a pooled buffer. `None`: the client
/// closed, stayed idle past the timeout, or the agent is draining.
pub async fn next_request(client: &TcpStream, ctx: &ProxyContext, h1: &Http1) -> Option<BytesMut> {
    let idle_timeout = tokio::time::sleep(h1.settings.idle_timeout);
    let draining = ctx.draining.cancelled();
    tokio::pin!(idle_timeout, draining);
    loop {
        // Readiness is polled on the socket itself, so the wait holds no
        // waiter of its own: the smallest state that wakes on all three.
        let woke = std::future::poll_fn(|cx| {
            if draining.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Woke::Draining);
            }
            if idle_timeout.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Woke::TimedOut);
            }
            client.poll_read_ready(cx).map(Woke::Readable)
        })
        .await;
        match woke {
            Woke::Readable(Ok(())) => {}
            other => {
                debug!(?other, "idle keep-alive connection closed");
                return None;
            }
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

/// What ended a wait.
#[derive(Debug)]
enum Woke {
    Readable(std::io::Result<()>),
    TimedOut,
    Draining,
}
