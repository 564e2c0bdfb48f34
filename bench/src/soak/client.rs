//! `soak-client` (hidden subcommand of the detour-bench binary, run by `bench
//! soak` inside the client pod's namespace and the attached cgroup): steady,
//! paced HTTP/1.1 traffic for the whole soak, one record per request.
//!
//! Two kinds of worker thread, each sending at a fixed pace (a late request
//! is sent at once, never in a burst to catch up):
//! - keep-alive workers reuse one connection, and open a new one after
//!   `--requests-per-connection` requests (as nginx's `keepalive_requests`
//!   does), so connections opened while the agent is down do not bypass it
//!   for the rest of the run;
//! - new-connection workers connect for every request and send
//!   `Connection: close`.
//!
//! Requests cycle through three kinds: no routing key (baseline must answer
//! `base`), the stable sandbox's key (`fork`), and the churned sandbox's key
//! (`fork2` while it exists, else `base`). A request that fails on a reused
//! keep-alive connection before any byte of its response arrives is retried
//! once on a fresh connection, as HTTP clients do for idempotent requests
//! (RFC 9110 §9.2.2); the record says so.
//!
//! Output, on stdout: `start <unix ms>`, then one line per request:
//! `<ms since start> <ms the connection was opened> <keepalive|newconn>
//! <plain|stable|churn> <outcome> <latency µs> <retried 0|1>`, where outcome
//! is `ok`, `misrouted:<body>`, `status:<code>`, `connect:<error>`,
//! `closed`, `timeout` or `io:<error>`. The run ends after `--seconds`.

use std::{
    io::{BufWriter, ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    sync::mpsc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use clap::Args;

/// How long one request may take before it counts as `timeout`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Biggest response head accepted.
const MAX_RESPONSE: usize = 16 * 1024;

#[derive(Debug, Args)]
pub struct SoakClientArgs {
    /// Address of the steered service.
    #[arg(long)]
    pub addr: SocketAddr,
    /// Keep-alive worker threads.
    #[arg(long, default_value_t = 4)]
    pub keepalive_workers: u32,
    /// New-connection worker threads.
    #[arg(long, default_value_t = 2)]
    pub newconn_workers: u32,
    /// Requests per second, per worker.
    #[arg(long, default_value_t = 50)]
    pub rate: u32,
    /// Requests on one keep-alive connection before it is replaced.
    #[arg(long, default_value_t = 1000)]
    pub requests_per_connection: u32,
    /// The stable sandbox's routing key.
    #[arg(long)]
    pub stable_key: String,
    /// The churned sandbox's routing key.
    #[arg(long)]
    pub churn_key: String,
    /// How long to run.
    #[arg(long)]
    pub seconds: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Plain,
    Stable,
    Churn,
}

impl Key {
    const ALL: [Self; 3] = [Self::Plain, Self::Stable, Self::Churn];

    fn label(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Stable => "stable",
            Self::Churn => "churn",
        }
    }

    /// The bodies that may answer a request of this kind.
    fn accepts(self, body: &[u8]) -> bool {
        match self {
            Self::Plain => body == b"base\n",
            Self::Stable => body == b"fork\n",
            Self::Churn => body == b"fork2\n" || body == b"base\n",
        }
    }
}

/// What one request came to.
#[derive(Debug)]
enum Outcome {
    Ok,
    Misrouted(String),
    Status(u16),
    Connect(ErrorKind),
    /// The connection ended before a complete response.
    Closed {
        got_bytes: bool,
    },
    Timeout,
    Io(ErrorKind),
}

impl Outcome {
    fn label(&self) -> String {
        match self {
            Self::Ok => "ok".to_owned(),
            Self::Misrouted(body) => {
                let body: String = body.trim().chars().take(16).collect();
                format!("misrouted:{}", body.replace(char::is_whitespace, "_"))
            }
            Self::Status(code) => format!("status:{code}"),
            Self::Connect(kind) => format!("connect:{kind:?}"),
            Self::Closed { .. } => "closed".to_owned(),
            Self::Timeout => "timeout".to_owned(),
            Self::Io(kind) => format!("io:{kind:?}"),
        }
    }

    /// A failure a client may retry on a fresh connection: nothing of the
    /// response came back on a reused connection (closed, reset, or aborted
    /// by the kernel, as when the agent closes a connection that predates
    /// steering).
    fn retryable(&self) -> bool {
        matches!(
            self,
            Self::Closed { got_bytes: false }
                | Self::Io(
                    ErrorKind::ConnectionReset
                        | ErrorKind::ConnectionAborted
                        | ErrorKind::BrokenPipe
                )
        )
    }
}

struct Worker {
    keep_alive: bool,
    args: Shared,
    records: mpsc::Sender<String>,
}

#[derive(Clone)]
struct Shared {
    addr: SocketAddr,
    start: Instant,
    end: Instant,
    interval: Duration,
    per_connection: u32,
    /// Per [`Key`]: the keep-alive request, and the same with
    /// `Connection: close`.
    requests: [Vec<u8>; 3],
    closing: [Vec<u8>; 3],
}

pub fn run(args: &SoakClientArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    let unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("clock before 1970")?
        .as_millis();
    let shared = Shared {
        addr: args.addr,
        start,
        end: start + Duration::from_secs(args.seconds),
        interval: Duration::from_secs(1) / args.rate.max(1),
        per_connection: args.requests_per_connection.max(1),
        requests: [
            request(None, ""),
            request(Some(&args.stable_key), ""),
            request(Some(&args.churn_key), ""),
        ],
        closing: [
            request(None, CLOSE),
            request(Some(&args.stable_key), CLOSE),
            request(Some(&args.churn_key), CLOSE),
        ],
    };
    let (send, records) = mpsc::channel::<String>();
    let mut threads = Vec::new();
    let kinds = std::iter::repeat_n(true, args.keepalive_workers as usize)
        .chain(std::iter::repeat_n(false, args.newconn_workers as usize));
    for (n, keep_alive) in kinds.enumerate() {
        let worker = Worker {
            keep_alive,
            args: shared.clone(),
            records: send.clone(),
        };
        threads.push(std::thread::spawn(move || worker.run(n)));
    }
    drop(send);
    let mut out = BufWriter::new(std::io::stdout().lock());
    writeln!(out, "start {unix_ms}")?;
    out.flush()?;
    for record in records {
        writeln!(out, "{record}")?;
    }
    out.flush()?;
    for thread in threads {
        let _ = thread.join();
    }
    Ok(())
}

const CLOSE: &str = "Connection: close\r\n";

fn request(key: Option<&str>, extra: &str) -> Vec<u8> {
    let baggage = key.map_or_else(String::new, |key| {
        format!("baggage: detour-routing-key={key}\r\n")
    });
    format!("GET / HTTP/1.1\r\nHost: soak\r\n{baggage}{extra}\r\n").into_bytes()
}

impl Worker {
    fn run(self, n: usize) {
        let args = &self.args;
        let mut conn: Option<(TcpStream, u128, u32)> = None;
        let mut next = Instant::now() + args.interval * u32::try_from(n).unwrap_or(0) / 8;
        let mut i = n;
        while next < args.end {
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            next = (next + args.interval).max(Instant::now());
            let key = Key::ALL[i % Key::ALL.len()];
            i += 1;
            let begun = Instant::now();
            let (outcome, opened, retried) = if self.keep_alive {
                self.keep_alive_request(&mut conn, key)
            } else {
                let opened = args.start.elapsed().as_millis();
                let outcome = match connect(args.addr) {
                    Ok(mut stream) => exchange(&mut stream, &args.closing[key as usize], key),
                    Err(kind) => Outcome::Connect(kind),
                };
                (outcome, opened, false)
            };
            let record = format!(
                "{} {opened} {} {} {} {} {}",
                begun.duration_since(args.start).as_millis(),
                if self.keep_alive {
                    "keepalive"
                } else {
                    "newconn"
                },
                key.label(),
                outcome.label(),
                begun.elapsed().as_micros(),
                u8::from(retried),
            );
            if self.records.send(record).is_err() {
                return;
            }
        }
    }

    /// One request on the worker's connection (opened or replaced as
    /// needed), retried once on a fresh connection when a reused one failed
    /// before answering.
    fn keep_alive_request(
        &self,
        conn: &mut Option<(TcpStream, u128, u32)>,
        key: Key,
    ) -> (Outcome, u128, bool) {
        let args = &self.args;
        let request = &args.requests[key as usize];
        let mut retried = false;
        loop {
            let reused = conn.is_some();
            if conn.is_none() {
                let opened = args.start.elapsed().as_millis();
                match connect(args.addr) {
                    Ok(stream) => *conn = Some((stream, opened, 0)),
                    Err(kind) => return (Outcome::Connect(kind), opened, retried),
                }
            }
            let Some((stream, opened, used)) = conn.as_mut() else {
                continue;
            };
            let opened = *opened;
            let outcome = exchange(stream, request, key);
            *used += 1;
            let keep = matches!(outcome, Outcome::Ok | Outcome::Misrouted(_))
                && *used < args.per_connection;
            if !keep {
                *conn = None;
            }
            if reused && !retried && outcome.retryable() {
                retried = true;
                continue;
            }
            return (outcome, opened, retried);
        }
    }
}

fn connect(addr: SocketAddr) -> Result<TcpStream, ErrorKind> {
    let stream = TcpStream::connect_timeout(&addr, REQUEST_TIMEOUT).map_err(|e| e.kind())?;
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(REQUEST_TIMEOUT));
    let _ = stream.set_write_timeout(Some(REQUEST_TIMEOUT));
    Ok(stream)
}

