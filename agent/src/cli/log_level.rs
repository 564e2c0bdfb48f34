//! `detour log-level FILTER`: changes the running agent's log filter
//! without a restart (`PUT /log-level`), e.g. to see one line per routing
//! decision for a while.

use clap::Args;
use hyper::Method;

use super::{
    client::Client,
    output::{self, Global},
};
use crate::admin::api;

/// Change the agent's log filter at run time
///
/// The change lasts until the agent restarts. FILTER uses `DETOUR_LOG`'s
/// syntax (tracing's EnvFilter): a level, or comma-separated `target=level`
/// directives. `debug` logs one line per routing decision (the eBPF
/// programs log only if the agent started at debug level).
///
/// Examples:
///   detour log-level debug
///   detour log-level 'info,detour::proxy=debug'
///   detour log-level info
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct LogLevelArgs {
    /// The new filter.
    filter: String,
}

pub fn run(args: &LogLevelArgs, global: &Global) -> anyhow::Result<()> {
    let body = api::LogLevel {
        filter: args.filter.clone(),
    };
    let now: api::LogLevel =
        Client::new(global.socket.clone())?.send(Method::PUT, "/log-level", &body)?;
    output::print(global.output, &now, render)
}

pub fn render(level: &api::LogLevel) -> String {
    format!("Log filter now {:?}.\n", level.filter)
}
