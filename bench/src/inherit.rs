//! `cargo xtask bench inherit`: what an inherited routing key costs per
//! request. The `http` suite's stage (detour's release agent, nginx base
//! and fork backends answering 5 bytes), and two wrk clients in the client
//! pod, keep-alive: one in the attached cgroup sending the key, as every
//! request of `bench http` does; one in the sandbox's fork pod cgroup (its
//! `podCgroups`, inside the attached one) sending none, so that each of its
//! requests inherits the sandbox's key and is forwarded with a `baggage`
//! member added. Both reach the fork backend, which must have counted every
//! request of every interval (an inherited request that went to baseline
//! would fail the run).
//!
//! Rounds alternate the two clients' order; each interval is `--seconds`
//! of `wrk -c --connections`; per interval: requests per second and the
//! agent's CPU time per request. The table gives medians over rounds and
//! the paired per-round ratio inherited/keyed.

use std::fmt::Write as _;

use anyhow::{Context, bail};

use crate::{
    BenchArgs,
    http::load::{ConnMode, Load, WrkResult},
    stage::{
        Stage,
        peers::{Peer, Proto},
    },
    suite::{Measured, Probe},
};

const DEFAULT_ROUNDS: u32 = 5;

/// The two clients, in table order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    Keyed,
    Inherited,
}

impl Client {
    const ALL: [Self; 2] = [Self::Keyed, Self::Inherited];

    fn label(self) -> &'static str {
        match self {
            Self::Keyed => "keyed request (baggage sent)",
            Self::Inherited => "fork pod, no key (inherited, baggage added)",
        }
    }
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let rounds = args.rounds.unwrap_or(DEFAULT_ROUNDS);
    if rounds == 0 || args.seconds == 0 || args.connections == 0 {
        bail!("--rounds, --seconds and --connections must be at least 1");
    }
    let (tools, agent_name) = crate::stage::prepare("inherit")?;
    let stage = Stage::new(Proto::Http1, "inherit", &tools)?;
    let cpus = stage.cpus();
    let loads = [
        Load::new(
            &tools.wrk,
            cpus,
            stage.client(),
            stage.attached(),
            stage.dir(),
        )?,
        Load::new(
            &tools.wrk,
            cpus,
            stage.client(),
            stage.fork_pod(),
            stage.dir(),
        )?
        .unkeyed(),
    ];
    let probe = Probe {
        fork: &stage.fork().netns,
        addrs: stage.addrs(),
        accts: stage.accts(),
        daemons: stage.daemons(),
        agent: stage.agent(),
    };
    let mut samples: [Vec<Measured<WrkResult>>; 2] = [Vec::new(), Vec::new()];
    eprintln!("round 0 is a warm-up, discarded");
    for round in 0..=rounds {
        let seconds = if round == 0 {
            args.warmup_seconds.max(1)
        } else {
            args.seconds
        };
        let mut order = Client::ALL;
        if round % 2 == 1 {
            order.reverse();
        }
        for client in order {
            eprint!("\rround {round}/{rounds}: {:<45}", client.label());
            let load = &loads[client as usize];
            let measured = probe.measure(
                Peer::Detour,
                &format!("{}: wrk", client.label()),
                |addr| load.wrk(addr, ConnMode::KeepAlive, args.connections, seconds),
                |wrk| wrk.requests,
            )?;
            let errors = measured.load.socket_errors + measured.load.status_errors;
            if errors > 0 || measured.backend_requests < measured.load.requests {
                bail!(
                    "{}: {errors} errors, {} of {} requests reached the fork backend: not \
                     every request went where it should",
                    client.label(),
                    measured.backend_requests,
                    measured.load.requests
                );
            }
            if round > 0 {
                samples[client as usize].push(measured);
            }
        }
    }
    eprintln!();
    let block = render(args, rounds, &samples, &agent_name)?;
    println!();
    print!("{block}");
    crate::results::publish("inherit", &block)
}

fn rate(m: &Measured<WrkResult>) -> f64 {
    m.load.requests as f64 / (m.load.duration_us as f64 / 1e6)
}

fn cpu_us(m: &Measured<WrkResult>) -> Option<f64> {
    m.cpu
        .map(|cpu| cpu.total_us as f64 / m.load.requests as f64)
}

fn median(mut values: Vec<f64>) -> anyhow::Result<f64> {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    match values.len() {
        0 => bail!("no samples"),
        n if n % 2 == 1 => Ok(values[mid]),
        _ => Ok((values[mid - 1] + values[mid]) / 2.0),
    }
}

fn render(
    args: &BenchArgs,
    rounds: u32,
    samples: &[Vec<Measured<WrkResult>>; 2],
    agent_name: &str,
) -> anyhow::Result<String> {
    let run = crate::RunInfo::now();
    let mut out = String::new();
    writeln!(
        out,
        "### `cargo xtask bench inherit`\n\n\
         The per-request cost of an inherited key, `cargo xtask bench inherit --rounds {rounds} \
         --seconds {} --connections {}`, run {}. {rounds} rounds (+1 warm-up, discarded) x 2 \
         clients, keep-alive, one wrk interval each, order alternating; medians over rounds, \
         ratios are medians of per-round paired ratios. Both clients' requests reach the fork \
         backend (nginx, 5 bytes) through detour; kernel {}, {} CPUs; {agent_name}.\n",
        args.seconds, args.connections, run.date, run.kernel, run.cpus,
    )?;
    writeln!(
        out,
        "| client | requests/s | agent CPU µs per request | ratio of CPU to keyed (paired) |"
    )?;
    writeln!(out, "|---|---:|---:|---:|")?;
    let keyed = &samples[Client::Keyed as usize];
    for client in Client::ALL {
        let these = &samples[client as usize];
        let cpu: Vec<f64> = these.iter().filter_map(cpu_us).collect();
        let ratios: Vec<f64> = these
            .iter()
            .zip(keyed)
            .filter_map(|(m, k)| Some(cpu_us(m)? / cpu_us(k)?))
            .collect();
        writeln!(
            out,
            "| {} | {:.0} | {:.2} | {:.3} |",
            client.label(),
            median(these.iter().map(rate).collect())?,
            median(cpu).context("agent CPU")?,
            median(ratios)?,
        )?;
    }
    Ok(out)
}
