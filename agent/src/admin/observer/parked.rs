//! The flow record of a parked connection, held by value.
//!
//! A live connection's record is an `Arc<FlowState>` that its task updates
//! on every request. An idle HTTP/1 connection that the proxy parks
//! (`proxy::http1::parking`) has no task and no request to record, so its
//! record moves into the observer's table of parked flows: one slot of a
//! slab, with the last routing key inline. Nothing of a parked connection
//! stays on the heap on its own. That matters for memory as much as the
//! bytes do: a small allocation left behind by each parked connection would
//! pin the heap pages its task freed, and they could not go back to the OS.
//!
//! When the connection's next request comes, [`ParkedFlowGuard::resume`]
//! moves the record back to a live `FlowState` with the same id, so `detour
//! flows` shows one connection from its first request to its last.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use super::{Decided, FlowGuard, FlowState, Observer, api};
use crate::routes::Reason;

/// A parked connection's flow: what `detour flows` shows of it.
#[derive(Debug)]
pub(super) struct ParkedFlow {
    id: u64,
    client: SocketAddr,
    original_dst: SocketAddr,
    service: Arc<str>,
    started: Instant,
    protocol: &'static str,
    requests: u64,
    last: Option<ParkedDecision>,
}

/// [`Decided`], with the routing key inline.
#[derive(Debug)]
struct ParkedDecision {
    sandbox: Option<Arc<str>>,
    endpoint: SocketAddr,
    routing_key: Option<InlineKey>,
    reason: Reason,
}

impl ParkedDecision {
    fn decided(&self) -> Decided {
        Decided {
            sandbox: self.sandbox.clone(),
            endpoint: self.endpoint,
            routing_key: self.routing_key.map(InlineKey::text),
            reason: self.reason,
        }
    }
}

/// A routing key of at most [`InlineKey::CAPACITY`] bytes; a longer one
/// keeps its first bytes and is shown with a trailing `…`.
#[derive(Debug, Clone, Copy)]
struct InlineKey {
    len: u8,
    truncated: bool,
    bytes: [u8; Self::CAPACITY],
}

impl InlineKey {
    const CAPACITY: usize = 62;

    fn new(key: &str) -> Self {
        let mut len = key.len().min(Self::CAPACITY);
        while !key.is_char_boundary(len) {
            len -= 1;
        }
        let mut bytes = [0; Self::CAPACITY];
        bytes[..len].copy_from_slice(&key.as_bytes()[..len]);
        Self {
            len: len as u8,
            truncated: len < key.len(),
            bytes,
        }
    }

    fn text(self) -> String {
        let kept = std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default();
        if self.truncated {
            format!("{kept}…")
        } else {
            kept.to_owned()
        }
    }
}

impl ParkedFlow {
    fn of(flow: &FlowState) -> Self {
        let last = flow.last.lock().unwrap_or_else(PoisonError::into_inner);
        Self {
            id: flow.id,
            client: flow.client,
            original_dst: flow.original_dst,
            service: Arc::clone(&flow.service),
            started: flow.started,
            protocol: *flow.protocol.lock().unwrap_or_else(PoisonError::into_inner),
            requests: flow.requests.load(Ordering::Relaxed),
            last: last.as_ref().map(|decided| ParkedDecision {
                sandbox: decided.sandbox.clone(),
                endpoint: decided.endpoint,
                routing_key: decided.routing_key.as_deref().map(InlineKey::new),
                reason: decided.reason,
            }),
        }
    }

    fn into_live(self) -> FlowState {
        FlowState {
            id: self.id,
            client: self.client,
            original_dst: self.original_dst,
            service: self.service,
            started: self.started,
            protocol: Mutex::new(self.protocol),
            requests: AtomicU64::new(self.requests),
            live_streams: AtomicU64::new(0),
            last: Mutex::new(self.last.as_ref().map(ParkedDecision::decided)),
        }
    }

    pub(super) fn to_api(&self) -> api::Flow {
        api::Flow {
            id: self.id,
            client: self.client,
            original_dst: self.original_dst,
            service: self.service.to_string(),
            protocol: self.protocol.to_owned(),
            requests: self.requests,
            live_streams: 0,
            age_seconds: self.started.elapsed().as_secs_f64(),
            last_decision: self.last.as_ref().map(|last| last.decided().to_api()),
            parked: true,
        }
    }
}

/// A parked connection's place in `detour flows`; the record goes when this
/// is dropped (the connection closed while parked), or back to a live flow
/// with [`ParkedFlowGuard::resume`].
#[derive(Debug)]
pub struct ParkedFlowGuard {
    observer: Arc<Observer>,
    key: usize,
}

