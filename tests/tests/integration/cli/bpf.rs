//! `detour bpf maps` / `detour bpf counters` from the pins, with the agent
//! running and after it was killed.

use detour_tests::require_root;
use serde_json::Value;

use super::setup::{PORT, Setup, detour, detour_at, failure, json, ok};

#[test]
fn bpf_maps_and_counters_read_the_pins_even_after_the_agent_is_killed() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let mut agent = setup.agent();
    for _ in 0..3 {
        setup.curl(
            "reviews",
            "/",
            Some("baggage: detour-routing-key=feature-x"),
        );
    }
    let pin_dir = agent.pin_dir().display().to_string();
    let socket = agent.admin_socket().to_owned();
    let bpf = |verb: &str| detour_at(&socket, &["bpf", verb, "--pin-dir", &pin_dir, "-o", "json"]);

    let counters = json(&bpf("counters"));
    assert_eq!(counters["pin_dir"], pin_dir.as_str());
    let names: Vec<&String> = counters["counters"]
        .as_object()
        .expect("counters")
        .keys()
        .collect();
    assert_eq!(
        names,
        [
            "errors",
            "no_proxy_family",
            "not_steered",
            "own_socket",
            "record_missing",
            "redirected",
            "rekeyed",
            "relay_missed",
            "relayed"
        ]
    );
    assert_eq!(
        counters["counters"]["redirected"],
        agent.bpf_event("redirected")
    );
    assert!(
        counters["counters"]["redirected"].as_u64() >= Some(3),
        "{counters}"
    );
    assert_eq!(
        counters["counters"]["rekeyed"],
        counters["counters"]["redirected"]
    );

    let maps = json(&bpf("maps"));
    let steered: Vec<&str> = maps["steered"]
        .as_array()
        .expect("steered")
        .iter()
        .map(|e| e["destination"].as_str().expect("destination"))
        .collect();
    let mut expected = [
        format!("{}:{PORT}", setup.ip("reviews")),
        format!("{}:{PORT}", setup.ip("ratings")),
    ];
    expected.sort();
    assert_eq!(steered, expected);
    assert_eq!(maps["config"]["proxy_ipv4"], "10.248.0.1:15001");
    assert_eq!(maps["config"]["proxy_ipv6"], "[fd00:248::1]:15001");
    assert_eq!(maps["config"]["mark"], 0x6474_0000);
    assert_eq!(maps["maps"][0]["name"], "STEERED");
    assert_eq!(maps["maps"][0]["entries"], 2);
    assert_eq!(maps["pending"], Value::Array(vec![]));

    agent.kill9();
    // The pins outlive the agent: the same counters, the same destinations.
    assert_eq!(json(&bpf("counters")), counters);
    assert_eq!(json(&bpf("maps"))["steered"], maps["steered"]);
    let table = ok(&detour(&agent, &["bpf", "counters", "--pin-dir", &pin_dir]));
    let redirected = counters["counters"]["redirected"].to_string();
    assert!(
        table.lines().any(|l| l
            .split_whitespace()
            .take(2)
            .eq(["redirected", redirected.as_str()])),
        "{table}"
    );
    let table = ok(&detour(&agent, &["bpf", "maps", "--pin-dir", &pin_dir]));
    assert!(
        table.contains(&format!("{}:{PORT}", setup.ip("reviews"))),
        "{table}"
    );
    // The socket file a killed agent leaves is stale, and said to be.
    let stale = failure(&detour(&agent, &["status"]), 3);
    assert!(stale.contains("stale socket"), "{stale}");
}
