//! The in-kernel relay: connections the proxy only splices (`tcp` ports,
//! bytes that are not HTTP on `auto` ports) have their bytes moved between
//! the two sockets by the `sk_skb` verdict, in order, both ways, with each
//! side's end of stream passed on; and with `--kernel-relay false` the same
//! transfers are copied by the proxy.
//!
//! Each transfer is checked end to end by `tests/servers/stream.py`: the
//! client sends pseudo-random bytes and half-closes; the upstream answers a
//! digest of what it read, then its own pseudo-random bytes, and closes.
//!
//! The relay is off by default, because the kernel gives its redirects no
//! backpressure: with it, a client that stops reading lets the upstream
//! queue gigabytes of kernel memory. The default (the proxy's copy) holds
//! the upstream back: `a_reader_that_stops_reading_holds_the_writer_back`.
//!
//! These need root. Without it each test fails and says so, unless
//! `DETOUR_SKIP_ROOT_TESTS=1` is set.

use detour_tests::{Agent, Cgroup, Topology, require_root, unique_name};

const TCP_PORT: u16 = 9000;
const AUTO_PORT: u16 = 9001;
const BLAST_PORT: u16 = 9002;
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/servers/stream.py");

struct Setup {
    net: Topology,
    cgroup: Cgroup,
    _server: detour_tests::cmd::Proc,
    _auto_server: detour_tests::cmd::Proc,
}

impl Setup {
    fn new() -> Self {
        let net = Topology::builder("kr").pod("client").pod("server").build();
        let server = net.pod("server").stream_server(TCP_PORT);
        let auto_server = net.pod("server").stream_server(AUTO_PORT);
        let cgroup = Cgroup::new(&unique_name("detour-kr-"));
        Self {
            net,
            cgroup,
            _server: server,
            _auto_server: auto_server,
        }
    }

    fn routes(&self) -> String {
        format!(
            "services:\n  - name: stream\n    addresses: [\"{ip}\"]\n    ports:\n      - port: {TCP_PORT}\n        protocol: tcp\n      - port: {AUTO_PORT}\n      - port: {BLAST_PORT}\n        protocol: tcp\n",
            ip = self.net.pod("server").ip4
        )
    }

    fn agent(&self, kernel_relay: bool) -> Agent {
        Agent::builder(&self.net, &self.cgroup)
            .routes(&self.routes())
            .arg("--kernel-relay")
            .arg(if kernel_relay { "true" } else { "false" })
            .spawn()
    }

    /// One transfer of `size` bytes each way through the proxy; what the
    /// client script printed.
    fn transfer(&self, port: u16, size: usize, seed: u32) -> String {
        self.transfer_paused(port, size, seed, 0.0)
    }

    /// As `transfer`, the client pausing `pause` seconds after its first
    /// line: the proxy has started splicing before the rest (and the end of
    /// stream) arrive.
    fn transfer_paused(&self, port: u16, size: usize, seed: u32, pause: f64) -> String {
        let ip = self.net.pod("server").ip4.to_string();
        let output = self.net.pod("client").exec_in(
            &self.cgroup,
            "python3",
            &[
                SCRIPT,
                "--client",
                &ip,
                &port.to_string(),
                &size.to_string(),
                &seed.to_string(),
                &pause.to_string(),
            ],
        );
        assert!(
            output.status.success(),
            "client failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }
}

#[test]
fn spliced_bytes_are_relayed_in_the_kernel_intact_both_ways() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let agent = setup.agent(true);
    let size = 16 << 20;
    // The pause lets the relay start before the bulk of the bytes.
    assert_eq!(
        setup.transfer_paused(TCP_PORT, size, 1, 0.2),
        format!("ok {size}")
    );
    // Not HTTP on an `auto` port: detection reads the first bytes, which
    // the proxy sends on itself before the relay takes over.
    assert_eq!(
        setup.transfer_paused(AUTO_PORT, size, 2, 0.2),
        format!("ok {size}")
    );
    assert_eq!(agent.metric("detour_splices_total{relay=\"kernel\"}"), 2);
    assert_eq!(agent.metric("detour_splices_total{relay=\"user\"}"), 0);
    // 32 MiB each way in segments of at most 64 KiB.
    assert!(agent.bpf_event("relayed") >= 2 * (size as u64 >> 16));
    assert_eq!(agent.bpf_event("relay_missed"), 0);
}

#[test]
fn a_sender_that_never_pauses_loses_nothing_whoever_relays_it() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let agent = setup.agent(true);
    let size = 16 << 20;
    // The proxy may still be reading (and sending on) the first bytes when
    // the relay would start: it starts once the socket has nothing queued,
    // or the proxy splices the connection itself.
    for (port, seed) in [(TCP_PORT, 5), (AUTO_PORT, 6), (TCP_PORT, 7), (AUTO_PORT, 8)] {
        assert_eq!(setup.transfer(port, size, seed), format!("ok {size}"));
    }
    let kernel = agent.metric("detour_splices_total{relay=\"kernel\"}");
    let user = agent.metric("detour_splices_total{relay=\"user\"}");
    assert_eq!(kernel + user, 4, "every connection spliced once");
}

#[test]
fn many_short_transfers_end_cleanly_in_the_kernel() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let agent = setup.agent(true);
    for seed in 0..20 {
        let size = 1 + seed as usize * 4099;
        let port = if seed % 2 == 0 { TCP_PORT } else { AUTO_PORT };
        assert_eq!(
            setup.transfer_paused(port, size, seed, 0.1),
            format!("ok {size}")
        );
    }
    assert_eq!(agent.metric("detour_splices_total{relay=\"kernel\"}"), 20);
}

#[test]
fn with_the_relay_off_the_proxy_copies_the_same_bytes() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let agent = setup.agent(false);
    let size = 4 << 20;
    assert_eq!(setup.transfer(TCP_PORT, size, 3), format!("ok {size}"));
    assert_eq!(setup.transfer(AUTO_PORT, size, 4), format!("ok {size}"));
    assert_eq!(agent.metric("detour_splices_total{relay=\"user\"}"), 2);
    assert_eq!(agent.metric("detour_splices_total{relay=\"kernel\"}"), 0);
    assert_eq!(agent.bpf_event("relayed"), 0);
}

#[test]
fn a_reader_that_stops_reading_holds_the_writer_back() {
    if !require_root() {
        return;
    }
    let setup = Setup::new();
    let (_blast, log) = setup.net.pod("server").blast_server(BLAST_PORT);
    // The defaults, as a user runs the agent.
    let agent = Agent::builder(&setup.net, &setup.cgroup)
        .routes(&setup.routes())
        .spawn();
    // Connects, says hello, and reads nothing for 3 s: the blast server
    // writes for 2 s as fast as the connection takes.
    let ip = setup.net.pod("server").ip4.to_string();
    let client = "import socket, sys, time\n\
                  s = socket.create_connection((sys.argv[1], int(sys.argv[2])))\n\
                  s.sendall(b'hello\\n')\n\
                  time.sleep(3)\n";
    let output = setup.net.pod("client").exec_in(
        &setup.cgroup,
        "python3",
        &["-c", client, &ip, &BLAST_PORT.to_string()],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let sent: u64 = log
        .lines()
        .first()
        .and_then(|line| line.parse().ok())
        .expect("the blast server logged what it sent");
    // Socket buffers on the way: a few MiB each. The in-kernel relay let
    // gigabytes through here.
    assert!(
        sent < 128 << 20,
        "the upstream wrote {sent} bytes to a client that reads nothing"
    );
    assert_eq!(agent.metric("detour_splices_total{relay=\"user\"}"), 1);
}
