//! HTTP/2 (h2c prior knowledge, gRPC): every stream is routed on its own.
//!
//! A steered connection declared `h2c` or `grpc`, or an `auto` one that
//! opened with the HTTP/2 preface, is served by an `h2` server (the bytes
//! detection read are replayed into it). Each accepted stream runs in its
//! own task ([`stream`]): its routing key comes from its request headers by
//! the same rules as HTTP/1, the shared routing stage decides it, and it
//! goes to a pooled upstream HTTP/2 connection for the chosen endpoint
//! ([`pool`]). One client connection can carry streams to a fork and to
//! baseline at the same time.
//!
//! Bounds against hostile clients are `h2`'s, configured here: at most
//! [`Settings::max_concurrent_streams`] streams (more are refused with
//! REFUSED_STREAM), a header list of at most [`Settings::max_header_list_size`]
//! (431, which ends the stream), a cap on streams reset before they are accepted
//! (rapid reset, CVE-2023-44487: GOAWAY ENHANCE_YOUR_CALM), on CONTINUATION
//! frames per header block (CVE-2024-27316: GOAWAY ENHANCE_YOUR_CALM) and on
//! streams reset for local errors. SETTINGS and PING frames are acknowledged
//! one by one as they are read, so a flood of them is bounded by TCP
//! backpressure. Connection errors are counted by reason. A stream reset
//! before it is decided or sent upstream gets no upstream stream.
//!
//! On SIGTERM the connection gets GOAWAY (graceful: in-flight streams
//! finish, new ones are refused) and closes when its streams are done; the
//! agent's drain bound cuts what is left. A connection with no stream for
//! the idle timeout gets the same GOAWAY.

mod pipe;
pub mod pool;
mod stream;

use std::{sync::Arc, time::Duration};

use bytes::BytesMut;
use tokio::{net::TcpStream, time::Instant};
use tracing::debug;

use super::{Proxy, prefixed::Prefixed, route::Conn};

/// HTTP/2's own state, shared by its connections.
#[derive(Debug, Default)]
pub struct H2 {
    /// Upstream connections by endpoint address.
    pub pool: Arc<pool::Pool>,
    pub settings: Settings,
}

/// HTTP/2 server-side limits and timeouts.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// `SETTINGS_MAX_CONCURRENT_STREAMS` advertised to clients.
    pub max_concurrent_streams: u32,
    /// `SETTINGS_MAX_HEADER_LIST_SIZE` advertised to clients (as the HTTP/1
    /// head limit).
    pub max_header_list_size: u32,
    /// Streams a client may reset before the proxy accepts them, before
    /// GOAWAY (rapid reset).
    pub max_pending_accept_reset_streams: usize,
    /// Streams the proxy may reset for a client's protocol errors, before
    /// GOAWAY.
    pub max_local_error_reset_streams: usize,
    /// The preface and SETTINGS must arrive within this.
    pub handshake_timeout: Duration,
    /// A connection with no stream this long gets GOAWAY.
    pub idle_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 256,
            max_header_list_size: crate::http::head::MAX_HEAD_BYTES as u32,
            max_pending_accept_reset_streams: 20,
            max_local_error_reset_streams: 1024,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Serves HTTP/2 on `client` until the connection ends. `prefix` holds the
/// bytes protocol detection read (the preface, at least).
pub async fn serve(client: TcpStream, prefix: BytesMut, conn: Conn, proxy: Arc<Proxy>) {
    let settings = proxy.h2.settings;
    let handshake = h2::server::Builder::new()
        .max_concurrent_streams(settings.max_concurrent_streams)
        .max_header_list_size(settings.max_header_list_size)
        .max_pending_accept_reset_streams(settings.max_pending_accept_reset_streams)
        .max_local_error_reset_streams(Some(settings.max_local_error_reset_streams))
        .handshake(Prefixed::new(prefix, client));
    let mut connection = match tokio::time::timeout(settings.handshake_timeout, handshake).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(error)) => {
            proxy.ctx.metrics.h2_error(error.reason());
            debug!(%error, "HTTP/2 handshake failed");
            return;
        }
        Err(_) => {
            debug!("HTTP/2 handshake timed out");
            return;
        }
    };
    let conn = Arc::new(conn);
    let mut idle_deadline = Instant::now() + settings.idle_timeout;
    let mut shutting_down = false;
    loop {
        let accepted = tokio::select! {
            accepted = connection.accept() => accepted,
            () = proxy.ctx.draining.cancelled(), if !shutting_down => {
                debug!("draining: GOAWAY to the client");
                connection.graceful_shutdown();
                shutting_down = true;
                continue;
            }
            () = tokio::time::sleep_until(idle_deadline), if !shutting_down => {
                if conn.flow.live_streams() == 0 {
                    debug!("idle: GOAWAY to the client");
                    connection.graceful_shutdown();
                    shutting_down = true;
                } else {
                    idle_deadline = Instant::now() + settings.idle_timeout;
                }
                continue;
            }
        };
        match accepted {
            Some(Ok((request, respond))) => {
                idle_deadline = Instant::now() + settings.idle_timeout;
                // Boxed: the stream's future is kilobytes, and spawning moves
                // it several times; a box moves as a pointer.
                tokio::spawn(Box::pin(stream::serve(
                    request,
                    respond,
                    Arc::clone(&conn),
                    Arc::clone(&proxy),
                )));
            }
            Some(Err(error)) => {
                proxy.ctx.metrics.h2_error(error.reason());
                debug!(%error, "HTTP/2 connection error");
                break;
            }
            None => break,
        }
    }
    debug!("HTTP/2 connection closed");
}
