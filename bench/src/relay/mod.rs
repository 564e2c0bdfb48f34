//! `bench relay`: bulk transfer over a connection detour only splices (a
//! `tcp` port), through the in-kernel relay, through the proxy's user-space
//! splice (`--kernel-relay false`), through a plain user-space forwarder
//! (haproxy in `mode tcp`), and direct; CPU per GiB and throughput.
//!
//! Two agents run side by side on the node, each attached to a cgroup of its
//! own and listening on its own port: one with the relay, one without. The
//! client (`bulk-client`) runs in the cgroup of the agent it measures;
//! the receiver (`server --sink`) reads every byte and closes.
//!
//! The relay's work is not the agent's: the kernel runs the verdict and
//! sends the bytes from softirq and work-queue context, charged to no cgroup
//! of ours. So the CPU figure is the whole machine's (`/proc/stat`, every
//! CPU, busy time), and the cost of a proxy is its excess over direct in the
//! same round: (machine CPU − direct's machine CPU) per GiB. The proxy
//! processes' own CPU time is shown beside it.

pub mod bulk_client;

use std::{
    fmt::Write as _,
    net::{SocketAddr, SocketAddrV4},
    path::Path,
    process::{Command, Stdio},
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use detour_tests::{Agent, Cgroup, Topology, cmd::Proc, topology::NODE_IP4};

use crate::{
    BenchArgs,
    daemon::{Accounting, Daemon, TempDir},
    procs::{Cpus, INTERRUPTED, spawn_sink},
    table::{median, num, ratio, separator, verdict},
};

/// The receiver's port that both agents steer (declared `tcp`: spliced).
const STEERED_PORT: u16 = 9000;
/// The receiver's port nobody steers: direct, and haproxy's upstream.
const PLAIN_PORT: u16 = 9001;
const HAPROXY_PORT: u16 = 15100;
const GIB: f64 = (1u64 << 30) as f64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Direct,
    KernelRelay,
    UserSplice,
    Haproxy,
}

impl Via {
    const ALL: [Self; 4] = [
        Self::Direct,
        Self::KernelRelay,
        Self::UserSplice,
        Self::Haproxy,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::KernelRelay => "detour, in-kernel relay",
            Self::UserSplice => "detour, user-space splice",
            Self::Haproxy => "haproxy (mode tcp)",
        }
    }
}

/// One transfer: its bytes, time, and CPU.
#[derive(Debug, Clone, Copy)]
struct Sample {
    bytes: u64,
    seconds: f64,
    /// Busy seconds of every CPU of the machine.
    machine_cpu: f64,
    /// The proxy processes' own CPU seconds (none for direct).
    proxy_cpu: Option<f64>,
}

impl Sample {
    fn gib(&self) -> f64 {
        self.bytes as f64 / GIB
    }

    fn gib_per_s(&self) -> f64 {
        self.gib() / self.seconds
    }

    fn machine_per_gib(&self) -> f64 {
        self.machine_cpu / self.gib()
    }
}

struct Bench {
    net: Topology,
    cpus: Cpus,
    cgroups: [Cgroup; 2],
    accts: [Accounting; 2],
    haproxy: Daemon,
    agents: [Agent; 2],
    _receivers: [Proc; 2],
    _dir: TempDir,
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let (tools, agent_name) = crate::stage::prepare("relay")?;
    let rounds = args.rounds.unwrap_or(5).max(1);
    let bytes = args.bulk_mib * (1 << 20);
    let bench = Bench::new(&tools.haproxy)?;
    eprintln!(
        "bench relay: {rounds} rounds of {} MiB per path ({} streams)",
        args.bulk_mib, args.streams_bulk
    );
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); Via::ALL.len()];
    // Round 0 warms up and is discarded.
    for round in 0..=rounds {
        for i in 0..Via::ALL.len() {
            // Rotated per round: no path always follows the same one.
            let path = Via::ALL[(i + round as usize) % Via::ALL.len()];
            eprint!("\rround {round}/{rounds}: {:<28}", path.label());
            let sample = bench.transfer(path, bytes, args.streams_bulk)?;
            if round > 0 {
                samples[path as usize].push(sample);
            }
        }
    }
    eprintln!();
    bench.check_relayed()?;
    let block = header(args, rounds, &bench.cpus, &agent_name) + &render(&samples)?;
    println!();
    print!("{block}");
    crate::results::publish("relay", &block)
}

