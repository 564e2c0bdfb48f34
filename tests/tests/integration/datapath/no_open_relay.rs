//! "No open relay": the proxy port forwards only connections that detour
//! itself redirected, and the agent's other surfaces leak nothing that would
//! help someone reach a sandbox.
//!
//! A direct connection to the proxy, from the node, from another pod's
//! namespace, or from a process inside the attached cgroup, is closed at once
//! with no response byte and no upstream connection, even when it carries a
//! complete request that names a steered service and a sandbox's routing key
//! (an open relay would let any pod reach any fork, or any address, through
//! the node's proxy). Routing keys are often user or session identifiers
//! that grant access to a sandbox: they never appear in the metrics, which
//! anyone who can reach the metrics port may read. (The admin socket, which
//! does show keys in `flows` and `trace`, is root-only: see `cli/errors.rs`.)
//!
//! These need root. Without it each test fails and says so, unless
//! `DETOUR_SKIP_ROOT_TESTS=1` is set.

use std::{collections::BTreeSet, net::SocketAddr, ops::Deref, process::Output};

use detour_tests::{
    Agent, Cgroup, Forked,
    agent::PROXY_PORT,
    cmd,
    netns::Netns,
    require_root,
    topology::{NODE_IP4, NODE_IP6},
};
use serde_json::Value;

const PORT: u16 = 8080;
const PROBE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/probe.py");
const REJECTED: &str = "detour_connections_rejected_total{reason=\"no_original_destination\"}";

/// Routing keys that look like nothing else in the exposition, so finding one
/// in `/metrics` can only mean it leaked.
const SANDBOX_KEY: &str = "k9q-sbx-4c1d7e";
const GROUP_KEY: &str = "k9q-grp-9e2b31";
const FALLBACK_KEY: &str = "k9q-fbk-3a5e08";
const UNKNOWN_KEY: &str = "k9q-unk-77f0c2";
/// The sandbox's name, which metrics do carry; unlike its key.
const SANDBOX: &str = "checkout-preview";

/// A client pod (in the cgroup), another pod (never in it), and `reviews`,
/// forked by the sandbox `checkout-preview` to `reviews-fork`.
/// `reviews` (with its fork), a client in the attached cgroup, and an
/// `other` pod outside it.
struct Setup(Forked);

impl Deref for Setup {
    type Target = Forked;

    fn deref(&self) -> &Forked {
        &self.0
    }
}

impl Setup {
    fn new() -> Self {
        Self(Forked::service("reviews", PORT).pod("other").build("dr"))
    }

    fn ip(&self, pod: &str) -> String {
        self.net.pod(pod).ip4.to_string()
    }

    /// `reviews` steered (IPv4 and IPv6) and forked by `checkout-preview`
    /// (key [`SANDBOX_KEY`]), which the route group `team-payments` (key
    /// [`GROUP_KEY`]) contains; `stale-preview` forks it with no endpoint.
    fn routes(&self) -> String {
        format!(
            "services:
  - name: reviews
    addresses: [{reviews4}, \"{reviews6}\"]
    ports: [{{port: {PORT}, protocol: http}}]
sandboxes:
  - name: {SANDBOX}
    routingKey: {SANDBOX_KEY}
    forks:
      - service: default/reviews
        endpoints: [\"{fork}:{PORT}\"]
  - name: stale-preview
    routingKey: {FALLBACK_KEY}
    forks:
      - service: default/reviews
        endpoints: []
routeGroups:
  - name: team-payments
    routingKey: {GROUP_KEY}
    sandboxes: [{SANDBOX}]
",
            reviews4 = self.ip("reviews"),
            reviews6 = self.net.pod("reviews").ip6,
            fork = self.ip("reviews-fork"),
        )
    }

    /// TCP connections each upstream pod's kernel has accepted so far, on
    /// any port: a relayed byte would need one.
    fn upstream_accepts(&self) -> [u64; 2] {
        ["reviews", "reviews-fork"].map(|pod| passive_opens(&self.net.pod(pod).netns))
    }

    /// A keyed request to `reviews` from the client pod in the cgroup, as
    /// detour is meant to be used; returns the pod that answered.
    fn steered_request(&self, header: &str) -> String {
        let url = format!("http://{}:{PORT}/", self.ip("reviews"));
        let output = run(
            &self.net.pod("client").netns,
            Some(&self.cgroup),
            "curl",
            &[
                "-sS",
                "-m",
                "10",
                "-o",
                "/dev/null",
                "-D",
                "-",
                "-H",
                header,
                &url,
            ],
        );
        served_by(&output)
    }
}

/// Where a connection attempt starts from.
struct Origin<'a> {
    what: &'static str,
    netns: &'a Netns,
    cgroup: Option<&'a Cgroup>,
}

/// Runs `program` in `netns`, inside `cgroup` if given.
fn run(netns: &Netns, cgroup: Option<&Cgroup>, program: &str, args: &[&str]) -> Output {
    let net = format!("--net={}", netns.path());
    let script = cgroup.map(Cgroup::enter_script);
    let mut full = vec![net.as_str(), "--"];
    if let Some(script) = &script {
        full.extend(["sh", "-c", script.as_str(), "sh"]);
    }
    full.push(program);
    full.extend_from_slice(args);
    cmd::output("nsenter", &full)
}

fn served_by(output: &Output) -> String {
    let headers = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "curl failed: {output:?}");
    headers
        .lines()
        .find_map(|l| l.strip_prefix("X-Served-By: "))
        .unwrap_or_else(|| panic!("no X-Served-By in {headers:?}"))
        .trim()
        .to_owned()
}

