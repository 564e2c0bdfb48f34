//! The client's address survives the hop: through detour, baseline and fork
//! servers see the client pod's own address, as they would without detour,
//! for HTTP/1 (keep-alive and new connections), HTTP/2 (gRPC, one channel
//! per client) and spliced TCP, over IPv4 and IPv6; two client pods through
//! one agent are told apart even where the proxy pools upstream
//! connections, and a server a routed hop away (as on another node) sees
//! the pod too. A client in the node's own namespace is seen as the node,
//! as without detour; one whose namespace has no name under `/run/netns`
//! gets the node's address, counted.
//!
//! These need root. Without it each test fails and says so, unless
//! `DETOUR_SKIP_ROOT_TESTS=1` is set.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, Ipv6Addr},
    ops::Deref,
    process::{Command, Stdio},
};

use detour_tests::{
    Agent, Cgroup, Forked, Pod, Servers, Topology,
    cmd::Proc,
    netns::Netns,
    require_root,
    topology::{NODE_IP4, RequestLog},
    unique_name,
};

const HTTP: u16 = 8080;
const TCP: u16 = 8081;
const GRPC: u16 = 50051;
const GRPC_CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/grpc_client.py");
const KEY: &str = "baggage: detour-routing-key=feature-x";

/// Two clients, a server (HTTP on `HTTP`, bytes on `TCP`, gRPC on `GRPC`)
/// and its fork, and the agent steering all three ports.
struct Setup {
    forked: Forked,
    _servers: Vec<Proc>,
    grpc_base: RequestLog,
    grpc_fork: RequestLog,
    agent: Agent,
}

impl Deref for Setup {
    type Target = Forked;

    fn deref(&self) -> &Forked {
        &self.forked
    }
}

impl Setup {
    fn new() -> Self {
        Self::with(|_, _| {})
    }

