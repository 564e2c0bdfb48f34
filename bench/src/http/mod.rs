//! `cargo xtask bench http`: what detour's HTTP/1.1 proxy costs per request
//! next to nginx, haproxy and Envoy doing the same header routing, and next
//! to no proxy at all, all measured in one run, interleaved.
//!
//! # Layout
//! One topology ([`crate::stage`], shared with `bench h2`) with three pods:
//! `client`, `base` and `fork`. Both backend pods run an nginx answering
//! every request with 5 bytes (`base\n` or `fork\n`, [`crate::stage::peers`]). The
//! client's processes (wrk, curl, the idle-connection holder) run in a child
//! cgroup that the real release agent attaches to; its routes file steers
//! `base:8080` (`protocol: http`, so it parses HTTP/1 at once) and has a
//! sandbox `bench-fork` whose fork of that service is `fork:8080`. The
//! proxies run on the node namespace, as detour's does: nginx on
//! `10.248.0.1:18001`, haproxy on `:18002`, Envoy on `:18003`, each routing
//! requests whose `baggage` names the key to `fork`, the others to `base`.
//! Every measured request carries `baggage: detour-routing-key=bench-fork`,
//! so each goes to the fork backend: directly (direct), by detour's eBPF
//! redirect and header routing (detour: the client connects to
//! `base:8080`), or through a peer proxy.
//!
//! # Checks before and after
//! Before measuring, each route is tried both ways (with the key: `fork`,
//! without: `base`) or the run fails. Afterwards the fork backend's request
//! counter must cover every request wrk completed, the baseline's must not
//! have moved, and detour's metrics must show every detour request routed to
//! the sandbox (no baseline, no fallback) and, in the connection-per-request
//! mode, a redirected connect per request: otherwise the table would not
//! measure what it says, and the run fails without publishing it.
//!
//! # Fairness and placement
//! One worker each (see [`crate::stage::peers`]; detour's tokio runtime gets
//! `TOKIO_WORKER_THREADS=1`), and every proxy, detour's agent included,
//! pinned to the same CPU(s); wrk and the backends get the other CPU
//! ([`crate::procs::Cpus`]). A proxy's CPU time is its cgroup's `usage_usec` over the
//! interval ([`crate::daemon`]), divided by the requests wrk completed in it.
//! For detour that is the agent; its connect4/sock_ops programs run in the
//! client's connect() and are charged to wrk, not to it.
//!
//! # Rounds
//! Round 0 is a short warm-up, discarded. In each round every (mode, peer)
//! pair is one interval of `--seconds`; the order of peers rotates per round
//! and the order of modes alternates, so that no peer always follows the
//! same one. The client and the node namespaces get `tcp_tw_reuse=1` and a
//! wide ephemeral port range (connection-per-request mode makes tens of
//! thousands of connections); only namespaces made here are changed.
//!
//! # Memory
//! After start-up and before any load: each proxy's idle RSS; then, one
//! proxy at a time, `--idle-connections` keep-alive connections from the
//! client pod, one keyed request on each, held idle for 3 s
//! ([`crate::stage::IDLE_HOLD`]: detour parks them), and the RSS growth;
//! then the same with ten times as many.
//!
//! # System calls
//! After the rounds (and their checks), per mode and proxy, `perf trace -s`
//! on the proxy's processes while wrk makes `--syscall-requests` requests
//! ([`crate::http::syscalls`]); the calls are divided by the requests the fork
//! backend received in that time. perf's per-thread tables are kept in
//! `target/bench-syscalls/`.

pub mod checks;
pub mod load;
pub mod report;
pub mod syscalls;

use std::path::Path;

use anyhow::bail;

use self::{
    checks::{BackendStatus, Checks, Counters},
    load::{ConnMode, Load},
    report::{HttpResults, Interval},
    syscalls::{SyscallRow, Trace},
};
use crate::{
    BenchArgs,
    stage::{
        Stage,
        peers::{Peer, Proto},
    },
    suite::{Probe, Rounds},
};

const DEFAULT_ROUNDS: u32 = 5;

