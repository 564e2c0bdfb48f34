//! Upstream connections: made in the client's network namespace (so they
//! carry its address, see [`super::origin`]), marked so the connect
//! programs leave them alone (no redirect loops), and spliced to the client
//! in both directions.

use std::{io, net::SocketAddr, time::Duration};

use bytes::BytesMut;
use tokio::{
    io::AsyncWriteExt,
    net::{TcpSocket, TcpStream},
};
use tracing::debug;

use super::{kernel_relay, origin::Origin};

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot create a marked socket")]
    Socket(#[source] io::Error),
    #[error("connect failed")]
    Connect(#[source] io::Error),
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
}

impl UpstreamError {
    /// The `reason` label of `upstream_errors_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Socket(_) => "socket",
            Self::Connect(_) => "connect",
            Self::Timeout(_) => "timeout",
        }
    }
}

/// How the proxy reaches upstreams, whatever the protocol.
#[derive(Debug, Clone, Copy)]
pub struct Upstream {
    /// `SO_MARK` of every upstream socket: the connect programs leave them
    /// alone, so the proxy's own connections are never redirected.
    pub mark: u32,
    /// Connect timeout (502 on refusal, 504 beyond it).
    pub connect_timeout: Duration,
    /// Wait for an upstream's response head (504 beyond it).
    pub response_timeout: Duration,
}

impl Upstream {
    /// Connects to `dst` from a marked socket made in `origin` (the client's
    /// namespace, or the agent's): the one upstream connect of every
    /// protocol.
    pub async fn connect(
        &self,
        origin: &Origin,
        dst: SocketAddr,
    ) -> Result<TcpStream, UpstreamError> {
        let socket = origin
            .socket(dst.is_ipv6())
            .map_err(UpstreamError::Socket)?;
        socket.set_mark(self.mark).map_err(UpstreamError::Socket)?;
        socket
            .set_tcp_nodelay(true)
            .map_err(UpstreamError::Socket)?;
        let socket = TcpSocket::from_std_stream(socket.into());
        match tokio::time::timeout(self.connect_timeout, socket.connect(dst)).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(error)) => Err(UpstreamError::Connect(error)),
            Err(_) => Err(UpstreamError::Timeout(self.connect_timeout)),
        }
    }
}

/// Splices `client` and `upstream` until both directions are closed, after
/// sending `prefix` (bytes already read from the client) upstream: the proxy
/// copies the bytes ([`super::splice`]), or, with `--kernel-relay true`, the
/// kernel relays them ([`super::kernel_relay`]). A half-close (EOF from one
/// side) is passed on as a write shutdown to the other.
pub async fn splice(
    client: TcpStream,
    prefix: BytesMut,
    mut upstream: TcpStream,
    ctx: &super::ProxyContext,
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
    match super::splice::copy_both_ways(&client, &upstream, &ctx.splice_buffers).await {
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
    ctx: &super::ProxyContext,
) {
    if !from_upstream.is_empty() && client.write_all(&from_upstream).await.is_err() {
        return;
    }
    splice(client, from_client, upstream, ctx).await;
}
