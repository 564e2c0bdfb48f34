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
    routes::{Reason, Route},
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
    /// The sandbox of the fork pod it came from (`OrigDst::source_sandbox`;
    /// 0: not a fork pod): its requests without a key inherit that
    /// sandbox's. Kept by its flow record, also while parked.
    pub source_sandbox: u32,
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
            source_sandbox: flow.source_sandbox,
        }
    }
}

/// A decided request: its route, and the `baggage` member (`name=key`) its
/// forwarded head gets when it inherited its key (`None`: forwarded as
/// received).
#[derive(Debug)]
pub struct Routed {
    pub route: Route,
    pub baggage: Option<Arc<str>>,
}

/// Decides one request on `conn` carrying `key`; `method` names it for
/// `detour trace` (an HTTP method, or a gRPC method's path). A request with
/// no key from a fork pod inherits its sandbox's key: routed by it, and
/// forwarded carrying it ([`Route::inherited`]).
pub fn route(ctx: &ProxyContext, conn: &Conn, key: Option<String>, method: &str) -> Routed {
    let snapshot = ctx.routes.load();
    let inherited = match (&key, conn.source_sandbox) {
        (None, source) if source != 0 => snapshot.inherited.get(&source),
        _ => None,
    };
    let key = key.or_else(|| inherited.map(|i| i.key.to_string()));
    let decision = snapshot.decide(conn.service_id, conn.original_dst.port(), key.as_deref());
    let mut reason = decision.reason();
    if let Some(inherited) = inherited {
        ctx.metrics.inherited(&inherited.sandbox);
        if reason == Reason::Fork {
            reason = Reason::Inherited;
        }
    }
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
    let baggage = inherited.map(|i| ctx.keys.baggage_member(&i.key).into());
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
    Routed { route, baggage }
}
