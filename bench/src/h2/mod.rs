//! `cargo xtask bench h2`: what detour's HTTP/2 proxy (h2c, routing each
//! stream on its own) costs per request next to nginx, haproxy and Envoy
//! doing the same header routing over HTTP/2 on both sides, and next to no
//! proxy at all, all measured in one run, interleaved.
//!
//! # Layout
//! The stage of `bench http` ([`crate::stage`]) with every server speaking
//! h2c: the backends are nginx `listen 8080 http2` answering `base\n` or
//! `fork\n`, the agent's routes file declares `base:8080` `protocol: h2c`,
//! and the peers are nginx (`grpc_pass`), haproxy (`proto h2`) and Envoy
//! (HTTP/2 codec and clusters), configured in [`crate::stage::peer_configs`]. The
//! load is h2load, many streams per connection, every request keyed with
//! `baggage: detour-routing-key=bench-fork` ([`crate::h2::load`]): sent
//! directly to the fork (direct), to the baseline's address (detour: its
//! eBPF redirect, then per-stream routing in the agent), or to a peer.
//!
//! # Checks before and after
//! Before measuring, each route is tried keyed and unkeyed, on separate
//! connections and multiplexed on one; afterwards the backends' counters and
//! detour's metrics must account for every request ([`crate::h2::checks`]).
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
//! held idle, and the RSS growth ([`crate::h2::report`]).

pub mod checks;
pub mod load;
pub mod report;

use anyhow::bail;

use self::{
    checks::H2Checks,
    load::H2Load,
    report::{H2Interval, H2Results},
};
use crate::{
    BenchArgs,
    http::{checks::Counters, load::ClientPod},
    stage::{
        Stage,
        peers::{Peer, Proto},
    },
    suite::{Probe, Rounds},
};

const DEFAULT_ROUNDS: u32 = 5;

/// Everything measured, and how to reach and account for it.
struct Bench<'a> {
    load: H2Load<'a>,
    probe: Probe<'a>,
    clients: u32,
    streams: u32,
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let rounds = args.rounds.unwrap_or(DEFAULT_ROUNDS);
    if rounds == 0 || args.seconds == 0 || args.h2_connections == 0 || args.streams == 0 {
        bail!("--rounds, --seconds, --h2-connections and --streams must be at least 1");
    }
    let (tools, agent_name) = crate::stage::prepare("h2")?;
    let stage = Stage::new(Proto::H2c, "h2", &tools)?;
    let client = ClientPod {
        cpus: stage.cpus(),
        pod: stage.client(),
        cgroup: stage.attached(),
    };
    let load = H2Load::new(&tools.h2load, client, stage.dir())?;
    let addrs = stage.addrs();
    crate::h2::checks::verify_routes(&load, &addrs)?;

    let idle_connections = args.idle_connections.unwrap_or(1000);
    eprintln!("bench h2: memory with {idle_connections} idle h2c connections");
    let memory = stage.idle_memory(idle_connections, |addr, n| load.hold_idle(addr, n))?;

    let (base, agent) = (stage.base(), stage.agent());
    let checks_before = Counters::read(&base.netns, agent)?;
    let bench = Bench {
        load,
        probe: Probe {
            fork: &stage.fork().netns,
            addrs,
            accts: stage.accts(),
            daemons: stage.daemons(),
            agent,
        },
        clients: args.h2_connections,
        streams: args.streams,
    };
    let mut samples = vec![Vec::new(); Peer::ALL.len()];
    let mut checks = H2Checks::default();
    let schedule = Rounds {
        rounds,
        seconds: args.seconds,
        warmup: args.warmup_seconds,
    };
    schedule.run(
        &[Proto::H2c],
        |_| "h2c",
        |_, peer, seconds| bench.interval(peer, seconds),
        |round, _, peer, interval| {
            checks.add(peer, &interval, bench.clients, bench.streams);
            if round > 0 {
                samples[peer as usize].push(interval);
            }
        },
    )?;
    let checks_after = Counters::read(&base.netns, agent)?;
    let failures = checks.verify(&checks_before, &checks_after);

    let results = H2Results {
        samples,
        memory,
        clients: args.h2_connections,
        streams: args.streams,
    };
    let block = crate::h2::checks::header(args, rounds, &tools, stage.cpus(), &agent_name)
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
    crate::results::publish("h2", &block)
}

impl Bench<'_> {
    /// One measured interval: h2load against the peer.
    fn interval(&self, peer: Peer, seconds: u32) -> anyhow::Result<H2Interval> {
        self.probe.measure(
            peer,
            &format!("{}: h2load", peer.label()),
            |addr| self.load.run(addr, self.clients, self.streams, seconds),
            |h2| h2.requests,
        )
    }
}
