//! The running agent's side: it serves the handover socket, gives a
//! successor its listening sockets and its `ORIG_BY_PEER` map, and follows
//! the successor's life so that its own shutdown knows whether someone takes
//! over ([`Successor`]).

use std::{
    net::SocketAddr,
    os::fd::{AsFd, AsRawFd, OwnedFd},
    sync::{Arc, Mutex},
    time::Duration,
};

use aya::maps::{HashMap, MapData};
use detour_common::{OrigDst, SockKey};
use tokio::{
    net::{TcpListener, UnixListener, UnixStream},
    sync::watch,
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::wire::{self, Offer, PROTOCOL, Ready, Request};
use crate::{
    datapath::OrigDstTable,
    socket_file::{self, SocketFile},
};

/// How long a successor may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What the running agent knows of the agent that took its sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Successor {
    /// None, or it has exited.
    None,
    /// It holds the sockets and is getting ready (routes not yet synced).
    Starting { pid: u32 },
    /// It accepts connections with synced routes: this agent can stop
    /// accepting and detach without a window in which connects go direct.
    Ready { pid: u32 },
}

/// What is offered: duplicates of the listening sockets (the same sockets,
/// not new ones) and the map the proxy reads original destinations from.
pub struct Offered {
    listeners: Mutex<Vec<(SocketAddr, OwnedFd)>>,
    orig_dst: Arc<OrigDstTable>,
}

impl Offered {
    /// Offers `listeners` (by their local address) and `orig_dst`'s map.
    pub fn new(listeners: &[&TcpListener], orig_dst: Arc<OrigDstTable>) -> std::io::Result<Self> {
        let listeners = listeners
            .iter()
            .map(|l| Ok((l.local_addr()?, l.as_fd().try_clone_to_owned()?)))
            .collect::<std::io::Result<_>>()?;
        Ok(Self {
            listeners: Mutex::new(listeners),
            orig_dst,
        })
    }

    /// Closes this agent's copies: from here on nothing is offered.
    pub fn withdraw(&self) {
        self.listeners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    /// Copies of the listening sockets, for one successor.
    fn listeners(&self) -> Vec<(SocketAddr, OwnedFd)> {
        self.listeners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter_map(|(addr, fd)| Some((*addr, fd.try_clone().ok()?)))
            .collect()
    }
}

/// Serves the handover socket until `stop`; the watch tells the shutdown
/// path what the latest successor is doing.
pub async fn serve(
    mut listener: UnixListener,
    mut file: SocketFile,
    offered: Arc<Offered>,
    successor: watch::Sender<Successor>,
    stop: CancellationToken,
) {
    info!(path = %file.path.display(), "handover socket listening");
    let mut changes = successor.subscribe();
    let successor = Arc::new(successor);
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => break,
            Ok(()) = changes.changed() => {
                // A successor that died after taking the path: the next
                // one must find this agent again.
                if *changes.borrow_and_update() == Successor::None {
                    socket_file::reclaim(&mut listener, &mut file);
                }
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    warn!(%error, "handover accept failed");
                    continue;
                }
            },
        };
        tokio::spawn(hand_over(
            stream,
            Arc::clone(&offered),
            Arc::clone(&successor),
        ));
    }
    file.remove_if_ours();
}

async fn hand_over(
    mut stream: UnixStream,
    offered: Arc<Offered>,
    successor: Arc<watch::Sender<Successor>>,
) {
    let request =
        match tokio::time::timeout(REQUEST_TIMEOUT, wire::receive::<Request>(&stream)).await {
            Ok(Ok((request, _))) => request,
            // A probe of whether this agent is alive (`socket_file::bind`).
            Ok(Err(wire::WireError::Closed)) => return,
            Ok(Err(error)) => {
                warn!(%error, "handover request refused");
                return;
            }
            Err(_) => {
                warn!("handover request refused: nothing received in time");
                return;
            }
        };
    let pid = request.pid;
    let mut offer = Offer {
        protocol: PROTOCOL,
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        listeners: Vec::new(),
        orig_by_peer: false,
        refused: None,
    };
    if request.protocol != PROTOCOL {
        let reason = format!(
            "handover protocol {} asked, {PROTOCOL} spoken",
            request.protocol
        );
        warn!(successor = pid, version = %request.version, %reason, "handover refused");
        offer.refused = Some(reason);
        let _ = wire::send(&stream, &offer, &[]).await;
        return;
    }
    let mut handed = Vec::new();
    for (addr, fd) in offered.listeners() {
        offer.listeners.push(addr);
        handed.push(fd);
    }
    if let Some(fd) = offered.orig_dst.own_map_fd() {
        handed.push(fd);
        offer.orig_by_peer = true;
    }
    let fds: Vec<_> = handed.iter().map(AsRawFd::as_raw_fd).collect();
    if let Err(error) = wire::send(&stream, &offer, &fds).await {
        warn!(successor = pid, %error, "handover failed");
        return;
    }
    info!(successor = pid, version = %request.version, listeners = ?offer.listeners, "sockets handed over to a successor");
    successor.send_replace(Successor::Starting { pid });

    // Ready, with its map so that this agent finds the records of
    // connections the successor's programs redirected to a shared socket.
    match wire::receive::<Ready>(&stream).await {
        Ok((ready, fds)) => {
            if ready.orig_by_peer {
                let map = fds.into_iter().next().and_then(|fd| open_map(fd, pid));
                offered.orig_dst.set_other(map);
            }
            info!(
                successor = pid,
                "successor ready: a shutdown now hands over without a gap"
            );
            successor.send_replace(Successor::Ready { pid });
            wire::closed(&mut stream).await;
        }
        Err(error) => info!(successor = pid, %error, "successor gone before it was ready"),
    }
    // Only the latest successor's end counts.
    successor.send_if_modified(|current| {
        let ours = matches!(current, Successor::Starting { pid: p } | Successor::Ready { pid: p } if *p == pid);
        if ours {
            *current = Successor::None;
        }
        ours
    });
    offered.orig_dst.set_other(None);
    info!(successor = pid, "successor exited");
}

/// Opens another agent's `ORIG_BY_PEER` from its descriptor; `None` (and a
/// warning) if it is not a map of the expected shape.
pub(super) fn open_map(fd: OwnedFd, pid: u32) -> Option<HashMap<MapData, SockKey, OrigDst>> {
    let opened = MapData::from_fd(fd)
        .and_then(aya::maps::Map::from_map_data)
        .and_then(HashMap::try_from);
    match opened {
        Ok(map) => Some(map),
        Err(error) => {
            warn!(agent = pid, %error, "the other agent's ORIG_BY_PEER cannot be read; connections it redirected are closed if this agent accepts them");
            None
        }
    }
}