/// `TcpPassiveOpens` of a namespace: connections its listeners accepted.
fn passive_opens(netns: &Netns) -> u64 {
    let snmp = cmd::run(
        "nsenter",
        &[&format!("--net={}", netns.path()), "cat", "/proc/net/snmp"],
    );
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (Some(names), Some(values)) = (tcp.next(), tcp.next()) else {
        panic!("no Tcp lines in /proc/net/snmp:\n{snmp}");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "PassiveOpens")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or_else(|| panic!("no PassiveOpens in /proc/net/snmp:\n{snmp}"))
}

/// Every address the proxy listens on, as `ss` in the node namespace sees it.
fn proxy_listeners(node: &Netns) -> BTreeSet<SocketAddr> {
    let ss = cmd::run(
        "nsenter",
        &[
            &format!("--net={}", node.path()),
            "ss",
            "-ltnH",
            &format!("sport = :{PROXY_PORT}"),
        ],
    );
    ss.lines()
        .filter_map(|line| line.split_whitespace().nth(3))
        .map(|addr| {
            addr.parse()
                .unwrap_or_else(|e| panic!("ss address {addr:?}: {e}"))
        })
        .collect()
}

/// A complete request for the steered service that carries the sandbox's
/// key every way detour reads one.
fn keyed_request() -> Vec<u8> {
    format!(
        "GET /relay-probe HTTP/1.1\r\n\
         Host: reviews.default.svc.cluster.local:{PORT}\r\n\
         baggage: detour-routing-key={SANDBOX_KEY}\r\n\
         tracestate: sd-sandbox={SANDBOX_KEY}\r\n\
         uberctx-detour-routing-key: {SANDBOX_KEY}\r\n\
         Content-Length: 0\r\n\
         \r\n"
    )
    .into_bytes()
}

