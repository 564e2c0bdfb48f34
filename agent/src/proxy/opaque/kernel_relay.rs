//! A spliced connection whose bytes the kernel relays (see
//! `datapath::relay`): the proxy only watches for each side's end of stream
//! and passes it on, once the kernel has handed the peer every byte.
//!
//! The kernel relays bytes but not a FIN: a FIN reaches the proxy as the end
//! of stream on the socket that received it, and the proxy shuts down the
//! other socket's write side. The relay sends asynchronously (from the
//! other socket's work queue), so at that moment relayed bytes may still be
//! on their way; a shutdown then would put the FIN before them and lose
//! them. So the proxy first waits until the other socket has been given
//! every byte its peer received, by TCP's own counts: for the direction
//! `from -> to`, the bytes `from` has received (`tcpi_bytes_received`) and
//! the bytes queued on `to` so far (`tcpi_bytes_acked` plus `SIOCOUTQ`),
//! both measured when the relay started ([`Baseline`]) and again at the end.
//!
//! Before the sockets enter the relay the proxy reads each until it has
//! nothing queued, and sends on what it read: the kernel's relay takes whole
//! queued segments, so a segment the proxy had read only part of would be
//! relayed again in full.

use std::{io, net::Shutdown, os::fd::AsRawFd, time::Duration};

use tokio::net::TcpStream;
use tracing::debug;

use super::copy::write_all;
use crate::datapath::Relay;
use crate::proxy::ProxyContext;

/// Reads (and sends on) at most this many times per socket while waiting for
/// it to have nothing queued (64 MiB in pooled buffers); a socket busier
/// than that is spliced in user space.
const MAX_DRAIN_READS: usize = 1024;

/// How the byte counts of one direction stood when the relay started.
#[derive(Debug, Clone, Copy)]
pub struct Baseline {
    /// Bytes queued on the destination minus bytes taken from the source
    /// (by the proxy, before the relay): constant while the relay runs and
    /// every received byte is accounted for.
    offset: i128,
}

impl Baseline {
    /// Measures `from -> to` before the sockets enter the relay, while the
    /// proxy holds no bytes of either. `None` if either socket cannot say,
    /// or `from` has already ended: splice in user space then.
    pub fn measure(from: &TcpStream, to: &TcpStream) -> Option<Self> {
        let taken = taken(from).ok()??;
        let queued = queued(to).ok()?;
        Some(Self {
            offset: i128::from(queued) - i128::from(taken),
        })
    }
}

/// Puts `client` and `upstream` in the kernel's relay, once the proxy holds
/// nothing of either; `None` when they are to be spliced in user space
/// instead (a side ended or is too busy to be drained, or the kernel
/// refused).
pub async fn start(
    relay: &Relay,
    client: &TcpStream,
    upstream: &TcpStream,
    ctx: &ProxyContext,
) -> Option<[Baseline; 2]> {
    let mut buf = ctx.splice_buffers.take();
    let drained =
        drain(client, upstream, &mut buf).await && drain(upstream, client, &mut buf).await;
    ctx.splice_buffers.give(buf);
    if !drained {
        debug!("a side ended or kept sending while drained; splicing in user space");
        return None;
    }
    let Some(baselines) =
        Baseline::measure(client, upstream).zip(Baseline::measure(upstream, client))
    else {
        debug!("a side already ended; splicing in user space");
        return None;
    };
    match relay.insert(client, upstream) {
        Ok(()) => Some([baselines.0, baselines.1]),
        Err(error) => {
            debug!(%error, "in-kernel relay refused; splicing in user space");
            None
        }
    }
}

/// Reads `from` until nothing is queued, sending what it read to `to`;
/// false if `from` kept sending, ended, or a socket failed.
async fn drain(from: &TcpStream, to: &TcpStream, buf: &mut bytes::BytesMut) -> bool {
    for _ in 0..MAX_DRAIN_READS {
        buf.clear();
        match from.try_read_buf(buf) {
            Ok(0) => return false,
            Ok(_) => {
                if write_all(to, buf).await.is_err() {
                    return false;
                }
            }
            Err(error) => return error.kind() == io::ErrorKind::WouldBlock,
        }
    }
    false
}

/// Runs both directions until both have ended (or a socket failed).
pub async fn run(
    client: &TcpStream,
    upstream: &TcpStream,
    [to_upstream, to_client]: [Baseline; 2],
) {
    let (a, b) = tokio::join!(
        direction(client, upstream, to_upstream),
        direction(upstream, client, to_client),
    );
    if let Err(error) = a.and(b) {
        debug!(%error, "relayed connection ended with an error");
    }
}

