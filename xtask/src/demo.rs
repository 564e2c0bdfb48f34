//! `cargo xtask demo`: a node in miniature (network namespaces joined by a
//! bridge, a child cgroup), the real agent, and a real curl that detour
//! steers, then a `kill -9` to show fail-open. Everything is torn down at the
//! end, on failure (RAII guards) and on Ctrl-C (the handler below).

use std::{
    path::PathBuf,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
};

use anyhow::{Context, bail};
use detour_tests::{Agent, Cgroup, Pod, Topology, cmd, topology::NODE_IP4, unique_name};

const REVIEWS_VIP: &str = "10.96.0.10";
const RATINGS_VIP: &str = "10.96.0.11";
const KEY_HEADER: &str = "baggage: detour-routing-key=feature-x";
const PORT: u16 = 8080;

/// What the Ctrl-C handler must undo: the guards own it otherwise.
#[derive(Default)]
struct Resources {
    netns: Vec<String>,
    cgroup: Option<PathBuf>,
    pids: Vec<u32>,
    /// The agent's private bpffs (its pinned maps).
    bpffs: Option<PathBuf>,
}

static RESOURCES: Mutex<Resources> = Mutex::new(Resources {
    netns: Vec::new(),
    cgroup: None,
    pids: Vec::new(),
    bpffs: None,
});

fn record(update: impl FnOnce(&mut Resources)) {
    update(&mut RESOURCES.lock().unwrap_or_else(PoisonError::into_inner));
}

/// Our own children, from /proc: a server may have been started but not yet
/// recorded when Ctrl-C arrived.
fn children() -> Vec<u32> {
    let me = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                // pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                    == Some(me.as_str())
            })
        })
        .collect()
}

/// Set once Ctrl-C arrived: the main thread may then fail (its servers are
/// being killed under it) and must leave the exit to the handler.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn cleanup_on_interrupt() {
    INTERRUPTED.store(true, Ordering::SeqCst);
    let resources = RESOURCES.lock().unwrap_or_else(PoisonError::into_inner);
    for pid in resources.pids.iter().copied().chain(children()) {
        if let Ok(pid) = i32::try_from(pid) {
            // SAFETY: kill(2) of a process this demo started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    for name in &resources.netns {
        cmd::quiet("ip", &["netns", "del", name]);
    }
    if let Some(bpffs) = &resources.bpffs {
        cmd::quiet("umount", &[&bpffs.display().to_string()]);
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
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if INTERRUPTED.load(Ordering::SeqCst) {
            // The handler is cleaning up and will exit(130).
            loop {
                std::thread::park();
            }
        }
        default_hook(info);
    }));
    let routes_path = crate::root().join("examples/routes.yaml");
    let routes = std::fs::read_to_string(&routes_path)
        .with_context(|| format!("cannot read {}", routes_path.display()))?;

    // Pod order fixes the addresses the routes file names: .2, .3, .4, .5.
    let builder = Topology::builder("demo")
        .pod("client")
        .pod("reviews")
        .pod("reviews-feature-x")
        .pod("ratings")
        .vip("reviews", REVIEWS_VIP)
        .vip("ratings", RATINGS_VIP);
    record(|r| r.netns = builder.namespace_names());
    let net = builder.build();
    let client = net.pod("client");
    let cgroup = Cgroup::new(&unique_name("detour-demo-"));
    record(|r| r.cgroup = Some(cgroup.path().to_owned()));
    let servers: Vec<_> = ["reviews", "reviews-feature-x", "ratings"]
        .into_iter()
        .map(|pod| {
            let server = net.pod(pod).echo_server(PORT);
            record(|r| r.pids.push(server.pid()));
            server
        })
        .collect();

    println!();
    println!("detour demo: per-request steering to a sandbox fork, with eBPF at the socket layer");
    println!("(no sidecar, no iptables)");
    println!();
    println!("  node               bridge {NODE_IP4}; detour's proxy listens on {NODE_IP4}:15001");
    println!(
        "  client             pod {}, in cgroup {}",
        client.ip4,
        cgroup.path().display()
    );
    println!(
        "  reviews            pod {} (baseline), Service VIP {REVIEWS_VIP}:{PORT}",
        net.pod("reviews").ip4
    );
    println!(
        "  reviews-feature-x  pod {} (the fork in sandbox feature-x)",
        net.pod("reviews-feature-x").ip4
    );
    println!(
        "  ratings            pod {} (not forked), Service VIP {RATINGS_VIP}:{PORT}",
        net.pod("ratings").ip4
    );
    println!();

    println!(
        "1. Start the agent: detour agent --routes examples/routes.yaml --cgroup {}",
        cgroup.path().display()
    );
    let mut agent = Agent::builder(&net, &cgroup).routes(&routes).spawn();
    record(|r| {
        r.pids.push(agent.pid());
        r.bpffs = agent.pin_dir().parent().map(PathBuf::from);
    });
    println!();

    println!(
        "2. A request without a routing key goes to baseline (through detour's proxy; the server still sees the client pod's own address):"
    );
    show_curl(client, &cgroup, REVIEWS_VIP, None)?;
    println!();
    println!("3. The same request carrying the sandbox's key goes to the fork:");
    show_curl(client, &cgroup, REVIEWS_VIP, Some(KEY_HEADER))?;
    println!();
    println!("4. A service without a fork is not even redirected:");
    show_curl(client, &cgroup, RATINGS_VIP, Some(KEY_HEADER))?;
    println!();
    println!("   metrics:");
    let metrics = agent.http_get("/metrics").unwrap_or_default();
    for line in metrics.lines().filter(|l| {
        l.starts_with("detour_requests_total")
            || l.starts_with("detour_connections_redirected_total")
    }) {
        println!("     {line}");
    }
    println!();

    println!("5. kill -9 the agent; the kernel detaches its programs (fail-open):");
    agent.kill9();
    show_curl(client, &cgroup, REVIEWS_VIP, Some(KEY_HEADER))?;
    println!("   (straight to baseline, as without detour: nothing was left behind)");
    println!();
    drop(agent);
    drop(servers);
    drop(cgroup);
    drop(net);
    println!("cleaned up: namespaces, cgroup and processes");
    Ok(())
}

fn show_curl(client: &Pod, cgroup: &Cgroup, vip: &str, header: Option<&str>) -> anyhow::Result<()> {
    let url = format!("http://{vip}:{PORT}/");
    let mut args = vec!["-sS", "-m", "5"];
    if let Some(header) = header {
        args.extend(["-H", header]);
        println!("   $ curl -H '{header}' {url}");
    } else {
        println!("   $ curl {url}");
    }
    args.push(&url);
    let output = client.exec_in(cgroup, "curl", &args);
    if !output.status.success() {
        bail!(
            "curl failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    println!("   {}", String::from_utf8_lossy(&output.stdout).trim());
    Ok(())
}
