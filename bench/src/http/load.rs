//! The clients of `bench http`, all run in the client pod's namespace, as
//! processes of the cgroup detour attaches to (its connect4 program only
//! sees sockets of processes in it), on the client CPU: a [`ClientPod`],
//! which `bench h2`'s clients use too.
//!
//! - [`Load::wrk`]: one measured interval: `wrk -t1 -c N -d S` with the
//!   routing key's `baggage` header, and `Connection: close` for the
//!   connection-per-request mode (wrk then reconnects after every
//!   response). A Lua `done` hook prints the totals, p50 and p99 (wrk's
//!   latency: first byte of the request written to the response complete,
//!   so in the close mode the TCP handshake itself is not in it, the
//!   proxy's accept and upstream work are) and the error counts.
//! - [`Load::hold_idle`]: opens N keep-alive connections, one keyed request
//!   on each (so each is past detection and routed), then holds them idle
//!   until dropped: the memory figure per 1,000 idle connections.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{ChildStdin, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{Context, bail};
use detour_tests::{Cgroup, Pod, cmd::Proc};

use crate::{daemon::TempDir, procs::Cpus, stage::peers::BAGGAGE};

const WRK_DONE: &str = r#"done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "bench: requests=%d duration_us=%d p50_us=%.1f p99_us=%.1f connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
"#;

/// Stops wrk after `BENCH_MAX_REQUESTS` responses (the system-call count).
const WRK_COUNT: &str = r#"local max = tonumber(os.getenv("BENCH_MAX_REQUESTS"))
local seen = 0
response = function(status, headers, body)
  seen = seen + 1
  if seen >= max then
    wrk.thread:stop()
  end
end
"#;

const HOLD_IDLE: &str = r#"import resource, socket, sys
host, port, count, header = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if soft < count + 64:
    resource.setrlimit(resource.RLIMIT_NOFILE, (count + 64, max(hard, count + 64)))
request = ("GET / HTTP/1.1\r\nHost: bench\r\n%s\r\n\r\n" % header).encode()
held = []
for _ in range(count):
    s = socket.create_connection((host, port), timeout=10)
    s.sendall(request)
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            sys.exit("connection closed before the response: %r" % data)
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            lengths = [int(l.split(b":", 1)[1]) for l in head.split(b"\r\n")
                       if l.lower().startswith(b"content-length:")]
            if lengths and len(body) >= lengths[0]:
                break
    if not data.startswith(b"HTTP/1.1 200") or body != b"fork\n":
        sys.exit("unexpected response: %r" % data)
    held.append(s)
print("open %d" % len(held), flush=True)
sys.stdin.read()
"#;

/// Keep-alive, or a new connection for every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnMode {
    KeepAlive,
    Close,
}

impl ConnMode {
    pub const ALL: [Self; 2] = [Self::KeepAlive, Self::Close];

    pub fn label(self) -> &'static str {
        match self {
            Self::KeepAlive => "keep-alive",
            Self::Close => "connection per request",
        }
    }
}

/// What one wrk run reports.
#[derive(Debug, Clone, Copy, Default)]
pub struct WrkResult {
    pub requests: u64,
    pub duration_us: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// Socket errors (connect, read, write, timeout) and non-2xx/3xx.
    pub socket_errors: u64,
    pub status_errors: u64,
}

/// Where the clients run: the client pod's namespace, the cgroup detour
/// attaches to, the client CPU.
#[derive(Debug, Clone, Copy)]
pub struct ClientPod<'a> {
    pub cpus: &'a Cpus,
    pub pod: &'a Pod,
    pub cgroup: &'a Cgroup,
}

impl ClientPod<'_> {
    /// `program args...` in the pod, the cgroup and on the client CPU.
    pub fn command(&self, program: &Path) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", self.pod.netns.path()))
            .arg("--")
            .args(self.cpus.client_prefix())
            .args(["sh", "-c", &self.cgroup.enter_script(), "sh"])
            .arg(program);
        command
    }

    /// Starts `command`, a client that opens `count` connections to `addr`,
    /// prints `open COUNT` and holds them until its stdin closes; returns
    /// once they are open.
    pub fn hold(&self, mut command: Command, addr: SocketAddr, count: u32) -> anyhow::Result<Held> {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start the idle-connection client")?;
        let stdin = child.stdin.take().context("no stdin")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let held = Held {
            stdin: Some(stdin),
            proc: Proc::new(child),
        };
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = send.send(line);
        });
        let line = lines
            .recv_timeout(Duration::from_secs(120))
            .with_context(|| format!("no answer from the idle-connection client to {addr}"))?;
        if line.trim() != format!("open {count}") {
            bail!("idle-connection client to {addr} failed: {line:?}");
        }
        Ok(held)
    }
}

/// Runs wrk and the keep-alive idle-connection holder as [`ClientPod`]s.
pub struct Load<'a> {
    pub wrk: &'a Path,
    pub client: ClientPod<'a>,
    /// Whether requests carry the routing key (`false`: a fork pod's
    /// clients, whose requests inherit it).
    keyed: bool,
    wrk_script: PathBuf,
    count_script: PathBuf,
    hold_script: PathBuf,
}

