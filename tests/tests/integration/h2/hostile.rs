//! Hostile HTTP/2 clients against the real agent: rapid reset
//! (CVE-2023-44487, also with streams reset only after they were accepted),
//! CONTINUATION flood (CVE-2024-27316), SETTINGS and PING floods, more
//! streams than advertised, an oversized header list and invalid frames,
//! each written frame by frame by `tests/clients/h2raw.py` from the attached
//! cgroup. The proxy terminates HTTP/2 for every steered h2c connection, so
//! its limits are what stands between one bad client and the node: each
//! attack must be bounded as a client sees it (GOAWAY code, REFUSED_STREAM,
//! 431, acks), counted in `detour_h2_connection_errors_total` when it ends
//! the connection, must not reach an upstream, and must not disturb a
//! well-behaved gRPC client whose calls are in flight during the attack and
//! made after it (still routed by key: keyed to the fork, others to
//! baseline).
//!
//! These need root. Without it each test fails and says so, unless
//! `DETOUR_SKIP_ROOT_TESTS=1` is set.

use std::{io::Read, ops::Deref, thread, time::Duration};

use detour_tests::{Agent, Forked, Servers, cmd::Proc, require_root, topology::RequestLog};
use serde_json::Value;

const PORT: u16 = 50051;
const H2RAW: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/h2raw.py");
const GRPC_CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/grpc_client.py");
const UNARY: &str = "/detour.test.Echo/Unary";
/// No pod has this address: a connect to it hangs until ARP gives up (~3 s).
const UNREACHABLE: &str = "10.248.0.200";
/// Calls the well-behaved client holds open (half keyed) across an attack.
const HELD_CALLS: usize = 10;
/// Sequential calls it makes after the attack (half keyed).
const LATER_CALLS: usize = 4;

/// A client pod in the attached cgroup, a baseline `greeter` pod and its fork
/// `greeter-fork`, both running the gRPC test server; `greeter` is `h2c`.
/// Key `unreachable` forks `greeter` to an address nobody answers.
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
            Forked::service("greeter", PORT)
                .protocol("h2c")
                .servers(Servers::Grpc)
                .sandbox("unreachable", &format!("{UNREACHABLE}:{PORT}"))
                .build("dh"),
        )
    }

    fn agent(&self) -> Agent {
        self.0
            .agent()
            .log_filter("info,detour::proxy=debug")
            .spawn()
    }

    /// Starts `python3 ARGS..` in the client pod, in the cgroup.
    fn start(&self, args: &[&str]) -> Running {
        let child = self
            .net
            .pod("client")
            .spawn_in(&self.cgroup, "python3", args);
        Running(Proc::new(child))
    }

    /// Starts one `h2raw.py` attack on the baseline address, as gRPC Unary
    /// calls carrying routing key `key`: a stream that got through is routed
    /// (and logged by the agent and the server it reaches) with that key.
    fn start_attack(&self, subcommand: &str, key: &str, args: &[&str]) -> Running {
        let (ip, port) = (self.net.pod("greeter").ip4.to_string(), PORT.to_string());
        let baggage = format!("baggage=detour-routing-key={key}");
        let mut all = vec![H2RAW, subcommand, &ip, &port, "--grpc", "--path", UNARY];
        all.extend(["--header", &baggage]);
        all.extend_from_slice(args);
        self.start(&all)
    }

    /// Runs one attack to its end; its JSON report.
    fn attack(&self, subcommand: &str, key: &str, args: &[&str]) -> Value {
        let what = format!("{subcommand} {args:?}");
        report(self.start_attack(subcommand, key, args), &what)
    }

    /// Starts a `grpc_client.py` scenario of `count` calls, half with key
    /// `feature-x`, on the baseline address.
    fn start_calls(&self, scenario: &str, count: usize, args: &[&str]) -> Running {
        let target = format!("{}:{PORT}", self.net.pod("greeter").ip4);
        let count = count.to_string();
        let mut all = vec![GRPC_CLIENT, scenario, &target, "--key", "feature-x"];
        all.extend(["--count", &count]);
        all.extend_from_slice(args);
        self.start(&all)
    }

    /// Starts [`HELD_CALLS`] concurrent calls on one channel that the servers
    /// hold for 3 s, and waits until both servers have them.
    fn hold_calls(&self) -> Running {
        let held = self.start_calls("concurrent", HELD_CALLS, &["--hold-ms", "3000"]);
        let arrived = |log: &RequestLog| log.lines().len() == HELD_CALLS / 2;
        for _ in 0..100 {
            if arrived(self.fork_log()) && arrived(self.baseline_log()) {
                return held;
            }
            thread::sleep(Duration::from_millis(100));
        }
        let (fork, base) = (self.fork_log().lines(), self.baseline_log().lines());
        panic!("held calls not all arrived in 10 s: fork {fork:?}, baseline {base:?}");
    }

    /// The well-behaved client's calls held across the attack all succeed,
    /// and so do calls made after it; every one routed by its key.
    fn assert_bystander_unaffected(&self, held: Running) {
        assert_routed_by_key(&json_lines(&held.finish()), HELD_CALLS);
        let later = self.start_calls("unary", LATER_CALLS, &["--alternate"]);
        assert_routed_by_key(&json_lines(&later.finish()), LATER_CALLS);
    }
}

