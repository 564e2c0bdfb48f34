//! A real one-node Kubernetes cluster on this machine, as users run detour:
//! the control plane ([`ControlPlane`]: etcd, kube-apiserver,
//! kube-controller-manager) plus kube-scheduler, containerd with runc, the
//! CNI bridge, the kubelet (registered Node, the machine's real cgroup
//! layout) and kube-proxy in iptables mode, every one a real process in the
//! node's own namespaces ([`anchor`]), with the images of
//! `$DETOUR_IMAGES` imported (built by `cargo xtask test`, never pulled).
//!
//! The guard undoes everything on drop, also when a test fails: it stops
//! the kubelet, kills the pods (their cgroups) and every process left in
//! the node's mount namespace (containerd's shims), removes the node's
//! cgroups, lets the namespaces go (mounts, iptables rules, bridge, veth),
//! puts back the machine-wide sysctls the kubelet changed, and deletes the
//! node's directory. One real node runs at a time ([`host::NodeLock`]).

pub mod anchor;
pub mod config;
pub mod host;
pub mod network_policy;
pub mod socket_lb;

use std::{
    path::{Path, PathBuf},
    process::Output,
    time::Duration,
};

use self::{
    anchor::Anchor,
    host::{NodeLock, SavedSysctls},
};
use crate::controlplane::{ControlPlane, PlaneSpec, tool};

/// The node's name (`kubectl get nodes`).
pub const NODE_NAME: &str = "detour-node";
/// The node's IP: the kubelet's, the API server's and detour's proxy's.
pub const NODE_IP: &str = "10.250.0.2";
/// The machine's end of the node's veth.
pub const HOST_IP: &str = "10.250.0.1";
/// The machine's end's link name.
pub const HOST_LINK: &str = "detour-node0";
/// Pod addresses (the CNI bridge's range).
pub const POD_CIDR: &str = "10.244.0.0/24";
/// The `kubernetes` Service's ClusterIP (first of the Service range).
pub const KUBERNETES_SERVICE_IP: &str = "10.96.0.1";
/// The directory of the image archives to import (`*.oci.tar`).
pub const IMAGES_ENV: &str = "DETOUR_IMAGES";
/// Set: the real-node tests are skipped (and `cargo xtask test` builds no
/// image). The only way they are.
pub const SKIP_ENV: &str = "DETOUR_SKIP_NODE_TESTS";

/// Whether a real-node test runs: `false` (skip, said) only when
/// [`SKIP_ENV`] or the root-tests opt-out is set; fails the test when it
/// cannot run here.
pub fn require_node() -> bool {
    if std::env::var_os(SKIP_ENV).is_some() {
        eprintln!("skipped: {SKIP_ENV} is set");
        return false;
    }
    if !crate::require_root() {
        return false;
    }
    for tool in ["containerd", "runc", "ctr", "iptables", "unshare"] {
        assert!(
            crate::cmd::which(tool).is_some(),
            "this test needs `{tool}` in PATH; run `cargo xtask setup`"
        );
    }
    true
}

/// Field order is drop order after [`Drop::drop`]: the control plane's
/// remaining processes are reaped before the namespaces go.
#[derive(Debug)]
pub struct KubeNode {
    pub plane: ControlPlane,
    anchor: Anchor,
    dir: PathBuf,
    /// The kubelet's cgroup roots (removed on drop, last).
    cgroups: host::NodeCgroups,
    sysctls: SavedSysctls,
    _lock: NodeLock,
}

impl KubeNode {
    /// Starts the node with the images in `$DETOUR_IMAGES`; returns once the
    /// Node is Ready and kube-proxy has programmed its first rules.
    pub fn start() -> Self {
        Self::start_with(true)
    }

    /// The node without kube-proxy: Service addresses are translated by
    /// nothing until a test attaches its own translation (as a cluster with
    /// Cilium's kube-proxy replacement has none but Cilium's).
    pub fn without_kube_proxy() -> Self {
        Self::start_with(false)
    }

    fn start_with(kube_proxy: bool) -> Self {
        let lock = NodeLock::acquire();
        let left = host::node_cgroups();
        assert!(
            left.is_empty(),
            "the real node's cgroups exist ({left:?}): a real node was left behind (`cargo \
             xtask cluster down` removes it)"
        );
        let sysctls = SavedSysctls::save();
        let cgroups = host::NodeCgroups::make();
        let anchor = Anchor::start();
        let plane = ControlPlane::start(PlaneSpec {
            enter: anchor.enter(),
            bind: "0.0.0.0".into(),
            advertise: NODE_IP.into(),
            extra_sans: vec![
                format!("IP:{NODE_IP}"),
                format!("IP:{KUBERNETES_SERVICE_IP}"),
            ],
            real_node: true,
        });
        let dir = plane.dir().join("node");
        std::fs::create_dir_all(dir.join("cni")).expect("node dir");
        let mut node = Self {
            plane,
            anchor,
            dir,
            cgroups,
            sysctls,
            _lock: lock,
        };
        node.start_runtime();
        node.import_images();
        node.plane.spawn_program(
            "kube-scheduler",
            &tool("kube-scheduler"),
            vec![
                format!("--kubeconfig={}", node.plane.admin_kubeconfig.display()),
                "--leader-elect=false".into(),
                "--v=1".into(),
            ],
        );
        node.start_kubelet();
        if kube_proxy {
            node.start_kube_proxy();
        }
        node
    }