impl<'a> Load<'a> {
    pub fn new(
        wrk: &'a Path,
        cpus: &'a Cpus,
        pod: &'a Pod,
        cgroup: &'a Cgroup,
        dir: &TempDir,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            wrk,
            client: ClientPod { cpus, pod, cgroup },
            keyed: true,
            wrk_script: dir.write("done.lua", WRK_DONE)?,
            count_script: dir.write("count.lua", &format!("{WRK_DONE}{WRK_COUNT}"))?,
            hold_script: dir.write("hold_idle.py", HOLD_IDLE)?,
        })
    }

    /// The same load, its requests without the routing key.
    pub fn unkeyed(mut self) -> Self {
        self.keyed = false;
        self
    }

    /// One measured interval against `addr`.
    pub fn wrk(
        &self,
        addr: SocketAddr,
        mode: ConnMode,
        connections: u32,
        seconds: u32,
    ) -> anyhow::Result<WrkResult> {
        self.run_wrk(addr, mode, connections, seconds, None)
    }

    /// About `requests` requests against `addr` (wrk stops after that many
    /// responses; the few in flight then still complete), within 60 s.
    pub fn wrk_requests(
        &self,
        addr: SocketAddr,
        mode: ConnMode,
        connections: u32,
        requests: u32,
    ) -> anyhow::Result<WrkResult> {
        self.run_wrk(addr, mode, connections, 60, Some(requests))
    }

    fn run_wrk(
        &self,
        addr: SocketAddr,
        mode: ConnMode,
        connections: u32,
        seconds: u32,
        requests: Option<u32>,
    ) -> anyhow::Result<WrkResult> {
        let mut command = self.client.command(self.wrk);
        let script = match requests {
            Some(requests) => {
                command.env("BENCH_MAX_REQUESTS", requests.to_string());
                &self.count_script
            }
            None => &self.wrk_script,
        };
        command
            .args(["-t1", &format!("-c{connections}"), &format!("-d{seconds}s")])
            .args(["--timeout", "2s", "-s"])
            .arg(script);
        if self.keyed {
            command.args(["-H", BAGGAGE]);
        }
        if mode == ConnMode::Close {
            command.args(["-H", "Connection: close"]);
        }
        command.arg(format!("http://{addr}/"));
        let (status, out, err) = run_load(&mut command, "wrk", addr, seconds)?;
        let line = out
            .lines()
            .find_map(|l| l.strip_prefix("bench: "))
            .with_context(|| format!("wrk against {addr} failed ({status}): {out}{err}"))?;
        parse_wrk(line)
    }

    /// Opens `count` keep-alive connections to `addr`, one keyed request on
    /// each, and holds them until the returned guard is dropped.
    pub fn hold_idle(&self, addr: SocketAddr, count: u32) -> anyhow::Result<Held> {
        let mut command = self.client.command(Path::new("python3"));
        command
            .arg(&self.hold_script)
            .args([&addr.ip().to_string(), &addr.port().to_string()])
            .args([&count.to_string(), BAGGAGE]);
        self.client.hold(command, addr, count)
    }
}

/// Idle connections held open by a client process; closed on drop.
pub struct Held {
    stdin: Option<ChildStdin>,
    proc: Proc,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.flush();
        }
        // Its stdin is closed: it exits and its sockets close.
        let _ = self.proc.wait_timeout(Duration::from_secs(10));
    }
}

fn parse_wrk(line: &str) -> anyhow::Result<WrkResult> {
    let field = |name: &str| -> anyhow::Result<f64> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .with_context(|| format!("no {name}= in wrk's output {line:?}"))?
            .parse()
            .with_context(|| format!("bad {name}= in wrk's output {line:?}"))
    };
    let count = |name: &str| field(name).map(|v| v as u64);
    Ok(WrkResult {
        requests: count("requests")?,
        duration_us: count("duration_us")?,
        p50_us: field("p50_us")?,
        p99_us: field("p99_us")?,
        socket_errors: count("connect")? + count("read")? + count("write")? + count("timeout")?,
        status_errors: count("status")?,
    })
}

/// Runs a load generator (`tool`, against `addr` for `seconds`) to its end,
/// with a margin; its exit status and what it printed on stdout and stderr.
pub fn run_load(
    command: &mut Command,
    tool: &str,
    addr: SocketAddr,
    seconds: u32,
) -> anyhow::Result<(std::process::ExitStatus, String, String)> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut proc = Proc::new(
        command
            .spawn()
            .with_context(|| format!("cannot start {tool}"))?,
    );
    let limit = Duration::from_secs(u64::from(seconds) + 15);
    let Some(status) = proc.wait_timeout(limit) else {
        bail!("{tool} against {addr} did not finish within {limit:?}");
    };
    let mut out = String::new();
    if let Some(mut stdout) = proc.child().stdout.take() {
        stdout.read_to_string(&mut out)?;
    }
    let mut err = String::new();
    if let Some(mut stderr) = proc.child().stderr.take() {
        stderr.read_to_string(&mut err)?;
    }
    Ok((status, out, err))
}
