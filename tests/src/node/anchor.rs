//! The real node's own namespaces: one mount and one network namespace,
//! held by an anchor process (`unshare ... sleep infinity`), which every
//! node component joins (`nsenter --target PID --mount --net`).
//!
//! Why: this machine's mounts are private, so a pod's `HostToContainer`
//! mount propagation is refused unless the node's root is a shared mount;
//! and kube-proxy's iptables rules, the CNI bridge, container overlays and
//! the node's `/run` must never touch the machine CI shares. Inside, the
//! root is made `rshared`, `/run` and `/var/log` are fresh tmpfs, and
//! bpffs is mounted at `/sys/fs/bpf`. None of it is seen outside, and all
//! of it goes when the anchor dies. `/sys/fs/cgroup` stays the machine's:
//! pods' cgroups are real ones (see `host`).
//!
//! Network: the node's IP sits on a veth whose peer is in the machine's
//! namespace ([`HOST_IP`]), so that `kubectl` from the machine reaches the
//! API server at the node IP (this kernel has no `dummy` link type).
//! Nothing is routed beyond that pair: pods reach each other, the node and
//! Service addresses, never another address.

use std::{path::Path, process::Command, time::Duration};

use super::{HOST_IP, HOST_LINK, NODE_IP};
use crate::{cmd::Proc, controlplane::SERVICE_CIDR};

#[derive(Debug)]
pub struct Anchor {
    proc: Proc,
}

impl Anchor {
    /// Makes the namespaces, their mounts and network.
    pub fn start() -> Self {
        let child = Command::new("unshare")
            .args(["--mount", "--net", "--propagation", "private", "--"])
            .args(["sleep", "infinity"])
            .spawn()
            .expect("unshare for the node's namespaces");
        let anchor = Self {
            proc: Proc::new(child),
        };
        anchor.wait_unshared();
        anchor.run(
            "sh",
            &[
                "-ec",
                "mount --make-rshared /
                 mount -t tmpfs -o mode=0755 node-run /run
                 mkdir -p /run/netns /run/detour
                 mount -t tmpfs -o mode=0755 node-log /var/log
                 mount -t bpf -o mode=0700 bpf /sys/fs/bpf
                 ip link set lo up
                 sysctl -qw net.ipv4.ip_forward=1
                 sysctl -qw net.bridge.bridge-nf-call-iptables=1
                 sysctl -qw net.bridge.bridge-nf-call-ip6tables=1",
            ],
        );
        crate::cmd::quiet("ip", &["link", "del", HOST_LINK]);
        crate::cmd::run(
            "ip",
            &[
                "link",
                "add",
                HOST_LINK,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &anchor.pid().to_string(),
            ],
        );
        crate::cmd::run(
            "ip",
            &["addr", "add", &format!("{HOST_IP}/24"), "dev", HOST_LINK],
        );
        crate::cmd::run("ip", &["link", "set", HOST_LINK, "up"]);
        anchor.run(
            "sh",
            &[
                "-ec",
                &format!(
                    "ip addr add {NODE_IP}/24 dev eth0
                     ip link set eth0 up
                     ip route add {SERVICE_CIDR} dev eth0 src {NODE_IP}"
                ),
            ],
        );
        anchor
    }

    /// The anchor's PID (the namespaces' holder).
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// `nsenter` options that join the node's namespaces.
    pub fn enter(&self) -> Vec<String> {
        vec![
            format!("--target={}", self.pid()),
            "--mount".into(),
            "--net".into(),
        ]
    }

    /// The inode of the node's mount namespace.
    pub fn mount_namespace(&self) -> Option<u64> {
        namespace_inode(self.pid(), "mnt")
    }

    /// Runs `program` in the node's namespaces; panics with its output if it
    /// fails.
    pub fn run(&self, program: &str, args: &[&str]) -> String {
        let mut full: Vec<String> = self.enter();
        full.push("--".into());
        full.push(program.into());
        full.extend(args.iter().map(|a| (*a).to_owned()));
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        crate::cmd::run("nsenter", &refs)
    }

    /// Waits until `unshare` has made the namespaces and run `sleep`.
    fn wait_unshared(&self) {
        let ours = namespace_inode(std::process::id(), "net");
        for _ in 0..200 {
            let theirs = namespace_inode(self.pid(), "net");
            if theirs.is_some() && theirs != ours {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("unshare did not make the node's namespaces");
    }

    /// Kills every process in the node's mount namespace but the anchor:
    /// the components, and what they left running (containerd's shims).
    pub fn kill_everything_inside(&self) {
        let Some(inside) = self.mount_namespace() else {
            return;
        };
        for _ in 0..3 {
            let mut killed = 0;
            for pid in pids() {
                if pid != self.pid() && namespace_inode(pid, "mnt") == Some(inside) {
                    // SAFETY: kill(2) of a process in the node's own mount
                    // namespace, which only this node's components create.
                    unsafe { libc::kill(i32::try_from(pid).unwrap_or(0), libc::SIGKILL) };
                    killed += 1;
                }
            }
            if killed == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Anchor {
    fn drop(&mut self) {
        // The namespaces go with their last process; the machine's end of
        // the veth goes with its peer.
        self.proc.signal(libc::SIGKILL);
        let _ = self.proc.wait_timeout(Duration::from_secs(5));
        crate::cmd::quiet("ip", &["link", "del", HOST_LINK]);
    }
}

fn namespace_inode(pid: u32, kind: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(
        Path::new("/proc")
            .join(pid.to_string())
            .join("ns")
            .join(kind),
    )
    .ok()
    .map(|m| m.ino())
}

fn pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}
