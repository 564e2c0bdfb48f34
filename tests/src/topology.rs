//! A node in miniature: a "node" network namespace holding a bridge, and one
//! namespace per pod attached to it by a veth pair. Pods get IPv4 and IPv6
//! addresses on one subnet; the node answers at `.1` / `::1` of it and routes
//! service VIPs to the pod that owns them (standing in for kube-proxy).
//!
//! Every topology uses the same addresses: they live only inside namespaces
//! the topology creates, so topologies never see each other.
//!
//! ```no_run
//! let net = detour_tests::Topology::builder("dt").pod("client").pod("server").vip("server", "10.96.0.10").build();
//! ```

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    process::{Command, Stdio},
};

use crate::{
    cgroup::Cgroup,
    cmd::{self, Proc},
    netns::Netns,
    unique_name,
};

pub const NODE_IP4: Ipv4Addr = Ipv4Addr::new(10, 248, 0, 1);
pub const NODE_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x248, 0, 0, 0, 0, 0, 1);

#[derive(Debug)]
pub struct TopologyBuilder {
    base: String,
    pods: Vec<String>,
    vips: Vec<(String, IpAddr)>,
}

impl TopologyBuilder {
    /// Adds a pod namespace.
    pub fn pod(mut self, name: &str) -> Self {
        self.pods.push(name.to_owned());
        self
    }

    /// Gives `pod` an extra address that the node routes to it, as a Service
    /// VIP would be after kube-proxy's DNAT.
    pub fn vip(mut self, pod: &str, vip: &str) -> Self {
        let ip = vip.parse().unwrap_or_else(|e| panic!("bad VIP {vip}: {e}"));
        self.vips.push((pod.to_owned(), ip));
        self
    }

    /// The namespaces `build` will create, so that a caller can clean them
    /// up even if it is interrupted half way.
    pub fn namespace_names(&self) -> Vec<String> {
        std::iter::once(format!("{}-node", self.base))
            .chain(self.pods.iter().map(|pod| format!("{}-{pod}", self.base)))
            .collect()
    }

    pub fn build(self) -> Topology {
        let base = self.base;
        let node = Netns::new(&format!("{base}-node"));
        node.sysctl("net.ipv4.ip_forward=1");
        node.sysctl("net.ipv6.conf.all.forwarding=1");
        node.ip(&["link", "add", "br0", "type", "bridge"]);
        // A fixed address: a bridge without one takes the lowest of its
        // ports' and changes it when that port goes, and the pods' ARP
        // entries for the node (the proxy's address) would go stale for
        // seconds each time a pod is deleted (as CNI bridges do, set it).
        node.ip(&["link", "set", "br0", "address", "02:de:70:00:00:01"]);
        node.ip(&["addr", "add", &format!("{NODE_IP4}/24"), "dev", "br0"]);
        node.ip(&[
            "addr",
            "add",
            &format!("{NODE_IP6}/64"),
            "dev",
            "br0",
            "nodad",
        ]);
        node.ip(&["link", "set", "br0", "up"]);

        let mut pods = Vec::new();
        for (index, name) in self.pods.iter().enumerate() {
            let host = u8::try_from(index + 2).expect("fewer than 250 pods");
            pods.push(attach_pod(
                node.name(),
                &format!("{base}-{name}"),
                name,
                host,
            ));
        }
        for (pod_name, vip) in &self.vips {
            let pod = pods
                .iter()
                .find(|p| &p.name == pod_name)
                .unwrap_or_else(|| panic!("VIP for unknown pod {pod_name}"));
            let (prefix, via) = match vip {
                IpAddr::V4(_) => ("32", pod.ip4.to_string()),
                IpAddr::V6(_) => ("128", pod.ip6.to_string()),
            };
            pod.netns
                .ip(&["addr", "add", &format!("{vip}/{prefix}"), "dev", "lo"]);
            node.ip(&["route", "add", &format!("{vip}/{prefix}"), "via", &via]);
        }
        Topology { pods, node }
    }
}

