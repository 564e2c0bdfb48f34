//! Golden tests: fixed snapshots in, exact text out, for every table the
//! CLI prints. A change to a layout shows up here as a diff of the text.

mod agent_args;
mod bpf;
mod decisions;
mod views;

use std::net::SocketAddr;

use super::table;
use crate::admin::api;

pub fn addr(text: &str) -> SocketAddr {
    text.parse().expect("test address")
}

pub fn assert_text(actual: &str, expected: &str) {
    assert!(
        actual == expected,
        "rendered text differs\n--- actual ---\n{actual}--- expected ---\n{expected}"
    );
}

pub fn routing(
    sandbox: Option<&str>,
    endpoint: &str,
    key: Option<&str>,
    reason: &str,
) -> api::Routing {
    api::Routing {
        destination: if sandbox.is_some() {
            "sandbox"
        } else {
            "baseline"
        }
        .into(),
        sandbox: sandbox.map(Into::into),
        endpoint: addr(endpoint),
        routing_key: key.map(Into::into),
        reason: serde_json::from_value(serde_json::json!(reason)).expect("a reason name"),
    }
}

#[test]
fn helpers_format_durations_clocks_and_wrapping() {
    assert_eq!(table::duration(0), "0s");
    assert_eq!(table::duration(59), "59s");
    assert_eq!(table::duration(61), "1m01s");
    assert_eq!(table::duration(3600 + 5 * 60), "1h05m");
    assert_eq!(table::duration(3 * 86_400 + 4 * 3600 + 59), "3d4h");
    assert_eq!(table::age(0.04), "0.0s");
    assert_eq!(table::age(9.96), "10.0s");
    assert_eq!(table::age(75.0), "1m15s");
    assert_eq!(table::clock(0.0), "00:00:00.000");
    assert_eq!(table::clock(86_399.999), "23:59:59.999");
    let long = "word ".repeat(30);
    let wrapped = table::wrap("  - ", 4, &long);
    assert!(
        wrapped.lines().all(|l| l.len() <= table::WIDTH),
        "{wrapped}"
    );
    assert!(wrapped.lines().skip(1).all(|l| l.starts_with("    word")));
    assert_eq!(table::wrap("> ", 2, ""), ">\n");
}

#[test]
fn tables_align_pad_and_never_end_lines_in_spaces() {
    let mut t = table::Table::new(&["A", "NUMBER", "LAST"]).right(1);
    t.row(["x", "1", ""]);
    t.row(["longer", "12345"]);
    assert_text(
        &t.render(),
        "A       NUMBER  LAST\nx            1\nlonger   12345\n",
    );
}
