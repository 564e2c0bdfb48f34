//! Data-path tests: the real agent, real eBPF programs in the real kernel, and
//! real clients (curl) and servers in network namespaces made per test.
//!
//! These need root. Without it each test fails and says so, unless
//! `DETOUR_SKIP_ROOT_TESTS=1` is set.

use std::process::Output;

use detour_tests::{
    Agent, AgentBuilder, Cgroup, Pod, Topology, cmd, cmd::Proc, require_root, topology::NODE_IP4,
    unique_name,
};

const PORT: u16 = 8080;
const OTHER_PORT: u16 = 8081;

/// A client pod and a server pod (also reachable at the VIP
/// `10.96.0.10`), the attached cgroup, and routes steering one destination
/// on [`PORT`] as `tcp`. What most tests here start from.
struct Steered {
    net: Topology,
    cgroup: Cgroup,
    destination: String,
    _echo: Option<Proc>,
}

impl Steered {
    /// The pods with an echo server on [`PORT`]; `destination` picks the
    /// steered address from the server pod.
    fn to(destination: impl FnOnce(&Pod) -> String) -> Self {
        let mut steered = Self::with_nothing_listening(destination);
        steered._echo = Some(steered.net.pod("server").echo_server(PORT));
        steered
    }

    /// The same, with nothing listening on the server.
    fn with_nothing_listening(destination: impl FnOnce(&Pod) -> String) -> Self {
        let net = Topology::builder("dt")
            .pod("client")
            .pod("server")
            .vip("server", "10.96.0.10")
            .build();
        let destination = destination(net.pod("server"));
        Self {
            cgroup: Cgroup::new(&unique_name("detour-test-")),
            net,
            destination,
            _echo: None,
        }
    }

    /// An agent steering the destination.
    fn agent(&self) -> AgentBuilder<'_> {
        let routes = format!(
            "services:\n  - name: echo\n    namespace: default\n    addresses: [\"{}\"]\n    \
             ports:\n      - port: {PORT}\n        protocol: tcp\n",
            self.destination
        );
        Agent::builder(&self.net, &self.cgroup).routes(&routes)
    }
}

fn url(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("http://[{ip}]:{port}/")
    } else {
        format!("http://{ip}:{port}/")
    }
}

