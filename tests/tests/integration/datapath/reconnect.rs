//! Connections that predate steering reconnect through detour: keep-alive
//! clients (`tests/clients/keepalive.py`, which retries a request once on a
//! fresh connection, as pooled clients do) hold a connection to a service
//! before it is steered, or while no agent runs; once it is steered, the
//! agent closes that connection from the kernel and the client's keyed
//! requests reach the fork. Connections outside the attached cgroup and to
//! destinations that are not steered are never closed.
//!
//! These need root. Without it each test fails and says so, unless
//! `DETOUR_SKIP_ROOT_TESTS=1` is set.

use std::{
    ops::Deref,
    process::{Child, Command, Stdio},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use detour_tests::{Agent, Forked, cmd::Proc, require_root};

const PORT: u16 = 8080;
const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/keepalive.py");
const KEY: [&str; 2] = ["baggage", "detour-routing-key=feature-x"];

/// `reviews` forked by `feature-x`, an unsteered `details`, and a client.
struct Setup {
    forked: Forked,
    _details: Proc,
}

impl Deref for Setup {
    type Target = Forked;

    fn deref(&self) -> &Forked {
        &self.forked
    }
}

impl Setup {
    fn new() -> Self {
        let forked = Forked::service("reviews", PORT).pod("details").build("dr");
        let details = forked.net.pod("details").echo_server(PORT);
        Self {
            forked,
            _details: details,
        }
    }

    fn ip(&self, pod: &str) -> String {
        self.net.pod(pod).ip4.to_string()
    }

    /// Routes with `reviews` forked by `feature-x`, or with nothing steered
    /// but a decoy service.
    fn routes(&self, steer_reviews: bool) -> String {
        if steer_reviews {
            self.forked.routes()
        } else {
            "services:\n  - name: decoy\n    addresses: [10.248.0.250]\n    ports: [{port: 9}]\n"
                .to_owned()
        }
    }

    fn agent(&self, steer_reviews: bool) -> Agent {
        Agent::builder(&self.net, &self.cgroup)
            .routes(&self.routes(steer_reviews))
            .spawn()
    }

    /// Waits (up to 10 s) until the client pod holds `count` established
    /// connections to `pod`'s port, then `settle` more: the clients started
    /// (however slow Python is to start under load) and sent their first
    /// request.
    fn wait_connected(&self, pod: &str, count: usize, settle: Duration) {
        let filter = format!("( dst = {} and dport = :{PORT} )", self.ip(pod));
        for _ in 0..200 {
            let output = self
                .net
                .pod("client")
                .exec("ss", &["-Htn", "state", "established", &filter]);
            if String::from_utf8_lossy(&output.stdout).lines().count() >= count {
                std::thread::sleep(settle);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the client never connected to {pod}");
    }

    /// `keepalive.py` to `pod` for `seconds`, keyed, in the cgroup or not.
    fn client(&self, pod: &str, seconds: &str, path: &str, in_cgroup: bool) -> Child {
        let ip = self.ip(pod);
        let port = PORT.to_string();
        let args = [
            CLIENT,
            ip.as_str(),
            port.as_str(),
            seconds,
            path,
            KEY[0],
            KEY[1],
        ];
        if in_cgroup {
            return self
                .net
                .pod("client")
                .spawn_in(&self.cgroup, "python3", &args);
        }
        Command::new("nsenter")
            .arg(format!("--net={}", self.net.pod("client").netns.path()))
            .args(["--", "python3"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("keepalive client")
    }
}

/// One request line of `keepalive.py`.
#[derive(Debug)]
struct Line {
    at: f64,
    outcome: String,
    connection: u32,
}

fn lines(child: Child) -> Vec<Line> {
    let output = child.wait_with_output().expect("client");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            let parts: Vec<&str> = line.split_whitespace().collect();
            Line {
                at: parts[0].parse().expect("time"),
                outcome: parts[1..parts.len() - 1].join(" "),
                connection: parts[parts.len() - 1].parse().expect("connection number"),
            }
        })
        .collect()
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Every request answered; baseline first, then (from some request on)
/// only the fork, the switch within `within` seconds of `since`.
fn assert_moves_to_the_fork(lines: &[Line], since: f64, within: f64) {
    assert!(
        lines.iter().all(|l| !l.outcome.starts_with("ERROR")),
        "no request failed: {lines:?}"
    );
    let switch = lines
        .iter()
        .position(|l| l.outcome == "200 reviews-fork")
        .unwrap_or_else(|| panic!("never reached the fork: {lines:?}"));
    assert!(switch > 0, "baseline before: {lines:?}");
    assert!(
        lines[switch..]
            .iter()
            .all(|l| l.outcome == "200 reviews-fork"),
        "{lines:?}"
    );
    assert!(
        lines[switch].at - since < within,
        "the fork within {within} s of steering, not {:.2} s: {lines:?}",
        lines[switch].at - since
    );
    assert_eq!(
        lines[switch].connection, 2,
        "one reconnect, through detour: {lines:?}"
    );
}

#[test]
fn a_connection_that_predates_steering_is_closed_and_its_client_reconnects_through_detour() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let agent = setup.agent(false);
    let bypassing = setup.client("reviews", "5", "/", true);
    let outside = setup.client("reviews", "5", "/", false);
    let unsteered = setup.client("details", "5", "/", true);
    setup.wait_connected("reviews", 2, Duration::from_millis(500));
    setup.wait_connected("details", 1, Duration::from_millis(0));
    let steered_at = now();
    agent.write_routes(&setup.routes(true));

    assert_moves_to_the_fork(&lines(bypassing), steered_at, 3.0);
    for (lines, server) in [(lines(outside), "reviews"), (lines(unsteered), "details")] {
        assert!(
            lines
                .iter()
                .all(|l| l.outcome == format!("200 {server}") && l.connection == 1),
            "never closed, never rerouted: {lines:?}"
        );
    }
    assert_eq!(
        agent.metric("detour_stale_connections_closed_total{service=\"default/reviews\"}"),
        1
    );
    assert!(
        agent
            .logs()
            .contains("closed a connection that bypassed the proxy"),
        "logged with service and client:\n{}",
        agent.logs()
    );
}

#[test]
fn a_request_in_flight_when_steering_starts_finishes_before_its_connection_is_closed() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let agent = setup.agent(false);
    // Each request takes 2 s at the server: steering starts while the first
    // is in flight, and it ends within the 2 s grace.
    let slow = setup.client("reviews", "5", "/slow?ms=2000", true);
    setup.wait_connected("reviews", 1, Duration::from_millis(600));
    let steered_at = now();
    agent.write_routes(&setup.routes(true));
    let lines = lines(slow);
    assert_moves_to_the_fork(&lines, steered_at, 4.5);
    // The request in flight at that moment (sent 0.4 s before it, or
    // earlier) was answered by baseline on the first connection: it was
    // not cut and retried.
    let in_flight: Vec<&Line> = lines.iter().filter(|l| l.at < steered_at - 0.4).collect();
    assert!(
        !in_flight.is_empty()
            && in_flight
                .iter()
                .all(|l| l.outcome == "200 reviews" && l.connection == 1),
        "{lines:?}"
    );
}

#[test]
fn the_next_agent_closes_what_went_direct_while_no_agent_ran() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let mut agent = setup.agent(true);
    agent.kill9();
    // Connected while no agent runs: straight to baseline.
    let client = setup.client("reviews", "6", "/", true);
    setup.wait_connected("reviews", 1, Duration::from_millis(500));
    let started_at = now();
    let next = setup.agent(true);
    assert_moves_to_the_fork(&lines(client), started_at, 4.0);
    assert_eq!(
        next.metric("detour_stale_connections_closed_total{service=\"default/reviews\"}"),
        1
    );
}

#[test]
fn status_flows_and_explain_count_a_connection_that_bypasses_the_proxy() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let agent = Agent::builder(&setup.net, &setup.cgroup)
        .routes(&setup.routes(false))
        .arg("--reconnect-grace")
        .arg("10s")
        .log_filter("info,detour::reconnect=debug")
        .spawn();
    // A 4 s request in flight on a direct connection when steering starts:
    // busy, so it is left to finish, and bypasses the proxy meanwhile.
    let slow = setup.client("reviews", "5", "/slow?ms=4000", true);
    setup.wait_connected("reviews", 1, Duration::from_millis(600));
    agent.write_routes(&setup.routes(true));
    std::thread::sleep(Duration::from_millis(1000));
    let cli = |args: &[&str]| -> serde_json::Value {
        let output = Command::new(detour_tests::detour_bin())
            .arg("--socket")
            .arg(agent.admin_socket())
            .args(args)
            .args(["-o", "json"])
            .output()
            .expect("detour cli");
        serde_json::from_slice(&output.stdout).expect("json")
    };
    assert_eq!(
        cli(&["status"])["bypassing_connections"],
        1,
        "{}",
        agent.logs()
    );
    assert_eq!(cli(&["flows"])["bypassing_connections"], 1);
    assert_eq!(
        cli(&["explain", "--service", "default/reviews"])["bypassing_connections"],
        1
    );
    let lines = lines(slow);
    assert!(
        lines.iter().all(|l| !l.outcome.starts_with("ERROR")),
        "{lines:?}"
    );
    assert_eq!(
        cli(&["status"])["bypassing_connections"],
        0,
        "closed once its request was answered"
    );
}
