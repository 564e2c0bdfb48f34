//! Inherited keys: a fork's requests belong to its sandbox even when the
//! fork drops the routing key. A call chain of real servers: `front` (its
//! fork runs in the sandbox's fork pod cgroup and calls `back` without
//! passing anything on), `middle` (no sandbox forks it; it passes `baggage`
//! on to `back`) and `back` (forked, HTTP/1 and gRPC). A keyed request to
//! `front` reaches `front`'s fork, whose unkeyed call to `back` reaches
//! `back`'s fork; without a key everything is baseline; a key on a fork
//! pod's own request wins over inheritance; the unforked `middle` called by
//! the fork pod receives the sandbox's `baggage` member and, passing it on,
//! reaches `back`'s fork; a gRPC call from the fork pod with no metadata
//! reaches the fork and carries the member; each inheritance is counted.
//!
//! These need root. Without it each test fails and says so, unless
//! `DETOUR_SKIP_ROOT_TESTS=1` is set.

use detour_tests::{Agent, Cgroup, RequestLog, Topology, cmd::Proc, require_root, unique_name};

const HTTP: u16 = 8080;
const GRPC: u16 = 50051;
const GRPC_CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/grpc_client.py");
const MEMBER: &str = "detour-routing-key=feature-x";

/// Fields drop in order: servers and agent, then the gRPC servers' call
/// logs, the fork pod's cgroup, the node's, and the pods.
struct Setup {
    agent: Agent,
    _servers: Vec<Proc>,
    _logs: [RequestLog; 2],
    fork_pod: Cgroup,
    cgroup: Cgroup,
    net: Topology,
}

impl Setup {
    fn new() -> Self {
        let net = Topology::builder("si")
            .pod("client")
            .pod("front")
            .pod("front-fork")
            .pod("middle")
            .pod("back")
            .pod("back-fork")
            .build();
        let cgroup = Cgroup::new(&unique_name("detour-si-"));
        let fork_pod = cgroup.child("fork-pod");
        let ip = |pod: &str| net.pod(pod).ip4;
        let back = format!("http://{}:{HTTP}", ip("back"));
        let (grpc, grpc_log) = net.pod("back").grpc_server(GRPC);
        let (grpc_fork, grpc_fork_log) = net.pod("back-fork").grpc_server(GRPC);
        let servers = vec![
            net.pod("back").echo_server(HTTP),
            net.pod("back-fork").echo_server(HTTP),
            grpc,
            grpc_fork,
            // Pods of the node: processes of its (attached) cgroup.
            net.pod("front")
                .relay_server(HTTP, &back, false, Some(&cgroup)),
            // The fork drops the key: not instrumented.
            net.pod("front-fork")
                .relay_server(HTTP, &back, false, Some(&fork_pod)),
            net.pod("middle")
                .relay_server(HTTP, &back, true, Some(&cgroup)),
        ];
        let routes = format!(
            "services:
  - name: front
    addresses: [{front}]
    ports: [{{port: {HTTP}, protocol: http}}]
  - name: middle
    addresses: [{middle}]
    ports: [{{port: {HTTP}, protocol: http}}]
  - name: back
    addresses: [{back}]
    ports: [{{port: {HTTP}, protocol: http}}, {{port: {GRPC}, protocol: h2c}}]
sandboxes:
  - name: feature-x
    routingKey: feature-x
    forks:
      - service: default/front
        endpoints: [\"{front_fork}:{HTTP}\"]
      - service: default/back
        endpoints: [\"{back_fork}:{HTTP}\", \"{back_fork}:{GRPC}\"]
    podCgroups: [\"{fork_pod}\"]
",
            front = ip("front"),
            middle = ip("middle"),
            back = ip("back"),
            front_fork = ip("front-fork"),
            back_fork = ip("back-fork"),
            fork_pod = fork_pod.path().display(),
        );
        let agent = Agent::builder(&net, &cgroup).routes(&routes).spawn();
        Self {
            agent,
            _servers: servers,
            _logs: [grpc_log, grpc_fork_log],
            fork_pod,
            cgroup,
            net,
        }
    }

    /// `GET http://POD:8080PATH` with `headers`, run from pod `from` as a
    /// process of `cgroup`: (X-Served-By, X-Downstream, body).
    fn get(
        &self,
        from: &str,
        cgroup: &Cgroup,
        pod: &str,
        path: &str,
        headers: &[&str],
    ) -> (String, String, String) {
        let url = format!("http://{}:{HTTP}{path}", self.net.pod(pod).ip4);
        let mut args = vec!["-sS", "-m", "10", "-D", "/dev/stderr"];
        for header in headers {
            args.extend(["-H", header]);
        }
        args.push(&url);
        let output = self.net.pod(from).exec_in(cgroup, "curl", &args);
        let head = String::from_utf8_lossy(&output.stderr).to_string();
        assert!(output.status.success(), "curl {url} failed: {head}");
        let field = |name: &str| {
            head.lines()
                .find_map(|line| line.strip_prefix(name))
                .map_or_else(String::new, |value| value.trim().to_owned())
        };
        (
            field("X-Served-By: "),
            field("X-Downstream: "),
            String::from_utf8_lossy(&output.stdout).to_string(),
        )
    }
}

#[test]
fn a_forks_unkeyed_calls_inherit_its_sandboxs_key_and_carry_it_on() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let key = format!("baggage: {MEMBER}");

    // Keyed at the edge: the fork of front, then, although the fork drops
    // the key, the fork of back.
    let (served, downstream, _) = setup.get("client", &setup.cgroup, "front", "/", &[&key]);
    assert_eq!(
        (served.as_str(), downstream.as_str()),
        ("front-fork", "back-fork")
    );
    // No key anywhere: baseline throughout.
    let (served, downstream, _) = setup.get("client", &setup.cgroup, "front", "/", &[]);
    assert_eq!((served.as_str(), downstream.as_str()), ("front", "back"));

    // From the fork pod itself: no key inherits; a key of its own wins.
    let fork_pod = &setup.fork_pod;
    let (served, _, head) = setup.get("front-fork", fork_pod, "back", "/headers", &[]);
    assert_eq!(served, "back-fork");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("baggage: {MEMBER}\r\n")),
        "the forwarded request carries the member: {head:?}"
    );
    let other = "baggage: detour-routing-key=nobody";
    let (served, _, head) = setup.get("front-fork", fork_pod, "back", "/headers", &[other]);
    assert_eq!(
        served, "back",
        "the request's own key, routed nowhere: baseline"
    );
    assert!(
        !head.contains(MEMBER),
        "nothing added to a keyed request: {head:?}"
    );