/// One direction: waits for `from`'s end of stream, forwarding anything the
/// relay passed up instead of relaying (a segment that found no peer), then
/// waits for the relay to finish and shuts down `to`'s write side.
async fn direction(from: &TcpStream, to: &TcpStream, baseline: Baseline) -> io::Result<()> {
    let mut buf = [0u8; 2048];
    loop {
        from.readable().await?;
        match from.try_read(&mut buf) {
            Ok(0) => break,
            Ok(n) => write_all(to, &buf[..n]).await?,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
    let mut pause = Duration::from_micros(200);
    loop {
        // The end of stream counts as one received byte.
        let received = i128::from(tcp_info(from)?.tcpi_bytes_received) - 1;
        let queued = i128::from(queued(to)?);
        if queued - baseline.offset >= received {
            break;
        }
        if !can_send(tcp_info(to)?.tcpi_state) {
            // `to` can no longer send: nothing more will be queued.
            return Ok(());
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
    socket2::SockRef::from(to).shutdown(Shutdown::Write)
}

/// `TCP_ESTABLISHED` (`include/net/tcp_states.h`).
const TCP_ESTABLISHED: u8 = 1;
/// `TCP_CLOSE_WAIT`: the peer has ended its stream; this side can send.
const TCP_CLOSE_WAIT: u8 = 8;

fn can_send(state: u8) -> bool {
    state == TCP_ESTABLISHED || state == TCP_CLOSE_WAIT
}

/// Bytes the proxy has read from `socket` so far (received minus still
/// queued), or `None` if its peer has already ended the stream.
fn taken(socket: &TcpStream) -> io::Result<Option<u64>> {
    loop {
        let before = tcp_info(socket)?;
        let unread = ioctl_count(socket, libc::FIONREAD)?;
        let after = tcp_info(socket)?;
        if before.tcpi_bytes_received == after.tcpi_bytes_received {
            if after.tcpi_state != TCP_ESTABLISHED {
                return Ok(None);
            }
            return Ok(Some(after.tcpi_bytes_received - unread));
        }
    }
}

/// Bytes ever queued for sending on `socket`: acknowledged plus still in
/// the send queue (read so that a concurrent acknowledgment cannot make it
/// look larger than it is).
fn queued(socket: &TcpStream) -> io::Result<u64> {
    loop {
        let before = tcp_info(socket)?.tcpi_bytes_acked;
        let unacked = ioctl_count(socket, libc::TIOCOUTQ)?;
        let after = tcp_info(socket)?.tcpi_bytes_acked;
        if before == after {
            return Ok(after + unacked);
        }
    }
}

fn tcp_info(socket: &TcpStream) -> io::Result<libc::tcp_info> {
    // SAFETY: `tcp_info` is plain data; the kernel fills at most `len` bytes.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc = libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            std::ptr::from_mut(&mut info).cast(),
            &mut len,
        );
        if rc == 0 {
            Ok(info)
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

/// `FIONREAD` (`SIOCINQ`) or `TIOCOUTQ` (`SIOCOUTQ`).
fn ioctl_count(socket: &TcpStream, request: libc::Ioctl) -> io::Result<u64> {
    let mut count: libc::c_int = 0;
    // SAFETY: both requests write one int.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), request, &mut count) };
    if rc == 0 {
        Ok(u64::try_from(count).unwrap_or(0))
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// The end-of-stream wait relies on this: a FIN counts as one byte in
    /// `tcpi_bytes_received`.
    #[tokio::test]
    async fn the_end_of_stream_counts_as_one_received_byte() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let mut client = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (mut server, _) = listener.accept().await.expect("accept");
        let before = queued(&client).expect("queued");
        client.write_all(b"0123456789").await.expect("write");
        assert_eq!(queued(&client).expect("queued") - before, 10, "sent or not");
        assert_eq!(taken(&server).expect("taken"), Some(0));
        client.shutdown().await.expect("shutdown");
        let mut read = Vec::new();
        server.read_to_end(&mut read).await.expect("read");
        assert_eq!(read.len(), 10);
        assert_eq!(tcp_info(&server).expect("tcp_info").tcpi_bytes_received, 11);
        assert_eq!(taken(&server).expect("taken"), None, "ended");
    }
}
