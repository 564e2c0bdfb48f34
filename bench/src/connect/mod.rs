//! `cargo xtask bench connect`: what one connect()+close() costs a client,
//! with and without detour, and against iptables NAT doing the same
//! redirect, all measured in one run.
//!
//! # Layout
//! One [`Topology`] (node namespace with a bridge) with three pods: `client`,
//! `server` and `natclient`; two child cgroups: `attached` (the real release
//! agent attaches its connect4/connect6/sock_ops programs there, with logs at
//! `info` via `AgentBuilder::log_filter`: the harness default, `debug`, adds
//! a log line per connection and turns on the eBPF programs' own logs, which
//! would be measured too) and `plain` (nothing attached). The server pod runs two accept-and-close listeners:
//! `:8080` and `:8081`. The agent steers only `server:8081`.
//!
//! # Modes, and what each one's target does
//! 1. no agent: `client` pod, `plain` cgroup, to `server:8080`.
//! 2. not steered: `client` pod, `attached` cgroup, to the same `server:8080`.
//!    Only the cgroup differs from 1, so the 3% comparison is like for like.
//! 3. steered: `client` pod, `attached` cgroup, to `server:8081`; connect4
//!    rewrites it to detour's proxy on the node (`10.248.0.1:15001`), which per
//!    connection looks up the original destination, connects upstream to
//!    `server:8081` and splices until the client is gone. The port is
//!    declared `protocol: tcp` in the routes file, so the proxy splices at
//!    once instead of waiting to detect HTTP: the same work as mode 4's.
//! 4. iptables DNAT: `natclient` pod, `plain` cgroup, to `server:8082`, which
//!    a nat `OUTPUT` rule in that pod DNATs to `10.248.0.1:15002`: a minimal
//!    forwarding proxy (`server --upstream`) in the node namespace that
//!    per connection connects upstream to `server:8081` and copies until the
//!    client is gone. Same path and the same upstream work as 3; it does no
//!    original-destination lookup (its upstream is fixed). DNAT rather than
//!    REDIRECT because REDIRECT can only target the client's own namespace,
//!    and a node-local proxy is what detour redirects to.
//! 5. iptables REDIRECT (reference): `natclient`, to `server:8083`,
//!    REDIRECTed to the same kind of forwarder on `127.0.0.1:15003` inside
//!    the pod (sidecar style). Loopback is a shorter path than veth+bridge,
//!    so this row mixes the NAT cost with a cheaper path; it is printed so
//!    that the literal "iptables REDIRECT" comparison is visible too.
//!
//! 6. fork pod, not forked: `client` pod, `fork-pod` cgroup (a child of
//!    `attached`, named in the routes as sandbox `bench-fork`'s fork pod, so
//!    its connects run the fork programs first), to `server:8080`: what the
//!    fork programs cost a fork pod's connect they leave alone. Compare 2.
//! 7. fork pod, keyless fork: the same, to `server:8084`, a `tcp` port the
//!    sandbox forks to `server:8080`: the fork programs rewrite the connect
//!    at `connect()` (no proxy). Compare 2 (same server, same path).
//!
//! Nothing listens on 8082/8083/8084: if a rule did not match, the connect would
//! be refused and the run would fail. The iptables modes use their own pod
//! because nat rules turn on conntrack for every connection of a namespace:
//! in `client` they would tax modes 1-3 as well. After the rounds, the agent's
//! counters and the rules' packet counters must equal the connects made, or
//! the run fails (the numbers would not mean what the table says).
//!
//! # TIME_WAIT and ports
//! Clients close with `SO_LINGER {on, 0}` (RST, no TIME_WAIT; see
//! [`crate::connect::client`]); every mode closes the same way. The proxies' upstream
//! sockets may still end in TIME_WAIT, so the node and `natclient`
//! namespaces get `tcp_tw_reuse=1` and a wider `ip_local_port_range`. Only
//! namespaces made here are changed, never the root namespace.
//!
//! # Interleaving, placement and statistics
//! One `client` worker per mode, started inside its pod namespace and
//! cgroup (the eBPF programs only see sockets of processes in the cgroup),
//! all pinned to one CPU; the servers, forwarders and agent run on the
//! other(s) ([`crate::procs::Cpus`]). The workers take turns in batches of
//! `--batch` operations, the order of modes rotating per batch, so every
//! mode is measured within milliseconds of every other and a noisy machine
//! slows all of them alike ([`crate::connect::workers`]). Each operation is followed
//! by an untimed `--gap-us` spin so every listener keeps up. A round is
//! `--iterations` operations per mode; round 0 is a discarded warm-up.
//! Per round each mode contributes its median operation; the table shows
//! the median over rounds, and ratios are medians of per-round paired
//! ratios ([`crate::connect::report`]). The overall mean (stalls included), the p90,
//! the count of operations over 5 ms, accept-queue overflows and SYN
//! retransmits are printed as well, so a noisy or lossy run shows as one.
//!
//! Paths: modes 1-2 go client veth -> bridge -> server veth; modes 3-4 end
//! at the node's bridge address (one veth hop), so they can be cheaper than
//! "no agent". Compare 2 with 1 and 3 with 4; 5 is on loopback.

