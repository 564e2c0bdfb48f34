//! HTTP/1.x proxying: every request on a steered connection is routed on its
//! own, by its routing key, to a sandbox fork or to the original destination.
//! Heads and bodies are forwarded byte for byte, except an HTTP/1.1
//! request's lone `Connection: close` (hop-by-hop, see `http::head::hop`), so
//! that connection-per-request clients still reuse upstream connections.
//! Responses come back in request order because requests are handled one at
//! a time per connection.
//!
//! Bad input is answered by the proxy itself (400, 408, 431; 502 and 504 for
//! upstream failures) with a `detour-error` header, and the connection closes.

mod body;
mod exchange;
mod idle;
pub mod parking;
pub mod pool;
pub mod respond;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use bytes::BytesMut;
use exchange::{Forwarded, Outcome};
use idle::Next;
use parking::{Lease, ParkingLot};
use tokio::net::TcpStream;
use tracing::debug;

use super::{
    ProxyContext,
    error::ProxyError,
    origin::Origin,
    route::{self, Conn, Routed},
};
use crate::{
    http::{
        chunked::ChunkedDecoder,
        head::{self, FieldLines, Framing, HeadError, Method, RequestHead},
    },
    routes::Route,
};

/// HTTP/1's own state, shared by its connections.
pub struct Http1 {
    /// Idle upstream connections, by upstream address.
    pub pool: pool::Pool,
    /// Idle client connections, parked outside their tasks; `None`: parking
    /// is off.
    pub parking: Option<ParkingLot>,
    pub settings: Settings,
}

/// HTTP/1's timeouts (the upstream ones are in `ProxyContext::upstream`).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// A request head must be complete within this (408 otherwise).
    pub head_timeout: Duration,
    /// A keep-alive connection idle this long between requests is closed.
    pub idle_timeout: Duration,
    /// A keep-alive connection idle this long between requests is parked
    /// (see [`parking`]); zero: never.
    pub park_after: Duration,
}

/// Serves requests on `client` until either side ends the connection, or
/// it parks (idle). `buf` holds bytes already read (by protocol detection,
/// or by the parking lot), in a pooled buffer.
///
/// An `async move` block, not an `async fn`, so that its arguments are held
/// once: this is the state of an idle connection (see `idle`).
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn would hold each argument twice in every idle connection"
)]
pub fn serve<'a>(
    mut client: TcpStream,
    mut buf: BytesMut,
    conn: Conn,
    lease: Lease,
    ctx: &'a ProxyContext,
    h1: &'a Http1,
) -> impl Future<Output = ()> + 'a {
    async move {
        loop {
            // Boxed: an exchange's state is kilobytes, and a connection
            // waiting for its next request must not carry it (see `idle`).
            match Box::pin(requests(&mut client, buf, &conn, ctx, h1)).await {
                Burst::Idle => {}
                Burst::Closed => return,
                Burst::Upgraded(upgraded) => {
                    let Upgraded {
                        from_client,
                        upstream,
                        from_upstream,
                    } = *upgraded;
                    let splice = super::opaque::splice_after_upgrade(
                        client,
                        from_client,
                        upstream,
                        from_upstream,
                        ctx,
                    );
                    Box::pin(splice).await;
                    return;
                }
            }
            match idle::next_request(&client, ctx, h1).await {
                Next::Request(next) => buf = next,
                Next::Closed => return,
                Next::Park { idle_left } => {
                    if let Some(lot) = &h1.parking {
                        lot.park(client, conn, lease, ctx, idle_left);
                    }
                    return;
                }
            }
        }
    }
}

/// How a run of requests on one client connection ended.
enum Burst {
    /// Every response is done and the client has sent nothing more: go idle.
    Idle,
    /// The connection is over: closed by either side, refused, or failed.
    Closed,
    /// The upstream answered 101: splice the two from here, after the bytes
    /// each side sent early. Boxed: rare, and the burst's result is part of
    /// the connection's state.
    Upgraded(Box<Upgraded>),
}

/// What a connection that switched protocols carries into its splice: the
/// bytes each side sent early, and the upstream connection.
struct Upgraded {
    from_client: BytesMut,
    upstream: TcpStream,
    from_upstream: BytesMut,
}