/// Writes the request and reads one response (`Content-Length` framed, as
/// the backends answer).
fn exchange(stream: &mut TcpStream, request: &[u8], key: Key) -> Outcome {
    if let Err(e) = stream.write_all(request) {
        return io_outcome(&e, false);
    }
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) => {
                return Outcome::Closed {
                    got_bytes: !buf.is_empty(),
                };
            }
            Ok(n) => n,
            Err(e) => return io_outcome(&e, !buf.is_empty()),
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        let head_len = match response.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() < MAX_RESPONSE => continue,
            _ => return Outcome::Io(ErrorKind::InvalidData),
        };
        let length = response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| {
                std::str::from_utf8(h.value)
                    .ok()?
                    .trim()
                    .parse::<usize>()
                    .ok()
            });
        let Some(length) = length else {
            return Outcome::Io(ErrorKind::InvalidData);
        };
        if buf.len() < head_len + length {
            continue;
        }
        let code = response.code.unwrap_or(0);
        let body = &buf[head_len..head_len + length];
        return if code != 200 {
            Outcome::Status(code)
        } else if key.accepts(body) {
            Outcome::Ok
        } else {
            Outcome::Misrouted(String::from_utf8_lossy(body).into_owned())
        };
    }
}

fn io_outcome(error: &std::io::Error, got_bytes: bool) -> Outcome {
    match error.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => Outcome::Timeout,
        ErrorKind::BrokenPipe | ErrorKind::UnexpectedEof => Outcome::Closed { got_bytes },
        kind => Outcome::Io(kind),
    }
}
