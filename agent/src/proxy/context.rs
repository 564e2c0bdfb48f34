//! What every connection task shares, whatever its protocol
//! ([`ProxyContext`]), and the proxy as a whole: that context with each
//! protocol's own state ([`Proxy`]). Built once by the composition root
//! (`app`), read by every stage.

use std::{sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use super::{ProxyMetrics, buffers, h2, http1, origin, upstream::Upstream};
use crate::{
    datapath::{OrigDstTable, Relay},
    flows::FlowTable,
    http::routing_key::RoutingKeys,
    routes::RouteSnapshot,
};

/// What every connection task shares, whatever its protocol.
pub struct ProxyContext {
    /// Cancelled at shutdown: keep-alive connections close after their
    /// current request instead of waiting for the next.
    pub draining: CancellationToken,
    /// One permit per proxied connection (`--max-connections`).
    pub connection_slots: Arc<tokio::sync::Semaphore>,
    pub flows: Arc<FlowTable>,
    pub orig_dst: Arc<OrigDstTable>,
    /// The in-kernel relay for spliced connections; `None`: off, or the
    /// kernel refused its program (spliced in user space).
    pub relay: Option<Arc<Relay>>,
    pub routes: Arc<ArcSwap<RouteSnapshot>>,
    pub metrics: ProxyMetrics,
    pub keys: RoutingKeys,
    pub upstream: Upstream,
    /// Client namespaces, where upstream connections leave from.
    pub origins: Arc<origin::Origins>,
    /// Read buffers, lent per request.
    pub buffers: buffers::BufferPool,
    /// Splice buffers, lent while a spliced connection's bytes flow.
    pub splice_buffers: buffers::BufferPool,
    /// Protocol detection on `auto` ports.
    pub detect_timeout: Duration,
}

/// The proxy: the shared context, and each protocol's own state.
pub struct Proxy {
    pub ctx: ProxyContext,
    pub http1: http1::Http1,
    pub h2: h2::H2,
}
