//! `detour status`: is the agent up, attached, synced, and how full are
//! its maps. Asks the agent (`GET /status`).

use clap::Args;

use super::{
    client::Client,
    output::{self, Global},
    table::{self, Table},
};
use crate::admin::api;

/// Show the agent: attached programs, cgroup, route source, map sizes, uptime
///
/// Also: the proxy addresses, whether the agent is ready, live flows, where
/// the maps are pinned, the fork pods on this node, and route problems:
/// objects the route source ignored, steered destinations the STEERED map
/// could not hold, fork pods not attached.
///
/// Examples:
///   detour status
///   detour status -o json | jq .route_source.synced
///   detour --socket /tmp/detour.sock status
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct StatusArgs {}

pub fn run(_args: &StatusArgs, global: &Global) -> anyhow::Result<()> {
    let status: api::Status = Client::new(global.socket.clone())?.get("/status")?;
    output::print(global.output, &status, render)
}

pub fn render(status: &api::Status) -> String {
    let ready = if status.ready {
        "yes".to_owned()
    } else if !status.route_source.synced {
        "no (waiting for the route source)".to_owned()
    } else {
        "no".to_owned()
    };
    let source = match &status.route_source.path {
        Some(path) => format!("{} {path}", status.route_source.kind),
        None => status.route_source.kind.clone(),
    };
    let synced = if status.route_source.synced {
        "synced"
    } else {
        "not synced"
    };
    let pin_dir = status
        .pin_dir
        .clone()
        .unwrap_or_else(|| "not pinned (--pin-dir none: `detour bpf` cannot read them)".to_owned());
    let mut out = table::fields(&[
        (
            "Agent",
            format!(
                "detour {}, pid {}, up {}",
                status.version,
                status.pid,
                table::duration(status.uptime_seconds)
            ),
        ),
        ("Ready", ready),
        ("Route source", format!("{source} ({synced})")),
        ("Cgroup", cgroup(status)),
        ("Programs", table::list(&status.programs)),
        ("Proxy", table::list(&status.proxy_addrs)),
        ("Live flows", status.flows.to_string()),
        ("Client address", status.client_address.clone()),
        ("Bypassing", bypassing(status.bypassing_connections)),
        ("Pinned maps", pin_dir),
    ]);
    if !status.maps.is_empty() {
        let mut maps = Table::new(&["MAP", "ENTRIES", "MAX"]).right(1).right(2);
        for map in &status.maps {
            maps.row([
                map.name.clone(),
                map.entries.to_string(),
                map.max_entries.to_string(),
            ]);
        }
        out.push('\n');
        out.push_str(&maps.render());
    }
    if !status.fork_pods.is_empty() {
        let mut pods =
            Table::new(&["FORK POD", "SANDBOX", "INHERITS KEY", "KEYLESS FORKS"]).right(3);
        for pod in &status.fork_pods {
            pods.row([
                pod.pod.clone(),
                pod.sandbox.clone(),
                if pod.inherits_key { "yes" } else { "no" }.to_owned(),
                pod.keyless_forks.to_string(),
            ]);
        }
        out.push('\n');
        out.push_str(&pods.render());
    }
    if !status.warnings.is_empty() {
        out.push_str("\nWarnings:\n");
        for warning in &status.warnings {
            out.push_str(&table::wrap("  - ", 4, warning));
        }
    }
    if !status.route_source.problems.is_empty() {
        out.push_str("\nRoute problems (not applied; everything else is in force):\n");
        for problem in &status.route_source.problems {
            out.push_str(&table::wrap("  - ", 4, problem));
        }
    }
    out
}

/// The cgroup line of `status`: the path, and why it was chosen.
fn cgroup(status: &api::Status) -> String {
    if status.cgroup_reason.is_empty() {
        status.cgroup.clone()
    } else {
        format!("{} ({})", status.cgroup, status.cgroup_reason)
    }
}

/// The bypassing-connections line of `status`.
pub fn bypassing(count: Option<u64>) -> String {
    match count {
        None => "unknown (see Warnings)".to_owned(),
        Some(0) => "0 connections to steered destinations bypass the proxy".to_owned(),
        Some(n) => format!(
            "{n} connection(s) to steered destinations bypass the proxy (opened before steering \
             or while no agent ran; being closed, see detour_stale_connections_closed_total)"
        ),
    }
}