/// Serves requests as long as the client has the next one ready (pipelined,
/// or arrived by the time the response is done); then gives back the
/// upstream connection and the buffers.
async fn requests(
    client: &mut TcpStream,
    mut buf: BytesMut,
    conn: &Conn,
    ctx: &ProxyContext,
    h1: &Http1,
) -> Burst {
    let mut ubuf = ctx.buffers.take();
    let mut current: Option<Current> = None;
    let burst = loop {
        let (head, routing_key) = match read_request(client, &mut buf, ctx, h1).await {
            Ok(Some(request)) => request,
            Ok(None) => break Burst::Closed,
            Err(error) => {
                ctx.metrics.proxy_error(error);
                respond::send(client, error).await;
                break Burst::Closed;
            }
        };
        if head.framing == Framing::Chunked && !head.expect_continue {
            match first_chunk_line(client, &mut buf, &head, h1).await {
                Ok(true) => {}
                Ok(false) => break Burst::Closed,
                Err(error) => {
                    ctx.metrics.proxy_error(error);
                    respond::send(client, error).await;
                    break Burst::Closed;
                }
            }
        }
        let started = Instant::now();
        if !head.stripped.is_empty() {
            debug!("Connection: close left out (hop-by-hop)");
        }
        let Routed {
            route: Route {
                endpoint: target,
                sandbox,
            },
            baggage,
        } = route::route(ctx, conn, routing_key, method_name(head.method));
        let added = baggage.map(|member| format!("baggage: {member}\r\n"));
        let forwarded = Forwarded {
            head: &head,
            added: added.as_deref().map_or(&[], str::as_bytes),
        };
        let outcome = exchange_with_retry(
            client,
            &mut buf,
            &mut ubuf,
            &mut current,
            forwarded,
            (&conn.origin, target),
            ctx,
            h1,
        )
        .await;
        match outcome {
            (
                Outcome::Done {
                    status,
                    keep_client,
                    ..
                },
                _,
            ) => {
                ctx.metrics
                    .request(&conn.service, sandbox.as_ref(), "http1", started.elapsed());
                debug!(status, keep_client, "response relayed");
                if !keep_client || ctx.draining.is_cancelled() {
                    // Closing the socket sends the FIN: no shutdown() first.
                    break Burst::Closed;
                }
                if buf.is_empty() {
                    match body::try_fill(client, &mut buf) {
                        Ok(Some(true)) => {}
                        Ok(Some(false)) | Err(_) => break Burst::Closed,
                        Ok(None) => break Burst::Idle,
                    }
                }
            }
            (Outcome::Upgraded, Some(upstream)) => {
                ctx.metrics
                    .request(&conn.service, sandbox.as_ref(), "http1", started.elapsed());
                return Burst::Upgraded(Box::new(Upgraded {
                    from_client: buf,
                    upstream,
                    from_upstream: ubuf,
                }));
            }
            (Outcome::Refuse(error), _) => {
                ctx.metrics.proxy_error(error);
                respond::send(client, error).await;
                break Burst::Closed;
            }
            _ => break Burst::Closed,
        }
    };
    // The upstream connection can serve other clients meanwhile.
    if let Some(held) = current {
        h1.pool.checkin(&conn.origin, held.target, held.stream);
    }
    ctx.buffers.give(buf);
    ctx.buffers.give(ubuf);
    burst
}

/// The upstream connection a client connection used last: consecutive
/// requests of a burst to the same target reuse it without touching the
/// shared pool.
struct Current {
    target: SocketAddr,
    stream: TcpStream,
}