    /// The setup, with `before_agent` run once the pods are up and before
    /// the agent starts. A fifth pod, `unnamed`, is there for it.
    fn with(before_agent: impl FnOnce(&Topology, &Cgroup)) -> Self {
        let forked = Forked::service("server", HTTP)
            .servers(Servers::None)
            .pod("client2")
            .pod("unnamed")
            .build("da");
        let (server, fork) = (forked.baseline(), forked.fork());
        let (grpc, grpc_base) = server.grpc_server(GRPC);
        let (grpc_forked, grpc_fork) = fork.grpc_server(GRPC);
        let servers = vec![
            server.echo_server(HTTP),
            server.echo_server(TCP),
            fork.echo_server(HTTP),
            grpc,
            grpc_forked,
        ];
        let routes = format!(
            "services:
  - name: echo
    addresses: [{s4}, \"{s6}\"]
    ports: [{{port: {HTTP}, protocol: http}}, {{port: {TCP}, protocol: tcp}}]
  - name: greeter
    addresses: [{s4}]
    ports: [{{port: {GRPC}, protocol: h2c}}]
sandboxes:
  - name: feature-x
    routingKey: feature-x
    forks:
      - service: default/echo
        endpoints: [\"{f4}:{HTTP}\"]
      - service: default/greeter
        endpoints: [\"{f4}:{GRPC}\"]
",
            s4 = server.ip4,
            s6 = server.ip6,
            f4 = fork.ip4,
        );
        before_agent(&forked.net, &forked.cgroup);
        let agent = Agent::builder(&forked.net, &forked.cgroup)
            .routes(&routes)
            .spawn();
        Self {
            forked,
            _servers: servers,
            grpc_base,
            grpc_fork,
            agent,
        }
    }

    /// `curl` in `pod` (in the cgroup) with `args`; what each transfer
    /// printed, as (server, host it saw, new connections it made).
    fn curl(&self, pod: &str, args: &[&str]) -> Vec<(String, String, u32)> {
        let output = self.net.pod(pod).exec_in(&self.cgroup, "curl", args);
        assert!(
            output.status.success(),
            "curl failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        transfers(&String::from_utf8_lossy(&output.stdout))
    }

    fn ip4(&self, pod: &str) -> String {
        self.net.pod(pod).ip4.to_string()
    }

    fn ip6(&self, pod: &str) -> String {
        self.net.pod(pod).ip6.to_string()
    }
}

/// One curl transfer's part of the command line: GET `url`, then print
/// the number of new connections it made.
fn transfer(url: &str, key: bool) -> Vec<&str> {
    let mut args = vec!["-sS", "-m", "10", "-w", "connects=%{num_connects}\\n"];
    if key {
        args.extend(["-H", KEY]);
    }
    args.push(url);
    args
}

/// Parses `hello from NAME; you are HOST:PORT` / `connects=N` pairs.
fn transfers(stdout: &str) -> Vec<(String, String, u32)> {
    let mut out = Vec::new();
    let mut lines = stdout.lines();
    while let Some(hello) = lines.next() {
        let (name, peer) = hello
            .strip_prefix("hello from ")
            .and_then(|rest| rest.split_once("; you are "))
            .unwrap_or_else(|| panic!("not an echo answer: {hello:?} in {stdout:?}"));
        let connects = lines
            .next()
            .and_then(|l| l.strip_prefix("connects="))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no connects= after {hello:?} in {stdout:?}"));
        out.push((name.to_owned(), host_of(peer).to_owned(), connects));
    }
    out
}

fn host_of(peer: &str) -> &str {
    peer.rsplit_once(':')
        .map_or(peer, |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']')
}

fn seen(name: &str, host: &str, connects: u32) -> (String, String, u32) {
    (name.to_owned(), host.to_owned(), connects)
}

#[test]
fn http1_baseline_and_fork_see_each_client_pod_on_kept_alive_and_new_connections() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let server = format!("http://{}:{HTTP}/", setup.ip4("server"));
    for client in ["client", "client2"] {
        let me = setup.ip4(client);
        // One client connection, three requests: baseline, fork, baseline.
        let mut args = transfer(&server, false);
        args.push("--next");
        args.extend(transfer(&server, true));
        args.push("--next");
        args.extend(transfer(&server, false));
        assert_eq!(
            setup.curl(client, &args),
            [
                seen("server", &me, 1),
                seen("server-fork", &me, 0),
                seen("server", &me, 0)
            ],
            "{client}: one kept-alive connection, each server sees the client pod"
        );
        // A new client connection per request: the proxy's pooled upstream
        // connections are this client's own.
        for key in [false, true, false] {
            let name = if key { "server-fork" } else { "server" };
            assert_eq!(
                setup.curl(client, &transfer(&server, key)),
                [seen(name, &me, 1)]
            );
        }
    }
    // IPv6: the server sees the client's IPv6 address.
    let server6 = format!("http://[{}]:{HTTP}/", setup.ip6("server"));
    for client in ["client", "client2"] {
        assert_eq!(
            setup.curl(client, &transfer(&server6, false)),
            [seen("server", &setup.ip6(client), 1)]
        );
    }
    let agent = &setup.agent;
    assert_eq!(
        agent.metric("detour_requests_total{service=\"default/echo\",destination=\"sandbox\",sandbox=\"feature-x\",protocol=\"http1\"}"),
        4,
        "the keyed requests went through the proxy"
    );
    assert_eq!(
        agent.metric("detour_client_address_total{reason=\"client_namespace\"}"),
        10,
        "every client connection"
    );
}

#[test]
fn spliced_connections_carry_each_client_pods_address_v4_and_v6() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    for client in ["client", "client2"] {
        for (server, me) in [
            (
                format!("http://{}:{TCP}/", setup.ip4("server")),
                setup.ip4(client),
            ),
            (
                format!("http://[{}]:{TCP}/", setup.ip6("server")),
                setup.ip6(client),
            ),
        ] {
            assert_eq!(
                setup.curl(client, &transfer(&server, false)),
                [seen("server", &me, 1)]
            );
        }
    }
    let agent = &setup.agent;
    assert_eq!(
        agent.metric("detour_connections_by_protocol_total{protocol=\"opaque\"}"),
        4,
        "spliced by the proxy"
    );
    assert_eq!(
        agent.metric("detour_client_address_total{reason=\"client_namespace\"}"),
        4
    );
}

#[test]
fn grpc_streams_of_two_clients_reach_baseline_and_fork_each_with_its_own_address() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let target = format!("{}:{GRPC}", setup.ip4("server"));
    for client in ["client", "client2"] {
        // One channel: four calls on one HTTP/2 connection, every other
        // one keyed.
        let output = setup.net.pod(client).exec_in(
            &setup.cgroup,
            "python3",
            &[
                GRPC_CLIENT,
                "unary",
                &target,
                "--key",
                "feature-x",
                "--count",
                "4",
                "--alternate",
            ],
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{stdout}");
        assert_eq!(stdout.matches("\"code\": \"OK\"").count(), 4, "{stdout}");
    }
    // Each server saw two calls from each client, in order, from its
    // address: the proxy's upstream connections are per client pod.
    let expected = |name: &str| -> Vec<String> {
        ["client", "client", "client2", "client2"]
            .iter()
            .map(|client| format!("served_by={name} peer=ipv4:{}", setup.ip4(client)))
            .collect()
    };
    let calls = |log: &RequestLog| -> Vec<String> {
        log.lines()
            .iter()
            .map(|line| {
                let served_by = line.split(' ').find(|w| w.starts_with("served_by="));
                let peer = line.split(' ').find(|w| w.starts_with("peer="));
                let peer = peer.map(|p| p.rsplit_once(':').map_or(p, |(host, _)| host));
                format!("{} {}", served_by.unwrap_or("?"), peer.unwrap_or("?"))
            })
            .collect()
    };
    assert_eq!(calls(&setup.grpc_base), expected("server"));
    assert_eq!(calls(&setup.grpc_fork), expected("server-fork"));
}

#[test]
fn a_client_in_the_nodes_namespace_is_seen_as_the_node() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    // A process of the cgroup in the node's namespace (a hostNetwork pod).
    let url = format!("http://{}:{HTTP}/", setup.ip4("server"));
    let script = setup.cgroup.enter_script();
    let mut args = vec![
        format!("--net={}", setup.net.node().path()),
        "--".into(),
        "sh".into(),
        "-c".into(),
        script,
        "sh".into(),
        "curl".into(),
    ];
    args.extend(transfer(&url, false).into_iter().map(str::to_owned));
    let output = Command::new("nsenter")
        .args(&args)
        .output()
        .expect("nsenter");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        transfers(&String::from_utf8_lossy(&output.stdout)),
        [seen("server", &NODE_IP4.to_string(), 1)]
    );
    assert_eq!(
        setup
            .agent
            .metric("detour_client_address_total{reason=\"node_client\"}"),
        1
    );
}

