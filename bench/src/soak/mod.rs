//! `cargo xtask bench soak`: does detour keep working, lose nothing and stay
//! flat in memory over a long run with route churn and a restart?
//!
//! # Layout
//! One [`Topology`] with four pods: `client`, and three backends answering
//! `base`, `fork` and `fork2` (nginx, [`crate::stage::peers`]). The real release
//! agent attaches to a child cgroup holding the client; its routes steer
//! `base:8080` with a stable sandbox (key `bench-fork`, fork `fork`) and a
//! churned one (key `soak-churn`, fork `fork2`) plus filler sandboxes
//! ([`crate::soak::routes`]).
//!
//! # Run
//! 1. `soak-client` ([`crate::soak::client`]) sends paced traffic for
//!    `--minutes`: keep-alive and new-connection workers, requests without
//!    a key, with the stable key and with the churned key, each checked
//!    against the body that may answer it.
//! 2. Meanwhile the routes file is rewritten `--churn-hz` times a second
//!    (the churned sandbox and the fillers come and go), and the agent's RSS
//!    is sampled every 15 s.
//! 3. Half way, the agent is restarted: SIGTERM (it drains), then a new
//!    agent with the routes of that moment. While none runs, connections go
//!    straight to baseline (fail-open). With `--upgrade`, it is upgraded
//!    hitlessly instead: a successor starts beside it and takes over its
//!    sockets, then the old one gets SIGTERM; the target is zero failures
//!    and zero keyed requests answered by baseline in that window too.
//! 4. After the client ends: the scale and memory phases
//!    ([`crate::soak::memory`]) on the restarted agent.
//!
//! The report ([`crate::soak::report`]) splits failures between the restart
//! window and the rest; the target is zero outside it, and a flat RSS.

pub mod client;
pub mod memory;
pub mod report;
pub mod routes;

use std::{
    net::{SocketAddr, SocketAddrV4},
    path::Path,
    process::{Command, Stdio},
    sync::atomic::Ordering,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, bail};
use detour_tests::{Agent, Cgroup, Topology, cmd::Proc};

use crate::{
    BenchArgs,
    daemon::TempDir,
    http::load::Load,
    procs::{Cpus, INTERRUPTED},
    soak::report::{Record, Restart, SoakRun},
    soak::routes::{CHURN_KEY, SoakRoutes},
    stage::peers::{BACKEND_PORT, KEY, Proto, Servers},
    tools::Tools,
};

