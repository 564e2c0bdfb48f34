//! A one-node cluster for the Kubernetes tests: the real control plane
//! ([`ControlPlane`]) with `deploy/` applied, the node simulator
//! ([`NodeSim`]), a `client` pod, and a kubeconfig holding only the agent's
//! ServiceAccount token (`detour/detour`), so the agent runs with exactly the
//! RBAC grants of `deploy/rbac.yaml`.
//!
//! Workloads are applied as a user would (`kubectl apply`); their pods run as
//! real processes on the node. A Service's ClusterIP is routed to one of its
//! pods ([`Cluster::route_cluster_ip`]), standing in for kube-proxy.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    Agent, AgentBuilder, Cgroup, ControlPlane, Topology,
    controlplane::kubelet::{NodeSim, READY_ANNOTATION},
    unique_name,
};

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");

/// Field order is drop order: the simulated pods go first, then the control
/// plane, then the namespaces.
#[derive(Debug)]
pub struct Cluster {
    pub node: NodeSim,
    pub plane: ControlPlane,
    /// The agent's kubeconfig: the `detour/detour` ServiceAccount's token.
    pub agent_kubeconfig: PathBuf,
    pub net: Topology,
    pub cgroup: Cgroup,
}

impl Cluster {
    /// Starts the control plane and the node, and applies `deploy/` (CRDs,
    /// namespace, ServiceAccount, RBAC) with `kubectl apply -k`.
    pub fn start(prefix: &str) -> Self {
        let net = Topology::builder(prefix).pod("client").build();
        let plane = ControlPlane::start_in(net.node());
        let cgroup = Cgroup::new(&unique_name("detour-cluster-"));
        let node = NodeSim::start(
            net.node(),
            net.base(),
            plane.admin_kubeconfig.clone(),
            cgroup.path().to_owned(),
        );
        plane.kubectl(&["apply", "-k", DEPLOY]);
        plane.kubectl(&[
            "wait",
            "--for=condition=Established",
            "crd/sandboxes.detour.dev",
            "crd/routegroups.detour.dev",
            "--timeout=60s",
        ]);
        // The tests run the controller themselves, as a process; the
        // in-cluster Deployment's image is not one the node can run.
        plane.kubectl(&[
            "scale",
            "deployment/detour-controller",
            "-n",
            "detour",
            "--replicas=0",
        ]);
        let agent_kubeconfig = plane.service_account_kubeconfig("detour", "detour");
        Self {
            node,
            plane,
            agent_kubeconfig,
            net,
            cgroup,
        }
    }

