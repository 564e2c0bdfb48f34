//! The handover wire format over a real Unix socket pair: messages and the
//! descriptors beside them, and the errors a broken peer produces.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use tokio::{io::AsyncWriteExt, net::UnixStream};

use super::{
    take_over,
    wire::{self, Offer, PROTOCOL, Request, WireError},
};

fn offer(listeners: Vec<std::net::SocketAddr>) -> Offer {
    Offer {
        protocol: PROTOCOL,
        pid: 7,
        version: "0.0.0".to_owned(),
        listeners,
        orig_by_peer: false,
        refused: None,
    }
}

#[tokio::test]
async fn a_listening_socket_crosses_with_its_message_and_stays_the_same_socket() {
    let (old, new) = UnixStream::pair().expect("socket pair");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let addr = listener.local_addr().expect("addr");
    let fd: OwnedFd = listener.as_fd().try_clone_to_owned().expect("dup");
    wire::send(&old, &offer(vec![addr]), &[fd.as_raw_fd()])
        .await
        .expect("send");
    // A second message right behind: nothing of it is consumed early.
    wire::send(&old, &offer(Vec::new()), &[])
        .await
        .expect("send");

    let (received, fds): (Offer, _) = wire::receive(&new).await.expect("receive");
    assert_eq!(received.listeners, [addr]);
    assert_eq!(fds.len(), 1);
    let inherited = std::net::TcpListener::from(fds.into_iter().next().expect("fd"));
    assert_eq!(inherited.local_addr().expect("addr"), addr);
    // The same socket: a connection queued on it is accepted through either.
    let _client = std::net::TcpStream::connect(addr).expect("connect");
    inherited
        .accept()
        .expect("accepted through the received descriptor");

    let (second, fds): (Offer, _) = wire::receive(&new).await.expect("receive");
    assert!(second.listeners.is_empty() && fds.is_empty());
}

#[tokio::test]
async fn a_peer_that_closes_or_sends_garbage_is_an_error_not_a_hang() {
    let (old, new) = UnixStream::pair().expect("socket pair");
    drop(old);
    assert!(matches!(
        wire::receive::<Request>(&new).await,
        Err(WireError::Closed)
    ));

    let (mut old, new) = UnixStream::pair().expect("socket pair");
    old.write_all(b"{not json}\n").await.expect("write");
    assert!(matches!(
        wire::receive::<Request>(&new).await,
        Err(WireError::Invalid(_))
    ));

    let (mut old, new) = UnixStream::pair().expect("socket pair");
    tokio::spawn(async move {
        let _ = old.write_all(&vec![b'x'; 20 * 1024]).await;
    });
    assert!(matches!(
        wire::receive::<Request>(&new).await,
        Err(WireError::TooLong)
    ));
}

#[tokio::test]
async fn without_a_running_agent_the_new_one_starts_on_its_own() {
    let dir = std::env::temp_dir().join(format!("detour-handover-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    // No socket at all, then a stale one (bound, then its listener gone).
    let path = dir.join("handover.sock");
    assert!(take_over(&path).await.is_none());
    drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
    assert!(take_over(&path).await.is_none());
    let _ = std::fs::remove_dir_all(&dir);
}
