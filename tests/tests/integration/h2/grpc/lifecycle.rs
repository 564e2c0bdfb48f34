//! gRPC through the agent over time: upstream connections at their stream
//! limit, upstream GOAWAY, a fork dying mid-stream, the agent's SIGTERM drain
//! and kill -9, route churn under load, and the CLI's view of live streams.

use std::{thread, time::Duration};

use detour_tests::require_root;
use serde_json::Value;

use super::{PORT, Setup, parse_client, served_by};

#[test]
fn an_upstream_at_its_stream_limit_gets_a_new_connection_instead_of_a_queue() {
    if !require_root() {
        return;
    }
    let setup = Setup::with_fork_env(&[("GRPC_MAX_STREAMS", "1")]);
    let _agent = setup.agent();
    // One call first, so the fork's SETTINGS (limit 1) are known.
    assert_eq!(setup.call("unary", &["--key", "feature-x"])["code"], "OK");
    let client = setup.spawn_client(
        "concurrent",
        &["--key", "feature-x", "--count", "8", "--hold-ms", "1500"],
    );
    let mut client = client;
    let mut most = 0;
    // Sample while the calls run (the client may be slow to start).
    while client.try_wait().expect("client status").is_none() {
        most = most.max(setup.connections_to("greeter-fork"));
        thread::sleep(Duration::from_millis(50));
    }
    let calls = parse_client("concurrent", &client.wait_with_output().expect("client"));
    assert!(calls.iter().all(|c| c["code"] == "OK"), "{calls:?}");
    assert!(
        most >= 4,
        "4 keyed calls held at once on a fork that allows 1 stream per connection \
         need 4 upstream connections; saw at most {most}"
    );
}

#[test]
fn an_upstream_goaway_sends_the_next_streams_to_a_new_connection() {
    if !require_root() {
        return;
    }
    let mut setup = Setup::new();
    let _agent = setup.agent();
    assert_eq!(
        served_by(&setup.call("unary", &["--key", "feature-x"])),
        "greeter-fork"
    );
    // A graceful stop: GOAWAY on the agent's pooled connection, then exit.
    let mut fork = setup.fork.take().expect("fork server");
    fork.signal(libc::SIGTERM);
    assert!(
        fork.wait_timeout(Duration::from_secs(10)).is_some(),
        "fork server did not stop"
    );
    let (restarted, _log) = setup.net.pod("greeter-fork").grpc_server(PORT);
    setup.fork = Some(restarted);
    let calls = setup.client("unary", &["--key", "feature-x", "--count", "3"]);
    for call in &calls {
        assert_eq!(call["code"], "OK", "{call}");
        assert_eq!(served_by(call), "greeter-fork", "{call}");
    }
}

#[test]
fn a_fork_going_away_mid_stream_fails_that_call_and_nothing_else() {
    if !require_root() {
        return;
    }
    let mut setup = Setup::new();
    let _agent = setup.agent();
    let stream = setup.spawn_client(
        "server-stream",
        &[
            "--key",
            "feature-x",
            "--count",
            "100",
            "--interval-ms",
            "50",
        ],
    );
    thread::sleep(Duration::from_millis(800));
    drop(setup.fork.take());
    let lines = parse_client("server-stream", &stream.wait_with_output().expect("client"));
    let done = lines.last().expect("done line");
    assert_ne!(done["code"], "OK", "the stream cannot finish: {done}");
    assert!(
        done["seconds"].as_f64().is_some_and(|s| s < 4.0),
        "it fails when the fork goes, not after 100 messages: {done}"
    );
    assert!(
        lines.len() > 2,
        "some messages came from the fork first: {lines:?}"
    );
    let unkeyed = setup.call("unary", &[]);
    assert_eq!(unkeyed["code"], "OK", "{unkeyed}");
    assert_eq!(served_by(&unkeyed), "greeter", "{unkeyed}");
}

#[test]
fn sigterm_lets_a_stream_in_flight_finish() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let mut agent = setup.agent();
    let held = setup.spawn_client(
        "concurrent",
        &["--key", "feature-x", "--count", "2", "--hold-ms", "1500"],
    );
    thread::sleep(Duration::from_millis(600));
    let status = agent.terminate();
    assert!(status.success(), "agent exit: {status:?}");
    let calls = parse_client("concurrent", &held.wait_with_output().expect("client"));
    assert_eq!(calls.len(), 2);
    for call in &calls {
        assert_eq!(call["code"], "OK", "drained, not cut: {call}");
    }
    assert!(
        agent.logs().contains("GOAWAY to the client"),
        "the client got GOAWAY:\n{}",
        agent.logs()
    );
}

