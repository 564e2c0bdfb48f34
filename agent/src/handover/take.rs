//! The successor's side: at start, before binding anything, ask the agent
//! serving the handover socket for its listening sockets and its map.

use std::{
    net::SocketAddr,
    os::fd::{AsRawFd, OwnedFd},
    path::Path,
    time::Duration,
};

use tokio::net::{TcpListener, UnixStream};
use tracing::{info, warn};

use super::{
    offer::open_map,
    wire::{self, Offer, PROTOCOL, Ready, Request, WireError},
};
use crate::datapath::OrigDstTable;

/// How long the whole exchange may take before the agent starts on its own.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a successor received from the running agent.
pub struct Inherited {
    pub pid: u32,
    pub version: String,
    listeners: Vec<(SocketAddr, std::net::TcpListener)>,
    orig_by_peer: Option<OwnedFd>,
    stream: UnixStream,
}

/// Asks the agent serving `path` to hand over. `None` when there is none
/// (no socket, or a stale one) or it refused; the caller then binds its own
/// sockets, as on a first start.
pub async fn take_over(path: &Path) -> Option<Inherited> {
    let stream = match UnixStream::connect(path).await {
        Ok(stream) => stream,
        Err(error) => {
            info!(path = %path.display(), %error, "no running agent to take over from");
            return None;
        }
    };
    match tokio::time::timeout(EXCHANGE_TIMEOUT, exchange(stream)).await {
        Ok(Ok(inherited)) => {
            info!(
                predecessor = inherited.pid,
                version = %inherited.version,
                listeners = ?inherited.listeners.iter().map(|(a, _)| a).collect::<Vec<_>>(),
                "taking over from the running agent"
            );
            Some(inherited)
        }
        Ok(Err(error)) => {
            warn!(path = %path.display(), %error, "handover failed; starting on its own");
            None
        }
        Err(_) => {
            warn!(path = %path.display(), "handover timed out; starting on its own");
            None
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum TakeError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("the running agent (pid {pid}, {version}) refused: {reason}")]
    Refused {
        pid: u32,
        version: String,
        reason: String,
    },
    #[error("the running agent sent {got} descriptors for {expected}")]
    Descriptors { got: usize, expected: usize },
}

async fn exchange(stream: UnixStream) -> Result<Inherited, TakeError> {
    let request = Request {
        protocol: PROTOCOL,
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    wire::send(&stream, &request, &[]).await?;
    let (offer, fds) = wire::receive::<Offer>(&stream).await?;
    if let Some(reason) = offer.refused {
        return Err(TakeError::Refused {
            pid: offer.pid,
            version: offer.version,
            reason,
        });
    }
    let expected = offer.listeners.len() + usize::from(offer.orig_by_peer);
    if fds.len() != expected {
        return Err(TakeError::Descriptors {
            got: fds.len(),
            expected,
        });
    }
    let mut fds = fds.into_iter();
    let listeners = offer
        .listeners
        .iter()
        .zip(fds.by_ref())
        .map(|(addr, fd)| (*addr, std::net::TcpListener::from(fd)))
        .collect();
    Ok(Inherited {
        pid: offer.pid,
        version: offer.version,
        listeners,
        orig_by_peer: fds.next(),
        stream,
    })
}

impl Inherited {
    /// The predecessor's listening socket for `addr`, if it had one; with
    /// `TCP_NODELAY` for its accepted sockets to inherit (a predecessor of an
    /// older version may not have set it).
    pub fn listener(&mut self, addr: SocketAddr) -> Option<std::io::Result<TcpListener>> {
        let at = self.listeners.iter().position(|(a, _)| *a == addr)?;
        let (_, listener) = self.listeners.swap_remove(at);
        Some(
            listener
                .set_nonblocking(true)
                .and_then(|()| socket2::SockRef::from(&listener).set_tcp_nodelay(true))
                .and_then(|()| TcpListener::from_std(listener)),
        )
    }

    /// Starts reading the predecessor's map beside this agent's own.
    pub fn share_maps(&mut self, orig_dst: &OrigDstTable) {
        if let Some(fd) = self.orig_by_peer.take() {
            orig_dst.set_other(open_map(fd, self.pid));
        }
    }

    /// Tells the predecessor that this agent accepts with synced routes (it
    /// may now stop accepting and detach), sending this agent's map; then
    /// waits for the predecessor to exit and stops reading its map.
    pub async fn ready_then_follow(mut self, orig_dst: &OrigDstTable) {
        for (addr, _) in self.listeners.drain(..) {
            warn!(
                predecessor = self.pid,
                %addr,
                "the predecessor listens where this agent does not (another --proxy-addr or --metrics-addr?): that socket is not taken over"
            );
        }
        let map = orig_dst.own_map_fd();
        let ready = Ready {
            orig_by_peer: map.is_some(),
        };
        let fds: Vec<_> = map.iter().map(AsRawFd::as_raw_fd).collect();
        if let Err(error) = wire::send(&self.stream, &ready, &fds).await {
            warn!(predecessor = self.pid, %error, "could not tell the predecessor this agent is ready");
        }
        drop(map);
        wire::closed(&mut self.stream).await;
        info!(
            predecessor = self.pid,
            "predecessor exited; handover complete"
        );
        // Connections it redirected just before detaching may still be in
        // the accept queue: keep its records a moment longer.
        tokio::time::sleep(Duration::from_secs(5)).await;
        orig_dst.set_other(None);
    }
}