/// Everything measured, and how to reach and account for it.
struct Bench<'a> {
    load: Load<'a>,
    probe: Probe<'a>,
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let rounds = args.rounds.unwrap_or(DEFAULT_ROUNDS);
    if rounds == 0 || args.seconds == 0 || args.connections == 0 || args.close_connections == 0 {
        bail!("--rounds, --seconds, --connections and --close-connections must be at least 1");
    }
    let (tools, agent_name) = crate::stage::prepare("http")?;
    let stage = Stage::new(Proto::Http1, "http", &tools)?;
    let (base, fork, agent) = (stage.base(), stage.fork(), stage.agent());
    let (addrs, accts) = (stage.addrs(), stage.accts());
    let cpus = stage.cpus();
    let load = Load::new(
        &tools.wrk,
        cpus,
        stage.client(),
        stage.attached(),
        stage.dir(),
    )?;
    crate::http::checks::verify_routes(&load.client, &addrs, Proto::Http1)?;

    let idle_connections = args.idle_connections.unwrap_or(1000);
    let mut memory = Vec::new();
    // Ten times as many, as far as the open-file limit lets every proxy
    // hold them (the table says how many were held).
    let most = crate::procs::proxy_connection_limit().saturating_sub(100);
    for n in [idle_connections, (idle_connections * 10).min(most)] {
        eprintln!("bench http: memory with {n} idle keep-alive connections");
        memory.push(stage.idle_memory(n, |addr, n| load.hold_idle(addr, n))?);
    }

    let checks_before = Counters::read(&base.netns, agent)?;
    let bench = Bench {
        load,
        probe: Probe {
            fork: &fork.netns,
            addrs,
            accts,
            daemons: stage.daemons(),
            agent,
        },
    };
    let connections = [args.connections, args.close_connections];
    let mut samples = vec![vec![Vec::new(); Peer::ALL.len()]; ConnMode::ALL.len()];
    let mut checks = Checks::default();
    let schedule = Rounds {
        rounds,
        seconds: args.seconds,
        warmup: args.warmup_seconds,
    };
    schedule.run(
        &ConnMode::ALL,
        ConnMode::label,
        |mode, peer, seconds| bench.interval(mode, peer, connections[mode as usize], seconds),
        |round, mode, peer, interval| {
            checks.add(mode, peer, &interval, connections[mode as usize]);
            if round > 0 {
                samples[mode as usize][peer as usize].push(interval);
            }
        },
    )?;
    let checks_after = Counters::read(&base.netns, agent)?;
    let failures = checks.verify(&checks_before, &checks_after);
    let traces = crate::host::target_dir().join("bench-syscalls");
    std::fs::create_dir_all(&traces)?;
    let syscalls = bench.syscalls(&tools.perf, &traces, connections, args.syscall_requests)?;

    let results = HttpResults {
        samples,
        memory,
        syscalls,
        connections,
    };
    let block = crate::http::checks::header(args, rounds, &tools, cpus, &agent_name)?
        + &results.render()?;
    println!();
    print!("{block}");
    if !failures.is_empty() {
        bail!(
            "counter checks failed ({}): the table above does not measure what it says; not published",
            failures.join(", ")
        );
    }
    crate::results::publish("http", &block)
}

impl Bench<'_> {
    /// System calls per request of every proxy, in both modes: `perf
    /// trace` on its processes during about `requests` requests.
    fn syscalls(
        &self,
        perf: &Path,
        traces: &Path,
        connections: [u32; 2],
        requests: u32,
    ) -> anyhow::Result<Vec<SyscallRow>> {
        let mut rows = Vec::new();
        for mode in ConnMode::ALL {
            for peer in Peer::ALL {
                let Some(acct) = self.probe.accts[peer as usize] else {
                    continue;
                };
                eprint!("\rsystem calls: {:<22} {:<18}", mode.label(), peer.label());
                let mode_name = match mode {
                    ConnMode::KeepAlive => "keepalive",
                    ConnMode::Close => "close",
                };
                let output = traces.join(format!("http-{mode_name}-{}.txt", peer.label()));
                let backend_before = BackendStatus::read(self.probe.fork)?;
                let trace = Trace::start(perf, &acct.pids(), output)?;
                let addr = self.probe.addrs[peer as usize];
                let wrk = self
                    .load
                    .wrk_requests(addr, mode, connections[mode as usize], requests);
                let counts = trace.finish()?;
                let wrk = wrk?;
                let (_, forwarded) = BackendStatus::read(self.probe.fork)?.since(&backend_before);
                if forwarded == 0 || wrk.socket_errors + wrk.status_errors > 0 {
                    bail!(
                        "{} / {}: the system-call run failed ({forwarded} requests forwarded, {} errors)",
                        mode.label(),
                        peer.label(),
                        wrk.socket_errors + wrk.status_errors
                    );
                }
                rows.push(SyscallRow {
                    mode,
                    peer,
                    requests: forwarded,
                    counts,
                });
            }
        }
        eprintln!();
        Ok(rows)
    }

    /// One measured interval: wrk against the peer.
    fn interval(
        &self,
        mode: ConnMode,
        peer: Peer,
        connections: u32,
        seconds: u32,
    ) -> anyhow::Result<Interval> {
        self.probe.measure(
            peer,
            &format!("{} / {}: wrk", mode.label(), peer.label()),
            |addr| self.load.wrk(addr, mode, connections, seconds),
            |wrk| wrk.requests,
        )
    }
}
