//! The routing stage of the pipeline, shared by every protocol: a request's
//! routing key in, its upstream out.
//!
//! HTTP/1 calls [`route`] once per request and HTTP/2 once per stream, with
//! the key already read from the request's fields (`RoutingKeys::extract`).
//! The decision itself is `RouteSnapshot::decide`; this stage adds what every
//! protocol must do with it: count a fallback, log the decision at debug
//! level, and show it to `detour flows` and `detour trace`.

use std::{net::SocketAddr, sync::Arc};

use tracing::debug;

use super::{ProxyContext, origin::Origin};
use crate::{
    flows::{Flow, Routing},
    routes::Route,
};

/// What the proxy knows about a client connection before its first request.
#[derive(Debug, Clone)]
pub struct Conn {
    pub service_id: u32,
    pub service: Arc<str>,
    pub original_dst: SocketAddr,
    /// The connection as `detour flows` shows it.
    pub flow: Arc<Flow>,
    /// Where its upstream connections leave from: the client's namespace.
    pub origin: Origin,
}

impl Conn {
    /// The connection `flow` records, of service `service_id`, from a
    /// client whose upstream connections leave from `origin`.
    pub fn of(service_id: u32, flow: &Arc<Flow>, origin: Origin) -> Self {
        Self {
            service_id,
            service: Arc::clone(&flow.service),
            original_dst: flow.original_dst,
            flow: Arc::clone(flow),
            origin,
        }
    }
}

/// Decides one request on `conn` carrying `key`; `method` names it for
/// `detour trace` (an HTTP method, or a gRPC method's path).
pub fn route(ctx: &ProxyContext, conn: &Conn, key: Option<String>, method: &str) -> Route {
    let decision =
        ctx.routes
            .load()
            .decide(conn.service_id, conn.original_dst.port(), key.as_deref());
    let reason = decision.reason();
    if let Some(label) = reason.fallback() {
        ctx.metrics.fallback(label);
    }
    debug!(
        service = %conn.service,
        key = key.as_deref().unwrap_or(""),
        sandbox = decision.matched_sandbox().map_or("", |s| &**s),
        %reason,
        upstream = %decision.endpoint(conn.original_dst),
        "routed"
    );
    let route = decision.into_route(conn.original_dst);
    ctx.flows.routed(
        &conn.flow,
        method,
        Routing {
            route: route.clone(),
            // The key is not needed past this point: move it, no copy.
            routing_key: key,
            reason,
        },
    );
    route
}