/// A client started in the background, killed on drop if a test fails first.
struct Running(Proc);

impl Running {
    fn is_running(&mut self) -> bool {
        self.0.try_wait().is_none()
    }

    /// Waits for it to exit successfully; its standard output.
    fn finish(mut self) -> Vec<u8> {
        let child = self.0.child();
        let (mut stdout, mut stderr) = (Vec::new(), String::new());
        if let Some(mut pipe) = child.stdout.take() {
            pipe.read_to_end(&mut stdout).expect("read client output");
        }
        if let Some(mut pipe) = child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        let status = child.wait().expect("wait for client");
        assert!(status.success(), "client failed ({status}): {stderr}");
        stdout
    }
}

/// The JSON report of an `h2raw.py` run, also printed for the test's output.
fn report(attack: Running, what: &str) -> Value {
    let stdout = attack.finish();
    let report: Value = serde_json::from_slice(&stdout)
        .unwrap_or_else(|e| panic!("bad report {:?}: {e}", String::from_utf8_lossy(&stdout)));
    eprintln!("h2raw {what}: {report}");
    assert_eq!(report["connect"], "ok", "{report}");
    assert!(report.get("error").is_none(), "h2raw crashed: {report}");
    report
}

fn json_lines(stdout: &[u8]) -> Vec<Value> {
    let text = String::from_utf8_lossy(stdout);
    let parse = |line: &str| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
    text.lines().map(parse).collect()
}

fn assert_routed_by_key(calls: &[Value], expected: usize) {
    assert_eq!(calls.len(), expected, "{calls:?}");
    for call in calls {
        assert_eq!(call["code"], "OK", "{call}");
        let pod = if call["keyed"] == true {
            "greeter-fork"
        } else {
            "greeter"
        };
        assert_eq!(call["served_by"], pod, "{call}");
    }
}

/// Streams the agent routed with routing key `key` (its debug log).
fn routed_with_key(agent: &Agent, key: &str) -> usize {
    let key = format!("key=\"{key}\"");
    let logs = agent.logs();
    logs.lines()
        .filter(|line| line.contains(" routed ") && line.contains(&key))
        .count()
}

/// The sum of every sample of a counter family, e.g. `detour_requests_total`.
fn metric_sum(agent: &Agent, family: &str) -> u64 {
    let metrics = agent.http_get("/metrics").expect("metrics");
    let prefix = format!("{family}{{");
    let samples = metrics.lines().filter(|line| line.starts_with(&prefix));
    samples
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn h2_errors(agent: &Agent, reason: &str) -> u64 {
    agent.metric(&format!(
        "detour_h2_connection_errors_total{{reason=\"{reason}\"}}"
    ))
}

fn open_fds(agent: &Agent) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", agent.pid())).map_or(0, Iterator::count)
}

/// Runs `attack` against a fresh agent while the bystander's calls are held
/// open, then checks those calls and more made after it.
fn during_attack(attack: impl FnOnce(&Setup, &Agent)) {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let agent = setup.agent();
    let held = setup.hold_calls();
    attack(&setup, &agent);
    setup.assert_bystander_unaffected(held);
}

/// Any stream the agent opens upstream is routed first: `routed` lines in
/// its log count them (the attacks' bodiless calls never reach a gRPC
/// handler, so the servers' call logs could not tell).
#[test]
fn rapid_reset_gets_enhance_your_calm_and_no_reset_stream_reaches_an_upstream() {
    during_attack(|setup, agent| {
        let report = setup.attack("rapid-reset", "rapid-reset", &["--streams", "1000"]);
        let goaway = &report["goaway"];
        assert_eq!(goaway["error_code"], "ENHANCE_YOUR_CALM", "{report}");
        assert_eq!(goaway["debug"], "too_many_resets", "{report}");
        assert_eq!(report["closed"], true, "{report}");
        assert_eq!(h2_errors(agent, "enhance_your_calm"), 1);
        let routed = routed_with_key(agent, "rapid-reset");
        assert_eq!(routed, 0, "reset streams were routed");
    });
}

/// The other half of rapid reset: a stream reset after the agent accepted it
/// no longer counts against MAX_CONCURRENT_STREAMS, so what the agent still
/// does for it must end with the reset, or stay bounded. Against a fork whose
/// connects hang, each such stream would otherwise keep a socket open.
#[test]
fn streams_reset_after_they_were_accepted_do_not_pile_up_upstream_connects() {
    during_attack(|setup, agent| {
        let before = open_fds(agent);
        let args: Vec<&str> = "--streams 6000 --batch 100 --reset-after-ms 30"
            .split(' ')
            .collect();
        let mut attack = setup.start_attack("rapid-reset", "unreachable", &args);
        let mut peak = before;
        while attack.is_running() {
            peak = peak.max(open_fds(agent));
            thread::sleep(Duration::from_millis(50));
        }
        peak = peak.max(open_fds(agent));
        let report = report(attack, &format!("rapid-reset {args:?}"));
        let routed = routed_with_key(agent, "unreachable");
        eprintln!("agent fds: {before} before, peak {peak}; streams routed: {routed}");
        assert!(
            peak - before <= 256 + 64,
            "one client connection (at most 256 concurrent streams) made the agent hold {} \
             more file descriptors by resetting {routed} streams after they were accepted: \
             {report}",
            peak - before
        );
    });
}

