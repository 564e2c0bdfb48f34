//! The Kafka path: a connection to a port declared `kafka` is relayed frame
//! by frame to its original destination (the broker the client dialled:
//! connections stay one-to-one with brokers, as the client's metadata
//! expects). Each request's frame and header are checked ([`frame`]) before
//! a byte of it goes on; each response's frame likewise. A malformed,
//! oversized or truncated frame closes that connection (its broker
//! connection with it) and is counted in
//! `detour_kafka_connection_errors_total{reason}`; other connections are
//! not affected.
//!
//! A connection from a sandbox's fork pod gets consumer groups of its own,
//! fetches only its sandbox's records, and its produced records carry its
//! sandbox's key ([`fork`]); every other connection's bytes are passed on
//! unchanged.

mod fork;
pub mod frame;
pub mod records;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use bytes::BytesMut;
use fork::ForkConn;
use frame::FrameError;
use records::Counted;
use tokio::{
    io::{AsyncWrite, AsyncWriteExt},
    net::{
        TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
};
use tracing::{debug, warn};

use super::{ProxyContext, route};

/// Relays a Kafka connection to its original destination, frame by frame.
pub async fn serve(
    client: TcpStream,
    peer: SocketAddr,
    buf: BytesMut,
    conn: route::Conn,
    ctx: &ProxyContext,
) {
    let dst = conn.original_dst;
    let upstream = match ctx.upstream.connect(&conn.origin, dst).await {
        Ok(upstream) => upstream,
        Err(error) => {
            ctx.metrics.upstream_error(error.reason());
            let service = &conn.service;
            warn!(%peer, %dst, %service, %error, "broker connect failed; closing the client");
            return;
        }
    };
    let fork = fork_of(&conn, ctx);
    let (client_read, client_write) = client.into_split();
    let (broker_read, broker_write) = upstream.into_split();
    let requests = relay_requests(client_read, buf, broker_write, fork.clone(), ctx);
    let responses = relay_responses(broker_read, client_write, fork, ctx);
    // Either direction failing ends both: its peer's frames cannot be
    // trusted to line up any more.
    let ended = tokio::try_join!(requests, responses).map(|_| ());
    if let Err(error) = ended {
        ctx.metrics.kafka_error(error.reason());
        match error {
            FrameError::Io(_) => debug!(%peer, %dst, %error, "Kafka connection ended"),
            _ => warn!(%peer, %dst, %error, "Kafka connection closed: not a Kafka frame"),
        }
    }
}

/// A connection from a fork pod whose sandbox is known: its sandbox and
/// what its frames change; `None` for everyone else.
fn fork_of(conn: &route::Conn, ctx: &ProxyContext) -> Fork {
    if conn.source_sandbox == 0 {
        return None;
    }
    let snapshot = ctx.routes.load();
    let inherited = snapshot.inherited.get(&conn.source_sandbox)?;
    let member = ctx.keys.baggage_member(&inherited.key);
    let fork = ForkConn::new(&inherited.sandbox, &inherited.key, member);
    Some((Arc::clone(&inherited.sandbox), Arc::new(Mutex::new(fork))))
}

type Fork = Option<(Arc<str>, Arc<Mutex<ForkConn>>)>;

/// Client to broker: request frames, checked (a fork pod's rewritten). At
/// the client's end of stream the broker's side is shut for writing, so
/// that its responses still come back.
async fn relay_requests(
    mut client: OwnedReadHalf,
    mut buf: BytesMut,
    mut broker: OwnedWriteHalf,
    fork: Fork,
    ctx: &ProxyContext,
) -> Result<(), FrameError> {
    let mut counted = Vec::new();
    while let Some(request) = frame::read_request(&mut client, &mut buf).await? {
        let info = frame::request_info(&request)?;
        debug!(api = ?info.api, version = info.version, correlation = info.correlation_id, "request");
        let request = match &fork {
            Some((sandbox, conn)) => {
                let request = lock(conn).request(&info, request, &ctx.keys, &mut counted)?;
                count(ctx, sandbox, &mut counted);
                request
            }
            None => request,
        };
        write(&mut broker, &request).await?;
    }
    broker
        .shutdown()
        .await
        .map_err(|e| FrameError::Io(e.to_string()))
}

/// Broker to client: response frames, checked (a fork pod's rewritten).
async fn relay_responses(
    mut broker: OwnedReadHalf,
    mut client: OwnedWriteHalf,
    fork: Fork,
    ctx: &ProxyContext,
) -> Result<(), FrameError> {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut counted = Vec::new();
    while let Some(response) = frame::read_response(&mut broker, &mut buf).await? {
        let response = match &fork {
            Some((sandbox, conn)) => {
                let response = lock(conn).response(response, &ctx.keys, &mut counted)?;
                count(ctx, sandbox, &mut counted);
                response
            }
            None => response,
        };
        write(&mut client, &response).await?;
    }
    client
        .shutdown()
        .await
        .map_err(|e| FrameError::Io(e.to_string()))
}

fn count(ctx: &ProxyContext, sandbox: &Arc<str>, counted: &mut Vec<(String, Counted)>) {
    for (topic, c) in counted.drain(..) {
        ctx.metrics
            .kafka_records(sandbox, &topic, [c.kept, c.dropped, c.keyed]);
    }
}

fn lock(groups: &Mutex<ForkConn>) -> std::sync::MutexGuard<'_, ForkConn> {
    groups
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn write<W: AsyncWrite + Unpin>(to: &mut W, bytes: &[u8]) -> Result<(), FrameError> {
    to.write_all(bytes)
        .await
        .map_err(|e| FrameError::Io(e.to_string()))
}
