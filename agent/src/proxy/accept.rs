//! The first stage: listeners with a deep accept queue, the accept loop,
//! and per connection its original destination (taken from the kernel's
//! record), its service, its origin, its flow, and its protocol
//! (declared by the port or detected); then the connection goes to the
//! stage that serves it: [`http1`], [`h2`] or [`opaque`].
//!
//! A connection that detour did not redirect has no record and is closed at
//! once: the proxy is not an open relay.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::BytesMut;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{Instrument, debug, debug_span, info, warn};

use super::{
    Proxy, ProxyContext,
    detect::{self, Detected},
    h2, http1, kafka, opaque, route,
};
use crate::{flows::FlowGuard, routes::Protocol};

/// Accept queue length for the proxy listeners (the kernel caps it at
/// `net.core.somaxconn`). A burst of redirected connects must not overflow
/// it: every dropped SYN costs the client a one-second retransmit.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a proxy listener with a deep accept queue. `TCP_NODELAY` is set on
/// the listener: accepted sockets inherit it, which saves a system call per
/// connection.
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Accepts on `listener` until `stop` is cancelled; connection tasks are
/// spawned on `tracker` so that shutdown can wait for them.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    tracker: TaskTracker,
    stop: CancellationToken,
) {
    let ctx = &proxy.ctx;
    let local = listener.local_addr().ok();
    loop {
        let accepted = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => match Arc::clone(&ctx.connection_slots).try_acquire_owned() {
                Ok(slot) => {
                    let proxy = Arc::clone(&proxy);
                    // Debug level: an enabled span costs a formatted field
                    // per connection and a subscriber call per poll, so it
                    // exists only when someone asked for debug logs. The
                    // few warnings below name the peer themselves.
                    let span = debug_span!("conn", %peer);
                    // Not boxed: the connection's state is small (see
                    // `handle`), so it lives in the task's own allocation.
                    tracker.spawn(handle(stream, peer, proxy, slot).instrument(span));
                }
                Err(_) => {
                    // Over --max-connections: refuse, and drop the record so
                    // it cannot be claimed by a later connection.
                    let _ = ctx.orig_dst.take(peer);
                    ctx.metrics.reject("over_limit");
                    debug!(%peer, "connection refused: --max-connections reached");
                }
            },
            Err(error) => {
                // Typically EMFILE: back off briefly instead of spinning.
                warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    info!(listener = ?local, "proxy stopped accepting");
}

/// Serves one accepted connection; `slot` is its `--max-connections`
/// permit, held until it ends (or handed over with the connection when it
/// parks).
///
/// A function returning an `async move` block rather than an `async fn`, and
/// the set-up in [`prepare`]: this state is what every idle keep-alive
/// connection holds for as long as it lives (see `http1::idle`). An `async fn`
/// keeps a second copy of each argument, and a local that was ever borrowed
/// keeps its bytes until its scope ends, moved or not.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn would hold each argument twice in every idle connection"
)]
fn handle(
    mut client: TcpStream,
    peer: SocketAddr,
    proxy: Arc<Proxy>,
    slot: tokio::sync::OwnedSemaphorePermit,
) -> impl Future<Output = ()> {
    async move {
        let ctx = &proxy.ctx;
        let Some(Prepared {
            conn,
            detected,
            buf,
            flow,
        }) = prepare(&mut client, peer, ctx).await
        else {
            return;
        };
        match detected {
            Detected::Http1 => {
                let lease = http1::parking::Lease { flow, permit: slot };
                http1::serve(client, buf, conn, lease, ctx, &proxy.http1).await
            }
            // Boxed, like every large state below: the task's size is that of
            // its largest state, and an idle HTTP/1 connection must stay small.
            Detected::H2 => Box::pin(h2::serve(client, buf, conn, Arc::clone(&proxy))).await,
            Detected::Kafka => Box::pin(kafka::serve(client, peer, buf, conn, ctx)).await,
            Detected::Closed => ctx.buffers.give(buf),
            Detected::NotHttp | Detected::Timeout => {
                Box::pin(opaque::serve(client, peer, buf, conn, ctx)).await
            }
        }
    }
}

