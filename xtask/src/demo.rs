//! `cargo xtask demo`: a node in miniature (network namespaces joined by a
//! bridge, a child cgroup), the real agent, and a real curl that detour
//! steers, then a `kill -9` to show fail-open. Everything is torn down at the
//! end, on failure (RAII guards) and on Ctrl-C (the handler below).

use std::{
    path::PathBuf,
    sync::{Mutex, PoisonError},
};

use anyhow::{Context, bail};
use detour_tests::{Agent, Cgroup, Pod, Topology, cmd, topology::NODE_IP4, unique_name};

const VIP: &str = "10.96.0.10";
const PORT: u16 = 8080;

/// What the Ctrl-C handler must undo: the guards own it otherwise.
#[derive(Default)]
struct Resources {
    netns: Vec<String>,
    cgroup: Option<PathBuf>,
    pids: Vec<u32>,
}

static RESOURCES: Mutex<Resources> = Mutex::new(Resources {
    netns: Vec::new(),
    cgroup: None,
    pids: Vec::new(),
});

fn record(update: impl FnOnce(&mut Resources)) {
    update(&mut RESOURCES.lock().unwrap_or_else(PoisonError::into_inner));
}

fn cleanup_on_interrupt() {
    let resources = RESOURCES.lock().unwrap_or_else(PoisonError::into_inner);
    for pid in &resources.pids {
        if let Ok(pid) = i32::try_from(*pid) {
            // SAFETY: kill(2) of a process this demo started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    for name in &resources.netns {
        cmd::quiet("ip", &["netns", "del", name]);
    }
    if let Some(cgroup) = &resources.cgroup {
        let _ = std::fs::remove_dir(cgroup);
    }
    eprintln!("\ninterrupted: namespaces, cgroup and processes cleaned up");
    std::process::exit(130);
}

pub fn run() -> anyhow::Result<()> {
    if !crate::is_root() {
        bail!(
            "the demo creates network namespaces and attaches eBPF programs: run `sudo -E cargo xtask demo`"
        );
    }
    crate::setup::run()?;
    println!("building detour (release)...");
    let binary = crate::build::run_build(false)?;
    // SAFETY: set before any thread that reads the environment is started.
    unsafe { std::env::set_var("DETOUR_BIN", &binary) };
    ctrlc::set_handler(cleanup_on_interrupt).context("cannot install the Ctrl-C handler")?;
    let routes_path = crate::root().join("examples/routes.yaml");
    let routes = std::fs::read_to_string(&routes_path)
        .with_context(|| format!("cannot read {}", routes_path.display()))?;

    let net = Topology::builder("demo")
        .pod("client")
        .pod("reviews")
        .vip("reviews", VIP)
        .build();
    let client = net.pod("client");
    let reviews = net.pod("reviews");
    record(|r| {
        r.netns = vec![
            net.node().name().to_owned(),
            client.netns.name().to_owned(),
            reviews.netns.name().to_owned(),
        ];
    });
    let cgroup = Cgroup::new(&unique_name("detour-demo-"));
    record(|r| r.cgroup = Some(cgroup.path().to_owned()));
    let server = reviews.echo_server(PORT);
    record(|r| r.pids.push(server.pid()));

    println!();
    println!(
        "detour demo: steering a real curl with eBPF at the socket layer (no sidecar, no iptables)"
    );
    println!();
    println!("  node      bridge {NODE_IP4}; detour's proxy will listen on {NODE_IP4}:15001");
    println!(
        "  client    pod {}, its processes run in cgroup {}",
        client.ip4,
        cgroup.path().display()
    );
    println!(
        "  reviews   pod {} serving HTTP on :{PORT}, also Service VIP {VIP}:{PORT}",
        reviews.ip4
    );
    println!();

    println!("1. Without detour, the client curls the Service:");
    show_curl(client, &cgroup)?;
    println!("   (the server sees the client's own address)");
    println!();

    println!(
        "2. Start the agent: detour agent --routes examples/routes.yaml --cgroup {}",
        cgroup.path().display()
    );
    let mut agent = Agent::builder(&net, &cgroup).routes(&routes).spawn();
    record(|r| r.pids.push(agent.pid()));
    println!(
        "   steering default/reviews at {VIP}:{PORT} and {}:{PORT}",
        reviews.ip4
    );
    println!();

    println!("3. The same curl, now steered:");
    show_curl(client, &cgroup)?;
    println!("   (the server sees the node: the connection went through detour's proxy)");
    println!(
        "   detour_connections_redirected_total = {}",
        agent.metric("detour_connections_redirected_total")
    );
    println!();

    println!("4. kill -9 the agent; the kernel detaches its programs (fail-open). The same curl:");
    agent.kill9();
    show_curl(client, &cgroup)?;
    println!("   (straight to the Service again: nothing was left behind)");
    println!();
    drop(agent);
    drop(server);
    drop(cgroup);
    drop(net);
    println!("cleaned up: namespaces, cgroup and processes");
    Ok(())
}

fn show_curl(client: &Pod, cgroup: &Cgroup) -> anyhow::Result<()> {
    let url = format!("http://{VIP}:{PORT}/");
    println!("   $ curl {url}");
    let output = client.exec_in(cgroup, "curl", &["-sS", "-m", "5", &url]);
    if !output.status.success() {
        bail!(
            "curl failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    println!("   {}", String::from_utf8_lossy(&output.stdout).trim());
    Ok(())
}
