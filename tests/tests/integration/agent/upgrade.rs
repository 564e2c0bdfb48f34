//! Hitless upgrades: a new agent starts while the old one runs, takes over
//! its sockets through the handover socket, and the old one is then stopped
//! (SIGTERM), as a DaemonSet rolling update with `maxSurge: 1` does. Keyed
//! clients keep sending through all of it, on keep-alive connections
//! (`tests/clients/keepalive.py`, which retries once on a fresh connection
//! as pooled clients do) and on a new connection per request
//! (`tests/clients/fresh.py`, no retry): not one request may fail, and not
//! one keyed request may be answered by baseline.
//!
//! These need root. Without it each test fails and says so, unless
//! `DETOUR_SKIP_ROOT_TESTS=1` is set.

use std::{ops::Deref, process::Child, time::Duration};

use detour_tests::{Agent, Forked, require_root};

const PORT: u16 = 8080;
const KEEPALIVE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/keepalive.py");
const FRESH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/fresh.py");
const KEY: [&str; 2] = ["baggage", "detour-routing-key=feature-x"];

/// `reviews` forked by `feature-x`, and a client.
struct Setup(Forked);

impl Deref for Setup {
    type Target = Forked;

    fn deref(&self) -> &Forked {
        &self.0
    }
}

impl Setup {
    fn new() -> Self {
        Self(Forked::service("reviews", PORT).build("du"))
    }

    fn agent(&self) -> Agent {
        Agent::builder(&self.net, &self.cgroup)
            .routes(&self.routes())
            .log_filter("info")
            .spawn()
    }

    /// A successor to `predecessor`, ready (its own admin socket says so).
    fn successor(&self, predecessor: &Agent) -> Agent {
        let mut next = Agent::builder(&self.net, &self.cgroup)
            .routes(&self.routes())
            .log_filter("info")
            .succeeding(predecessor)
            .start();
        next.wait_admin_ready();
        next
    }

    /// `client` (keepalive.py or fresh.py) to `reviews` for `seconds`, in
    /// the attached cgroup, keyed or not.
    fn client(&self, client: &str, seconds: &str, keyed: bool) -> Child {
        let ip = self.net.pod("reviews").ip4.to_string();
        let port = PORT.to_string();
        let mut args = vec![client, ip.as_str(), port.as_str(), seconds, "/"];
        if keyed {
            args.extend(KEY);
        }
        self.net
            .pod("client")
            .spawn_in(&self.cgroup, "python3", &args)
    }
}

/// The outcome of every request a client sent ("200 reviews-fork", or
/// "ERROR <reason>").
fn outcomes(child: Child) -> Vec<String> {
    let output = child.wait_with_output().expect("client");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            let parts: Vec<&str> = line.split_whitespace().collect();
            parts[1..parts.len() - 1].join(" ")
        })
        .collect()
}

fn assert_all(outcomes: &[String], expected: &str, what: &str) {
    assert!(
        outcomes.len() > 20,
        "{what}: too few requests: {outcomes:?}"
    );
    let wrong: Vec<_> = outcomes.iter().filter(|o| *o != expected).collect();
    assert!(
        wrong.is_empty(),
        "{what}: {} of {} requests not \"{expected}\": {wrong:?}",
        wrong.len(),
        outcomes.len()
    );
}

#[test]
fn a_rolling_upgrade_under_load_fails_no_request_and_sends_no_keyed_request_to_baseline() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let mut old = setup.agent();
    let clients = [
        (setup.client(KEEPALIVE, "9", true), "200 reviews-fork"),
        (setup.client(KEEPALIVE, "9", true), "200 reviews-fork"),
        (setup.client(FRESH, "9", true), "200 reviews-fork"),
        (setup.client(FRESH, "9", true), "200 reviews-fork"),
        (setup.client(FRESH, "9", false), "200 reviews"),
    ];
    std::thread::sleep(Duration::from_secs(2));

    let new = setup.successor(&old);
    std::thread::sleep(Duration::from_secs(1));
    assert!(old.terminate().success(), "old agent exits cleanly");
    let old_log = old.logs();
    assert!(
        old_log.contains("handing over: stop accepting, then detach"),
        "the old agent stopped in the hand-over order:\n{old_log}"
    );

    for (client, expected) in clients {
        assert_all(&outcomes(client), expected, "through the upgrade");
    }
    // The new agent's programs redirect once the old ones are detached.
    assert!(new.bpf_event("redirected") > 0, "{}", new.logs());
}

#[test]
fn a_successor_that_dies_leaves_the_running_agent_in_charge_and_the_next_one_takes_over() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let mut old = setup.agent();
    // As on a node, the successor takes the admin socket's path too.
    let mut doomed = Agent::builder(&setup.net, &setup.cgroup)
        .routes(&setup.routes())
        .log_filter("info")
        .succeeding(&old)
        .sharing_admin_socket(&old)
        .start();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !old.logs().contains("successor ready") {
        assert!(
            std::time::Instant::now() < deadline,
            "no successor:\n{}",
            doomed.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Its admin socket is the successor's now.
    let socket = old.admin_socket().to_owned();
    let answered = || {
        std::process::Command::new("curl")
            .args(["-sf", "-m", "2", "--unix-socket"])
            .arg(&socket)
            .arg("http://detour/status")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !doomed.logs().contains("admin socket listening") {
        assert!(std::time::Instant::now() < deadline, "{}", doomed.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(answered(), "the successor serves the node's admin socket");
    doomed.kill9();
    // The old agent serves on (its programs were never detached), and its
    // admin and handover sockets are back for the node's CLI and the next
    // successor.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !answered() {
        assert!(
            std::time::Instant::now() < deadline,
            "the admin socket was not reclaimed:\n{}",
            old.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let client = setup.client(FRESH, "2", true);
    assert_all(
        &outcomes(client),
        "200 reviews-fork",
        "after the successor died",
    );

    let next = setup.successor(&old);
    let client = setup.client(FRESH, "5", true);
    std::thread::sleep(Duration::from_secs(1));
    assert!(old.terminate().success(), "old agent exits cleanly");
    assert_all(&outcomes(client), "200 reviews-fork", "through the upgrade");
    assert!(next.bpf_event("redirected") > 0, "{}", next.logs());
}