#[test]
fn continuation_flood_gets_enhance_your_calm_after_a_few_frames() {
    during_attack(|setup, agent| {
        let report = setup.attack("continuation-flood", "cont-flood", &["--frames", "10000"]);
        let goaway = &report["goaway"];
        assert_eq!(goaway["error_code"], "ENHANCE_YOUR_CALM", "{report}");
        assert_eq!(goaway["debug"], "too_many_continuations", "{report}");
        assert_eq!(report["closed"], true, "{report}");
        assert_eq!(h2_errors(agent, "enhance_your_calm"), 1);
        assert_eq!(routed_with_key(agent, "cont-flood"), 0);
    });
}

/// h2 acknowledges each SETTINGS and PING before it reads the next frame, so
/// a flood is paced by the flooder's own reading; nothing queues up.
#[test]
fn settings_and_ping_floods_are_acked_one_by_one_and_the_connection_still_serves() {
    during_attack(|setup, agent| {
        // SETTINGS acks include the one for the preface's SETTINGS.
        for (flood, acks_beyond_flood) in [("settings-flood", 1), ("ping-flood", 0)] {
            let report = setup.attack(flood, flood, &["--frames", "10000", "--then-request"]);
            assert_eq!(report["goaway"], Value::Null, "{report}");
            assert_eq!(report["send_error"], Value::Null, "{report}");
            assert_eq!(report["sent_frames"], 10_000, "{report}");
            assert_eq!(report["acks"], 10_000 + acks_beyond_flood, "{report}");
            let after = &report["final"]["status"];
            assert_eq!(after, 200, "a request on the flooded connection: {report}");
            assert_eq!(routed_with_key(agent, flood), 1, "{report}");
        }
        assert_eq!(metric_sum(agent, "detour_h2_connection_errors_total"), 0);
    });
}

#[test]
fn streams_over_the_advertised_256_are_refused_and_the_rest_stay_open() {
    during_attack(|setup, agent| {
        // Streams without END_STREAM: the upstream waits for their message.
        let report = setup.attack("streams-over-limit", "over-limit", &["--streams", "300"]);
        assert_eq!(report["max_concurrent_streams"], 256, "{report}");
        assert_eq!(report["opened"], 300, "{report}");
        assert_eq!(report["refused"], 300 - 256, "{report}");
        assert_eq!(
            report["responses"], 0,
            "the open streams wait upstream: {report}"
        );
        assert_eq!(report["goaway"], Value::Null, "{report}");
        assert_eq!(routed_with_key(agent, "over-limit"), 256);
    });
}

#[test]
fn a_header_list_over_64_kib_gets_431_on_a_connection_that_stays_open_and_no_upstream_call() {
    during_attack(|setup, agent| {
        let over = setup.attack("big-headers", "big-headers", &["--bytes", "70000"]);
        let limit = &over["server_settings"]["MAX_HEADER_LIST_SIZE"];
        assert_eq!(limit, 65536, "{over}");
        assert_eq!(over["status"], 431, "{over}");
        assert_eq!(over["goaway"], Value::Null, "{over}");
        assert_eq!(over["closed"], false, "{over}");
        assert_eq!(routed_with_key(agent, "big-headers"), 0);
    });
}

/// The agent takes header lists up to 64 KiB, but the gRPC server advertises
/// SETTINGS_MAX_HEADER_LIST_SIZE 8192, and the streams of every client to an
/// endpoint share one upstream connection: one client's call with headers the
/// upstream refuses must fail that call alone, not the others' on it.
#[test]
fn headers_the_agent_takes_but_the_upstream_refuses_fail_no_other_clients_calls() {
    during_attack(|setup, agent| {
        let report = setup.attack("big-headers", "big-ok", &["--bytes", "60000"]);
        assert_ne!(report["status"], 431, "under the agent's limit: {report}");
        assert_eq!(routed_with_key(agent, "big-ok"), 1, "{report}");
    });
}

#[test]
fn invalid_frames_get_goaway_protocol_error_and_are_counted() {
    during_attack(|setup, agent| {
        let kinds = [
            "data-on-stream-0",
            "window-update-zero",
            "settings-bad-length",
            "ping-bad-length",
            "headers-even-stream",
        ];
        for kind in kinds {
            let report = setup.attack("invalid-frame", "invalid", &["--kind", kind]);
            assert_eq!(
                report["goaway"]["error_code"], "PROTOCOL_ERROR",
                "{kind}: {report}"
            );
            assert_eq!(report["closed"], true, "{kind}: {report}");
        }
        assert_eq!(h2_errors(agent, "protocol_error"), kinds.len() as u64);
        assert_eq!(routed_with_key(agent, "invalid"), 0);
    });
}
