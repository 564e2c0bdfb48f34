//! The clients of `bench h2`, all run in the client pod's namespace, as
//! processes of the cgroup detour attaches to, on the client CPU
//! ([`ClientPod`]).
//!
//! - [`H2Load::run`]: one measured interval: `h2load -t1 -c C -m M -D S`
//!   over h2c (prior knowledge: an `http://` URI), every request keyed with
//!   the routing key's `baggage`. h2load's summary has only min, max, mean
//!   and sd of its request times, so it also writes every request to a
//!   `--log-file` (start, status, microseconds from the request's start to
//!   the end of its response), from which p50 and p99 are taken. Requests
//!   in flight when the duration ends are not counted ("started" less
//!   "done", at most C x M).
//! - [`H2Load::hold_idle`]: N h2c connections (preface, SETTINGS, one keyed
//!   request each, answered by the fork) held idle until dropped, written
//!   with python3-h2 (Debian's, under `/usr/bin/python3`): the memory
//!   figure per 1,000 idle HTTP/2 connections.
//! - [`H2Load::mixed`]: one connection carrying keyed and unkeyed streams at
//!   once; each must be answered by its own backend (per-stream routing).

use std::{net::SocketAddr, path::Path, process::Stdio};

use anyhow::{Context, bail};

use crate::{
    daemon::TempDir,
    http::load::{ClientPod, Held, run_load},
    stage::peers::BAGGAGE,
    table::quantile,
};

/// Debian's interpreter, which has python3-h2 (a `python3` earlier in PATH
/// may not).
const PYTHON: &str = "/usr/bin/python3";

const H2_CLIENT: &str = r#"import resource, socket, sys
import h2.config, h2.connection, h2.events
mode, host, port, count, header = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
name, value = header.split(": ", 1)
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if soft < count + 64:
    resource.setrlimit(resource.RLIMIT_NOFILE, (count + 64, max(hard, count + 64)))

def connect():
    s = socket.create_connection((host, port), timeout=10)
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    c.initiate_connection()
    s.sendall(c.data_to_send())
    return s, c

def request(c, keyed):
    sid = c.get_next_available_stream_id()
    headers = [(":method", "GET"), (":scheme", "http"), (":authority", "bench"), (":path", "/")]
    if keyed:
        headers.append((name, value))
    c.send_headers(sid, headers, end_stream=True)
    return sid

def answers(s, c, sids):
    s.sendall(c.data_to_send())
    got = {sid: ["", b""] for sid in sids}
    ended = set()
    while len(ended) < len(sids):
        data = s.recv(65536)
        if not data:
            sys.exit("connection closed before the responses: %r" % got)
        for e in c.receive_data(data):
            if isinstance(e, h2.events.ResponseReceived):
                got[e.stream_id][0] = dict(e.headers).get(":status", "")
            elif isinstance(e, h2.events.DataReceived):
                got[e.stream_id][1] += e.data
                c.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
            elif isinstance(e, h2.events.StreamEnded):
                ended.add(e.stream_id)
            elif isinstance(e, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                sys.exit("%r after %r" % (e, got))
        s.sendall(c.data_to_send())
    return got

if mode == "hold":
    held = []
    for _ in range(count):
        s, c = connect()
        got = answers(s, c, [request(c, True)])
        if list(got.values()) != [["200", b"fork\n"]]:
            sys.exit("unexpected response: %r" % got)
        held.append((s, c))
    print("open %d" % len(held), flush=True)
    sys.stdin.read()
else:
    s, c = connect()
    want = {}
    for i in range(count):
        want[request(c, i % 2 == 0)] = ["200", b"fork\n" if i % 2 == 0 else b"base\n"]
    got = answers(s, c, list(want))
    print("ok" if got == want else "got %r, want %r" % (got, want), flush=True)
"#;

/// What one h2load run reports.
#[derive(Debug, Clone, Copy, Default)]
pub struct H2Result {
    /// Requests completed in the duration ("done").
    pub requests: u64,
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// Requests that failed (stream errors included) or timed out.
    pub errors: u64,
    /// Responses other than 2xx.
    pub status_errors: u64,
}

/// Runs h2load and the python3-h2 client in the client pod.
pub struct H2Load<'a> {
    pub h2load: &'a Path,
    pub client: ClientPod<'a>,
    script: std::path::PathBuf,
    log: std::path::PathBuf,
}

impl<'a> H2Load<'a> {
    pub fn new(h2load: &'a Path, client: ClientPod<'a>, dir: &TempDir) -> anyhow::Result<Self> {
        Ok(Self {
            h2load,
            client,
            script: dir.write("h2_client.py", H2_CLIENT)?,
            log: dir.path().join("h2load.tsv"),
        })
    }

