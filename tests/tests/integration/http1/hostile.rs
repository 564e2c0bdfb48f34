//! Hostile clients: smuggling payloads, slowloris, connection floods, deep
//! pipelines and crowds of idle keep-alive connections. The proxy must refuse or bound each without hurting other
//! clients, and nothing malformed may reach an upstream.
//!
//! These need root. Without it each test fails and says so, unless
//! `DETOUR_SKIP_ROOT_TESTS=1` is set.

use std::{
    ops::Deref,
    time::{Duration, Instant},
};

use detour_tests::{Agent, Forked, Servers, require_root};

const PORT: u16 = 8080;
const RAW: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/raw.py");
const IDLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/idle.py");
const CORPUS: &str = include_str!("../../../corpus/smuggling.txt");

/// `reviews` (logging each request) with its fork and a client.
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
                .servers(Servers::LoggedEcho)
                .build("dx"),
        )
    }

    fn agent(&self, extra: &[&str]) -> Agent {
        let mut builder = self.0.agent().arg("--head-timeout").arg("1s");
        for arg in extra {
            builder = builder.arg(arg);
        }
        builder.spawn()
    }

    /// Raw bytes from the client; every byte received until close or 2 s of silence.
    fn raw(&self, request: &[u8]) -> String {
        let ip = self.net.pod("reviews").ip4.to_string();
        let output = self.net.pod("client").exec_in_with_input(
            &self.cgroup,
            "python3",
            &[RAW, &ip, &PORT.to_string(), "2"],
            request,
        );
        assert!(
            output.status.success(),
            "raw client failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// A python program run in the client pod, in the cgroup.
    fn python(&self, script: &str) -> String {
        let output = self
            .net
            .pod("client")
            .exec_in(&self.cgroup, "python3", &["-c", script]);
        assert!(
            output.status.success(),
            "client failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

/// The corpus entries: (name, payload bytes).
fn corpus() -> Vec<(String, Vec<u8>)> {
    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    for line in CORPUS.lines() {
        if let Some(name) = line.strip_prefix("### ") {
            entries.push((name.to_owned(), Vec::new()));
        } else if !line.starts_with('#')
            && let Some((_, payload)) = entries.last_mut()
        {
            payload.extend(unescape(line));
        }
    }
    entries
}

fn unescape(line: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1)) {
            (b'\\', Some(b'r')) => (out.push(b'\r'), i += 2).1,
            (b'\\', Some(b'n')) => (out.push(b'\n'), i += 2).1,
            (b'\\', Some(b'x')) => {
                let hex = std::str::from_utf8(&bytes[i + 2..i + 4]).expect("hex escape");
                out.push(u8::from_str_radix(hex, 16).expect("hex escape"));
                i += 4;
            }
            (byte, _) => (out.push(byte), i += 1).1,
        }
    }
    out
}

#[test]
fn the_smuggling_corpus_is_refused_and_reaches_no_upstream() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let _agent = setup.agent(&[]);
    let entries = corpus();
    assert!(entries.len() >= 20, "the corpus loaded");
    for (name, payload) in &entries {
        let response = setup.raw(payload);
        assert!(
            response.starts_with("HTTP/1.1 400 "),
            "{name}: {response:?}"
        );
        assert!(response.contains("detour-error: "), "{name}: {response:?}");
    }
    assert_eq!(
        setup.baseline_log().lines(),
        Vec::<String>::new(),
        "nothing reached the upstream"
    );
}