pub mod client;
pub mod report;
pub mod server;
pub mod workers;

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    sync::atomic::Ordering,
};

use anyhow::{Context, bail};
use detour_tests::{Agent, Cgroup, Topology, netns::Netns, topology::NODE_IP4};

use crate::{
    BenchArgs,
    connect::client::BATCH_WARMUP,
    connect::report::{Results, Sample},
    connect::workers::{Target, Workers},
    procs::{Cpus, INTERRUPTED, iptables, nat_rule_packets, settled, spawn_peer, tcp_ext},
};

const DEFAULT_ROUNDS: u32 = 60;
const BASE_PORT: u16 = 8080;
const STEERED_PORT: u16 = 8081;
const DNAT_PORT: u16 = 8082;
const REDIRECT_PORT: u16 = 8083;
/// A keyless (`tcp`) port the sandbox forks to `BASE_PORT`.
const FORKED_PORT: u16 = 8084;
const NODE_FORWARDER_PORT: u16 = 15002;
const LOCAL_FORWARDER_PORT: u16 = 15003;
const PROXY_SYSCTLS: [&str; 2] = [
    "net.ipv4.tcp_tw_reuse=1",
    "net.ipv4.ip_local_port_range=20000 65000",
];

/// The modes, in table order; `mode as usize` indexes per-mode arrays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    NoAgent,
    NotSteered,
    Steered,
    IptablesDnat,
    IptablesRedirect,
    ForkPodNotForked,
    ForkPodForked,
}

impl Mode {
    pub const ALL: [Self; 7] = [
        Self::NoAgent,
        Self::NotSteered,
        Self::Steered,
        Self::IptablesDnat,
        Self::IptablesRedirect,
        Self::ForkPodNotForked,
        Self::ForkPodForked,
    ];

