//! The checks that make `bench http`'s table mean what it says, and the
//! header that says how it was made. `bench h2` uses its pieces too
//! ([`verify_routes`] over h2c, [`Counters`], [`BackendStatus`],
//! [`evaluate`], [`placement`]).
//!
//! - [`verify_routes`]: before any measurement, every peer routes a keyed
//!   request to the fork and an unkeyed one to baseline (curl from the
//!   client pod, in the attached cgroup, like wrk).
//! - [`Counters`] / [`Checks`]: after the rounds, the fork backend's nginx
//!   `stub_status` request counter (read around every interval,
//!   [`BackendStatus`]), the baseline's (which must not move) and detour's
//!   metrics against the requests wrk completed. wrk does not count
//!   requests still in flight when an interval ends, so a counter may
//!   exceed wrk's total by at most one request per open connection per
//!   interval.
//! - wrk's own errors: a non-2xx response fails the run; socket errors are
//!   tolerated up to 0.1% of requests (and shown in the table).

use std::net::SocketAddr;

use anyhow::{Context, bail};
use detour_tests::{Agent, netns::Netns};

use crate::{
    BenchArgs,
    http::load::{ClientPod, ConnMode},
    http::report::Interval,
    procs::Cpus,
    stage::peers::{BAGGAGE, Peer, Proto, STATUS_PORT},
    tools::Tools,
};

/// Every peer answers `fork` with the key and `base` without it, over `proto`.
pub fn verify_routes(
    client: &ClientPod<'_>,
    addrs: &[SocketAddr],
    proto: Proto,
) -> anyhow::Result<()> {
    for peer in Peer::ALL {
        let url = format!("http://{}/", addrs[peer as usize]);
        let mut cases = vec![(true, "fork\n")];
        if peer != Peer::Direct {
            cases.push((false, "base\n"));
        }
        for (keyed, want) in cases {
            let mut args = vec!["-s", "-m", "5"];
            args.extend(proto.curl_args());
            if keyed {
                args.extend(["-H", BAGGAGE]);
            }
            args.push(&url);
            let output = client.pod.exec_in(client.cgroup, "curl", &args);
            let got = String::from_utf8_lossy(&output.stdout);
            if got != want {
                bail!(
                    "{}: a request {} the routing key got {got:?}, expected {want:?}",
                    peer.label(),
                    if keyed { "with" } else { "without" }
                );
            }
        }
        eprintln!("check: {} routes by the baggage key: ok", peer.label());
    }
    Ok(())
}

/// Counters read before and after the rounds.
#[derive(Debug, Clone, Copy)]
pub struct Counters {
    pub base_requests: u64,
    pub sandbox: u64,
    pub baseline: u64,
    pub fallbacks: u64,
    pub redirected: u64,
    /// Connections detour served as HTTP/2.
    pub h2_connections: u64,
    pub upstream_errors: u64,
}

impl Counters {
    pub fn read(base: &Netns, agent: &Agent) -> anyhow::Result<Self> {
        let metrics = agent
            .http_get("/metrics")
            .with_context(|| format!("no metrics from the agent:\n{}", agent.logs()))?;
        Ok(Self {
            base_requests: BackendStatus::read(base)?.requests,
            sandbox: metric_sum(&metrics, "detour_requests_total", "destination=\"sandbox\""),
            baseline: metric_sum(
                &metrics,
                "detour_requests_total",
                "destination=\"baseline\"",
            ),
            fallbacks: metric_sum(&metrics, "detour_fallbacks_total", ""),
            redirected: metric_sum(&metrics, "detour_bpf_events_total", "event=\"redirected\""),
            h2_connections: metric_sum(
                &metrics,
                "detour_connections_by_protocol_total",
                "protocol=\"h2\"",
            ),
            upstream_errors: metric_sum(&metrics, "detour_upstream_errors_total", ""),
        })
    }
}

/// A backend nginx's `stub_status` counters. Each reading is itself one
/// connection and one request, counted in the reading.
#[derive(Debug, Clone, Copy)]
pub struct BackendStatus {
    /// Open connections, this reading's own included.
    pub active: u64,
    pub accepts: u64,
    pub requests: u64,
}

