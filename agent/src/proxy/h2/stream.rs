//! One HTTP/2 stream through the proxy: routed on its own by its request
//! headers, sent on a pooled upstream connection, and relayed both ways.
//!
//! The request head is forwarded as received: every pseudo-header and field,
//! in order within a name, nothing added (h2 has already refused the
//! connection-specific fields RFC 9113 forbids). `authorization`, `cookie`,
//! `proxy-authorization` and `set-cookie` are sent never-indexed. The request
//! body is piped upstream in its own task while the response head is
//! awaited, so client-streaming and bidirectional calls flow both ways.
//!
//! Ends and errors:
//! - the client resets the stream: the upstream stream is reset (CANCEL, or
//!   the client's reason while its body was being piped);
//! - the upstream resets it: the client's stream is reset with that reason;
//! - the upstream refuses the stream (REFUSED_STREAM, or GOAWAY before it
//!   was processed): retried once on another connection if no body byte was
//!   sent, else the client's stream is reset with REFUSED_STREAM;
//! - the upstream cannot be reached or its connection fails before the
//!   response head: the proxy answers UNAVAILABLE / 502; a timeout,
//!   DEADLINE_EXCEEDED / 504; an HTTP/2 protocol error from the upstream,
//!   INTERNAL / 502 (gRPC requests get a trailers-only status).

use std::{
    future::{Future, poll_fn},
    sync::Arc,
    task::Poll,
    time::Instant,
};

use bytes::Bytes;
use h2::{Reason, RecvStream, server::SendResponse};
use hyper::http::{HeaderMap, HeaderValue, Request, Response, Version, header};
use tokio::task::JoinHandle;
use tracing::debug;

use super::{pipe, pool};
use crate::{
    proxy::{
        ProxyContext,
        error::ProxyError,
        origin::Origin,
        route::{self, Conn, Routed},
    },
    routes::Route,
};

/// Serves one stream until both directions are done.
pub async fn serve(
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    conn: Arc<Conn>,
    proxy: Arc<crate::proxy::Proxy>,
) {
    let started = Instant::now();
    let (ctx, h2) = (&proxy.ctx, &proxy.h2);
    let (parts, body) = request.into_parts();
    let grpc = is_grpc(&parts.headers);
    let key = ctx.keys.extract_request(
        parts.uri.path_and_query().map(|p| p.as_str().as_bytes()),
        || {
            parts
                .headers
                .iter()
                .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes()))
        },
    );
    let label = if grpc {
        parts.uri.path()
    } else {
        parts.method.as_str()
    };
    // A stream the client reset already is not decided, and gets no
    // upstream stream.
    if client_reset(&mut respond).await {
        return;
    }
    let Routed {
        route: Route {
            endpoint: upstream,
            sandbox,
        },
        baggage,
    } = route::route(ctx, &conn, key, label);
    conn.flow.stream_opened();
    let _open = StreamGuard(&conn);

    let mut head = Request::from_parts(parts, ());
    mark_sensitive(head.headers_mut());
    if let Some(member) = baggage
        && let Ok(value) = HeaderValue::from_str(&member)
    {
        head.headers_mut()
            .append(header::HeaderName::from_static("baggage"), value);
    }
    if head.uri().authority().is_none() {
        // No `:authority` from the client: h2 then sends none either, with
        // `:scheme: http`, as it does for a request from HTTP/1.
        *head.version_mut() = Version::HTTP_11;
    }
    let end_of_stream = body.is_end_stream();
    let mut body = Some(body);
    let alone = header_list_size(head.headers()) > pool::SHARED_HEADER_LIST_MAX;
    let mut head = Some(head);

    // Up to two tries: a stream without a body that the upstream refused
    // (or whose connection failed before it was sent) goes once more, on
    // another connection. Only such a stream keeps a copy of its head.
    for attempt in 0..2 {
        let this = match head.take() {
            Some(this) if end_of_stream && attempt == 0 => {
                head = Some(this.clone());
                this
            }
            Some(this) => this,
            None => break,
        };
        let slot = tokio::select! {
            biased;
            reset = poll_fn(|cx| respond.poll_reset(cx)) => {
                debug!(reason = ?pipe::reason_of(reset), "client reset the stream before it went upstream");
                return;
            }
            slot = checkout(&h2.pool, (&conn.origin, upstream), &ctx.upstream, alone) => match slot {
                Ok(slot) => slot,
                Err(error) => return answer(ctx, &mut respond, error, grpc),
            },
        };
        let mut send = match slot.send.clone().ready().await {
            Ok(send) => send,
            Err(error) => {
                slot.retire();
                debug!(%upstream, %error, attempt, "upstream connection not ready");
                // Nothing was sent: the head can go on another connection.
                head = Some(this);
                continue;
            }
        };
        let (response, request_body) = match send.send_request(this, end_of_stream) {
            Ok(pair) => pair,
            Err(error) => {
                slot.retire();
                debug!(%upstream, %error, attempt, "upstream refused a new stream");
                continue;
            }
        };
        // The request body goes up in its own task while the response is
        // awaited; aborted (its upstream stream reset) if this task ends first.
        let _piping = body.take().filter(|_| !end_of_stream).map(|mut body| {
            AbortOnDrop(tokio::spawn(async move {
                let mut request_body = request_body;
                if let Err(error) = pipe::pipe(&mut body, &mut request_body).await {
                    debug!(?error, "request body ended early");
                }
            }))
        });

        let deadline = tokio::time::Instant::now() + ctx.upstream.response_timeout;
        let mut response = std::pin::pin!(response);
        let response = loop {
            let next = poll_fn(|cx| {
                // Interim responses (103 Early Hints, ...) first, as they come.
                if let Poll::Ready(Some(Ok(interim))) = response.poll_informational(cx) {
                    return Poll::Ready(Next::Interim(interim));
                }
                response.as_mut().poll(cx).map(Next::Final)
            });
            tokio::select! {
                biased;
                reset = poll_fn(|cx| respond.poll_reset(cx)) => {
                    debug!(reason = ?pipe::reason_of(reset), "client reset the stream before the response");
                    // Dropping the upstream stream's handles resets it (CANCEL).
                    return;
                }
                next = tokio::time::timeout_at(deadline, next) => match next {
                    Ok(Next::Interim(interim)) => {
                        if let Err(error) = respond.send_informational(interim) {
                            debug!(%error, "interim response not passed on");
                        }
                    }
                    Ok(Next::Final(done)) => break Ok(done),
                    Err(elapsed) => break Err(elapsed),
                },
            }
        };
        let response = match response {
            Err(_) => return answer(ctx, &mut respond, ProxyError::UpstreamTimeout, grpc),
            Ok(Ok(response)) => response,
            Ok(Err(error)) if refused(&error) => {
                slot.retire();
                if end_of_stream && attempt == 0 {
                    debug!(%upstream, "bodiless stream refused upstream; retrying");
                    continue;
                }
                return respond.send_reset(Reason::REFUSED_STREAM);
            }
            Ok(Err(error)) => {
                if error.is_io() || error.is_go_away() {
                    slot.retire();
                }
                return match error.reason() {
                    Some(reason) if error.is_reset() => respond.send_reset(reason),
                    // The connection died under the stream: unavailable, retryable.
                    _ if error.is_io() => {
                        answer(ctx, &mut respond, ProxyError::UpstreamConnect, grpc)
                    }
                    _ => answer(ctx, &mut respond, ProxyError::BadUpstreamResponse, grpc),
                };
            }
        };
        relay_response(response, &mut respond).await;
        ctx.metrics
            .request(&conn.service, sandbox.as_ref(), "h2", started.elapsed());
        return;
    }
    answer(ctx, &mut respond, ProxyError::UpstreamConnect, grpc);
}

