//! `status`, `routes`, `flows`, `version` and `log-level` tables.

use super::{addr, assert_text, routing};
use crate::{
    admin::api,
    cli::{flows, log_level, routes, status, version},
};

fn status_snapshot() -> api::Status {
    api::Status {
        version: "0.1.0".into(),
        pid: 4242,
        uptime_seconds: 192,
        cgroup: "/sys/fs/cgroup/kubepods.slice".into(),
        cgroup_reason: "detected: the agent's own cgroup /kubepods.slice/x lies under it".into(),
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
        client_address:
            "kept: upstream connections leave from the client pod's network namespace (12 known)"
                .into(),
        bypassing_connections: Some(0),
        warnings: Vec::new(),
        fork_pods: Vec::new(),
    }
}

#[test]
fn status_renders_fields_then_maps() {
    assert_text(
        &status::render(&status_snapshot()),
        "\
Agent:           detour 0.1.0, pid 4242, up 3m12s
Ready:           yes
Route source:    file /etc/detour/routes.yaml (synced)
Cgroup:          /sys/fs/cgroup/kubepods.slice (detected: the agent's own cgroup /kubepods.slice/x lies under it)
Programs:        detour_connect4, detour_connect6, detour_sockops
Proxy:           10.0.0.5:15001, [fd00::5]:15001
Live flows:      2
Client address:  kept: upstream connections leave from the client pod's network namespace (12 known)
Bypassing:       0 connections to steered destinations bypass the proxy
Pinned maps:     /sys/fs/bpf/detour

MAP      ENTRIES    MAX
STEERED        3  16384
CONFIG         1      1
",
    );
}

#[test]
fn status_lists_the_fork_pods_on_the_node() {
    let mut snapshot = status_snapshot();
    snapshot.maps.clear();
    snapshot.fork_pods = vec![
        api::ForkPodStatus {
            sandbox: "shop/feature-x".into(),
            pod: "shop/orders-feature-x-7d9f".into(),
            inherits_key: true,
            keyless_forks: 2,
        },
        api::ForkPodStatus {
            sandbox: "shop/feature-y".into(),
            pod: "shop/orders-feature-y-c41a".into(),
            inherits_key: false,
            keyless_forks: 0,
        },
    ];
    let rendered = status::render(&snapshot);
    let table = rendered
        .split_once("Pinned maps:     /sys/fs/bpf/detour\n\n")
        .expect("the fields, then the table")
        .1;
    assert_text(
        table,
        "\
FORK POD                    SANDBOX         INHERITS KEY  KEYLESS FORKS
shop/orders-feature-x-7d9f  shop/feature-x  yes                       2
shop/orders-feature-y-c41a  shop/feature-y  no                        0
",
    );
}

#[test]
fn status_not_synced_shows_why_and_the_problems() {
    let mut snapshot = status_snapshot();
    snapshot.ready = false;
    snapshot.maps.clear();
    snapshot.pin_dir = None;
    snapshot.cgroup_reason = "set by --cgroup/DETOUR_CGROUP".into();
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
Agent:           detour 0.1.0, pid 4242, up 3m12s
Ready:           no (waiting for the route source)
Route source:    kubernetes (not synced)
Cgroup:          /sys/fs/cgroup/kubepods.slice (set by --cgroup/DETOUR_CGROUP)
Programs:        detour_connect4, detour_connect6, detour_sockops
Proxy:           10.0.0.5:15001, [fd00::5]:15001
Live flows:      2
Client address:  kept: upstream connections leave from the client pod's network namespace (12 known)
Bypassing:       0 connections to steered destinations bypass the proxy
Pinned maps:     not pinned (--pin-dir none: `detour bpf` cannot read them)

Route problems (not applied; everything else is in force):
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

#[test]
fn flows_render_the_route_of_each_connection() {
    let flow = |id, client: &str, requests, age, protocol: &str, last| api::Flow {
        id,
        client: addr(client),
        original_dst: addr("10.96.0.10:8080"),
        service: "default/reviews".into(),
        protocol: protocol.into(),
        requests,
        live_streams: if protocol == "h2" { 2 } else { 0 },
        age_seconds: age,
        last_decision: last,
        parked: id == 1,
    };
    let flows = api::Flows {
        bypassing_connections: None,
        flows: vec![
            flow(
                1,
                "10.244.0.12:40312",
                3,
                192.4,
                "http1",
                Some(routing(
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
                Some(routing(None, "10.96.0.10:8080", None, "no-key")),
            ),
            flow(3, "10.244.0.13:51000", 0, 4.0, "detecting", None),
            flow(4, "[fd00::13]:51002", 0, 12.0, "opaque", None),
            flow(
                5,
                "10.244.0.14:42000",
                120,
                60.0,
                "h2",
                Some(routing(
                    Some("feature-x"),
                    "10.244.1.5:8080",
                    Some("feature-x"),
                    "fork",
                )),
            ),
        ],
    };
    assert_text(
        &flows::render(&flows),
        "\
CLIENT             ORIGINAL DST     SERVICE                  REQS    AGE  ROUTE
10.244.0.12:40312  10.96.0.10:8080  default/reviews    3 (parked)  3m12s  feature-x
10.244.0.12:40318  10.96.0.10:8080  default/reviews             1   0.2s  baseline
10.244.0.13:51000  10.96.0.10:8080  default/reviews             0   4.0s  -
[fd00::13]:51002   10.96.0.10:8080  default/reviews             0    12s  (opaque)
10.244.0.14:42000  10.96.0.10:8080  default/reviews  120 (2 live)  1m00s  feature-x
",
    );
    assert_text(
        &flows::render(&api::Flows::default()),
        "No live proxied connections.\n",
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
