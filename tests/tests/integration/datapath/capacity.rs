//! Maps filling up: a `STEERED` map smaller than the routes (destinations
//! beyond it go direct, counted and reported), original-destination records
//! evicted by the LRU before the proxy accepts (those connections are
//! closed, counted), and connects to the proxy with no record (counted by
//! `sock_ops` as `record_missing`).
//!
//! These need root. Without it each test fails and says so, unless
//! `DETOUR_SKIP_ROOT_TESTS=1` is set.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Output},
};

use detour_tests::{
    Agent, Cgroup, Pod, Topology, detour_bin, require_root,
    topology::{NODE_IP4, NODE_IP6},
    unique_name,
};
use serde_json::Value;

const PORTS: [u16; 4] = [8080, 8081, 8082, 8083];
const REJECTED: &str = "detour_connections_rejected_total{reason=\"no_original_destination\"}";
const NOT_INSTALLED: &str = "detour_steered_not_installed";

/// One service on `ports` of `address`, spliced (tcp).
fn routes(address: &str, ports: &[u16]) -> String {
    let ports: String = ports
        .iter()
        .map(|port| format!("      - port: {port}\n        protocol: tcp\n"))
        .collect();
    format!(
        "services:\n  - name: echo\n    namespace: default\n    addresses: [\"{address}\"]\n    ports:\n{ports}"
    )
}

fn two_pods() -> Topology {
    Topology::builder("dc").pod("client").pod("server").build()
}

/// GETs `ip:port` from `pod` as a process of `cgroup`; returns the host the
/// server saw as its client (the node for a proxied connection).
fn peer_host(pod: &Pod, cgroup: &Cgroup, ip: &str, port: u16) -> String {
    let url = if ip.contains(':') {
        format!("http://[{ip}]:{port}/")
    } else {
        format!("http://{ip}:{port}/")
    };
    let args = ["-sS", "-m", "5", "-o", "/dev/null", "-D", "-", &url];
    let output = pod.exec_in(cgroup, "curl", &args);
    assert!(
        output.status.success(),
        "curl {url} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let headers = String::from_utf8_lossy(&output.stdout);
    let peer = headers
        .lines()
        .find_map(|l| l.strip_prefix("X-Peer: "))
        .unwrap_or_else(|| panic!("no X-Peer header in {headers:?}"))
        .trim();
    let host = peer.rsplit_once(':').map_or(peer, |(host, _)| host);
    host.trim_matches(['[', ']']).to_owned()
}

fn status(agent: &Agent) -> Value {
    let output: Output = Command::new(detour_bin())
        .arg("--socket")
        .arg(agent.admin_socket())
        .args(["status", "-o", "json"])
        .output()
        .expect("run detour status");
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).expect("status JSON")
}