const SYSCTLS: [&str; 2] = [
    "net.ipv4.tcp_tw_reuse=1",
    "net.ipv4.ip_local_port_range=10000 65000",
];
const RSS_EVERY: Duration = Duration::from_secs(15);

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    crate::host::require_root("soak")?;
    if args.minutes == 0 || args.churn_hz == 0 || args.rate == 0 {
        bail!("--minutes, --churn-hz and --rate must be at least 1");
    }
    crate::procs::raise_nofile()?;
    let tools = Tools::install()?;
    let (binary, agent_name) = crate::agent_binary()?;
    // SAFETY: no other thread exists yet (the Ctrl-C handler's is started
    // below), so nothing reads the environment concurrently.
    unsafe { std::env::set_var("DETOUR_BIN", &binary) };
    ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst))
        .context("cannot install the Ctrl-C handler")?;

    eprintln!("bench soak: setting up namespaces, backends and the agent");
    let dir = TempDir::new()?;
    let net = Topology::builder("dts")
        .pod("client")
        .pod("base")
        .pod("fork")
        .pod("fork2")
        .build();
    let client = net.pod("client");
    for setting in SYSCTLS {
        net.node().sysctl(setting);
        client.netns.sysctl(setting);
    }
    let attached = Cgroup::new(&detour_tests::unique_name("detour-bench-soak-"));
    let cpus = Cpus::default();
    let servers = Servers {
        proto: Proto::Http1,
        dir: &dir,
        pin: &[],
    };
    let mut backends = Vec::new();
    for (pod, body) in [("base", "base"), ("fork", "fork"), ("fork2", "fork2")] {
        let netns = &net.pod(pod).netns;
        backends.push(servers.backend(&tools.nginx, netns, pod, body)?);
    }
    let at = |pod: &str| SocketAddrV4::new(net.pod(pod).ip4, BACKEND_PORT);
    let routes = SoakRoutes {
        base: net.pod("base").ip4,
        fork: at("fork"),
        fork2: at("fork2"),
    };
    let spawn_agent = |yaml: &str| {
        Agent::builder(&net, &attached)
            .routes(yaml)
            .log_filter("info")
            .spawn()
    };
    let mut agent = spawn_agent(&routes.at(0));
    let target = SocketAddr::V4(at("base"));

    let seconds = u64::from(args.minutes) * 60;
    eprintln!(
        "bench soak: {} minutes of traffic, routes rewritten {}×/s, one agent {} half way",
        args.minutes,
        args.churn_hz,
        if args.upgrade { "upgrade" } else { "restart" }
    );
    let records_path = dir.path().join("soak-records.txt");
    let mut soak_client = spawn_client(
        &cpus,
        client,
        &attached,
        target,
        args,
        seconds,
        &records_path,
    )?;
    let churn_every = Duration::from_secs(1) / args.churn_hz;
    let (mut step, mut next_churn, mut next_rss) = (0u64, Instant::now(), Instant::now());
    let mut rss = Vec::new();
    let mut restart_at = Some(Instant::now() + Duration::from_secs(seconds / 2));
    let mut restart = None;
    let mut churn_writes = 0u64;
    while soak_client.try_wait().is_none() {
        if INTERRUPTED.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        if !agent.is_running() {
            bail!("the agent exited during the soak; log:\n{}", agent.logs());
        }
        let now = Instant::now();
        if restart_at.is_some_and(|at| now >= at) {
            restart_at = None;
            rss.push((unix_ms(), memory::agent_rss_kib(&agent)));
            let start = unix_ms();
            if args.upgrade {
                eprintln!(
                    "bench soak: upgrading the agent (a successor takes over, then SIGTERM to the old one)"
                );
                let mut next = Agent::builder(&net, &attached)
                    .routes(&routes.at(step))
                    .log_filter("info")
                    .succeeding(&agent)
                    .start();
                next.wait_admin_ready();
                let mut old = std::mem::replace(&mut agent, next);
                stop_agent(&mut old)?;
            } else {
                eprintln!("bench soak: restarting the agent (SIGTERM, then a new one)");
                stop_agent(&mut agent)?;
                agent = spawn_agent(&routes.at(step));
            }
            restart = Some((start, unix_ms()));
            rss.push((unix_ms(), memory::agent_rss_kib(&agent)));
        }
        if now >= next_rss {
            rss.push((unix_ms(), memory::agent_rss_kib(&agent)));
            next_rss += RSS_EVERY;
        }
        if now >= next_churn {
            step += 1;
            agent.write_routes(&routes.at(step));
            churn_writes += 1;
            next_churn = (next_churn + churn_every).max(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(10).min(churn_every));
    }
    let status = soak_client.try_wait().context("client status")?;
    if !status.success() {
        bail!("soak-client failed ({status})");
    }
    // The routes as the client's traffic last saw them, for the phases below.
    let settled = routes.at(1);
    agent.write_routes(&settled);

    let text = std::fs::read_to_string(&records_path).context("soak records")?;
    let mut lines = text.lines();
    let client_start: u64 = lines
        .next()
        .and_then(|l| l.strip_prefix("start ")?.parse().ok())
        .context("no start line from soak-client")?;
    let records = lines
        .map(Record::parse)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let relative = |ms: u64| ms.saturating_sub(client_start);
    let run = SoakRun {
        records,
        restart: restart.map(|(term, ready)| Restart {
            term_ms: relative(term),
            ready_ms: relative(ready),
            upgrade: args.upgrade,
        }),
        rss: rss.iter().map(|&(t, kib)| (relative(t), kib)).collect(),
    };

    eprintln!(
        "bench soak: route table of {} services and {} sandboxes",
        args.services, args.sandboxes
    );
    let scale = memory::scale(&agent, &routes, args.services, args.sandboxes, &settled)?;
    let idle_connections = args.idle_connections.unwrap_or(10_000);
    eprintln!("bench soak: {idle_connections} idle keep-alive connections");
    let load = Load::new(&tools.wrk, &cpus, client, &attached, &dir)?;
    let idle = memory::idle(
        &agent,
        &load,
        &net.pod("fork").netns,
        target,
        idle_connections,
    )?;

    let block = header(args, &agent_name, churn_writes)
        + &run.render()
        + "\n"
        + &memory::render(&scale, &idle);
    println!();
    print!("{block}");
    crate::results::publish(if args.upgrade { "soak-upgrade" } else { "soak" }, &block)?;
    let outside = run.failures_outside();
    if outside > 0 {
        eprintln!(
            "bench soak: target missed: {outside} requests failed outside the restart window"
        );
    }
    if let Some(upgrade) = args.upgrade.then(|| run.window_failures()) {
        eprintln!(
            "bench soak: in the upgrade window: {upgrade} requests failed or misrouted (target 0)"
        );
    }
    drop(backends);
    Ok(())
}

