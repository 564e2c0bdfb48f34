//! What `bench connect` prints: the per-round samples the timed client
//! reports, reduced per mode, a markdown table (published to
//! `bench/RESULTS.md`), and the targets, stated as met or missed without rounding in
//! detour's favour.
//!
//! Reduction: a round contributes each mode's median single operation
//! (robust to the odd preempted or retransmitted one). The absolute figure
//! is the median of those over rounds. Ratios are paired: per round, mode /
//! other mode, both measured interleaved within milliseconds, then the
//! median over rounds. A round in which the machine was slow moves both
//! sides of its ratio, so ratios are steadier than the absolute numbers, and
//! on a machine that is fast in some rounds and slow in others they can
//! differ from the ratio of the two medians; the paired one is the fair one.
//! The overall mean (every operation, stalls included), the p90 and the
//! count of operations over 5 ms are printed too, so that nothing the median
//! hides is lost.

use std::fmt::Write as _;

use anyhow::{Context, bail};

use crate::connect::Mode;

/// One mode of one round, parsed from the client's `key=value` line.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Every connect made, warm-up included (for the counter checks).
    pub connects: u64,
    pub ops: u64,
    /// Sum of the timed operations.
    pub sum_ns: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    /// Operations over 5 ms (preempted, or a dropped SYN: 1 s).
    pub slow: u64,
}

impl Sample {
    /// Parses one `mode=NAME key=value...` line into the mode's name and
    /// its sample.
    pub fn parse(line: &str) -> anyhow::Result<(String, Self)> {
        let value = |name: &str| {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .with_context(|| format!("no {name}= in the client output {line:?}"))
        };
        let field = |name: &str| -> anyhow::Result<u64> {
            value(name)?
                .parse()
                .with_context(|| format!("bad {name}= in the client output {line:?}"))
        };
        let sample = Self {
            connects: field("connects")?,
            ops: field("ops")?,
            sum_ns: field("sum_ns")?,
            p50_ns: field("p50_ns")?,
            p90_ns: field("p90_ns")?,
            slow: field("slow")?,
        };
        if sample.ops == 0 {
            bail!("the client reported no operations: {line:?}");
        }
        Ok((value("mode")?.to_owned(), sample))
    }

    fn p50(&self) -> f64 {
        self.p50_ns as f64
    }
}

/// Every round of every mode, in `Mode::ALL` order, rounds aligned.
pub struct Results<'a> {
    pub samples: &'a [Vec<Sample>],
}

impl Results<'_> {
    fn of(&self, mode: Mode) -> anyhow::Result<&[Sample]> {
        let index = Mode::ALL
            .iter()
            .position(|m| *m == mode)
            .context("mode index")?;
        self.samples
            .get(index)
            .filter(|s| !s.is_empty())
            .map(Vec::as_slice)
            .with_context(|| format!("no results for {}", mode.label()))
    }

    /// Median over rounds of `mode`'s round median.
    fn median(&self, mode: Mode) -> anyhow::Result<f64> {
        median(self.of(mode)?.iter().map(Sample::p50).collect())
    }

    /// Median over rounds of `a` / `b`, paired by round.
    fn ratio(&self, a: Mode, b: Mode) -> anyhow::Result<f64> {
        let ratios = self
            .of(a)?
            .iter()
            .zip(self.of(b)?)
            .map(|(a, b)| a.p50() / b.p50())
            .collect();
        median(ratios)
    }

    /// The table, the targets and the legend, as printed.
    pub fn render(&self) -> anyhow::Result<String> {
        let mut out = String::new();
        writeln!(
            out,
            "| mode | median ns per connect+close | ratio to no agent (paired) | round medians min–max | p90 | mean, all ops | ops > 5 ms |"
        )?;
        writeln!(out, "|---|---:|---:|---:|---:|---:|---:|")?;
        for mode in Mode::ALL {
            let samples = self.of(mode)?;
            let p50s: Vec<f64> = samples.iter().map(Sample::p50).collect();
            let p90 = median(samples.iter().map(|s| s.p90_ns as f64).collect())?;
            let ops: u64 = samples.iter().map(|s| s.ops).sum();
            let mean = samples.iter().map(|s| s.sum_ns as f64).sum::<f64>() / ops as f64;
            writeln!(
                out,
                "| {} | {:.0} | {:.3} | {:.0}–{:.0} | {p90:.0} | {mean:.0} | {} |",
                mode.label(),
                self.median(mode)?,
                self.ratio(mode, Mode::NoAgent)?,
                p50s.iter().copied().fold(f64::INFINITY, f64::min),
                p50s.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                samples.iter().map(|s| s.slow).sum::<u64>(),
            )?;
        }

        let percent = |ratio: f64| (ratio - 1.0) * 100.0;
        let verdict = |met: bool| if met { "met" } else { "MISSED" };
        let not_steered = percent(self.ratio(Mode::NotSteered, Mode::NoAgent)?);
        let vs_dnat = percent(self.ratio(Mode::Steered, Mode::IptablesDnat)?);
        let vs_redirect = percent(self.ratio(Mode::Steered, Mode::IptablesRedirect)?);
        writeln!(out)?;
        writeln!(
            out,
            "Targets (reported, not asserted; paired per-round ratios):"
        )?;
        writeln!(
            out,
            "- not steered within 3% of no agent: {not_steered:+.1}% -> {}",
            verdict(not_steered <= 3.0)
        )?;
        writeln!(
            out,
            "- steered cheaper than iptables (DNAT to a node proxy, the same path): steered {vs_dnat:+.1}% vs iptables -> {}",
            verdict(vs_dnat < 0.0)
        )?;
        writeln!(
            out,
            "- reference, iptables REDIRECT to a loopback proxy in the pod (a shorter path): steered {vs_redirect:+.1}% vs it -> {}",
            if vs_redirect < 0.0 {
                "steered cheaper"
            } else {
                "steered dearer"
            }
        )?;
        writeln!(
            out,
            "- a fork pod's connects, against the same connect from the attached cgroup: not forked {:+.1}%, keyless fork (rewritten) {:+.1}%",
            percent(self.ratio(Mode::ForkPodNotForked, Mode::NotSteered)?),
            percent(self.ratio(Mode::ForkPodForked, Mode::NotSteered)?),
        )?;
        writeln!(out)?;
        writeln!(out, "What each mode's client connects to:")?;
        for mode in Mode::ALL {
            writeln!(out, "- {}: {}", mode.label(), mode.target())?;
        }
        Ok(out)
    }
}

fn median(mut values: Vec<f64>) -> anyhow::Result<f64> {
    if values.is_empty() {
        bail!("no rounds");
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Ok(if values.len() % 2 == 1 {
        values[mid]
    } else {
        f64::midpoint(values[mid - 1], values[mid])
    })
}