/// A connection ready to be served: what it is, how it is served, the bytes
/// read so far, and its entry in `detour flows` (removed when dropped).
struct Prepared {
    conn: route::Conn,
    detected: Detected,
    buf: BytesMut,
    flow: FlowGuard,
}

/// Takes the connection's original destination, finds its service, and
/// detects its protocol where the port does not declare one. `None`: the
/// connection is not served (no record, or the client failed meanwhile).
async fn prepare(client: &mut TcpStream, peer: SocketAddr, ctx: &ProxyContext) -> Option<Prepared> {
    let (record, foreign) = match ctx.orig_dst.take(peer) {
        Ok(Some(taken)) => (taken.record, taken.foreign),
        Ok(None) => {
            ctx.metrics.reject("no_original_destination");
            // Counted; not a warning each, or a flood of direct connections
            // would flood the log too.
            debug!(%peer, "connection was not redirected by detour; closed");
            return None;
        }
        Err(error) => {
            ctx.metrics.reject("lookup_failed");
            warn!(%peer, %error, "original destination lookup failed; closed");
            return None;
        }
    };
    // (TCP_NODELAY: inherited from the listener, see `listen`.)
    let dst = record.dst.socket_addr();
    let (service_id, service, protocol) = {
        let snapshot = ctx.routes.load();
        let destination = snapshot.destinations.get(&dst);
        // Another agent's record (a hitless upgrade): its service id is its
        // own; this agent's is found by the destination.
        let service_id = if foreign {
            destination.map_or(0, |d| d.service_id)
        } else {
            record.service_id
        };
        let service = snapshot.service(service_id).map_or_else(
            || Arc::from(format!("unknown/{service_id}")),
            |s| Arc::clone(&s.label),
        );
        let protocol = destination.map_or(Protocol::Tcp, |d| d.protocol);
        (service_id, service, protocol)
    };
    ctx.metrics.connection(&service);
    let (origin, resolved) = ctx.origins.resolve(record.netns).await;
    ctx.metrics.origin(resolved);
    let flow = ctx
        .flows
        .open(peer, dst, Arc::clone(&service), record.source_sandbox);

    let mut buf = ctx.buffers.take();
    let detected = match protocol {
        Protocol::Http => Detected::Http1,
        Protocol::H2c => Detected::H2,
        Protocol::Tcp => Detected::NotHttp,
        Protocol::Kafka => Detected::Kafka,
        Protocol::Auto => match detect::detect(client, &mut buf, ctx.detect_timeout).await {
            Ok(detected) => detected,
            Err(error) => {
                debug!(%error, "client failed during detection");
                ctx.buffers.give(buf);
                return None;
            }
        },
    };
    debug!(%dst, %service, ?protocol, ?detected, "serving");
    let served_as = match detected {
        Detected::Http1 => "http1",
        Detected::H2 => "h2",
        Detected::Kafka => "kafka",
        Detected::NotHttp => "opaque",
        Detected::Timeout => "timeout",
        Detected::Closed => "closed",
    };
    ctx.metrics.protocol(served_as);
    flow.flow.set_protocol(served_as);
    let conn = route::Conn::of(service_id, &flow.flow, origin);
    Some(Prepared {
        conn,
        detected,
        buf,
        flow,
    })
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn accepted_connections_inherit_nodelay_from_the_listener() {
        let listener = super::listen("127.0.0.1:0".parse().expect("addr")).expect("listen");
        let addr = listener.local_addr().expect("addr");
        let _client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (accepted, _) = listener.accept().await.expect("accept");
        assert!(accepted.nodelay().expect("getsockopt"));
    }
}
