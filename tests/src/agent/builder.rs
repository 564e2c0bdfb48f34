//! How a test describes the agent it starts: routes or a Kubernetes API
//! server, addresses, flags, log filter, a predecessor to take over from;
//! and the command line and files that description becomes.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use super::{Agent, Bpffs, METRICS_ADDR, PROXY_PORT};
use crate::{
    cgroup::Cgroup,
    cmd::Proc,
    detour_bin,
    netns::Netns,
    topology::{NODE_IP4, NODE_IP6, Topology},
    unique_name,
};

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
    pin_dir: Option<PathBuf>,
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

    /// Pins under `other`'s pin directory, as a restarted agent on the
    /// same node does (`other` keeps the bpf filesystem mounted: drop it
    /// last).
    pub fn sharing_pin_dir(mut self, other: &Agent) -> Self {
        self.pin_dir = Some(other.pin_dir());
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
        let (bpffs, pin_dir) = match self.pin_dir {
            Some(pin_dir) => (None, pin_dir),
            None => {
                let bpffs = Bpffs::mount(&dir.join("bpffs"));
                let pin_dir = bpffs.path.join("detour");
                (Some(bpffs), pin_dir)
            }
        };
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
            pin_dir.display().to_string(),
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
            bpffs,
            pin_dir,
        }
    }
}

impl Agent {
    /// A description of an agent on `topology`'s node, attaching to `cgroup`.
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
            pin_dir: None,
        }
    }
}
