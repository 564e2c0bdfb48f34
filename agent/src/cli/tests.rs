//! Golden tests: fixed snapshots in, exact text out, for every table the
//! CLI prints. A change to a layout shows up here as a diff of the text.

use std::net::SocketAddr;

use super::{bpf, explain, flows, log_level, routes, status, table, trace, version};
use crate::admin::api;

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("test address")
}

fn assert_text(actual: &str, expected: &str) {
    assert!(
        actual == expected,
        "rendered text differs\n--- actual ---\n{actual}--- expected ---\n{expected}"
    );
}

fn status_snapshot() -> api::Status {
    api::Status {
        version: "0.1.0".into(),
        pid: 4242,
        uptime_seconds: 192,
        cgroup: "/sys/fs/cgroup/kubepods.slice".into(),
        programs: vec![
            "detour_connect4".into(),
            "detour_connect6".into(),
            "detour_sockops".into(),
        ],
        proxy_addrs: vec![addr("10.0.0.5:15001"), addr("[fd00::5]:15001")],
        pin_dir: Some("/sys/fs/bpf/detour".into()),
        maps: vec![
            api::MapStatus {
                name: "STEERED".into(),
                entries: 3,
                max_entries: 16384,
            },
            api::MapStatus {
                name: "CONFIG".into(),
                entries: 1,
                max_entries: 1,
            },
        ],
        route_source: api::RouteSourceStatus {
            kind: "file".into(),
            path: Some("/etc/detour/routes.yaml".into()),
            synced: true,
            problems: vec![],
        },
        ready: true,
        flows: 2,
    }
}

#[test]
fn status_renders_fields_then_maps() {
    assert_text(
        &status::render(&status_snapshot()),
        "\
Agent:         detour 0.1.0, pid 4242, up 3m12s
Ready:         yes
Route source:  file /etc/detour/routes.yaml (synced)
Cgroup:        /sys/fs/cgroup/kubepods.slice
Programs:      detour_connect4, detour_connect6, detour_sockops
Proxy:         10.0.0.5:15001, [fd00::5]:15001
Live flows:    2
Pinned maps:   /sys/fs/bpf/detour

MAP      ENTRIES    MAX
STEERED        3  16384
CONFIG         1      1
",
    );
}

#[test]
fn status_not_synced_shows_why_and_the_problems() {
    let mut snapshot = status_snapshot();
    snapshot.ready = false;
    snapshot.maps.clear();
    snapshot.pin_dir = None;
    snapshot.route_source = api::RouteSourceStatus {
        kind: "kubernetes".into(),
        path: None,
        synced: false,
        problems: vec![
            "Sandbox team/feature-y: routing key feature-x is already claimed by Sandbox \
             team/feature-x, which is older"
                .into(),
        ],
    };
    assert_text(
        &status::render(&snapshot),
        "\
Agent:         detour 0.1.0, pid 4242, up 3m12s
Ready:         no (waiting for the route source)
Route source:  kubernetes (not synced)
Cgroup:        /sys/fs/cgroup/kubepods.slice
Programs:      detour_connect4, detour_connect6, detour_sockops
Proxy:         10.0.0.5:15001, [fd00::5]:15001
Live flows:    2
Pinned maps:   not pinned (`detour bpf` cannot read them)

Route source problems (these objects are ignored):
  - Sandbox team/feature-y: routing key feature-x is already claimed by Sandbox
    team/feature-x, which is older
",
    );
}

fn routes_snapshot() -> api::Routes {
    api::Routes {
        services: vec![
            api::ServiceRoutes {
                service: "default/ratings".into(),
                destinations: vec![api::Destination {
                    address: addr("10.96.0.11:9080"),
                    protocol: "auto".into(),
                }],
            },
            api::ServiceRoutes {
                service: "default/reviews".into(),
                destinations: vec![
                    api::Destination {
                        address: addr("10.96.0.10:8080"),
                        protocol: "http".into(),
                    },
                    api::Destination {
                        address: addr("[fd00:96::10]:8080"),
                        protocol: "http".into(),
                    },
                ],
            },
        ],
        sandboxes: vec![
            api::SandboxRoutes {
                sandbox: "empty".into(),
                routing_key: "nobody-home".into(),
                forks: vec![api::ForkRoutes {
                    service: "default/reviews".into(),
                    endpoints: vec![],
                    by_port: vec![],
                    ready: false,
                }],
            },
            api::SandboxRoutes {
                sandbox: "feature-x".into(),
                routing_key: "feature-x".into(),
                forks: vec![
                    api::ForkRoutes {
                        service: "default/ratings".into(),
                        endpoints: vec![],
                        by_port: vec![api::PortEndpoints {
                            port: 9080,
                            endpoints: vec![addr("10.244.1.7:9080")],
                        }],
                        ready: true,
                    },
                    api::ForkRoutes {
                        service: "default/reviews".into(),
                        endpoints: vec![addr("10.244.1.5:8080"), addr("10.244.2.9:8080")],
                        by_port: vec![],
                        ready: true,
                    },
                ],
            },
        ],
        route_groups: vec![api::GroupRoutes {
            route_group: "team-a".into(),
            routing_key: "team-a".into(),
            sandboxes: vec!["feature-x".into(), "empty".into()],
        }],
    }
}

