//! `detour flows` and `detour trace` while real requests are in flight.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use detour_tests::{cmd::Proc, require_root};
use serde_json::Value;

use super::setup::{PORT, Setup, detour, json, ok, spawn_trace, wait_for_flow};

#[test]
fn flows_show_a_slow_request_while_it_is_in_flight() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let agent = setup.agent();
    let in_flight = setup
        .curl_command(
            "reviews",
            "/slow?ms=3000",
            Some("baggage: detour-routing-key=feature-x"),
        )
        .stdout(Stdio::null())
        .spawn()
        .expect("slow curl");
    let mut in_flight = Proc::new(in_flight);
    let flow = wait_for_flow(&agent, |f| f["last_decision"].is_object());
    let client = flow["client"].as_str().expect("client");
    assert!(
        client.starts_with(&format!("{}:", setup.ip("client"))),
        "{flow}"
    );
    assert_eq!(
        flow["original_dst"],
        format!("{}:{PORT}", setup.ip("reviews"))
    );
    assert_eq!(flow["service"], "default/reviews");
    assert_eq!(flow["protocol"], "http1");
    assert_eq!(flow["requests"], 1);
    assert!(flow["id"].as_u64().is_some() && flow["age_seconds"].as_f64().is_some());
    let decision = &flow["last_decision"];
    assert_eq!(decision["destination"], "sandbox");
    assert_eq!(decision["sandbox"], "feature-x");
    assert_eq!(decision["routing_key"], "feature-x");
    assert_eq!(decision["reason"], "fork");
    assert_eq!(
        decision["endpoint"],
        format!("{}:{PORT}", setup.ip("reviews-fork"))
    );
    let table = ok(&detour(&agent, &["flows"]));
    let row = table
        .lines()
        .find(|l| l.starts_with(client))
        .unwrap_or_else(|| panic!("no row for {client}:\n{table}"));
    assert!(
        row.contains("default/reviews") && row.ends_with("feature-x"),
        "{table}"
    );
    assert_eq!(json(&detour(&agent, &["status", "-o", "json"]))["flows"], 1);

    let status = in_flight
        .wait_timeout(Duration::from_secs(10))
        .expect("slow request done");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ok(&detour(&agent, &["flows"])).starts_with("No live proxied connections.") {
        assert!(
            Instant::now() < deadline,
            "the flow outlived its connection"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn trace_streams_the_decisions_of_requests_sent_while_it_runs() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let agent = setup.agent();
    let fork = format!("{}:{PORT}", setup.ip("reviews-fork"));
    let reviews = format!("{}:{PORT}", setup.ip("reviews"));

    // Table: the header is printed once the agent streams, then one line
    // per request.
    let (mut trace, lines) = spawn_trace(&agent, &["--service", "reviews", "--limit", "3"]);
    let header = lines.recv_timeout(Duration::from_secs(5)).expect("header");
    assert!(header.starts_with("TIME (UTC)"), "{header}");
    setup.curl(
        "ratings",
        "/",
        Some("baggage: detour-routing-key=feature-x"),
    );
    setup.curl(
        "reviews",
        "/",
        Some("baggage: detour-routing-key=feature-x"),
    );
    setup.curl("reviews", "/", None);
    setup.curl(
        "reviews",
        "/",
        Some("baggage: detour-routing-key=nobody-home"),
    );
    let status = trace
        .wait_timeout(Duration::from_secs(10))
        .expect("trace ends at --limit");
    assert!(status.success());
    let rows: Vec<String> = lines.try_iter().collect();
    assert_eq!(rows.len(), 3, "{rows:#?}");
    let columns = |row: &str| {
        row.split_whitespace()
            .skip(1)
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        columns(&rows[0]),
        ["default/reviews", "feature-x", &fork, "feature-x", "GET"]
    );
    assert_eq!(
        columns(&rows[1]),
        ["default/reviews", "-", &reviews, "baseline", "GET"]
    );
    assert_eq!(
        columns(&rows[2]),
        [
            "default/reviews",
            "nobody-home",
            &reviews,
            "baseline",
            "(fork",
            "not",
            "ready)",
            "GET"
        ]
    );

    // JSON, filtered by key: requests are sent until the trace has its two
    // lines (it may subscribe after the first ones).
    let (mut trace, lines) = spawn_trace(
        &agent,
        &["--key", "feature-x", "--limit", "2", "-o", "json"],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while trace.try_wait().is_none() {
        assert!(Instant::now() < deadline, "trace never reached its limit");
        setup.curl("reviews", "/", None);
        setup.curl(
            "reviews",
            "/",
            Some("baggage: detour-routing-key=feature-x"),
        );
    }
    // The trace has exited: its reader ends at the end of its output, so
    // every line it printed is in the channel (try_iter could miss the last).
    let events: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(events.len(), 2, "{events:#?}");
    for event in events {
        assert!(event["time"].as_f64().is_some_and(|t| t > 1.0e9), "{event}");
        assert!(event["flow"].as_u64().is_some(), "{event}");
        let client = event["client"].as_str().expect("client");
        assert!(
            client.starts_with(&format!("{}:", setup.ip("client"))),
            "{event}"
        );
        assert_eq!(event["service"], "default/reviews");
        assert_eq!(event["method"], "GET");
        assert_eq!(event["destination"], "sandbox");
        assert_eq!(event["sandbox"], "feature-x");
        assert_eq!(event["endpoint"], fork.as_str());
        assert_eq!(event["routing_key"], "feature-x");
        assert_eq!(event["reason"], "fork");
    }
}
