//! What `bench http` prints and publishes: per connection mode, a markdown
//! table of requests/s, p50 and p99 latency and the proxy process's CPU time
//! per request, each with its ratio to direct and to nginx; the memory
//! table; and the targets, stated as met or missed without rounding in
//! detour's favour.
//!
//! Reduction, as in `bench connect`: a measured interval is one sample; the
//! absolute figures are medians over rounds; a ratio is the median over
//! rounds of the per-round ratio of two peers measured within seconds of
//! each other (paired), so a round in which the machine was slow moves both
//! sides of it.

use std::fmt::Write as _;

use anyhow::{Context, bail};

use crate::{
    http::load::{ConnMode, WrkResult},
    http::syscalls::{SyscallRow, syscall_table},
    stage::peers::{Peer, Proto},
    suite::Measured,
    table::{MemoryRow, median, memory_table, num, ratio, separator, verdict},
};

/// One measured interval of one peer in one mode.
pub type Interval = Measured<WrkResult>;

impl Interval {
    fn rps(&self) -> f64 {
        self.load.requests as f64 * 1e6 / self.load.duration_us.max(1) as f64
    }

    fn backend_conns_per_request(&self) -> Option<f64> {
        Some(self.backend_conns as f64 / self.load.requests.max(1) as f64)
    }

    fn cpu_per_request(&self) -> Option<f64> {
        self.per_request(self.cpu?.total_us)
    }

    fn user_per_request(&self) -> Option<f64> {
        self.per_request(self.cpu?.user_us)
    }

    fn system_per_request(&self) -> Option<f64> {
        self.per_request(self.cpu?.system_us)
    }

    fn per_request(&self, us: u64) -> Option<f64> {
        Some(us as f64 / self.load.requests.max(1) as f64)
    }
}

/// Every interval: `samples[mode][peer]` holds one per round, rounds aligned.
pub struct HttpResults {
    pub samples: Vec<Vec<Vec<Interval>>>,
    /// One table per number of idle connections held.
    pub memory: Vec<Vec<MemoryRow>>,
    pub syscalls: Vec<SyscallRow>,
    pub connections: [u32; 2],
}

type Metric = fn(&Interval) -> Option<f64>;

const RPS: Metric = |i| Some(i.rps());
const P50: Metric = |i| Some(i.load.p50_us);
const P99: Metric = |i| Some(i.load.p99_us);
const CPU: Metric = Interval::cpu_per_request;
const CONNS: Metric = Interval::backend_conns_per_request;
const USER: Metric = Interval::user_per_request;
const SYSTEM: Metric = Interval::system_per_request;

impl HttpResults {
    fn of(&self, mode: ConnMode, peer: Peer) -> anyhow::Result<&[Interval]> {
        self.samples
            .get(mode as usize)
            .and_then(|m| m.get(peer as usize))
            .filter(|s| !s.is_empty())
            .map(Vec::as_slice)
            .with_context(|| format!("no results for {} / {}", mode.label(), peer.label()))
    }

    fn median(&self, mode: ConnMode, peer: Peer, metric: Metric) -> anyhow::Result<Option<f64>> {
        let values: Vec<f64> = self.of(mode, peer)?.iter().filter_map(metric).collect();
        Ok((!values.is_empty()).then(|| median(values)))
    }

    /// The peer proxy with the lowest median CPU per request in `mode`.
    fn cheapest_peer(&self, mode: ConnMode) -> anyhow::Result<Peer> {
        let mut best: Option<(Peer, f64)> = None;
        for peer in [Peer::Nginx, Peer::Haproxy, Peer::Envoy] {
            if let Some(cpu) = self.median(mode, peer, CPU)?
                && best.is_none_or(|(_, b)| cpu < b)
            {
                best = Some((peer, cpu));
            }
        }
        best.map(|(peer, _)| peer)
            .with_context(|| format!("no peer CPU figure for {}", mode.label()))
    }

    /// Median over rounds of `a` / `b` (paired by round), if both have it.
    fn ratio(
        &self,
        mode: ConnMode,
        a: Peer,
        b: Peer,
        metric: Metric,
    ) -> anyhow::Result<Option<f64>> {
        let ratios: Vec<f64> = self
            .of(mode, a)?
            .iter()
            .zip(self.of(mode, b)?)
            .filter_map(|(a, b)| Some(metric(a)? / metric(b)?))
            .collect();
        Ok((!ratios.is_empty()).then(|| median(ratios)))
    }

    /// One mode's table.
    fn table(&self, out: &mut String, mode: ConnMode) -> anyhow::Result<()> {
        let header = format!(
            "| {} | req/s | ×direct | ×nginx | p50 µs | ×direct | ×nginx | p99 µs | ×direct | ×nginx | proxy CPU µs/req | ×nginx | backend conns/req | errors |",
            mode.label()
        );
        writeln!(out, "{header}")?;
        writeln!(out, "{}", separator(header.matches('|').count() - 1))?;
        for peer in Peer::ALL {
            write!(out, "| {} ", peer.label())?;
            for (metric, digits) in [(RPS, 0), (P50, 0), (P99, 0)] {
                write!(out, "| {} ", num(self.median(mode, peer, metric)?, digits))?;
                for base in [Peer::Direct, Peer::Nginx] {
                    write!(out, "| {} ", ratio(self.ratio(mode, peer, base, metric)?))?;
                }
            }
            write!(out, "| {} ", num(self.median(mode, peer, CPU)?, 1))?;
            write!(
                out,
                "| {} ",
                ratio(self.ratio(mode, peer, Peer::Nginx, CPU)?)
            )?;
            write!(out, "| {} ", num(self.median(mode, peer, CONNS)?, 3))?;
            let intervals = self.of(mode, peer)?;
            let socket: u64 = intervals.iter().map(|i| i.load.socket_errors).sum();
            let status: u64 = intervals.iter().map(|i| i.load.status_errors).sum();
            writeln!(out, "| {} |", socket + status)?;
        }
        Ok(())
    }

