//! Per-request HTTP/1.1 steering: the real agent routes each request by its
//! routing key to a fork or to baseline, between real curl / raw-socket
//! clients and real HTTP servers in network namespaces made per test.
//!
//! These need root. Without it each test fails and says so, unless
//! `DETOUR_SKIP_ROOT_TESTS=1` is set.

use std::{ops::Deref, process::Output};

use detour_tests::{Agent, Forked, Pod, Servers, cmd::Proc, require_root, unique_name};

const PORT: u16 = 8080;
const BANNER_PORT: u16 = 2525;
const RAW: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/raw.py");
const LOOP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/loop.py");
/// Sends standard input on each of COUNT connections, one after the other,
/// and prints one JSON line per connection: how it ended (`eof`: the server
/// closed it; `timeout`: still open after 5 s) and every byte received.
const ONE_REQUEST_PER_CONNECTION: &str = "
import json, socket, sys, time
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
request = sys.stdin.buffer.read()
for _ in range(count):
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(request)
        data, end = b'', 'eof'
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except socket.timeout:
            end = 'timeout'
        except ConnectionResetError:
            end = 'reset'
    print(json.dumps({'end': end, 'response': data.decode('latin-1')}), flush=True)
    # The agent pools the upstream connection right after closing the
    # client's; leave it that moment.
    time.sleep(0.1)
";

/// A client, a baseline `reviews` pod, its fork, a second fork pod and an
/// unforked `ratings` pod, each running the echo server.
struct Setup {
    forked: Forked,
    _servers: Vec<Proc>,
    ratings: Option<Proc>,
}

impl Deref for Setup {
    type Target = Forked;

    fn deref(&self) -> &Forked {
        &self.forked
    }
}

impl Setup {
    fn new() -> Self {
        let forked = Forked::service("reviews", PORT)
            .servers(Servers::LoggedEcho)
            .pod("reviews-fork2")
            .pod("ratings")
            .build("dh");
        let net = &forked.net;
        let fork2 = net.pod("reviews-fork2").echo_server(PORT);
        let ratings = Some(net.pod("ratings").echo_server(PORT));
        let banner = net.pod("ratings").banner_server(BANNER_PORT);
        Self {
            forked,
            _servers: vec![fork2, banner],
            ratings,
        }
    }

    /// Stops the ratings server (closing every connection it had) and starts
    /// a new one on the same port.
    fn restart_ratings(&mut self) {
        drop(self.ratings.take());
        self.ratings = Some(self.net.pod("ratings").echo_server(PORT));
    }

    fn pod(&self, name: &str) -> &Pod {
        self.net.pod(name)
    }

    fn ip(&self, name: &str) -> String {
        self.pod(name).ip4.to_string()
    }