/// Sends the upstream's response head, then its body and trailers.
async fn relay_response(response: Response<RecvStream>, respond: &mut SendResponse<Bytes>) {
    let (parts, mut body) = response.into_parts();
    let mut head = Response::from_parts(parts, ());
    mark_sensitive(head.headers_mut());
    let end_of_stream = body.is_end_stream();
    let mut to_client = match respond.send_response(head, end_of_stream) {
        Ok(stream) => stream,
        Err(error) => {
            debug!(%error, "client stream gone before the response head");
            return;
        }
    };
    if end_of_stream {
        return;
    }
    match pipe::pipe(&mut body, &mut to_client).await {
        Ok(bytes) => debug!(bytes, "response relayed"),
        Err(error) => debug!(?error, "response ended early"),
    }
}

/// What the upstream sent next while its response head is awaited.
enum Next {
    Interim(Response<()>),
    Final(Result<Response<RecvStream>, h2::Error>),
}

/// A slot on a shared upstream connection, or on one of its own.
async fn checkout(
    pool: &Arc<pool::Pool>,
    (origin, upstream): (&Origin, std::net::SocketAddr),
    via: &crate::proxy::upstream::Upstream,
    alone: bool,
) -> Result<pool::Slot, ProxyError> {
    if alone {
        pool.checkout_alone(origin, upstream, via).await
    } else {
        pool.checkout(origin, upstream, via).await
    }
}

/// The header list size of RFC 9113 §6.5.2 (names, values, 32 per field),
/// without the pseudo-headers.
fn header_list_size(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum()
}

/// Whether the client has reset the stream by now (without waiting).
async fn client_reset(respond: &mut SendResponse<Bytes>) -> bool {
    poll_fn(|cx| Poll::Ready(respond.poll_reset(cx).is_ready())).await
}

/// The proxy's own answer on this stream.
fn answer(ctx: &ProxyContext, respond: &mut SendResponse<Bytes>, error: ProxyError, grpc: bool) {
    ctx.metrics.proxy_error(error);
    let (head, body) = error.h2_response(grpc);
    match respond.send_response(head, body.is_empty()) {
        Ok(mut stream) if !body.is_empty() => {
            let _ = stream.send_data(Bytes::from(body), true);
        }
        Ok(_) => {}
        Err(error) => debug!(%error, "client stream gone before the proxy's answer"),
    }
}

/// Whether the upstream refused the stream without processing it, by
/// REFUSED_STREAM or by a GOAWAY whose last stream id is below it: it can
/// be sent again (RFC 9113 §8.7).
fn refused(error: &h2::Error) -> bool {
    error.reason() == Some(Reason::REFUSED_STREAM) || (error.is_go_away() && error.is_remote())
}

/// `content-type: application/grpc` (or `application/grpc+proto`, ...).
fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"))
}

/// Sends credentials never-indexed (HPACK), whatever the peer did: h2 does
/// not report which fields arrived never-indexed.
fn mark_sensitive(headers: &mut HeaderMap) {
    for name in [
        header::AUTHORIZATION,
        header::COOKIE,
        header::PROXY_AUTHORIZATION,
        header::SET_COOKIE,
    ] {
        if let header::Entry::Occupied(mut entry) = headers.entry(name) {
            entry
                .iter_mut()
                .for_each(|value: &mut HeaderValue| value.set_sensitive(true));
        }
    }
}

/// Counts a stream as live on its connection's flow while it lasts.
struct StreamGuard<'a>(&'a Conn);

impl Drop for StreamGuard<'_> {
    fn drop(&mut self) {
        self.0.flow.stream_closed();
    }
}

/// The request-body task, aborted when the stream's task ends first.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