/// Runs the exchange, once more on a fresh connection when a reused one
/// turned out stale and the request is safe to repeat. Returns the upstream
/// connection when it must live on (after a 101).
#[expect(
    clippy::too_many_arguments,
    reason = "the connection's parts are borrowed one by one: the exchange splits them"
)]
async fn exchange_with_retry(
    client: &mut TcpStream,
    buf: &mut BytesMut,
    ubuf: &mut BytesMut,
    current: &mut Option<Current>,
    forwarded: Forwarded<'_>,
    (origin, target): (&Origin, SocketAddr),
    ctx: &ProxyContext,
    h1: &Http1,
) -> (Outcome, Option<TcpStream>) {
    let mut reusable = match current.take() {
        // A request that cannot be retried first checks that the server has
        // not closed the connection meanwhile (one non-blocking read).
        Some(held)
            if held.target == target
                && (exchange::retry_safe(forwarded.head) || pool::looks_alive(&held.stream)) =>
        {
            Some(held.stream)
        }
        Some(held) if held.target == target => h1.pool.checkout(origin, target),
        Some(held) => {
            h1.pool.checkin(origin, held.target, held.stream);
            h1.pool.checkout(origin, target)
        }
        None => h1.pool.checkout(origin, target),
    };
    loop {
        let reused = reusable.is_some();
        let mut upstream = match reusable.take() {
            Some(stream) => stream,
            None => match ctx.upstream.connect(origin, target).await {
                Ok(stream) => stream,
                Err(error) => return (Outcome::Refuse(error.into()), None),
            },
        };
        ubuf.clear();
        let outcome = exchange::run(
            client,
            buf,
            &mut upstream,
            ubuf,
            forwarded,
            reused,
            ctx.upstream.response_timeout,
        )
        .await;
        match outcome {
            // `buf` still starts with the head: send it again on a new connection.
            Outcome::Retry => {
                debug!(%target, "stale reused connection; retrying once on a new one")
            }
            Outcome::Done {
                reuse_upstream: true,
                ..
            } => {
                *current = Some(Current {
                    target,
                    stream: upstream,
                });
                return (outcome, None);
            }
            Outcome::Upgraded => return (outcome, Some(upstream)),
            other => return (other, None),
        }
    }
}

/// Reads the next request head, within the head timeout, and its routing
/// key. `Ok(None)`: the client closed before completing it.
async fn read_request(
    client: &mut TcpStream,
    buf: &mut BytesMut,
    ctx: &ProxyContext,
    h1: &Http1,
) -> Result<Option<(RequestHead, Option<String>)>, ProxyError> {
    let deadline = tokio::time::Instant::now() + h1.settings.head_timeout;
    loop {
        let mut lines = FieldLines::default();
        match head::parse_request(buf, &mut lines) {
            Ok(Some(parsed)) => {
                let key = ctx
                    .keys
                    .extract_request(Some(parsed.target), || parsed.fields());
                return Ok(Some((parsed.head, key)));
            }
            Ok(None) => {}
            Err(error) => return Err(refusal(&error)),
        }
        match tokio::time::timeout_at(deadline, body::fill(client, buf)).await {
            Err(_) => return Err(ProxyError::HeadTimeout),
            Ok(Ok(true)) => {}
            // Closed in the middle of a head: nobody to answer.
            Ok(Ok(false)) | Ok(Err(_)) => return Ok(None),
        }
    }
}

/// Holds a chunked request back until its first chunk-size line has arrived
/// and is valid, so that a body that is malformed from its first byte never
/// reaches an upstream (a later error aborts the upstream connection).
/// `Ok(false)`: the client went away.
async fn first_chunk_line(
    client: &mut TcpStream,
    buf: &mut BytesMut,
    head: &RequestHead,
    h1: &Http1,
) -> Result<bool, ProxyError> {
    let deadline = tokio::time::Instant::now() + h1.settings.head_timeout;
    loop {
        let mut decoder = ChunkedDecoder::new();
        match decoder.feed(&buf[head.len..]) {
            Err(_) => return Err(ProxyError::BadRequest("bad-chunked-body")),
            Ok(progress) if progress.done || decoder.size_line_seen() => return Ok(true),
            Ok(_) => {}
        }
        match tokio::time::timeout_at(deadline, body::fill(client, buf)).await {
            Err(_) => return Err(ProxyError::HeadTimeout),
            Ok(Ok(true)) => {}
            Ok(Ok(false)) | Ok(Err(_)) => return Ok(false),
        }
    }
}

fn method_name(method: Method) -> &'static str {
    match method {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        Method::Options => "OPTIONS",
        Method::Trace => "TRACE",
        Method::Connect => "CONNECT",
        Method::Patch => "PATCH",
        Method::Other => "OTHER",
    }
}

fn refusal(error: &HeadError) -> ProxyError {
    match error {
        HeadError::TooLarge | HeadError::TooManyHeaders => ProxyError::HeadTooLarge,
        HeadError::Framing(_) => ProxyError::BadRequest("bad-framing"),
        HeadError::Malformed(_) => ProxyError::BadRequest("malformed-head"),
    }
}
