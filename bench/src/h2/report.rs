//! What `bench h2` prints and publishes: a markdown table of requests/s,
//! p50 and p99 latency and the proxy's CPU time per request, each with its
//! ratio to direct and to the best of the peer proxies (nginx, haproxy,
//! Envoy) on that figure; the CPU split into user and system time; the
//! memory table; and the targets (detour's proxy CPU per request at most
//! 0.75x the best peer's, its p99 at most the best peer's), stated as met or
//! missed without rounding in detour's favour.
//!
//! Reduction, as in `bench http`: a measured interval is one sample; the
//! absolute figures are medians over rounds; a ratio is the median over
//! rounds of the per-round ratio of two peers measured within seconds of
//! each other (paired). The best peer on a figure is the one with the best
//! median (highest req/s, lowest latency or CPU).

use std::fmt::Write as _;

use anyhow::{Context, bail};

use crate::{
    h2::load::H2Result,
    stage::peers::{Peer, Proto},
    suite::Measured,
    table::{MemoryRow, median, memory_table, num, ratio, separator, verdict},
};

/// The peers the "best peer" is chosen among.
const PROXIES: [Peer; 3] = [Peer::Nginx, Peer::Haproxy, Peer::Envoy];

/// One measured interval of one peer.
pub type H2Interval = Measured<H2Result>;

impl H2Interval {
    fn per_request(&self, us: u64) -> Option<f64> {
        Some(us as f64 / self.load.requests.max(1) as f64)
    }
}

/// A figure of an interval, and whether more of it is better.
#[derive(Clone, Copy)]
struct Metric {
    name: &'static str,
    of: fn(&H2Interval) -> Option<f64>,
    higher_is_better: bool,
}

const RPS: Metric = Metric {
    name: "req/s",
    of: |i| Some(i.load.rps),
    higher_is_better: true,
};
const P50: Metric = Metric {
    name: "p50",
    of: |i| Some(i.load.p50_us),
    higher_is_better: false,
};
const P99: Metric = Metric {
    name: "p99",
    of: |i| Some(i.load.p99_us),
    higher_is_better: false,
};
const CPU: Metric = Metric {
    name: "proxy CPU",
    of: |i| i.per_request(i.cpu?.total_us),
    higher_is_better: false,
};
const USER: fn(&H2Interval) -> Option<f64> = |i| i.per_request(i.cpu?.user_us);
const SYSTEM: fn(&H2Interval) -> Option<f64> = |i| i.per_request(i.cpu?.system_us);
const CONNS: fn(&H2Interval) -> Option<f64> = |i| Some(i.backend_conns as f64);

/// Every interval: `samples[peer]` holds one per round, rounds aligned.
pub struct H2Results {
    pub samples: Vec<Vec<H2Interval>>,
    pub memory: Vec<MemoryRow>,
    pub clients: u32,
    pub streams: u32,
}

impl H2Results {
    fn of(&self, peer: Peer) -> anyhow::Result<&[H2Interval]> {
        self.samples
            .get(peer as usize)
            .filter(|s| !s.is_empty())
            .map(Vec::as_slice)
            .with_context(|| format!("no results for {}", peer.label()))
    }

    fn median(
        &self,
        peer: Peer,
        of: fn(&H2Interval) -> Option<f64>,
    ) -> anyhow::Result<Option<f64>> {
        let values: Vec<f64> = self.of(peer)?.iter().filter_map(of).collect();
        Ok((!values.is_empty()).then(|| median(values)))
    }

    /// Median over rounds of `a` / `b` (paired by round), if both have it.
    fn ratio(&self, a: Peer, b: Peer, metric: Metric) -> anyhow::Result<Option<f64>> {
        let ratios: Vec<f64> = self
            .of(a)?
            .iter()
            .zip(self.of(b)?)
            .filter_map(|(a, b)| Some((metric.of)(a)? / (metric.of)(b)?))
            .collect();
        Ok((!ratios.is_empty()).then(|| median(ratios)))
    }

    /// The peer proxy with the best median on `metric`.
    fn best(&self, metric: Metric) -> anyhow::Result<Peer> {
        let mut best: Option<(Peer, f64)> = None;
        for peer in PROXIES {
            let Some(value) = self.median(peer, metric.of)? else {
                continue;
            };
            let better = best.is_none_or(|(_, b)| {
                if metric.higher_is_better {
                    value > b
                } else {
                    value < b
                }
            });
            if better {
                best = Some((peer, value));
            }
        }
        best.map(|(peer, _)| peer)
            .with_context(|| format!("no peer has a {} figure", metric.name))
    }

