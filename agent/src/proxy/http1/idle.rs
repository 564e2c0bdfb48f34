//! Waiting for a keep-alive client's next request, holding nothing.
//!
//! When a response is done and the client has sent nothing more, the
//! connection goes idle: its upstream connection has gone back to the
//! shared, bounded [pool](super::pool), its buffers to the
//! [buffer pool](crate::proxy::buffers), and the state of its last exchange
//! has been dropped. An idle connection holds its socket, what it knows of
//! its original destination, and this wait: 576 bytes of task state, about
//! 1.5 KB with tokio's task and readiness registration and the flow record
//! (bench/RESULTS.md). A buffer is taken when the socket is readable, not
//! before.
//!
//! A connection still idle after `--park-idle-after` leaves its task for
//! the [parking lot](super::parking), at about 300 bytes: ten thousand idle
//! keep-alive clients cost ten thousand sockets and 3 MB, not ten thousand
//! tasks, upstream connections and buffers. This wait and parking share one
//! timer. The wait ends at once when the agent starts draining (SIGTERM):
//! an idle client must not hold the drain.

use std::{future::Future, io::ErrorKind, task::Poll, time::Duration};

use bytes::BytesMut;
use tokio::net::TcpStream;
use tracing::debug;

use super::{Http1, Settings};
use crate::proxy::ProxyContext;

/// How an idle wait ended.
pub enum Next {
    /// The first bytes of the next request, in a pooled buffer.
    Request(BytesMut),
    /// The client closed, stayed idle past the timeout, or the agent is
    /// draining.
    Closed,
    /// Idle for `--park-idle-after`: park, for at most `idle_left`.
    Park { idle_left: Duration },
}

/// Waits for the first bytes of the client's next request: at most the idle
/// timeout, or until it is time to park (one timer for both).
pub async fn next_request(client: &TcpStream, ctx: &ProxyContext, h1: &Http1) -> Next {
    // Recomputed after the wait rather than held across it: this state is
    // what every idle connection carries.
    let timer = tokio::time::sleep(match parking(h1) {
        Some(_) => h1.settings.park_after,
        None => h1.settings.idle_timeout,
    });
    let draining = ctx.draining.cancelled();
    tokio::pin!(timer, draining);
    loop {
        // Readiness is polled on the socket itself, so the wait holds no
        // waiter of its own: the smallest state that wakes on all three.
        let woke = std::future::poll_fn(|cx| {
            if draining.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Woke::Draining);
            }
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Woke::TimedOut);
            }
            client.poll_read_ready(cx).map(Woke::Readable)
        })
        .await;
        match woke {
            Woke::Readable(Ok(())) => {}
            Woke::TimedOut if let Some(idle_left) = parking(h1) => {
                return Next::Park { idle_left };
            }
            other => {
                debug!(?other, "idle keep-alive connection closed");
                return Next::Closed;
            }
        }
        let mut buf = ctx.buffers.take();
        match client.try_read_buf(&mut buf) {
            Ok(0) => debug!("client closed between requests"),
            Ok(_) => return Next::Request(buf),
            // Readiness was stale: wait again, without the buffer.
            Err(error) if error.kind() == ErrorKind::WouldBlock => {
                ctx.buffers.give(buf);
                continue;
            }
            Err(error) => debug!(%error, "client failed between requests"),
        }
        ctx.buffers.give(buf);
        return Next::Closed;
    }
}

/// When idle connections park: the idle time left once parked.
fn parking(h1: &Http1) -> Option<Duration> {
    let Settings {
        idle_timeout,
        park_after,
        ..
    } = h1.settings;
    (h1.parking.is_some() && park_after < idle_timeout).then(|| idle_timeout - park_after)
}

/// What ended a wait.
#[derive(Debug)]
enum Woke {
    Readable(std::io::Result<()>),
    TimedOut,
    Draining,
}