/// The address the server saw, from its `X-Peer` response header.
fn peer_seen(output: &Output) -> String {
    assert!(
        output.status.success(),
        "curl failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let headers = String::from_utf8_lossy(&output.stdout);
    headers
        .lines()
        .find_map(|l| l.strip_prefix("X-Peer: "))
        .unwrap_or_else(|| panic!("no X-Peer header in {headers:?}"))
        .trim()
        .to_owned()
}

fn host_of(peer: &str) -> &str {
    peer.rsplit_once(':')
        .map_or(peer, |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']')
}

/// GET from `pod` as a process of `cgroup`; returns the peer the server saw.
fn get_in(pod: &Pod, cgroup: &Cgroup, ip: &str, port: u16) -> String {
    peer_seen(&pod.exec_in(
        cgroup,
        "curl",
        &[
            "-sS",
            "-m",
            "5",
            "-o",
            "/dev/null",
            "-D",
            "-",
            &url(ip, port),
        ],
    ))
}

/// GET from `pod` outside any test cgroup.
fn get_outside(pod: &Pod, ip: &str, port: u16) -> String {
    peer_seen(&pod.exec(
        "curl",
        &[
            "-sS",
            "-m",
            "5",
            "-o",
            "/dev/null",
            "-D",
            "-",
            &url(ip, port),
        ],
    ))
}

/// Names of the programs attached to `cgroup`, as bpftool lists them
/// (sorted; bpftool prints nothing at all for a cgroup with none).
fn attached_programs(cgroup: &Cgroup) -> Vec<String> {
    let path = cgroup.path().display().to_string();
    let json = cmd::run("bpftool", &["-j", "cgroup", "show", &path]);
    let mut names: Vec<String> = json
        .split("\"name\":\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_owned)
        .collect();
    names.sort();
    names
}

const NO_PROGRAMS: [&str; 0] = [];

/// POSTs `size` random bytes from the client (in the cgroup) and checks that
/// exactly those bytes come back; returns the peer the server saw.
fn echo_bytes(pod: &Pod, cgroup: &Cgroup, ip: &str, port: u16, size: usize) -> String {
    let dir = std::env::temp_dir().join(unique_name("detour-bytes-"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let sent = dir.join("sent");
    let received = dir.join("received");
    let mut data = vec![0u8; size];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for byte in &mut data {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *byte = state as u8;
    }
    std::fs::write(&sent, &data).expect("write payload");
    let output = pod.exec_in(
        cgroup,
        "curl",
        &[
            "-sS",
            "-m",
            "30",
            "-H",
            "Expect:",
            "--data-binary",
            &format!("@{}", sent.display()),
            "-o",
            &received.display().to_string(),
            "-D",
            "-",
            &url(ip, port),
        ],
    );
    let peer = peer_seen(&output);
    let echoed = std::fs::read(&received).expect("read echo");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(echoed.len(), data.len(), "echoed length");
    assert!(echoed == data, "echoed bytes differ from the bytes sent");
    peer
}

#[test]
fn steered_ipv4_destination_is_proxied_with_its_bytes_intact() {
    if !require_root() {
        return;
    }
    let steered = Steered::to(|server| server.ip4.to_string());
    let (net, cgroup) = (&steered.net, &steered.cgroup);
    let server = net.pod("server");
    let agent = steered.agent().spawn();

    let peer = echo_bytes(
        net.pod("client"),
        cgroup,
        &server.ip4.to_string(),
        PORT,
        4 << 20,
    );
    assert_eq!(
        host_of(&peer),
        net.pod("client").ip4.to_string(),
        "the server sees the client pod, not the node"
    );
    assert_eq!(agent.bpf_event("redirected"), 1);
    assert_eq!(agent.bpf_event("rekeyed"), 1);
    assert_eq!(
        agent.metric("detour_connections_total{service=\"default/echo\"}"),
        1
    );
}

#[test]
fn steered_ipv6_destination_is_proxied_with_its_bytes_intact() {
    if !require_root() {
        return;
    }
    let steered = Steered::to(|server| server.ip6.to_string());
    let (net, cgroup) = (&steered.net, &steered.cgroup);
    let server = net.pod("server");
    let agent = steered.agent().spawn();

    let peer = echo_bytes(
        net.pod("client"),
        cgroup,
        &server.ip6.to_string(),
        PORT,
        4 << 20,
    );
    assert_eq!(
        host_of(&peer),
        net.pod("client").ip6.to_string(),
        "the server sees the client pod, not the node"
    );
    assert_eq!(agent.bpf_event("redirected"), 1);
    assert_eq!(
        agent.metric("detour_connections_total{service=\"default/echo\"}"),
        1
    );
}

#[test]
fn steered_service_vip_is_proxied_to_the_vip() {
    if !require_root() {
        return;
    }
    let steered = Steered::to(|_| "10.96.0.10".to_owned());
    let (net, cgroup) = (&steered.net, &steered.cgroup);
    let agent = steered.agent().spawn();

    let peer = get_in(net.pod("client"), cgroup, "10.96.0.10", PORT);
    assert_eq!(host_of(&peer), net.pod("client").ip4.to_string());
    assert_eq!(agent.bpf_event("redirected"), 1);
}

#[test]
fn destination_not_steered_is_untouched() {
    if !require_root() {
        return;
    }
    let steered = Steered::to(|server| server.ip4.to_string());
    let (net, cgroup) = (&steered.net, &steered.cgroup);
    let server = net.pod("server");
    let client = net.pod("client");
    let _other = server.echo_server(OTHER_PORT);
    let agent = steered.agent().spawn();

    let peer = get_in(client, cgroup, &server.ip4.to_string(), OTHER_PORT);
    assert_eq!(
        host_of(&peer),
        client.ip4.to_string(),
        "the server sees the client itself"
    );
    let peer6 = get_in(client, cgroup, &server.ip6.to_string(), PORT);
    assert_eq!(
        host_of(&peer6),
        client.ip6.to_string(),
        "IPv6 of a steered IPv4 service is not steered"
    );
    assert_eq!(agent.bpf_event("redirected"), 0);
    assert!(
        agent.bpf_event("not_steered") >= 2,
        "the programs saw the connects"
    );
    assert_eq!(
        agent.metric("detour_connections_total{service=\"default/echo\"}"),
        0
    );
}

#[test]
fn process_outside_the_cgroup_is_untouched() {
    if !require_root() {
        return;
    }
    let steered = Steered::to(|server| server.ip4.to_string());
    let net = &steered.net;
    let server = net.pod("server");
    let client = net.pod("client");
    let agent = steered.agent().spawn();

    let peer = get_outside(client, &server.ip4.to_string(), PORT);
    assert_eq!(host_of(&peer), client.ip4.to_string());
    assert_eq!(agent.bpf_event("redirected"), 0);
    assert_eq!(
        agent.bpf_event("not_steered"),
        0,
        "the programs never ran for it"
    );
}

#[test]
fn direct_connection_to_the_proxy_is_closed_and_counted() {
    if !require_root() {
        return;
    }
    let steered = Steered::to(|server| server.ip4.to_string());
    let net = &steered.net;
    let agent = steered.agent().spawn();

    let proxy = url(&NODE_IP4.to_string(), detour_tests::agent::PROXY_PORT);
    let output = net
        .pod("client")
        .exec("curl", &["-sS", "-m", "5", "-D", "-", &proxy]);
    assert!(
        !output.status.success(),
        "a direct connection must not be forwarded"
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).is_empty(),
        "no response bytes at all"
    );
    assert_eq!(
        agent.metric("detour_connections_rejected_total{reason=\"no_original_destination\"}"),
        1
    );
    assert_eq!(
        agent.metric("detour_connections_total{service=\"default/echo\"}"),
        0
    );
}

#[test]
fn after_kill_9_connections_go_direct_and_nothing_stays_attached() {
    if !require_root() {
        return;
    }
    let steered = Steered::to(|server| server.ip4.to_string());
    let (net, cgroup) = (&steered.net, &steered.cgroup);
    let server = net.pod("server");
    let client = net.pod("client");
    // The node's address marks a connection that went through the proxy:
    // servers see clients' own addresses by default.
    let mut agent = steered.agent().arg("--client-address").arg("node").spawn();
    assert_eq!(
        host_of(&get_in(client, cgroup, &server.ip4.to_string(), PORT)),
        NODE_IP4.to_string()
    );
    assert_eq!(
        attached_programs(cgroup),
        ["detour_connect4", "detour_connect6", "detour_sockops"]
    );

    agent.kill9();
    assert_eq!(
        attached_programs(cgroup),
        NO_PROGRAMS,
        "the kernel detached every program"
    );
    let peer = get_in(client, cgroup, &server.ip4.to_string(), PORT);
    assert_eq!(
        host_of(&peer),
        client.ip4.to_string(),
        "fail-open: straight to the destination"
    );
}

#[test]
fn sigterm_detaches_and_exits_cleanly() {
    if !require_root() {
        return;
    }
    let steered = Steered::to(|server| server.ip4.to_string());
    let (net, cgroup) = (&steered.net, &steered.cgroup);
    let server = net.pod("server");
    let client = net.pod("client");
    let mut agent = steered.agent().spawn();

    let status = agent.terminate();
    assert!(status.success(), "exit status {status}:\n{}", agent.logs());
    assert_eq!(attached_programs(cgroup), NO_PROGRAMS);
    assert_eq!(
        host_of(&get_in(client, cgroup, &server.ip4.to_string(), PORT)),
        client.ip4.to_string()
    );
}

#[test]
fn agent_upstream_is_not_redirected_even_to_a_steered_destination() {
    if !require_root() {
        return;
    }
    let steered = Steered::to(|server| server.ip4.to_string());
    let (net, cgroup) = (&steered.net, &steered.cgroup);
    let server = net.pod("server");
    // The agent runs inside the attached cgroup, as an agent pod does, so its
    // own upstream connect to the steered destination meets the programs.
    let agent = steered.agent().inside_cgroup().spawn();

    let peer = get_in(net.pod("client"), cgroup, &server.ip4.to_string(), PORT);
    assert_eq!(host_of(&peer), net.pod("client").ip4.to_string());
    assert_eq!(
        agent.bpf_event("redirected"),
        1,
        "only the client's connect"
    );
    assert_eq!(
        agent.bpf_event("own_socket"),
        1,
        "the agent's upstream connect was recognised by its mark"
    );
    assert_eq!(
        agent.metric("detour_connections_rejected_total{reason=\"no_original_destination\"}"),
        0
    );
}

/// A dual-stack (AF_INET6) socket connecting to an IPv4-mapped address goes
/// through `connect6` with `::ffff:a.b.c.d`: it matches the IPv4 entry, is
/// redirected to the IPv4 proxy in mapped form, and its record is found.
#[test]
fn dual_stack_socket_to_ipv4_mapped_destination_is_steered() {
    if !require_root() {
        return;
    }
    let steered = Steered::to(|server| server.ip4.to_string());
    let (net, cgroup) = (&steered.net, &steered.cgroup);
    let server = net.pod("server");
    let agent = steered.agent().spawn();

    let script = format!(
        "import socket\n\
         s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)\n\
         s.settimeout(5)\n\
         s.connect(('::ffff:{}', {PORT}))\n\
         s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')\n\
         data = b''\n\
         while True:\n\
         \x20   chunk = s.recv(65536)\n\
         \x20   if not chunk: break\n\
         \x20   data += chunk\n\
         print(data.decode())\n",
        server.ip4
    );
    let output = net
        .pod("client")
        .exec_in(cgroup, "python3", &["-c", &script]);
    assert!(
        output.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let peer = peer_seen(&output);
    assert_eq!(
        host_of(&peer),
        net.pod("client").ip4.to_string(),
        "the server sees the client pod, not the node"
    );
    assert_eq!(agent.bpf_event("redirected"), 1);
    assert_eq!(agent.bpf_event("rekeyed"), 1);
    assert_eq!(
        agent.metric("detour_connections_total{service=\"default/echo\"}"),
        1
    );
}

#[test]
fn dead_upstream_closes_the_client_and_is_counted() {
    if !require_root() {
        return;
    }
    let steered = Steered::with_nothing_listening(|server| server.ip4.to_string());
    let (net, cgroup) = (&steered.net, &steered.cgroup);
    let server = net.pod("server");
    // Steered, but nothing listens there: the server refuses the agent.
    let agent = steered.agent().spawn();

    let output = net.pod("client").exec_in(
        cgroup,
        "curl",
        &[
            "-sS",
            "-m",
            "5",
            "-D",
            "-",
            &url(&server.ip4.to_string(), PORT),
        ],
    );
    assert!(
        !output.status.success(),
        "nothing listens: the client must not get a response"
    );
    assert!(String::from_utf8_lossy(&output.stdout).is_empty());
    assert_eq!(agent.bpf_event("redirected"), 1);
    assert_eq!(
        agent.metric("detour_upstream_errors_total{reason=\"connect\"}"),
        1
    );
}
