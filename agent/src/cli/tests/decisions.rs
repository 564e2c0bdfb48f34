//! `trace` lines and `explain` reasoning.

use super::{addr, assert_text, routing};
use crate::{
    admin::api,
    cli::{explain, trace},
};

#[test]
fn trace_lines_have_fixed_columns() {
    let event = |time, routing| {
        trace::TraceLine::Event(Box::new(api::TraceEvent {
            time,
            flow: 7,
            client: addr("10.244.0.12:40312"),
            service: "default/reviews".into(),
            method: "GET".into(),
            routing,
        }))
    };
    let lines = [
        event(
            1_764_428_531.093_4,
            routing(
                Some("feature-x"),
                "10.244.1.5:8080",
                Some("feature-x"),
                "fork",
            ),
        ),
        event(
            1_764_428_532.5,
            routing(None, "10.96.0.10:8080", None, "no-key"),
        ),
        event(
            1_764_428_533.0,
            routing(
                None,
                "10.96.0.10:8080",
                Some("nobody-home"),
                "fork-no-ready-endpoints",
            ),
        ),
        event(
            1_764_428_533.25,
            routing(None, "10.96.0.10:8080", Some("unknown"), "no-route-for-key"),
        ),
        trace::TraceLine::Lost { lost: 12 },
    ];
    let mut text = trace::header();
    for line in &lines {
        text.push_str(&trace::render(line));
    }
    assert_text(
        &text,
        "\
TIME (UTC)    SERVICE           KEY           ENDPOINT            ROUTE                      METHOD
15:02:11.093  default/reviews   feature-x     10.244.1.5:8080     feature-x                  GET
15:02:12.500  default/reviews   -             10.96.0.10:8080     baseline                   GET
15:02:13.000  default/reviews   nobody-home   10.96.0.10:8080     baseline (fork not ready)  GET
15:02:13.250  default/reviews   unknown       10.96.0.10:8080     baseline (no route)        GET
... 12 decisions lost: this trace fell behind
",
    );
}

#[test]
fn trace_json_lines_are_the_wire_objects() {
    let lost: trace::TraceLine = serde_json::from_str(r#"{"lost":3}"#).expect("lost line");
    assert!(matches!(lost, trace::TraceLine::Lost { lost: 3 }));
    let line = r#"{"time":1.5,"flow":2,"client":"10.0.0.1:5","service":"default/a","method":"GET","destination":"baseline","sandbox":null,"endpoint":"10.0.0.2:80","routing_key":null,"reason":"no-key"}"#;
    let event: trace::TraceLine = serde_json::from_str(line).expect("event line");
    assert!(matches!(event, trace::TraceLine::Event(_)));
    assert_eq!(serde_json::to_string(&event).expect("encode"), line);
}

#[test]
fn explain_shows_the_decision_then_every_step() {
    let explanation = api::Explanation {
        service: "default/reviews".into(),
        port: 8080,
        routing_key: Some("feature-x".into()),
        key_source: Some("baggage member \"detour-routing-key\"".into()),
        matched: Some("route group team-a".into()),
        destination: "sandbox".into(),
        sandbox: Some("feature-x".into()),
        endpoint: Some(addr("10.244.1.5:8080")),
        reason: api::Reason::Fork,
        bypassing_connections: Some(0),
        steps: vec![
            "service default/reviews is steered at 2 destination(s); evaluating destination port 8080".into(),
            "routing key \"feature-x\" from baggage member \"detour-routing-key\"".into(),
            "key \"feature-x\" belongs to route group team-a".into(),
            "sandbox feature-x forks default/reviews".into(),
            "fork endpoints for port 8080: [10.244.1.5:8080, 10.244.2.9:8080] (round robin)".into(),
            "-> sandbox feature-x: endpoint 10.244.1.5:8080".into(),
        ],
    };
    assert_text(
        &explain::render(&explanation),
        "\
Service:      default/reviews, port 8080
Routing key:  \"feature-x\" from baggage member \"detour-routing-key\"
Matched:      route group team-a
Decision:     sandbox feature-x, endpoint 10.244.1.5:8080

Reasoning:
  1. service default/reviews is steered at 2 destination(s); evaluating
     destination port 8080
  2. routing key \"feature-x\" from baggage member \"detour-routing-key\"
  3. key \"feature-x\" belongs to route group team-a
  4. sandbox feature-x forks default/reviews
  5. fork endpoints for port 8080: [10.244.1.5:8080, 10.244.2.9:8080] (round
     robin)
  6. -> sandbox feature-x: endpoint 10.244.1.5:8080
",
    );
}

#[test]
fn explain_baseline_says_why() {
    let explanation = api::Explanation {
        service: "default/reviews".into(),
        port: 8080,
        routing_key: None,
        key_source: None,
        matched: None,
        destination: "baseline".into(),
        sandbox: None,
        endpoint: None,
        reason: api::Reason::NoKey,
        bypassing_connections: Some(2),
        steps: vec![
            "service default/reviews is steered at 1 destination(s); evaluating destination port 8080".into(),
            "no routing key: looked for [\"detour-routing-key\", \"sd-routing-key\", \"sd-sandbox\", \"sd-workspace\"] in baggage, tracestate, uberctx-*, ot-baggage-*".into(),
            "-> baseline: the original destination the client asked for".into(),
        ],
    };
    assert_text(
        &explain::render(&explanation),
        "\
Service:      default/reviews, port 8080
Routing key:  none
Matched:      nothing
Decision:     baseline: the client's original destination (no-key)

Note: 2 existing connection(s) from the cgroup to this service bypass the proxy
      (opened before it was steered): their requests go to baseline, whatever
      their key, until the agent has closed them.

Reasoning:
  1. service default/reviews is steered at 1 destination(s); evaluating
     destination port 8080
  2. no routing key: looked for [\"detour-routing-key\", \"sd-routing-key\",
     \"sd-sandbox\", \"sd-workspace\"] in baggage, tracestate, uberctx-*,
     ot-baggage-*
  3. -> baseline: the original destination the client asked for
",
    );
}
