//! Per-stream HTTP/2 steering with real gRPC peers: grpcio (Python) clients
//! in the attached cgroup, grpcio servers as baseline and fork, the real
//! agent routing each stream of one channel by its own metadata.
//!
//! These need root. Without it each test fails and says so, unless
//! `DETOUR_SKIP_ROOT_TESTS=1` is set.

use std::{ops::Deref, thread, time::Duration};

use detour_tests::{Agent, Forked, Servers, cmd::Proc, require_root, topology::RequestLog};
use serde_json::Value;

mod lifecycle;

const PORT: u16 = 50051;
/// Nothing listens here in the fork pod: a fork that refuses connections.
const DEAD_PORT: u16 = 50099;
const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/grpc_client.py");

/// A client, a baseline `greeter` pod and its fork, each running the gRPC
/// test server; `greeter` is declared `h2c` (as appProtocol `grpc` would).
/// The servers are the test's own: the fork's may be stopped and restarted,
/// and started with settings of its own.
struct Setup {
    forked: Forked,
    _base: Proc,
    fork: Option<Proc>,
    base_log: RequestLog,
    fork_log: RequestLog,
}

impl Deref for Setup {
    type Target = Forked;

    fn deref(&self) -> &Forked {
        &self.forked
    }
}

impl Setup {
    fn new() -> Self {
        Self::with_fork_env(&[])
    }

    fn with_fork_env(env: &[(&str, &str)]) -> Self {
        let forked = Forked::service("greeter", PORT)
            .protocol("h2c")
            .servers(Servers::None)
            .pod("greeter-fork2")
            .build("dg");
        let (base, base_log) = forked.baseline().grpc_server(PORT);
        let (fork, fork_log) = forked.fork().grpc_server_with(PORT, env);
        Self {
            forked,
            _base: base,
            fork: Some(fork),
            base_log,
            fork_log,
        }
    }

    fn ip(&self, pod: &str) -> String {
        self.net.pod(pod).ip4.to_string()
    }

    fn routes(&self, protocol: &str, fork_port: u16) -> String {
        self.routes_to("greeter-fork", protocol, fork_port)
    }

    fn routes_to(&self, fork_pod: &str, protocol: &str, fork_port: u16) -> String {
        format!(
            "services:
  - name: greeter
    addresses: [{base}]
    ports: [{{port: {PORT}, protocol: {protocol}}}]
sandboxes:
  - name: feature-x
    routingKey: feature-x
    forks:
      - service: default/greeter
        endpoints: [\"{fork}:{fork_port}\"]
",
            base = self.ip("greeter"),
            fork = self.ip(fork_pod),
        )
    }

    fn agent(&self) -> Agent {
        self.agent_with(&self.routes("h2c", PORT))
    }

    fn agent_with(&self, routes: &str) -> Agent {
        Agent::builder(&self.net, &self.cgroup)
            .routes(routes)
            .log_filter("info,detour::proxy=debug")
            .spawn()
    }

    /// Runs a `grpc_client.py` scenario from the client pod (in the cgroup)
    /// against the baseline address; one JSON value per output line.
    fn client(&self, scenario: &str, args: &[&str]) -> Vec<Value> {
        let output = self.spawn_client(scenario, args).wait_with_output();
        parse_client(scenario, &output.expect("grpc client"))
    }

    /// [`Setup::client`], started in the background.
    fn spawn_client(&self, scenario: &str, args: &[&str]) -> std::process::Child {
        let target = format!("{}:{PORT}", self.ip("greeter"));
        let mut all = vec![CLIENT, scenario, target.as_str()];
        all.extend_from_slice(args);
        self.net
            .pod("client")
            .spawn_in(&self.cgroup, "python3", &all)
    }

    /// The one line a single-call scenario prints.
    fn call(&self, scenario: &str, args: &[&str]) -> Value {
        let mut lines = self.client(scenario, args);
        assert_eq!(lines.len(), 1, "one line from {scenario}: {lines:?}");
        lines.remove(0)
    }

    /// Established TCP connections from the client pod to `pod`'s gRPC port.
    fn client_connections_to(&self, pod: &str) -> usize {
        let filter = format!("( dst = {} and dport = :{PORT} )", self.ip(pod));
        let output = self
            .net
            .pod("client")
            .exec("ss", &["-Htn", "state", "established", &filter]);
        String::from_utf8_lossy(&output.stdout).lines().count()
    }

    /// Established TCP connections to the gRPC port in `pod`'s namespace.
    fn connections_to(&self, pod: &str) -> usize {
        let output = self.net.pod(pod).exec(
            "ss",
            &[
                "-Htn",
                "state",
                "established",
                &format!("( sport = :{PORT} )"),
            ],
        );
        String::from_utf8_lossy(&output.stdout).lines().count()
    }
}

/// The JSON lines of a finished `grpc_client.py`.
fn parse_client(scenario: &str, output: &std::process::Output) -> Vec<Value> {
    {
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "grpc_client {scenario} failed: {}\n{stdout}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
            .lines()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| panic!("bad line {line:?}: {e}"))
            })
            .collect()
    }
}

