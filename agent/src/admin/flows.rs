//! `GET /flows` and `GET /trace`: the flow table and its trace feed in the
//! admin API's wire types.

use std::time::UNIX_EPOCH;

use super::api;
use crate::flows::{FlowTable, FlowView, Routing, TraceEvent};

/// Every live flow, parked ones included, oldest first.
pub fn flows(table: &FlowTable) -> api::Flows {
    api::Flows {
        flows: table.flows().iter().map(flow).collect(),
        bypassing_connections: None,
    }
}

fn flow(view: &FlowView) -> api::Flow {
    api::Flow {
        id: view.id,
        client: view.client,
        original_dst: view.original_dst,
        service: view.service.to_string(),
        protocol: view.protocol.to_owned(),
        requests: view.requests,
        live_streams: view.live_streams,
        age_seconds: view.age.as_secs_f64(),
        last_decision: view.last.as_ref().map(routing),
        parked: view.parked,
    }
}

fn routing(routing: &Routing) -> api::Routing {
    let sandbox = routing.route.sandbox.as_deref();
    api::Routing {
        destination: if sandbox.is_some() {
            "sandbox"
        } else {
            "baseline"
        }
        .to_owned(),
        sandbox: sandbox.map(str::to_owned),
        endpoint: routing.route.endpoint,
        routing_key: routing.routing_key.clone(),
        reason: routing.reason,
    }
}

/// Whether `event` passes `detour trace`'s filters.
pub fn wanted(event: &TraceEvent, key: Option<&str>, service: Option<&str>) -> bool {
    key.is_none_or(|k| event.routing.routing_key.as_deref() == Some(k))
        && service.is_none_or(|s| &*event.service == s)
}

/// One line of `GET /trace`.
pub fn trace_event(event: &TraceEvent) -> api::TraceEvent {
    api::TraceEvent {
        time: event
            .time
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
        flow: event.flow,
        client: event.client,
        service: event.service.to_string(),
        method: event.method.clone(),
        routing: routing(&event.routing),
    }
}