    /// Routes: reviews (forked by `feature-x`; `nobody-home` forks it with no
    /// endpoints) and ratings (not forked).
    fn routes(&self, fork_pod: &str) -> String {
        format!(
            "services:
  - name: reviews
    addresses: [{reviews}]
    ports: [{{port: {PORT}, protocol: http}}]
  - name: ratings
    addresses: [{ratings}]
    ports: [{{port: {PORT}}}, {{port: {BANNER_PORT}}}]
sandboxes:
  - name: feature-x
    routingKey: feature-x
    forks:
      - service: default/reviews
        endpoints: [\"{fork}:{PORT}\"]
  - name: empty
    routingKey: nobody-home
    forks:
      - service: default/reviews
        endpoints: []
",
            reviews = self.ip("reviews"),
            ratings = self.ip("ratings"),
            fork = self.ip(fork_pod),
        )
    }

    fn agent(&self) -> Agent {
        Agent::builder(&self.net, &self.cgroup)
            .routes(&self.routes("reviews-fork"))
            .arg("--routing-header")
            .arg("x-sandbox")
            .arg("--head-timeout")
            .arg("1s")
            .arg("--detect-timeout")
            .arg("300ms")
            .spawn()
    }

    /// curl from the client (in the cgroup); returns the response headers.
    fn curl(&self, service: &str, extra: &[&str]) -> String {
        let url = format!("http://{}:{PORT}/", self.ip(service));
        let mut args = vec!["-sS", "-m", "10", "-o", "/dev/null", "-D", "-"];
        args.extend_from_slice(extra);
        args.push(&url);
        let output = self.pod("client").exec_in(&self.cgroup, "curl", &args);
        stdout_ok(&output)
    }

    /// Raw bytes to a service from the client; returns every byte received.
    fn raw(&self, service: &str, request: &[u8]) -> String {
        self.raw_to(service, PORT, request)
    }

    fn raw_to(&self, service: &str, port: u16, request: &[u8]) -> String {
        let output = self.pod("client").exec_in_with_input(
            &self.cgroup,
            "python3",
            &[RAW, &self.ip(service), &port.to_string(), "2"],
            request,
        );
        stdout_ok(&output)
    }
}

/// One client connection of [`Setup::one_request_per_connection`].
struct Exchange {
    /// `eof` when the agent closed the connection after the response.
    end: String,
    head: String,
    body: String,
}

impl Exchange {
    fn header(&self, name: &str) -> Vec<&str> {
        self.head
            .split("\r\n")
            .filter_map(|line| line.split_once(':'))
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.trim())
            .collect()
    }
}

impl Setup {
    /// Sends `request` alone on each of `count` new connections from the
    /// client, one after the other.
    fn one_request_per_connection(
        &self,
        service: &str,
        request: &[u8],
        count: usize,
    ) -> Vec<Exchange> {
        let output = self.pod("client").exec_in_with_input(
            &self.cgroup,
            "python3",
            &[
                "-c",
                ONE_REQUEST_PER_CONNECTION,
                &self.ip(service),
                &PORT.to_string(),
                &count.to_string(),
            ],
            request,
        );
        stdout_ok(&output)
            .lines()
            .map(|line| {
                let report: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
                let response = report["response"].as_str().unwrap_or_default();
                let (head, body) = response.split_once("\r\n\r\n").unwrap_or((response, ""));
                Exchange {
                    end: report["end"].as_str().unwrap_or_default().to_owned(),
                    head: head.to_owned(),
                    body: body.to_owned(),
                }
            })
            .collect()
    }
}

fn stdout_ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "client failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn served_by(headers: &str) -> &str {
    headers
        .lines()
        .find_map(|l| l.strip_prefix("X-Served-By: "))
        .unwrap_or_else(|| panic!("no X-Served-By in {headers:?}"))
        .trim()
}

fn status_line(response: &str) -> &str {
    response.lines().next().unwrap_or_default()
}

#[test]
fn each_header_format_routes_to_the_fork_and_everything_else_to_baseline() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let agent = setup.agent();
    let to_fork = [
        "baggage: detour-routing-key=feature-x",
        "baggage: userid=7, detour-routing-key = feature-x;ttl=60",
        "baggage: sd-routing-key=feature-x",
        "tracestate: vendor=abc, sd-sandbox=feature-x",
        "uberctx-detour-routing-key: feature-x",
        "ot-baggage-sd-workspace: feature-x",
        "x-sandbox: feature-x",
    ];
    for header in to_fork {
        assert_eq!(
            served_by(&setup.curl("reviews", &["-H", header])),
            "reviews-fork",
            "{header}"
        );
    }
    let to_baseline: [&[&str]; 4] = [
        &[],
        &["-H", "baggage: detour-routing-key=unknown"],
        &["-H", "baggage: some-other-key=feature-x"],
        &["-H", "baggage: detour-routing-key=%zz"],
    ];
    for extra in to_baseline {
        assert_eq!(
            served_by(&setup.curl("reviews", extra)),
            "reviews",
            "{extra:?}"
        );
    }
    // A service that is not forked is untouched by a key.
    assert_eq!(
        served_by(&setup.curl("ratings", &["-H", "baggage: detour-routing-key=feature-x"])),
        "ratings"
    );
    assert_eq!(
        agent.metric("detour_requests_total{service=\"default/reviews\",destination=\"sandbox\",sandbox=\"feature-x\",protocol=\"http1\"}"),
        to_fork.len() as u64
    );
    assert_eq!(
        agent.metric("detour_requests_total{service=\"default/reviews\",destination=\"baseline\",sandbox=\"\",protocol=\"http1\"}"),
        to_baseline.len() as u64
    );
}

