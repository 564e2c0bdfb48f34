//! The stage `bench http` and `bench h2` measure on, set up the same way for
//! both so that their tables compare like with like; only the protocol
//! ([`Proto`]) differs.
//!
//! One [`Topology`] with three pods: `client`, `base` and `fork`. Both
//! backend pods run an nginx answering every request with 5 bytes (`base\n`
//! or `fork\n`). The real release agent attaches to a child cgroup
//! ([`Stage::attached`]) that the clients run in; its routes file steers
//! `base:8080`, declared `http` or `h2c` so that the agent parses it at
//! once, and has a sandbox `bench-fork` whose fork of that service is
//! `fork:8080`. nginx, haproxy and Envoy run on the node namespace, as
//! detour's proxy does, each on its own port. Every proxy, the agent
//! included, is pinned to the non-client CPU(s) and accounted in a cgroup
//! of its own; the backends and the clients get the client CPU ([`Cpus`]).
//!
//! [`prepare`] is what comes before: root, the tools, the agent binary
//! (exported as `DETOUR_BIN`, its runtime given one worker) and Ctrl-C.

pub mod peer_configs;
pub mod peers;

use std::{
    net::{SocketAddr, SocketAddrV4},
    sync::atomic::Ordering,
    time::Duration,
};

use anyhow::Context;
use detour_tests::{Agent, Cgroup, Pod, Topology, topology::NODE_IP4};

use crate::{
    daemon::{Accounting, Daemon, Memory, TempDir},
    http::checks::BackendStatus,
    http::load::Held,
    procs::{Cpus, INTERRUPTED},
    stage::peers::{BACKEND_PORT, KEY, Peer, Proto, Servers, Upstreams},
    table::MemoryRow,
    tools::Tools,
};

const SYSCTLS: [&str; 2] = [
    "net.ipv4.tcp_tw_reuse=1",
    "net.ipv4.ip_local_port_range=10000 65000",
];
/// The proxy peers, in the order of [`Stage`]'s daemons.
const PROXIES: [Peer; 3] = [Peer::Nginx, Peer::Haproxy, Peer::Envoy];

/// Root, the tools and the agent to measure, for `bench SUITE`; returns the
/// tools and how the table names the agent.
pub fn prepare(suite: &str) -> anyhow::Result<(Tools, String)> {
    crate::host::require_root(suite)?;
    crate::procs::raise_nofile()?;
    let tools = Tools::install()?;
    let (binary, agent_name) = crate::agent_binary()?;
    // SAFETY: no other thread exists yet (the Ctrl-C handler's is started
    // below), so nothing reads the environment concurrently. The agent
    // inherits both; TOKIO_WORKER_THREADS=1 gives its runtime one worker,
    // like the peers' single worker.
    unsafe {
        std::env::set_var("DETOUR_BIN", &binary);
        std::env::set_var("TOKIO_WORKER_THREADS", "1");
    }
    ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst))
        .context("cannot install the Ctrl-C handler")?;
    Ok((tools, agent_name))
}

/// Everything running, with the accounting of each proxy.
pub struct Stage {
    // Drop order (declaration order): proxies, agent and backends, then
    // cgroups, then namespaces, then the temporary directory.
    proxies: Vec<Daemon>,
    agent: Agent,
    fork_server: Daemon,
    base_server: Daemon,
    detour_acct: Accounting,
    fork_pod: Cgroup,
    attached: Cgroup,
    net: Topology,
    dir: TempDir,
    cpus: Cpus,
    up: Upstreams,
    /// Each proxy's memory right after its start, before any load.
    idle: Vec<(Peer, Memory)>,
}

impl Stage {
    /// Sets everything up for `bench {suite}`, speaking `proto`.
    pub fn new(proto: Proto, suite: &str, tools: &Tools) -> anyhow::Result<Self> {
        eprintln!("bench {suite}: setting up namespaces, backends, the agent and the proxies");
        let cpus = Cpus::plan();
        let (proxy_pin, client_pin) = (cpus.rest_prefix(), cpus.client_prefix());
        let dir = TempDir::new()?;
        let prefix = match proto {
            Proto::Http1 => "dth",
            Proto::H2c => "dt2",
        };
        let net = Topology::builder(prefix)
            .pod("client")
            .pod("base")
            .pod("fork")
            .build();
        let (client, base, fork) = (net.pod("client"), net.pod("base"), net.pod("fork"));
        for setting in SYSCTLS {
            net.node().sysctl(setting);
            client.netns.sysctl(setting);
        }
        let attached = Cgroup::new(&detour_tests::unique_name(&format!(
            "detour-bench-{suite}-attached-"
        )));
        // The sandbox's fork pod: its clients' requests without a key
        // inherit the sandbox's (`bench inherit`).
        let fork_pod = attached.child("fork-pod");
        let detour_acct = Accounting::new("detour");
        let up = Upstreams {
            base: SocketAddrV4::new(base.ip4, BACKEND_PORT),
            fork: SocketAddrV4::new(fork.ip4, BACKEND_PORT),
        };
        let backends = Servers {
            proto,
            dir: &dir,
            pin: &client_pin,
        };
        let base_server = backends.backend(&tools.nginx, &base.netns, "base", "base")?;
        let fork_server = backends.backend(&tools.nginx, &fork.netns, "fork", "fork")?;
        // The baseline backend is steered and parsed at once; the sandbox's
        // fork of it is the fork backend.
        let (base_ip, fork_addr, protocol) = (up.base.ip(), up.fork, proto.routes_protocol());
        let routes = format!(
            r#"services:
  - name: backend
    namespace: bench
    addresses: ["{base_ip}"]
    ports:
      - port: {BACKEND_PORT}
        protocol: {protocol}
sandboxes:
  - name: {KEY}
    routingKey: {KEY}
    forks:
      - service: bench/backend
        endpoints: ["{fork_addr}"]
    podCgroups: ["{fork_pod}"]
"#,
            fork_pod = fork_pod.path().display(),
        );
        let agent = Agent::builder(&net, &attached)
            .routes(&routes)
            .log_filter("info")
            .spawn();
        detour_acct.adopt(agent.pid())?;
        cpus.pin_rest(agent.pid())?;
        std::thread::sleep(Duration::from_millis(500));
        let mut idle = vec![(Peer::Detour, detour_acct.memory()?)];

        let proxies_on = Servers {
            proto,
            dir: &dir,
            pin: &proxy_pin,
        };
        let mut proxies = Vec::new();
        for peer in PROXIES {
            let program = match peer {
                Peer::Haproxy => &tools.haproxy,
                Peer::Envoy => &tools.envoy,
                _ => &tools.nginx,
            };
            let daemon = proxies_on.proxy(peer, program, net.node(), node_addr(peer), up)?;
            std::thread::sleep(Duration::from_millis(500));
            idle.push((peer, daemon.acct().memory()?));
            proxies.push(daemon);
        }
        Ok(Self {
            proxies,
            agent,
            fork_server,
            base_server,
            detour_acct,
            fork_pod,
            attached,
            net,
            dir,
            cpus,
            up,
            idle,
        })
    }

