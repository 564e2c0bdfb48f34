//! The checks that make `bench h2`'s table mean what it says, and the header
//! that says how it was made; the counters and their printing are
//! `bench http`'s ([`crate::http::checks`]).
//!
//! - [`verify_routes`]: before any measurement, every peer routes a keyed
//!   h2c request to the fork and an unkeyed one to baseline (curl
//!   `--http2-prior-knowledge` from the client pod, in the attached cgroup),
//!   and every proxy routes keyed and unkeyed streams multiplexed on one
//!   connection each to its own backend (per-stream routing).
//! - [`H2Checks`]: after the rounds, the fork backend's request counter
//!   must cover every request h2load completed (plus at most the C x M
//!   streams in flight when an interval ended), the baseline's must not have
//!   moved, and detour's metrics must show every detour request routed to
//!   the sandbox (none to baseline, no fallback, no upstream error), one
//!   redirected connect per h2load connection, each served as HTTP/2.
//! - h2load's own errors: any failed or timed-out request, or any non-2xx
//!   response, fails the run (persistent connections have no reason to
//!   fail).

use std::net::SocketAddr;

use crate::{
    BenchArgs,
    h2::load::H2Load,
    h2::report::H2Interval,
    http::checks::{Counters, evaluate, placement},
    procs::Cpus,
    stage::peers::{BAGGAGE, Peer, Proto},
    tools::Tools,
};

/// Streams per connection in the mixed keyed/unkeyed check.
const MIXED_STREAMS: u32 = 8;

/// Every peer answers `fork` with the key and `base` without it, on separate
/// connections and on one.
pub fn verify_routes(load: &H2Load<'_>, addrs: &[SocketAddr]) -> anyhow::Result<()> {
    crate::http::checks::verify_routes(&load.client, addrs, Proto::H2c)?;
    for peer in Peer::ALL.into_iter().filter(|p| *p != Peer::Direct) {
        load.mixed(addrs[peer as usize], MIXED_STREAMS)?;
        eprintln!(
            "check: {} routes keyed and unkeyed streams of one connection apart: ok",
            peer.label()
        );
    }
    Ok(())
}

/// What h2load reported, totalled for the checks (warm-up included).
#[derive(Debug, Default)]
pub struct H2Checks {
    completed: [u64; Peer::ALL.len()],
    /// Requests the fork backend counted during the intervals.
    backend: u64,
    /// Streams possibly in flight when intervals ended.
    slack: [u64; Peer::ALL.len()],
    /// h2load connections made to detour.
    detour_connections: u64,
    errors: u64,
    status_errors: u64,
}

impl H2Checks {
    pub fn add(&mut self, peer: Peer, interval: &H2Interval, clients: u32, streams: u32) {
        let h2 = &interval.load;
        self.completed[peer as usize] += h2.requests;
        self.backend += interval.backend_requests;
        self.slack[peer as usize] += u64::from(clients) * u64::from(streams);
        if peer == Peer::Detour {
            self.detour_connections += u64::from(clients);
        }
        self.errors += h2.errors;
        self.status_errors += h2.status_errors;
    }

    /// Prints every check; returns those that failed.
    pub fn verify(&self, before: &Counters, after: &Counters) -> Vec<String> {
        let delta = |f: fn(&Counters) -> u64| f(after).saturating_sub(f(before));
        let all: u64 = self.completed.iter().sum();
        let slack: u64 = self.slack.iter().sum();
        let detour = self.completed[Peer::Detour as usize];
        let detour_slack = self.slack[Peer::Detour as usize];
        let conns = self.detour_connections;
        evaluate(&[
            (
                "fork backend requests during the intervals",
                self.backend,
                all,
                all + slack,
            ),
            (
                // The status request of the second reading counts once.
                "baseline backend requests (the status read only)",
                delta(|c| c.base_requests),
                1,
                1,
            ),
            (
                "detour requests routed to the sandbox",
                delta(|c| c.sandbox),
                detour,
                detour + detour_slack,
            ),
            (
                "detour requests routed to baseline",
                delta(|c| c.baseline),
                0,
                0,
            ),
            ("detour fallbacks", delta(|c| c.fallbacks), 0, 0),
            ("detour upstream errors", delta(|c| c.upstream_errors), 0, 0),
            (
                "redirected connects (one per h2load connection to detour)",
                delta(|c| c.redirected),
                conns,
                conns,
            ),
            (
                "detour connections served as HTTP/2",
                delta(|c| c.h2_connections),
                conns,
                conns,
            ),
            ("failed or timed-out requests", self.errors, 0, 0),
            ("non-2xx responses", self.status_errors, 0, 0),
        ])
    }
}

/// How the table was made: command, date, machine, placement, versions.
pub fn header(args: &BenchArgs, rounds: u32, tools: &Tools, cpus: &Cpus, agent: &str) -> String {
    let crate::RunInfo {
        date,
        kernel,
        cpu_model: model,
        cpus: n_cpus,
        load,
    } = crate::RunInfo::now();
    let placement = placement(cpus, "h2load (1 thread)");
    let (clients, streams, seconds) = (args.h2_connections, args.streams, args.seconds);
    format!(
        "### `cargo xtask bench h2`\n\n\
         `cargo xtask bench h2 --rounds {rounds} --seconds {seconds} --h2-connections {clients} \
         --streams {streams} --idle-connections {}`, run {date}. {rounds} rounds (+1 warm-up of \
         {} s, discarded) x 5 peers, one {seconds} s h2load interval each, interleaved (peer \
         order rotated per round); figures are medians over rounds, ratios are medians of \
         per-round paired ratios. h2load keeps {clients} h2c connections (prior knowledge, no \
         TLS) with {streams} concurrent streams each; every request carries `{BAGGAGE}` and is \
         routed to the fork backend (nginx, `listen ... http2`, `return 200`, 5 bytes); IPv4 \
         between network namespaces on one host. Machine: Linux {kernel}, {n_cpus} CPUs \
         ({model}); {placement}; load average at the end {load}. detour: {agent}; {}.\n\n",
        args.idle_connections.unwrap_or(1000),
        args.warmup_seconds.max(1),
        tools.h2_versions(),
    )
}