#[test]
fn one_keep_alive_connection_with_alternating_keys_gets_each_answer_in_order() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let _agent = setup.agent();
    let keys = ["feature-x", "", "feature-x", "unknown", "feature-x"];
    let mut request = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        request.extend_from_slice(b"GET / HTTP/1.1\r\nHost: reviews\r\n");
        if !key.is_empty() {
            request.extend_from_slice(format!("baggage: detour-routing-key={key}\r\n").as_bytes());
        }
        if i == keys.len() - 1 {
            request.extend_from_slice(b"Connection: close\r\n");
        }
        request.extend_from_slice(b"\r\n");
    }
    let response = setup.raw("reviews", &request);
    let served: Vec<&str> = response
        .lines()
        .filter_map(|l| l.strip_prefix("X-Served-By: "))
        .collect();
    assert_eq!(
        served,
        [
            "reviews-fork",
            "reviews",
            "reviews-fork",
            "reviews",
            "reviews-fork"
        ],
        "{response}"
    );
}

#[test]
fn bodies_interim_responses_and_upgrades_pass_through() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let _agent = setup.agent();
    let key = "baggage: detour-routing-key=feature-x\r\n";

    // A chunked request body of 10 MiB is echoed intact (by the fork).
    let dir = std::env::temp_dir().join(unique_name("detour-http-body-"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let sent = dir.join("sent");
    let received = dir.join("received");
    let data: Vec<u8> = (0..10 << 20)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(&sent, &data).expect("write body");
    let url = format!("http://{}:{PORT}/", setup.ip("reviews"));
    let output = setup.pod("client").exec_in(
        &setup.cgroup,
        "curl",
        &[
            "-sS",
            "-m",
            "30",
            "-H",
            "Transfer-Encoding: chunked",
            "-H",
            key.trim_end(),
            "--data-binary",
            &format!("@{}", sent.display()),
            "-o",
            &received.display().to_string(),
            "-D",
            "-",
            &url,
        ],
    );
    assert_eq!(served_by(&stdout_ok(&output)), "reviews-fork");
    assert!(
        std::fs::read(&received).expect("read echo") == data,
        "10 MiB chunked body echoed intact"
    );
    let _ = std::fs::remove_dir_all(&dir);

    // A chunked response with a trailer arrives with its trailer.
    let chunked = setup.raw(
        "reviews",
        format!("GET /chunked HTTP/1.1\r\nHost: r\r\n{key}Connection: close\r\n\r\n").as_bytes(),
    );
    assert!(
        chunked.contains("hello \r\n") && chunked.ends_with("0\r\nx-trailer: done\r\n\r\n"),
        "{chunked}"
    );

    // Expect: 100-continue: the interim response is relayed before the final one.
    let continued = setup.raw(
        "reviews",
        format!("POST / HTTP/1.1\r\nHost: r\r\n{key}Expect: 100-continue\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello").as_bytes(),
    );
    assert!(
        continued.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"),
        "{continued}"
    );
    assert!(continued.ends_with("hello"), "{continued}");

    // HEAD and 204 carry no body; the next request on the connection still works.
    let pipelined = setup.raw(
        "reviews",
        b"HEAD / HTTP/1.1\r\nHost: r\r\n\r\nGET /204 HTTP/1.1\r\nHost: r\r\n\r\nGET / HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n",
    );
    let statuses: Vec<&str> = pipelined
        .lines()
        .filter(|l| l.starts_with("HTTP/1.1 "))
        .collect();
    assert_eq!(
        statuses,
        [
            "HTTP/1.1 200 OK",
            "HTTP/1.1 204 No Content",
            "HTTP/1.1 200 OK"
        ],
        "{pipelined}"
    );
    assert!(
        pipelined.contains("hello from reviews; you are"),
        "{pipelined}"
    );

    // A close-delimited response is relayed to its end.
    let close = setup.raw("reviews", b"GET /close HTTP/1.1\r\nHost: r\r\n\r\n");
    assert!(close.ends_with("until the connection closes\n"), "{close}");

    // Upgrade: after 101 the connection is spliced both ways.
    let upgraded = setup.raw("reviews", b"GET /upgrade HTTP/1.1\r\nHost: r\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nhello over the upgrade");
    assert!(upgraded.starts_with("HTTP/1.1 101 "), "{upgraded}");
    assert!(upgraded.ends_with("HELLO OVER THE UPGRADE"), "{upgraded}");
}

#[test]
fn smuggling_attempts_get_400_and_reach_no_upstream() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let agent = setup.agent();
    let attacks: [&[u8]; 8] = [
        b"POST / HTTP/1.1\r\nHost: r\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: r\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: r\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"POST / HTTP/1.1\r\nHost: r\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: r\r\nX-Folded: a\r\n b\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: r\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\nHost: r\n\n",
        b"POST / HTTP/1.1\r\nHost: r\r\nContent-Length: +5\r\n\r\nhello",
    ];
    for attack in attacks {
        let response = setup.raw("reviews", attack);
        assert!(
            response.starts_with("HTTP/1.1 400 "),
            "{}: {response}",
            String::from_utf8_lossy(attack)
        );
        assert!(
            response.to_ascii_lowercase().contains("detour-error: "),
            "{response}"
        );
    }
    assert_eq!(
        setup.baseline_log().lines(),
        Vec::<String>::new(),
        "nothing reached baseline"
    );
    assert_eq!(
        setup.fork_log().lines(),
        Vec::<String>::new(),
        "nothing reached the fork"
    );
    let refused: u64 = ["bad_framing", "malformed_head", "bad_chunked_body"]
        .iter()
        .map(|r| agent.metric(&format!("detour_request_errors_total{{reason=\"{r}\"}}")))
        .sum();
    assert_eq!(refused, attacks.len() as u64);
}