    /// The agent, reading routes from the API server as its ServiceAccount.
    pub fn agent(&self) -> AgentBuilder<'_> {
        Agent::builder(&self.net, &self.cgroup).kubernetes(&self.agent_kubeconfig)
    }

    /// Starts `detour-controller` replica `identity` in the node namespace
    /// with `kubeconfig` (its Lease in `detour`); stopped on drop, its log
    /// printed if the test fails.
    pub fn controller(&self, kubeconfig: &std::path::Path, identity: &str) -> ControllerProc {
        let log = std::env::temp_dir().join(unique_name("detour-controller-log-"));
        let file = std::fs::File::create(&log).expect("controller log");
        let child = std::process::Command::new("nsenter")
            .arg(format!("--net={}", self.net.node().path()))
            .arg("--")
            .arg(crate::controller_bin())
            .args([
                "--metrics-addr",
                "127.0.0.1:0",
                "--lease-namespace",
                "detour",
            ])
            .args(["--identity", identity, "--lease-duration", "4"])
            .env("KUBECONFIG", kubeconfig)
            .env("DETOUR_LOG", "info,detour_controller=debug")
            .stdin(std::process::Stdio::null())
            .stdout(file.try_clone().expect("log fd"))
            .stderr(file)
            .spawn()
            .expect("start detour-controller");
        ControllerProc {
            proc: crate::cmd::Proc::new(child),
            log,
        }
    }

    /// `kubectl apply -f -` as the admin.
    pub fn apply(&self, manifest: &str) {
        self.plane.apply(manifest);
    }

    /// `kubectl ARGS -o json` as the admin, parsed.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.plane.kubectl(&all)).expect("kubectl JSON")
    }

    /// Which pod (`X-Served-By`) answered `GET http://ADDR/` from the
    /// client (in the cgroup) with routing key `key`; "nothing (why)" if
    /// none answered.
    pub fn served_by(&self, addr: &str, key: &str) -> String {
        let output = self.net.pod("client").exec_in(
            &self.cgroup,
            "curl",
            &[
                "-sS",
                "-m",
                "5",
                "-o",
                "/dev/null",
                "-D",
                "-",
                "-H",
                &format!("baggage: detour-routing-key={key}"),
                &format!("http://{addr}/"),
            ],
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .find_map(|line| line.strip_prefix("X-Served-By: "))
            .map_or_else(
                || {
                    format!(
                        "nothing ({})",
                        String::from_utf8_lossy(&output.stderr).trim()
                    )
                },
                |name| name.trim().to_owned(),
            )
    }

    /// Polls `served_by` until it is `pod`, for up to `limit`.
    pub fn key_reaches(&self, addr: &str, key: &str, pod: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let last = self.served_by(addr, key);
            if last == pod {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "key {key} to {addr} reaches {last}, not {pod}, after {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A `reviews` Deployment (one echo pod on `port`, answering as
    /// `reviews`, or with `named_by_pod` as its own pod's name) behind a
    /// Service at `cluster_ip` selecting `app: reviews`, the ClusterIP routed
    /// to the pod; returns the pod's IP once it is ready.
    pub fn reviews_baseline(&self, cluster_ip: &str, port: u16, named_by_pod: bool) -> String {
        let mut deployment = echo_deployment("reviews", "v1", port, false);
        if named_by_pod {
            deployment =
                deployment.replace("          env: [{name: SERVED_BY, value: reviews}]\n", "");
        }
        self.apply(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: reviews, namespace: default}}\n\
             spec: {{clusterIP: {cluster_ip}, selector: {{app: reviews}}, \
             ports: [{{name: http, port: {port}, appProtocol: http}}]}}\n{deployment}"
        ));
        let baseline = self.ready_pods("default", "app=reviews");
        self.route_cluster_ip(cluster_ip, &baseline[0]);
        baseline[0].clone()
    }

    /// Waits until every pod matching `selector` in `namespace` is Ready
    /// (and at least one exists); returns their pod IPs.
    pub fn ready_pods(&self, namespace: &str, selector: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let pods = self.pods(namespace, selector);
            let ready: Vec<String> = pods
                .iter()
                .filter(|p| is_ready(p))
                .filter_map(|p| p["status"]["podIP"].as_str().map(str::to_owned))
                .collect();
            if !pods.is_empty() && ready.len() == pods.len() {
                return ready;
            }
            assert!(
                Instant::now() < deadline,
                "pods {selector} in {namespace} not ready after 60s: {pods:#?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The pods matching `selector`, as the API returns them.
    pub fn pods(&self, namespace: &str, selector: &str) -> Vec<Value> {
        let json = self
            .plane
            .kubectl(&["get", "pods", "-n", namespace, "-l", selector, "-o", "json"]);
        let list: Value = serde_json::from_str(&json).expect("pod list");
        list["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect()
    }

    /// Runs `program` as a process of pod `pod` (its JSON, from
    /// [`Cluster::pods`]): in its network namespace and its cgroup, as
    /// `kubectl exec` would.
    pub fn exec_in_pod(&self, pod: &Value, program: &str, args: &[&str]) -> std::process::Output {
        let uid = pod["metadata"]["uid"].as_str().expect("pod uid");
        let ip = pod["status"]["podIP"].as_str().expect("pod IP");
        let host = ip.rsplit('.').next().expect("IPv4 pod address");
        let net = format!("--net=/run/netns/{}-k{host}", self.net.base());
        let enter = format!(
            "echo $$ > {}/pod{uid}/cgroup.procs && exec \"$@\"",
            self.cgroup.path().display()
        );
        let mut all = vec![net.as_str(), "--", "sh", "-c", &enter, "sh", program];
        all.extend_from_slice(args);
        crate::cmd::output("nsenter", &all)
    }

    /// Marks every pod matching `selector` ready or not, as its readiness
    /// probe would (through the node simulator).
    pub fn set_ready(&self, namespace: &str, selector: &str, ready: bool) {
        let annotation = if ready {
            format!("{READY_ANNOTATION}-")
        } else {
            format!("{READY_ANNOTATION}=false")
        };
        self.plane.kubectl(&[
            "annotate",
            "pods",
            "-n",
            namespace,
            "-l",
            selector,
            "--overwrite",
            &annotation,
        ]);
    }

    /// Routes `cluster_ip` to the pod at `pod_ip` (which then answers on it
    /// too), as kube-proxy's DNAT would: the node namespace routes the
    /// address to the pod, which holds it on its loopback.
    pub fn route_cluster_ip(&self, cluster_ip: &str, pod_ip: &str) {
        let host = pod_ip.rsplit('.').next().expect("IPv4 pod address");
        let pod_netns = format!("{}-k{host}", self.net.base());
        crate::cmd::run(
            "ip",
            &[
                "-n",
                &pod_netns,
                "addr",
                "add",
                &format!("{cluster_ip}/32"),
                "dev",
                "lo",
            ],
        );
        self.net.node().ip(&[
            "route",
            "replace",
            &format!("{cluster_ip}/32"),
            "via",
            pod_ip,
        ]);
    }
}

/// A Deployment of one pod running the echo server on `port` (a container
/// port named `http`), answering as `name`, labelled `app: reviews,
/// version: <version>` and, for a fork, `detour.dev/fork: "true"`.
pub fn echo_deployment(name: &str, version: &str, port: u16, fork: bool) -> String {
    let fork_label = if fork {
        "detour.dev/fork: \"true\", "
    } else {
        ""
    };
    format!(
        r#"---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: default}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: reviews, version: {version}}}}}
  template:
    metadata:
      labels: {{{fork_label}app: reviews, version: {version}}}
    spec:
      containers:
        - name: reviews
          image: detour.dev/test-echo:1
          ports: [{{name: http, containerPort: {port}}}]
          env: [{{name: SERVED_BY, value: {name}}}]
"#
    )
}

/// A running `detour-controller`.
#[derive(Debug)]
pub struct ControllerProc {
    pub proc: crate::cmd::Proc,
    log: PathBuf,
}

impl ControllerProc {
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ControllerProc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- detour-controller log ---\n{}", self.logs());
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}