    /// One measured interval against `addr`: `clients` connections with
    /// `streams` concurrent streams each, for `seconds`.
    pub fn run(
        &self,
        addr: SocketAddr,
        clients: u32,
        streams: u32,
        seconds: u32,
    ) -> anyhow::Result<H2Result> {
        let _ = std::fs::remove_file(&self.log);
        let mut command = self.client.command(self.h2load);
        command
            .args(["-t1", &format!("-c{clients}"), &format!("-m{streams}")])
            .args([&format!("-D{seconds}"), "-H", BAGGAGE])
            .arg(format!("--log-file={}", self.log.display()))
            .arg(format!("http://{addr}/"));
        let (status, out, err) = run_load(&mut command, "h2load", addr, seconds)?;
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        parse_h2load(&out, &log)
            .with_context(|| format!("h2load against {addr} ({status}):\n{out}{err}"))
    }

    /// Opens `count` h2c connections to `addr`, one keyed request on each,
    /// and holds them until the returned guard is dropped.
    pub fn hold_idle(&self, addr: SocketAddr, count: u32) -> anyhow::Result<Held> {
        let command = self.script_command("hold", addr, count);
        self.client.hold(command, addr, count)
    }

    /// `streams` streams on one connection to `addr`, alternately keyed and
    /// unkeyed, all open at once; fails unless each keyed one is answered
    /// `fork` and each unkeyed one `base`.
    pub fn mixed(&self, addr: SocketAddr, streams: u32) -> anyhow::Result<()> {
        let output = self
            .script_command("mixed", addr, streams)
            .stdin(Stdio::null())
            .output()
            .context("cannot start the h2 client")?;
        let out = String::from_utf8_lossy(&output.stdout);
        if out.trim() != "ok" {
            bail!(
                "keyed and unkeyed streams on one connection to {addr}: {}{}",
                out.trim(),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    fn script_command(&self, mode: &str, addr: SocketAddr, count: u32) -> std::process::Command {
        let mut command = self.client.command(Path::new(PYTHON));
        command
            .arg(&self.script)
            .args([mode, &addr.ip().to_string(), &addr.port().to_string()])
            .args([&count.to_string(), BAGGAGE]);
        command
    }
}

/// h2load's summary lines and its per-request log.
fn parse_h2load(out: &str, log: &str) -> anyhow::Result<H2Result> {
    let line = |prefix: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .with_context(|| format!("no {prefix:?} line in h2load's output"))
    };
    // "requests: 9 total, 9 started, 9 done, 9 succeeded, 0 failed, 0 errored, 0 timeout"
    let count = |text: &str, name: &str| -> anyhow::Result<u64> {
        text.split(',')
            .find_map(|part| part.trim().strip_suffix(name)?.trim().parse().ok())
            .with_context(|| format!("no {name:?} count in h2load's {text:?}"))
    };
    let requests = line("requests:")?;
    let statuses = line("status codes:")?;
    // "finished in 4.00s, 12345.67 req/s, 1.23MB/s"
    let rps = line("finished in")?
        .split(',')
        .find_map(|part| part.trim().strip_suffix(" req/s")?.parse().ok())
        .context("no req/s in h2load's output")?;
    let mut times: Vec<f64> = log
        .lines()
        .filter_map(|l| l.split('\t').nth(2)?.trim().parse().ok())
        .collect();
    times.sort_by(f64::total_cmp);
    let done = count(requests, "done")?;
    if times.is_empty() && done > 0 {
        bail!("h2load completed {done} requests but logged none");
    }
    Ok(H2Result {
        requests: done,
        rps,
        p50_us: quantile(&times, 0.50).unwrap_or(0.0),
        p99_us: quantile(&times, 0.99).unwrap_or(0.0),
        errors: count(requests, "failed")? + count(requests, "timeout")?,
        status_errors: count(statuses, "3xx")? + count(statuses, "4xx")? + count(statuses, "5xx")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_h2load() -> anyhow::Result<()> {
        let out = "finished in 2.01s, 123242.50 req/s, 8.35MB/s\n\
                   requests: 246485 total, 246741 started, 246485 done, 246480 succeeded, \
                   5 failed, 5 errored, 1 timeout\n\
                   status codes: 246486 2xx, 0 3xx, 2 4xx, 0 5xx\n";
        let log: String = (1..=100).map(|i| format!("17963\t200\t{i}\n")).collect();
        let r = parse_h2load(out, &log)?;
        assert_eq!(r.requests, 246_485);
        assert!((r.rps - 123_242.5).abs() < 1e-6);
        assert!((r.p50_us - 50.0).abs() < 1e-9 && (r.p99_us - 99.0).abs() < 1e-9);
        assert_eq!((r.errors, r.status_errors), (6, 2));
        assert!(parse_h2load(out, "").is_err());
        Ok(())
    }
}