#[test]
fn oversized_stalled_and_unreachable_requests_get_431_408_and_502() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let agent = setup.agent();
    let big = format!(
        "GET / HTTP/1.1\r\nHost: r\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let response = setup.raw("reviews", big.as_bytes());
    assert_eq!(
        status_line(&response),
        "HTTP/1.1 431 Request Header Fields Too Large",
        "{response}"
    );

    // Half a head, then silence: the agent's --head-timeout is 1s.
    let response = setup.raw("reviews", b"GET / HTTP/1.1\r\nHost: r\r\n");
    assert_eq!(
        status_line(&response),
        "HTTP/1.1 408 Request Timeout",
        "{response}"
    );

    // The fork endpoint refuses connections: 502, said to come from detour.
    agent.write_routes(&setup.routes("client"));
    std::thread::sleep(std::time::Duration::from_millis(500));
    let response = setup.raw(
        "reviews",
        b"GET / HTTP/1.1\r\nHost: r\r\nbaggage: detour-routing-key=feature-x\r\n\r\n",
    );
    assert_eq!(
        status_line(&response),
        "HTTP/1.1 502 Bad Gateway",
        "{response}"
    );
    assert!(
        response.contains("detour-error: upstream-connect"),
        "{response}"
    );
    assert_eq!(
        agent.metric("detour_upstream_errors_total{reason=\"connect\"}"),
        1
    );
}