#[test]
fn routes_render_one_endpoint_per_row() {
    assert_text(
        &routes::render(&routes_snapshot()),
        "\
SERVICE          DESTINATION         PROTOCOL
default/ratings  10.96.0.11:9080     auto
default/reviews  10.96.0.10:8080     http
                 [fd00:96::10]:8080  http

SANDBOX    KEY          SERVICE          PORT  ENDPOINT         READY
empty      nobody-home  default/reviews  *     -                no
feature-x  feature-x    default/ratings  9080  10.244.1.7:9080  yes
                        default/reviews  *     10.244.1.5:8080  yes
                                         *     10.244.2.9:8080

ROUTE GROUP  KEY     SANDBOXES
team-a       team-a  feature-x, empty
",
    );
}

#[test]
fn routes_without_any_say_so() {
    assert_text(
        &routes::render(&api::Routes::default()),
        "No routes: no service is steered.\n",
    );
}

fn decision(
    sandbox: Option<&str>,
    endpoint: &str,
    key: Option<&str>,
    reason: &str,
) -> api::Decision {
    api::Decision {
        destination: if sandbox.is_some() {
            "sandbox"
        } else {
            "baseline"
        }
        .into(),
        sandbox: sandbox.map(Into::into),
        endpoint: addr(endpoint),
        routing_key: key.map(Into::into),
        reason: reason.into(),
    }
}

#[test]
fn flows_render_the_route_of_each_connection() {
    let flow = |id, client: &str, requests, age, protocol: &str, last| api::Flow {
        id,
        client: addr(client),
        original_dst: addr("10.96.0.10:8080"),
        service: "default/reviews".into(),
        protocol: protocol.into(),
        requests,
        age_seconds: age,
        last_decision: last,
    };
    let flows = api::Flows {
        flows: vec![
            flow(
                1,
                "10.244.0.12:40312",
                3,
                192.4,
                "http1",
                Some(decision(
                    Some("feature-x"),
                    "10.244.1.5:8080",
                    Some("feature-x"),
                    "fork",
                )),
            ),
            flow(
                2,
                "10.244.0.12:40318",
                1,
                0.25,
                "http1",
                Some(decision(None, "10.96.0.10:8080", None, "no-key")),
            ),
            flow(3, "10.244.0.13:51000", 0, 4.0, "detecting", None),
            flow(4, "[fd00::13]:51002", 0, 12.0, "opaque", None),
        ],
    };
    assert_text(
        &flows::render(&flows),
        "\
CLIENT             ORIGINAL DST     SERVICE          REQS    AGE  ROUTE
10.244.0.12:40312  10.96.0.10:8080  default/reviews     3  3m12s  feature-x
10.244.0.12:40318  10.96.0.10:8080  default/reviews     1   0.2s  baseline
10.244.0.13:51000  10.96.0.10:8080  default/reviews     0   4.0s  -
[fd00::13]:51002   10.96.0.10:8080  default/reviews     0    12s  (opaque)
",
    );
    assert_text(
        &flows::render(&api::Flows::default()),
        "No live proxied connections.\n",
    );
}