#[test]
fn a_client_whose_namespace_has_no_name_gets_the_nodes_address_counted() {
    if !require_root() {
        return;
    }
    // A client that lives on in a namespace whose name is removed before
    // the agent starts (as a runtime that does not name namespaces would
    // leave it): it waits for a line, then asks.
    let mut waiting = None;
    let setup = Setup::with(|net, cgroup| {
        let pod = net.pod("unnamed");
        let url = format!("http://{}:{HTTP}/", net.pod("server").ip4);
        let script = format!(
            "echo $$ > {}/cgroup.procs; echo ready; read line; \
             exec curl -sS -m 10 -w 'connects=%{{num_connects}}\\n' {url}",
            cgroup.path().display()
        );
        let mut client = Command::new("nsenter")
            .args([
                &format!("--net={}", pod.netns.path()),
                "--",
                "sh",
                "-c",
                &script,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("nsenter");
        // Only once the client is in the namespace (nsenter opens it by
        // name) and in the cgroup: unbuffered, the rest stays in the pipe.
        let mut ready = [0; 6];
        client
            .stdout
            .as_mut()
            .expect("stdout")
            .read_exact(&mut ready)
            .expect("the client starts");
        assert_eq!(&ready, b"ready\n");
        // The name goes; the namespace stays, held by the waiting client.
        // Detached (`-l`), as `ip netns delete` does: a copy of the mount in
        // another mount namespace (a test's private one) must not fail it.
        detour_tests::cmd::run("umount", &["-l", &pod.netns.path()]);
        std::fs::remove_file(pod.netns.path()).expect("remove the name");
        // Killed when dropped, should the test fail before it answers.
        waiting = Some(Proc::new(client));
    });
    let mut client = waiting.expect("client started");
    writeln!(client.child().stdin.take().expect("stdin")).expect("go");
    let mut answer = String::new();
    let mut stdout = BufReader::new(client.child().stdout.take().expect("stdout"));
    while stdout.read_line(&mut answer).expect("read") > 0 {}
    assert!(client.child().wait().expect("wait").success(), "{answer}");
    assert_eq!(
        transfers(&answer),
        [seen("server", &NODE_IP4.to_string(), 1)],
        "the node's address: the agent cannot find the client's namespace"
    );
    assert_eq!(
        setup
            .agent
            .metric("detour_client_address_total{reason=\"unnamed_namespace\"}"),
        1
    );
}

#[test]
fn a_server_a_routed_hop_away_sees_the_client_pod_as_from_another_node() {
    if !require_root() {
        return;
    }
    // The client's node routes to a server on another network, as a node
    // forwards a pod's traffic to a pod on another node: no translation on
    // the way, so the server sees whatever source the connection left with.
    let net = Topology::builder("dx").pod("client").build();
    let remote = Pod {
        name: "remote".into(),
        netns: Netns::new(&unique_name("dx-remote-")),
        ip4: Ipv4Addr::new(10, 249, 0, 2),
        ip6: Ipv6Addr::new(0xfd00, 0x249, 0, 0, 0, 0, 0, 2),
    };
    // The node's end lives in the test's own node namespace: a fixed name.
    let node = net.node();
    node.ip(&[
        "link",
        "add",
        "vremote",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        remote.netns.name(),
    ]);
    node.ip(&["addr", "add", "10.249.0.1/24", "dev", "vremote"]);
    node.ip(&["link", "set", "vremote", "up"]);
    remote
        .netns
        .ip(&["addr", "add", "10.249.0.2/24", "dev", "eth0"]);
    remote.netns.ip(&["link", "set", "eth0", "up"]);
    remote
        .netns
        .ip(&["route", "add", "default", "via", "10.249.0.1"]);
    let _server = remote.echo_server(HTTP);
    let cgroup = Cgroup::new(&unique_name("detour-addr-"));
    let agent = Agent::builder(&net, &cgroup)
        .routes(&format!(
            "services:
  - name: remote
    addresses: [{}]
    ports: [{{port: {HTTP}, protocol: http}}]
",
            remote.ip4
        ))
        .spawn();
    let output = net.pod("client").exec_in(
        &cgroup,
        "curl",
        &transfer(&format!("http://{}:{HTTP}/", remote.ip4), false),
    );
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        transfers(&String::from_utf8_lossy(&output.stdout)),
        [seen("remote", &net.pod("client").ip4.to_string(), 1)]
    );
    assert_eq!(
        agent.metric("detour_requests_total{service=\"default/remote\",destination=\"baseline\",sandbox=\"\",protocol=\"http1\"}"),
        1,
        "through the proxy"
    );
}