#[test]
fn a_fork_without_ready_endpoints_falls_back_to_baseline_and_is_counted() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let agent = setup.agent();
    assert_eq!(
        served_by(&setup.curl(
            "reviews",
            &["-H", "baggage: detour-routing-key=nobody-home"]
        )),
        "reviews"
    );
    assert_eq!(
        agent.metric("detour_fallbacks_total{reason=\"no_ready_endpoints\"}"),
        1
    );
}

#[test]
fn routes_file_edits_apply_within_a_second_without_failing_a_request() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let agent = setup.agent();
    let ip = setup.ip("reviews");
    let port = PORT.to_string();
    std::thread::scope(|scope| {
        let client = scope.spawn(|| {
            setup.pod("client").exec_in(
                &setup.cgroup,
                "python3",
                &[
                    LOOP,
                    &ip,
                    &port,
                    "4",
                    "baggage",
                    "detour-routing-key=feature-x",
                ],
            )
        });
        std::thread::sleep(std::time::Duration::from_millis(1500));
        let changed_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        agent.write_routes(&setup.routes("reviews-fork2"));
        let output = client.join().expect("client thread");
        let lines = stdout_ok(&output);
        let samples: Vec<(f64, &str)> = lines
            .lines()
            .map(|l| {
                let mut parts = l.split_whitespace();
                let t: f64 = parts.next().and_then(|t| t.parse().ok()).expect("elapsed");
                assert_eq!(parts.next(), Some("200"), "a request failed: {l}\n{lines}");
                (t, parts.next().unwrap_or_default())
            })
            .collect();
        assert!(samples.len() > 40, "the loop ran: {lines}");
        assert!(
            samples.iter().any(|(t, _)| *t < changed_at),
            "requests before the change: {lines}"
        );
        assert!(
            samples
                .iter()
                .filter(|(t, _)| *t < changed_at)
                .all(|(_, s)| *s == "reviews-fork"),
            "{lines}"
        );
        assert!(
            samples
                .iter()
                .filter(|(t, _)| *t > changed_at + 1.0)
                .all(|(_, s)| *s == "reviews-fork2"),
            "{lines}"
        );
    });
    assert_eq!(agent.metric("detour_route_reloads_total{result=\"ok\"}"), 1);
}

#[test]
fn an_invalid_routes_file_keeps_the_last_good_routes() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let agent = setup.agent();
    agent.write_routes("services:\n  - name: reviews\n    adresses: []\n");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(
        served_by(&setup.curl("reviews", &["-H", "baggage: detour-routing-key=feature-x"])),
        "reviews-fork"
    );
    assert_eq!(
        agent.metric("detour_route_reloads_total{result=\"error\"}"),
        1
    );
    assert!(
        agent.logs().contains("adresses"),
        "the error names the bad field"
    );
}

#[test]
fn an_unchanged_routes_file_is_not_read_again() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    // Quiet: its log is in the routes file's directory, and every event in
    // that directory is a hint to re-read (ConfigMap mounts swap a symlink).
    let agent = Agent::builder(&setup.net, &setup.cgroup)
        .routes(&setup.routes("reviews-fork"))
        .log_filter("warn")
        .spawn();
    // Its start creates its sockets in that directory: one re-read, 50 ms on.
    std::thread::sleep(std::time::Duration::from_millis(500));
    // The agent's own reads must not count as changes: an open of the file
    // used to hint the next re-read, twenty times a second, forever.
    assert_eq!(
        agent.routes_file_opens(std::time::Duration::from_secs(1)),
        0
    );
    agent.write_routes(&setup.routes("reviews-fork2"));
    assert_eq!(
        agent.routes_file_opens(std::time::Duration::from_secs(1)),
        1,
        "one read per change"
    );
    assert_eq!(
        agent.routes_file_opens(std::time::Duration::from_secs(1)),
        0
    );
}

