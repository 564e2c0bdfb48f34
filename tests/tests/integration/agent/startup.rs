//! Start-up failures end with one clear error line and a non-zero exit; and
//! the capabilities the DaemonSet grants are the ones the agent needs: with
//! exactly those it attaches and steers, and without any one it stops at once.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use detour_tests::{
    Cgroup, Topology,
    cmd::{self, Proc},
    detour_bin, require_root,
    topology::NODE_IP4,
    unique_name,
};

fn run_agent(routes: &str, cgroup: &str) -> (bool, String) {
    let dir = std::env::temp_dir().join(unique_name("detour-startup-"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("routes.yaml");
    std::fs::write(&path, routes).expect("write routes");
    let output = Command::new(detour_bin())
        .args([
            "agent",
            "--routes",
            &path.display().to_string(),
            "--cgroup",
            cgroup,
        ])
        .args([
            "--proxy-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        // Never the node's default socket: tests run side by side.
        .arg("--admin-socket")
        .arg(dir.join("admin.sock"))
        .arg("--pin-dir")
        .arg(dir.join("pins"))
        .output()
        .expect("run detour");
    let _ = std::fs::remove_dir_all(&dir);
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn last_line(stderr: &str) -> &str {
    stderr.lines().last().unwrap_or_default()
}

#[test]
fn bad_routes_file_stops_the_agent_with_the_field_and_line() {
    let (ok, stderr) = run_agent(
        "services:\n  - name: a\n    addresses: [nope]\n    ports: [{port: 1}]\n",
        "/tmp",
    );
    assert!(!ok);
    let line = last_line(&stderr);
    assert!(line.starts_with("detour: routes file"), "{stderr}");
    assert!(
        line.contains("services[0].addresses[0]") && line.contains("line 3"),
        "{stderr}"
    );
    assert_eq!(
        line.matches("services[0].addresses[0]").count(),
        1,
        "the cause is said once: {line}"
    );
    // The error is the first thing said: nothing about limits before it.
    assert!(
        !stderr.contains("WARN") && !stderr.contains("open-file"),
        "{stderr}"
    );
}

#[test]
fn a_path_that_is_not_cgroup_v2_is_refused() {
    if !require_root() {
        return;
    }
    let (ok, stderr) = run_agent("", "/tmp");
    assert!(!ok);
    assert!(
        last_line(&stderr).contains("/tmp is not a cgroup v2 directory"),
        "{stderr}"
    );
}

#[test]
fn a_missing_cgroup_is_refused() {
    if !require_root() {
        return;
    }
    let (ok, stderr) = run_agent("", "/sys/fs/cgroup/unified/detour-no-such-cgroup");
    assert!(!ok);
    assert!(
        last_line(&stderr).contains("cannot open cgroup"),
        "{stderr}"
    );
}

#[test]
fn not_root_is_refused_with_what_to_do() {
    if !require_root() {
        return;
    }
    // Run a copy of the binary as nobody (the original may sit under /root).
    let dir = std::env::temp_dir().join(unique_name("detour-nobody-"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let binary = dir.join("detour");
    std::fs::copy(detour_bin(), &binary).expect("copy detour");
    let routes = dir.join("routes.yaml");
    std::fs::write(&routes, "").expect("write routes");
    for path in [&dir, &binary, &routes] {
        let mode = if path.is_dir() || path == &binary {
            0o755
        } else {
            0o644
        };
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .expect("chmod");
    }
    let run = || {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&binary)
            .args([
                "agent",
                "--routes",
                &routes.display().to_string(),
                "--cgroup",
                "/sys/fs/cgroup",
            ])
            .args([
                "--proxy-addr",
                "127.0.0.1:0",
                "--metrics-addr",
                "127.0.0.1:0",
            ])
            .output()
            .expect("run setpriv")
    };
    // The fresh copy can be briefly busy: another test thread may fork while
    // its write descriptor is open (ETXTBSY until that child execs).
    let mut output = run();
    for _ in 0..20 {
        if !String::from_utf8_lossy(&output.stderr).contains("Text file busy") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        output = run();
    }
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(last_line(&stderr).contains("must run as root"), "{stderr}");
}

/// The capabilities the DaemonSet grants the agent (deploy/daemonset.yaml and
/// the chart; agent/tests/manifests.rs holds them to this list): each one is
/// needed, and together they are enough. Spelled as `setpriv` wants them.
const MINIMAL_CAPS: [&str; 3] = ["bpf", "net_admin", "perfmon"];

/// `CapEff` in /proc/PID/status for exactly [`MINIMAL_CAPS`]:
/// CAP_NET_ADMIN (12), CAP_PERFMON (38), CAP_BPF (39).
const MINIMAL_CAP_MASK: u64 = (1 << 12) | (1 << 38) | (1 << 39);

/// `setpriv` with exactly `caps` (as uid 0: the agent refuses any other euid),
/// then `--`.
fn setpriv_args(caps: &[&str]) -> Vec<String> {
    let set: Vec<String> = std::iter::once("-all".to_owned())
        .chain(caps.iter().map(|cap| format!("+{cap}")))
        .collect();
    let set = set.join(",");
    ["bounding-set", "inh-caps", "ambient-caps"]
        .iter()
        .map(|option| format!("--{option}={set}"))
        .chain(std::iter::once("--".to_owned()))
        .collect()
}

fn require_setpriv() {
    assert!(
        cmd::which("setpriv").is_some(),
        "this test needs `setpriv` (util-linux) in PATH; run `cargo xtask setup`"
    );
}

/// The agent under `setpriv`, with its log in a temporary directory; killed
/// on drop, and its log printed if the test panicked.
struct CappedAgent {
    proc: Proc,
    dir: PathBuf,
}

impl CappedAgent {
    /// Starts `detour agent` (from `netns` if given) with exactly `caps`,
    /// its admin socket in a temporary directory and its maps pinned under
    /// `pin_dir` (default: a directory that is not bpffs, so none are).
    fn spawn(
        caps: &[&str],
        netns: Option<&str>,
        pin_dir: Option<&Path>,
        routes: &str,
        args: &[&str],
    ) -> Self {
        let dir = std::env::temp_dir().join(unique_name("detour-caps-"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let pin_dir = pin_dir.map_or_else(|| dir.join("pins"), Path::to_path_buf);
        let routes_path = dir.join("routes.yaml");
        std::fs::write(&routes_path, routes).expect("write routes");
        let log = std::fs::File::create(dir.join("agent.log")).expect("agent log");
        let mut command = Command::new("nsenter");
        if let Some(netns) = netns {
            command.arg(format!("--net={netns}"));
        }
        command
            .arg("--")
            .arg("setpriv")
            .args(setpriv_args(caps))
            .arg(detour_bin())
            .args(["agent", "--routes", &routes_path.display().to_string()])
            .args(args)
            .env("DETOUR_ADMIN_SOCKET", dir.join("admin.sock"))
            .env("DETOUR_PIN_DIR", pin_dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start detour: {e}"));
        Self {
            proc: Proc::new(child),
            dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }
}

impl Drop for CappedAgent {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- detour agent log ---\n{}", self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A bpf filesystem of the test's own, standing in for the node's
/// /sys/fs/bpf that the DaemonSet mounts; unmounted on drop.
struct BpfFs {
    dir: PathBuf,
}

impl BpfFs {
    fn mount() -> Self {
        let dir = std::env::temp_dir().join(unique_name("detour-bpffs-"));
        std::fs::create_dir_all(&dir).expect("bpffs mount point");
        cmd::run("mount", &["-t", "bpf", "bpf", &dir.display().to_string()]);
        Self { dir }
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        cmd::quiet("umount", &[&self.dir.display().to_string()]);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn effective_caps(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let hex = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .expect("CapEff line");
    u64::from_str_radix(hex.trim(), 16).expect("CapEff hex")
}

fn attached_programs(cgroup: &Path) -> String {
    cmd::run(
        "bpftool",
        &["cgroup", "show", &cgroup.display().to_string()],
    )
}

#[test]
fn the_minimal_capabilities_are_enough_to_steer() {
    if !require_root() {
        return;
    }
    require_setpriv();
    let net = Topology::builder("dtcap")
        .pod("client")
        .pod("baseline")
        .pod("fork")
        .build();
    let cgroup = Cgroup::new(&unique_name("detour-caps-"));
    let _baseline = net.pod("baseline").echo_server(8080);
    let _fork = net.pod("fork").echo_server(8080);
    let baseline_ip = net.pod("baseline").ip4.to_string();
    let fork_ip = net.pod("fork").ip4;
    let routes = format!(
        r#"services:
  - name: reviews
    addresses: ["{baseline_ip}"]
    ports:
      - port: 8080
        protocol: http
sandboxes:
  - name: feature-x
    routingKey: feature-x
    forks:
      - service: default/reviews
        endpoints: ["{fork_ip}:8080"]
"#
    );
    let proxy = format!("{NODE_IP4}:15001");
    let cgroup_path = cgroup.path().display().to_string();
    let bpffs = BpfFs::mount();
    let pin_dir = bpffs.dir.join("detour");
    let mut agent = CappedAgent::spawn(
        &MINIMAL_CAPS,
        Some(&net.node().path()),
        Some(&pin_dir),
        &routes,
        &[
            "--cgroup",
            &cgroup_path,
            "--proxy-addr",
            &proxy,
            "--metrics-addr",
            "127.0.0.1:15020",
        ],
    );

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = agent.proc.try_wait() {
            panic!("the agent exited with the minimal capabilities ({status})");
        }
        let ready = net
            .node()
            .exec("curl", &["-sf", "-m", "2", "http://127.0.0.1:15020/readyz"]);
        if String::from_utf8_lossy(&ready.stdout).starts_with("ready") {
            break;
        }
        assert!(Instant::now() < deadline, "agent not ready after 20s");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(effective_caps(agent.proc.pid()), MINIMAL_CAP_MASK);
    let attached = attached_programs(cgroup.path());
    for program in ["detour_connect4", "detour_connect6", "detour_sockops"] {
        assert!(
            attached.contains(program),
            "{program} not attached:\n{attached}"
        );
    }
    // Pinning the maps (for `detour bpf`) needs nothing more.
    assert!(pin_dir.join("STEERED").exists(), "maps not pinned");

    let url = format!("http://{baseline_ip}:8080/");
    let get = |headers: &[&str]| {
        let mut args = vec!["-s", "-m", "5"];
        args.extend(headers);
        args.push(&url);
        let output = net.pod("client").exec_in(&cgroup, "curl", &args);
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let keyed = get(&["-H", "baggage: detour-routing-key=feature-x"]);
    assert!(keyed.starts_with("hello from fork"), "{keyed}");
    let unkeyed = get(&[]);
    assert!(unkeyed.starts_with("hello from baseline"), "{unkeyed}");

    agent.proc.signal(libc::SIGTERM);
    let status = agent
        .proc
        .wait_timeout(Duration::from_secs(15))
        .expect("agent exits after SIGTERM");
    assert!(status.success(), "{status}");
}

#[test]
fn each_minimal_capability_is_required() {
    if !require_root() {
        return;
    }
    require_setpriv();
    // The agent checks its effective capabilities before touching the
    // kernel and names what is missing. (Without the check, on Linux 6.18:
    // map creation fails without CAP_BPF, the cgroup program types without
    // CAP_NET_ADMIN, and without CAP_PERFMON the verifier's Spectre hardening
    // refuses connect6.)
    let cases = [
        ("bpf", "must run as root or with", "missing CAP_BPF"),
        (
            "net_admin",
            "must run as root or with",
            "missing CAP_NET_ADMIN",
        ),
        ("perfmon", "must run as root or with", "missing CAP_PERFMON"),
    ];
    for (dropped, refusal, errno) in cases {
        let caps: Vec<&str> = MINIMAL_CAPS
            .into_iter()
            .filter(|cap| *cap != dropped)
            .collect();
        let cgroup = Cgroup::new(&unique_name("detour-caps-"));
        let cgroup_path = cgroup.path().display().to_string();
        let mut agent = CappedAgent::spawn(
            &caps,
            None,
            None,
            "",
            &[
                "--cgroup",
                &cgroup_path,
                "--proxy-addr",
                "127.0.0.1:0",
                "--metrics-addr",
                "127.0.0.1:0",
            ],
        );
        let status = agent
            .proc
            .wait_timeout(Duration::from_secs(20))
            .unwrap_or_else(|| {
                panic!(
                    "the agent started without CAP_{}: remove it from deploy/daemonset.yaml, \
                     the chart, deploy/README.md and MINIMAL_CAPS",
                    dropped.to_uppercase()
                )
            });
        assert!(!status.success());
        let log = agent.log();
        let line = log
            .lines()
            .find(|line| line.starts_with("detour: "))
            .unwrap_or_else(|| panic!("no error line without CAP_{dropped}:\n{log}"));
        assert!(
            line.contains(refusal) && line.contains(errno),
            "without CAP_{}: {line}",
            dropped.to_uppercase()
        );
    }
}

/// The soft "Max open files" limit of a process.
fn open_files_limit(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// An agent started through a wrapper command (`prlimit`, `unshare`) with
/// a routes file of no services, logging to a file.
struct Wrapped {
    agent: Proc,
    log_path: PathBuf,
    dir: PathBuf,
    _cgroup: Cgroup,
}

impl Wrapped {
    /// Starts `wrapper... detour agent ... extra...`.
    fn start(wrapper: &[&str], extra: &[&str]) -> Self {
        let program = wrapper.first().expect("a wrapper command");
        assert!(
            cmd::which(program).is_some(),
            "this test needs `{program}` (util-linux) in PATH; run `cargo xtask setup`"
        );
        let cgroup = Cgroup::new(&unique_name("detour-wrapped-"));
        let dir = std::env::temp_dir().join(unique_name("detour-wrapped-"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let routes = dir.join("routes.yaml");
        std::fs::write(&routes, "services: []\n").expect("write routes");
        let log_path = dir.join("agent.log");
        let log = std::fs::File::create(&log_path).expect("agent log");
        let child = Command::new(program)
            .args(&wrapper[1..])
            .arg(detour_bin())
            .args(["agent", "--routes", &routes.display().to_string()])
            .args(["--cgroup", &cgroup.path().display().to_string()])
            .args([
                "--proxy-addr",
                "127.0.0.1:0",
                "--metrics-addr",
                "127.0.0.1:0",
            ])
            .arg("--admin-socket")
            .arg(dir.join("admin.sock"))
            .arg("--handover-socket")
            .arg(dir.join("handover.sock"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("start detour");
        Self {
            agent: Proc::new(child),
            log_path,
            dir,
            _cgroup: cgroup,
        }
    }

    /// The log once it holds `text` (or after 10 s).
    fn log_once(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
            if log.contains(text) || Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Wrapped {
    fn drop(&mut self) {
        self.agent.signal(libc::SIGKILL);
        let _ = self.agent.wait_timeout(Duration::from_secs(5));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts the agent under `prlimit --nofile=1024:8192` (a container
/// runtime's usual start: soft 1024, hard higher) with `extra` flags; returns
/// its soft limit once it has logged the open-file line, and its log.
fn start_under_a_file_limit(extra: &[&str]) -> (Option<u64>, String) {
    let mut flags = vec!["--pin-dir", "none"];
    flags.extend(extra);
    let wrapped = Wrapped::start(&["prlimit", "--nofile=1024:8192", "--"], &flags);
    let text = wrapped.log_once("open_files=");
    (open_files_limit(wrapped.agent.pid()), text)
}

#[test]
fn the_agent_raises_its_open_file_limit_and_warns_when_an_explicit_limit_is_short() {
    if !require_root() {
        return;
    }
    // 5,000 connections need about 10,256 descriptors: more than even the
    // hard limit.
    let (limit, text) = start_under_a_file_limit(&["--max-connections", "5000"]);
    assert_eq!(
        limit,
        Some(8192),
        "the soft limit is raised to the hard one; log:\n{text}"
    );
    assert!(
        text.contains("--max-connections needs")
            && text.contains("open_files=8192")
            && text.contains("needed=10256"),
        "the shortfall is named: {text}"
    );
}

#[test]
fn the_default_connection_limit_is_fitted_to_a_short_file_limit_without_a_warning() {
    if !require_root() {
        return;
    }
    let (limit, text) = start_under_a_file_limit(&[]);
    assert_eq!(limit, Some(8192), "log:\n{text}");
    // (8192 - 256 of the agent's own) / 2 per connection.
    assert!(
        text.contains("max_connections=3968") && text.contains("fitted=true"),
        "{text}"
    );
    assert!(!text.contains("WARN"), "nothing to warn about: {text}");
}

#[test]
fn a_pin_dir_off_bpffs_is_refused_with_what_to_do() {
    if !require_root() {
        return;
    }
    let cgroup = Cgroup::new(&unique_name("detour-pins-"));
    // run_agent pins under a temporary directory: not a bpf filesystem.
    let (ok, stderr) = run_agent("", &cgroup.path().display().to_string());
    assert!(!ok);
    let line = last_line(&stderr);
    assert!(
        line.contains("is not on a bpf filesystem") && line.contains("--pin-dir none"),
        "{stderr}"
    );
}

#[test]
fn the_nodes_bpffs_is_mounted_when_missing_and_the_maps_are_readable() {
    if !require_root() {
        return;
    }
    // In a mount namespace of its own: the agent's mount of /sys/fs/bpf goes
    // with it, and this machine's /sys/fs/bpf is left as it was.
    let wrapped = Wrapped::start(
        &["unshare", "--mount", "--propagation", "private"],
        &["--pin-dir", "/sys/fs/bpf/detour"],
    );
    let log = wrapped.log_once("maps pinned");
    assert!(
        log.contains("bpf filesystem mounted") && log.contains("maps pinned"),
        "{log}"
    );
    let pid = wrapped.agent.pid().to_string();
    let output = Command::new("nsenter")
        .args(["-t", &pid, "-m", "--"])
        .arg(detour_bin())
        .args(["bpf", "maps", "-o", "json"])
        .output()
        .expect("run detour bpf maps in the agent's mount namespace");
    let maps = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && maps.contains("\"STEERED\""),
        "detour bpf maps: {maps}{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