/// Creates namespace `netns_name` for pod `name`, joined to the node's
/// bridge by a veth pair, at host number `host` of the node's subnets
/// (`10.248.0.<host>`, `fd00:248::<host>`). Builders use 2 and up; pods
/// made later (the control plane's node simulator) use 100 and up.
pub fn attach_pod(node: &str, netns_name: &str, name: &str, host: u8) -> Pod {
    let node_ip = |args: &[&str]| {
        let mut full = vec!["-n", node];
        full.extend_from_slice(args);
        cmd::run("ip", &full)
    };
    let netns = Netns::new(netns_name);
    netns.sysctl("net.ipv6.conf.all.accept_dad=0");
    netns.sysctl("net.ipv6.conf.default.accept_dad=0");
    // Interface names are limited to 15 bytes: name the node side by host.
    let peer = format!("veth{host}");
    node_ip(&[
        "link",
        "add",
        &peer,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        netns.name(),
    ]);
    node_ip(&["link", "set", &peer, "master", "br0", "up"]);
    let ip4 = Ipv4Addr::new(10, 248, 0, host);
    let ip6 = Ipv6Addr::new(0xfd00, 0x248, 0, 0, 0, 0, 0, u16::from(host));
    netns.ip(&["addr", "add", &format!("{ip4}/24"), "dev", "eth0"]);
    netns.ip(&["addr", "add", &format!("{ip6}/64"), "dev", "eth0", "nodad"]);
    netns.ip(&["link", "set", "eth0", "up"]);
    netns.ip(&["route", "add", "default", "via", &NODE_IP4.to_string()]);
    netns.ip(&[
        "-6",
        "route",
        "add",
        "default",
        "via",
        &NODE_IP6.to_string(),
    ]);
    Pod {
        name: name.to_owned(),
        netns,
        ip4,
        ip6,
    }
}

/// Field order matters for drop: pods go before the node.
#[derive(Debug)]
pub struct Topology {
    pods: Vec<Pod>,
    node: Netns,
}

impl Topology {
    /// Starts a topology whose namespace names begin with `prefix`.
    pub fn builder(prefix: &str) -> TopologyBuilder {
        TopologyBuilder {
            base: unique_name(prefix),
            pods: Vec::new(),
            vips: Vec::new(),
        }
    }

    pub fn node(&self) -> &Netns {
        &self.node
    }

    /// The prefix of this topology's namespace names.
    pub fn base(&self) -> String {
        self.node
            .name()
            .strip_suffix("-node")
            .unwrap_or(self.node.name())
            .to_owned()
    }

    pub fn pod(&self, name: &str) -> &Pod {
        self.pods
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no pod {name}"))
    }
}

#[derive(Debug)]
pub struct Pod {
    pub name: String,
    pub netns: Netns,
    pub ip4: Ipv4Addr,
    pub ip6: Ipv6Addr,
}

impl Pod {
    /// Runs a command in the pod, outside any test cgroup.
    pub fn exec(&self, program: &str, args: &[&str]) -> std::process::Output {
        self.netns.exec(program, args)
    }

    /// Runs a command in the pod, as a process of `cgroup`.
    pub fn exec_in(&self, cgroup: &Cgroup, program: &str, args: &[&str]) -> std::process::Output {
        let net = format!("--net={}", self.netns.path());
        let script = cgroup.enter_script();
        let mut full = vec![
            net.as_str(),
            "--",
            "sh",
            "-c",
            script.as_str(),
            "sh",
            program,
        ];
        full.extend_from_slice(args);
        cmd::output("nsenter", &full)
    }

    /// Starts a command in the pod, as a process of `cgroup`, with its
    /// standard output piped (the caller reads it while it runs).
    pub fn spawn_in(&self, cgroup: &Cgroup, program: &str, args: &[&str]) -> std::process::Child {
        let net = format!("--net={}", self.netns.path());
        let script = cgroup.enter_script();
        Command::new("nsenter")
            .args([
                net.as_str(),
                "--",
                "sh",
                "-c",
                script.as_str(),
                "sh",
                program,
            ])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"))
    }