#[test]
fn non_http_and_server_first_protocols_are_spliced_to_baseline() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let agent = setup.agent();

    // (The HTTP/2 preface is served as HTTP/2, per stream: tests/h2c.rs.)
    // Bytes that are not HTTP: spliced; the baseline server's own answer
    // comes back. (Python's server answers them with a bare error page.)
    let opaque = setup.raw("ratings", b"\x16\x03\x01 not http at all\r\n\r\n");
    assert!(
        opaque.contains("Error response") && !opaque.contains("detour-error"),
        "{opaque}"
    );
    // A server that speaks first: detection gives up after --detect-timeout
    // (300ms), connects, and the banner arrives.
    let banner = setup.raw_to("ratings", BANNER_PORT, b"");
    assert_eq!(banner, "220 banner from ratings\r\n");

    assert_eq!(
        agent.metric("detour_connections_by_protocol_total{protocol=\"opaque\"}"),
        1
    );
    assert_eq!(
        agent.metric("detour_connections_by_protocol_total{protocol=\"timeout\"}"),
        1
    );
}

#[test]
fn metrics_count_a_known_sequence_of_requests() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let agent = setup.agent();
    for _ in 0..3 {
        setup.curl("reviews", &["-H", "baggage: detour-routing-key=feature-x"]);
    }
    for _ in 0..2 {
        setup.curl("reviews", &[]);
    }
    setup.curl(
        "reviews",
        &["-H", "baggage: detour-routing-key=nobody-home"],
    );
    setup.raw("reviews", b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n");

    let sandbox = "detour_requests_total{service=\"default/reviews\",destination=\"sandbox\",sandbox=\"feature-x\",protocol=\"http1\"}";
    let baseline = "detour_requests_total{service=\"default/reviews\",destination=\"baseline\",sandbox=\"\",protocol=\"http1\"}";
    assert_eq!(agent.metric(sandbox), 3);
    assert_eq!(
        agent.metric(baseline),
        3,
        "two without a key and one fallback"
    );
    assert_eq!(
        agent.metric("detour_fallbacks_total{reason=\"no_ready_endpoints\"}"),
        1
    );
    assert_eq!(
        agent.metric("detour_request_errors_total{reason=\"bad_framing\"}"),
        1
    );
    assert_eq!(
        agent.metric("detour_connections_total{service=\"default/reviews\"}"),
        7
    );
    assert_eq!(agent.metric("detour_connections_redirected_total"), 7);
    assert_eq!(
        agent.metric("detour_connections_by_protocol_total{protocol=\"http1\"}"),
        7
    );
    assert_eq!(agent.metric("detour_route_source_synced"), 1);
    assert_eq!(agent.metric("detour_routes{kind=\"sandboxes\"}"), 2);
    let metrics = agent.http_get("/metrics").expect("metrics");
    assert!(
        metrics.contains("detour_request_duration_seconds_count{protocol=\"http1\"} 6"),
        "{metrics}"
    );
}

/// The upstream closes a kept-alive connection between two requests of one
/// client connection: a GET is retried on a fresh connection, and a POST is
/// never sent twice but still succeeds, because the dead connection is
/// noticed before it is used.
#[test]
fn a_closed_upstream_connection_is_not_reused_and_get_is_retried() {
    if !require_root() {
        return;
    }
    let mut setup = Setup::new();
    let agent = setup.agent();
    let script = format!(
        "import http.client, sys, time\n\
         c = http.client.HTTPConnection('{ip}', {PORT}, timeout=5)\n\
         for method in ('GET', 'GET', 'POST'):\n\
         \x20   c.request(method, '/', body=b'x' if method == 'POST' else None)\n\
         \x20   r = c.getresponse(); r.read()\n\
         \x20   print(method, r.status, r.getheader('X-Served-By'), flush=True)\n\
         \x20   if method == 'GET': sys.stdin.readline()\n",
        ip = setup.ip("ratings")
    );
    // Between requests the test restarts the ratings server, which closes
    // every connection it had (the agent's upstream one among them).
    let mut child = std::process::Command::new("nsenter")
        .args([
            &format!("--net={}", setup.pod("client").netns.path()),
            "--",
            "sh",
            "-c",
            &setup.cgroup.enter_script(),
            "sh",
            "python3",
            "-c",
            &script,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("client");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut lines = Vec::new();
    for _ in 0..2 {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut stdout, &mut line).expect("response line");
        lines.push(line.trim().to_owned());
        setup.restart_ratings();
        std::io::Write::write_all(&mut stdin, b"\n").expect("continue");
    }
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).expect("rest");
    lines.extend(rest.lines().map(str::to_owned));
    let status = child.wait().expect("client exit");
    assert!(status.success(), "{lines:?}\n{}", agent.logs());
    assert_eq!(
        lines,
        ["GET 200 ratings", "GET 200 ratings", "POST 200 ratings"]
    );
    assert_eq!(
        agent.metric("detour_upstream_errors_total{reason=\"connect\"}"),
        0
    );
}