/// Bytes that are not HTTP, as a spliced protocol would send them.
const RAW_PAYLOAD: &[u8] = b"SSH-2.0-OpenSSH_9.6\r\n\x00\x01\x02\x03\xff relay me\r\n\r\n";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Sends the keyed request (with python and with curl) and the raw payload
/// from every origin to every target; asserts each connection is accepted,
/// then closed at once without a byte. Returns the number of attempts.
fn attempt_everything(origins: &[Origin<'_>], targets: &BTreeSet<SocketAddr>) -> u64 {
    let mut attempts = 0;
    for origin in origins {
        for target in targets {
            let (host, port) = (target.ip().to_string(), target.port().to_string());
            for (payload, name) in [
                (keyed_request(), "keyed request"),
                (RAW_PAYLOAD.to_vec(), "raw bytes"),
            ] {
                let output = run(
                    origin.netns,
                    origin.cgroup,
                    "python3",
                    &[PROBE, &host, &port, &hex(&payload), "5"],
                );
                let text = String::from_utf8_lossy(&output.stdout);
                let report: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
                    panic!(
                        "probe output ({e}): {text} {}",
                        String::from_utf8_lossy(&output.stderr)
                    )
                });
                let context = format!("{name} from {} to {target}: {report}", origin.what);
                assert_eq!(
                    report["connect"], "ok",
                    "the proxy listens there: {context}"
                );
                assert_eq!(report["received"], 0, "not one response byte: {context}");
                assert!(
                    report["end"] == "eof" || report["end"] == "reset",
                    "closed by the proxy, not left open: {context}"
                );
                attempts += 1;
            }
            // curl, as a user would try it: an empty reply (52), or a send
            // (55) or receive (56) failure when the close arrives first.
            let url = format!("http://{target}/relay-probe");
            let output = run(
                origin.netns,
                origin.cgroup,
                "curl",
                &[
                    "-sS",
                    "-m",
                    "5",
                    "-D",
                    "-",
                    "-H",
                    &format!("Host: reviews.default.svc.cluster.local:{PORT}"),
                    "-H",
                    &format!("baggage: detour-routing-key={SANDBOX_KEY}"),
                    &url,
                ],
            );
            assert!(
                matches!(output.status.code(), Some(52 | 55 | 56)),
                "curl from {} to {target}: {output:?}",
                origin.what
            );
            assert!(output.stdout.is_empty(), "no response: {output:?}");
            attempts += 1;
        }
    }
    attempts
}

#[test]
fn direct_connections_to_the_proxy_are_closed_and_reach_no_upstream() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let agent = Agent::builder(&setup.net, &setup.cgroup)
        .routes(&setup.routes())
        .spawn();
    let targets = proxy_listeners(setup.net.node());
    let expected: BTreeSet<SocketAddr> = [
        SocketAddr::from((NODE_IP4, PROXY_PORT)),
        SocketAddr::from((NODE_IP6, PROXY_PORT)),
    ]
    .into();
    // So every address the proxy has is tried below (127.0.0.1 is not one
    // here: see the loopback test for the standalone default).
    assert_eq!(targets, expected, "the proxy's listeners");
    let before = setup.upstream_accepts();

    let origins = [
        Origin {
            what: "the node",
            netns: setup.net.node(),
            cgroup: None,
        },
        Origin {
            what: "another pod's namespace",
            netns: &setup.net.pod("other").netns,
            cgroup: None,
        },
        Origin {
            what: "a process in the attached cgroup",
            netns: &setup.net.pod("client").netns,
            cgroup: Some(&setup.cgroup),
        },
    ];
    let attempts = attempt_everything(&origins, &targets);
    assert_eq!(attempts, 18);

    assert_eq!(
        setup.upstream_accepts(),
        before,
        "neither baseline nor fork saw a connection"
    );
    assert_eq!(
        agent.metric(REJECTED),
        attempts,
        "each attempt counted once"
    );
    assert_eq!(agent.bpf_event("redirected"), 0);
    assert_eq!(
        agent.bpf_event("record_missing"),
        6,
        "the cgroup's own dials of the proxy, seen by sock_ops at the SYN"
    );
    assert_eq!(
        agent.metric("detour_connections_total{service=\"default/reviews\"}"),
        0
    );

    // The same request through detour does reach the fork: the counters
    // above would have seen a relayed connection.
    assert_eq!(
        setup.steered_request(&format!("baggage: detour-routing-key={SANDBOX_KEY}")),
        "reviews-fork"
    );
    let after = setup.upstream_accepts();
    assert_eq!(after[1], before[1] + 1, "the fork accepted one connection");
    assert_eq!(after[0], before[0], "baseline none");
    assert_eq!(agent.metric(REJECTED), attempts);
}

