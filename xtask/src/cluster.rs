//! `cargo xtask cluster up|down|status`: a real one-node Kubernetes cluster
//! on this machine (the node tests' [`KubeNode`]: control plane, scheduler,
//! containerd, CNI bridge, kubelet, kube-proxy), left running for a person
//! to try detour on, without a cloud or a container engine.
//!
//! `up` builds what the node needs (the tools, the images), then starts a
//! keeper process in a session of its own (`cluster keep`, hidden) that
//! holds the node and tears it down when it gets SIGTERM; `up` returns once
//! the node is Ready and prints how to reach it. `down` stops the keeper
//! and waits for its teardown (if the keeper was killed outright, `down`
//! removes what it left: the pods' cgroups, the node's processes, the
//! machine-wide sysctls, the veth). `status` says what runs.

use std::{
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use detour_tests::node::{self, KubeNode, host};

use crate::{is_root, k8s_tools};

#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Start the node (builds the tools and images first) and leave it running.
    Up,
    /// Stop the node and remove everything it made.
    Down,
    /// Say what runs.
    Status,
    /// Internal: hold the node until SIGTERM.
    #[command(hide = true)]
    Keep,
}

/// Where the running cluster's keeper leaves its PID, kubeconfig and log.
fn state_dir() -> PathBuf {
    PathBuf::from("/tmp/detour-cluster")
}

pub fn run(args: &ClusterArgs) -> anyhow::Result<()> {
    if !is_root() {
        bail!(
            "a real node needs root (namespaces, cgroups, containers): run `sudo -E cargo xtask cluster ...`"
        );
    }
    match args.command {
        ClusterCommand::Up => up(),
        ClusterCommand::Down => down(),
        ClusterCommand::Status => status(),
        ClusterCommand::Keep => keep(),
    }
}

fn keeper_pid() -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(state_dir().join("pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: signal 0 only checks that the process exists.
    (unsafe { libc::kill(pid, 0) } == 0).then_some(pid)
}

fn up() -> anyhow::Result<()> {
    if let Some(pid) = keeper_pid() {
        bail!(
            "a cluster already runs (keeper pid {pid}): `cargo xtask cluster status`, or `down` first"
        );
    }
    let tools = crate::setup::all()?;
    let images = crate::image::test_images::build()?;
    let dir = state_dir();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let log = std::fs::File::create(dir.join("keeper.log"))?;
    let exe = std::env::current_exe()?;
    let mut keeper = Command::new(exe);
    keeper
        .args(["cluster", "keep"])
        .env(k8s_tools::TOOLS_ENV, &tools)
        .env(node::IMAGES_ENV, &images)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid in the child before exec: the keeper outlives this
    // terminal's session.
    unsafe {
        keeper.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let child = keeper.spawn().context("cannot start the cluster keeper")?;
    std::fs::write(dir.join("pid"), child.id().to_string())?;
    eprintln!(
        "cluster: starting the node (about a minute); log in {}",
        dir.join("keeper.log").display()
    );
    let deadline = Instant::now() + Duration::from_secs(300);
    while !dir.join("kubeconfig").exists() {
        if keeper_pid().is_none() || Instant::now() > deadline {
            bail!(
                "the node did not start:\n{}",
                std::fs::read_to_string(dir.join("keeper.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    println!(
        "cluster up: node {} at {}, Ready\n\n  export KUBECONFIG={}\n  export PATH={}:$PATH   # kubectl {}\n  kubectl get nodes\n\n\
         The detour image and the test images are loaded (`kubectl apply -k deploy/` installs detour).\n\
         Stop it with `cargo xtask cluster down`.",
        node::NODE_NAME,
        node::NODE_IP,
        dir.join("kubeconfig").display(),
        tools.display(),
        k8s_tools::KUBERNETES,
    );
    Ok(())
}

/// The keeper: starts the node, writes a kubeconfig for the machine, and
/// waits for SIGTERM (or SIGINT, SIGHUP); dropping the node tears it down.
fn keep() -> anyhow::Result<()> {
    let signals = blocked_signals();
    std::fs::write(
        state_dir().join("sysctls"),
        host::SavedSysctls::save().lines(),
    )?;
    let node = KubeNode::start();
    let staged = state_dir().join("kubeconfig.tmp");
    node.plane
        .write_admin_kubeconfig(&staged, &format!("https://{}:6443", node::NODE_IP));
    std::fs::rename(&staged, state_dir().join("kubeconfig"))?;
    eprintln!("keeper: node ready");
    let mut signal = 0;
    // SAFETY: sigwait on a set we built; the signals are blocked.
    unsafe { libc::sigwait(&signals, &mut signal) };
    eprintln!("keeper: signal {signal}: tearing the node down");
    drop(node);
    let _ = std::fs::remove_file(state_dir().join("kubeconfig"));
    let _ = std::fs::remove_file(state_dir().join("pid"));
    eprintln!("keeper: done");
    Ok(())
}

/// Blocks SIGTERM, SIGINT and SIGHUP in this thread (and the threads it
/// starts after), for `sigwait`.
fn blocked_signals() -> libc::sigset_t {
    // SAFETY: a zeroed sigset_t initialised by sigemptyset; sigprocmask
    // on the calling thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, signal);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn down() -> anyhow::Result<()> {
    match keeper_pid() {
        Some(pid) => {
            // SAFETY: SIGTERM to the keeper this task started (its PID file).
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(120);
            while keeper_pid().is_some() {
                if Instant::now() > deadline {
                    bail!("the keeper (pid {pid}) did not finish its teardown in 120 s");
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            let log = std::fs::read_to_string(state_dir().join("keeper.log")).unwrap_or_default();
            for line in log.lines().filter(|l| l.starts_with("real node:")) {
                eprintln!("{line}");
            }
        }
        None => leftovers(),
    }
    let _ = std::fs::remove_dir_all(state_dir());
    println!("cluster down: nothing of the node is left");
    Ok(())
}

/// What a keeper killed outright leaves: pods in the kubepods cgroups,
/// the machine's end of the veth, the sysctls the kubelet changed. (Its
/// namespaces went with its anchor, which dies with it.)
fn leftovers() {
    if let Ok(saved) = std::fs::read_to_string(state_dir().join("sysctls")) {
        for changed in host::SavedSysctls::parse(&saved).restore() {
            eprintln!("cluster: restored {changed}");
        }
    }
    for cgroup in host::node_cgroups() {
        eprintln!("cluster: removing {}", cgroup.display());
        host::remove_cgroup_tree(&cgroup);
    }
    let _ = Command::new("ip")
        .args(["link", "del", node::HOST_LINK])
        .output();
}

fn status() -> anyhow::Result<()> {
    let Some(pid) = keeper_pid() else {
        println!("cluster: not running");
        return Ok(());
    };
    let kubeconfig = state_dir().join("kubeconfig");
    if !kubeconfig.exists() {
        println!("cluster: starting (keeper pid {pid})");
        return Ok(());
    }
    println!(
        "cluster: running (keeper pid {pid}), KUBECONFIG={}",
        kubeconfig.display()
    );
    let kubectl = k8s_tools::ensure()?.join("kubectl");
    for args in [
        &["get", "nodes", "-o", "wide"][..],
        &["get", "pods", "-A", "-o", "wide"][..],
    ] {
        let output = Command::new(&kubectl)
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args(args)
            .output()
            .context("cannot run kubectl")?;
        print!("{}", String::from_utf8_lossy(&output.stdout));
        eprint!("{}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(())
}