#[test]
fn trace_lines_have_fixed_columns() {
    let event = |time, decision| {
        trace::TraceLine::Event(api::DecisionEvent {
            time,
            flow: 7,
            client: addr("10.244.0.12:40312"),
            service: "default/reviews".into(),
            method: "GET".into(),
            decision,
        })
    };
    let lines = [
        event(
            1_764_428_531.093_4,
            decision(
                Some("feature-x"),
                "10.244.1.5:8080",
                Some("feature-x"),
                "fork",
            ),
        ),
        event(
            1_764_428_532.5,
            decision(None, "10.96.0.10:8080", None, "no-key"),
        ),
        event(
            1_764_428_533.0,
            decision(
                None,
                "10.96.0.10:8080",
                Some("nobody-home"),
                "fork-no-ready-endpoints",
            ),
        ),
        event(
            1_764_428_533.25,
            decision(None, "10.96.0.10:8080", Some("unknown"), "no-route-for-key"),
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
TIME (UTC)    SERVICE           KEY           ENDPOINT            ROUTE
15:02:11.093  default/reviews   feature-x     10.244.1.5:8080     feature-x
15:02:12.500  default/reviews   -             10.96.0.10:8080     baseline
15:02:13.000  default/reviews   nobody-home   10.96.0.10:8080     baseline (fork not ready)
15:02:13.250  default/reviews   unknown       10.96.0.10:8080     baseline (no route)
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
        reason: "fork".into(),
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
        reason: "no-key".into(),
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

fn pinned_snapshot() -> crate::datapath::pinned::PinnedMaps {
    use detour_common::{
        CONFIG_HAS_PROXY4, CONFIG_HAS_PROXY6, Config, OrigDst, SockKey, Steered, ip6_words,
    };
    let proxy6: std::net::Ipv6Addr = "fd00::5".parse().expect("ip6");
    crate::datapath::pinned::PinnedMaps {
        steered: vec![
            (
                SockKey::new(addr("10.96.0.10:8080")),
                Steered {
                    service_id: 2,
                    flags: 0,
                },
            ),
            (
                SockKey::new(addr("[fd00:96::10]:8080")),
                Steered {
                    service_id: 2,
                    flags: 0,
                },
            ),
        ],
        orig_by_cookie: 0,
        orig_by_peer: vec![(
            SockKey::new(addr("10.244.0.12:40312")),
            OrigDst {
                dst: SockKey::new(addr("10.96.0.10:8080")),
                service_id: 2,
                family: detour_common::AF_INET,
                _pad: 0,
            },
        )],
        config: Config {
            proxy_ip4: u32::from_ne_bytes([10, 0, 0, 5]),
            proxy_ip6: ip6_words(proxy6.octets()),
            proxy_port4: 15001u16.to_be(),
            proxy_port6: 15001u16.to_be(),
            mark: 0x6474_0000,
            flags: CONFIG_HAS_PROXY4 | CONFIG_HAS_PROXY6,
        },
        counters: [12, 340, 12, 0, 0, 12],
    }
}

#[test]
fn bpf_maps_render_sizes_config_and_entries() {
    let maps = bpf::maps("/sys/fs/bpf/detour".into(), &pinned_snapshot());
    assert_eq!(
        maps.config.proxy_ipv4,
        Some(addr("10.0.0.5:15001")),
        "network-order config decoded"
    );
    assert_text(
        &bpf::render_maps(&maps),
        "\
Pinned under /sys/fs/bpf/detour

MAP             ENTRIES    MAX
STEERED               2  16384
ORIG_BY_COOKIE        0  16384
ORIG_BY_PEER          1  65536
CONFIG                1      1
COUNTERS              6      6

CONFIG
Proxy (IPv4):  10.0.0.5:15001
Proxy (IPv6):  [fd00::5]:15001
Own mark:      0x64740000 (the agent's sockets: never redirected)

STEERED: destinations redirected to the proxy
DESTINATION         SERVICE ID
10.96.0.10:8080              2
[fd00:96::10]:8080           2

ORIG_BY_PEER: redirected connects not yet accepted by the proxy
CLIENT             ORIGINAL DST     SERVICE ID
10.244.0.12:40312  10.96.0.10:8080           2
",
    );
}

#[test]
fn bpf_counters_render_in_program_order_and_json_by_name() {
    let counters = bpf::counters("/sys/fs/bpf/detour".into(), &pinned_snapshot());
    assert_text(
        &bpf::render_counters(&counters),
        "\
Pinned under /sys/fs/bpf/detour

COUNTER          VALUE  MEANING
redirected          12  connects redirected to the proxy
not_steered        340  connects to destinations not steered (untouched)
own_socket          12  the agent's own upstream connects (untouched)
no_proxy_family      0  steered, but no proxy address of that family
errors               0  internal errors (map full...): let through
rekeyed             12  redirects re-keyed by client address at SYN
",
    );
    assert_eq!(
        serde_json::to_value(&counters).expect("json"),
        serde_json::json!({
            "pin_dir": "/sys/fs/bpf/detour",
            "counters": {
                "redirected": 12, "not_steered": 340, "own_socket": 12,
                "no_proxy_family": 0, "errors": 0, "rekeyed": 12
            }
        })
    );
}

#[test]
fn version_and_log_level_render() {
    let mut versions = version::Versions {
        client: version::ClientVersion {
            version: "0.1.0".into(),
        },
        agent: Some(version::AgentVersion {
            version: "0.1.0".into(),
            pid: 4242,
            uptime_seconds: 7320,
            socket: "/run/detour/admin.sock".into(),
        }),
        agent_error: None,
    };
    assert_text(
        &version::render(&versions),
        "Client:  0.1.0\nAgent:   0.1.0 (pid 4242, up 2h02m, /run/detour/admin.sock)\n",
    );
    versions.agent = None;
    versions.agent_error = Some("agent not running: no socket at /x.sock".into());
    assert_text(
        &version::render(&versions),
        "Client:  0.1.0\nAgent:   unknown: agent not running: no socket at /x.sock\n",
    );
    assert_text(
        &log_level::render(&api::LogLevel {
            filter: "debug".into(),
        }),
        "Log filter now \"debug\".\n",
    );
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