impl BackendStatus {
    pub fn read(netns: &Netns) -> anyhow::Result<Self> {
        let url = format!("http://127.0.0.1:{STATUS_PORT}/status");
        let output = netns.exec("curl", &["-s", "-m", "2", &url]);
        let text = String::from_utf8_lossy(&output.stdout);
        // "Active connections: 1\nserver accepts handled requests\n 5 5 7\n..."
        let numbers: Vec<u64> = text
            .lines()
            .skip_while(|l| !l.contains("accepts handled requests"))
            .nth(1)
            .map(|l| {
                l.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let [accepts, _handled, requests] = numbers[..] else {
            bail!("no counters in {}'s stub_status: {text:?}", netns.name());
        };
        let active = text
            .lines()
            .find_map(|l| l.strip_prefix("Active connections:")?.trim().parse().ok())
            .with_context(|| format!("no active connections in {}'s stub_status", netns.name()))?;
        Ok(Self {
            active,
            accepts,
            requests,
        })
    }

    /// Connections and requests from `before` to `self`, less this reading's own.
    pub fn since(&self, before: &Self) -> (u64, u64) {
        (
            self.accepts.saturating_sub(before.accepts + 1),
            self.requests.saturating_sub(before.requests + 1),
        )
    }
}

/// Sum of the samples of `name` whose labels contain `label`.
fn metric_sum(metrics: &str, name: &str, label: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .filter(|l| l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// What wrk reported, totalled for the checks (warm-up included).
#[derive(Debug, Default)]
pub struct Checks {
    completed: [u64; Peer::ALL.len()],
    /// Requests the fork backend counted during the intervals.
    backend: u64,
    /// Requests possibly in flight when intervals ended.
    slack: [u64; Peer::ALL.len()],
    detour_close: u64,
    socket_errors: u64,
    status_errors: u64,
}

impl Checks {
    pub fn add(&mut self, mode: ConnMode, peer: Peer, interval: &Interval, connections: u32) {
        let wrk = &interval.load;
        self.completed[peer as usize] += wrk.requests;
        self.backend += interval.backend_requests;
        self.slack[peer as usize] += u64::from(connections);
        if peer == Peer::Detour && mode == ConnMode::Close {
            self.detour_close += wrk.requests;
        }
        self.socket_errors += wrk.socket_errors;
        self.status_errors += wrk.status_errors;
    }

    /// Prints every check; returns those that failed.
    pub fn verify(&self, before: &Counters, after: &Counters) -> Vec<String> {
        let delta = |f: fn(&Counters) -> u64| f(after).saturating_sub(f(before));
        let all: u64 = self.completed.iter().sum();
        let slack: u64 = self.slack.iter().sum();
        let detour = self.completed[Peer::Detour as usize];
        let detour_slack = self.slack[Peer::Detour as usize];
        let checks = [
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
            (
                "redirected connects (>= connection-per-request requests)",
                delta(|c| c.redirected),
                self.detour_close,
                u64::MAX,
            ),
            ("non-2xx responses", self.status_errors, 0, 0),
            (
                "socket errors (<= 0.1% of requests)",
                self.socket_errors,
                0,
                all / 1000,
            ),
        ];
        evaluate(&checks)
    }
}

/// A check: what, the value got, and the lowest and highest allowed
/// (`u64::MAX`: no upper bound).
pub type Check<'a> = (&'a str, u64, u64, u64);

/// Prints every check; returns those that failed.
pub fn evaluate(checks: &[Check<'_>]) -> Vec<String> {
    let mut failures = Vec::new();
    for &(what, got, low, high) in checks {
        let ok = (low..=high).contains(&got);
        let range = match (low == high, high == u64::MAX) {
            (true, _) => format!("{low}"),
            (false, true) => format!(">= {low}"),
            (false, false) => format!("{low}..={high}"),
        };
        eprintln!(
            "check: {what}: {got} (expected {range}) {}",
            if ok { "ok" } else { "FAILED" }
        );
        if !ok {
            failures.push(what.to_owned());
        }
    }
    failures
}

/// Where the processes ran, for a table's header: `client` names the load
/// generator, e.g. "wrk (1 thread)".
pub fn placement(cpus: &Cpus, client: &str) -> String {
    match (cpus.client_cpu(), cpus.rest_cpus()) {
        (Some(client_cpu), Some(rest)) => format!(
            "every proxy (detour's agent included) pinned to CPU {rest}, {client} and the \
             backends to CPU {client_cpu}"
        ),
        _ => "no CPU pinning (a single CPU allowed)".to_owned(),
    }
}

/// How the table was made: command, date, machine, placement, versions.
pub fn header(
    args: &BenchArgs,
    rounds: u32,
    tools: &Tools,
    cpus: &Cpus,
    agent: &str,
) -> anyhow::Result<String> {
    // Other work on the machine slows requests/s and latency far more than
    // CPU time per request: the header says how busy it was.
    let crate::RunInfo {
        date,
        kernel,
        cpu_model: model,
        cpus: n_cpus,
        load,
    } = crate::RunInfo::now();
    let placement = placement(cpus, "wrk (1 thread)");
    Ok(format!(
        "### `cargo xtask bench http`\n\n\
         `cargo xtask bench http --rounds {rounds} --seconds {} --connections {} \
         --close-connections {} --idle-connections {}`, run {date}. {rounds} rounds (+1 warm-up \
         of {} s, discarded) x 2 modes x 5 peers, one {} s wrk interval each, interleaved (peer \
         order rotated per round, mode order alternated); figures are medians over rounds, ratios \
         are medians of per-round paired ratios. Every request carries `{BAGGAGE}` and is routed \
         to the fork backend (nginx, `return 200`, 5 bytes); IPv4 between network namespaces on \
         one host. Machine: Linux {}, {} CPUs ({model}); {placement}; load average at the end {load}. detour: {agent}; {}.\n\n",
        args.seconds,
        args.connections,
        args.close_connections,
        args.idle_connections.unwrap_or(1000),
        args.warmup_seconds.max(1),
        args.seconds,
        kernel,
        n_cpus,
        tools.versions(),
    ))
}