    /// The mode's name on the client's command line and output.
    pub fn key(self) -> &'static str {
        match self {
            Self::NoAgent => "no-agent",
            Self::NotSteered => "not-steered",
            Self::Steered => "steered",
            Self::IptablesDnat => "iptables-dnat",
            Self::IptablesRedirect => "iptables-redirect",
            Self::ForkPodNotForked => "fork-pod",
            Self::ForkPodForked => "fork-pod-forked",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::NoAgent => "no agent",
            Self::NotSteered => "agent attached, not steered",
            Self::Steered => "steered (detour)",
            Self::IptablesDnat => "iptables DNAT to node proxy",
            Self::IptablesRedirect => "iptables REDIRECT to pod loopback (reference)",
            Self::ForkPodNotForked => "fork pod, destination not forked",
            Self::ForkPodForked => "fork pod, keyless fork (rewritten at connect)",
        }
    }

    pub fn target(self) -> &'static str {
        match self {
            Self::NoAgent => "server pod :8080, accepts and closes; client cgroup has no programs",
            Self::NotSteered => {
                "the same server :8080 from the cgroup with detour's programs attached \
                 (detour steers only :8081)"
            }
            Self::Steered => {
                "server :8081, rewritten by connect4 to detour's proxy on the node \
                 (10.248.0.1:15001), which looks up the original destination, connects \
                 upstream to server :8081 and splices"
            }
            Self::IptablesDnat => {
                "server :8082, DNATed by a nat OUTPUT rule in a second client pod to a \
                 minimal forwarder on the node (10.248.0.1:15002) that connects upstream \
                 to server :8081 (no lookup) and copies; no detour programs; conntrack on"
            }
            Self::IptablesRedirect => {
                "server :8083, REDIRECTed to the same forwarder on 127.0.0.1:15003 inside \
                 that pod (loopback: shorter path than the node proxy)"
            }
            Self::ForkPodNotForked => {
                "server :8080 from a fork pod's cgroup (below the attached one): the fork \
                 programs look the destination up and leave it"
            }
            Self::ForkPodForked => {
                "server :8084, a tcp port the pod's sandbox forks to server :8080: the fork \
                 programs rewrite the connect to it (no proxy)"
            }
        }
    }
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    crate::host::require_root("connect")?;
    let rounds = args.rounds.unwrap_or(DEFAULT_ROUNDS);
    if rounds == 0 || args.iterations == 0 || args.batch == 0 {
        bail!("--rounds, --iterations and --batch must be at least 1");
    }
    let (binary, agent_name) = crate::agent_binary()?;
    // SAFETY: no other thread exists yet (the Ctrl-C handler's is started
    // below), so nothing reads the environment concurrently.
    unsafe { std::env::set_var("DETOUR_BIN", &binary) };
    ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst))
        .context("cannot install the Ctrl-C handler")?;

    eprintln!("bench connect: setting up namespaces, cgroups, listeners and the agent");
    let cpus = Cpus::plan();
    // Drop order (reverse of declaration): agent and listeners, then the
    // cgroups, then the namespaces.
    let net = Topology::builder("dtb")
        .pod("client")
        .pod("server")
        .pod("natclient")
        .build();
    let (client, server, natclient) = (net.pod("client"), net.pod("server"), net.pod("natclient"));
    for setting in PROXY_SYSCTLS {
        net.node().sysctl(setting);
        natclient.netns.sysctl(setting);
    }
    let attached = Cgroup::new(&detour_tests::unique_name("detour-bench-attached-"));
    let plain = Cgroup::new(&detour_tests::unique_name("detour-bench-plain-"));
    let fork_pod = attached.child("fork-pod");

    let at = |port| SocketAddr::V4(SocketAddrV4::new(server.ip4, port));
    let upstream = at(STEERED_PORT);
    let node_forwarder = SocketAddr::V4(SocketAddrV4::new(NODE_IP4, NODE_FORWARDER_PORT));
    let local_forwarder =
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, LOCAL_FORWARDER_PORT));
    let _peers = [
        spawn_peer(&cpus, &server.netns, at(BASE_PORT), None)?,
        spawn_peer(&cpus, &server.netns, upstream, None)?,
        spawn_peer(&cpus, net.node(), node_forwarder, Some(upstream))?,
        spawn_peer(&cpus, &natclient.netns, local_forwarder, Some(upstream))?,
    ];
    let dnat_rule = format!(
        "-p tcp -d {} --dport {DNAT_PORT} -j DNAT --to-destination {node_forwarder}",
        server.ip4
    );
    let redirect_rule = format!(
        "-p tcp -d {} --dport {REDIRECT_PORT} -j REDIRECT --to-ports {LOCAL_FORWARDER_PORT}",
        server.ip4
    );
    for rule in [&dnat_rule, &redirect_rule] {
        iptables(&natclient.netns, &format!("-t nat -A OUTPUT {rule}"))?;
    }
    let routes = format!(
        "services:
  - name: steered
    namespace: bench
    addresses: [\"{ip}\"]
    ports: [{{port: {STEERED_PORT}, protocol: tcp}}]
  - name: db
    namespace: bench
    addresses: [\"{ip}\"]
    ports: [{{port: {FORKED_PORT}, protocol: tcp}}]
sandboxes:
  - name: bench-fork
    routingKey: bench-fork
    forks:
      - service: bench/db
        endpoints: [\"{ip}:{BASE_PORT}\"]
    podCgroups: [\"{fork_pod}\"]
",
        ip = server.ip4,
        fork_pod = fork_pod.path().display(),
    );
    let agent = Agent::builder(&net, &attached)
        .routes(&routes)
        .log_filter("info")
        .spawn();
    cpus.pin_rest(agent.pid())?;

    let target = |mode: Mode| {
        let (pod, cgroup, addr) = match mode {
            Mode::NoAgent => (client, &plain, at(BASE_PORT)),
            Mode::NotSteered => (client, &attached, at(BASE_PORT)),
            Mode::Steered => (client, &attached, at(STEERED_PORT)),
            Mode::IptablesDnat => (natclient, &plain, at(DNAT_PORT)),
            Mode::IptablesRedirect => (natclient, &plain, at(REDIRECT_PORT)),
            Mode::ForkPodNotForked => (client, &fork_pod, at(BASE_PORT)),
            Mode::ForkPodForked => (client, &fork_pod, at(FORKED_PORT)),
        };
        Target {
            name: mode.key(),
            pod,
            cgroup,
            addr,
        }
    };
    let targets: Vec<Target<'_>> = Mode::ALL.iter().map(|m| target(*m)).collect();
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); Mode::ALL.len()];
    let mut connects = [0u64; Mode::ALL.len()];
    let mut workers = Workers::spawn(&cpus, &targets, args.gap_us)?;
    eprintln!("round 0 is a warm-up, discarded");
    for round in 0..=rounds {
        let rotate = usize::try_from(round).context("round")?;
        for (name, sample) in workers.round(args.iterations, args.batch, rotate)? {
            let index = Mode::ALL
                .iter()
                .position(|m| m.key() == name)
                .with_context(|| format!("the client reported an unknown mode {name}"))?;
            connects[index] += sample.connects;
            if round > 0 {
                samples[index].push(sample);
            }
        }
        if samples.iter().any(|s| s.len() != rotate) {
            bail!("round {round}: the client did not report every mode");
        }
        eprint!("\rround {round}/{rounds}");
    }
    eprintln!();
    drop(workers);

    let failures = check_counters(&agent, &natclient.netns, &connects)?;

    let netstat = format!(
        "accept-queue overflows (ListenOverflows): server pod {}, node {}, natclient pod {}; \
         client SYN retransmits (1 s each): client pod {}, natclient pod {}",
        tcp_ext(&server.netns, "ListenOverflows")?,
        tcp_ext(net.node(), "ListenOverflows")?,
        tcp_ext(&natclient.netns, "ListenOverflows")?,
        tcp_ext(&client.netns, "TCPSynRetrans")?,
        tcp_ext(&natclient.netns, "TCPSynRetrans")?,
    );
    let run = crate::RunInfo::now();
    let date = &run.date;
    let mut block = format!(
        "### `cargo xtask bench connect`\n\n\
         connect()+close() cost, `cargo xtask bench connect --rounds {rounds} --iterations {} --batch {} --gap-us {}`, run {date}.\n\n",
        args.iterations, args.batch, args.gap_us
    );
    block += &format!(
        "{rounds} rounds (+1 discarded warm-up) x {} timed connects per mode, in batches of {} \
         interleaved across modes (one pinned worker process per mode, {} untimed connects per batch), \
         {} µs untimed spin after each; IPv4; kernel {}, {} CPUs, {}; {agent_name}.\n\n",
        args.iterations,
        args.batch,
        BATCH_WARMUP,
        args.gap_us,
        run.kernel,
        run.cpus,
        cpus.describe(),
    );
    block += &Results { samples: &samples }.render()?;
    block +=
        &format!("\nDNAT rule: `{dnat_rule}`\n\nREDIRECT rule: `{redirect_rule}`\n\n{netstat}\n");
    println!();
    print!("{block}");
    if !failures.is_empty() {
        bail!(
            "counter checks failed ({}): the table above does not measure what it says; not published",
            failures.join(", ")
        );
    }
    crate::results::publish("connect", &block)?;
    Ok(())
}

/// The agent's counters and the nat rules' packet counters against the
/// connects each mode made; returns what did not match.
fn check_counters(
    agent: &Agent,
    natclient: &Netns,
    connects: &[u64; Mode::ALL.len()],
) -> anyhow::Result<Vec<String>> {
    let made = |mode: Mode| connects[mode as usize];
    let packets = nat_rule_packets(natclient)?;
    let steered = made(Mode::Steered);
    let checks = [
        (
            "redirected connects",
            agent.bpf_event("redirected"),
            steered,
            true,
        ),
        (
            "connections the proxy forwarded",
            settled(steered, || {
                agent.metric("detour_connections_total{service=\"bench/steered\"}")
            }),
            steered,
            true,
        ),
        // At least: connect6 and other sockets may count too.
        (
            "not-steered connects",
            agent.bpf_event("not_steered"),
            made(Mode::NotSteered),
            false,
        ),
        (
            "DNAT rule matches",
            packets.first().copied().unwrap_or(0),
            made(Mode::IptablesDnat),
            true,
        ),
        (
            "REDIRECT rule matches",
            packets.get(1).copied().unwrap_or(0),
            made(Mode::IptablesRedirect),
            true,
        ),
    ];
    let mut failures = Vec::new();
    for (what, got, want, exact) in checks {
        let ok = if exact { got == want } else { got >= want };
        eprintln!(
            "check: {what}: {got} (expected {}{want}) {}",
            if exact { "" } else { ">= " },
            if ok { "ok" } else { "FAILED" }
        );
        if !ok {
            failures.push(what.to_owned());
        }
    }
    Ok(failures)
}
