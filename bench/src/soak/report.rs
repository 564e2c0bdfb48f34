//! What `bench soak` reports from the client's records: requests sent,
//! succeeded and failed (by reason), split between the agent restart's
//! window and the rest of the run; p99 latency and agent RSS per minute.
//!
//! The restart window runs from the SIGTERM to one second after the new
//! agent reports ready. A request counts in it when it started in it, or
//! when it was answered by baseline on a connection opened in it: such a
//! connection was made while no program was attached, so it goes straight
//! to baseline for its whole life (fail-open), and a keyed request on it is
//! expected to reach baseline.

use std::{collections::BTreeMap, fmt::Write as _};

use anyhow::Context;

/// After the new agent is ready, how long the window stays open.
const GRACE_MS: u64 = 1000;

/// One request, as `soak-client` printed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub t_ms: u64,
    pub conn_ms: u64,
    pub keep_alive: bool,
    pub outcome: String,
    pub latency_us: u64,
    pub retried: bool,
}

impl Record {
    pub fn parse(line: &str) -> anyhow::Result<Self> {
        let fields: Vec<&str> = line.split(' ').collect();
        let [t_ms, conn_ms, kind, _key, outcome, latency_us, retried] = fields[..] else {
            anyhow::bail!("bad soak record {line:?}");
        };
        Ok(Self {
            t_ms: t_ms.parse().context("time")?,
            conn_ms: conn_ms.parse().context("connection time")?,
            keep_alive: kind == "keepalive",
            outcome: outcome.to_owned(),
            latency_us: latency_us.parse().context("latency")?,
            retried: retried == "1",
        })
    }

    fn ok(&self) -> bool {
        self.outcome == "ok"
    }
}

/// When the agent was restarted, in ms since the client started.
#[derive(Debug, Clone, Copy)]
pub struct Restart {
    /// The SIGTERM (a restart) or the successor's start (an upgrade).
    pub term_ms: u64,
    /// The new agent ready (a restart) or the old one gone (an upgrade).
    pub ready_ms: u64,
    /// A hitless upgrade rather than a restart.
    pub upgrade: bool,
}

impl Restart {
    fn window_name(upgrade: bool) -> &'static str {
        if upgrade {
            "upgrade window"
        } else {
            "restart window"
        }
    }

    fn contains(&self, t_ms: u64) -> bool {
        (self.term_ms..=self.ready_ms + GRACE_MS).contains(&t_ms)
    }

    /// Whether a record belongs to the restart window.
    pub fn covers(&self, record: &Record) -> bool {
        self.contains(record.t_ms)
            || (record.outcome.starts_with("misrouted") && self.contains(record.conn_ms))
    }
}

/// The whole run.
#[derive(Debug)]
pub struct SoakRun {
    pub records: Vec<Record>,
    pub restart: Option<Restart>,
    /// (ms since the client started, agent RSS in KiB).
    pub rss: Vec<(u64, u64)>,
}

#[derive(Debug, Default)]
struct Tally {
    sent: u64,
    ok: u64,
    reasons: BTreeMap<String, u64>,
}

impl Tally {
    fn add(&mut self, record: &Record) {
        self.sent += 1;
        if record.ok() {
            self.ok += 1;
        } else {
            *self.reasons.entry(record.outcome.clone()).or_default() += 1;
        }
    }

    fn failed(&self) -> u64 {
        self.sent - self.ok
    }

