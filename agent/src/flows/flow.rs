//! One live connection's record, and how its requests were routed.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use crate::routes::{Reason, Route};

/// How one request was routed: where it went, the key it carried, and why.
#[derive(Debug, Clone)]
pub struct Routing {
    pub route: Route,
    pub routing_key: Option<String>,
    pub reason: Reason,
}

/// One live proxied connection, updated by its task on every request.
#[derive(Debug)]
pub struct Flow {
    pub id: u64,
    pub client: SocketAddr,
    pub original_dst: SocketAddr,
    pub service: Arc<str>,
    /// The sandbox of the fork pod the connection came from (its id;
    /// 0: not a fork pod): its requests without a key inherit its key.
    pub source_sandbox: u32,
    pub(super) started: Instant,
    pub(super) protocol: Mutex<&'static str>,
    pub(super) requests: AtomicU64,
    /// HTTP/2 streams open now.
    pub(super) live_streams: AtomicU64,
    pub(super) last: Mutex<Option<Routing>>,
}

impl Flow {
    pub(super) fn new(
        id: u64,
        client: SocketAddr,
        original_dst: SocketAddr,
        service: Arc<str>,
        source_sandbox: u32,
    ) -> Self {
        Self {
            id,
            client,
            original_dst,
            service,
            source_sandbox,
            started: Instant::now(),
            protocol: Mutex::new("detecting"),
            requests: AtomicU64::new(0),
            live_streams: AtomicU64::new(0),
            last: Mutex::new(None),
        }
    }

    pub fn stream_opened(&self) {
        self.live_streams.fetch_add(1, Ordering::Relaxed);
    }

    pub fn stream_closed(&self) {
        self.live_streams.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn live_streams(&self) -> u64 {
        self.live_streams.load(Ordering::Relaxed)
    }

    pub fn set_protocol(&self, protocol: &'static str) {
        *self.protocol.lock().unwrap_or_else(PoisonError::into_inner) = protocol;
    }

    pub(super) fn protocol(&self) -> &'static str {
        *self.protocol.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub(super) fn last(&self) -> Option<Routing> {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Counts a routed request and keeps its routing as the last one.
    pub(super) fn record(&self, routing: Routing) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(routing);
    }
}

/// A flow as `detour flows` lists it, live or parked.
#[derive(Debug, Clone)]
pub struct FlowView {
    pub id: u64,
    pub client: SocketAddr,
    pub original_dst: SocketAddr,
    pub service: Arc<str>,
    pub protocol: &'static str,
    pub requests: u64,
    /// HTTP/2 streams open now (none while parked).
    pub live_streams: u64,
    pub age: Duration,
    pub last: Option<Routing>,
    pub parked: bool,
}

impl Flow {
    pub(super) fn view(&self) -> FlowView {
        FlowView {
            id: self.id,
            client: self.client,
            original_dst: self.original_dst,
            service: Arc::clone(&self.service),
            protocol: self.protocol(),
            requests: self.requests(),
            live_streams: self.live_streams(),
            age: self.started.elapsed(),
            last: self.last(),
            parked: false,
        }
    }
}