impl Bench {
    fn new(haproxy: &Path) -> anyhow::Result<Self> {
        eprintln!("bench relay: setting up namespaces, receivers, two agents and haproxy");
        let cpus = Cpus::plan();
        let dir = TempDir::new()?;
        let net = Topology::builder("dtr").pod("client").pod("server").build();
        let server = net.pod("server");
        let receivers = [STEERED_PORT, PLAIN_PORT].map(|port| {
            spawn_sink(
                &cpus.client_prefix(),
                &server.netns,
                SocketAddr::from((server.ip4, port)),
            )
        });
        let [steered, plain] = receivers;
        let receivers = [steered?, plain?];
        let routes = format!(
            "services:\n  - name: sink\n    namespace: bench\n    addresses: [\"{}\"]\n    ports:\n      - port: {STEERED_PORT}\n        protocol: tcp\n",
            server.ip4
        );
        let cgroups = ["relay", "splice"].map(|name| {
            Cgroup::new(&detour_tests::unique_name(&format!(
                "detour-bench-relay-{name}-"
            )))
        });
        let accts = [Accounting::new("relay"), Accounting::new("splice")];
        let mut agents = Vec::new();
        for (i, relay) in [true, false].into_iter().enumerate() {
            let port = 15001 + i as u16;
            let agent = Agent::builder(&net, &cgroups[i])
                .routes(&routes)
                .proxy_addrs(&[&format!("{NODE_IP4}:{port}")])
                .metrics_addr(&format!("127.0.0.1:{}", 15020 + i))
                .arg("--kernel-relay")
                .arg(if relay { "true" } else { "false" })
                .log_filter("info")
                .spawn();
            accts[i].adopt(agent.pid())?;
            cpus.pin_rest(agent.pid())?;
            agents.push(agent);
        }
        let conf = dir.write(
            "haproxy.cfg",
            &crate::stage::peer_configs::haproxy_tcp(
                SocketAddrV4::new(NODE_IP4, HAPROXY_PORT),
                SocketAddrV4::new(server.ip4, PLAIN_PORT),
            ),
        )?;
        let haproxy = Daemon::spawn(
            "haproxy",
            net.node(),
            &cpus.rest_prefix(),
            haproxy,
            &["-db".into(), "-f".into(), conf.display().to_string()],
            &dir.path().join("haproxy.out"),
        )?;
        std::thread::sleep(Duration::from_millis(500));
        haproxy.check_alive()?;
        let agents: [Agent; 2] = agents
            .try_into()
            .map_err(|_| anyhow::anyhow!("two agents"))?;
        Ok(Self {
            net,
            cpus,
            cgroups,
            accts,
            haproxy,
            agents,
            _receivers: receivers,
            _dir: dir,
        })
    }

