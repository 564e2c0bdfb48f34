//! `cargo xtask bench origins`: what keeping the client's address costs.
//! The proxy opens each upstream connection inside its client pod's network
//! namespace (two `setns` calls more per new upstream connection) and pools
//! upstream connections by client pod and destination (so K client pods
//! keep up to K connections where one shared pool keeps fewer). Both are
//! measured in one run against the release agent with `--client-address
//! node` (every upstream connection from the node's address, one pool per
//! destination: what detour did before), each mode with an agent of its own:
//!
//! 1. Memory: each of `--client-pods` pods holds one HTTP/1 keep-alive
//!    connection and one h2c connection, each having carried a keyed and an
//!    unkeyed request (so both pools hold connections to the baseline and
//!    to the fork); the agent's RSS growth, and the upstream connections
//!    established at the two backends.
//! 2. CPU: spliced connections (a `tcp` port), each needing a new upstream
//!    connection, from every pod in turn; the agent's CPU time per
//!    connection, in `--rounds` rounds alternating the modes, and the
//!    median per-round ratio.
//!
//! Not a test: nothing is asserted.

use std::{
    fmt::Write as _,
    io::{BufRead, BufReader},
    process::Child,
    time::Duration,
};

use anyhow::{Context, bail};
use detour_tests::{Agent, Cgroup, Pod, Topology, cmd::Proc};

use crate::{BenchArgs, RunInfo, daemon::Accounting};

const HTTP: u16 = 8080;
const TCP: u16 = 8081;
const H2C: u16 = 8443;
const KEY: &str = "bench-fork";
const MODES: [&str; 2] = ["client", "node"];
/// Debian's python3, with python3-h2 (`cargo xtask setup`).
const PYTHON: &str = "/usr/bin/python3";

/// Holds one HTTP/1 and one h2c connection, each after a keyed and an
/// unkeyed request; prints `held`, then waits for standard input to close.
const HOLD: &str = r#"
import http.client, socket, sys
import h2.config, h2.connection, h2.events
host, key = sys.argv[1], sys.argv[4]
baggage = "detour-routing-key=" + key
c = http.client.HTTPConnection(host, int(sys.argv[2]), timeout=10)
for headers in ({"baggage": baggage}, {}):
    c.request("GET", "/", headers=headers)
    c.getresponse().read()
s = socket.create_connection((host, int(sys.argv[3])), timeout=10)
h = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
h.initiate_connection()
for stream, extra in ((1, [("baggage", baggage)]), (3, [])):
    h.send_headers(stream, [(":method", "GET"), (":path", "/who"), (":scheme", "http"),
                            (":authority", host)] + extra, end_stream=True)
s.sendall(h.data_to_send())
ended = 0
while ended < 2:
    data = s.recv(65536)
    if not data:
        sys.exit("h2c connection closed")
    for event in h.receive_data(data):
        ended += isinstance(event, h2.events.StreamEnded)
    s.sendall(h.data_to_send())
print("held", flush=True)
sys.stdin.read()
"#;

/// `count` spliced connections: connect, one request, read to the end.
const SPLICED: &str = r#"
import socket, sys
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for _ in range(count):
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        while s.recv(65536):
            pass
"#;

