//! `detour trace`: a live stream of routing decisions (`GET /trace`), one
//! line per request the proxy routes, until `--limit` or Ctrl-C.
//!
//! The agent drops the oldest events for a reader that falls behind and
//! says how many (`{"lost": N}`); that is shown in the stream, never hidden.

use std::ops::ControlFlow;

use clap::Args;
use serde::{Deserialize, Serialize};

use super::{
    client::{self, Client},
    exit,
    output::{self, Failure, Format, Global},
    table,
};
use crate::admin::api;

/// Follow routing decisions live
///
/// One line per routed request (HTTP/2: per stream): time (UTC), service,
/// routing key, the endpoint chosen, ROUTE: the sandbox, or `baseline`;
/// `(no route)` when no sandbox forking the service has the key, `(fork not
/// ready)` when its fork has no ready endpoint; and METHOD: the HTTP method,
/// or a gRPC call's method path. `detour explain` says more about one
/// request.
///
/// With `-o json`, each line is one JSON object: a decision event (fields
/// `time`, `flow`, `client`, `service`, `method`, `destination`, `sandbox`,
/// `endpoint`, `routing_key`, `reason`), or `{"lost": N}` when this reader
/// fell behind and N events were dropped.
///
/// Examples:
///   detour trace
///   detour trace --key feature-x --service default/reviews
///   detour trace --limit 10 -o json | jq -r .endpoint
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct TraceArgs {
    /// Only requests carrying this routing key.
    #[arg(long, value_name = "KEY")]
    key: Option<String>,

    /// Only requests to this service: `ns/name`, or `name` in `default`.
    #[arg(long, value_name = "NS/NAME")]
    service: Option<String>,

    /// Stop after this many decisions (default: until interrupted).
    #[arg(long, short = 'n', value_name = "N")]
    limit: Option<u64>,
}

/// One line of the stream.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TraceLine {
    Lost { lost: u64 },
    Event(Box<api::TraceEvent>),
}

/// Column widths of the streamed table: it cannot be measured in advance.
const WIDTHS: [usize; 5] = [12, 16, 12, 18, 25];

pub fn header() -> String {
    row([
        "TIME (UTC)",
        "SERVICE",
        "KEY",
        "ENDPOINT",
        "ROUTE",
        "METHOD",
    ])
}

pub fn render(line: &TraceLine) -> String {
    match line {
        TraceLine::Lost { lost } => format!("... {lost} decisions lost: this trace fell behind\n"),
        TraceLine::Event(event) => {
            let routing = &event.routing;
            let outcome = routing.reason.route(routing.sandbox.as_deref());
            row([
                &table::clock(event.time),
                &event.service,
                routing.routing_key.as_deref().unwrap_or("-"),
                &routing.endpoint.to_string(),
                &outcome,
                &event.method,
            ])
        }
    }
}

fn row(cells: [&str; 6]) -> String {
    let mut line = String::new();
    for (cell, width) in cells.iter().zip(WIDTHS) {
        line.push_str(&format!("{cell:<width$}  "));
    }
    line.push_str(cells[5]);
    format!("{}\n", line.trim_end())
}

pub fn run(args: &TraceArgs, global: &Global) -> anyhow::Result<()> {
    let service = args.service.as_deref().map(output::service_name);
    let path = client::with_query(
        "/trace",
        &[
            ("key", args.key.as_deref()),
            ("service", service.as_deref()),
        ],
    );
    let limit = args.limit.unwrap_or(u64::MAX);
    if limit == 0 {
        return Ok(());
    }
    let format = global.output;
    let mut seen = 0u64;
    let opened = || {
        if format == Format::Table {
            output::emit(&header())?;
        }
        Ok(())
    };
    let ended = Client::new(global.socket.clone())?.lines(&path, opened, |bytes| {
        let line: TraceLine = serde_json::from_slice(bytes).map_err(|e| {
            anyhow::anyhow!(
                "unexpected trace line from the agent: {e} (are the CLI and the agent the same version? see `detour version`)"
            )
        })?;
        let text = match format {
            Format::Table => render(&line),
            Format::Json => format!("{}\n", serde_json::to_string(&line)?),
        };
        if !output::emit(&text)? {
            return Ok(ControlFlow::Break(()));
        }
        if matches!(line, TraceLine::Event(_)) {
            seen += 1;
        }
        Ok(if seen >= limit {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        })
    })?;
    match ended {
        ControlFlow::Break(()) => Ok(()),
        ControlFlow::Continue(()) => Err(anyhow::Error::new(Failure {
            code: exit::UNREACHABLE,
            message: "the agent ended the trace stream: it is shutting down (see `detour status`)"
                .to_owned(),
        })),
    }
}
