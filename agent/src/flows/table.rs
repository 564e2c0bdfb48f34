//! The table of live flows (by id) and parked flows (by value, in a slab),
//! with the guards that keep a connection's entry exactly as long as the
//! connection.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use slab::Slab;
use tokio::sync::broadcast;

use super::{
    flow::{Flow, FlowView, Routing},
    parked::ParkedFlow,
    trace::{TraceEvent, TraceFeed},
};

/// Every connection the proxy holds, and the trace feed of its requests.
#[derive(Debug)]
pub struct FlowTable {
    live: Mutex<HashMap<u64, Arc<Flow>>>,
    /// The flows of parked connections, by value (see `flows::parked`).
    parked: Mutex<Slab<ParkedFlow>>,
    next_id: AtomicU64,
    trace: TraceFeed,
}

impl Default for FlowTable {
    fn default() -> Self {
        Self {
            live: Mutex::new(HashMap::new()),
            parked: Mutex::new(Slab::new()),
            next_id: AtomicU64::new(1),
            trace: TraceFeed::default(),
        }
    }
}

/// A live connection's entry; removed when this is dropped.
pub struct FlowGuard {
    table: Arc<FlowTable>,
    pub flow: Arc<Flow>,
}

impl Drop for FlowGuard {
    fn drop(&mut self) {
        self.table.live().remove(&self.flow.id);
    }
}

/// A parked connection's entry; removed when this is dropped (the
/// connection closed while parked), or back to a live flow with
/// [`ParkedFlowGuard::resume`].
#[derive(Debug)]
pub struct ParkedFlowGuard {
    table: Arc<FlowTable>,
    key: usize,
}

impl FlowTable {
    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Flow>>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn parked(&self) -> std::sync::MutexGuard<'_, Slab<ParkedFlow>> {
        self.parked.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a connection.
    pub fn open(
        self: &Arc<Self>,
        client: SocketAddr,
        original_dst: SocketAddr,
        service: Arc<str>,
        source_sandbox: u32,
    ) -> FlowGuard {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let flow = Arc::new(Flow::new(id, client, original_dst, service, source_sandbox));
        self.live().insert(id, Arc::clone(&flow));
        FlowGuard {
            table: Arc::clone(self),
            flow,
        }
    }

    /// Records a routed request of `flow`; `method` names it for the trace.
    pub fn routed(&self, flow: &Flow, method: &str, routing: Routing) {
        self.trace.publish(flow, method, &routing);
        flow.record(routing);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<TraceEvent>> {
        self.trace.subscribe()
    }

    /// Live flows, parked ones included.
    pub fn count(&self) -> u64 {
        let live = self.live().len();
        (live + self.parked().len()) as u64
    }

    /// Every live flow, parked ones included, oldest first.
    pub fn flows(&self) -> Vec<FlowView> {
        let live: Vec<Arc<Flow>> = self.live().values().cloned().collect();
        let mut flows: Vec<FlowView> = live.iter().map(|flow| flow.view()).collect();
        flows.extend(self.parked().iter().map(|(_, parked)| parked.view()));
        // A flow being parked or resumed is briefly in both: list it once.
        flows.sort_by_key(|flow| flow.id);
        flows.dedup_by_key(|flow| flow.id);
        flows
    }

    /// Parks a live flow: its record moves into the table of parked flows.
    pub fn park(self: &Arc<Self>, live: FlowGuard) -> ParkedFlowGuard {
        let key = self.parked().insert(ParkedFlow::of(&live.flow));
        // Listed in both tables for a moment (`flows` lists it once).
        drop(live);
        ParkedFlowGuard {
            table: Arc::clone(self),
            key,
        }
    }
}

impl ParkedFlowGuard {
    /// `key` once the record has been resumed.
    const RESUMED: usize = usize::MAX;

    /// The connection has a request again: its record becomes a live flow,
    /// with the same id, counters and last routing.
    pub fn resume(mut self) -> FlowGuard {
        let key = std::mem::replace(&mut self.key, Self::RESUMED);
        let parked = self
            .table
            .parked()
            .try_remove(key)
            .expect("a parked flow's record is removed only by its guard");
        let flow = Arc::new(parked.into_live());
        self.table.live().insert(flow.id, Arc::clone(&flow));
        FlowGuard {
            table: Arc::clone(&self.table),
            flow,
        }
    }
}

impl Drop for ParkedFlowGuard {
    fn drop(&mut self) {
        if self.key != Self::RESUMED {
            self.table.parked().try_remove(self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::{Reason, Route};

    /// A table with one live flow.
    fn one_flow() -> (Arc<FlowTable>, FlowGuard) {
        let table = Arc::new(FlowTable::default());
        let live = table.open(
            "10.0.0.2:4000".parse().expect("addr"),
            "10.96.0.10:8080".parse().expect("addr"),
            Arc::from("default/reviews"),
            0,
        );
        (table, live)
    }

    #[test]
    fn a_parked_flow_resumes_with_its_id_counters_and_last_routing() {
        let (table, live) = one_flow();
        live.flow.set_protocol("http1");
        table.routed(
            &live.flow,
            "GET",
            Routing {
                route: Route {
                    endpoint: "10.244.1.5:8080".parse().expect("addr"),
                    sandbox: Some(Arc::from("feature-x")),
                },
                routing_key: Some("feature-x".to_owned()),
                reason: Reason::Fork,
            },
        );
        let id = live.flow.id;
        let parked = table.park(live);
        let listed = table.flows();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].parked);
        assert_eq!(table.count(), 1);

        let resumed = parked.resume();
        assert_eq!(resumed.flow.id, id);
        let listed = table.flows();
        assert_eq!(listed.len(), 1);
        let flow = &listed[0];
        assert!(!flow.parked);
        assert_eq!((flow.id, flow.requests), (id, 1));
        assert_eq!(flow.protocol, "http1");
        let last = flow.last.as_ref().expect("last routing");
        assert_eq!(last.routing_key.as_deref(), Some("feature-x"));
        assert_eq!(last.route.sandbox.as_deref(), Some("feature-x"));

        drop(resumed);
        assert_eq!(table.count(), 0);
    }

    #[test]
    fn a_parked_flow_dropped_while_parked_leaves_no_record() {
        let (table, live) = one_flow();
        drop(table.park(live));
        assert_eq!(table.count(), 0);
        assert!(table.flows().is_empty());
    }

    #[test]
    fn a_trace_subscriber_sees_each_routed_request() {
        let (table, live) = one_flow();
        let mut events = table.subscribe();
        let routing = Routing {
            route: Route {
                endpoint: "10.96.0.10:8080".parse().expect("addr"),
                sandbox: None,
            },
            routing_key: None,
            reason: Reason::NoKey,
        };
        table.routed(&live.flow, "GET", routing);
        let event = events.try_recv().expect("one event");
        assert_eq!((event.flow, event.method.as_str()), (live.flow.id, "GET"));
        assert_eq!(event.routing.reason, Reason::NoKey);
    }
}