struct Memory {
    upstream: usize,
    rss_growth_kib: u64,
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let (_tools, agent_name) = crate::stage::prepare("origins")?;
    let pods = args.client_pods;
    let rounds = args.rounds.unwrap_or(5);
    let connections = args.iterations;
    let mut builder = Topology::builder("dto").pod("base").pod("fork");
    let names: Vec<String> = (0..pods).map(|i| format!("c{i}")).collect();
    for name in &names {
        builder = builder.pod(name);
    }
    let net = builder.build();
    let (base, fork) = (net.pod("base"), net.pod("fork"));
    let mut servers: Vec<Proc> = Vec::new();
    let mut dirs = Vec::new();
    for pod in [base, fork] {
        servers.push(pod.echo_server(HTTP));
        servers.push(pod.echo_server(TCP));
        let (proc, dir) = pod.h2c_file_server(H2C);
        servers.push(proc);
        dirs.push(dir);
    }
    let routes = format!(
        "services:
  - name: backend
    namespace: bench
    addresses: [\"{base}\"]
    ports: [{{port: {HTTP}, protocol: http}}, {{port: {H2C}, protocol: h2c}}, {{port: {TCP}, protocol: tcp}}]
sandboxes:
  - name: {KEY}
    routingKey: {KEY}
    forks:
      - service: bench/backend
        endpoints: [\"{fork}:{HTTP}\", \"{fork}:{H2C}\"]
",
        base = base.ip4,
        fork = fork.ip4,
    );
    let clients: Vec<&Pod> = names.iter().map(|n| net.pod(n)).collect();
    let attached = Cgroup::new(&detour_tests::unique_name("detour-bench-origins-"));

    let mut memory = Vec::new();
    for mode in MODES {
        eprintln!("bench origins: memory, --client-address {mode}, {pods} client pods");
        let (acct, agent) = start(&net, &attached, &routes, mode)?;
        memory.push(hold_memory(&clients, &attached, base, fork, &acct)?);
        drop(agent);
    }
    let mut cpu: Vec<[f64; 2]> = Vec::new();
    for round in 0..rounds {
        let mut per_mode = [0.0; 2];
        // Alternate which mode goes first, so drift favours neither.
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for index in order {
            let mode = MODES[index];
            eprintln!("bench origins: round {round}, --client-address {mode}");
            let (acct, agent) = start(&net, &attached, &routes, mode)?;
            per_mode[index] = cpu_per_connection(&clients, &attached, base, connections, &acct)?;
            drop(agent);
        }
        cpu.push(per_mode);
    }
    let block = report(&agent_name, pods, connections, &memory, &cpu);
    print!("{block}");
    crate::results::publish("origins", &block)
}

/// The agent in `mode`, in an accounting cgroup of its own. In that order:
/// bound as `(acct, agent)`, the agent is dropped (stopped) first, also on
/// an early return, and its cgroup is then empty for removal.
fn start(
    net: &Topology,
    attached: &Cgroup,
    routes: &str,
    mode: &str,
) -> anyhow::Result<(Accounting, Agent)> {
    let agent = Agent::builder(net, attached)
        .routes(routes)
        .log_filter("info")
        .arg("--client-address")
        .arg(mode)
        .spawn();
    let acct = Accounting::new("origins");
    acct.adopt(agent.pid())?;
    std::thread::sleep(Duration::from_millis(500));
    Ok((acct, agent))
}

/// Every pod holds its connections; the agent's RSS growth and the
/// upstream connections at the backends.
fn hold_memory(
    clients: &[&Pod],
    attached: &Cgroup,
    base: &Pod,
    fork: &Pod,
    acct: &Accounting,
) -> anyhow::Result<Memory> {
    let before = acct.memory()?.rss_kib;
    let (ip, http, h2c) = (base.ip4.to_string(), HTTP.to_string(), H2C.to_string());
    let mut held: Vec<Proc> = Vec::new();
    for pod in clients {
        let mut child = pod.spawn_driven_in(attached, PYTHON, &["-c", HOLD, &ip, &http, &h2c, KEY]);
        wait_held(&mut child)?;
        held.push(Proc::new(child));
    }
    std::thread::sleep(Duration::from_secs(1));
    let rss = acct.memory()?.rss_kib;
    let upstream = [base, fork]
        .iter()
        .flat_map(|pod| [HTTP, H2C].map(|port| established(pod, port)))
        .sum();
    drop(held);
    Ok(Memory {
        upstream,
        rss_growth_kib: rss.saturating_sub(before),
    })
}

fn wait_held(child: &mut Child) -> anyhow::Result<()> {
    let stdout = child.stdout.take().context("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    if line.trim() != "held" {
        bail!("a client pod could not make its requests: {line:?}");
    }
    Ok(())
}

/// Established TCP connections to `port` in `pod`.
fn established(pod: &Pod, port: u16) -> usize {
    let filter = format!("( sport = :{port} )");
    let output = pod.exec("ss", &["-Htn", "state", "established", &filter]);
    String::from_utf8_lossy(&output.stdout).lines().count()
}

/// Agent CPU µs per spliced connection, `connections` from every pod.
fn cpu_per_connection(
    clients: &[&Pod],
    attached: &Cgroup,
    base: &Pod,
    connections: u32,
    acct: &Accounting,
) -> anyhow::Result<f64> {
    let (ip, port, count) = (
        base.ip4.to_string(),
        TCP.to_string(),
        connections.to_string(),
    );
    let before = acct.cpu()?;
    for pod in clients {
        let output = pod.exec_in(attached, PYTHON, &["-c", SPLICED, &ip, &port, &count]);
        if !output.status.success() {
            bail!(
                "spliced connections failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
    let used = acct.cpu()?.since(&before);
    Ok(used.total_us as f64 / (f64::from(connections) * clients.len() as f64))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

fn report(agent: &str, pods: u32, connections: u32, memory: &[Memory], cpu: &[[f64; 2]]) -> String {
    let RunInfo {
        date,
        kernel,
        cpu_model,
        cpus,
        load,
    } = RunInfo::now();
    let mut out = String::new();
    let _ = writeln!(out, "### `cargo xtask bench origins`\n");
    let _ = writeln!(
        out,
        "What keeping the client's address costs, `cargo xtask bench origins --client-pods {pods} \
         --iterations {connections} --rounds {}`, run {date}. The release agent with each \
         `--client-address`: `client` (the default: upstream connections made in the client \
         pod's namespace, pooled per client pod) and `node` (from the node's address, one pool \
         per destination). Machine: Linux {kernel}, {cpus} CPUs ({cpu_model}), load average at \
         the end {load}; {agent}.\n",
        cpu.len()
    );
    let _ = writeln!(
        out,
        "| --client-address | upstream connections held | agent RSS growth KiB | per client pod KiB | agent CPU µs per new upstream connection | ×node (paired) |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    let ratio = median(cpu.iter().map(|[c, n]| c / n).collect());
    for (index, mode) in MODES.iter().enumerate() {
        let m = &memory[index];
        let per_pod = m.rss_growth_kib as f64 / f64::from(pods);
        let us = median(cpu.iter().map(|round| round[index]).collect());
        let paired = if index == 0 {
            format!("{ratio:.2}")
        } else {
            "1.00".to_owned()
        };
        let _ = writeln!(
            out,
            "| {mode} | {} | {} | {per_pod:.1} | {us:.1} | {paired} |",
            m.upstream, m.rss_growth_kib
        );
    }
    let _ = writeln!(
        out,
        "\nMemory: {pods} client pods each hold one HTTP/1 keep-alive connection and one h2c \
         connection, each after a keyed request (to the fork) and an unkeyed one (to baseline); \
         upstream connections are those established at the two backends' HTTP/1 and h2c ports. \
         CPU: {connections} spliced connections (a `tcp` port: each one a new upstream \
         connection) from each pod in turn per round, the agent's CPU time (its cgroup's \
         `cpu.stat`) divided by the connections; median over rounds, and the median of the \
         per-round ratios."
    );
    out
}
