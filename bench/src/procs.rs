//! Process and namespace plumbing for `bench connect`: CPU placement
//! ([`Cpus`], used by `bench http` too), the Ctrl-C flag, the listeners
//! inside the benchmark's namespaces, the iptables rules, and the kernel
//! counters the run is checked against.

use std::{
    net::SocketAddr,
    process::{Command, Stdio},
    sync::atomic::AtomicBool,
    time::Duration,
};

use anyhow::{Context, bail};
use detour_tests::{cmd::Proc, netns::Netns};

/// Set by the Ctrl-C handler; checked around every exchange with a worker.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// CPU placement. With two or more CPUs allowed, the timed client gets the
/// last one to itself and every other process of the benchmark (servers,
/// forwarders, the agent) the rest. Packets between namespaces are processed
/// in softirq on the sending CPU, so the client's connect path runs on its
/// own CPU, never queued behind a proxy's userspace work, in every mode alike.
#[derive(Debug, Clone, Default)]
pub struct Cpus {
    client: Option<String>,
    rest: Option<String>,
}

impl Cpus {
    pub fn plan() -> Self {
        let allowed = allowed_cpus();
        match allowed.split_last() {
            Some((client, rest)) if !rest.is_empty() => Self {
                client: Some(client.to_string()),
                rest: Some(
                    rest.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(","),
                ),
            },
            _ => Self::default(),
        }
    }

    pub fn describe(&self) -> String {
        match (&self.client, &self.rest) {
            (Some(client), Some(rest)) => {
                format!("client pinned to CPU {client}, everything else to CPU {rest}")
            }
            _ => "no CPU pinning (a single CPU allowed)".to_owned(),
        }
    }

    /// `taskset -c LIST` prefix for the client, or nothing.
    pub fn client_prefix(&self) -> Vec<String> {
        prefix(self.client.as_ref())
    }

    /// `taskset -c LIST` prefix for everything else, or nothing.
    pub fn rest_prefix(&self) -> Vec<String> {
        prefix(self.rest.as_ref())
    }

    /// The client's CPU, when pinning.
    pub fn client_cpu(&self) -> Option<&str> {
        self.client.as_deref()
    }

    /// The other CPUs, when pinning.
    pub fn rest_cpus(&self) -> Option<&str> {
        self.rest.as_deref()
    }

    /// Moves every thread of a process we started (the agent) to the
    /// non-client CPUs.
    pub fn pin_rest(&self, pid: u32) -> anyhow::Result<()> {
        let Some(rest) = &self.rest else {
            return Ok(());
        };
        // `taskset -a` walks the process's threads: one that exits meanwhile
        // (a runtime's idle worker) fails it. The walk is retried.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let pinned = crate::host::exec(
                Command::new("taskset")
                    .args(["-a", "-p", "-c", rest, &pid.to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            );
            if pinned.is_ok() || attempts == 5 {
                return pinned;
            }
        }
    }
}

fn prefix(cpus: Option<&String>) -> Vec<String> {
    cpus.map(|list| vec!["taskset".to_owned(), "-c".to_owned(), list.clone()])
        .unwrap_or_default()
}

fn allowed_cpus() -> Vec<usize> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is this thread; the pointer and size describe `set`.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &raw mut set) };
    if rc != 0 {
        return Vec::new();
    }
    let max = usize::try_from(libc::CPU_SETSIZE).unwrap_or(0);
    // SAFETY: CPU_ISSET reads the set, with `cpu` below CPU_SETSIZE.
    (0..max)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// Starts `server` in `netns` and waits until it listens.
pub fn spawn_peer(
    cpus: &Cpus,
    netns: &Netns,
    listen: SocketAddr,
    upstream: Option<SocketAddr>,
) -> anyhow::Result<Proc> {
    let upstream = upstream.map(|upstream| upstream.to_string());
    let extra: Vec<&str> = upstream.iter().flat_map(|u| ["--upstream", u]).collect();
    spawn_server(&cpus.rest_prefix(), netns, listen, &extra)
}

