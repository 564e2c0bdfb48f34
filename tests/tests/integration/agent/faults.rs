//! Faults: the agent killed or stopped under load, routes churning under
//! load, and upstreams that hang or reset. Requests may fail only where the
//! fault makes that unavoidable, and the agent must say why.
//!
//! These need root. Without it each test fails and says so, unless
//! `DETOUR_SKIP_ROOT_TESTS=1` is set.

use std::{
    ops::Deref,
    process::Output,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use detour_tests::{Agent, Forked, Servers, cmd, require_root};

const PORT: u16 = 8080;
const RAW: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/raw.py");
const LOOP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/loop.py");
const KEY: &str = "detour-routing-key=feature-x";

/// `reviews` and its fork, each a server that answers, hangs or resets on
/// demand, and a client.
struct Setup(Forked);

impl Deref for Setup {
    type Target = Forked;

    fn deref(&self) -> &Forked {
        &self.0
    }
}

impl Setup {
    fn new() -> Self {
        Self(
            Forked::service("reviews", PORT)
                .servers(Servers::Faulty)
                .build("df"),
        )
    }

    fn ip(&self, pod: &str) -> String {
        self.net.pod(pod).ip4.to_string()
    }

    fn routes(&self, with_sandbox: bool, with_service: bool) -> String {
        let mut routes = String::from("services:\n");
        if with_service {
            routes.push_str(&format!(
                "  - name: reviews\n    addresses: [{}]\n    ports: [{{port: {PORT}, protocol: http}}]\n",
                self.ip("reviews")
            ));
        } else {
            routes = String::from("services: []\n");
        }
        if with_sandbox && with_service {
            routes.push_str(&format!(
                "sandboxes:\n  - name: feature-x\n    routingKey: feature-x\n    forks:\n      - service: default/reviews\n        endpoints: [\"{}:{PORT}\"]\n",
                self.ip("reviews-fork")
            ));
        }
        routes
    }

    fn agent(&self) -> Agent {
        self.0
            .agent()
            .arg("--upstream-timeout")
            .arg("1s")
            .log_filter("info")
            .spawn()
    }

    fn raw(&self, request: &[u8]) -> String {
        let ip = self.ip("reviews");
        let output = self.net.pod("client").exec_in_with_input(
            &self.cgroup,
            "python3",
            &[RAW, &ip, &PORT.to_string(), "3"],
            request,
        );
        String::from_utf8_lossy(&ok(&output)).into_owned()
    }

    /// The request loop (tests/clients/loop.py) for `seconds`, keyed.
    fn request_loop(&self, seconds: &str) -> Output {
        let ip = self.ip("reviews");
        self.net.pod("client").exec_in(
            &self.cgroup,
            "python3",
            &[LOOP, &ip, &PORT.to_string(), seconds, "baggage", KEY],
        )
    }
}

fn ok(output: &Output) -> Vec<u8> {
    assert!(
        output.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout.clone()
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

/// `(unix time, status, served by)` per request of a loop.py run.
fn samples(output: &Output) -> Vec<(f64, String, String)> {
    parse_samples(&String::from_utf8_lossy(&ok(output)))
}

fn parse_samples(text: &str) -> Vec<(f64, String, String)> {
    text.lines()
        .map(|line| {
            let mut parts = line.split_whitespace();
            let t = parts.next().and_then(|t| t.parse().ok()).expect("time");
            (
                t,
                parts.next().unwrap_or_default().to_owned(),
                parts.next().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
fn hanging_and_resetting_upstreams_get_504_and_a_closed_connection() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let agent = setup.agent();
    let hang =
        setup.raw(format!("GET /hang HTTP/1.1\r\nHost: r\r\nbaggage: {KEY}\r\n\r\n").as_bytes());
    assert!(hang.starts_with("HTTP/1.1 504 Gateway Timeout"), "{hang}");
    assert!(hang.contains("detour-error: upstream-timeout"), "{hang}");
    assert_eq!(
        agent.metric("detour_upstream_errors_total{reason=\"timeout\"}"),
        1
    );

    // The head already reached the client: the truncated response ends with
    // the connection, never with a second, made-up response.
    let reset =
        setup.raw(format!("GET /reset HTTP/1.1\r\nHost: r\r\nbaggage: {KEY}\r\n\r\n").as_bytes());
    assert!(
        reset.starts_with("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial"),
        "{reset}"
    );
    assert!(!reset.contains("detour-error"), "{reset}");
    // The agent carries on.
    let fine = setup.raw(
        format!("GET / HTTP/1.1\r\nHost: r\r\nbaggage: {KEY}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    assert!(fine.contains("hello from reviews-fork"), "{fine}");
}

#[test]
fn kill_9_under_load_fails_open_and_a_restart_resumes_steering() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let mut agent = setup.agent();
    let ip = setup.ip("reviews");
    let mut client = setup.net.pod("client").spawn_in(
        &setup.cgroup,
        "python3",
        &[LOOP, &ip, &PORT.to_string(), "4", "baggage", KEY],
    );
    let mut stdout = std::io::BufReader::new(client.stdout.take().expect("stdout"));
    let mut lines = String::new();
    // Kill only once requests are flowing through the agent.
    for _ in 0..5 {
        std::io::BufRead::read_line(&mut stdout, &mut lines).expect("loop output");
    }
    let killed_at = now();
    agent.kill9();
    std::io::Read::read_to_string(&mut stdout, &mut lines).expect("loop output");
    assert!(client.wait().expect("client").success());
    let samples = parse_samples(&lines);
    assert!(
        samples
            .iter()
            .any(|(t, _, by)| *t < killed_at && by == "reviews-fork"),
        "steered before the kill: {lines}"
    );
    let after: Vec<_> = samples
        .iter()
        .filter(|(t, _, _)| *t > killed_at + 0.5)
        .collect();
    assert!(after.len() > 10, "{lines}");
    assert!(
        after
            .iter()
            .all(|(_, status, by)| status == "200" && by == "reviews"),
        "after the kill every request reaches baseline directly: {after:?}"
    );
    drop(agent);

    let restarted = setup.agent();
    let again = setup.raw(
        format!("GET / HTTP/1.1\r\nHost: r\r\nbaggage: {KEY}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    assert!(
        again.contains("hello from reviews-fork"),
        "steering resumed: {again}"
    );
    drop(restarted);
}

#[test]
fn sigterm_lets_an_in_flight_request_finish() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let mut agent = setup.agent();
    std::thread::scope(|scope| {
        let slow = scope.spawn(|| setup.raw(format!("GET /slow?ms=900 HTTP/1.1\r\nHost: r\r\nbaggage: {KEY}\r\nConnection: close\r\n\r\n").as_bytes()));
        // Stop the agent only once the request is in its hands.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while agent.metric("detour_requests_total{service=\"default/reviews\",destination=\"sandbox\",sandbox=\"feature-x\",protocol=\"http1\"}") == 0
            && agent.metric("detour_connections_total{service=\"default/reviews\"}") == 0
        {
            assert!(std::time::Instant::now() < deadline, "the slow request never reached the agent");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(200));
        let status = agent.terminate();
        assert!(status.success(), "clean exit: {status}");
        let response = slow.join().expect("slow client");
        assert!(
            response.starts_with("HTTP/1.1 200 OK")
                && response.contains("slow hello from reviews-fork"),
            "{response}"
        );
    });
}

#[test]
fn route_churn_under_load_fails_no_request_and_the_map_ends_exact() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let agent = setup.agent();
    std::thread::scope(|scope| {
        let client = scope.spawn(|| setup.request_loop("4"));
        for i in 0..60 {
            agent.write_routes(&setup.routes(i % 2 == 0, true));
            std::thread::sleep(Duration::from_millis(50));
        }
        let samples = samples(&client.join().expect("client"));
        assert!(samples.len() > 40, "{samples:?}");
        for (_, status, by) in &samples {
            assert_eq!(status, "200", "{samples:?}");
            assert!(by == "reviews" || by == "reviews-fork", "{by}");
        }
        assert!(samples.iter().any(|(_, _, by)| by == "reviews-fork"));
    });
    // The kernel map follows the last file exactly.
    let steered = |agent: &Agent| {
        let path = agent.pin_dir().join("STEERED").display().to_string();
        let dump = cmd::run("bpftool", &["-j", "map", "dump", "pinned", &path]);
        dump.matches("\"key\"").count()
    };
    agent.write_routes(&setup.routes(false, false));
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(steered(&agent), 0, "no service: nothing steered");
    agent.write_routes(&setup.routes(true, true));
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(steered(&agent), 1, "one destination");
}

#[test]
fn sigterm_closes_idle_keep_alive_connections_instead_of_waiting_for_them() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let mut agent = setup.agent();
    let ip = setup.ip("reviews");
    // One request, then the connection is held open, idle, for 20 s.
    let script = format!(
        "import http.client, time\n\
         c = http.client.HTTPConnection('{ip}', {PORT}, timeout=30)\n\
         c.request('GET', '/'); c.getresponse().read()\n\
         print('idle', flush=True)\n\
         time.sleep(20)\n"
    );
    let mut client = setup
        .net
        .pod("client")
        .spawn_in(&setup.cgroup, "python3", &["-c", &script]);
    let mut line = String::new();
    let mut stdout = std::io::BufReader::new(client.stdout.take().expect("stdout"));
    std::io::BufRead::read_line(&mut stdout, &mut line).expect("client output");
    assert_eq!(line.trim(), "idle");
    let started = std::time::Instant::now();
    let status = agent.terminate();
    assert!(status.success(), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "an idle connection held shutdown for {:?}",
        started.elapsed()
    );
    let _ = client.kill();
    let _ = client.wait();
}
