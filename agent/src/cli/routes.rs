//! `detour routes`: the route state in force: steered services and their
//! destinations, sandboxes with their forks and endpoints, route groups.
//! Asks the agent (`GET /routes`), which filters by key and service.

use clap::Args;

use super::{
    client::{self, Client},
    output::{self, Failure, Global},
    table::{self, Table},
};
use crate::admin::api;

/// Show steered services, sandboxes, forks and endpoints
///
/// The route state the agent applies now, route groups included. A fork
/// with no ready endpoint is shown `READY no`: requests for it fall back to
/// baseline. PORT `*` means the endpoints serve every port.
///
/// Examples:
///   detour routes
///   detour routes --key feature-x
///   detour routes --service default/reviews -o json
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct RoutesArgs {
    /// Only the sandbox or route group with this routing key.
    #[arg(long, value_name = "KEY")]
    key: Option<String>,

    /// Only this service: `namespace/name`, or `name` in `default`.
    #[arg(long, value_name = "NS/NAME")]
    service: Option<String>,
}

pub fn run(args: &RoutesArgs, global: &Global) -> anyhow::Result<()> {
    let service = args.service.as_deref().map(output::service_name);
    let path = client::with_query(
        "/routes",
        &[
            ("key", args.key.as_deref()),
            ("service", service.as_deref()),
        ],
    );
    let routes: api::Routes = Client::new(global.socket.clone())?.get(&path)?;
    if let Some(service) = &service
        && routes.services.is_empty()
    {
        return Err(Failure::not_found(format!(
            "service {service} is not steered: no sandbox forks it (see `detour routes`)"
        )));
    }
    if let Some(key) = &args.key
        && routes.sandboxes.is_empty()
        && routes.route_groups.is_empty()
    {
        let scope = service.map(|s| format!(" forking {s}")).unwrap_or_default();
        return Err(Failure::not_found(format!(
            "no sandbox or route group{scope} has routing key {key:?} (see `detour routes`)"
        )));
    }
    output::print(global.output, &routes, render)
}

pub fn render(routes: &api::Routes) -> String {
    let mut sections = Vec::new();

    let mut services = Table::new(&["SERVICE", "DESTINATION", "PROTOCOL"]);
    for service in &routes.services {
        if service.destinations.is_empty() {
            services.row([service.service.as_str(), "-", ""]);
        }
        for (index, destination) in service.destinations.iter().enumerate() {
            let name = if index == 0 {
                service.service.as_str()
            } else {
                ""
            };
            services.row([
                name.to_owned(),
                destination.address.to_string(),
                destination.protocol.clone(),
            ]);
        }
    }
    if !services.is_empty() {
        sections.push(services.render());
    }

    let mut sandboxes = Table::new(&["SANDBOX", "KEY", "SERVICE", "PORT", "ENDPOINT", "READY"]);
    for sandbox in &routes.sandboxes {
        let mut rows = Vec::new();
        for fork in &sandbox.forks {
            let mut endpoints: Vec<(String, String)> = fork
                .endpoints
                .iter()
                .map(|e| ("*".to_owned(), e.to_string()))
                .collect();
            for port in &fork.by_port {
                endpoints.extend(
                    port.endpoints
                        .iter()
                        .map(|e| (port.port.to_string(), e.to_string())),
                );
            }
            if endpoints.is_empty() {
                endpoints.push(("*".to_owned(), "-".to_owned()));
            }
            for (index, (port, endpoint)) in endpoints.into_iter().enumerate() {
                let first = index == 0;
                rows.push([
                    if first {
                        fork.service.clone()
                    } else {
                        String::new()
                    },
                    port,
                    endpoint,
                    if first {
                        table::yes_no(fork.ready).to_owned()
                    } else {
                        String::new()
                    },
                ]);
            }
        }
        if rows.is_empty() {
            rows.push(["-".to_owned(), String::new(), String::new(), String::new()]);
        }
        for (index, [service, port, endpoint, ready]) in rows.into_iter().enumerate() {
            let (name, key) = if index == 0 {
                (sandbox.sandbox.clone(), sandbox.routing_key.clone())
            } else {
                (String::new(), String::new())
            };
            sandboxes.row([name, key, service, port, endpoint, ready]);
        }
    }
    if !sandboxes.is_empty() {
        sections.push(sandboxes.render());
    }

    let mut groups = Table::new(&["ROUTE GROUP", "KEY", "SANDBOXES"]);
    for group in &routes.route_groups {
        groups.row([
            group.route_group.clone(),
            group.routing_key.clone(),
            table::list(&group.sandboxes),
        ]);
    }
    if !groups.is_empty() {
        sections.push(groups.render());
    }

    if sections.is_empty() {
        "No routes: no service is steered.\n".to_owned()
    } else {
        sections.join("\n")
    }
}