    // An unforked service called by the fork gets the member and, passing
    // baggage on, reaches the fork of back.
    let (served, downstream, head) = setup.get("front-fork", fork_pod, "middle", "/headers", &[]);
    assert_eq!(
        (served.as_str(), downstream.as_str()),
        ("middle", "back-fork")
    );
    assert!(head.contains(MEMBER), "{head:?}");

    assert!(
        setup
            .agent
            .metric("detour_inherited_keys_total{sandbox=\"feature-x\"}")
            >= 3,
        "inheritance is counted"
    );

    // `detour explain --from` the fork pod says the same.
    let pod = fork_pod.path().display().to_string();
    let explain = setup
        .agent
        .cli_json(&["explain", "--service", "default/back", "--from", &pod]);
    assert_eq!(explain["reason"], "inherited-key", "{explain}");
    assert_eq!(explain["sandbox"], "feature-x", "{explain}");
}

#[test]
fn a_forks_grpc_calls_without_metadata_inherit_its_sandboxs_key() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let target = format!("{}:{GRPC}", setup.net.pod("back").ip4);
    let output = setup.net.pod("front-fork").exec_in(
        &setup.fork_pod,
        "/usr/bin/python3",
        &[GRPC_CLIENT, "unary", &target, "--count", "3"],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert_eq!(
        stdout.matches("\"served_by\": \"back-fork\"").count(),
        3,
        "{stdout}"
    );
    assert_eq!(
        stdout.matches(MEMBER).count(),
        3,
        "each call carries the member: {stdout}"
    );

    // The same calls from outside the fork pod: baseline, nothing added.
    let output = setup.net.pod("client").exec_in(
        &setup.cgroup,
        "/usr/bin/python3",
        &[GRPC_CLIENT, "unary", &target, "--count", "2"],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stdout.matches("\"served_by\": \"back\"").count(),
        2,
        "{stdout}"
    );
    assert!(!stdout.contains(MEMBER), "{stdout}");
}
