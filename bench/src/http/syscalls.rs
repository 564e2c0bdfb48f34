//! System calls per request: `perf trace -s` attached to a proxy's
//! processes (every thread) while a fixed number of requests goes through
//! it. The syscall tracepoints count every call exactly, whatever the
//! machine's load; the per-call timings perf also prints are not used
//! (tracing slows each call).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context, bail};
use detour_tests::cmd::Proc;

use crate::{http::load::ConnMode, stage::peers::Peer, table::separator};

/// One proxy's calls in one mode.
#[derive(Debug, Clone)]
pub struct SyscallRow {
    pub mode: ConnMode,
    pub peer: Peer,
    /// Requests the fork backend received while the proxy was traced.
    pub requests: u64,
    pub counts: SyscallCounts,
}

/// The table: per proxy and mode, calls per request in all and the most
/// frequent ones.
pub fn syscall_table(out: &mut String, rows: &[SyscallRow]) -> std::fmt::Result {
    use std::fmt::Write as _;
    let requests = rows.iter().map(|r| r.requests).min().unwrap_or(0);
    writeln!(
        out,
        "**system calls per request** (`perf trace -s` on the proxy's processes, \
         at least {requests} requests each; the most frequent calls per request; \
         perf's per-thread tables in `target/bench-syscalls/`):\n"
    )?;
    writeln!(
        out,
        "| proxy | keep-alive | most frequent | connection per request | most frequent |"
    )?;
    writeln!(out, "{}", separator(5))?;
    let peers: Vec<Peer> = Peer::ALL
        .into_iter()
        .filter(|p| rows.iter().any(|r| r.peer == *p))
        .collect();
    for peer in peers {
        let mut cells = Vec::new();
        for mode in ConnMode::ALL {
            match rows.iter().find(|r| r.peer == peer && r.mode == mode) {
                Some(row) => {
                    let per = |n: u64| n as f64 / row.requests.max(1) as f64;
                    cells.push(format!("{:.2}", per(row.counts.total())));
                    let top: Vec<String> = row
                        .counts
                        .top(4)
                        .into_iter()
                        .map(|(name, n)| format!("{name} {:.2}", per(n)))
                        .collect();
                    cells.push(top.join(", "));
                }
                None => cells.extend(["—".to_owned(), "—".to_owned()]),
            }
        }
        writeln!(out, "| {} | {} |", peer.label(), cells.join(" | "))?;
    }
    Ok(())
}

/// Calls by system call name, summed over the traced threads.
#[derive(Debug, Clone, Default)]
pub struct SyscallCounts {
    pub by_name: BTreeMap<String, u64>,
}

impl SyscallCounts {
    pub fn total(&self) -> u64 {
        self.by_name.values().sum()
    }

    /// The `n` most frequent, most frequent first.
    pub fn top(&self, n: usize) -> Vec<(&str, u64)> {
        let mut calls: Vec<(&str, u64)> = self
            .by_name
            .iter()
            .map(|(name, count)| (name.as_str(), *count))
            .collect();
        calls.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        calls.truncate(n);
        calls
    }
}

/// A running `perf trace` on some processes.
pub struct Trace {
    proc: Proc,
    output: PathBuf,
}

impl Trace {
    /// Attaches to `pids` (all their threads); counting starts once this
    /// returns.
    pub fn start(perf: &Path, pids: &[u32], output: PathBuf) -> anyhow::Result<Self> {
        if pids.is_empty() {
            bail!("no process to trace");
        }
        let list: Vec<String> = pids.iter().map(ToString::to_string).collect();
        let child = Command::new(perf)
            .args(["trace", "-s"])
            .arg("-p")
            .arg(list.join(","))
            .arg("-o")
            .arg(&output)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start perf trace")?;
        // perf opens its events per thread before it starts reading; there
        // is no signal for "attached", so give it a moment.
        std::thread::sleep(Duration::from_millis(700));
        let mut proc = Proc::new(child);
        if let Some(status) = proc.try_wait() {
            let mut stderr = String::new();
            if let Some(mut pipe) = proc.child().stderr.take() {
                let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
            }
            bail!("perf trace exited at start ({status}): {stderr}");
        }
        Ok(Self { proc, output })
    }

    /// Stops tracing and sums the summary's tables.
    pub fn finish(mut self) -> anyhow::Result<SyscallCounts> {
        self.proc.signal(libc::SIGINT);
        if self.proc.wait_timeout(Duration::from_secs(30)).is_none() {
            bail!("perf trace did not stop after SIGINT");
        }
        let text = std::fs::read_to_string(&self.output)
            .with_context(|| format!("cannot read {}", self.output.display()))?;
        parse_summary(&text)
    }
}

/// Sums the per-thread tables of `perf trace -s`: after each header line
/// starting with `syscall`, rows of `NAME CALLS ERRORS ...`.
fn parse_summary(text: &str) -> anyhow::Result<SyscallCounts> {
    let mut counts = SyscallCounts::default();
    let mut in_table = false;
    let mut tables = 0;
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next();
        if first == Some("syscall") {
            in_table = true;
            tables += 1;
            continue;
        }
        // The units line under the header, and the rule.
        if !in_table || first.is_some_and(|f| f.starts_with("---") || f.starts_with('(')) {
            continue;
        }
        match (first, fields.next().map(str::parse::<u64>)) {
            (Some(name), Some(Ok(calls))) => {
                *counts.by_name.entry(name.to_owned()).or_default() += calls;
            }
            _ => in_table = false,
        }
    }
    if tables == 0 {
        bail!("no summary table in perf trace's output:\n{text}");
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_thread_tables_are_summed() {
        let text = "
 Summary of events:

 nginx (101), 12 events, 50.0%

   syscall            calls  errors  total       min       avg       max       stddev
                                     (msec)    (msec)    (msec)    (msec)        (%)
   --------------- --------  ------ -------- --------- --------- ---------     ------
   epoll_wait             4      0     0.729     0.014     0.021     0.034      4.21%
   recvfrom               2      1     0.598     0.014     0.020     0.035      5.13%

 nginx (102), 3 events, 50.0%

   syscall            calls  errors  total       min       avg       max       stddev
   --------------- --------  ------ -------- --------- --------- ---------     ------
   recvfrom               3      0     0.455     0.014     0.020     0.033      5.79%
";
        let counts = parse_summary(text).expect("parsed");
        assert_eq!(counts.by_name["epoll_wait"], 4);
        assert_eq!(counts.by_name["recvfrom"], 5);
        assert_eq!(counts.total(), 9);
        assert_eq!(counts.top(1), vec![("recvfrom", 5)]);
    }

    #[test]
    fn output_without_a_table_is_an_error() {
        assert!(parse_summary("perf: permission denied\n").is_err());
    }
}
