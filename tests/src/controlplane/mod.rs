//! A real Kubernetes control plane for one test: etcd, kube-apiserver and
//! kube-controller-manager, built from their Go modules by `cargo xtask
//! setup` (`DETOUR_K8S_TOOLS` names the directory), started in the test's
//! node network namespace on its loopback, with keys made for the test
//! ([`certs`]), RBAC authorization, and an admin kubeconfig.
//!
//! Every process and the data directory are behind this guard: a failing
//! test stops them, prints the end of each component's log, and removes the
//! directory.

mod certs;
mod containers;
mod faults;
mod host_image;
mod kubectl;
pub mod kubelet;
mod pod_status;

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

pub use certs::Certs;
use kubectl::write_kubeconfig;
use kubectl::write_kubeconfig_for;

use crate::{cmd::Proc, netns::Netns, topology::NODE_IP4, unique_name};

/// The directory of the built tools (etcd, kube-apiserver, ...).
pub const TOOLS_ENV: &str = "DETOUR_K8S_TOOLS";
/// Where the API server listens, in the node namespace.
pub const APISERVER: &str = "https://127.0.0.1:6443";
pub(super) const ETCD: &str = "http://127.0.0.1:2379";
/// The ClusterIP range the API server allocates Service addresses from.
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// The controllers the tests need, and nothing else.
const CONTROLLERS: &str = "endpointslice-controller,deployment-controller,replicaset-controller,\
statefulset-controller,persistentvolumeclaim-protection-controller,garbage-collector-controller,\
namespace-controller,serviceaccount-controller,serviceaccount-token-controller";
const LOG_TAIL: usize = 60;

