//! The timed clients of `bench connect`: one `client` worker per mode
//! (see [`crate::connect::client`]), started inside the mode's pod namespace and
//! cgroup and pinned to the client CPU, then driven batch by batch over
//! pipes so that modes interleave finely while only one of them runs.

use std::{
    io::{BufRead, BufReader, Write},
    net::SocketAddr,
    process::{ChildStdin, Command, Stdio},
    sync::{atomic::Ordering, mpsc},
    time::Duration,
};

use anyhow::{Context, bail};
use detour_tests::{Cgroup, Pod, cmd::Proc};

use crate::{
    connect::report::Sample,
    procs::{Cpus, INTERRUPTED},
};

/// A batch not done within this is a hang (a connect retries for minutes).
const BATCH_TIMEOUT: Duration = Duration::from_secs(60);

/// What one worker times: a mode's name, where it connects from (pod
/// namespace, cgroup) and to.
pub struct Target<'a> {
    pub name: &'a str,
    pub pod: &'a Pod,
    pub cgroup: &'a Cgroup,
    pub addr: SocketAddr,
}

struct Worker {
    name: String,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    // Last: killed and reaped after its stdin is closed.
    _proc: Proc,
}

impl Worker {
    fn spawn(cpus: &Cpus, target: &Target<'_>, gap_us: u64) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find the detour-bench binary")?;
        let mut child = Command::new("nsenter")
            .arg(format!("--net={}", target.pod.netns.path()))
            .arg("--")
            .args(cpus.client_prefix())
            .args(["sh", "-c", &target.cgroup.enter_script(), "sh"])
            .arg(exe)
            .args(["client", "--name", target.name])
            .args(["--addr", &target.addr.to_string()])
            .args(["--gap-us", &gap_us.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start client")?;
        let stdin = child.stdin.take().context("no stdin")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (send, lines) = mpsc::channel();
        // Ends with the worker's stdout.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            name: target.name.to_owned(),
            stdin,
            lines,
            _proc: Proc::new(child),
        })
    }

    fn ask(&mut self, command: &str) -> anyhow::Result<String> {
        if INTERRUPTED.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        writeln!(self.stdin, "{command}")
            .with_context(|| format!("worker {} is gone", self.name))?;
        let answer = self.lines.recv_timeout(BATCH_TIMEOUT);
        if INTERRUPTED.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        answer.with_context(|| {
            format!(
                "worker {} did not answer {command:?} (exited, or over {BATCH_TIMEOUT:?})",
                self.name
            )
        })
    }
}

pub struct Workers {
    workers: Vec<Worker>,
}

impl Workers {
    pub fn spawn(cpus: &Cpus, targets: &[Target<'_>], gap_us: u64) -> anyhow::Result<Self> {
        let workers = targets
            .iter()
            .map(|t| Worker::spawn(cpus, t, gap_us))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { workers })
    }

    /// One round: `iterations` timed operations per mode, in batches of
    /// `batch`, the order of modes rotated per batch (offset by `rotate`);
    /// then every worker's report, by mode name.
    pub fn round(
        &mut self,
        iterations: u32,
        batch: u32,
        rotate: usize,
    ) -> anyhow::Result<Vec<(String, Sample)>> {
        let batches = iterations.div_ceil(batch);
        let n = self.workers.len();
        for b in 0..batches {
            let count = batch.min(iterations - b * batch);
            let offset = usize::try_from(b).context("batch index")? + rotate;
            for k in 0..n {
                let worker = &mut self.workers[(offset + k) % n];
                let answer = worker.ask(&format!("run {count}"))?;
                if answer != "done" {
                    bail!("worker {}: unexpected answer {answer:?}", worker.name);
                }
            }
        }
        self.workers
            .iter_mut()
            .map(|w| Sample::parse(&w.ask("report")?))
            .collect()
    }
}
