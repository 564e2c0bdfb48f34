//! One request/response exchange on a steered HTTP/1 connection: the request
//! head and body go to the chosen upstream while its response (interim 1xx,
//! then the final one) comes back, concurrently, so `Expect: 100-continue`
//! and early responses work.
//!
//! Both are forwarded as received, with one exception (`http::head::hop`): an
//! HTTP/1.1 request's `Connection: close` lines are left out, so the upstream
//! connection can be reused, and the final response then tells the client
//! `Connection: close` (RFC 9112 §9.6) unless it already does.

use std::{
    io::IoSlice,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use bytes::{Buf, BytesMut};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};

use super::body::{self, BodyError};
use crate::http::head::{self, Framing, Method, RequestHead, ResponseHead, hop};
use crate::proxy::error::ProxyError;

/// Added to the final response when the request's `Connection: close` was
/// not forwarded: the upstream was not asked to close, the client was.
const CONNECTION_CLOSE: &[u8] = b"Connection: close\r\n";

/// How an exchange ended.
#[derive(Debug)]
pub enum Outcome {
    /// Complete. `reuse_upstream` and `keep_client` say what may live on.
    Done {
        status: u16,
        keep_client: bool,
        reuse_upstream: bool,
    },
    /// The upstream answered 101: splice the two connections from here.
    Upgraded,
    /// The proxy must answer instead (nothing was written to the client yet).
    Refuse(ProxyError),
    /// Failed after response bytes reached the client: close.
    Broken,
    /// A reused upstream connection failed before answering, and the request
    /// can be sent again on a fresh one.
    Retry,
}

/// A request as it is forwarded: its head, less the lines it strips, plus
/// `added` (whole field lines, e.g. an inherited key's `baggage`) at the
/// end of the head.
#[derive(Debug, Clone, Copy)]
pub struct Forwarded<'a> {
    pub head: &'a RequestHead,
    pub added: &'a [u8],
}

/// Runs one exchange. `buf` starts with the request head; on return it holds
/// whatever the client sent after this request's body.
pub async fn run(
    client: &mut TcpStream,
    buf: &mut BytesMut,
    upstream: &mut TcpStream,
    ubuf: &mut BytesMut,
    forwarded: Forwarded<'_>,
    reused: bool,
    response_timeout: Duration,
) -> Outcome {
    let request = forwarded.head;
    let responded = AtomicBool::new(false);
    let replayable = reused && retry_safe(request);
    let (response, body_result) = {
        let (mut client_read, mut client_write) = client.split();
        let (mut upstream_read, mut upstream_write) = upstream.split();

        // The head, and as much of a Content-Length body as is already here, in one write.
        let prefix = body::ready_prefix(request.framing, buf.len() - request.len);
        let sent = &buf[..request.len + prefix];
        if let Err(error) = write_head(&mut upstream_write, sent, forwarded).await {
            return refuse_or_retry(&BodyError::Write(error), reused, request);
        }
        // A request that may be retried keeps its head in `buf` until the
        // upstream has answered (it has no body, so nothing else reads `buf`).
        if !replayable {
            buf.advance(request.len + prefix);
        }
        let rest = match request.framing {
            Framing::Length(length) => Framing::Length(length - prefix as u64),
            other => other,
        };

        let send_body = body::forward(&mut client_read, buf, &mut upstream_write, rest);
        let relay = relay_response(
            &mut upstream_read,
            ubuf,
            &mut client_write,
            request.method,
            !request.stripped.is_empty(),
            response_timeout,
            &responded,
        );
        tokio::pin!(send_body, relay);
        let mut body_result: Option<Result<(), BodyError>> = None;
        let response = loop {
            tokio::select! {
                // The body first: when both are ready (always for a request
                // without a body, whose forwarding completes at once), the
                // body is known complete before the response is, and the
                // client connection stays usable. Unbiased, a response that
                // arrived before this first poll would be taken for an early
                // response to an unfinished body, closing the client.
                biased;
                result = &mut send_body, if body_result.is_none() => {
                    let failed = result.is_err();
                    body_result = Some(result);
                    if failed {
                        // The request cannot be completed; stop waiting for the upstream.
                        break Err(RelayError::RequestBody);
                    }
                }
                result = &mut relay => break result,
            }
        };
        (response, body_result)
    };

    let retry = matches!(response, Err(RelayError::ClosedBeforeResponse)) && replayable;
    if replayable && !retry {
        buf.advance(request.len);
    }
    match (response, body_result) {
        (Ok(Relayed::Upgraded), _) => Outcome::Upgraded,
        (Ok(Relayed::Final(head)), Some(Ok(()))) => Outcome::Done {
            status: head.status,
            keep_client: request.keep_alive && head.keep_alive,
            reuse_upstream: head.keep_alive && ubuf.is_empty(),
        },
        // A final response before the request body was complete: the client
        // connection's framing is lost; finish here.
        (Ok(Relayed::Final(head)), _) => Outcome::Done {
            status: head.status,
            keep_client: false,
            reuse_upstream: false,
        },
        (Err(RelayError::RequestBody), Some(Err(BodyError::Chunked(_))))
            if !responded.load(Ordering::Relaxed) =>
        {
            Outcome::Refuse(ProxyError::BadRequest("bad-chunked-body"))
        }
        (Err(RelayError::RequestBody), _) => Outcome::Broken,
        (Err(_), _) if responded.load(Ordering::Relaxed) => Outcome::Broken,
        (Err(RelayError::ClosedBeforeResponse), _) if retry => Outcome::Retry,
        (Err(RelayError::Timeout), _) => Outcome::Refuse(ProxyError::UpstreamTimeout),
        (Err(RelayError::BadResponse), _) => Outcome::Refuse(ProxyError::BadUpstreamResponse),
        (Err(_), _) => Outcome::Refuse(ProxyError::UpstreamConnect),
    }
}

