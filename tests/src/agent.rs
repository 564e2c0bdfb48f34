//! The real `detour agent`, started in the node namespace of a topology,
//! with routes from a file or (`kubernetes`) from a Kubernetes API server.

use std::{
    fs::File,
    os::fd::{AsRawFd, FromRawFd},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::{
    cgroup::Cgroup,
    cmd::Proc,
    detour_bin,
    netns::Netns,
    topology::{NODE_IP4, NODE_IP6, Topology},
    unique_name,
};

pub const PROXY_PORT: u16 = 15001;
pub const METRICS_ADDR: &str = "127.0.0.1:15020";

#[derive(Debug)]
pub struct AgentBuilder<'a> {
    node: &'a Netns,
    cgroup: &'a Cgroup,
    routes: String,
    kubeconfig: Option<PathBuf>,
    proxy_addrs: Vec<String>,
    metrics_addr: String,
    in_cgroup: bool,
    extra_args: Vec<String>,
    log_filter: String,
    handover_socket: Option<PathBuf>,
    admin_socket: Option<PathBuf>,
}

impl<'a> AgentBuilder<'a> {
    /// Starts as `predecessor`'s successor (a hitless upgrade): it takes
    /// over `predecessor`'s sockets through its handover socket. The two
    /// share the proxy and metrics addresses; each has its own admin socket
    /// and pin directory.
    pub fn succeeding(mut self, predecessor: &Agent) -> Self {
        self.handover_socket = Some(predecessor.handover_socket.clone());
        self
    }

    /// Uses `other`'s admin socket path, as agents on one node do (the
    /// DaemonSet mounts one `/run/detour`).
    pub fn sharing_admin_socket(mut self, other: &Agent) -> Self {
        self.admin_socket = Some(other.admin_socket.clone());
        self
    }

    /// The routes file content.
    pub fn routes(mut self, yaml: &str) -> Self {
        yaml.clone_into(&mut self.routes);
        self
    }

    /// Takes routes from the Kubernetes API server that `kubeconfig` names
    /// (`--kubernetes`, with `KUBECONFIG` set) instead of a routes file.
    pub fn kubernetes(mut self, kubeconfig: &Path) -> Self {
        self.kubeconfig = Some(kubeconfig.to_owned());
        self
    }

    /// Replaces the default proxy addresses (the node's bridge IPv4 and IPv6).
    /// The metrics endpoint (default [`METRICS_ADDR`]): a second agent on
    /// the same node needs its own.
    pub fn metrics_addr(mut self, addr: &str) -> Self {
        addr.clone_into(&mut self.metrics_addr);
        self
    }

    pub fn proxy_addrs(mut self, addrs: &[&str]) -> Self {
        self.proxy_addrs = addrs.iter().map(|a| (*a).to_owned()).collect();
        self
    }

    /// Runs the agent itself as a process of the attached cgroup, as it is in
    /// a cluster (the agent pod lives under kubepods).
    pub fn inside_cgroup(mut self) -> Self {
        self.in_cgroup = true;
        self
    }

    /// Replaces the agent's log filter (`DETOUR_LOG`, default `debug`), e.g.
    /// `info` for benchmarks, where debug logs would be measured too.
    pub fn log_filter(mut self, filter: &str) -> Self {
        filter.clone_into(&mut self.log_filter);
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.extra_args.push(arg.to_owned());
        self
    }

    /// Starts the agent and waits until `/readyz` answers, or panics with its log.
    pub fn spawn(self) -> Agent {
        let mut agent = self.start();
        agent.wait_ready();
        agent
    }