    /// The tables, the memory table, the targets and the legend.
    pub fn render(&self) -> anyhow::Result<String> {
        let mut out = String::new();
        for mode in ConnMode::ALL {
            writeln!(
                out,
                "**{}** (wrk, {} concurrent connections{}):\n",
                mode.label(),
                self.connections[mode as usize],
                if mode == ConnMode::Close {
                    ", `Connection: close` on every request"
                } else {
                    ""
                }
            )?;
            self.table(&mut out, mode)?;
            writeln!(out)?;
        }
        self.cpu_split(&mut out)?;
        syscall_table(&mut out, &self.syscalls)?;
        for memory in &self.memory {
            writeln!(out)?;
            memory_table(
                &mut out,
                memory,
                "idle keep-alive client connections, one keyed request made on each, then idle for 3 s",
            )?;
        }
        writeln!(
            out,
            "\nTargets (paired per-round ratios; CPU against the peer proxy with the lowest CPU per request in that mode):"
        )?;
        for mode in ConnMode::ALL {
            let best = self.cheapest_peer(mode)?;
            let cpu = self.ratio(mode, Peer::Detour, best, CPU)?;
            let p99 = self.ratio(mode, Peer::Detour, Peer::Nginx, P99)?;
            let (Some(cpu), Some(p99)) = (cpu, p99) else {
                bail!("no detour/peer ratios for {}", mode.label());
            };
            writeln!(
                out,
                "- {}: proxy CPU per request {cpu:.2}x {}'s (target <= 0.75x) -> {}; \
                 p99 {p99:.2}x nginx's (target <= 1x) -> {}",
                mode.label(),
                best.label(),
                verdict(cpu <= 0.75),
                verdict(p99 <= 1.0),
            )?;
        }
        self.memory_targets(&mut out)?;
        writeln!(out, "\nWhat each row's client connects to:")?;
        for peer in Peer::ALL {
            writeln!(out, "- {}: {}", peer.label(), peer.describe(Proto::Http1))?;
        }
        writeln!(
            out,
            "\nColumns: latency is wrk's (request written to response read; the TCP handshake \
             is not in it). Proxy CPU is the proxy's cgroup `usage_usec` over the interval \
             divided by the requests wrk completed (for detour, the agent; its eBPF programs \
             run in the client's connect() and are not in it). Backend conns/req is the fork \
             backend's accepted connections per request: 0 when the proxy reuses upstream \
             connections, 1 when it opens one per request. Errors are wrk's socket errors \
             and non-2xx responses over all rounds."
        )?;
        Ok(out)
    }

    /// Memory targets: RSS per idle connection no more than nginx's (with
    /// the most connections held), and the idle agent under 10 MiB.
    fn memory_targets(&self, out: &mut String) -> anyhow::Result<()> {
        let rows = self.memory.last().context("no memory table")?;
        let row = |peer: Peer| rows.iter().find(|row| row.peer == peer);
        let (Some(detour), Some(nginx)) = (row(Peer::Detour), row(Peer::Nginx)) else {
            bail!("no detour or nginx memory row");
        };
        let (ours, theirs) = (detour.rss_per_1000(), nginx.rss_per_1000());
        writeln!(
            out,
            "- memory: RSS per 1,000 idle connections ({} held) {ours:.0} KiB, nginx {theirs:.0} KiB \
             (target <= nginx's) -> {}; agent idle RSS {:.1} MiB (target <= 10 MiB) -> {}",
            detour.connections,
            verdict(ours <= theirs),
            detour.idle.rss_kib as f64 / 1024.0,
            verdict(detour.idle.rss_kib <= 10 * 1024),
        )?;
        Ok(())
    }

    /// The proxies' CPU per request split into user and system time.
    fn cpu_split(&self, out: &mut String) -> anyhow::Result<()> {
        writeln!(
            out,
            "**proxy CPU µs per request, user + system** (medians over rounds):\n"
        )?;
        write!(out, "| proxy ")?;
        for mode in ConnMode::ALL {
            write!(out, "| {0} user | {0} system ", mode.label())?;
        }
        writeln!(out, "|\n{}", separator(5))?;
        for peer in Peer::ALL.into_iter().filter(|p| *p != Peer::Direct) {
            write!(out, "| {} ", peer.label())?;
            for mode in ConnMode::ALL {
                write!(out, "| {} ", num(self.median(mode, peer, USER)?, 1))?;
                write!(out, "| {} ", num(self.median(mode, peer, SYSTEM)?, 1))?;
            }
            writeln!(out, "|")?;
        }
        writeln!(out)?;
        Ok(())
    }
}
