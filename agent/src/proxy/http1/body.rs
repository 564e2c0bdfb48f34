//! Moving one message body from a reader to a writer, exactly as framed: the
//! bytes are forwarded as received and nothing past the body is consumed, so
//! the next message on the connection starts where it should.

use std::io::IoSlice;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::http::{
    chunked::{ChunkError, ChunkedDecoder},
    head::Framing,
};

/// Read size when the buffer runs low.
pub const READ_CHUNK: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("peer closed in the middle of a body")]
    Truncated,
    #[error("invalid chunked body")]
    Chunked(#[from] ChunkError),
    #[error("read failed")]
    Read(#[source] std::io::Error),
    #[error("write failed")]
    Write(#[source] std::io::Error),
}

/// Reads more into `buf`; `Ok(false)` at EOF.
pub async fn fill<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
) -> Result<bool, BodyError> {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
    match reader.read_buf(buf).await {
        Ok(0) => Ok(false),
        Ok(_) => Ok(true),
        Err(error) => Err(BodyError::Read(error)),
    }
}

/// Reads what is already there into `buf`, without waiting: `Some(true)`
/// bytes came, `Some(false)` EOF, `None` nothing yet. No system call when
/// the runtime already knows the socket has nothing.
pub fn try_fill(
    reader: &tokio::net::TcpStream,
    buf: &mut BytesMut,
) -> std::io::Result<Option<bool>> {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
    match reader.try_read_buf(buf) {
        Ok(n) => Ok(Some(n > 0)),
        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
        Err(error) => Err(error),
    }
}

/// Writes `buf[..n]` and drops it from `buf`.
pub async fn pass<W: AsyncWrite + Unpin>(
    writer: &mut W,
    buf: &mut BytesMut,
    n: usize,
) -> Result<(), BodyError> {
    if n > 0 {
        writer
            .write_all(&buf[..n])
            .await
            .map_err(BodyError::Write)?;
        buf.advance(n);
    }
    Ok(())
}

/// Writes every byte of `pieces`, in order, in as few writes as the writer
/// takes them (on a socket, usually one `writev`).
pub async fn write_all_vectored<W: AsyncWrite + Unpin>(
    writer: &mut W,
    mut pieces: &mut [IoSlice<'_>],
) -> std::io::Result<()> {
    // Drops leading empty pieces; each write below drops what it consumed.
    IoSlice::advance_slices(&mut pieces, 0);
    while !pieces.is_empty() {
        let n = writer.write_vectored(pieces).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut pieces, n);
    }
    Ok(())
}

/// Forwards one body framed by `framing`, starting with what `buf` already
/// holds. Returns once the last byte of the body has been written.
pub async fn forward<R, W>(
    reader: &mut R,
    buf: &mut BytesMut,
    writer: &mut W,
    framing: Framing,
) -> Result<(), BodyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    match framing {
        Framing::Empty => Ok(()),
        Framing::Length(length) => {
            let mut remaining = length;
            loop {
                let take = usize::try_from(remaining)
                    .unwrap_or(usize::MAX)
                    .min(buf.len());
                pass(writer, buf, take).await?;
                remaining -= take as u64;
                if remaining == 0 {
                    return Ok(());
                }
                if !fill(reader, buf).await? {
                    return Err(BodyError::Truncated);
                }
            }
        }
        Framing::Chunked => {
            let mut decoder = ChunkedDecoder::new();
            loop {
                let progress = decoder.feed(buf)?;
                pass(writer, buf, progress.consumed).await?;
                if progress.done {
                    return Ok(());
                }
                if !fill(reader, buf).await? {
                    return Err(BodyError::Truncated);
                }
            }
        }
        Framing::UntilClose => loop {
            let n = buf.len();
            pass(writer, buf, n).await?;
            if !fill(reader, buf).await? {
                return Ok(());
            }
        },
    }
}

/// How many bytes of a `Length` body `buf` already holds, so that a head and
/// a small body can go out in one write.
pub fn ready_prefix(framing: Framing, available: usize) -> usize {
    match framing {
        Framing::Length(length) => usize::try_from(length).unwrap_or(usize::MAX).min(available),
        Framing::Empty | Framing::Chunked | Framing::UntilClose => 0,
    }
}