    /// Starts the agent without waiting for it to be ready.
    pub fn start(self) -> Agent {
        let dir = std::env::temp_dir().join(unique_name("detour-agent-"));
        std::fs::create_dir_all(&dir).expect("agent temp dir");
        let routes = dir.join("routes.yaml");
        std::fs::write(&routes, &self.routes).expect("write routes");
        let log = dir.join("agent.log");
        let log_file = File::create(&log).expect("agent log");
        let bpffs = Bpffs::mount(&dir.join("bpffs"));
        let admin_socket = self
            .admin_socket
            .clone()
            .unwrap_or_else(|| dir.join("admin.sock"));
        let handover_socket = self
            .handover_socket
            .unwrap_or_else(|| dir.join("handover.sock"));

        let mut args: Vec<String> = vec![format!("--net={}", self.node.path()), "--".into()];
        if self.in_cgroup {
            args.extend([
                "sh".into(),
                "-c".into(),
                self.cgroup.enter_script(),
                "sh".into(),
            ]);
        }
        args.push(detour_bin().display().to_string());
        args.push("agent".into());
        match &self.kubeconfig {
            Some(_) => args.push("--kubernetes".into()),
            None => args.extend(["--routes".into(), routes.display().to_string()]),
        }
        args.extend([
            "--cgroup".into(),
            self.cgroup.path().display().to_string(),
            "--metrics-addr".into(),
            self.metrics_addr.clone(),
            "--admin-socket".into(),
            admin_socket.display().to_string(),
            "--handover-socket".into(),
            handover_socket.display().to_string(),
            "--pin-dir".into(),
            bpffs.path.join("detour").display().to_string(),
        ]);
        for addr in &self.proxy_addrs {
            args.extend(["--proxy-addr".into(), addr.clone()]);
        }
        args.extend(self.extra_args);
        let mut command = Command::new("nsenter");
        command.args(&args).env("DETOUR_LOG", &self.log_filter);
        if let Some(kubeconfig) = &self.kubeconfig {
            // The API server is on the node's loopback: never via a proxy.
            command.env("KUBECONFIG", kubeconfig);
            for proxy in ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"] {
                command.env_remove(proxy);
            }
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log fd"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start detour: {e}"));
        Agent {
            proc: Proc::new(child),
            node_path: self.node.path(),
            metrics_addr: self.metrics_addr,
            dir,
            log,
            routes,
            admin_socket,
            handover_socket,
            bpffs: Some(bpffs),
        }
    }
}

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
}

impl Agent {
    /// The agent's admin socket (for `detour --socket`).
    pub fn admin_socket(&self) -> &std::path::Path {
        &self.admin_socket
    }

    /// Where the agent pins its maps (for `detour bpf --pin-dir`).
    pub fn pin_dir(&self) -> PathBuf {
        self.bpffs
            .as_ref()
            .map_or_else(|| self.dir.join("bpffs"), |b| b.path.clone())
            .join("detour")
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

    pub fn builder<'a>(topology: &'a Topology, cgroup: &'a Cgroup) -> AgentBuilder<'a> {
        AgentBuilder {
            node: topology.node(),
            cgroup,
            routes: String::new(),
            kubeconfig: None,
            metrics_addr: METRICS_ADDR.to_owned(),
            proxy_addrs: vec![
                format!("{NODE_IP4}:{PROXY_PORT}"),
                format!("[{NODE_IP6}]:{PROXY_PORT}"),
            ],
            in_cgroup: false,
            extra_args: Vec::new(),
            log_filter: "debug".to_owned(),
            handover_socket: None,
            admin_socket: None,
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
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.proc.try_wait() {
                panic!("detour agent exited at start ({status}):\n{}", self.logs());
            }
            if self
                .http_get("/readyz")
                .is_some_and(|body| body.starts_with("ready"))
            {
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

    /// Waits until the agent's own admin socket says it is ready; panics
    /// with the log if it exits or is not ready within 20 s. For a successor,
    /// whose metrics socket is shared with its predecessor until that exits.
    pub fn wait_admin_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.proc.try_wait() {
                panic!("detour agent exited at start ({status}):\n{}", self.logs());
            }
            let status = Command::new("curl")
                .args(["-sf", "-m", "2", "--unix-socket"])
                .arg(&self.admin_socket)
                .arg("http://detour/status")
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
            if status.is_some_and(|s| s.contains("\"ready\":true")) {
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