/// Every call succeeded, keyed ones at the fork and the others at baseline.
fn assert_each_routed_by_its_key(calls: &[Value]) {
    for call in calls {
        assert_eq!(call["code"], "OK", "{call}");
        let expected = if call["keyed"] == true {
            "greeter-fork"
        } else {
            "greeter"
        };
        assert_eq!(served_by(call), expected, "{call}");
    }
}

fn served_by(line: &Value) -> &str {
    line["served_by"].as_str().unwrap_or("none")
}

#[test]
fn one_channel_routes_each_unary_call_by_its_own_key() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let agent = setup.agent();
    let calls = setup.client(
        "unary",
        &["--key", "feature-x", "--count", "10", "--alternate"],
    );
    assert_eq!(calls.len(), 10, "{calls:?}");
    assert_each_routed_by_its_key(&calls);
    assert_eq!(
        agent.metric("detour_connections_by_protocol_total{protocol=\"h2\"}"),
        1,
        "one channel, one connection"
    );
    assert_eq!(
        agent.metric(
            "detour_requests_total{service=\"default/greeter\",destination=\"sandbox\",sandbox=\"feature-x\",protocol=\"h2\"}"
        ),
        5
    );
    assert_eq!(
        setup.fork_log.lines().len(),
        5,
        "{:?}",
        setup.fork_log.lines()
    );
    assert_eq!(
        setup.base_log.lines().len(),
        5,
        "{:?}",
        setup.base_log.lines()
    );
}

#[test]
fn streaming_calls_of_every_kind_reach_the_fork_and_baseline() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let _agent = setup.agent();
    for (key, expected) in [(Some("feature-x"), "greeter-fork"), (None, "greeter")] {
        let key_args: Vec<&str> = key.map(|k| vec!["--key", k]).unwrap_or_default();
        let mut args = key_args.clone();
        args.extend(["--count", "5", "--interval-ms", "20", "--size", "1000"]);
        let lines = setup.client("server-stream", &args);
        let done = lines.last().expect("a done line");
        assert_eq!(done["code"], "OK", "{lines:?}");
        assert_eq!(done["messages"], 5, "{lines:?}");
        for message in &lines[..lines.len() - 1] {
            assert_eq!(served_by(message), expected, "{message}");
        }

        let mut args = key_args.clone();
        args.extend(["--count", "20", "--size", "5000"]);
        let done = setup.call("client-stream", &args);
        assert_eq!(done["code"], "OK", "{done}");
        assert_eq!(done["count"], 20, "{done}");
        assert_eq!(done["bytes"], 100_000, "{done}");
        assert_eq!(served_by(&done), expected, "{done}");

        let mut args = key_args;
        args.extend(["--count", "10", "--size", "3000"]);
        let lines = setup.client("bidi", &args);
        let done = lines.last().expect("a done line");
        assert_eq!(done["code"], "OK", "{lines:?}");
        assert_eq!(done["messages"], 10, "{lines:?}");
        assert_eq!(done["all_equal"], true, "{lines:?}");
        assert_eq!(served_by(done), expected, "{lines:?}");
    }
}

