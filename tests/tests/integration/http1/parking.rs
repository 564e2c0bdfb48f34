//! Parked connections: an HTTP/1 keep-alive connection idle for
//! `--park-idle-after` leaves its task for the agent's parking lot, and must
//! behave exactly as before for its client: its next requests are routed by
//! their own keys, its idle timeout holds, it shows in `detour flows`, it
//! keeps its `--max-connections` slot, and it does not hold the drain. Real
//! agent, real echo servers and a real client socket, in namespaces made per
//! test. (What parking saves is measured by `cargo xtask bench http`.)
//!
//! These need root. Without it each test fails and says so, unless
//! `DETOUR_SKIP_ROOT_TESTS=1` is set.

use std::{
    io::{BufRead, BufReader, Write},
    ops::Deref,
    process::{ChildStdin, ChildStdout},
    time::{Duration, Instant},
};

use detour_tests::{Agent, Forked, cmd::Proc, require_root};
use serde_json::Value;

const PORT: u16 = 8080;
const SESSION: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/session.py");
const PARKED: &str = "detour_parked_connections";

/// A client, `reviews` and its fork in sandbox `feature-x`.
struct Setup(Forked);

impl Deref for Setup {
    type Target = Forked;

    fn deref(&self) -> &Forked {
        &self.0
    }
}

impl Setup {
    fn new() -> Self {
        Self(Forked::service("reviews", PORT).build("dp"))
    }

    fn agent(&self, extra: &[&str]) -> Agent {
        let mut builder = self.0.agent();
        for arg in extra {
            builder = builder.arg(arg);
        }
        let mut agent = builder.spawn();
        agent.wait_ready();
        agent
    }

    /// One keep-alive connection from the client to `reviews`.
    fn session(&self) -> Session {
        let ip = self.net.pod("reviews").ip4.to_string();
        let mut child = self.net.pod("client").spawn_driven_in(
            &self.cgroup,
            "python3",
            &[SESSION, &ip, &PORT.to_string()],
        );
        let input = child.stdin.take().expect("stdin");
        let output = BufReader::new(child.stdout.take().expect("stdout"));
        Session {
            input: Some(input),
            output,
            _proc: Proc::new(child),
        }
    }
}

/// A driven client connection (`clients/session.py`).
struct Session {
    input: Option<ChildStdin>,
    output: BufReader<ChildStdout>,
    _proc: Proc,
}

impl Session {
    fn send(&mut self, command: &str) -> String {
        let input = self.input.as_mut().expect("session still open");
        writeln!(input, "{command}").expect("write to the client");
        input.flush().expect("flush");
        let mut line = String::new();
        self.output.read_line(&mut line).expect("client answer");
        line.trim().to_owned()
    }

    /// Closes the client's standard input: it closes its connection and exits.
    fn close(&mut self) {
        drop(self.input.take());
    }
}

/// The flows `detour flows` lists.
fn flows(agent: &Agent) -> Vec<Value> {
    agent.flows()["flows"]
        .as_array()
        .expect("flows list")
        .clone()
}

#[test]
fn a_parked_connection_is_listed_and_its_next_requests_are_routed_by_their_own_keys() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let agent = setup.agent(&["--park-idle-after", "200ms"]);
    let mut session = setup.session();
    assert_eq!(session.send("get feature-x"), "200 reviews-fork");

    agent.wait_for_metric(PARKED, 1);
    let listed = flows(&agent);
    assert_eq!(listed.len(), 1, "{listed:?}");
    let flow = &listed[0];
    assert_eq!(flow["parked"], true, "{flow}");
    assert_eq!(flow["protocol"], "http1", "{flow}");
    assert_eq!(flow["requests"], 1, "{flow}");
    assert_eq!(flow["last_decision"]["routing_key"], "feature-x", "{flow}");
    assert_eq!(flow["last_decision"]["sandbox"], "feature-x", "{flow}");
    let id = flow["id"].clone();

    // Resumed by its next request, which is routed by its own key.
    assert_eq!(session.send("get feature-x"), "200 reviews-fork");
    assert_eq!(session.send("get -"), "200 reviews");
    agent.wait_for_metric(PARKED, 1);
    let flow = &flows(&agent)[0];
    assert_eq!(flow["id"], id, "one connection, one flow: {flow}");
    assert_eq!(flow["requests"], 3, "{flow}");
    assert_eq!(flow["last_decision"]["destination"], "baseline", "{flow}");

    // A head that arrives in two writes wakes the connection with its first.
    assert_eq!(session.send("split feature-x"), "200 reviews-fork");
    assert_eq!(session.send("split -"), "200 reviews");
}

#[test]
fn a_parked_connection_keeps_its_slot_until_its_client_closes_it() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let agent = setup.agent(&["--park-idle-after", "200ms", "--max-connections", "1"]);
    let mut parked = setup.session();
    assert_eq!(parked.send("get -"), "200 reviews");
    agent.wait_for_metric(PARKED, 1);

    let mut second = setup.session();
    assert_eq!(
        second.send("get -"),
        "closed",
        "a parked connection still holds its --max-connections slot"
    );

    parked.close();
    agent.wait_for_metric(PARKED, 0);
    assert!(
        flows(&agent).is_empty(),
        "the closed connection left no flow"
    );
    let mut third = setup.session();
    assert_eq!(third.send("get feature-x"), "200 reviews-fork");
}

#[test]
fn a_parked_connection_is_closed_at_its_idle_timeout() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let agent = setup.agent(&["--park-idle-after", "200ms", "--idle-timeout", "2s"]);
    let mut session = setup.session();
    assert_eq!(session.send("get -"), "200 reviews");
    let answer = session.send("eof");
    let waited: f64 = answer
        .strip_prefix("eof ")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("expected the proxy to close the connection: {answer}"));
    assert!(
        (1.5..4.0).contains(&waited),
        "closed after {waited} s; the idle timeout is 2 s (a parked connection's to within 1 s)"
    );
    assert_eq!(agent.metric(PARKED), 0);
    assert!(flows(&agent).is_empty());
}

#[test]
fn parked_connections_are_closed_at_once_when_the_agent_drains() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let mut agent = setup.agent(&["--park-idle-after", "200ms"]);
    let mut sessions: Vec<Session> = (0..3).map(|_| setup.session()).collect();
    for session in &mut sessions {
        assert_eq!(session.send("get -"), "200 reviews");
    }
    agent.wait_for_metric(PARKED, 3);
    let started = Instant::now();
    assert!(agent.terminate().success());
    let stopped = started.elapsed();
    assert!(
        stopped < Duration::from_secs(5),
        "parked connections held the drain for {stopped:?}"
    );
    for session in &mut sessions {
        assert!(
            session.send("eof").starts_with("eof "),
            "closed by the drain"
        );
    }
}

#[test]
fn with_parking_off_an_idle_connection_waits_in_its_task() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let agent = setup.agent(&["--park-idle-after", "0s"]);
    let mut session = setup.session();
    assert_eq!(session.send("get feature-x"), "200 reviews-fork");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(agent.metric(PARKED), 0);
    let listed = flows(&agent);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["parked"], false);
    assert_eq!(session.send("get feature-x"), "200 reviews-fork");
}