/// Writes `bytes` (the request head, then any body bytes already read)
/// as forwarded: without the head's stripped lines, with the added ones
/// before its final empty line. A retry writes the same bytes again.
async fn write_head<W: AsyncWrite + Unpin>(
    writer: &mut W,
    bytes: &[u8],
    forwarded: Forwarded<'_>,
) -> std::io::Result<()> {
    let stripped = &forwarded.head.stripped;
    if stripped.is_empty() && forwarded.added.is_empty() {
        return writer.write_all(bytes).await;
    }
    // The stripped lines all lie before the head's final CRLF.
    let (fields, end) = bytes.split_at(forwarded.head.len - 2);
    let mut pieces = [IoSlice::new(&[]); hop::MAX_LINES + 3];
    let mut count = 0;
    for piece in stripped.kept(fields).chain([forwarded.added, end]) {
        pieces[count] = IoSlice::new(piece);
        count += 1;
    }
    body::write_all_vectored(writer, &mut pieces[..count]).await
}

/// Only a request with no body and an idempotent method is sent twice.
pub fn retry_safe(request: &RequestHead) -> bool {
    request.method.is_idempotent() && request.framing == Framing::Empty
}

/// A failed head write: on a reused connection, a safe request is sent again
/// (`buf` still holds its head, which was never advanced).
fn refuse_or_retry(error: &BodyError, reused: bool, request: &RequestHead) -> Outcome {
    if reused && retry_safe(request) && matches!(error, BodyError::Write(_)) {
        Outcome::Retry
    } else {
        Outcome::Refuse(ProxyError::UpstreamConnect)
    }
}

enum Relayed {
    Final(ResponseHead),
    Upgraded,
}

#[derive(Debug)]
enum RelayError {
    ClosedBeforeResponse,
    Timeout,
    BadResponse,
    Io,
    RequestBody,
}

/// Reads response heads from the upstream and writes them (and the final
/// response's body) to the client; with `add_close`, the final head gets
/// `Connection: close` unless it has it. `responded` turns true with the
/// first byte written to the client.
async fn relay_response<R, W>(
    upstream: &mut R,
    ubuf: &mut BytesMut,
    client: &mut W,
    method: Method,
    add_close: bool,
    timeout: Duration,
    responded: &AtomicBool,
) -> Result<Relayed, RelayError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        let head = read_response_head(
            upstream,
            ubuf,
            method,
            timeout,
            responded.load(Ordering::Relaxed),
        )
        .await?;
        let prefix = body::ready_prefix(head.framing, ubuf.len() - head.len);
        responded.store(true, Ordering::Relaxed);
        let interim = (100..200).contains(&head.status);
        if add_close && !interim && !head.close {
            // Before the empty line that ends the head (a complete head ends
            // in CRLF CRLF).
            let end = head.len + prefix;
            let (before, after) = ubuf[..end].split_at(head.len.saturating_sub(2));
            let mut pieces = [
                IoSlice::new(before),
                IoSlice::new(CONNECTION_CLOSE),
                IoSlice::new(after),
            ];
            body::write_all_vectored(client, &mut pieces)
                .await
                .map_err(|_| RelayError::Io)?;
            ubuf.advance(end);
        } else {
            body::pass(client, ubuf, head.len + prefix)
                .await
                .map_err(|_| RelayError::Io)?;
        }
        if head.status == 101 {
            return Ok(Relayed::Upgraded);
        }
        if interim {
            continue;
        }
        let rest = match head.framing {
            Framing::Length(length) => Framing::Length(length - prefix as u64),
            other => other,
        };
        body::forward(upstream, ubuf, client, rest)
            .await
            .map_err(|_| RelayError::Io)?;
        return Ok(Relayed::Final(head));
    }
}

async fn read_response_head<R: AsyncRead + Unpin>(
    upstream: &mut R,
    ubuf: &mut BytesMut,
    method: Method,
    timeout: Duration,
    interim_seen: bool,
) -> Result<ResponseHead, RelayError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match head::parse_response(ubuf, method) {
            Ok(Some(head)) => return Ok(head),
            Ok(None) => {}
            Err(_) => return Err(RelayError::BadResponse),
        }
        match tokio::time::timeout_at(deadline, body::fill(upstream, ubuf)).await {
            Err(_) => return Err(RelayError::Timeout),
            Ok(Ok(true)) => {}
            Ok(Ok(false)) if ubuf.is_empty() && !interim_seen => {
                return Err(RelayError::ClosedBeforeResponse);
            }
            Ok(Ok(false)) => return Err(RelayError::BadResponse),
            Ok(Err(_)) => return Err(RelayError::ClosedBeforeResponse),
        }
    }
}

#[cfg(test)]
mod tests;
