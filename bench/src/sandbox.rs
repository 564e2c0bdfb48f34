//! `cargo xtask bench sandbox`: how long from `kubectl apply` of a Sandbox to
//! its first keyed request reaching the fork, on the test control plane
//! (real etcd, API server and controllers; the node simulator runs the
//! pods), with the release agent and controller as a user runs them.
//!
//! 1. One at a time: `--sandboxes-serial` Sandboxes, each applied after the
//!    previous one answered, each timed alone.
//! 2. At once: `--sandboxes-burst` Sandboxes in one `kubectl create`, each
//!    timed from that create's start.
//!
//! A poller in the client pod (`tests/clients/first_fork.py`) sends keyed
//! requests round-robin and records when each key first reaches its fork.
//! Not a test: nothing is asserted on the times.

use std::{
    fmt::Write as _,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, bail};
use detour_tests::Cluster;

use crate::{BenchArgs, RunInfo};

const CLUSTER_IP: &str = "10.96.0.60";
const PORT: u16 = 8080;
const POLLER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/clients/first_fork.py"
);

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn sandbox(name: &str) -> String {
    format!(
        "---\napiVersion: detour.dev/v1alpha1\nkind: Sandbox\nmetadata: {{name: {name}, namespace: default}}\n\
         spec: {{routingKey: {name}, forks: [{{service: {{name: reviews}}, forkOf: {{kind: Deployment, name: reviews}}, \
         customizations: {{env: [{{name: SERVED_BY, value: fork-{name}}}]}}}}]}}\n"
    )
}

/// Seconds from `start` to each key's first fork answer.
fn poll(cluster: &Cluster, names: &[String], start: f64, timeout: u64) -> anyhow::Result<Vec<f64>> {
    let mut args: Vec<String> = vec![
        POLLER.into(),
        CLUSTER_IP.into(),
        PORT.to_string(),
        timeout.to_string(),
    ];
    args.extend(names.iter().map(|n| format!("{n}=fork-{n}")));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = cluster
        .net
        .pod("client")
        .exec_in(&cluster.cgroup, "python3", &args);
    let text = String::from_utf8_lossy(&output.stdout);
    let mut times = Vec::new();
    for line in text.lines() {
        let (key, at) = line.split_once(' ').context("poller output")?;
        match at.parse::<f64>() {
            Ok(at) => times.push(at - start),
            Err(_) => bail!("{key} never reached its fork within {timeout} s"),
        }
    }
    Ok(times)
}

/// The Kubernetes release of the control plane the tests run
/// (`kube-apiserver --version`: `Kubernetes v1.37.2`).
fn kubernetes_version() -> anyhow::Result<String> {
    let apiserver = detour_tests::controlplane::tool("kube-apiserver");
    let output = std::process::Command::new(&apiserver)
        .arg("--version")
        .output()
        .with_context(|| format!("cannot run {}", apiserver.display()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text
        .trim()
        .strip_prefix("Kubernetes ")
        .unwrap_or(text.trim())
        .to_owned())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    if !crate::host::is_root() {
        bail!("the benchmark creates network namespaces and a control plane: run it as root");
    }
    // The agent and the Kubernetes tools: `cargo xtask bench sandbox` sets
    // `DETOUR_BIN` and `DETOUR_K8S_TOOLS`.
    let (_, agent_name) = crate::agent_binary()?;
    let kubernetes = kubernetes_version()?;
    eprintln!("bench sandbox: starting the control plane, the agent and the controller");
    let cluster = Cluster::start("dbs");
    cluster.reviews_baseline(CLUSTER_IP, PORT, false);
    let kubeconfig = cluster
        .plane
        .service_account_kubeconfig("detour", "detour-controller");
    let _controller = cluster.controller(&kubeconfig, "bench");
    let _agent = cluster.agent().log_filter("info").spawn();

    let mut serial = Vec::new();
    for i in 0..args.sandboxes_serial {
        let name = format!("one-{i}");
        let start = now();
        cluster.apply(&sandbox(&name));
        serial.extend(poll(&cluster, std::slice::from_ref(&name), start, 120)?);
        eprintln!(
            "bench sandbox: {name} answered after {:.2} s",
            serial[serial.len() - 1]
        );
    }

    let names: Vec<String> = (0..args.sandboxes_burst)
        .map(|i| format!("burst-{i}"))
        .collect();
    let file = std::env::temp_dir().join(detour_tests::unique_name("detour-bench-sandboxes-"));
    std::fs::write(&file, names.iter().map(|n| sandbox(n)).collect::<String>())?;
    eprintln!("bench sandbox: {} Sandboxes at once", names.len());
    let start = now();
    cluster
        .plane
        .kubectl(&["create", "-f", &file.display().to_string(), "-o", "name"]);
    let _ = std::fs::remove_file(&file);
    let mut burst = poll(&cluster, &names, start, 600)?;

    serial.sort_by(f64::total_cmp);
    burst.sort_by(f64::total_cmp);
    let run = RunInfo::now();
    let mut block = format!(
        "### `cargo xtask bench sandbox`: from `kubectl apply` to the fork answering\n\n\
         `cargo xtask bench sandbox --sandboxes-serial {} --sandboxes-burst {}`, run {}. Machine: Linux {}, \
         {} CPUs ({}), no CPU pinning; load average at the end {}. detour: {agent_name}, and \
         detour-controller beside it. The test control plane (etcd, kube-apiserver, \
         kube-controller-manager of Kubernetes {}) and the node simulator, which starts each fork \
         pod as a local process (a Python server in a network namespace; pods in parallel, as a \
         kubelet starts them; a kubelet also pulls an image and starts a container: add that). \
         With 100 at once, the 2 CPUs spend most of the time starting 100 Python servers: the \
         figure is the machine's more than detour's. \
         Each Sandbox forks deployment/reviews; the time runs from the apply until a keyed request \
         from a client pod is answered by the fork.\n\n\
         | Sandboxes | p50 | p99 | max |\n|---|---:|---:|---:|\n",
        args.sandboxes_serial,
        args.sandboxes_burst,
        run.date,
        run.kernel,
        run.cpus,
        run.cpu_model,
        run.load,
        kubernetes,
    );
    for (label, times) in [("one at a time", &serial), ("all at once", &burst)] {
        let _ = writeln!(
            block,
            "| {} {label} | {:.2} s | {:.2} s | {:.2} s |",
            times.len(),
            percentile(times, 0.5),
            percentile(times, 0.99),
            times[times.len() - 1],
        );
    }
    println!();
    print!("{block}");
    crate::results::publish("sandbox", &block)
}