/// Starts `server --sink` (reads each connection to its end) in
/// `netns`, pinned by `pin`, and waits until it listens.
pub fn spawn_sink(pin: &[String], netns: &Netns, listen: SocketAddr) -> anyhow::Result<Proc> {
    spawn_server(pin, netns, listen, &["--sink"])
}

fn spawn_server(
    pin: &[String],
    netns: &Netns,
    listen: SocketAddr,
    extra: &[&str],
) -> anyhow::Result<Proc> {
    let exe = std::env::current_exe().context("cannot find the detour-bench binary")?;
    // stdin stays open (held by the Proc) for as long as the server may live.
    let mut child = Command::new("nsenter")
        .arg(format!("--net={}", netns.path()))
        .arg("--")
        .args(pin)
        .arg(exe)
        .args(["server", "--listen", &listen.to_string()])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start server")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let proc = Proc::new(child);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
    if !line.starts_with("listening") {
        bail!("server on {listen} did not start: {line:?}");
    }
    Ok(proc)
}

pub fn iptables(netns: &Netns, args: &str) -> anyhow::Result<()> {
    let mut full = vec!["-w"];
    full.extend(args.split_whitespace());
    let output = netns.exec("iptables", &full);
    if !output.status.success() {
        bail!(
            "iptables {args} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Packet counters of the nat OUTPUT rules, in order. Only a connection's
/// first packet traverses the nat table: packets == connections.
pub fn nat_rule_packets(netns: &Netns) -> anyhow::Result<Vec<u64>> {
    let output = netns.exec(
        "iptables",
        &["-w", "-t", "nat", "-L", "OUTPUT", "-n", "-v", "-x"],
    );
    if !output.status.success() {
        bail!(
            "iptables -L failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .skip(2)
        .filter_map(|line| line.split_whitespace().next()?.parse().ok())
        .collect())
}

/// Polls `read` until it reaches `want` or a couple of seconds pass: the
/// proxy may still be accepting the last connections of the last round.
pub fn settled(want: u64, read: impl Fn() -> u64) -> u64 {
    let mut got = read();
    for _ in 0..40 {
        if got >= want {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        got = read();
    }
    got
}

/// A `TcpExt` counter of `netns` (from its `/proc/net/netstat`).
pub fn tcp_ext(netns: &Netns, name: &str) -> anyhow::Result<u64> {
    let output = netns.exec("cat", &["/proc/net/netstat"]);
    let text = String::from_utf8_lossy(&output.stdout);
    let mut rows = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (rows.next(), rows.next()) else {
        bail!("no TcpExt counters in {}", netns.name());
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == name)
        .with_context(|| format!("no TcpExt {name} in {}", netns.name()))?
        .1
        .parse()
        .with_context(|| format!("bad TcpExt {name}"))
}

/// Open files for the benchmark and what it starts (the agent, the peer
/// proxies, the clients): 10,000 idle connections need more than 20,000.
const NOFILE: libc::rlim_t = 65_536;

/// Raises this process's open-file limit (inherited by the agent) to
/// [`NOFILE`], or as far as the hard limit allows where raising that is not
/// permitted (a container without CAP_SYS_RESOURCE).
pub fn raise_nofile() -> anyhow::Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: NOFILE,
        rlim_max: NOFILE,
    };
    // SAFETY: setrlimit and getrlimit access the struct we own.
    unsafe {
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
            return Ok(());
        }
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            bail!("getrlimit: {}", std::io::Error::last_os_error());
        }
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            bail!("setrlimit: {}", std::io::Error::last_os_error());
        }
    }
    eprintln!(
        "bench: open files limited to {} (the hard limit; raising it is not permitted here)",
        limit.rlim_max
    );
    Ok(())
}

/// Connections a proxy can hold under this process's open-file limit (its
/// children inherit it): two descriptors each (client and upstream), less a
/// margin for its own files.
pub fn proxy_connection_limit() -> u32 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we own.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur
    } else {
        1024
    };
    u32::try_from(soft.saturating_sub(64) / 2)
        .unwrap_or(u32::MAX)
        .min(30_000)
}