    fn reasons(&self) -> String {
        if self.reasons.is_empty() {
            return "none".to_owned();
        }
        self.reasons
            .iter()
            .map(|(reason, n)| format!("{reason} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl SoakRun {
    /// Failures outside the restart window: the soak's target is zero.
    pub fn failures_outside(&self) -> u64 {
        self.tallies().1.failed()
    }

    /// Failures (misrouted ones included) inside the restart or upgrade
    /// window: for an upgrade the target is zero.
    pub fn window_failures(&self) -> u64 {
        self.tallies().2.failed()
    }

    fn in_window(&self, record: &Record) -> bool {
        self.restart.is_some_and(|r| r.covers(record))
    }

    /// (everything, outside the window, inside it).
    fn tallies(&self) -> (Tally, Tally, Tally) {
        let (mut all, mut outside, mut inside) = Default::default();
        for record in &self.records {
            Tally::add(&mut all, record);
            if self.in_window(record) {
                Tally::add(&mut inside, record);
            } else {
                Tally::add(&mut outside, record);
            }
        }
        (all, outside, inside)
    }

    /// The markdown tables.
    pub fn render(&self) -> String {
        let (all, outside, inside) = self.tallies();
        let retried = self.records.iter().filter(|r| r.retried).count();
        let new_conns = self.records.iter().filter(|r| !r.keep_alive).count();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| requests | sent | succeeded | failed | failures by reason |\n|---|---:|---:|---:|---|"
        );
        let mut row = |name: &str, tally: &Tally| {
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {} | {} |",
                tally.sent,
                tally.ok,
                tally.failed(),
                tally.reasons()
            );
        };
        row("whole run", &all);
        let upgrade = self.restart.is_some_and(|r| r.upgrade);
        let name = Restart::window_name(upgrade);
        row(&format!("**outside the {name}**"), &outside);
        let window = self.restart.map_or_else(
            || "restart window (no restart)".to_owned(),
            |r| {
                let span = if r.upgrade {
                    "successor started to the old agent's exit"
                } else {
                    "SIGTERM to ready"
                };
                format!(
                    "{name} ({:.1} s: {span} + 1 s)",
                    (r.ready_ms + GRACE_MS - r.term_ms) as f64 / 1000.0
                )
            },
        );
        row(&window, &inside);
        let _ = writeln!(
            out,
            "\n{new_conns} of the requests were on a new connection each, the rest on keep-alive connections. \
             {retried} were retried once on a fresh connection after a reused keep-alive connection \
             closed before answering (as HTTP clients do for idempotent requests); a retried request \
             counts once, by its final outcome. {}\n",
            if upgrade {
                "In the upgrade window two agents overlap; the target is zero failures and zero \
                 `misrouted:base` there too."
            } else {
                "In the restart window, `misrouted:base` is fail-open: keyed requests reach \
                 baseline while no agent runs."
            }
        );
        out += &self.per_minute();
        out
    }

    fn per_minute(&self) -> String {
        let mut minutes: BTreeMap<u64, (Tally, Vec<u64>)> = BTreeMap::new();
        for record in &self.records {
            let (tally, latencies) = minutes.entry(record.t_ms / 60_000).or_default();
            tally.add(record);
            if record.ok() {
                latencies.push(record.latency_us);
            }
        }
        let mut out = String::from(
            "| minute | sent | failed | failed outside the restart or upgrade window | p50 | p99 | agent RSS | |\n\
             |---:|---:|---:|---:|---:|---:|---:|---|\n",
        );
        for (minute, (tally, mut latencies)) in minutes {
            latencies.sort_unstable();
            let outside = self
                .records
                .iter()
                .filter(|r| r.t_ms / 60_000 == minute && !r.ok() && !self.in_window(r))
                .count();
            let rss = self
                .rss
                .iter()
                .rev()
                .find(|(t, _)| t / 60_000 <= minute)
                .map_or_else(
                    || "–".to_owned(),
                    |(_, kib)| format!("{:.1} MiB", *kib as f64 / 1024.0),
                );
            let note = self.restart.map_or("", |r| {
                if r.term_ms / 60_000 == minute && r.upgrade {
                    "agent upgraded"
                } else if r.term_ms / 60_000 == minute {
                    "agent restarted"
                } else {
                    ""
                }
            });
            let _ = writeln!(
                out,
                "| {} | {} | {} | {outside} | {} | {} | {rss} | {note} |",
                minute + 1,
                tally.sent,
                tally.failed(),
                ms(percentile(&latencies, 0.50)),
                ms(percentile(&latencies, 0.99)),
            );
        }
        out
    }
}

fn percentile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let index = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    Some(sorted[index])
}

fn ms(us: Option<u64>) -> String {
    us.map_or_else(
        || "–".to_owned(),
        |us| format!("{:.2} ms", us as f64 / 1000.0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(t_ms: u64, conn_ms: u64, outcome: &str) -> Record {
        Record::parse(&format!(
            "{t_ms} {conn_ms} keepalive stable {outcome} 800 0"
        ))
        .expect("record")
    }

    #[test]
    fn records_round_trip() {
        let r = record(61_000, 60_500, "ok");
        assert_eq!(r.t_ms, 61_000);
        assert!(r.keep_alive && r.ok() && !r.retried);
        assert!(Record::parse("1 2 3").is_err());
    }

    #[test]
    fn the_window_covers_failures_in_it_and_baseline_answers_on_connections_made_in_it() {
        let restart = Restart {
            upgrade: false,
            term_ms: 10_000,
            ready_ms: 12_000,
        };
        assert!(restart.covers(&record(10_500, 1_000, "closed")));
        assert!(restart.covers(&record(12_900, 100, "timeout")));
        assert!(!restart.covers(&record(13_100, 100, "timeout")));
        assert!(restart.covers(&record(20_000, 11_000, "misrouted:base")));
        assert!(!restart.covers(&record(20_000, 11_000, "closed")));
        let run = SoakRun {
            records: vec![
                record(1_000, 0, "ok"),
                record(11_000, 0, "closed"),
                record(30_000, 0, "timeout"),
            ],
            restart: Some(restart),
            rss: vec![(0, 10_240)],
        };
        assert_eq!(run.failures_outside(), 1);
        let table = run.render();
        assert!(
            table.contains("| whole run | 3 | 1 | 2 | closed 1, timeout 1 |"),
            "{table}"
        );
        assert!(table.contains("10.0 MiB"), "{table}");
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.99), Some(99));
        assert_eq!(percentile(&v, 0.50), Some(50));
        assert_eq!(percentile(&[], 0.99), None);
    }
}
