//! The handover protocol's messages, and file descriptors sent beside them
//! (`SCM_RIGHTS`). Every message is one line of JSON; a message that carries
//! descriptors is sent in one `sendmsg`, so they arrive with its first byte.
//!
//! 1. successor → running agent: [`Request`];
//! 2. running agent → successor: [`Offer`], with its listening sockets and
//!    its `ORIG_BY_PEER` map, in the order the offer lists them;
//! 3. successor → running agent, once it is accepting: [`Ready`], with the
//!    successor's own `ORIG_BY_PEER` map.
//!
//! The connection then stays open: its end tells either side that the other
//! has exited.

use std::{
    io::{IoSlice, IoSliceMut},
    net::SocketAddr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio::{
    io::{AsyncBufReadExt, BufReader, Interest},
    net::UnixStream,
};

/// Bumped whenever a message or the meaning of a descriptor changes; an
/// agent refuses to hand over to, or take over from, another protocol.
pub const PROTOCOL: u32 = 1;

/// Most descriptors one message carries.
const MAX_FDS: usize = 8;
/// Longest message line.
const MAX_LINE: usize = 16 * 1024;

/// "Hand me your sockets."
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub protocol: u32,
    pub pid: u32,
    pub version: String,
}

/// The running agent's answer: the sockets follow in this order, then the
/// map when `orig_by_peer` is set. `refused` says why there are none.
#[derive(Debug, Serialize, Deserialize)]
pub struct Offer {
    pub protocol: u32,
    pub pid: u32,
    pub version: String,
    pub listeners: Vec<SocketAddr>,
    pub orig_by_peer: bool,
    pub refused: Option<String>,
}

/// "I am accepting": the successor's map follows when `orig_by_peer` is set.
#[derive(Debug, Serialize, Deserialize)]
pub struct Ready {
    pub orig_by_peer: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("the other agent closed the handover connection")]
    Closed,
    #[error("handover message is not valid: {0}")]
    Invalid(#[from] serde_json::Error),
    #[error("handover message longer than {MAX_LINE} bytes")]
    TooLong,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Sends `message` and `fds` in one `sendmsg`.
pub async fn send<T: Serialize>(
    stream: &UnixStream,
    message: &T,
    fds: &[RawFd],
) -> Result<(), WireError> {
    let mut line = serde_json::to_vec(message)?;
    line.push(b'\n');
    let mut sent = 0;
    while sent < line.len() {
        let rest = &line[sent..];
        // Descriptors ride with the first byte only.
        let rights = if sent == 0 { fds } else { &[] };
        sent += stream
            .async_io(Interest::WRITABLE, || {
                let cmsgs: &[ControlMessage] = if rights.is_empty() {
                    &[]
                } else {
                    &[ControlMessage::ScmRights(rights)]
                };
                sendmsg::<()>(
                    stream.as_raw_fd(),
                    &[IoSlice::new(rest)],
                    cmsgs,
                    MsgFlags::MSG_NOSIGNAL,
                    None,
                )
                .map_err(std::io::Error::from)
            })
            .await?;
    }
    Ok(())
}

/// Receives one message and the descriptors that came with it. Reads byte
/// by byte up to the newline, so nothing of a later message is consumed.
pub async fn receive<T: DeserializeOwned>(
    stream: &UnixStream,
) -> Result<(T, Vec<OwnedFd>), WireError> {
    let mut line = Vec::new();
    let mut fds = Vec::new();
    loop {
        let mut byte = [0u8; 1];
        let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
        let (read, received) = stream
            .async_io(Interest::READABLE, || {
                let mut iov = [IoSliceMut::new(&mut byte)];
                let message = recvmsg::<()>(
                    stream.as_raw_fd(),
                    &mut iov,
                    Some(&mut space),
                    MsgFlags::MSG_CMSG_CLOEXEC,
                )
                .map_err(std::io::Error::from)?;
                let mut received = Vec::new();
                for cmsg in message.cmsgs().map_err(std::io::Error::from)? {
                    if let ControlMessageOwned::ScmRights(rights) = cmsg {
                        received.extend(rights);
                    }
                }
                Ok((message.bytes, received))
            })
            .await?;
        // SAFETY: the kernel installed these descriptors in this process for
        // this message; nothing else owns them.
        fds.extend(
            received
                .into_iter()
                .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
        );
        if read == 0 {
            return Err(WireError::Closed);
        }
        if byte[0] == b'\n' {
            return Ok((serde_json::from_slice(&line)?, fds));
        }
        if line.len() == MAX_LINE {
            return Err(WireError::TooLong);
        }
        line.push(byte[0]);
    }
}

/// Waits for the other side to close the connection (it has exited);
/// anything it sends meanwhile is read and ignored.
pub async fn closed(stream: &mut UnixStream) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