/// SIGTERM, and an error with the log unless the agent exits cleanly.
fn stop_agent(agent: &mut Agent) -> anyhow::Result<()> {
    let status = agent.terminate();
    if !status.success() {
        bail!(
            "the agent's SIGTERM exit was {status}; log:\n{}",
            agent.logs()
        );
    }
    Ok(())
}

fn spawn_client(
    cpus: &Cpus,
    pod: &detour_tests::Pod,
    cgroup: &Cgroup,
    target: SocketAddr,
    args: &BenchArgs,
    seconds: u64,
    records: &Path,
) -> anyhow::Result<Proc> {
    let exe = std::env::current_exe().context("cannot find the detour-bench binary")?;
    let out = std::fs::File::create(records).context("soak records file")?;
    let child = Command::new("nsenter")
        .arg(format!("--net={}", pod.netns.path()))
        .arg("--")
        .args(cpus.client_prefix())
        .args(["sh", "-c", &cgroup.enter_script(), "sh"])
        .arg(exe)
        .args(["soak-client", "--addr", &target.to_string()])
        .args(["--rate", &args.rate.to_string()])
        .args(["--stable-key", KEY, "--churn-key", CHURN_KEY])
        .args(["--seconds", &seconds.to_string()])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start soak-client")?;
    Ok(Proc::new(child))
}

fn header(args: &BenchArgs, agent: &str, churn_writes: u64) -> String {
    let run = crate::RunInfo::now();
    let (title, flag, event) = if args.upgrade {
        (
            "one hitless agent upgrade",
            " --upgrade",
            "a successor agent started half way, taking over the running one's sockets, then \
             SIGTERM to the old one",
        )
    } else {
        ("one agent restart", "", "SIGTERM and a new agent half way")
    };
    format!(
        "### `cargo xtask bench soak{flag}`: {} minutes, route churn, {title}\n\n\
         `cargo xtask bench soak{flag} --minutes {} --churn-hz {} --rate {}`, run {}. Machine: Linux {}, \
         {} CPUs ({}), no CPU pinning; load average at the end {}. detour: {agent}. \
         4 keep-alive and 2 new-connection client workers at {} requests/s each, \
         cycling through no key, the stable sandbox's key and the churned sandbox's key, \
         each response checked against the backend that may answer it; the routes file \
         rewritten {churn_writes} times ({}×/s: a sandbox and up to 7 fillers added and removed); \
         {event}.\n\n",
        args.minutes,
        args.minutes,
        args.churn_hz,
        args.rate,
        run.date,
        run.kernel,
        run.cpus,
        run.cpu_model,
        run.load,
        args.rate,
        args.churn_hz,
    )
}
