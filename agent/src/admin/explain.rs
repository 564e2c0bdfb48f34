//! `POST /explain`: evaluates a hypothetical request against the route
//! snapshot in force and says, step by step, where it would go and why,
//! without disturbing anything (the round-robin cursor is only peeked).

use super::api::{ExplainRequest, Explanation};
use crate::{
    http::routing_key::RoutingKeys,
    routes::{Decision, Pick, Reason, RouteSnapshot},
};

pub fn explain(
    snapshot: &RouteSnapshot,
    keys: &RoutingKeys,
    request: &ExplainRequest,
) -> Result<Explanation, String> {
    let service = snapshot.service_named(&request.service).ok_or_else(|| {
        format!(
            "service {} is not steered: no sandbox forks it (see `detour routes`)",
            request.service
        )
    })?;
    let ports: Vec<u16> = snapshot
        .destinations
        .iter()
        .filter(|(_, d)| d.service_id == service.id)
        .map(|(addr, _)| addr.port())
        .collect();
    let port = match request.port {
        Some(port) => port,
        None => ports.iter().copied().min().unwrap_or(0),
    };
    let mut steps = vec![format!(
        "service {} is steered at {} destination(s); evaluating destination port {port}",
        service.label,
        ports.len()
    )];

    let mut out = Explanation {
        service: service.label.to_string(),
        port,
        routing_key: None,
        key_source: None,
        matched: None,
        destination: "baseline".into(),
        sandbox: None,
        endpoint: None,
        reason: Reason::NoKey,
        steps: Vec::new(),
        bypassing_connections: None,
    };
    let Some((key, origin)) =
        keys.explain_request(request.path.as_deref().map(str::as_bytes), || {
            request
                .headers
                .iter()
                .map(|(name, value)| (name.as_bytes(), value.as_bytes()))
        })
    else {
        let names: Vec<&str> = keys.names().collect();
        steps.push(format!(
            "no routing key: looked for {names:?} in baggage, tracestate, uberctx-*, ot-baggage-*{}",
            custom_headers(keys)
        ));
        steps.push("-> baseline: the original destination the client asked for".into());
        out.steps = steps;
        return Ok(out);
    };
    steps.push(format!("routing key {key:?} from {origin}"));
    out.routing_key = Some(key.clone());
    out.key_source = Some(origin);

    // The same decision as a request's, with the round-robin cursor only peeked.
    let decision = snapshot.decide_with(service.id, port, Some(&key), Pick::Peek);
    out.reason = decision.reason();
    let owner = snapshot
        .sandbox_keys
        .get(&key)
        .map(|sandbox| format!("sandbox {sandbox}"))
        .or_else(|| {
            snapshot
                .group_keys
                .get(&key)
                .map(|group| format!("route group {group}"))
        });
    let Some(owner) = owner else {
        steps.push(format!("no sandbox or route group has key {key:?}"));
        steps.push("-> baseline".into());
        out.steps = steps;
        return Ok(out);
    };
    steps.push(format!("key {key:?} belongs to {owner}"));
    out.matched = Some(owner.clone());
    let Some(sandbox) = decision.matched_sandbox() else {
        steps.push(format!("{owner} does not fork {}", service.label));
        steps.push("-> baseline".into());
        out.steps = steps;
        return Ok(out);
    };
    steps.push(format!("sandbox {sandbox} forks {}", service.label));
    out.sandbox = Some(sandbox.to_string());
    match &decision {
        Decision::Fork { sandbox, endpoint } => {
            let endpoints = snapshot
                .fork_target(&key, service.id)
                .map(|target| target.peek(port).0.to_vec())
                .unwrap_or_default();
            steps.push(format!(
                "fork endpoints for port {port}: {endpoints:?} (round robin)"
            ));
            steps.push(format!("-> sandbox {sandbox}: endpoint {endpoint}"));
            out.destination = "sandbox".into();
            out.endpoint = Some(*endpoint);
        }
        Decision::ForkNotReady { .. } | Decision::Baseline { .. } => {
            steps.push(format!("the fork has no ready endpoint for port {port}"));
            steps.push("-> baseline (counted in detour_fallbacks_total)".into());
        }
    }
    out.steps = steps;
    Ok(out)
}

fn custom_headers(keys: &RoutingKeys) -> String {
    let custom: Vec<&str> = keys.custom_headers().collect();
    let browser = keys.browser_sources();
    let mut out = String::new();
    if !custom.is_empty() {
        out.push_str(&format!(" and headers {custom:?}"));
    }
    if !browser.query_params.is_empty() {
        out.push_str(&format!(", query parameters {:?}", browser.query_params));
    }
    if !browser.cookies.is_empty() {
        out.push_str(&format!(", cookies {:?}", browser.cookies));
    }
    out
}
