//! `detour flows`: the connections the proxy holds right now, and where
//! each one's last request went. Asks the agent (`GET /flows`).

use clap::Args;

use super::{
    client::Client,
    output::{self, Global},
    table::{self, Table},
};
use crate::admin::api;

/// Show live proxied connections and their last routing decision
///
/// For each: client, original destination, service, requests so far (for
/// HTTP/2: streams, and how many are open now; `(parked)`: an idle HTTP/1
/// keep-alive connection waiting for its next request in the agent's
/// parking lot, see --park-idle-after), age. ROUTE is the sandbox
/// the last request or stream went to, `baseline`, `-` before the first
/// request, or the protocol in brackets for connections that are spliced
/// rather than routed per request (`(opaque)`).
///
/// Examples:
///   detour flows
///   detour flows -o json | jq '.flows[] | select(.service == "default/reviews")'
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct FlowsArgs {}

pub fn run(_args: &FlowsArgs, global: &Global) -> anyhow::Result<()> {
    let flows: api::Flows = Client::new(global.socket.clone())?.get("/flows")?;
    output::print(global.output, &flows, render)
}

pub fn render(flows: &api::Flows) -> String {
    let mut out = render_flows(flows);
    if let Some(n) = flows.bypassing_connections.filter(|n| *n > 0) {
        out.push_str(&format!(
            "\n{n} connection(s) from the cgroup to steered destinations bypass the proxy \
             (see `detour status`).\n"
        ));
    }
    out
}

fn render_flows(flows: &api::Flows) -> String {
    if flows.flows.is_empty() {
        return "No live proxied connections.\n".to_owned();
    }
    let mut out = Table::new(&["CLIENT", "ORIGINAL DST", "SERVICE", "REQS", "AGE", "ROUTE"])
        .right(3)
        .right(4);
    for flow in &flows.flows {
        out.row([
            flow.client.to_string(),
            flow.original_dst.to_string(),
            flow.service.clone(),
            requests(flow),
            table::age(flow.age_seconds),
            route(flow),
        ]);
    }
    out.render()
}

/// Requests so far; for HTTP/2, streams so far and open now.
fn requests(flow: &api::Flow) -> String {
    if flow.protocol == "h2" {
        format!("{} ({} live)", flow.requests, flow.live_streams)
    } else if flow.parked {
        format!("{} (parked)", flow.requests)
    } else {
        flow.requests.to_string()
    }
}

fn route(flow: &api::Flow) -> String {
    match (&flow.last_decision, flow.protocol.as_str()) {
        (Some(decision), _) => decision
            .sandbox
            .clone()
            .unwrap_or_else(|| decision.destination.clone()),
        (None, "http1" | "h2" | "detecting") => "-".to_owned(),
        (None, protocol) => format!("({protocol})"),
    }
}
