//! The node-local proxy: accepts redirected connections, recovers each one's
//! original destination from the kernel, and forwards the bytes there.
//!
//! A connection that detour did not redirect has no record and is closed at
//! once: the proxy is not an open relay.

mod metrics;
mod upstream;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use arc_swap::ArcSwap;
pub use metrics::ProxyMetrics;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::{datapath::OrigDstTable, routes::RouteSnapshot};

/// What every connection task shares.
pub struct ProxyContext {
    pub orig_dst: OrigDstTable,
    pub routes: Arc<ArcSwap<RouteSnapshot>>,
    pub metrics: ProxyMetrics,
    pub mark: u32,
    pub connect_timeout: Duration,
}

/// Accepts on `listener` until `stop` is cancelled; connection tasks are
/// spawned on `tracker` so that shutdown can wait for them.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<ProxyContext>,
    tracker: TaskTracker,
    stop: CancellationToken,
) {
    let local = listener.local_addr().ok();
    loop {
        let accepted = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let ctx = Arc::clone(&ctx);
                let span = info_span!("conn", %peer);
                tracker.spawn(handle(stream, peer, ctx).instrument(span));
            }
            Err(error) => {
                // Typically EMFILE: back off briefly instead of spinning.
                warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    info!(listener = ?local, "proxy stopped accepting");
}

async fn handle(client: TcpStream, peer: SocketAddr, ctx: Arc<ProxyContext>) {
    let record = match ctx.orig_dst.take(peer) {
        Ok(Some(record)) => record,
        Ok(None) => {
            ctx.metrics.reject("no_original_destination");
            warn!("connection was not redirected by detour; closed");
            return;
        }
        Err(error) => {
            ctx.metrics.reject("lookup_failed");
            warn!(%error, "original destination lookup failed; closed");
            return;
        }
    };
    let dst = record.dst.socket_addr();
    let service = ctx.routes.load().service(record.service_id).map_or_else(
        || format!("unknown/{}", record.service_id),
        |s| s.to_string(),
    );
    ctx.metrics.connection(&service);
    debug!(%dst, %service, "forwarding to the original destination");

    let upstream = match upstream::connect(dst, ctx.mark, ctx.connect_timeout).await {
        Ok(upstream) => upstream,
        Err(error) => {
            ctx.metrics.upstream_error(error.reason());
            warn!(%dst, %service, %error, "upstream connect failed; closing the client");
            return;
        }
    };
    upstream::splice(client, upstream).await;
}
