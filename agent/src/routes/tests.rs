//! Routes-file parser tests: good files, and bad ones with the error a user sees.

use std::net::SocketAddr;

use std::sync::Arc;

use super::{Decision, Protocol, Reason, RouteSnapshot, RoutesError, RoutesFile, ServiceIds};

const EXAMPLE: &str = r#"
services:
  - name: reviews
    namespace: default
    addresses: [10.96.0.20, "fd00:96::20"]
    ports:
      - port: 80
        protocol: http
      - port: 9000
sandboxes:
  - name: feature-x
    routingKey: feature-x
    forks:
      - service: default/reviews
        endpoints: ["10.200.0.12:8080"]
routeGroups:
  - name: team-a
    routingKey: team-a
    sandboxes: [feature-x]
"#;

fn error_of(text: &str) -> String {
    match RoutesFile::parse(text) {
        Ok(file) => panic!("expected an error, parsed {file:?}"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn parses_the_design_example() {
    let file = RoutesFile::parse(EXAMPLE).expect("example parses");
    assert_eq!(file.services.len(), 1);
    assert_eq!(file.services[0].ports[0].protocol, Protocol::Http);
    assert_eq!(
        file.services[0].ports[1].protocol,
        Protocol::Auto,
        "protocol defaults to auto"
    );
    assert_eq!(
        file.sandboxes[0].forks[0].endpoints[0],
        "10.200.0.12:8080".parse::<SocketAddr>().expect("addr")
    );
    assert_eq!(file.route_groups[0].sandboxes, ["feature-x"]);
}

#[test]
fn snapshot_steers_every_address_and_port() {
    let snapshot = RouteSnapshot::from_file(
        &RoutesFile::parse(EXAMPLE).expect("parses"),
        &mut ServiceIds::default(),
    );
    let steered: Vec<String> = snapshot
        .destinations
        .keys()
        .map(|d| d.to_string())
        .collect();
    assert_eq!(
        steered,
        [
            "10.96.0.20:80",
            "10.96.0.20:9000",
            "[fd00:96::20]:80",
            "[fd00:96::20]:9000"
        ]
    );
    assert_eq!(snapshot.steered_entries().len(), 4);
    assert!(
        snapshot
            .steered_entries()
            .values()
            .all(|s| s.service_id == 1)
    );
    assert_eq!(
        snapshot.service(1).expect("service 1").to_string(),
        "default/reviews"
    );
}

#[test]
fn empty_file_is_an_empty_configuration() {
    let file = RoutesFile::parse("").expect("empty parses");
    assert!(file.services.is_empty());
    assert!(
        RouteSnapshot::from_file(&file, &mut ServiceIds::default())
            .destinations
            .is_empty()
    );
}

#[test]
fn namespace_defaults_to_default() {
    let file = RoutesFile::parse(
        "services:\n  - name: a\n    addresses: [10.0.0.1]\n    ports: [{port: 1}]\n",
    )
    .expect("parses");
    assert_eq!(file.services[0].namespace, "default");
}

#[test]
fn unknown_field_is_rejected_with_its_line() {
    let error =
        error_of("services:\n  - name: a\n    adresses: [10.0.0.1]\n    ports: [{port: 1}]\n");
    assert!(error.contains("adresses"), "{error}");
    assert!(error.contains("line 3"), "{error}");
}

#[test]
fn bad_address_is_rejected_with_its_line() {
    let error =
        error_of("services:\n  - name: a\n    addresses: [10.0.0.300]\n    ports: [{port: 1}]\n");
    assert!(error.contains("services[0].addresses[0]"), "{error}");
    assert!(error.contains("line 3"), "{error}");
}

#[test]
fn bad_protocol_names_the_choices() {
    let error = error_of(
        "services:\n  - name: a\n    addresses: [10.0.0.1]\n    ports: [{port: 1, protocol: htp}]\n",
    );
    assert!(error.contains("htp") && error.contains("h2c"), "{error}");
}

#[test]
fn port_out_of_range_is_rejected() {
    let error =
        error_of("services:\n  - name: a\n    addresses: [10.0.0.1]\n    ports: [{port: 70000}]\n");
    assert!(error.contains("services[0].ports[0].port"), "{error}");
}

#[test]
fn semantic_errors_name_the_field() {
    let cases = [
        (
            "services:\n  - name: a\n    addresses: []\n    ports: [{port: 1}]\n",
            "services[0].addresses",
        ),
        (
            "services:\n  - name: a\n    addresses: [10.0.0.1]\n    ports: []\n",
            "services[0].ports",
        ),
        (
            "services:\n  - name: a\n    addresses: [10.0.0.1]\n    ports: [{port: 0}]\n",
            "services[0].ports[0].port",
        ),
        (
            "services:\n  - name: A_b\n    addresses: [10.0.0.1]\n    ports: [{port: 1}]\n",
            "services[0].name",
        ),
        (
            "services:\n  - {name: a, addresses: [10.0.0.1], ports: [{port: 1}]}\n  - {name: b, addresses: [10.0.0.1], ports: [{port: 1}]}\n",
            "services[1].ports[0].port",
        ),
        (
            "services:\n  - {name: a, addresses: [10.0.0.1], ports: [{port: 1}]}\n  - {name: a, addresses: [10.0.0.2], ports: [{port: 1}]}\n",
            "services[1].name",
        ),
        (
            "sandboxes:\n  - {name: s, routingKey: k, forks: [{service: default/nope, endpoints: []}]}\n",
            "sandboxes[0].forks[0].service",
        ),
        (
            "sandboxes:\n  - {name: s, routingKey: ''}\n",
            "sandboxes[0].routingKey",
        ),
        (
            "sandboxes:\n  - {name: s, routingKey: k}\nrouteGroups:\n  - {name: g, routingKey: k, sandboxes: [s]}\n",
            "routeGroups[0].routingKey",
        ),
        (
            "sandboxes:\n  - {name: s, routingKey: k}\nrouteGroups:\n  - {name: g, routingKey: g, sandboxes: [t]}\n",
            "routeGroups[0].sandboxes[0]",
        ),
    ];
    for (text, field) in cases {
        let error = error_of(text);
        assert!(
            error.contains(field),
            "error for {text:?} should name {field}: {error}"
        );
    }
}

/// Caught by the `routes_file` fuzz target's invariants: `::ffff:10.96.0.20`
/// was accepted beside (or instead of) `10.96.0.20`. The kernel keys both as
/// one destination and the proxy looks it up as plain IPv4, so an `http`
/// port was served as opaque TCP (every key ignored), and two services could
/// claim one destination.
#[test]
fn an_ipv4_mapped_address_is_rejected_with_the_address_to_write() {
    let error = error_of(
        "services:\n  - name: a\n    addresses: [10.0.0.2, \"::ffff:10.96.0.20\"]\n    ports: [{port: 80, protocol: http}]\n",
    );
    assert!(
        error.contains("services[0].addresses[1]") && error.contains("write 10.96.0.20"),
        "{error}"
    );
    RoutesFile::parse(
        "services:\n  - {name: a, addresses: [\"fd00::ffff:a60:14\", \"::1\"], ports: [{port: 80}]}\n",
    )
    .expect("other IPv6 addresses are fine");
}

/// Caught by the `routes_file` fuzz target's invariants: a sandbox listing the
/// same service twice kept only the last fork, silently dropping the first's
/// endpoints.
#[test]
fn a_service_forked_twice_by_one_sandbox_is_rejected() {
    let error = error_of(
        "services:\n  - {name: a, addresses: [10.0.0.1], ports: [{port: 80}]}\nsandboxes:\n  - name: s\n    routingKey: k\n    forks:\n      - {service: default/a, endpoints: [\"10.1.0.1:80\"]}\n      - {service: default/a, endpoints: []}\n",
    );
    assert!(
        error.contains("sandboxes[0].forks[1].service")
            && error.contains("default/a is forked twice by sandbox s"),
        "{error}"
    );
    RoutesFile::parse(
        "services:\n  - {name: a, addresses: [10.0.0.1], ports: [{port: 80}]}\nsandboxes:\n  - {name: s, routingKey: k, forks: [{service: default/a, endpoints: []}]}\n  - {name: t, routingKey: l, forks: [{service: default/a, endpoints: []}]}\n",
    )
    .expect("two sandboxes may fork one service");
}

#[test]
fn load_names_the_file() {
    let dir = std::env::temp_dir().join(format!("detour-routes-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("routes.yaml");
    std::fs::write(&path, "services: [").expect("write");
    let error = RoutesFile::load(&path).expect_err("truncated file is rejected");
    assert!(matches!(error, RoutesError::Parse { .. }));
    assert!(
        error.to_string().contains(&path.display().to_string()),
        "{error}"
    );

    let missing =
        RoutesFile::load(&dir.join("missing.yaml")).expect_err("missing file is rejected");
    assert!(matches!(missing, RoutesError::Read { .. }), "{missing}");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

const ROUTED: &str = r#"
services:
  - {name: reviews, addresses: [10.96.0.20], ports: [{port: 80}]}
  - {name: ratings, addresses: [10.96.0.21], ports: [{port: 80}]}
  - {name: details, addresses: [10.96.0.22], ports: [{port: 80}]}
sandboxes:
  - name: feature-x
    routingKey: key-x
    forks:
      - {service: default/reviews, endpoints: ["10.200.0.1:8080", "10.200.0.2:8080"]}
  - name: feature-y
    routingKey: key-y
    forks:
      - {service: default/reviews, endpoints: ["10.200.1.1:8080"]}
      - {service: default/ratings, endpoints: ["10.200.1.2:8080"]}
  - name: empty-fork
    routingKey: key-e
    forks:
      - {service: default/details, endpoints: []}
routeGroups:
  - {name: team, routingKey: key-team, sandboxes: [feature-x, feature-y]}
"#;

fn routed() -> RouteSnapshot {
    RouteSnapshot::from_file(
        &RoutesFile::parse(ROUTED).expect("parses"),
        &mut ServiceIds::default(),
    )
}

fn sandbox(decision: &Decision) -> (String, String) {
    match decision {
        Decision::Fork { sandbox, endpoint } => (sandbox.to_string(), endpoint.to_string()),
        other => panic!("expected a sandbox, got {other:?}"),
    }
}

#[test]
fn keys_route_to_their_forks_round_robin() {
    let snapshot = routed();
    let reviews = 1;
    let first = sandbox(&snapshot.decide(reviews, 80, Some("key-x")));
    let second = sandbox(&snapshot.decide(reviews, 80, Some("key-x")));
    let third = sandbox(&snapshot.decide(reviews, 80, Some("key-x")));
    assert_eq!(first.0, "feature-x");
    assert_ne!(first.1, second.1, "round robin over the two endpoints");
    assert_eq!(first.1, third.1);
    assert_eq!(
        sandbox(&snapshot.decide(reviews, 80, Some("key-y"))),
        ("feature-y".into(), "10.200.1.1:8080".into())
    );
}

#[test]
fn no_key_unknown_key_and_unforked_service_go_to_baseline() {
    let snapshot = routed();
    let baseline = Decision::Baseline {
        reason: Reason::NoRouteForKey,
    };
    assert_eq!(
        snapshot.decide(1, 80, None),
        Decision::Baseline {
            reason: Reason::NoKey
        }
    );
    assert_eq!(snapshot.decide(1, 80, Some("nope")), baseline);
    assert_eq!(
        snapshot.decide(3, 80, Some("key-x")),
        baseline,
        "feature-x does not fork details"
    );
}

#[test]
fn a_fork_without_endpoints_falls_back_and_says_so() {
    let snapshot = routed();
    assert_eq!(
        snapshot.decide(3, 80, Some("key-e")),
        Decision::ForkNotReady {
            sandbox: Arc::from("empty-fork")
        }
    );
}

#[test]
fn a_group_key_uses_the_first_member_that_forks_each_service() {
    let snapshot = routed();
    assert_eq!(
        sandbox(&snapshot.decide(1, 80, Some("key-team"))).0,
        "feature-x"
    );
    assert_eq!(
        sandbox(&snapshot.decide(2, 80, Some("key-team"))).0,
        "feature-y",
        "only feature-y forks ratings"
    );
    assert_eq!(
        snapshot.decide(3, 80, Some("key-team")),
        Decision::Baseline {
            reason: Reason::NoRouteForKey
        }
    );
}

#[test]
fn service_ids_are_stable_across_reloads() {
    let mut ids = ServiceIds::default();
    let before = RouteSnapshot::from_file(&RoutesFile::parse(ROUTED).expect("parses"), &mut ids);
    let reordered = "services:\n  - {name: details, addresses: [10.96.0.22], ports: [{port: 80}]}\n  - {name: reviews, addresses: [10.96.0.20], ports: [{port: 80}]}\n";
    let after = RouteSnapshot::from_file(&RoutesFile::parse(reordered).expect("parses"), &mut ids);
    let id_of =
        |s: &RouteSnapshot, name: &str| s.services.values().find(|v| v.name == name).map(|v| v.id);
    assert_eq!(id_of(&before, "reviews"), id_of(&after, "reviews"));
    assert_eq!(id_of(&before, "details"), id_of(&after, "details"));
}

#[test]
fn per_port_endpoints_take_precedence_and_an_unlisted_port_falls_back() {
    use std::collections::BTreeMap;

    use super::{ForkInput, RouteInput, SandboxInput, ServiceInput};

    let addr = |s: &str| s.parse::<std::net::SocketAddr>().expect("addr");
    let fork = vec![addr("10.2.0.1:9090")];
    let input = RouteInput {
        services: vec![ServiceInput {
            namespace: "default".into(),
            name: "s".into(),
            destinations: vec![
                (addr("10.0.0.1:80"), Protocol::Http),
                (addr("10.1.0.5:8080"), Protocol::Http),
            ],
            fork_sources_only: false,
        }],
        sandboxes: vec![SandboxInput {
            name: "default/x".into(),
            routing_key: "k".into(),
            forks: vec![ForkInput {
                service: "default/s".into(),
                endpoints: vec![],
                by_port: BTreeMap::from([(80, fork.clone()), (8080, fork)]),
                pods: vec![],
            }],
            fork_pods: vec![],
            inherit_key: true,
        }],
        groups: vec![],
    };
    let snapshot = RouteSnapshot::build(&input, &mut ServiceIds::default());
    assert_eq!(
        sandbox(&snapshot.decide(1, 80, Some("k"))).1,
        "10.2.0.1:9090",
        "ClusterIP port"
    );
    assert_eq!(
        sandbox(&snapshot.decide(1, 8080, Some("k"))).1,
        "10.2.0.1:9090",
        "pod target port"
    );
    assert_eq!(
        snapshot.decide(1, 443, Some("k")),
        Decision::ForkNotReady {
            sandbox: Arc::from("default/x")
        }
    );
}

#[test]
fn peeking_names_the_next_endpoint_without_moving_the_cursor() {
    let snapshot = routed();
    let peeked = snapshot.decide_with(1, 80, Some("key-x"), super::Pick::Peek);
    assert_eq!(
        snapshot.decide_with(1, 80, Some("key-x"), super::Pick::Peek),
        peeked
    );
    assert_eq!(snapshot.decide(1, 80, Some("key-x")), peeked);
    assert_ne!(snapshot.decide(1, 80, Some("key-x")), peeked);
}

#[test]
fn reasons_have_one_name_each_in_json_logs_and_metrics() {
    for (reason, name, fallback, route) in [
        (Reason::NoKey, "no-key", None, "baseline"),
        (
            Reason::NoRouteForKey,
            "no-route-for-key",
            None,
            "baseline (no route)",
        ),
        (Reason::Fork, "fork", None, "feature-x"),
        (
            Reason::ForkNotReady,
            "fork-no-ready-endpoints",
            Some("no_ready_endpoints"),
            "baseline (fork not ready)",
        ),
    ] {
        assert_eq!(reason.as_str(), name);
        assert_eq!(
            serde_json::to_value(reason).expect("serialize"),
            serde_json::json!(name)
        );
        assert_eq!(
            serde_json::from_value::<Reason>(serde_json::json!(name)).expect("deserialize"),
            reason
        );
        assert_eq!(reason.fallback(), fallback);
        let sandbox = (reason == Reason::Fork).then_some("feature-x");
        assert_eq!(reason.route(sandbox), route);
    }
}
