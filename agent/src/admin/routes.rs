//! `GET /routes`: the route snapshot as the admin API shows it, every list
//! sorted so that output is stable, optionally filtered by key or service.

use std::collections::BTreeSet;

use super::api;
use crate::routes::{Protocol, RouteSnapshot};

pub fn protocol_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Http => "http",
        Protocol::H2c => "h2c",
        Protocol::Tcp => "tcp",
        Protocol::Kafka => "kafka",
        Protocol::Auto => "auto",
    }
}

/// The snapshot, keeping only routes for `key` and/or `service` if given.
pub fn routes(snapshot: &RouteSnapshot, key: Option<&str>, service: Option<&str>) -> api::Routes {
    let keep_service = |label: &str| service.is_none_or(|s| s == label);
    let keep_key = |k: &str| key.is_none_or(|wanted| wanted == k);

    let services = snapshot
        .services
        .values()
        .filter(|s| keep_service(&s.label))
        .map(|s| {
            let destinations = snapshot
                .destinations
                .iter()
                .filter(|(_, d)| d.service_id == s.id)
                .map(|(address, d)| api::Destination {
                    address: *address,
                    protocol: protocol_name(d.protocol).into(),
                })
                .collect();
            api::ServiceRoutes {
                service: s.label.to_string(),
                destinations,
            }
        })
        .collect::<BTreeSet<_>>();

    let mut sandboxes = Vec::new();
    for (routing_key, sandbox) in &snapshot.sandbox_keys {
        if !keep_key(routing_key) {
            continue;
        }
        let mut forks: Vec<api::ForkRoutes> = snapshot
            .routes
            .get(routing_key)
            .into_iter()
            .flatten()
            .filter_map(|(id, target)| {
                let label = snapshot.service(*id)?.label.to_string();
                keep_service(&label).then(|| {
                    let by_port: Vec<api::PortEndpoints> = target
                        .by_port
                        .iter()
                        .map(|(port, endpoints)| api::PortEndpoints {
                            port: *port,
                            endpoints: endpoints.clone(),
                        })
                        .collect();
                    let ready = !target.endpoints.is_empty()
                        || by_port.iter().any(|p| !p.endpoints.is_empty());
                    api::ForkRoutes {
                        service: label,
                        endpoints: target.endpoints.clone(),
                        by_port,
                        ready,
                    }
                })
            })
            .collect();
        forks.sort_by(|a, b| a.service.cmp(&b.service));
        if service.is_some() && forks.is_empty() {
            continue;
        }
        sandboxes.push(api::SandboxRoutes {
            sandbox: sandbox.clone(),
            routing_key: routing_key.clone(),
            forks,
        });
    }
    sandboxes.sort_by(|a, b| a.sandbox.cmp(&b.sandbox));

    let route_groups = snapshot
        .group_keys
        .iter()
        .filter(|(k, _)| keep_key(k))
        .map(|(routing_key, group)| api::GroupRoutes {
            route_group: group.clone(),
            routing_key: routing_key.clone(),
            sandboxes: snapshot
                .route_groups
                .get(group)
                .cloned()
                .unwrap_or_default(),
        })
        .collect();
    api::Routes {
        services: services.into_iter().collect(),
        sandboxes,
        route_groups,
    }
}