    fn start_runtime(&mut self) {
        let config = self.dir.join("containerd.toml");
        std::fs::write(&config, config::containerd(&self.dir)).expect("containerd config");
        std::fs::write(
            self.dir.join("cni/10-detour-node.conflist"),
            config::cni(&self.dir),
        )
        .expect("CNI config");
        let containerd = crate::cmd::which("containerd").expect("containerd (cargo xtask setup)");
        self.plane.spawn_program(
            "containerd",
            &containerd,
            vec![format!("--config={}", config.display())],
        );
        self.plane
            .wait_for("containerd", Duration::from_secs(30), |plane| {
                plane
                    .in_node("test", &["-S", config::CONTAINERD_SOCKET])
                    .status
                    .success()
            });
    }

    /// Imports every `*.oci.tar` of `$DETOUR_IMAGES` into containerd's
    /// `k8s.io` namespace (where the kubelet looks).
    fn import_images(&self) {
        let dir = std::env::var_os(IMAGES_ENV).unwrap_or_else(|| {
            panic!("{IMAGES_ENV} is not set: run the node tests with `cargo xtask test`, which builds the images")
        });
        let mut archives: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{IMAGES_ENV}={}: {e}", Path::new(&dir).display()))
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().ends_with(".oci.tar"))
            .collect();
        archives.sort();
        assert!(!archives.is_empty(), "no *.oci.tar in {IMAGES_ENV}");
        for archive in archives {
            self.ctr(&["images", "import", &archive.display().to_string()]);
        }
    }

    /// `ctr` against the node's containerd, in its `k8s.io` namespace.
    pub fn ctr(&self, args: &[&str]) -> String {
        let mut full = vec!["--address", config::CONTAINERD_SOCKET, "-n", "k8s.io"];
        full.extend(args);
        self.anchor.run("ctr", &full)
    }

    fn start_kubelet(&mut self) {
        let certs = &self.plane.certs;
        let (cert, key) = (self.dir.join("kubelet.crt"), self.dir.join("kubelet.key"));
        certs.issue(
            &format!("/CN={NODE_NAME}"),
            &format!(
                "subjectAltName=IP:{NODE_IP},DNS:{NODE_NAME}\nextendedKeyUsage=serverAuth\n\
                 keyUsage=critical,digitalSignature,keyEncipherment\n"
            ),
            &key,
            &cert,
        );
        let config = self.dir.join("kubelet.yaml");
        std::fs::write(&config, config::kubelet(&certs.ca_cert, &cert, &key))
            .expect("kubelet config");
        let args = vec![
            format!("--config={}", config.display()),
            // The admin's credentials: a test cluster has no node bootstrap.
            format!("--kubeconfig={}", self.plane.admin_kubeconfig.display()),
            format!("--hostname-override={NODE_NAME}"),
            format!("--node-ip={NODE_IP}"),
            format!("--root-dir={}", self.dir.join("kubelet").display()),
            "--v=1".into(),
        ];
        self.plane.spawn_program("kubelet", &tool("kubelet"), args);
        self.plane
            .wait_for("the Node to be Ready", Duration::from_secs(90), |plane| {
                plane
                    .kubectl_output(&[
                        "get",
                        "node",
                        NODE_NAME,
                        "-o",
                        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                    ])
                    .stdout
                    == b"True"
            });
    }

    fn start_kube_proxy(&mut self) {
        let config = self.dir.join("kube-proxy.yaml");
        std::fs::write(&config, config::kube_proxy(&self.plane.admin_kubeconfig))
            .expect("kube-proxy config");
        self.plane.spawn_program(
            "kube-proxy",
            &tool("kube-proxy"),
            vec![format!("--config={}", config.display()), "--v=1".into()],
        );
        self.plane
            .wait_for("kube-proxy's rules", Duration::from_secs(60), |plane| {
                plane
                    .in_node("iptables", &["-t", "nat", "-S", "KUBE-SERVICES"])
                    .status
                    .success()
            });
    }

    /// `kubectl` as the admin; panics with its output if it fails.
    pub fn kubectl(&self, args: &[&str]) -> String {
        self.plane.kubectl(args)
    }

    /// `kubectl` as the admin, whatever happens.
    pub fn kubectl_output(&self, args: &[&str]) -> Output {
        self.plane.kubectl_output(args)
    }

    /// Runs `program` in the node's namespaces (as a `hostNetwork` pod or an
    /// operator on the node would).
    pub fn on_node(&self, program: &str, args: &[&str]) -> Output {
        self.plane.in_node(program, args)
    }

    /// The node's PID namespace anchor, for `nsenter`.
    pub fn anchor(&self) -> &Anchor {
        &self.anchor
    }

    /// The kubelet's cgroup root in the cgroup v2 hierarchy: the cgroup above
    /// `kubepods` (what a node-wide eBPF dataplane attaches to).
    pub fn cgroup_root(&self) -> &Path {
        &self.cgroups.unified
    }

    /// The cgroup v2 directory holding every pod: what the agent attaches to.
    pub fn kubepods(&self) -> PathBuf {
        self.cgroups.unified.join("kubepods")
    }
}

impl Drop for KubeNode {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- real node logs ---\n{}", self.plane.logs());
        }
        // No kubelet to start pods again, then no pods, then nothing of the
        // node's left running.
        self.plane.stop_component("kubelet");
        for cgroup in host::node_cgroups() {
            host::remove_cgroup_tree(&cgroup);
        }
        self.anchor.kill_everything_inside();
        self.plane.stop_components();
        for cgroup in host::node_cgroups() {
            host::remove_cgroup_tree(&cgroup);
        }
        for changed in self.sysctls.restore() {
            eprintln!("real node: restored {changed}");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