#[test]
fn slowloris_connections_time_out_without_blocking_others() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let _agent = setup.agent(&[]);
    let ip = setup.net.pod("reviews").ip4;
    // 40 connections each trickle a head, a byte every 100 ms, while one
    // ordinary client makes requests.
    let script = format!(
        "import socket, threading, time, http.client\n\
         results = []\n\
         def slow():\n\
         \x20   s = socket.create_connection(('{ip}', {PORT}))\n\
         \x20   s.settimeout(5)\n\
         \x20   try:\n\
         \x20       for b in b'GET / HTTP/1.1\\r\\nHost: r\\r\\nX-Slow: ' + b'a' * 100:\n\
         \x20           s.send(bytes([b])); time.sleep(0.1)\n\
         \x20   except OSError:\n\
         \x20       pass\n\
         \x20   try:\n\
         \x20       results.append(s.recv(100).split(b'\\r\\n')[0].decode())\n\
         \x20   except OSError as e:\n\
         \x20       results.append(type(e).__name__)\n\
         threads = [threading.Thread(target=slow) for _ in range(40)]\n\
         [t.start() for t in threads]\n\
         time.sleep(0.3)\n\
         worst = 0\n\
         for _ in range(5):\n\
         \x20   t = time.monotonic()\n\
         \x20   c = http.client.HTTPConnection('{ip}', {PORT}, timeout=5)\n\
         \x20   c.request('GET', '/'); c.getresponse().read(); c.close()\n\
         \x20   worst = max(worst, time.monotonic() - t)\n\
         [t.join() for t in threads]\n\
         print(worst)\n\
         print(sorted(set(results)))\n"
    );
    let started = Instant::now();
    let output = setup.python(&script);
    let mut lines = output.lines();
    let worst: f64 = lines
        .next()
        .and_then(|l| l.parse().ok())
        .expect("worst latency");
    assert!(
        worst < 0.5,
        "an ordinary request waited {worst}s behind slowloris clients"
    );
    assert_eq!(
        lines.next(),
        Some("['HTTP/1.1 408 Request Timeout']"),
        "{output}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the head timeout bounded them"
    );
}

#[test]
fn a_connection_flood_beyond_the_limit_is_refused_and_counted() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let agent = setup.agent(&["--max-connections", "20"]);
    let ip = setup.net.pod("reviews").ip4;
    let script = format!(
        "import socket, time, http.client\n\
         held = [socket.create_connection(('{ip}', {PORT})) for _ in range(30)]\n\
         time.sleep(0.5)\n\
         closed = 0\n\
         for s in held:\n\
         \x20   s.settimeout(0.2)\n\
         \x20   try:\n\
         \x20       closed += s.recv(1) == b''\n\
         \x20   except socket.timeout:\n\
         \x20       pass\n\
         \x20   except OSError:\n\
         \x20       closed += 1\n\
         print(closed)\n\
         [s.close() for s in held]\n\
         time.sleep(0.5)\n\
         c = http.client.HTTPConnection('{ip}', {PORT}, timeout=5)\n\
         c.request('GET', '/'); r = c.getresponse(); r.read()\n\
         print(r.status)\n"
    );
    let output = setup.python(&script);
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(
        lines,
        ["10", "200"],
        "10 over the limit closed at once; service resumes after"
    );
    assert_eq!(
        agent.metric("detour_connections_rejected_total{reason=\"over_limit\"}"),
        10
    );
    assert_eq!(
        agent.http_get("/healthz").as_deref(),
        Some("ok\n"),
        "the agent is alive"
    );
}

#[test]
fn a_deep_pipeline_is_answered_in_order() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let _agent = setup.agent(&[]);
    let mut request = Vec::new();
    for i in 0..300 {
        request.extend_from_slice(format!("GET /?n={i} HTTP/1.1\r\nHost: r\r\n").as_bytes());
        if i == 299 {
            request.extend_from_slice(b"Connection: close\r\n");
        }
        request.extend_from_slice(b"\r\n");
    }
    let response = setup.raw(&request);
    assert_eq!(
        response.matches("HTTP/1.1 200 OK").count(),
        300,
        "every request answered"
    );
    let served: Vec<String> = setup.baseline_log().lines();
    let expected: Vec<String> = (0..300).map(|i| format!("GET /?n={i}")).collect();
    assert_eq!(served, expected, "forwarded one by one, in order");
}

