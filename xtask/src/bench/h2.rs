//! `cargo xtask bench h2`: what detour's HTTP/2 proxy (h2c, routing each
//! stream on its own) costs per request next to nginx, haproxy and Envoy
//! doing the same header routing over HTTP/2 on both sides, and next to no
//! proxy at all, all measured in one run, interleaved.
//!
//! # Layout
//! The stage of `bench http` ([`super::stage`]) with every server speaking
//! h2c: the backends are nginx `listen 8080 http2` answering `base\n` or
//! `fork\n`, the agent's routes file declares `base:8080` `protocol: h2c`,
//! and the peers are nginx (`grpc_pass`), haproxy (`proto h2`) and Envoy
//! (HTTP/2 codec and clusters), configured in [`super::peer_configs`]. The
//! load is h2load, many streams per connection, every request keyed with
//! `baggage: detour-routing-key=bench-fork` ([`super::h2_load`]): sent
//! directly to the fork (direct), to the baseline's address (detour: its
//! eBPF redirect, then per-stream routing in the agent), or to a peer.
//!
//! # Checks before and after
//! Before measuring, each route is tried keyed and unkeyed, on separate
//! connections and multiplexed on one; afterwards the backends' counters and
//! detour's metrics must account for every request ([`super::h2_checks`]).
//! A failed check fails the run without publishing its table.
//!
//! # Fairness, rounds, memory
//! As in `bench http`: one worker per proxy, every proxy pinned to the same
//! CPU(s) and h2load (one thread) and the backends to the other; a proxy's
//! CPU time is its cgroup's `usage_usec` over the interval over the requests
//! h2load completed. Round 0 is a short warm-up, discarded; in each round
//! every peer is one `--seconds` interval, the peer order rotating per
//! round. Memory: each proxy's idle RSS after start-up, then, one proxy at a
//! time, `--idle-connections` h2c connections with one keyed request each,
//! held idle, and the RSS growth ([`super::h2_report`]).

use std::{net::SocketAddr, sync::atomic::Ordering};

use anyhow::{Context, bail};
use detour_tests::{Agent, netns::Netns};

use super::{
    BenchArgs,
    daemon::{Accounting, Daemon},
    h2_checks::H2Checks,
    h2_load::H2Load,
    h2_report::{H2Interval, H2Results},
    http_checks::{BackendStatus, Counters},
    load::ClientPod,
    peers::{Peer, Proto},
    procs::INTERRUPTED,
    stage::Stage,
};

const DEFAULT_ROUNDS: u32 = 5;

/// Everything measured, and how to reach and account for it.
struct Bench<'a> {
    load: H2Load<'a>,
    fork: &'a Netns,
    addrs: [SocketAddr; Peer::ALL.len()],
    accts: [Option<&'a Accounting>; Peer::ALL.len()],
    daemons: Vec<&'a Daemon>,
    agent: &'a Agent,
    clients: u32,
    streams: u32,
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let rounds = args.rounds.unwrap_or(DEFAULT_ROUNDS);
    if rounds == 0 || args.seconds == 0 || args.h2_connections == 0 || args.streams == 0 {
        bail!("--rounds, --seconds, --h2-connections and --streams must be at least 1");
    }
    let (tools, agent_name) = super::stage::prepare("h2")?;
    let stage = Stage::new(Proto::H2c, "h2", &tools)?;
    let client = ClientPod {
        cpus: stage.cpus(),
        pod: stage.client(),
        cgroup: stage.attached(),
    };
    let load = H2Load::new(&tools.h2load, client, stage.dir())?;
    let addrs = stage.addrs();
    super::h2_checks::verify_routes(&load, &addrs)?;

    let idle_connections = args.idle_connections.unwrap_or(1000);
    eprintln!("bench h2: memory with {idle_connections} idle h2c connections");
    let memory = stage.idle_memory(idle_connections, |addr, n| load.hold_idle(addr, n))?;

    let (base, agent) = (stage.base(), stage.agent());
    let checks_before = Counters::read(&base.netns, agent)?;
    let bench = Bench {
        load,
        fork: &stage.fork().netns,
        addrs,
        accts: stage.accts(),
        daemons: stage.daemons(),
        agent,
        clients: args.h2_connections,
        streams: args.streams,
    };
    let mut samples = vec![Vec::new(); Peer::ALL.len()];
    let mut checks = H2Checks::default();
    eprintln!("round 0 is a warm-up, discarded");
    for round in 0..=rounds {
        let seconds = if round == 0 {
            args.warmup_seconds.max(1)
        } else {
            args.seconds
        };
        let r = usize::try_from(round).context("round")?;
        for k in 0..Peer::ALL.len() {
            let peer = Peer::ALL[(r + k) % Peer::ALL.len()];
            eprint!("\rround {round}/{rounds}: {:<18}", peer.label());
            let interval = bench.interval(peer, seconds)?;
            checks.add(peer, &interval, bench.clients, bench.streams);
            if round > 0 {
                samples[peer as usize].push(interval);
            }
        }
    }
    eprintln!();
    let checks_after = Counters::read(&base.netns, agent)?;
    let failures = checks.verify(&checks_before, &checks_after);

    let results = H2Results {
        samples,
        memory,
        clients: args.h2_connections,
        streams: args.streams,
    };
    let block = super::h2_checks::header(args, rounds, &tools, stage.cpus(), &agent_name)
        + &results.render()?;
    println!();
    print!("{block}");
    if !failures.is_empty() {
        bail!(
            "counter checks failed ({}): the table above does not measure what it says; not \
             published; agent log:\n{}",
            failures.join(", "),
            agent.logs()
        );
    }
    super::results::publish("h2", &block)
}

impl Bench<'_> {
    /// One measured interval: h2load against the peer, with the proxy's CPU
    /// time read before and after.
    fn interval(&self, peer: Peer, seconds: u32) -> anyhow::Result<H2Interval> {
        if INTERRUPTED.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        for daemon in &self.daemons {
            daemon.check_alive()?;
        }
        let acct = self.accts[peer as usize];
        let backend_before = BackendStatus::read(self.fork)?;
        let before = acct.map(Accounting::cpu).transpose()?;
        let h2 = self.load.run(
            self.addrs[peer as usize],
            self.clients,
            self.streams,
            seconds,
        )?;
        let after = acct.map(Accounting::cpu).transpose()?;
        let (backend_conns, backend_requests) =
            BackendStatus::read(self.fork)?.since(&backend_before);
        if INTERRUPTED.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        if h2.requests == 0 {
            bail!(
                "{}: h2load completed no request; agent log:\n{}",
                peer.label(),
                self.agent.logs()
            );
        }
        Ok(H2Interval {
            h2,
            cpu: before.zip(after).map(|(b, a)| a.since(&b)),
            backend_conns,
            backend_requests,
        })
    }
}