impl Observer {
    /// Parks a live flow: its record moves into the table of parked flows.
    pub fn park(self: &Arc<Self>, live: FlowGuard) -> ParkedFlowGuard {
        let parked = ParkedFlow::of(&live.flow);
        let key = self
            .parked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(parked);
        // Listed in both tables for a moment (`flows` lists it once).
        drop(live);
        ParkedFlowGuard {
            observer: Arc::clone(self),
            key,
        }
    }
}

impl ParkedFlowGuard {
    /// `key` once the record has been resumed.
    const RESUMED: usize = usize::MAX;

    /// The connection has a request again: its record becomes a live flow,
    /// with the same id, counters and last decision.
    pub fn resume(mut self) -> FlowGuard {
        let key = std::mem::replace(&mut self.key, Self::RESUMED);
        let parked = self
            .observer
            .parked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .try_remove(key)
            .expect("a parked flow's record is removed only by its guard");
        let flow = Arc::new(parked.into_live());
        self.observer
            .flows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(flow.id, Arc::clone(&flow));
        FlowGuard {
            observer: Arc::clone(&self.observer),
            flow,
        }
    }
}

impl Drop for ParkedFlowGuard {
    fn drop(&mut self) {
        if self.key != Self::RESUMED {
            self.observer
                .parked
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .try_remove(self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An observer with one live flow.
    fn one_flow() -> (Arc<Observer>, FlowGuard) {
        let observer = Arc::new(Observer::default());
        let live = observer.open(
            "10.0.0.2:4000".parse().expect("addr"),
            "10.96.0.10:8080".parse().expect("addr"),
            Arc::from("default/reviews"),
        );
        (observer, live)
    }

    #[test]
    fn a_parked_flow_record_fits_in_a_quarter_kilobyte() {
        assert!(
            size_of::<ParkedFlow>() <= 256,
            "{} bytes",
            size_of::<ParkedFlow>()
        );
    }

    #[test]
    fn a_routing_key_is_kept_inline_whole_when_it_fits() {
        assert_eq!(InlineKey::new("feature-x").text(), "feature-x");
        let longest = "k".repeat(InlineKey::CAPACITY);
        assert_eq!(InlineKey::new(&longest).text(), longest);
        assert_eq!(InlineKey::new("").text(), "");
    }

    #[test]
    fn a_longer_routing_key_keeps_its_first_bytes_and_shows_it_was_cut() {
        let long = "k".repeat(100);
        let kept = InlineKey::new(&long).text();
        assert_eq!(kept, format!("{}…", "k".repeat(InlineKey::CAPACITY)));
        // Cut at a character boundary, never inside a character.
        // (62 bytes would end inside the 31st two-byte "é".)
        let wide = format!("a{}", "é".repeat(40));
        let kept = InlineKey::new(&wide).text();
        assert_eq!(kept, format!("a{}…", "é".repeat(30)));
    }

    #[test]
    fn a_parked_flow_resumes_with_its_id_counters_and_last_decision() {
        let (observer, live) = one_flow();
        live.flow.set_protocol("http1");
        observer.decided(
            &live.flow,
            "GET",
            Decided {
                sandbox: Some(Arc::from("feature-x")),
                endpoint: "10.244.1.5:8080".parse().expect("addr"),
                routing_key: Some("feature-x".to_owned()),
                reason: Reason::Fork,
            },
        );
        let id = live.flow.id;
        let parked = observer.park(live);
        let listed = observer.flows().flows;
        assert_eq!(listed.len(), 1);
        assert!(listed[0].parked);
        assert_eq!(observer.count(), 1);

        let resumed = parked.resume();
        assert_eq!(resumed.flow.id, id);
        let listed = observer.flows().flows;
        assert_eq!(listed.len(), 1);
        let flow = &listed[0];
        assert!(!flow.parked);
        assert_eq!((flow.id, flow.requests), (id, 1));
        assert_eq!(flow.protocol, "http1");
        let last = flow.last_decision.as_ref().expect("last decision");
        assert_eq!(last.routing_key.as_deref(), Some("feature-x"));
        assert_eq!(last.sandbox.as_deref(), Some("feature-x"));

        drop(resumed);
        assert_eq!(observer.count(), 0);
    }

    #[test]
    fn a_parked_flow_dropped_while_parked_leaves_no_record() {
        let (observer, live) = one_flow();
        drop(observer.park(live));
        assert_eq!(observer.count(), 0);
        assert!(observer.flows().flows.is_empty());
    }
}
