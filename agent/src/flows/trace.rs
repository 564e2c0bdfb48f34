//! The trace feed: routing decisions broadcast as they are made, for
//! `detour trace`.
//!
//! An event is built only while someone is subscribed. The channel is
//! bounded: a slow reader loses the oldest events (and is told so by its
//! receiver), it never slows the proxy.

use std::{net::SocketAddr, sync::Arc, time::SystemTime};

use tokio::sync::broadcast;

use super::flow::{Flow, Routing};

/// Trace events buffered per reader before the oldest are dropped.
pub const TRACE_BUFFER: usize = 1024;

/// One routed request, as `detour trace` shows it.
#[derive(Debug, Clone)]
pub struct TraceEvent {
    pub time: SystemTime,
    pub flow: u64,
    pub client: SocketAddr,
    pub service: Arc<str>,
    /// An HTTP method, or a gRPC method's path.
    pub method: String,
    pub routing: Routing,
}

#[derive(Debug)]
pub(super) struct TraceFeed {
    events: broadcast::Sender<Arc<TraceEvent>>,
}

impl Default for TraceFeed {
    fn default() -> Self {
        Self {
            events: broadcast::channel(TRACE_BUFFER).0,
        }
    }
}

impl TraceFeed {
    /// Sends `routing` of a request on `flow` to every subscriber, if any.
    pub(super) fn publish(&self, flow: &Flow, method: &str, routing: &Routing) {
        if self.events.receiver_count() == 0 {
            return;
        }
        let event = TraceEvent {
            time: SystemTime::now(),
            flow: flow.id,
            client: flow.client,
            service: Arc::clone(&flow.service),
            method: method.to_owned(),
            routing: routing.clone(),
        };
        // No receiver left in between: nothing to do.
        let _ = self.events.send(Arc::new(event));
    }

    pub(super) fn subscribe(&self) -> broadcast::Receiver<Arc<TraceEvent>> {
        self.events.subscribe()
    }
}
