//! `client` (hidden subcommand of the detour-bench binary, run by `bench
//! connect`): the timed loop, as a worker driven over its stdin.
//!
//! `bench connect` starts one worker per mode, each already inside that
//! mode's pod network namespace and cgroup (`nsenter` + the cgroup's
//! `enter_script`): the eBPF cgroup programs only see sockets made by a
//! process inside the cgroup. All workers are pinned to the same CPU, and
//! only one works at a time: the bench sends `run N`, the worker does `N`
//! operations (after a few untimed ones: the first after a switch pays for
//! the other worker's cache footprint) and answers `done`. So modes can be
//! interleaved in small batches at the cost of a pipe round trip, with no
//! cgroup migration, and a noisy machine (other builds, a hypervisor) weighs
//! on all modes alike rather than on whichever ran during the noise.
//! `report` prints the statistics of the operations since the last report
//! (one round); EOF ends the worker.
//!
//! One operation is socket() + connect() + setsockopt(SO_LINGER {on, 0}) +
//! close(): close() then sends a RST and leaves no TIME_WAIT, so tens of
//! thousands of connects from one source to one destination do not run out
//! of ephemeral ports, and no sysctl of the root namespace is touched. The
//! same four syscalls in every mode. After each operation the worker spins
//! for `--gap-us`, untimed (spinning keeps its CPU out of idle states whose
//! exit latency would be noise), so that listeners drain their accept
//! queues: a tight loop outruns a userspace proxy on two cores, a 128-deep
//! accept queue overflows, and each dropped SYN costs a 1 s retransmit; that
//! would measure proxy throughput, not the connect path.

use std::{
    io::BufRead,
    net::{SocketAddr, TcpStream},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Args;

/// Untimed operations at the start of every batch.
pub const BATCH_WARMUP: u32 = 3;
/// A single connect+close slower than this is counted as `slow`: with a
/// local peer it means a preemption or a lost SYN (1 s).
const SLOW_OP: Duration = Duration::from_millis(5);

#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The mode's name, echoed in reports.
    #[arg(long)]
    pub name: String,
    /// Address to connect to.
    #[arg(long)]
    pub addr: SocketAddr,
    /// Untimed spin after each operation, in microseconds.
    #[arg(long, default_value_t = 0)]
    pub gap_us: u64,
}

pub fn run(args: &ClientArgs) -> anyhow::Result<()> {
    let gap = Duration::from_micros(args.gap_us);
    let mut ops: Vec<u64> = Vec::new();
    let mut connects = 0u64;
    for line in std::io::stdin().lock().lines() {
        let line = line.context("reading commands")?;
        if line == "report" {
            println!("{}", report(&args.name, connects, &mut ops));
            connects = 0;
            ops.clear();
            continue;
        }
        let Some(count) = line.strip_prefix("run ") else {
            bail!("unknown command {line:?}");
        };
        let count: u32 = count.parse().context("run count")?;
        for i in 0..BATCH_WARMUP + count {
            let start = Instant::now();
            connect_close(args.addr)
                .with_context(|| format!("mode {}: connect to {} failed", args.name, args.addr))?;
            let elapsed = nanos(start.elapsed());
            connects += 1;
            if i >= BATCH_WARMUP {
                ops.push(elapsed);
            }
            spin(gap);
        }
        println!("done");
    }
    Ok(())
}

/// `mode=NAME connects=.. ops=.. sum_ns=.. p50_ns=.. p90_ns=.. slow=..`,
/// `sum_ns` adding up the timed operations only.
fn report(name: &str, connects: u64, ops: &mut [u64]) -> String {
    let sum: u64 = ops.iter().sum();
    ops.sort_unstable();
    let at = |q: usize| {
        ops.get(ops.len().saturating_sub(1) * q / 100)
            .copied()
            .unwrap_or(0)
    };
    let slow = ops.iter().filter(|&&ns| ns > nanos(SLOW_OP)).count();
    format!(
        "mode={name} connects={connects} ops={} sum_ns={sum} p50_ns={} p90_ns={} slow={slow}",
        ops.len(),
        at(50),
        at(90),
    )
}

/// One connect + close, with close() as an abort (RST, no TIME_WAIT).
fn connect_close(addr: SocketAddr) -> std::io::Result<()> {
    let stream = TcpStream::connect(addr)?;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::linger>())
        .map_err(std::io::Error::other)?;
    // SAFETY: a valid open socket, and a pointer/length pair describing a
    // live `linger` value for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::from_ref(&linger).cast(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Busy-waits for `gap` (bounded by the clock).
fn spin(gap: Duration) {
    let until = Instant::now() + gap;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}