/// A connection-per-request client sends `Connection: close` on every
/// request. The option is hop-by-hop: the agent leaves that line out, so the
/// upstream keeps its connection open and every request reaches it over one
/// reused upstream connection, with every other head byte as sent; each
/// client connection is still closed after its response, which says so.
#[test]
fn connection_close_is_not_forwarded_and_the_upstream_connection_is_reused() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let _agent = setup.agent();
    let request = "GET /headers HTTP/1.1\r\nHost: reviews:8080\r\nUser-Agent: t/1\r\n\
        baggage: detour-routing-key=feature-x\r\nconnection: Close\r\n\
        X-Odd:  spaced\tvalue \r\nAccept: */*\r\n\r\n";
    let forwarded = request.replace("connection: Close\r\n", "");
    let exchanges = setup.one_request_per_connection("reviews", request.as_bytes(), 5);
    assert_eq!(exchanges.len(), 5);
    for exchange in &exchanges {
        assert_eq!(
            exchange.end, "eof",
            "the agent closed the client connection"
        );
        assert!(
            exchange.head.starts_with("HTTP/1.1 200 OK\r\n"),
            "{}",
            exchange.head
        );
        assert_eq!(exchange.header("X-Served-By"), ["reviews-fork"]);
        assert_eq!(exchange.body, forwarded, "what the upstream received");
        assert_eq!(
            exchange.header("Connection"),
            ["close"],
            "the response tells the client its connection closes"
        );
    }
    let peers: Vec<&str> = exchanges.iter().flat_map(|e| e.header("X-Peer")).collect();
    assert_eq!(peers.len(), 5);
    assert!(
        peers.iter().all(|p| *p == peers[0]),
        "one upstream connection served every request: {peers:?}"
    );
    assert_eq!(setup.fork_log().lines(), vec!["GET /headers"; 5]);
}

/// Outside the narrow rule (a `Connection` field with other options, an
/// HTTP/1.0 request), the request is forwarded byte for byte as before and
/// the response relayed as is; the client connection still closes.
#[test]
fn connection_with_other_options_and_http10_are_forwarded_byte_for_byte() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let _agent = setup.agent();
    for request in [
        "GET /headers HTTP/1.1\r\nHost: reviews\r\nConnection: close, x-foo\r\nx-foo: 1\r\n\r\n",
        "GET /headers HTTP/1.1\r\nHost: reviews\r\nConnection: close\r\nConnection: x-foo\r\n\r\n",
        "GET /headers HTTP/1.0\r\nHost: reviews\r\nConnection: close\r\n\r\n",
    ] {
        let exchanges = setup.one_request_per_connection("reviews", request.as_bytes(), 1);
        let [exchange] = &exchanges[..] else {
            panic!("one connection: {} reports", exchanges.len());
        };
        assert_eq!(exchange.end, "eof", "{request:?}");
        assert_eq!(exchange.header("X-Served-By"), ["reviews"], "{request:?}");
        assert_eq!(exchange.body, request, "what the upstream received");
        assert_eq!(
            exchange.header("Connection"),
            Vec::<&str>::new(),
            "the echo server's response is relayed as is: {request:?}"
        );
    }
}