    /// Runs a command in the pod, as a process of `cgroup`, with `input` on
    /// its standard input.
    pub fn exec_in_with_input(
        &self,
        cgroup: &Cgroup,
        program: &str,
        args: &[&str],
        input: &[u8],
    ) -> std::process::Output {
        use std::io::Write;
        let net = format!("--net={}", self.netns.path());
        let script = cgroup.enter_script();
        let mut child = Command::new("nsenter")
            .args([
                net.as_str(),
                "--",
                "sh",
                "-c",
                script.as_str(),
                "sh",
                program,
            ])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(input).expect("write stdin");
        }
        child.wait_with_output().expect("wait for client")
    }

    /// Starts the echo server (`tests/servers/echo.py`) on `port` of every
    /// address of the pod, and waits until it listens.
    pub fn echo_server(&self, port: u16) -> Proc {
        self.start_echo(port, None)
    }

    /// As [`Pod::echo_server`], logging every request it receives to the
    /// returned file (one `METHOD PATH` line each).
    pub fn logged_echo_server(&self, port: u16) -> (Proc, RequestLog) {
        let log = RequestLog(
            std::env::temp_dir().join(unique_name(&format!("detour-{}-requests-", self.name))),
        );
        std::fs::write(&log.0, "").expect("create request log");
        (self.start_echo(port, Some(&log.0)), log)
    }

    /// Starts `tests/servers/faulty.py`: slow, hanging and resetting paths.
    pub fn faulty_server(&self, port: u16) -> Proc {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/servers/faulty.py");
        self.start_script(script, port, None)
    }

    /// Starts `tests/servers/h2_inspect.py`, an h2c server that answers each
    /// request with the request exactly as it arrived (JSON).
    pub fn h2_inspect_server(&self, port: u16) -> Proc {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/servers/h2_inspect.py");
        self.start_script(script, port, None)
    }

    /// Starts `tests/servers/banner.py`, a server that speaks first.
    pub fn banner_server(&self, port: u16) -> Proc {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/servers/banner.py");
        self.start_script(script, port, None)
    }

    /// Starts `tests/servers/grpc_server.py` (service `detour.test.Echo`) on
    /// `port`, logging each call it receives (`METHOD served_by=NAME
    /// key=...`) and each cancellation it sees (`cancelled METHOD`).
    pub fn grpc_server(&self, port: u16) -> (Proc, RequestLog) {
        self.grpc_server_with(port, &[])
    }

    /// As [`Pod::grpc_server`], with environment variables for the server
    /// (`GRPC_MAX_STREAMS=1`: advertise `SETTINGS_MAX_CONCURRENT_STREAMS` 1).
    pub fn grpc_server_with(&self, port: u16, env: &[(&str, &str)]) -> (Proc, RequestLog) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/servers/grpc_server.py");
        let log = RequestLog(
            std::env::temp_dir().join(unique_name(&format!("detour-{}-calls-", self.name))),
        );
        std::fs::write(&log.0, "").expect("create call log");
        let proc = self.start_script_with(script, port, Some(&log.0), env);
        (proc, log)
    }

    /// Starts `nghttpd`, an h2c (prior knowledge) file server, on `port`,
    /// serving `/who` with the pod's name and a newline. Its directory is
    /// removed when the returned guard drops.
    pub fn h2c_file_server(&self, port: u16) -> (Proc, TempDir) {
        let dir = TempDir::new(&format!("detour-{}-www-", self.name));
        std::fs::write(dir.0.join("who"), format!("{}\n", self.name)).expect("write /who");
        let child = Command::new("nsenter")
            .args([&format!("--net={}", self.netns.path()), "--", "nghttpd"])
            .args(["--no-tls", "-d"])
            .arg(&dir.0)
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start nghttpd: {e}"));
        let proc = Proc::new(child);
        self.wait_listening(port);
        (proc, dir)
    }

    /// Waits (up to 5 s) until something listens on TCP `port` in the pod.
    fn wait_listening(&self, port: u16) {
        let filter = format!("( sport = :{port} )");
        for _ in 0..100 {
            let output = self.netns.exec("ss", &["-Htln", &filter]);
            if !output.stdout.is_empty() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("nothing listens on port {port} in {}", self.name);
    }

    fn start_echo(&self, port: u16, log: Option<&std::path::Path>) -> Proc {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/servers/echo.py");
        self.start_script(script, port, log)
    }

    fn start_script(&self, script: &str, port: u16, log: Option<&std::path::Path>) -> Proc {
        self.start_script_with(script, port, log, &[])
    }

    fn start_script_with(
        &self,
        script: &str,
        port: u16,
        log: Option<&std::path::Path>,
        env: &[(&str, &str)],
    ) -> Proc {
        let mut command = Command::new("nsenter");
        command.envs(env.iter().copied());
        command.args([
            &format!("--net={}", self.netns.path()),
            "--",
            "python3",
            script,
            &port.to_string(),
            &self.name,
        ]);
        if let Some(log) = log {
            command.arg(log);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {script}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let proc = Proc::new(child);
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
            .expect("echo server output");
        assert!(
            line.starts_with("listening"),
            "echo server did not start: {line:?}"
        );
        proc
    }
}

/// The requests an echo server received; removed on drop.
#[derive(Debug)]
pub struct RequestLog(pub std::path::PathBuf);

impl RequestLog {
    /// Every `METHOD PATH` line so far.
    pub fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.0)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for RequestLog {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A directory removed on drop.
#[derive(Debug)]
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let dir = std::env::temp_dir().join(unique_name(prefix));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
