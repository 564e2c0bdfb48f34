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

pub use crate::servers::{RequestLog, TempDir};
use crate::{cgroup::Cgroup, cmd, netns::Netns, unique_name};

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
        self.command_in(cgroup, program, args)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"))
    }

    /// As [`Pod::spawn_in`], with its standard input piped too (the caller
    /// drives it while it runs).
    pub fn spawn_driven_in(
        &self,
        cgroup: &Cgroup,
        program: &str,
        args: &[&str],
    ) -> std::process::Child {
        self.command_in(cgroup, program, args)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"))
    }

    fn command_in(&self, cgroup: &Cgroup, program: &str, args: &[&str]) -> Command {
        let net = format!("--net={}", self.netns.path());
        let script = cgroup.enter_script();
        let mut command = Command::new("nsenter");
        command
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
            .stderr(Stdio::piped());
        command
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
}