#[test]
fn statuses_details_and_trailers_only_responses_reach_the_client() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let _agent = setup.agent();
    let failed = setup.call(
        "fail",
        &[
            "--key",
            "feature-x",
            "--code",
            "NOT_FOUND",
            "--details",
            "no such thing",
        ],
    );
    assert_eq!(failed["code"], "NOT_FOUND", "{failed}");
    assert_eq!(failed["details"], "no such thing", "{failed}");
    assert_eq!(failed["trailing"]["x-detail"], "greeter-fork", "{failed}");
    assert_eq!(
        failed["trailing"]["x-detail-bin"], "0001666f726b2d64657461696c",
        "binary trailer bytes arrive intact: {failed}"
    );
    assert_eq!(served_by(&failed), "greeter-fork", "{failed}");

    let only = setup.call(
        "fail",
        &[
            "--key",
            "feature-x",
            "--code",
            "PERMISSION_DENIED",
            "--trailers-only",
        ],
    );
    assert_eq!(only["code"], "PERMISSION_DENIED", "{only}");
    assert_eq!(only["trailing"]["x-detail"], "greeter-fork", "{only}");
}

#[test]
fn four_mib_messages_go_both_ways() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let _agent = setup.agent();
    for (key, expected) in [("feature-x", "greeter-fork"), ("nobody", "greeter")] {
        let big = setup.call("big", &["--key", key, "--size", "4194304"]);
        assert_eq!(big["code"], "OK", "{big}");
        assert_eq!(big["equal"], true, "{big}");
        assert_eq!(big["received"], 4_194_304, "{big}");
        assert_eq!(served_by(&big), expected, "{big}");
    }
}

#[test]
fn two_hundred_concurrent_calls_with_mixed_keys_on_one_connection_are_not_misrouted() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let agent = setup.agent();
    let calls = setup.client(
        "concurrent",
        &["--key", "feature-x", "--count", "200", "--hold-ms", "200"],
    );
    assert_eq!(calls.len(), 200);
    assert_each_routed_by_its_key(&calls);
    assert_eq!(
        agent.metric("detour_connections_by_protocol_total{protocol=\"h2\"}"),
        1
    );
}

#[test]
fn a_cancel_and_a_deadline_reset_the_upstream_stream() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let _agent = setup.agent();
    let cancelled = setup.call("cancel", &["--key", "feature-x", "--after-ms", "300"]);
    assert_eq!(cancelled["code"], "CANCELLED", "{cancelled}");
    let expired = setup.call("deadline", &["--key", "feature-x", "--timeout-ms", "300"]);
    assert_eq!(expired["code"], "DEADLINE_EXCEEDED", "{expired}");
    let seen = wait_for(|| {
        let lines = setup.fork_log.lines();
        (lines
            .iter()
            .filter(|l| l.starts_with("cancelled Slow"))
            .count()
            == 2)
            .then_some(lines)
    });
    assert!(
        seen.is_some(),
        "the fork saw both calls cancelled: {:?}",
        setup.fork_log.lines()
    );
}

#[test]
fn a_fork_that_refuses_gets_unavailable_quickly_and_unkeyed_calls_still_succeed() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let agent = setup.agent_with(&setup.routes("h2c", DEAD_PORT));
    let refused = setup.call("unary", &["--key", "feature-x"]);
    assert_eq!(refused["code"], "UNAVAILABLE", "{refused}");
    let unkeyed = setup.call("unary", &[]);
    assert_eq!(unkeyed["code"], "OK", "{unkeyed}");
    assert_eq!(served_by(&unkeyed), "greeter", "{unkeyed}");
    assert!(
        agent.metric("detour_upstream_errors_total{reason=\"connect\"}") >= 1,
        "counted"
    );
}

/// Polls `check` for up to 5 s.
fn wait_for<T>(mut check: impl FnMut() -> Option<T>) -> Option<T> {
    for _ in 0..50 {
        if let Some(found) = check() {
            return Some(found);
        }
        thread::sleep(Duration::from_millis(100));
    }
    None
}
