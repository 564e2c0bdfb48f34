//! The `detour` CLI verbs, run as the real binary against a real agent in
//! a namespace topology: what they print (tables and `-o json`, field by
//! field) must match what the agent actually does with real requests; the
//! pinned-map verbs must work after the agent is killed; the admin socket
//! must refuse non-root users and never be on TCP; every failure is one
//! line with a documented exit code.
//!
//! These need root, except the error-path and generated-docs tests.

mod bpf;
mod errors;
mod live;
mod setup;

use detour_tests::require_root;
use serde_json::Value;
use setup::{PORT, Setup, detour, failure, json, ok, strings};

#[test]
fn status_version_and_log_level_describe_the_running_agent() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let agent = setup.agent();

    let status = json(&detour(&agent, &["status", "-o", "json"]));
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["pid"], agent.pid());
    assert_eq!(status["ready"], true);
    assert_eq!(status["cgroup"], setup.cgroup.path().display().to_string());
    assert_eq!(
        strings(&status["programs"]),
        ["detour_connect4", "detour_connect6", "detour_sockops"]
    );
    assert_eq!(
        strings(&status["proxy_addrs"]),
        ["10.248.0.1:15001", "[fd00:248::1]:15001"]
    );
    assert_eq!(status["pin_dir"], agent.pin_dir().display().to_string());
    assert_eq!(status["route_source"]["kind"], "file");
    assert_eq!(status["route_source"]["synced"], true);
    assert_eq!(status["route_source"]["problems"], Value::Array(vec![]));
    assert_eq!(status["flows"], 0);
    assert!(
        status["client_address"]
            .as_str()
            .is_some_and(|s| s.starts_with("kept:")),
        "{status}"
    );
    let steered = status["maps"]
        .as_array()
        .and_then(|maps| maps.iter().find(|m| m["name"] == "STEERED"))
        .unwrap_or_else(|| panic!("no STEERED in {status}"));
    assert_eq!(steered["entries"], 2, "reviews and ratings, one port each");
    assert_eq!(steered["max_entries"], 16384);
    let table = ok(&detour(&agent, &["status"]));
    assert!(table.contains("Ready:           yes"), "{table}");
    assert!(
        table.contains("Client address:  kept: upstream connections leave from the client pod's"),
        "{table}"
    );
    assert!(table.contains("(synced)"), "{table}");

    let level = json(&detour(
        &agent,
        &["log-level", "info,detour=debug", "-o", "json"],
    ));
    // The agent answers with the filter in force, in its own order.
    let mut directives: Vec<&str> = level["filter"]
        .as_str()
        .expect("filter")
        .split(',')
        .collect();
    directives.sort_unstable();
    assert_eq!(directives, ["detour=debug", "info"]);
    assert_eq!(
        ok(&detour(&agent, &["log-level", "debug"])),
        "Log filter now \"debug\".\n"
    );
    let bad = failure(&detour(&agent, &["log-level", "info,[bad"]), 2);
    assert!(bad.contains("invalid log filter"), "{bad}");

    let version = json(&detour(&agent, &["version", "-o", "json"]));
    assert_eq!(version["client"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(version["agent"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(version["agent"]["pid"], agent.pid());
    assert_eq!(version["agent_error"], Value::Null);
}

#[test]
fn routes_show_services_sandboxes_and_forks_with_filters() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let agent = setup.agent();
    let (reviews, fork) = (
        format!("{}:{PORT}", setup.ip("reviews")),
        format!("{}:{PORT}", setup.ip("reviews-fork")),
    );
    let routes = json(&detour(&agent, &["routes", "-o", "json"]));
    let services: Vec<(&str, &str, &str)> = routes["services"]
        .as_array()
        .expect("services")
        .iter()
        .flat_map(|s| {
            s["destinations"]
                .as_array()
                .expect("destinations")
                .iter()
                .map(|d| {
                    (
                        s["service"].as_str().expect("service"),
                        d["address"].as_str().expect("address"),
                        d["protocol"].as_str().expect("protocol"),
                    )
                })
        })
        .collect();
    let ratings = format!("{}:{PORT}", setup.ip("ratings"));
    assert_eq!(
        services,
        [
            ("default/ratings", ratings.as_str(), "auto"),
            ("default/reviews", reviews.as_str(), "http")
        ]
    );
    let sandboxes = routes["sandboxes"].as_array().expect("sandboxes");
    assert_eq!(sandboxes.len(), 2);
    assert_eq!(sandboxes[0]["sandbox"], "empty");
    assert_eq!(sandboxes[0]["routing_key"], "nobody-home");
    assert_eq!(sandboxes[0]["forks"][0]["ready"], false);
    assert_eq!(sandboxes[1]["sandbox"], "feature-x");
    assert_eq!(sandboxes[1]["forks"][0]["service"], "default/reviews");
    assert_eq!(
        strings(&sandboxes[1]["forks"][0]["endpoints"]),
        [fork.as_str()]
    );
    assert_eq!(sandboxes[1]["forks"][0]["ready"], true);
    let table = ok(&detour(&agent, &["routes", "--key", "feature-x"]));
    assert!(
        table.contains("default/reviews") && table.contains(&fork),
        "{table}"
    );
    assert!(!table.contains("nobody-home"), "{table}");
    let only = json(&detour(
        &agent,
        &["routes", "--service", "reviews", "-o", "json"],
    ));
    assert_eq!(only["services"].as_array().map(Vec::len), Some(1));
    let unknown = failure(&detour(&agent, &["routes", "--service", "default/nope"]), 5);
    assert!(
        unknown.contains("service default/nope is not steered"),
        "{unknown}"
    );
    let unknown = failure(&detour(&agent, &["routes", "--key", "nope"]), 5);
    assert!(unknown.contains("routing key \"nope\""), "{unknown}");
}

#[test]
fn explain_predicts_what_the_proxy_does_with_the_same_headers() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let agent = setup.agent();
    let fork = format!("{}:{PORT}", setup.ip("reviews-fork"));
    let cases = [
        (
            Some("baggage: detour-routing-key=feature-x"),
            "sandbox",
            "fork",
        ),
        (None, "baseline", "no-key"),
        (
            Some("baggage: detour-routing-key=nobody-home"),
            "baseline",
            "fork-no-ready-endpoints",
        ),
        (
            Some("tracestate: sd-sandbox=unknown"),
            "baseline",
            "no-route-for-key",
        ),
    ];
    for (header, destination, reason) in cases {
        let mut args = vec!["explain", "--service", "default/reviews", "-o", "json"];
        if let Some(header) = header {
            args.extend(["-H", header]);
        }
        let explained = json(&detour(&agent, &args));
        assert_eq!(
            explained["destination"], destination,
            "{header:?}: {explained}"
        );
        assert_eq!(explained["reason"], reason, "{header:?}: {explained}");
        assert_eq!(explained["service"], "default/reviews");
        assert_eq!(explained["port"], PORT);
        let predicted = match explained["endpoint"].as_str() {
            Some(endpoint) => setup.pod_at(endpoint),
            None => "reviews",
        };
        let served = setup.curl("reviews", "/", header);
        assert_eq!(served, predicted, "{header:?}: explain said {explained}");
        assert!(explained["steps"].as_array().is_some_and(|s| s.len() >= 3));
    }
    let explained = json(&detour(
        &agent,
        &[
            "explain",
            "--service",
            "reviews",
            "-H",
            "baggage: detour-routing-key=feature-x",
            "-o",
            "json",
        ],
    ));
    assert_eq!(explained["routing_key"], "feature-x");
    assert_eq!(
        explained["key_source"],
        "baggage member \"detour-routing-key\""
    );
    assert_eq!(explained["matched"], "sandbox feature-x");
    assert_eq!(explained["sandbox"], "feature-x");
    assert_eq!(explained["endpoint"], fork.as_str());
    let table = ok(&detour(
        &agent,
        &[
            "explain",
            "--service",
            "reviews",
            "-H",
            "baggage: detour-routing-key=feature-x",
        ],
    ));
    assert!(
        table.contains(&format!("Decision:     sandbox feature-x, endpoint {fork}")),
        "{table}"
    );
    let unknown = failure(
        &detour(&agent, &["explain", "--service", "default/nope"]),
        5,
    );
    assert!(
        unknown.contains("service default/nope is not steered"),
        "{unknown}"
    );
    let usage = detour(
        &agent,
        &["explain", "--service", "reviews", "-H", "no colon"],
    );
    assert_eq!(
        usage.status.code(),
        Some(2),
        "clap's usage error: {usage:?}"
    );
}
