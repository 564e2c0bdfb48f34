//! The real `detour agent`, started in the node namespace of a topology,
//! with routes from a file or (`kubernetes`) from a Kubernetes API server.

mod builder;

use std::{
    os::fd::{AsRawFd, FromRawFd},
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use crate::cmd::Proc;

pub use builder::AgentBuilder;

pub const PROXY_PORT: u16 = 15001;
pub const METRICS_ADDR: &str = "127.0.0.1:15020";

#[derive(Debug)]
pub struct Agent {
    proc: Proc,
    node_path: String,
    metrics_addr: String,
    dir: PathBuf,
    log: PathBuf,
    routes: PathBuf,
    admin_socket: PathBuf,
    handover_socket: PathBuf,
    bpffs: Option<Bpffs>,
    pin_dir: PathBuf,
}

impl Agent {
    /// The agent's admin socket (for `detour --socket`).
    pub fn admin_socket(&self) -> &std::path::Path {
        &self.admin_socket
    }

    /// `detour ARGS` against this agent's admin socket, as a user at the
    /// node runs it.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(crate::detour_bin())
            .arg("--socket")
            .arg(&self.admin_socket)
            .args(args)
            .output()
            .expect("run detour")
    }

    /// `detour ARGS -o json` against this agent: its JSON output.
    pub fn cli_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let output = self.cli(&all);
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "detour {args:?}: not JSON ({e}): {}",
                String::from_utf8_lossy(&output.stderr)
            )
        })
    }

    /// Where the agent pins its maps (for `detour bpf --pin-dir`).
    pub fn pin_dir(&self) -> PathBuf {
        self.pin_dir.clone()
    }

    /// Replaces the routes file the way a careful operator (or a ConfigMap
    /// mount) does: write a new file, then rename it over the old one.
    pub fn write_routes(&self, yaml: &str) {
        let next = self.dir.join("routes.yaml.next");
        std::fs::write(&next, yaml).expect("write routes");
        std::fs::rename(&next, &self.routes).expect("replace routes");
    }

    /// How many times the routes file is opened (by anyone) in `window`:
    /// an inotify watch on the file for that long.
    pub fn routes_file_opens(&self, window: Duration) -> usize {
        let path = std::ffi::CString::new(self.routes.as_os_str().as_encoded_bytes())
            .expect("routes path");
        // SAFETY: plain system calls on a descriptor this function owns.
        unsafe {
            let fd = libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC);
            assert!(fd >= 0, "inotify_init1");
            let fd = std::os::fd::OwnedFd::from_raw_fd(fd);
            let watch = libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), libc::IN_OPEN);
            assert!(watch >= 0, "inotify_add_watch");
            // Read as they come: the kernel merges an event into an
            // identical one still unread.
            let (mut opens, mut buf, deadline) = (0, [0u8; 4096], Instant::now() + window);
            while Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
                let n = libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len());
                // Events on a file carry no name: each is exactly one header.
                opens +=
                    usize::try_from(n).unwrap_or(0) / std::mem::size_of::<libc::inotify_event>();
            }
            opens
        }
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `/readyz` answers `ready`; panics with the log if the
    /// agent exits or is not ready within 20 s.
    pub fn wait_ready(&mut self) {
        self.wait_until_ready(|agent| {
            agent
                .http_get("/readyz")
                .is_some_and(|body| body.starts_with("ready"))
        });
    }

    /// Waits until the agent's own admin socket says it is ready; panics
    /// with the log if it exits or is not ready within 20 s. For a successor,
    /// whose metrics socket is shared with its predecessor until that exits.
    pub fn wait_admin_ready(&mut self) {
        self.wait_until_ready(|agent| {
            Command::new("curl")
                .args(["-sf", "-m", "2", "--unix-socket"])
                .arg(&agent.admin_socket)
                .arg("http://detour/status")
                .output()
                .ok()
                .filter(|o| o.status.success())
                .is_some_and(|o| String::from_utf8_lossy(&o.stdout).contains("\"ready\":true"))
        });
    }

    fn wait_until_ready(&mut self, ready: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.proc.try_wait() {
                panic!("detour agent exited at start ({status}):\n{}", self.logs());
            }
            if ready(self) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "detour agent not ready after 20s:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `detour flows -o json`, asked of this agent's admin socket.
    pub fn flows(&self) -> serde_json::Value {
        let output = Command::new(crate::detour_bin())
            .arg("--socket")
            .arg(&self.admin_socket)
            .args(["flows", "-o", "json"])
            .output()
            .expect("run detour flows");
        assert!(output.status.success(), "detour flows: {output:?}");
        serde_json::from_slice(&output.stdout).expect("flows JSON")
    }

    /// Waits up to 10 s for a metric sample to read `value`.
    pub fn wait_for_metric(&self, sample: &str, value: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.metric(sample) != value {
            assert!(
                Instant::now() < deadline,
                "{sample} never became {value} (is {}):\n{}",
                self.metric(sample),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// GETs a path of the metrics endpoint (from inside the node namespace).
    pub fn http_get(&self, path: &str) -> Option<String> {
        let url = format!("http://{}{path}", self.metrics_addr);
        let output = Command::new("nsenter")
            .args([
                &format!("--net={}", self.node_path),
                "--",
                "curl",
                "-sf",
                "-m",
                "2",
                &url,
            ])
            .output()
            .ok()?;
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The HTTP status of a path of the metrics endpoint (e.g. 503 from
    /// `/readyz` before the agent is ready); `None` if nothing answers.
    pub fn http_status(&self, path: &str) -> Option<u16> {
        let url = format!("http://{}{path}", self.metrics_addr);
        let output = Command::new("nsenter")
            .args([
                &format!("--net={}", self.node_path),
                "--",
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-m",
                "2",
                &url,
            ])
            .output()
            .ok()?;
        let code: u16 = String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .ok()?;
        (code != 0).then_some(code)
    }

    /// Whether the agent process is still running.
    pub fn is_running(&mut self) -> bool {
        self.proc.try_wait().is_none()
    }

    /// The value of one sample line of `/metrics`, e.g.
    /// `detour_bpf_events_total{event="redirected"}`; 0 when absent.
    pub fn metric(&self, sample: &str) -> u64 {
        let metrics = self
            .http_get("/metrics")
            .unwrap_or_else(|| panic!("no metrics:\n{}", self.logs()));
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
            .map_or(0, |value| {
                value
                    .trim()
                    .parse()
                    .unwrap_or_else(|e| panic!("{sample}: {e}"))
            })
    }

    /// `detour_bpf_events_total{event=...}`.
    pub fn bpf_event(&self, event: &str) -> u64 {
        self.metric(&format!("detour_bpf_events_total{{event=\"{event}\"}}"))
    }

    /// SIGSTOP, returning once every thread of the agent is stopped. The
    /// kernel still completes handshakes into the proxy's accept backlog;
    /// nothing is accepted until [`Agent::resume`].
    pub fn pause(&self) {
        self.proc.signal(libc::SIGSTOP);
        let tasks = PathBuf::from(format!("/proc/{}/task", self.pid()));
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let stopped = std::fs::read_dir(&tasks)
                .expect("agent tasks")
                .filter_map(Result::ok)
                .all(|task| {
                    // The state follows the parenthesised command name.
                    std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
                        stat.rsplit(") ")
                            .next()
                            .is_some_and(|rest| rest.starts_with('T'))
                    })
                });
            if stopped {
                return;
            }
            assert!(Instant::now() < deadline, "agent not stopped after SIGSTOP");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGCONT after [`Agent::pause`].
    pub fn resume(&self) {
        self.proc.signal(libc::SIGCONT);
    }

    /// SIGKILL, as the OOM killer would.
    pub fn kill9(&mut self) {
        self.proc.signal(libc::SIGKILL);
        self.proc
            .wait_timeout(Duration::from_secs(5))
            .expect("agent gone after SIGKILL");
    }

    /// SIGTERM, and the exit status it ends with.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.proc.signal(libc::SIGTERM);
        self.proc
            .wait_timeout(Duration::from_secs(15))
            .unwrap_or_else(|| panic!("agent did not exit after SIGTERM:\n{}", self.logs()))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- detour agent log ---\n{}", self.logs());
        }
        // The agent must be gone before its bpffs is unmounted.
        self.proc.signal(libc::SIGKILL);
        let _ = self.proc.wait_timeout(Duration::from_secs(5));
        drop(self.bpffs.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A private bpf filesystem for one agent's pinned maps (bpffs mounts are
/// independent instances), unmounted on drop.
#[derive(Debug)]
pub struct Bpffs {
    pub path: PathBuf,
}

impl Bpffs {
    pub fn mount(path: &std::path::Path) -> Self {
        std::fs::create_dir_all(path).expect("bpffs mount point");
        crate::cmd::run("mount", &["-t", "bpf", "bpf", &path.display().to_string()]);
        Self {
            path: path.to_owned(),
        }
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        crate::cmd::quiet("umount", &[&self.path.display().to_string()]);
    }
}
