//! The flow record of a parked connection, held by value.
//!
//! A live connection's record is an `Arc<Flow>` that its task updates on
//! every request. An idle HTTP/1 connection that the proxy parks
//! (`proxy::http1::parking`) has no task and no request to record, so its
//! record moves into the table of parked flows: one slot of a slab, with the
//! last routing key inline. Nothing of a parked connection stays on the heap
//! on its own. That matters for memory as much as the bytes do: a small
//! allocation left behind by each parked connection would pin the heap pages
//! its task freed, and they could not go back to the OS.
//!
//! When the connection's next request comes, the record moves back to a live
//! [`Flow`] with the same id (`ParkedFlowGuard::resume`), so `detour flows`
//! shows one connection from its first request to its last.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError, atomic::AtomicU64},
    time::Instant,
};

use super::flow::{Flow, FlowView, Routing};
use crate::routes::{Reason, Route};

/// A parked connection's flow: what `detour flows` shows of it.
#[derive(Debug)]
pub(super) struct ParkedFlow {
    id: u64,
    client: SocketAddr,
    original_dst: SocketAddr,
    service: Arc<str>,
    source_sandbox: u32,
    started: Instant,
    protocol: &'static str,
    requests: u64,
    last: Option<ParkedRouting>,
}

/// [`Routing`], with the routing key inline.
#[derive(Debug)]
struct ParkedRouting {
    route: Route,
    routing_key: Option<InlineKey>,
    reason: Reason,
}

impl ParkedRouting {
    fn of(routing: &Routing) -> Self {
        Self {
            route: routing.route.clone(),
            routing_key: routing.routing_key.as_deref().map(InlineKey::new),
            reason: routing.reason,
        }
    }

    fn routing(&self) -> Routing {
        Routing {
            route: self.route.clone(),
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
    pub(super) fn of(flow: &Flow) -> Self {
        Self {
            id: flow.id,
            client: flow.client,
            original_dst: flow.original_dst,
            service: Arc::clone(&flow.service),
            source_sandbox: flow.source_sandbox,
            started: flow.started,
            protocol: flow.protocol(),
            requests: flow.requests(),
            // Read in place: the key goes inline, never through a copy.
            last: flow
                .last
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
                .map(ParkedRouting::of),
        }
    }

    pub(super) fn into_live(self) -> Flow {
        Flow {
            id: self.id,
            client: self.client,
            original_dst: self.original_dst,
            service: self.service,
            source_sandbox: self.source_sandbox,
            started: self.started,
            protocol: Mutex::new(self.protocol),
            requests: AtomicU64::new(self.requests),
            live_streams: AtomicU64::new(0),
            last: Mutex::new(self.last.as_ref().map(ParkedRouting::routing)),
        }
    }

    pub(super) fn view(&self) -> FlowView {
        FlowView {
            id: self.id,
            client: self.client,
            original_dst: self.original_dst,
            service: Arc::clone(&self.service),
            protocol: self.protocol,
            requests: self.requests,
            live_streams: 0,
            age: self.started.elapsed(),
            last: self.last.as_ref().map(ParkedRouting::routing),
            parked: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
