//! The proxy's own splice: bytes copied both ways between a client and its
//! upstream until both directions have ended. Each direction waits for
//! readiness holding no buffer, borrows a large one from the splice pool
//! while bytes flow (reading until the socket has nothing more), and gives
//! it back: a bulk transfer costs two system calls per 64 KiB, and an idle
//! spliced connection (a WebSocket between messages) holds no buffer at all.
//!
//! A half-close is passed on: the end of one direction shuts down the other
//! socket's write side, and the other direction goes on. An error in either
//! direction ends both.

use std::{io, net::Shutdown};

use tokio::net::TcpStream;

use crate::proxy::buffers::BufferPool;

/// Copies both ways until both directions have ended; the bytes copied to
/// the upstream and to the client.
pub async fn copy_both_ways(
    client: &TcpStream,
    upstream: &TcpStream,
    buffers: &BufferPool,
) -> io::Result<(u64, u64)> {
    tokio::try_join!(
        one_way(client, upstream, buffers),
        one_way(upstream, client, buffers),
    )
}

/// Copies `from` to `to` until `from` ends, then shuts down `to`'s writes.
async fn one_way(from: &TcpStream, to: &TcpStream, buffers: &BufferPool) -> io::Result<u64> {
    let mut copied = 0;
    loop {
        from.readable().await?;
        let mut buf = buffers.take();
        let ended = loop {
            buf.clear();
            match from.try_read_buf(&mut buf) {
                Ok(0) => break true,
                Ok(n) => {
                    copied += n as u64;
                    write_all(to, &buf).await?;
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break false,
                Err(error) => return Err(error),
            }
        };
        buffers.give(buf);
        if ended {
            // The peer may be gone already: nothing left to tell it.
            let _ = socket2::SockRef::from(to).shutdown(Shutdown::Write);
            return Ok(copied);
        }
    }
}

/// Writes all of `bytes` to `to`, waiting for room as needed.
pub async fn write_all(to: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        to.writable().await?;
        match to.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;

    /// Two connected sockets: (the outside end, the proxy's end).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let outside = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (inside, _) = listener.accept().await.expect("accept");
        (outside, inside)
    }

    #[tokio::test]
    async fn bytes_cross_both_ways_in_order_and_each_end_is_passed_on() {
        let (mut client, client_side) = pair().await;
        let (mut server, server_side) = pair().await;
        let pool = BufferPool::for_splices();
        let splice =
            tokio::spawn(async move { copy_both_ways(&client_side, &server_side, &pool).await });
        // More than a few buffers each way.
        let up: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        client.write_all(&up).await.expect("write");
        client.shutdown().await.expect("half-close");
        let mut got = Vec::new();
        server
            .read_to_end(&mut got)
            .await
            .expect("server reads to the end");
        assert_eq!(got, up, "the client's bytes, then its end");
        // The other direction still runs after the first ended.
        let down: Vec<u8> = (0..200_000u32).map(|i| (i % 241) as u8).collect();
        server.write_all(&down).await.expect("write");
        server.shutdown().await.expect("half-close");
        let mut got = Vec::new();
        client
            .read_to_end(&mut got)
            .await
            .expect("client reads to the end");
        assert_eq!(got, down);
        let copied = splice.await.expect("task").expect("splice");
        assert_eq!(copied, (up.len() as u64, down.len() as u64));
    }
}
