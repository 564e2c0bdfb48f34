//! Long-running processes of `bench http` (nginx, haproxy and Envoy, as
//! proxies and as backends) and the accounting of every proxy, detour's
//! agent included.
//!
//! Each measured process tree lives in a child cgroup v2 of its own
//! ([`Accounting`]), made for the run: its `cpu.stat` `usage_usec` counts
//! every thread and process of the tree (nginx's master and worker, Envoy's
//! main and worker threads, the agent's runtime threads), including threads
//! that came and went, which summing `/proc/<pid>/task/*` would miss. Memory
//! is the sum of `VmRSS` (and of `Pss`, which does not count nginx's
//! fork-shared pages twice) over the cgroup's processes: cgroup v2 memory
//! accounting is not available on hybrid hosts.
//!
//! A [`Daemon`] is started in the foreground (never as a system service),
//! inside a network namespace of the benchmark, pinned to the CPUs given,
//! with its config and log files in the run's temporary directory. On drop it
//! gets SIGTERM (nginx and haproxy then stop their workers), then whatever is
//! still in its cgroup, i.e. processes it forked, gets SIGKILL by PID.

use std::{
    cell::RefCell,
    fs::File,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context, bail};
use detour_tests::{Cgroup, cmd::Proc, netns::Netns};

/// A child cgroup whose processes' CPU time and memory are measured.
#[derive(Debug)]
pub struct Accounting {
    cgroup: Cgroup,
}

/// CPU time of a cgroup (`cpu.stat`), in microseconds; with the kernel's
/// tick-based accounting, softirq work (much of the TCP stack) is charged to
/// whichever task it interrupted or ran in.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTime {
    pub total_us: u64,
    pub user_us: u64,
    pub system_us: u64,
}

impl CpuTime {
    /// `self - earlier`.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            total_us: self.total_us.saturating_sub(earlier.total_us),
            user_us: self.user_us.saturating_sub(earlier.user_us),
            system_us: self.system_us.saturating_sub(earlier.system_us),
        }
    }
}

/// Memory of a process tree, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub rss_kib: u64,
    pub pss_kib: u64,
}

impl Accounting {
    pub fn new(name: &str) -> Self {
        Self {
            cgroup: Cgroup::new(&detour_tests::unique_name(&format!(
                "detour-bench-http-{name}-"
            ))),
        }
    }

    pub fn cgroup(&self) -> &Cgroup {
        &self.cgroup
    }

    /// Moves a running process (all its threads) into the cgroup.
    pub fn adopt(&self, pid: u32) -> anyhow::Result<()> {
        let procs = self.cgroup.path().join("cgroup.procs");
        std::fs::write(&procs, pid.to_string())
            .with_context(|| format!("cannot move {pid} into {}", procs.display()))
    }

    /// CPU time used by the cgroup's processes so far.
    pub fn cpu(&self) -> anyhow::Result<CpuTime> {
        let path = self.cgroup.path().join("cpu.stat");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let field = |name: &str| -> anyhow::Result<u64> {
            text.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
                .with_context(|| format!("no {name} in {}", path.display()))?
                .trim()
                .parse()
                .with_context(|| format!("bad {name} in {}", path.display()))
        };
        Ok(CpuTime {
            total_us: field("usage_usec")?,
            user_us: field("user_usec")?,
            system_us: field("system_usec")?,
        })
    }

    pub fn pids(&self) -> Vec<u32> {
        std::fs::read_to_string(self.cgroup.path().join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.trim().parse().ok())
            .collect()
    }

    /// `VmRSS` and `Pss` summed over the cgroup's processes.
    pub fn memory(&self) -> anyhow::Result<Memory> {
        let pids = self.pids();
        if pids.is_empty() {
            bail!("no process in {}", self.cgroup.path().display());
        }
        let mut memory = Memory::default();
        for pid in pids {
            memory.rss_kib += kib_field(&format!("/proc/{pid}/status"), "VmRSS:");
            memory.pss_kib += kib_field(&format!("/proc/{pid}/smaps_rollup"), "Pss:");
        }
        Ok(memory)
    }

    /// SIGKILL, by PID, to every process left in the cgroup (all of them
    /// started by the benchmark or forked by what it started).
    fn kill_remaining(&self) {
        for pid in self.pids() {
            if let Ok(pid) = i32::try_from(pid) {
                // SAFETY: kill(2) on a process of a cgroup this run created.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// A `Name:   1234 kB` field of a /proc file; 0 when absent (a process
/// that just exited).
fn kib_field(path: &str, name: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A foreground server process (and its children), in a network namespace
/// and in its own [`Accounting`] cgroup.
#[derive(Debug)]
pub struct Daemon {
    name: String,
    log: PathBuf,
    // Drop order: the process, then the cgroup it lived in. In a RefCell so
    // that liveness checks need no exclusive borrow.
    proc: RefCell<Proc>,
    acct: Accounting,
}

impl Daemon {
    /// Starts `program args` in `netns`, pinned by `pin` (a `taskset`
    /// prefix, or nothing), in a new cgroup; output goes to `log`.
    pub fn spawn(
        name: &str,
        netns: &Netns,
        pin: &[String],
        program: &Path,
        args: &[String],
        log: &Path,
    ) -> anyhow::Result<Self> {
        let acct = Accounting::new(name);
        let out = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        let child = Command::new("nsenter")
            .arg(format!("--net={}", netns.path()))
            .arg("--")
            .args(pin)
            .args(["sh", "-c", &acct.cgroup().enter_script(), "sh"])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        Ok(Self {
            name: name.to_owned(),
            log: log.to_owned(),
            proc: RefCell::new(Proc::new(child)),
            acct,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn acct(&self) -> &Accounting {
        &self.acct
    }

    /// Fails, with its log, if the main process has exited.
    pub fn check_alive(&self) -> anyhow::Result<()> {
        let status = self.proc.borrow_mut().try_wait();
        if let Some(status) = status {
            bail!(
                "{} exited ({status}):\n{}",
                self.name,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        Ok(())
    }

    /// The last lines of its log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let proc = self.proc.get_mut();
        proc.signal(libc::SIGTERM);
        let _ = proc.wait_timeout(Duration::from_secs(3));
        self.acct.kill_remaining();
    }
}

/// A temporary directory for configs, scripts and logs; removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(detour_tests::unique_name("detour-bench-http-"));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `name` in the directory and returns its path.
    pub fn write(&self, name: &str, content: &str) -> anyhow::Result<PathBuf> {
        let path = self.0.join(name);
        std::fs::write(&path, content)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
