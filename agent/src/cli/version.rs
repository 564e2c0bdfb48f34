//! `detour version`: this binary's version and, when it can be reached, the
//! running agent's (they can differ during a rolling upgrade). An agent
//! that cannot be reached is reported, not an error: the CLI's own version
//! is always known.

use clap::Args;
use serde::{Deserialize, Serialize};

use super::{
    client::Client,
    output::{self, Global},
    table,
};
use crate::admin::api;

/// Show the CLI's and the running agent's versions
///
/// Examples:
///   detour version
///   detour version -o json | jq -r .agent.version
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct VersionArgs {}

/// `detour version -o json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versions {
    pub client: ClientVersion,
    /// `null` when the agent cannot be reached (see `agent_error`).
    pub agent: Option<AgentVersion>,
    pub agent_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientVersion {
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentVersion {
    pub version: String,
    pub pid: u32,
    pub uptime_seconds: u64,
    pub socket: String,
}

pub fn run(_args: &VersionArgs, global: &Global) -> anyhow::Result<()> {
    let status: Result<api::Status, _> = Client::new(global.socket.clone())?.get("/status");
    let (agent, agent_error) = match status {
        Ok(status) => (
            Some(AgentVersion {
                version: status.version,
                pid: status.pid,
                uptime_seconds: status.uptime_seconds,
                socket: global.socket.display().to_string(),
            }),
            None,
        ),
        Err(error) => (None, Some(error.to_string())),
    };
    let versions = Versions {
        client: ClientVersion {
            version: env!("CARGO_PKG_VERSION").to_owned(),
        },
        agent,
        agent_error,
    };
    output::print(global.output, &versions, render)
}

pub fn render(versions: &Versions) -> String {
    let agent = match (&versions.agent, &versions.agent_error) {
        (Some(agent), _) => format!(
            "{} (pid {}, up {}, {})",
            agent.version,
            agent.pid,
            table::duration(agent.uptime_seconds),
            agent.socket
        ),
        (None, Some(error)) => format!("unknown: {error}"),
        (None, None) => "unknown".to_owned(),
    };
    table::fields(&[
        ("Client", versions.client.version.clone()),
        ("Agent", agent),
    ])
}
