//! Pieces of the tables that `bench http` and `bench h2` print and publish:
//! the median over rounds, the markdown cells (numbers, ratios, met/MISSED),
//! and the memory table (idle RSS and PSS of each proxy, and its growth per
//! 1,000 idle client connections), so that both suites state them alike.

use std::fmt::Write as _;

use crate::{daemon::Memory, stage::peers::Peer};

/// Memory of one proxy: idle, and holding idle client connections.
#[derive(Debug, Clone, Copy)]
pub struct MemoryRow {
    pub peer: Peer,
    pub idle: Memory,
    pub before: Memory,
    pub held: Memory,
    pub connections: u32,
    /// Connections open at the fork backend while they were held, less
    /// those open before (the proxy's upstream connections).
    pub upstream: u64,
}

/// The memory table; `held` says what the held connections are, e.g.
/// "idle keep-alive client connections, one keyed request made on each".
pub fn memory_table(out: &mut String, rows: &[MemoryRow], held: &str) -> std::fmt::Result {
    let n = rows.first().map_or(0, |m| m.connections);
    writeln!(
        out,
        "**memory** (RSS and PSS summed over the proxy's processes; {n} {held}):\n"
    )?;
    writeln!(
        out,
        "| proxy | idle RSS KiB | idle PSS KiB | RSS with {n} idle connections KiB | RSS per 1,000 idle connections KiB | PSS per 1,000 KiB | upstream connections held |"
    )?;
    writeln!(out, "{}", separator(7))?;
    for row in rows {
        writeln!(
            out,
            "| {} | {} | {} | {} | {:.0} | {:.0} | {} |",
            row.peer.label(),
            row.idle.rss_kib,
            row.idle.pss_kib,
            row.held.rss_kib,
            row.rss_per_1000(),
            row.per_1000(|memory| memory.pss_kib),
            row.upstream,
        )?;
    }
    Ok(())
}

impl MemoryRow {
    /// RSS growth per 1,000 held connections, KiB.
    pub fn rss_per_1000(&self) -> f64 {
        self.per_1000(|memory| memory.rss_kib)
    }

    /// Growth of one figure per 1,000 held connections, KiB.
    fn per_1000(&self, figure: fn(&Memory) -> u64) -> f64 {
        (figure(&self.held) as f64 - figure(&self.before) as f64) * 1000.0
            / f64::from(self.connections.max(1))
    }
}

/// A markdown separator row of `columns` columns: the first (names)
/// left-aligned, the numbers right-aligned.
pub fn separator(columns: usize) -> String {
    format!("|---|{}", "---:|".repeat(columns.saturating_sub(1)))
}

pub fn num(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "—".to_owned(), |v| format!("{v:.digits$}"))
}

pub fn ratio(value: Option<f64>) -> String {
    value.map_or_else(|| "—".to_owned(), |v| format!("{v:.2}"))
}

pub fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

/// The median of a non-empty list (the midpoint of the middle two for an
/// even count).
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        f64::midpoint(values[mid - 1], values[mid])
    }
}

/// The `q`-quantile (0..=1) of sorted values, by the nearest rank; `None`
/// for none.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let rank = ((sorted.len() as f64 * q).ceil() as usize).saturating_sub(1);
    sorted.get(rank.min(last)).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_quantiles() {
        assert!((median(vec![3.0, 1.0, 2.0]) - 2.0).abs() < 1e-9);
        assert!((median(vec![4.0, 1.0, 2.0, 3.0]) - 2.5).abs() < 1e-9);
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&sorted, 0.5), Some(50.0));
        assert_eq!(quantile(&sorted, 0.99), Some(99.0));
        assert_eq!(quantile(&sorted, 1.0), Some(100.0));
        assert_eq!(quantile(&[7.0], 0.99), Some(7.0));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
