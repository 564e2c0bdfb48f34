//! What the admin API can see of the proxy: live flows and a stream of
//! routing decisions.
//!
//! The proxy writes here on every request, so the writes are cheap: a flow is
//! registered once per connection; a request bumps a counter and replaces the
//! flow's last decision under an uncontended lock; a decision event is built
//! and broadcast only while someone is tracing. The broadcast channel is
//! bounded: a slow trace reader loses events (and is told), it never slows
//! the proxy.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use slab::Slab;
use tokio::sync::broadcast;

use self::parked::ParkedFlow;
pub use self::parked::ParkedFlowGuard;
use super::api;
use crate::routes::Reason;

mod parked;

/// Trace events buffered per reader before the oldest are dropped.
pub const TRACE_BUFFER: usize = 1024;

/// How a request was decided, in the proxy's own terms.
#[derive(Debug, Clone)]
pub struct Decided {
    pub sandbox: Option<Arc<str>>,
    pub endpoint: SocketAddr,
    pub routing_key: Option<String>,
    pub reason: Reason,
}

impl Decided {
    fn to_api(&self) -> api::Decision {
        api::Decision {
            destination: if self.sandbox.is_some() {
                "sandbox"
            } else {
                "baseline"
            }
            .to_owned(),
            sandbox: self.sandbox.as_deref().map(str::to_owned),
            endpoint: self.endpoint,
            routing_key: self.routing_key.clone(),
            reason: self.reason,
        }
    }
}

/// One live proxied connection.
#[derive(Debug)]
pub struct FlowState {
    pub id: u64,
    pub client: SocketAddr,
    pub original_dst: SocketAddr,
    pub service: Arc<str>,
    started: Instant,
    protocol: Mutex<&'static str>,
    requests: AtomicU64,
    /// HTTP/2 streams open now.
    live_streams: AtomicU64,
    last: Mutex<Option<Decided>>,
}

impl FlowState {
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
}

#[derive(Debug)]
pub struct Observer {
    flows: Mutex<HashMap<u64, Arc<FlowState>>>,
    /// The flows of parked connections, by value (see [`parked`]).
    parked: Mutex<Slab<ParkedFlow>>,
    next_id: AtomicU64,
    events: broadcast::Sender<Arc<api::DecisionEvent>>,
}

impl Default for Observer {
    fn default() -> Self {
        Self {
            flows: Mutex::new(HashMap::new()),
            parked: Mutex::new(Slab::new()),
            next_id: AtomicU64::new(1),
            events: broadcast::channel(TRACE_BUFFER).0,
        }
    }
}

/// Unregisters its flow when the connection ends.
pub struct FlowGuard {
    observer: Arc<Observer>,
    pub flow: Arc<FlowState>,
}

impl Drop for FlowGuard {
    fn drop(&mut self) {
        self.observer
            .flows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.flow.id);
    }
}

impl Observer {
    /// Registers a connection for `GET /flows`.
    pub fn open(
        self: &Arc<Self>,
        client: SocketAddr,
        original_dst: SocketAddr,
        service: Arc<str>,
    ) -> FlowGuard {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let flow = Arc::new(FlowState {
            id,
            client,
            original_dst,
            service,
            started: Instant::now(),
            protocol: Mutex::new("detecting"),
            requests: AtomicU64::new(0),
            live_streams: AtomicU64::new(0),
            last: Mutex::new(None),
        });
        self.flows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, Arc::clone(&flow));
        FlowGuard {
            observer: Arc::clone(self),
            flow,
        }
    }

    /// Records a routed request.
    pub fn decided(&self, flow: &FlowState, method: &str, decided: Decided) {
        flow.requests.fetch_add(1, Ordering::Relaxed);
        if self.events.receiver_count() > 0 {
            let event = api::DecisionEvent {
                time: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64()),
                flow: flow.id,
                client: flow.client,
                service: flow.service.to_string(),
                method: method.to_owned(),
                decision: decided.to_api(),
            };
            // No receiver left in between: nothing to do.
            let _ = self.events.send(Arc::new(event));
        }
        *flow.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(decided);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<api::DecisionEvent>> {
        self.events.subscribe()
    }

    /// Live flows, parked ones included.
    pub fn count(&self) -> u64 {
        let live = self
            .flows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        let parked = self
            .parked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        (live + parked) as u64
    }

    /// Every live flow, parked ones included, oldest first.
    pub fn flows(&self) -> api::Flows {
        let flows: Vec<Arc<FlowState>> = self
            .flows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        let mut flows: Vec<api::Flow> = flows
            .iter()
            .map(|flow| api::Flow {
                id: flow.id,
                client: flow.client,
                original_dst: flow.original_dst,
                service: flow.service.to_string(),
                protocol: (*flow.protocol.lock().unwrap_or_else(PoisonError::into_inner))
                    .to_owned(),
                requests: flow.requests.load(Ordering::Relaxed),
                live_streams: flow.live_streams(),
                age_seconds: flow.started.elapsed().as_secs_f64(),
                last_decision: flow
                    .last
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .as_ref()
                    .map(Decided::to_api),
                parked: false,
            })
            .collect();
        flows.extend(
            self.parked
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .map(|(_, parked)| parked.to_api()),
        );
        // A flow being parked or resumed is briefly in both: list it once.
        flows.sort_by_key(|flow| flow.id);
        flows.dedup_by_key(|flow| flow.id);
        api::Flows {
            flows,
            bypassing_connections: None,
        }
    }
}