/// Standalone default: the proxy on loopback of the node, the clients on the
/// node too. Direct connections to 127.0.0.1 and ::1 are refused just the same.
#[test]
fn loopback_proxy_closes_direct_connections_from_the_node() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let agent = Agent::builder(&setup.net, &setup.cgroup)
        .routes(&setup.routes())
        .proxy_addrs(&[
            &format!("127.0.0.1:{PROXY_PORT}"),
            &format!("[::1]:{PROXY_PORT}"),
        ])
        .spawn();
    let targets = proxy_listeners(setup.net.node());
    let expected: BTreeSet<SocketAddr> = [
        SocketAddr::from(([127, 0, 0, 1], PROXY_PORT)),
        SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, PROXY_PORT)),
    ]
    .into();
    assert_eq!(targets, expected, "the proxy's listeners");
    let before = setup.upstream_accepts();

    let node = setup.net.node();
    let origins = [
        Origin {
            what: "the node",
            netns: node,
            cgroup: None,
        },
        Origin {
            what: "a node process in the attached cgroup",
            netns: node,
            cgroup: Some(&setup.cgroup),
        },
    ];
    let attempts = attempt_everything(&origins, &targets);
    assert_eq!(attempts, 12);
    assert_eq!(setup.upstream_accepts(), before, "no upstream connection");
    assert_eq!(agent.metric(REJECTED), attempts);
    assert_eq!(agent.bpf_event("redirected"), 0);
    assert_eq!(agent.bpf_event("record_missing"), 6, "the cgroup's dials");

    // A node process in the cgroup is steered through the loopback proxy.
    let url = format!("http://{}:{PORT}/", setup.ip("reviews"));
    let output = run(
        node,
        Some(&setup.cgroup),
        "curl",
        &[
            "-sS",
            "-m",
            "10",
            "-o",
            "/dev/null",
            "-D",
            "-",
            "-H",
            &format!("baggage: detour-routing-key={SANDBOX_KEY}"),
            &url,
        ],
    );
    assert_eq!(served_by(&output), "reviews-fork");
    assert_eq!(agent.metric(REJECTED), attempts);
}

/// There is no option to export keys: labels carry service and sandbox
/// names only, so "unless enabled" means never.
#[test]
fn metrics_name_sandboxes_but_never_routing_keys() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let agent = Agent::builder(&setup.net, &setup.cgroup)
        .routes(&setup.routes())
        .arg("--routing-header")
        .arg("x-tenant")
        .spawn();

    let carriers: [fn(&str) -> String; 3] = [
        |key| format!("baggage: userid=7, detour-routing-key={key};ttl=60"),
        |key| format!("tracestate: vendor=abc, sd-sandbox={key}"),
        |key| format!("x-tenant: {key}"),
    ];
    let cases = [
        (SANDBOX_KEY, "reviews-fork"),
        (GROUP_KEY, "reviews-fork"),
        (FALLBACK_KEY, "reviews"),
        (UNKNOWN_KEY, "reviews"),
    ];
    for carrier in carriers {
        for (key, expected) in cases {
            let header = carrier(key);
            assert_eq!(setup.steered_request(&header), expected, "{header}");
        }
    }

    let metrics = agent
        .http_get("/metrics")
        .unwrap_or_else(|| panic!("no metrics:\n{}", agent.logs()));
    for key in [SANDBOX_KEY, GROUP_KEY, FALLBACK_KEY, UNKNOWN_KEY] {
        let leaks: Vec<&str> = metrics.lines().filter(|l| l.contains(key)).collect();
        assert!(leaks.is_empty(), "routing key {key} in /metrics: {leaks:?}");
    }
    assert!(
        !metrics.contains("k9q-"),
        "no part of a key either:\n{metrics}"
    );
    let sandbox = format!(
        "detour_requests_total{{service=\"default/reviews\",destination=\"sandbox\",sandbox=\"{SANDBOX}\",protocol=\"http1\"}}"
    );
    assert_eq!(
        agent.metric(&sandbox),
        6,
        "by sandbox name: key and group key"
    );
    assert_eq!(
        agent.metric(
            "detour_requests_total{service=\"default/reviews\",destination=\"baseline\",sandbox=\"\",protocol=\"http1\"}"
        ),
        6
    );
    assert_eq!(
        agent.metric("detour_fallbacks_total{reason=\"no_ready_endpoints\"}"),
        3
    );
}