fn problems(agent: &Agent) -> Vec<String> {
    status(agent)["route_source"]["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| p.as_str().expect("problem text").to_owned())
        .collect()
}

#[test]
fn a_full_steered_map_steers_what_fits_and_the_rest_goes_direct() {
    if !require_root() {
        return;
    }
    let net = two_pods();
    let (client, server) = (net.pod("client"), net.pod("server"));
    let _echo: Vec<_> = PORTS.iter().map(|port| server.echo_server(*port)).collect();
    let cgroup = Cgroup::new(&unique_name("detour-cap-"));
    let ip = server.ip4.to_string();
    let agent = Agent::builder(&net, &cgroup)
        .routes(&routes(&ip, &PORTS))
        .arg("--steered-capacity")
        .arg("2")
        // The node's address marks a connection that went through the
        // proxy: servers see clients' own addresses by default.
        .arg("--client-address")
        .arg("node")
        .spawn();

    // Every destination answers; two through the proxy, two directly.
    let (proxied, direct): (Vec<u16>, Vec<u16>) = PORTS
        .iter()
        .partition(|port| peer_host(client, &cgroup, &ip, **port) == NODE_IP4.to_string());
    assert_eq!(proxied.len(), 2, "proxied {proxied:?}, direct {direct:?}");
    assert!(
        direct
            .iter()
            .all(|port| peer_host(client, &cgroup, &ip, *port) == client.ip4.to_string()),
        "the others reach the server from the client itself"
    );
    assert_eq!(agent.metric(NOT_INSTALLED), 2);
    assert!(agent.metric("detour_bpf_map_write_errors_total{map=\"STEERED\",error=\"full\"}") >= 2);
    assert_eq!(agent.metric("detour_route_problems"), 1);
    assert_eq!(agent.bpf_event("redirected"), 2);
    let status = status(&agent);
    let steered = status["maps"]
        .as_array()
        .and_then(|maps| maps.iter().find(|m| m["name"] == "STEERED"))
        .unwrap_or_else(|| panic!("no STEERED in {status}"));
    assert_eq!(steered["entries"], 2);
    assert_eq!(steered["max_entries"], 2, "the capacity from the flag");
    let problems_now = problems(&agent);
    assert!(
        problems_now.len() == 1
            && problems_now[0].starts_with("2 of 4 steered destinations are not installed")
            && problems_now[0].contains("capacity of 2")
            && problems_now[0].contains("--steered-capacity"),
        "{problems_now:?}"
    );

    // Down to the two that did not fit: removals go first, so both fit now.
    agent.write_routes(&routes(&ip, &direct));
    agent.wait_for_metric(NOT_INSTALLED, 0);
    assert_eq!(problems(&agent), Vec::<String>::new());
    assert_eq!(agent.metric("detour_route_problems"), 0);
    // Both updates were timed, in both phases, and logged.
    for phase in ["build", "apply"] {
        let count = format!("detour_route_update_duration_seconds_count{{phase=\"{phase}\"}}");
        assert_eq!(agent.metric(&count), 2, "{count}");
    }
    let logs = agent.logs();
    assert!(
        logs.lines()
            .filter(|l| l.contains("routes applied")
                && l.contains("build_ms=")
                && l.contains("apply_ms="))
            .count()
            == 2,
        "{logs}"
    );
    for port in &direct {
        assert_eq!(peer_host(client, &cgroup, &ip, *port), NODE_IP4.to_string());
    }
    for port in &proxied {
        assert_eq!(
            peer_host(client, &cgroup, &ip, *port),
            client.ip4.to_string()
        );
    }
}

/// Opens `argv[3]` connections to `argv[1]:argv[2]`, sends a request on
/// each, prints `connected`, then one JSON line per connection: how it
/// ended, the bytes received, the status line and the peer the server saw.
const CLIENT: &str = r#"
import json, socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
socks = []
for _ in range(n):
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    socks.append(s)
print("connected", flush=True)
for s in socks:
    s.settimeout(20)
    data, end = b"", "eof"
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        end = "reset"
    except socket.timeout:
        end = "timeout"
    text = data.decode(errors="replace")
    peer = next((l[8:].strip() for l in text.split("\r\n") if l.startswith("X-Peer: ")), None)
    print(json.dumps({"end": end, "bytes": len(data), "status": text.split("\r\n")[0], "peer": peer}), flush=True)
"#;

#[test]
fn records_evicted_before_accept_close_their_connections_and_are_counted() {
    if !require_root() {
        return;
    }
    const CONNECTIONS: u64 = 32;
    let net = two_pods();
    let (client, server) = (net.pod("client"), net.pod("server"));
    let _echo = server.echo_server(PORTS[0]);
    let cgroup = Cgroup::new(&unique_name("detour-cap-"));
    let ip = server.ip4.to_string();
    let agent = Agent::builder(&net, &cgroup)
        .routes(&routes(&ip, &PORTS[..1]))
        .arg("--orig-dst-capacity")
        .arg("4")
        .log_filter("info")
        // The node's address marks a connection that went through the
        // proxy: servers see clients' own addresses by default.
        .arg("--client-address")
        .arg("node")
        .spawn();
    let events = |agent: &Agent| {
        ["redirected", "rekeyed", "errors", "record_missing"].map(|e| agent.bpf_event(e))
    };
    let before = events(&agent);
    let rejected_before = agent.metric(REJECTED);
    let served_before = agent.metric("detour_connections_total{service=\"default/echo\"}");

    // Stopped, the agent accepts nothing: 32 redirected connections wait in
    // the backlog while their records pile into a map of 4.
    agent.pause();
    let port = PORTS[0].to_string();
    let n = CONNECTIONS.to_string();
    let mut script = client.spawn_in(&cgroup, "python3", &["-c", CLIENT, &ip, &port, &n]);
    let mut lines = BufReader::new(script.stdout.take().expect("stdout")).lines();
    let first = lines.next().map(|l| l.expect("client output"));
    if first.as_deref() != Some("connected") {
        agent.resume();
        let output = script.wait_with_output().expect("client");
        panic!(
            "client did not connect ({first:?}): {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    agent.resume();
    let results: Vec<Value> = lines
        .map(|l| serde_json::from_str(&l.expect("client output")).expect("JSON line"))
        .collect();
    let exit = script.wait().expect("client exit");
    assert!(exit.success(), "client failed: {exit}");
    assert_eq!(results.len() as u64, CONNECTIONS);

    let node = format!("{NODE_IP4}:");
    let (mut served, mut closed) = (0u64, 0u64);
    for result in &results {
        if result["bytes"] == 0 && result["end"] != "timeout" {
            closed += 1;
        } else {
            assert!(
                result["end"] == "eof"
                    && result["status"] == "HTTP/1.1 200 OK"
                    && result["peer"]
                        .as_str()
                        .is_some_and(|p| p.starts_with(&node)),
                "neither a correct proxied response nor a close without a byte: {result}"
            );
            served += 1;
        }
    }
    let after = events(&agent);
    eprintln!("served {served}, closed {closed}; bpf events {before:?} -> {after:?}");
    let delta = |i: usize| after[i] - before[i];
    // Every connect was redirected, and sock_ops handled each: re-keyed,
    // failed (an LRU insert can fail when another CPU holds the free
    // entries), or found its cookie record already evicted.
    assert_eq!(delta(0), CONNECTIONS, "redirected");
    assert_eq!(
        delta(1) + delta(2) + delta(3),
        CONNECTIONS,
        "sock_ops outcomes"
    );
    // How many records survive depends on the kernel's LRU (per-CPU free
    // lists; 2 CPUs here), so the split is not fixed. What always holds: the
    // map holds at most 4, the newest record is never the one evicted (so at
    // least one connection is served), and every connection without a
    // record is closed and counted by the proxy.
    assert!(served >= 1, "served {served}, closed {closed}");
    assert!(
        served <= 4,
        "at most the map's 4 records survive: served {served}"
    );
    assert!(closed >= 1, "served {served}, closed {closed}");
    assert_eq!(served + closed, CONNECTIONS);
    assert_eq!(agent.metric(REJECTED) - rejected_before, closed);
    assert_eq!(
        agent.metric("detour_connections_total{service=\"default/echo\"}") - served_before,
        served
    );

    // Still healthy, and a new connection is served through the proxy.
    assert!(agent.http_get("/healthz").is_some(), "{}", agent.logs());
    assert_eq!(
        peer_host(client, &cgroup, &ip, PORTS[0]),
        NODE_IP4.to_string()
    );
}

#[test]
fn a_connect_to_the_proxy_without_a_record_is_counted_by_sock_ops() {
    if !require_root() {
        return;
    }
    let net = two_pods();
    let (client, server) = (net.pod("client"), net.pod("server"));
    let _echo = server.echo_server(PORTS[0]);
    let cgroup = Cgroup::new(&unique_name("detour-cap-"));
    let ip = server.ip4.to_string();
    let agent = Agent::builder(&net, &cgroup)
        .routes(&routes(&ip, &PORTS[..1]))
        // The node's address marks a connection that went through the
        // proxy: servers see clients' own addresses by default.
        .arg("--client-address")
        .arg("node")
        .spawn();

    // A redirected connect has its record: nothing missing.
    assert_eq!(
        peer_host(client, &cgroup, &ip, PORTS[0]),
        NODE_IP4.to_string()
    );
    assert_eq!(agent.bpf_event("rekeyed"), 1);
    assert_eq!(agent.bpf_event("record_missing"), 0);

    // A process of the cgroup dialling the proxy itself, on IPv4 and IPv6:
    // no record, so sock_ops counts it and the proxy closes it.
    let proxy = detour_tests::agent::PROXY_PORT;
    for url in [
        format!("http://{NODE_IP4}:{proxy}/"),
        format!("http://[{NODE_IP6}]:{proxy}/"),
    ] {
        let output = client.exec_in(&cgroup, "curl", &["-sS", "-m", "5", "-D", "-", &url]);
        assert!(!output.status.success(), "{url} must not be forwarded");
        assert!(output.stdout.is_empty(), "no response bytes from {url}");
    }
    assert_eq!(agent.bpf_event("record_missing"), 2);
    assert_eq!(agent.metric(REJECTED), 2);
    // Connects elsewhere are never counted as missing.
    let other = client.exec_in(
        &cgroup,
        "curl",
        &[
            "-sS",
            "-m",
            "5",
            "-o",
            "/dev/null",
            &format!("http://{ip}:9/"),
        ],
    );
    assert!(!other.status.success(), "nothing listens on port 9");
    assert_eq!(agent.bpf_event("record_missing"), 2);
}
