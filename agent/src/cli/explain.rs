//! `detour explain`: where a request with these headers would go, and the
//! whole reasoning: which header and member supplied the routing key, which
//! sandbox or route group owns it, which fork and endpoint would be chosen,
//! or why baseline. The agent evaluates it against the routes in force
//! (`POST /explain`) with the same code the proxy uses, without routing
//! anything (the round-robin position is only peeked).

use clap::Args;
use hyper::Method;

use super::{
    client::Client,
    output::{self, Global},
    table,
};
use crate::admin::api;

/// Explain where a request with given headers would go, and why
///
/// Shows which header and member supplied the routing key, the sandbox or
/// route group that owns it, the fork and endpoint that would be chosen, or
/// why the request would go to baseline.
///
/// Give the request's headers as curl would (`-H 'name: value'`, repeatable);
/// only the routing headers matter (`baggage`, `tracestate`, `uberctx-*`,
/// `ot-baggage-*`, and the agent's `--routing-header`s; `cookie` with
/// `--routing-cookie`). `--path` is the request target, for the agent's
/// `--routing-query-param`.
///
/// Examples:
///   detour explain --service default/reviews -H 'baggage: detour-routing-key=feature-x'
///   detour explain --service default/web --path '/?sandbox=feature-x'
///   detour explain --service reviews -H 'tracestate: sd-sandbox=feature-x' --port 8080
///   detour explain --service default/reviews -o json | jq -r .destination
///   detour explain --service shop/postgres --from shop/orders-feature-x-7d9f
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct ExplainArgs {
    /// The request's service: `namespace/name`, or `name` in `default`.
    #[arg(long, value_name = "NS/NAME")]
    service: String,

    /// A request header, `name: value`; repeatable.
    #[arg(short = 'H', long = "header", value_name = "HEADER", value_parser = parse_header)]
    headers: Vec<(String, String)>,

    /// The destination port (default: the service's first steered port).
    #[arg(long)]
    port: Option<u16>,

    /// The request target, `/path?query` (for `--routing-query-param`).
    #[arg(long, value_name = "TARGET")]
    path: Option<String>,

    /// The pod it comes from, as `detour status` lists fork pods
    /// (`namespace/name`, or a cgroup directory): a fork pod's request
    /// without a key inherits its sandbox's, and its connects to keyless
    /// forked services go to the forks.
    #[arg(long, value_name = "POD")]
    from: Option<String>,
}

fn parse_header(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("expected 'name: value', got {text:?}"))?;
    let name = name.trim();
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(format!("invalid header name {name:?}"));
    }
    Ok((name.to_owned(), value.trim().to_owned()))
}

pub fn run(args: &ExplainArgs, global: &Global) -> anyhow::Result<()> {
    let request = api::ExplainRequest {
        service: output::service_name(&args.service),
        port: args.port,
        headers: args.headers.clone(),
        path: args.path.clone(),
        from: args.from.clone(),
    };
    let explanation: api::Explanation =
        Client::new(global.socket.clone())?.send(Method::POST, "/explain", &request)?;
    output::print(global.output, &explanation, render)
}

pub fn render(explanation: &api::Explanation) -> String {
    let key = match (&explanation.routing_key, &explanation.key_source) {
        (Some(key), Some(source)) => format!("{key:?} from {source}"),
        (Some(key), None) => format!("{key:?}"),
        (None, _) => "none".to_owned(),
    };
    let decision = match (&explanation.sandbox, explanation.endpoint) {
        (Some(sandbox), Some(endpoint)) if explanation.destination == "sandbox" => {
            format!("sandbox {sandbox}, endpoint {endpoint}")
        }
        (Some(sandbox), None) if explanation.destination == "refused" => {
            format!("refused: sandbox {sandbox}'s fork has no ready endpoint")
        }
        _ => format!(
            "baseline: the client's original destination ({})",
            explanation.reason
        ),
    };
    let mut out = table::fields(&[
        (
            "Service",
            format!("{}, port {}", explanation.service, explanation.port),
        ),
        ("Routing key", key),
        (
            "Matched",
            explanation
                .matched
                .clone()
                .unwrap_or_else(|| "nothing".to_owned()),
        ),
        ("Decision", decision),
    ]);
    if let Some(n) = explanation.bypassing_connections.filter(|n| *n > 0) {
        out.push('\n');
        out.push_str(&table::wrap(
            "Note: ",
            6,
            &format!(
                "{n} existing connection(s) from the cgroup to this service bypass the proxy \
                 (opened before it was steered): their requests go to baseline, whatever \
                 their key, until the agent has closed them."
            ),
        ));
    }
    if !explanation.steps.is_empty() {
        out.push_str("\nReasoning:\n");
        for (index, step) in explanation.steps.iter().enumerate() {
            let number = format!("  {}. ", index + 1);
            let indent = number.len();
            out.push_str(&table::wrap(&number, indent, step));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::parse_header;

    #[test]
    fn headers_are_split_at_the_first_colon_and_trimmed() {
        assert_eq!(
            parse_header("baggage: a=b, c=d:e"),
            Ok(("baggage".to_owned(), "a=b, c=d:e".to_owned()))
        );
        assert_eq!(
            parse_header("x-sandbox:feature-x"),
            Ok(("x-sandbox".to_owned(), "feature-x".to_owned()))
        );
        assert!(parse_header("no colon").is_err());
        assert!(parse_header(": value").is_err());
        assert!(parse_header("two words: value").is_err());
    }
}
