//! The memory and scale phases of `bench soak`, run on the agent left after
//! the soak:
//! - the scaled route table (`--services` services, `--sandboxes`
//!   sandboxes): how long the agent takes from the file's replacement to
//!   publishing it (wall clock, polled on `detour_routes`), the snapshot
//!   build and map reconcile times it reports itself
//!   (`detour_route_update_duration_seconds`), and its RSS with the table;
//! - `--idle-connections` idle keep-alive client connections, one keyed
//!   request on each: the agent's RSS while they are held, and the upstream
//!   connections it keeps for them (the fork backend's active connections).

use std::{
    fmt::Write as _,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use detour_tests::{Agent, netns::Netns};

use crate::{http::checks::BackendStatus, http::load::Load, soak::routes::SoakRoutes};

/// The agent's resident memory, in KiB.
pub fn agent_rss_kib(agent: &Agent) -> u64 {
    std::fs::read_to_string(format!("/proc/{}/status", agent.pid()))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A sample of the agent's `/metrics`, as a float; `None` when absent.
fn sample(agent: &Agent, name: &str) -> Option<f64> {
    agent
        .http_get("/metrics")?
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// The scaled table's figures.
#[derive(Debug)]
pub struct Scale {
    pub services: u32,
    pub sandboxes: u32,
    pub yaml_kib: usize,
    pub rss_before_kib: u64,
    pub rss_kib: u64,
    pub wall: Duration,
    /// (build, apply) as the agent timed them, when it exports them.
    pub phases: Option<(Duration, Duration)>,
}

/// (sum, count) of one phase of `detour_route_update_duration_seconds`.
fn phase(agent: &Agent, phase: &str) -> Option<(f64, f64)> {
    let name = "detour_route_update_duration_seconds";
    Some((
        sample(agent, &format!("{name}_sum{{phase=\"{phase}\"}}"))?,
        sample(agent, &format!("{name}_count{{phase=\"{phase}\"}}"))?,
    ))
}

/// Replaces the routes with the scaled table, waits until the agent serves
/// it, and puts `restore` back afterwards.
pub fn scale(
    agent: &Agent,
    routes: &SoakRoutes,
    services: u32,
    sandboxes: u32,
    restore: &str,
) -> anyhow::Result<Scale> {
    let yaml = routes.scaled(services, sandboxes);
    let rss_before_kib = agent_rss_kib(agent);
    let before = [phase(agent, "build"), phase(agent, "apply")];
    let want = f64::from(services + 1);
    let services_metric = "detour_routes{kind=\"services\"}";
    let start = Instant::now();
    agent.write_routes(&yaml);
    while sample(agent, services_metric) != Some(want) {
        if start.elapsed() > Duration::from_secs(120) {
            bail!(
                "the agent did not publish {services} services within 120 s; log:\n{}",
                agent.logs()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let wall = start.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let after = [phase(agent, "build"), phase(agent, "apply")];
    let phases = match (before, after) {
        ([Some(b0), Some(a0)], [Some(b1), Some(a1)]) if b1.1 > b0.1 && a1.1 > a0.1 => Some((
            Duration::from_secs_f64((b1.0 - b0.0) / (b1.1 - b0.1)),
            Duration::from_secs_f64((a1.0 - a0.0) / (a1.1 - a0.1)),
        )),
        _ => None,
    };
    let rss_kib = agent_rss_kib(agent);
    agent.write_routes(restore);
    let start = Instant::now();
    while sample(agent, services_metric) != Some(1.0) {
        if start.elapsed() > Duration::from_secs(60) {
            bail!("the agent did not go back to the soak's routes");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Scale {
        services,
        sandboxes,
        yaml_kib: yaml.len() / 1024,
        rss_before_kib,
        rss_kib,
        wall,
        phases,
    })
}

/// The idle connections' figures.
#[derive(Debug)]
pub struct Idle {
    pub connections: u32,
    pub rss_before_kib: u64,
    pub rss_kib: u64,
    pub upstream: u64,
}

pub fn idle(
    agent: &Agent,
    load: &Load<'_>,
    fork: &Netns,
    addr: std::net::SocketAddr,
    connections: u32,
) -> anyhow::Result<Idle> {
    let rss_before_kib = agent_rss_kib(agent);
    let upstream_before = BackendStatus::read(fork)?.active;
    let held = load
        .hold_idle(addr, connections)
        .context("holding the idle connections")?;
    std::thread::sleep(crate::stage::IDLE_HOLD);
    let rss_kib = agent_rss_kib(agent);
    let upstream = BackendStatus::read(fork)?
        .active
        .saturating_sub(upstream_before);
    drop(held);
    Ok(Idle {
        connections,
        rss_before_kib,
        rss_kib,
        upstream,
    })
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// The memory and scale table.
pub fn render(scale: &Scale, idle: &Idle) -> String {
    let mut out = String::from(
        "| agent memory | RSS before | RSS with it | growth |\n|---|---:|---:|---:|\n",
    );
    let growth = |before: u64, after: u64| mib(after.saturating_sub(before));
    let _ = writeln!(
        out,
        "| {} services + {} sandboxes ({} forks) in the route table | {} | {} | {} |",
        scale.services,
        scale.sandboxes,
        scale.sandboxes * crate::soak::routes::FORKS_PER_SANDBOX,
        mib(scale.rss_before_kib),
        mib(scale.rss_kib),
        growth(scale.rss_before_kib, scale.rss_kib),
    );
    let per_conn = idle.rss_kib.saturating_sub(idle.rss_before_kib) as f64
        / f64::from(idle.connections.max(1));
    let _ = writeln!(
        out,
        "| {} idle keep-alive client connections ({per_conn:.1} KiB each; {} upstream connections held) | {} | {} | {} |",
        idle.connections,
        idle.upstream,
        mib(idle.rss_before_kib),
        mib(idle.rss_kib),
        growth(idle.rss_before_kib, idle.rss_kib),
    );
    let phases = scale.phases.map_or_else(
        || "not exported by this agent".to_owned(),
        |(build, apply)| {
            format!(
                "snapshot build {:.0} ms, map reconcile {:.0} ms",
                build.as_secs_f64() * 1000.0,
                apply.as_secs_f64() * 1000.0
            )
        },
    );
    let _ = writeln!(
        out,
        "\nRoute table rebuild with {} services and {} sandboxes: **{:.0} ms** from the routes file's \
         replacement ({} KiB of YAML) to the new table being served (wall clock: inotify, parse, \
         validation, snapshot, `STEERED` reconcile, polled every 5 ms); as the agent timed it: {phases}.",
        scale.services,
        scale.sandboxes,
        scale.wall.as_secs_f64() * 1000.0,
        scale.yaml_kib,
    );
    out
}