    fn table(&self, out: &mut String) -> anyhow::Result<()> {
        let header = format!(
            "| h2c, {} connections x {} streams | req/s | ×direct | ×best | p50 µs | ×direct | ×best | p99 µs | ×direct | ×best | proxy CPU µs/req | ×best | backend conns opened | errors |",
            self.clients, self.streams
        );
        writeln!(out, "{header}")?;
        writeln!(out, "{}", separator(header.matches('|').count() - 1))?;
        for peer in Peer::ALL {
            write!(out, "| {} ", peer.label())?;
            for metric in [RPS, P50, P99] {
                write!(out, "| {} ", num(self.median(peer, metric.of)?, 0))?;
                for base in [Peer::Direct, self.best(metric)?] {
                    write!(out, "| {} ", ratio(self.ratio(peer, base, metric)?))?;
                }
            }
            write!(out, "| {} ", num(self.median(peer, CPU.of)?, 2))?;
            let best = self.best(CPU)?;
            write!(out, "| {} ", ratio(self.ratio(peer, best, CPU)?))?;
            write!(out, "| {} ", num(self.median(peer, CONNS)?, 0))?;
            let errors: u64 = self
                .of(peer)?
                .iter()
                .map(|i| i.load.errors + i.load.status_errors)
                .sum();
            writeln!(out, "| {errors} |")?;
        }
        let names = [RPS, P50, P99, CPU]
            .iter()
            .map(|m| Ok(format!("{} {}", m.name, self.best(*m)?.label())))
            .collect::<anyhow::Result<Vec<_>>>()?;
        writeln!(
            out,
            "\n×best is the paired ratio to the best peer proxy on that figure: {}.\n",
            names.join(", ")
        )?;
        Ok(())
    }

    /// The tables, the targets and the legend.
    pub fn render(&self) -> anyhow::Result<String> {
        let mut out = String::new();
        self.table(&mut out)?;
        self.cpu_split(&mut out)?;
        memory_table(
            &mut out,
            &self.memory,
            "idle h2c client connections, each with one keyed request answered",
        )?;
        let (best_cpu, best_p99) = (self.best(CPU)?, self.best(P99)?);
        let cpu = self.ratio(Peer::Detour, best_cpu, CPU)?;
        let p99 = self.ratio(Peer::Detour, best_p99, P99)?;
        let (Some(cpu), Some(p99)) = (cpu, p99) else {
            bail!("no detour/best peer ratios");
        };
        writeln!(
            out,
            "\nTargets (paired per-round ratios, detour vs the best peer proxy on each figure):\n\
             - proxy CPU per request {cpu:.2}x {}'s (target <= 0.75x) -> {}; \
             p99 {p99:.2}x {}'s (target <= 1x) -> {}",
            best_cpu.label(),
            verdict(cpu <= 0.75),
            best_p99.label(),
            verdict(p99 <= 1.0),
        )?;
        writeln!(out, "\nWhat each row's client connects to:")?;
        for peer in Peer::ALL {
            writeln!(out, "- {}: {}", peer.label(), peer.describe(Proto::H2c))?;
        }
        writeln!(
            out,
            "\nColumns: latency is per request from h2load's `--log-file` (the stream's request \
             sent to its response complete; h2load's own summary has no percentiles), over \
             every request of the interval. req/s is h2load's (successful requests over the \
             duration). Proxy CPU is the proxy's cgroup `usage_usec` over the interval \
             divided by the requests h2load completed (for detour, the agent; its eBPF \
             programs run in the client's connect() and are not in it). Backend conns opened \
             is the connections the fork backend accepted during the interval (median): the \
             upstream connections the proxy opened (0 when it reuses those of earlier \
             intervals), or h2load's own for direct. Errors are h2load's failed and timed-out \
             requests and non-2xx responses over all rounds."
        )?;
        Ok(out)
    }

    /// The proxies' CPU per request split into user and system time.
    fn cpu_split(&self, out: &mut String) -> anyhow::Result<()> {
        writeln!(
            out,
            "**proxy CPU µs per request, user + system** (medians over rounds):\n"
        )?;
        writeln!(out, "| proxy | user | system |\n{}", separator(3))?;
        for peer in Peer::ALL.into_iter().filter(|p| *p != Peer::Direct) {
            writeln!(
                out,
                "| {} | {} | {} |",
                peer.label(),
                num(self.median(peer, USER)?, 2),
                num(self.median(peer, SYSTEM)?, 2)
            )?;
        }
        writeln!(out)?;
        Ok(())
    }
}