    pub fn client(&self) -> &Pod {
        self.net.pod("client")
    }

    pub fn base(&self) -> &Pod {
        self.net.pod("base")
    }

    pub fn fork(&self) -> &Pod {
        self.net.pod("fork")
    }

    pub fn agent(&self) -> &Agent {
        &self.agent
    }

    /// The cgroup detour attaches to: the clients run in it.
    pub fn attached(&self) -> &Cgroup {
        &self.attached
    }

    /// The sandbox's fork pod cgroup, inside the attached one.
    pub fn fork_pod(&self) -> &Cgroup {
        &self.fork_pod
    }

    pub fn cpus(&self) -> &Cpus {
        &self.cpus
    }

    pub fn dir(&self) -> &TempDir {
        &self.dir
    }

    /// What the client connects to, per peer: the fork itself (direct), the
    /// baseline (detour), or the peer's port on the node.
    pub fn addrs(&self) -> [SocketAddr; Peer::ALL.len()] {
        Peer::ALL.map(|peer| match peer {
            Peer::Direct => SocketAddr::V4(self.up.fork),
            Peer::Detour => SocketAddr::V4(self.up.base),
            _ => SocketAddr::V4(node_addr(peer)),
        })
    }

    /// Each proxy's accounting (none for direct).
    pub fn accts(&self) -> [Option<&Accounting>; Peer::ALL.len()] {
        Peer::ALL.map(|peer| match peer {
            Peer::Direct => None,
            Peer::Detour => Some(&self.detour_acct),
            _ => PROXIES
                .iter()
                .position(|p| *p == peer)
                .and_then(|i| self.proxies.get(i))
                .map(Daemon::acct),
        })
    }

    /// The servers whose liveness is checked around every interval.
    pub fn daemons(&self) -> Vec<&Daemon> {
        let mut daemons = vec![&self.base_server, &self.fork_server];
        daemons.extend(&self.proxies);
        daemons
    }

    /// One proxy at a time: `connections` client connections held idle by
    /// `hold`, and its memory before and after they have been idle for
    /// [`IDLE_HOLD`], with the upstream connections the fork backend saw
    /// open meanwhile.
    pub fn idle_memory(
        &self,
        connections: u32,
        hold: impl Fn(SocketAddr, u32) -> anyhow::Result<Held>,
    ) -> anyhow::Result<Vec<MemoryRow>> {
        let (accts, addrs, fork) = (self.accts(), self.addrs(), &self.fork().netns);
        let mut memory = Vec::new();
        for &(peer, idle) in &self.idle {
            let acct = accts[peer as usize].context("no accounting")?;
            let before = acct.memory()?;
            let upstream_before = BackendStatus::read(fork)?.active;
            let held = hold(addrs[peer as usize], connections)?;
            std::thread::sleep(IDLE_HOLD);
            let during = acct.memory()?;
            let upstream = BackendStatus::read(fork)?.active;
            drop(held);
            memory.push(MemoryRow {
                peer,
                idle,
                before,
                held: during,
                connections,
                upstream: upstream.saturating_sub(upstream_before),
            });
        }
        std::thread::sleep(Duration::from_secs(1));
        Ok(memory)
    }
}

/// How long held connections are idle before the memory is read: longer
/// than detour's `--park-idle-after` (1 s) plus its once-a-second sweep, so
/// that its idle HTTP/1 connections are parked, as they are once idle for
/// more than a second in use. The peers hold an idle connection the same
/// way from its first idle moment on.
pub const IDLE_HOLD: Duration = Duration::from_secs(3);

/// A proxy peer's address on the node.
fn node_addr(peer: Peer) -> SocketAddrV4 {
    SocketAddrV4::new(NODE_IP4, peer.node_port().unwrap_or(0))
}
