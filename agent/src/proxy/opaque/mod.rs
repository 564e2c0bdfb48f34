//! The opaque path: a connection whose bytes are not routed request by
//! request is spliced to its original destination. That is a `tcp` port, an
//! `auto` port whose client sent neither HTTP/1 nor the HTTP/2 preface (or
//! nothing in time), and an HTTP/1 connection after a `101` upgrade.
//!
//! Its bytes are copied by the proxy ([`copy`]), or, with `--kernel-relay
//! true`, relayed by the kernel ([`kernel_relay`]); both pass a half-close
//! on as a write shutdown of the other side.

mod copy;
mod kernel_relay;

use std::net::SocketAddr;

use bytes::BytesMut;
use tokio::{io::AsyncWriteExt, net::TcpStream};
use tracing::{debug, warn};

use super::{ProxyContext, route};

/// Splices a connection that is not routed by request to its original
/// destination.
pub async fn serve(
    client: TcpStream,
    peer: SocketAddr,
    buf: BytesMut,
    conn: route::Conn,
    ctx: &ProxyContext,
) {
    let dst = conn.original_dst;
    match ctx.upstream.connect(&conn.origin, dst).await {
        Ok(upstream) => splice(client, buf, upstream, ctx).await,
        Err(error) => {
            ctx.metrics.upstream_error(error.reason());
            let service = &conn.service;
            warn!(%peer, %dst, %service, %error, "upstream connect failed; closing the client");
        }
    }
}

/// Splices `client` and `upstream` until both directions are closed, after
/// sending `prefix` (bytes already read from the client) upstream: the proxy
/// copies the bytes ([`copy`]), or, with `--kernel-relay true`, the
/// kernel relays them ([`kernel_relay`]). A half-close (EOF from one
/// side) is passed on as a write shutdown to the other.
pub async fn splice(
    client: TcpStream,
    prefix: BytesMut,
    mut upstream: TcpStream,
    ctx: &ProxyContext,
) {
    if !prefix.is_empty() && upstream.write_all(&prefix).await.is_err() {
        return;
    }
    if let Some(relay) = &ctx.relay
        && let Some(baselines) = kernel_relay::start(relay, &client, &upstream, ctx).await
    {
        ctx.metrics.splice("kernel");
        kernel_relay::run(&client, &upstream, baselines).await;
        return;
    }
    ctx.metrics.splice("user");
    match copy::copy_both_ways(&client, &upstream, &ctx.splice_buffers).await {
        Ok((to_upstream, to_client)) => debug!(to_upstream, to_client, "connection closed"),
        Err(error) => debug!(%error, "connection ended with an error"),
    }
}

/// After a 101 response: flush what each side sent early, then splice.
pub async fn splice_after_upgrade(
    mut client: TcpStream,
    from_client: BytesMut,
    upstream: TcpStream,
    from_upstream: BytesMut,
    ctx: &ProxyContext,
) {
    if !from_upstream.is_empty() && client.write_all(&from_upstream).await.is_err() {
        return;
    }
    splice(client, from_client, upstream, ctx).await;
}