/// The built tool `name`.
pub fn tool(name: &str) -> PathBuf {
    let dir = std::env::var_os(TOOLS_ENV).unwrap_or_else(|| {
        panic!(
            "{TOOLS_ENV} is not set: run the tests with `cargo xtask test`, which builds the \
             Kubernetes tools (or `export {TOOLS_ENV}=$(cargo xtask k8s-tools)`)"
        )
    });
    let path = Path::new(&dir).join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo xtask setup`",
        path.display()
    );
    path
}

/// One component: its process and its log.
#[derive(Debug)]
struct Component {
    name: &'static str,
    pub(super) proc: Proc,
    pub(super) log: PathBuf,
    pub(super) args: Vec<String>,
}

/// Where and how a control plane runs.
#[derive(Debug, Clone)]
pub struct PlaneSpec {
    /// `nsenter` options that put a component in the node's namespaces.
    pub enter: Vec<String>,
    /// The API server's `--bind-address`.
    pub bind: String,
    /// The API server's `--advertise-address` (the `kubernetes` Service's
    /// endpoint).
    pub advertise: String,
    /// Extra `subjectAltName` entries of the API server's certificate.
    pub extra_sans: Vec<String>,
    /// A real node's cluster: every default controller, the `kubernetes`
    /// Service's endpoints kept, kubelets reached by InternalIP with a
    /// client certificate. Otherwise only what the simulated node needs.
    pub real_node: bool,
}

#[derive(Debug)]
pub struct ControlPlane {
    dir: PathBuf,
    spec: PlaneSpec,
    pub certs: Certs,
    /// kubeconfig of a `system:masters` user.
    pub admin_kubeconfig: PathBuf,
    components: Vec<Component>,
}

impl ControlPlane {
    /// Starts etcd, the API server and the controller manager in `node`'s
    /// network namespace; returns once the API server is ready and the
    /// controllers have made the `default` namespace's ServiceAccount.
    pub fn start_in(node: &Netns) -> Self {
        Self::start(PlaneSpec {
            enter: vec![format!("--net={}", node.path())],
            bind: "127.0.0.1".into(),
            advertise: NODE_IP4.to_string(),
            extra_sans: Vec::new(),
            real_node: false,
        })
    }

    /// Starts the control plane as `spec` says.
    pub fn start(spec: PlaneSpec) -> Self {
        let dir = std::env::temp_dir().join(unique_name("detour-k8s-"));
        std::fs::create_dir_all(&dir).expect("control plane dir");
        let certs = Certs::generate(&dir, &spec.extra_sans);
        let admin_kubeconfig = dir.join("admin.kubeconfig");
        write_kubeconfig(
            &admin_kubeconfig,
            &certs.ca_cert,
            &format!(
                "client-certificate: {}\n    client-key: {}",
                certs.admin_cert.display(),
                certs.admin_key.display()
            ),
        );
        let mut plane = Self {
            dir,
            spec,
            certs,
            admin_kubeconfig,
            components: Vec::new(),
        };
        plane.spawn("etcd", plane.etcd_args());
        plane.wait_for("etcd", Duration::from_secs(30), |p| {
            p.in_node("curl", &["-sf", "-m", "1", &format!("{ETCD}/health")])
                .status
                .success()
        });
        plane.spawn("kube-apiserver", plane.apiserver_args());
        plane.wait_apiserver();
        plane.spawn("kube-controller-manager", plane.controller_manager_args());
        plane.wait_for("kube-controller-manager", Duration::from_secs(60), |p| {
            p.kubectl_output(&["get", "serviceaccount", "default", "-n", "default"])
                .status
                .success()
        });
        plane
    }

    fn etcd_args(&self) -> Vec<String> {
        let data = self.dir.join("etcd");
        vec![
            format!("--data-dir={}", data.display()),
            format!("--listen-client-urls={ETCD}"),
            format!("--advertise-client-urls={ETCD}"),
            "--listen-peer-urls=http://127.0.0.1:2380".into(),
            "--initial-advertise-peer-urls=http://127.0.0.1:2380".into(),
            "--initial-cluster=default=http://127.0.0.1:2380".into(),
            // A test cluster: durability is not the point, speed is.
            "--unsafe-no-fsync=true".into(),
            "--log-level=warn".into(),
        ]
    }

    fn apiserver_args(&self) -> Vec<String> {
        let c = &self.certs;
        let mut args = vec![
            format!("--etcd-servers={ETCD}"),
            format!("--bind-address={}", self.spec.bind),
            // The node's address (a loopback one is refused).
            format!("--advertise-address={}", self.spec.advertise),
            "--secure-port=6443".into(),
            format!("--cert-dir={}", self.dir.join("apiserver-certs").display()),
            format!("--tls-cert-file={}", c.serving_cert.display()),
            format!("--tls-private-key-file={}", c.serving_key.display()),
            format!("--client-ca-file={}", c.ca_cert.display()),
            format!(
                "--service-account-key-file={}",
                c.service_account_pub.display()
            ),
            format!(
                "--service-account-signing-key-file={}",
                c.service_account_key.display()
            ),
            format!("--service-account-issuer={APISERVER}"),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            "--authorization-mode=RBAC".into(),
            "--allow-privileged=true".into(),
            // No kubelets: nothing to reach them for.
            "--enable-priority-and-fairness=false".into(),
            "--v=1".into(),
        ];
        if self.spec.real_node {
            // `kubectl logs` and `exec` reach the kubelet at the node IP,
            // as a client it authorizes (the admin).
            args.extend([
                "--kubelet-preferred-address-types=InternalIP".into(),
                format!("--kubelet-certificate-authority={}", c.ca_cert.display()),
                format!("--kubelet-client-certificate={}", c.admin_cert.display()),
                format!("--kubelet-client-key={}", c.admin_key.display()),
            ]);
        } else {
            // Nothing maintains the `kubernetes` Service's endpoints with a
            // simulated node.
            args.push("--endpoint-reconciler-type=none".into());
        }
        args
    }

    fn controller_manager_args(&self) -> Vec<String> {
        let c = &self.certs;
        let controllers = if self.spec.real_node {
            "*"
        } else {
            CONTROLLERS
        };
        vec![
            format!("--kubeconfig={}", self.admin_kubeconfig.display()),
            format!("--controllers={controllers}"),
            format!(
                "--service-account-private-key-file={}",
                c.service_account_key.display()
            ),
            format!("--root-ca-file={}", c.ca_cert.display()),
            "--leader-elect=false".into(),
            "--secure-port=0".into(),
            "--v=1".into(),
        ]
    }

    fn spawn(&mut self, name: &'static str, args: Vec<String>) {
        self.spawn_program(name, &tool(name), args);
    }

    /// Starts `program` as component `name` in the node's namespaces; it is
    /// stopped, in reverse order of start, when the control plane is
    /// dropped (or by [`Self::stop_components`]).
    pub(crate) fn spawn_program(&mut self, name: &'static str, program: &Path, args: Vec<String>) {
        let log = self.dir.join(format!("{name}.log"));
        let proc = self.start_program(program, &args, &log);
        self.components.push(Component {
            name,
            proc,
            log,
            args,
        });
    }

    /// Stops component `name`, if it runs.
    pub(crate) fn stop_component(&mut self, name: &str) {
        if let Some(at) = self.components.iter().position(|c| c.name == name) {
            drop(self.components.remove(at).proc);
        }
    }

    /// Stops every component, the last started first.
    pub(crate) fn stop_components(&mut self) {
        while let Some(component) = self.components.pop() {
            drop(component.proc);
        }
    }

    /// The directory holding the plane's keys, logs and data.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn start_process(&self, name: &str, args: &[String], log: &Path) -> Proc {
        self.start_program(&tool(name), args, log)
    }

    fn start_program(&self, program: &Path, args: &[String], log: &Path) -> Proc {
        let file = File::options()
            .create(true)
            .append(true)
            .open(log)
            .expect("component log");
        let child = Command::new("nsenter")
            .args(&self.spec.enter)
            .arg("--")
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log fd"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        Proc::new(child)
    }

    pub(super) fn wait_apiserver(&mut self) {
        self.wait_for("kube-apiserver", Duration::from_secs(90), |p| {
            p.kubectl_output(&["get", "--raw", "/readyz"])
                .status
                .success()
        });
    }

    /// Polls `ready` until it holds; panics with the logs if `name` exits or
    /// `limit` passes.
    pub(crate) fn wait_for(&mut self, name: &str, limit: Duration, ready: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + limit;
        loop {
            if ready(self) {
                return;
            }
            for component in &mut self.components {
                if let Some(status) = component.proc.try_wait() {
                    panic!(
                        "{} exited ({status}) while waiting for {name}:\n{}",
                        component.name,
                        tail(&component.log)
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "{name} not ready after {limit:?}:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs a command in the node namespace.
    pub fn in_node(&self, program: &str, args: &[&str]) -> Output {
        Command::new("nsenter")
            .args(&self.spec.enter)
            .arg("--")
            .arg(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
    }

    pub(super) fn index(&self, name: &str) -> usize {
        self.components
            .iter()
            .position(|c| c.name == name)
            .unwrap_or_else(|| panic!("no {name} in this control plane"))
    }

    /// The end of every component's log.
    pub fn logs(&self) -> String {
        self.components
            .iter()
            .map(|c| format!("--- {} ---\n{}", c.name, tail(&c.log)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- control plane logs ---\n{}", self.logs());
        }
        // The controller manager first, etcd last.
        self.stop_components();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(super) fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n")
}