/// Established TCP connections to the upstream's port, seen in its namespace.
fn upstream_connections(setup: &Setup) -> usize {
    let output = setup.net.pod("reviews").exec(
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

#[test]
fn idle_keep_alive_clients_give_their_upstream_connections_back() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let _agent = setup.agent(&[]);
    let ip = setup.net.pod("reviews").ip4.to_string();
    let clients = 150;
    let mut child = setup.net.pod("client").spawn_in(
        &setup.cgroup,
        "python3",
        &[IDLE, &ip, &PORT.to_string(), &clients.to_string(), "4"],
    );
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).expect("held line");
    assert_eq!(line.trim(), format!("held {clients}"));
    // Every response is done and no client has sent more: each client
    // connection is parked, its upstream connection back in the pool, which
    // keeps at most 64 per destination. (Holding them would be 150.)
    let right_after = upstream_connections(&setup);
    std::thread::sleep(Duration::from_millis(2500));
    let later = upstream_connections(&setup);
    line.clear();
    std::io::BufRead::read_line(&mut stdout, &mut line).expect("answered line");
    let _ = child.wait();
    for (when, count) in [
        ("right after their requests", right_after),
        ("2.5 s later", later),
    ] {
        assert!(
            count <= 64,
            "{when}, {clients} idle clients hold {count} upstream connections; the pool keeps at most 64"
        );
    }
    assert_eq!(
        line.trim(),
        format!("answered {clients}"),
        "every parked client connection still serves its next request"
    );
}

/// One keep-alive connection, one request; then how long until the proxy
/// closes it (`eof AFTER_SECONDS`), or a second request at `second_at`
/// seconds and its status line. Prints `ready` once the first is answered.
const IDLE_ONE: &str = r#"
import socket, sys, time
host, port, second_at = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.create_connection((host, port), timeout=30)
def exchange():
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            return None
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        lengths = [int(l.split(b":")[1]) for l in head.split(b"\r\n")
                   if l.lower().startswith(b"content-length:")]
        if sep and len(body) >= lengths[0]:
            return head.split(b"\r\n")[0].decode()
assert exchange().startswith("HTTP/1.1 200"), "first request"
print("ready", flush=True)
start = time.monotonic()
if second_at >= 0:
    time.sleep(second_at)
    print(exchange(), flush=True)
    start = time.monotonic()
s.settimeout(30)
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
print("eof %.1f" % (time.monotonic() - start), flush=True)
"#;

fn idle_one(setup: &Setup, second_at: f64) -> std::process::Child {
    let ip = setup.net.pod("reviews").ip4.to_string();
    setup.net.pod("client").spawn_in(
        &setup.cgroup,
        "python3",
        &[
            "-c",
            IDLE_ONE,
            &ip,
            &PORT.to_string(),
            &second_at.to_string(),
        ],
    )
}

fn lines(child: std::process::Child) -> Vec<String> {
    let output = child.wait_with_output().expect("client");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn eof_after(line: &str) -> f64 {
    line.strip_prefix("eof ")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("expected the proxy to close the connection, got {line:?}"))
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout_and_served_before_it() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let _agent = setup.agent(&["--idle-timeout", "2s"]);
    let quiet = idle_one(&setup, -1.0);
    let busy = idle_one(&setup, 1.0);
    let quiet = lines(quiet);
    let busy = lines(busy);
    assert_eq!(quiet[0], "ready");
    let closed = eof_after(&quiet[1]);
    assert!(
        (1.5..10.0).contains(&closed),
        "an idle connection closed after {closed} s; the idle timeout is 2 s"
    );
    assert_eq!(
        busy[1], "HTTP/1.1 200 OK",
        "a request within the idle timeout is served"
    );
    let closed = eof_after(&busy[2]);
    assert!(
        (1.5..10.0).contains(&closed),
        "the idle timeout starts again after each response ({closed} s)"
    );
}

#[test]
fn an_idle_keep_alive_connection_does_not_hold_the_drain() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let mut agent = setup.agent(&[]);
    let mut client = idle_one(&setup, -1.0);
    let mut stdout = std::io::BufReader::new(client.stdout.take().expect("stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).expect("ready line");
    assert_eq!(line.trim(), "ready");
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    assert!(agent.terminate().success());
    let stopped = started.elapsed();
    line.clear();
    std::io::BufRead::read_line(&mut stdout, &mut line).expect("eof line");
    let _ = client.wait();
    eof_after(line.trim());
    // The drain bound is 10 s: an idle connection that held the drain
    // would take all of it.
    assert!(
        stopped < Duration::from_secs(5),
        "the agent took {stopped:?} to stop with one idle keep-alive connection"
    );
}