#[test]
fn after_kill_9_new_http2_connections_go_straight_to_baseline() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let mut agent = setup.agent();
    assert_eq!(
        served_by(&setup.call("unary", &["--key", "feature-x"])),
        "greeter-fork"
    );
    agent.kill9();
    let call = setup.call("unary", &["--key", "feature-x"]);
    assert_eq!(call["code"], "OK", "fail-open: {call}");
    assert_eq!(served_by(&call), "greeter", "no agent, no steering: {call}");
}

#[test]
fn route_churn_under_http2_load_fails_no_call_and_misroutes_none() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let (_fork2, _fork2_log) = setup.net.pod("greeter-fork2").grpc_server(PORT);
    let agent = setup.agent();
    let load = setup.spawn_client(
        "unary",
        &["--key", "feature-x", "--count", "600", "--alternate"],
    );
    for round in 0..20 {
        let pod = if round % 2 == 0 {
            "greeter-fork2"
        } else {
            "greeter-fork"
        };
        agent.write_routes(&setup.routes_to(pod, "h2c", PORT));
        thread::sleep(Duration::from_millis(100));
    }
    let calls = parse_client("unary", &load.wait_with_output().expect("client"));
    assert_eq!(calls.len(), 600);
    for call in &calls {
        assert_eq!(call["code"], "OK", "{call}");
        let by = served_by(call);
        if call["keyed"] == true {
            assert!(by == "greeter-fork" || by == "greeter-fork2", "{call}");
        } else {
            assert_eq!(by, "greeter", "{call}");
        }
    }
}

#[test]
fn trace_and_flows_show_each_stream_with_its_grpc_method() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let agent = setup.agent();
    let trace = std::process::Command::new(detour_tests::detour_bin())
        .arg("--socket")
        .arg(agent.admin_socket())
        .args(["trace", "-n", "1", "-o", "json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("detour trace");
    thread::sleep(Duration::from_millis(300));
    let held = setup.spawn_client(
        "concurrent",
        &["--key", "feature-x", "--count", "4", "--hold-ms", "1500"],
    );
    thread::sleep(Duration::from_millis(700));
    let flows = agent.flows();
    let flow = &flows["flows"][0];
    assert_eq!(flow["protocol"], "h2", "{flows}");
    assert_eq!(flow["live_streams"], 4, "4 calls held open: {flows}");
    assert_eq!(flow["requests"], 4, "{flows}");
    let event = trace.wait_with_output().expect("trace");
    let event: Value = serde_json::from_slice(&event.stdout).expect("trace json");
    assert_eq!(event["method"], "/detour.test.Echo/Unary", "{event}");
    assert_eq!(event["service"], "default/greeter", "{event}");
    let _ = held.wait_with_output();
}

#[test]
fn a_channel_opened_before_its_service_was_steered_reaches_the_fork_once_it_is() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let agent = setup.agent_with(
        "services:\n  - name: decoy\n    addresses: [10.248.0.250]\n    ports: [{port: 9}]\n",
    );
    let channel = setup.spawn_client(
        "unary",
        &["--key", "feature-x", "--count", "80", "--interval-ms", "50"],
    );
    // Steer once the channel is connected (Python is slow to start under load).
    let mut waited = 0;
    while setup.client_connections_to("greeter") == 0 {
        assert!(waited < 200, "the channel never connected");
        thread::sleep(Duration::from_millis(50));
        waited += 1;
    }
    thread::sleep(Duration::from_millis(500));
    agent.write_routes(&setup.routes("h2c", PORT));
    let calls = parse_client("unary", &channel.wait_with_output().expect("client"));
    // A call that meets the closed connection fails UNAVAILABLE: retryable,
    // and retried by any client with a gRPC retry policy. At most one.
    let failed: Vec<&Value> = calls.iter().filter(|c| c["code"] != "OK").collect();
    assert!(
        failed.len() <= 1 && failed.iter().all(|c| c["code"] == "UNAVAILABLE"),
        "{failed:?}"
    );
    let calls: Vec<&Value> = calls.iter().filter(|c| c["code"] == "OK").collect();
    let switch = calls
        .iter()
        .position(|c| served_by(c) == "greeter-fork")
        .unwrap_or_else(|| panic!("the channel never reached the fork: {calls:?}"));
    assert!(switch > 0, "baseline first: {calls:?}");
    assert!(
        calls[switch..]
            .iter()
            .all(|c| served_by(c) == "greeter-fork"),
        "{calls:?}"
    );
    assert_eq!(
        agent.metric("detour_stale_connections_closed_total{service=\"default/greeter\"}"),
        1,
        "the channel's one connection was closed once"
    );
}
