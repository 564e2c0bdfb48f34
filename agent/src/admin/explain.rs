//! `POST /explain`: evaluates a hypothetical request against the route
//! snapshot in force and says, step by step, where it would go and why,
//! without disturbing anything (the round-robin cursor is only peeked).

use super::api::{ExplainRequest, Explanation};
use detour_common::{NO_FORK_ENDPOINT, SockKey};

use crate::{
    http::routing_key::RoutingKeys,
    routes::{Decision, ForkPod, ForkPods, Pick, Protocol, Reason, RouteSnapshot},
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
    let fork_pod = match &request.from {
        Some(from) => {
            let found = fork_pod_named(snapshot, from);
            match &found {
                Some((sandbox, _)) => {
                    steps.push(format!("{from} is a fork pod of sandbox {sandbox}"))
                }
                None => steps.push(format!(
                    "{from} is not a fork pod on this node: its requests are anyone's"
                )),
            }
            found
        }
        None => None,
    };
    if let Some((sandbox, pods)) = fork_pod
        && let Some(endpoint) = keyless_fork(snapshot, service.id, port, pods)
    {
        steps.push(format!(
            "port {port} is keyless (tcp) and sandbox {sandbox} forks it: decided at connect(), \
             no proxy"
        ));
        out.sandbox = Some(sandbox.to_string());
        out.reason = Reason::Fork;
        match endpoint {
            Some(endpoint) => {
                steps.push(format!("-> sandbox {sandbox}: endpoint {endpoint}"));
                out.destination = "sandbox".into();
                out.endpoint = Some(endpoint);
            }
            None => {
                steps.push(
                    "-> refused (EPERM): the fork has no ready endpoint, and a fork's \
                            connect never goes to baseline"
                        .into(),
                );
                out.destination = "refused".into();
            }
        }
        out.steps = steps;
        return Ok(out);
    }
    let keyless = snapshot.destinations.iter().any(|(addr, d)| {
        d.service_id == service.id && addr.port() == port && d.protocol == Protocol::Tcp
    });
    if let Some((sandbox, pods)) = fork_pod
        && keyless
        && pods.fork_of.as_deref() == Some(&*service.label)
    {
        steps.push(format!(
            "it is a pod of sandbox {sandbox}'s fork of {}: its connects to that service's \
             keyless ports reach baseline, so that a fork can seed itself from it",
            service.label
        ));
        steps.push("-> baseline: the original destination the client asked for".into());
        out.steps = steps;
        return Ok(out);
    }
    let found = keys.explain_request(request.path.as_deref().map(str::as_bytes), || {
        request
            .headers
            .iter()
            .map(|(name, value)| (name.as_bytes(), value.as_bytes()))
    });
    let inherited = match (&found, fork_pod) {
        (None, Some((sandbox, pods))) if pods.inherit_as != 0 => {
            snapshot.inherited.get(&pods.inherit_as).map(|i| {
                (
                    i.key.to_string(),
                    format!("inherited from sandbox {sandbox} (no key of its own)"),
                )
            })
        }
        _ => None,
    };
    let Some((key, origin)) = found.or(inherited.clone()) else {
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
    out.reason = match decision.reason() {
        Reason::Fork if inherited.is_some() => Reason::Inherited,
        reason => reason,
    };
    if inherited.is_some() {
        steps.push(format!(
            "the forwarded request gets `baggage: {}`",
            keys.baggage_member(&key)
        ));
    }
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

/// The fork pod `from` names (`namespace/name`, or its cgroup), and its
/// sandbox.
fn fork_pod_named<'a>(snapshot: &'a RouteSnapshot, from: &str) -> Option<(&'a str, &'a ForkPods)> {
    snapshot.fork_pods.values().find_map(|pods| {
        pods.pods
            .iter()
            .any(|pod| match pod {
                ForkPod::Pod { name, .. } => name == from,
                ForkPod::Cgroup(path) => path.as_os_str() == from,
            })
            .then_some((&*pods.sandbox, pods))
    })
}

/// Where a fork pod's connect to the service at `port` goes when its
/// sandbox forks that destination keylessly: `Some(Some(endpoint))`, or
/// `Some(None)`: refused (no ready endpoint). `None`: not keyless-forked.
fn keyless_fork(
    snapshot: &RouteSnapshot,
    service_id: u32,
    port: u16,
    pods: &ForkPods,
) -> Option<Option<std::net::SocketAddr>> {
    snapshot
        .destinations
        .iter()
        .filter(|(addr, d)| d.service_id == service_id && addr.port() == port)
        .find_map(|(addr, _)| pods.deps.get(&SockKey::new(*addr)))
        .map(|endpoint| (*endpoint != NO_FORK_ENDPOINT).then(|| endpoint.socket_addr()))
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