    /// One bulk transfer along `path`, with the machine's and the proxy's
    /// CPU time read around it.
    fn transfer(&self, path: Via, bytes: u64, streams: u32) -> anyhow::Result<Sample> {
        if INTERRUPTED.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        self.haproxy.check_alive()?;
        let server = self.net.pod("server").ip4;
        let (target, cgroup, acct) = match path {
            Via::Direct => (SocketAddr::from((server, PLAIN_PORT)), None, None),
            Via::KernelRelay => (
                SocketAddr::from((server, STEERED_PORT)),
                Some(&self.cgroups[0]),
                Some(&self.accts[0]),
            ),
            Via::UserSplice => (
                SocketAddr::from((server, STEERED_PORT)),
                Some(&self.cgroups[1]),
                Some(&self.accts[1]),
            ),
            Via::Haproxy => (
                SocketAddr::from((NODE_IP4, HAPROXY_PORT)),
                None,
                Some(self.haproxy.acct()),
            ),
        };
        let exe = std::env::current_exe().context("cannot find the detour-bench binary")?;
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", self.net.pod("client").netns.path()))
            .arg("--")
            .args(self.cpus.client_prefix());
        if let Some(cgroup) = cgroup {
            command.args(["sh", "-c", &cgroup.enter_script(), "sh"]);
        }
        command.arg(exe).args([
            "bulk-client",
            "--connect",
            &target.to_string(),
            "--bytes",
            &bytes.to_string(),
            "--streams",
            &streams.to_string(),
        ]);
        let proxy_before = acct.map(Accounting::cpu).transpose()?;
        let machine_before = machine_busy_seconds()?;
        let started = Instant::now();
        let output = command
            .stdin(Stdio::null())
            .output()
            .context("cannot run bulk-client")?;
        let machine_cpu = machine_busy_seconds()? - machine_before;
        let proxy_after = acct.map(Accounting::cpu).transpose()?;
        if !output.status.success() {
            bail!(
                "{}: the transfer failed after {:?}: {}",
                path.label(),
                started.elapsed(),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let text = String::from_utf8_lossy(&output.stdout);
        let mut fields = text.split_whitespace();
        let (Some(sent), Some(seconds)) = (fields.next(), fields.next()) else {
            bail!("{}: unexpected client output {text:?}", path.label());
        };
        Ok(Sample {
            bytes: sent.parse()?,
            seconds: seconds.parse()?,
            machine_cpu,
            proxy_cpu: proxy_before
                .zip(proxy_after)
                .map(|(b, a)| a.since(&b).total_us as f64 / 1e6),
        })
    }

    /// The relay agent relayed in the kernel and the other did not: else
    /// the table would not measure what it says.
    fn check_relayed(&self) -> anyhow::Result<()> {
        let [relay, splice] = &self.agents;
        let kernel = relay.metric("detour_splices_total{relay=\"kernel\"}");
        let user = splice.metric("detour_splices_total{relay=\"user\"}");
        let relayed = relay.bpf_event("relayed");
        if kernel == 0 || user == 0 || relayed == 0 {
            bail!(
                "the relay agent relayed {kernel} connections ({relayed} segments), the splice agent spliced {user}: not published"
            );
        }
        Ok(())
    }
}

/// Busy time of every CPU since boot (`/proc/stat`: all but idle and
/// iowait), in seconds.
fn machine_busy_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat").context("cannot read /proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("bad /proc/stat")?;
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    Ok((total - idle) as f64 / hz as f64)
}

fn header(args: &BenchArgs, rounds: u32, cpus: &Cpus, agent: &str) -> String {
    let crate::RunInfo {
        date,
        kernel,
        cpu_model,
        cpus: n_cpus,
        load,
    } = crate::RunInfo::now();
    format!(
        "### `cargo xtask bench relay`\n\n\
         `cargo xtask bench relay --rounds {rounds} --bulk-mib {} --streams-bulk {}`, run {date}. \
         {rounds} rounds (+1 warm-up, discarded) x 4 paths, interleaved (order rotated per \
         round); each path sends {} MiB over {} connection(s) from the client pod to a receiver \
         pod that reads every byte, half-closes and waits for the receiver's close. Figures are \
         medians over rounds. Machine: Linux {kernel}, {n_cpus} CPUs ({cpu_model}); {}; load \
         average at the end {load}. detour: {agent}, a `tcp` port (spliced).\n\n",
        args.bulk_mib,
        args.streams_bulk,
        args.bulk_mib,
        args.streams_bulk,
        cpus.describe(),
    )
}

fn render(samples: &[Vec<Sample>]) -> anyhow::Result<String> {
    let of = |path: Via| -> anyhow::Result<&[Sample]> {
        samples
            .get(path as usize)
            .filter(|s| !s.is_empty())
            .map(Vec::as_slice)
            .with_context(|| format!("no samples for {}", path.label()))
    };
    // A proxy's cost: its machine CPU per GiB over direct's, paired by round.
    let excess = |path: Via| -> anyhow::Result<f64> {
        let pairs = of(path)?.iter().zip(of(Via::Direct)?);
        Ok(median(
            pairs
                .map(|(p, d)| p.machine_per_gib() - d.machine_per_gib())
                .collect(),
        ))
    };
    let splice = excess(Via::UserSplice)?;
    let mut out = String::new();
    let header = "| path | GiB/s | machine CPU s/GiB | over direct, s/GiB | ×user-space splice | proxy process CPU s/GiB |";
    writeln!(out, "{header}")?;
    writeln!(out, "{}", separator(header.matches('|').count() - 1))?;
    for path in Via::ALL {
        let s = of(path)?;
        let throughput = median(s.iter().map(Sample::gib_per_s).collect());
        let machine = median(s.iter().map(Sample::machine_per_gib).collect());
        let process: Vec<f64> = s
            .iter()
            .filter_map(|s| Some(s.proxy_cpu? / s.gib()))
            .collect();
        let (over, times) = if path == Via::Direct {
            (None, None)
        } else {
            let over = excess(path)?;
            (Some(over), Some(over / splice))
        };
        writeln!(
            out,
            "| {} | {:.2} | {:.3} | {} | {} | {} |",
            path.label(),
            throughput,
            machine,
            num(over, 3),
            ratio(times),
            num((!process.is_empty()).then(|| median(process)), 3),
        )?;
    }
    let relay = excess(Via::KernelRelay)?;
    writeln!(
        out,
        "\nTarget: the in-kernel relay's CPU per GiB over direct ≤ 0.5× the user-space splice's: {:.2}× ({}).\n",
        relay / splice,
        verdict(relay <= 0.5 * splice)
    )?;
    writeln!(
        out,
        "Machine CPU is every CPU's busy time (`/proc/stat`) during the transfer: the sender, \
         the receiver, the TCP stack in both, and the relay, which the kernel runs in softirq \
         and work-queue context outside any proxy process. \"Over direct\" subtracts the \
         direct transfer of the same round: what the path costs beyond the two endpoints. \
         Proxy process CPU is the agent's (or haproxy's) own cgroup time."
    )?;
    Ok(out)
}
