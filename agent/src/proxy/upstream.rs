//! Upstream connections: made in the client's network namespace (so they
//! carry its address, see [`super::origin`]), and marked so the connect
//! programs leave them alone (no redirect loops). The one upstream connect
//! of every protocol.

use std::{io, net::SocketAddr, time::Duration};

use tokio::net::{TcpSocket, TcpStream};

use super::origin::Origin;

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
