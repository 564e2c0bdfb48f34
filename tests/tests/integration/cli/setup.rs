//! Helpers for the CLI tests: a topology with a forked service, the real
//! `detour` binary run against an agent's socket, and its output parsed.

use std::{
    io::{BufRead, BufReader},
    ops::Deref,
    path::Path,
    process::{Command, Output, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use detour_tests::{Agent, Forked, cmd::Proc, detour_bin, unique_name};
use serde_json::Value;

pub const PORT: u16 = 8080;

/// A client, a baseline `reviews` pod, its fork, and an unforked `ratings`.
pub struct Setup {
    forked: Forked,
    _ratings: Proc,
}

impl Deref for Setup {
    type Target = Forked;

    fn deref(&self) -> &Forked {
        &self.forked
    }
}

impl Setup {
    pub fn new() -> Self {
        let forked = Forked::service("reviews", PORT).pod("ratings").build("dc");
        let ratings = forked.net.pod("ratings").echo_server(PORT);
        Self {
            forked,
            _ratings: ratings,
        }
    }

    pub fn ip(&self, pod: &str) -> String {
        self.net.pod(pod).ip4.to_string()
    }

    /// reviews is forked by `feature-x`, and by `empty` with no endpoints;
    /// ratings is steered but not forked.
    pub fn agent(&self) -> Agent {
        let routes = format!(
            "services:
  - name: reviews
    addresses: [{reviews}]
    ports: [{{port: {PORT}, protocol: http}}]
  - name: ratings
    addresses: [{ratings}]
    ports: [{{port: {PORT}}}]
sandboxes:
  - name: feature-x
    routingKey: feature-x
    forks:
      - service: default/reviews
        endpoints: [\"{fork}:{PORT}\"]
  - name: empty
    routingKey: nobody-home
    forks:
      - service: default/reviews
        endpoints: []
",
            reviews = self.ip("reviews"),
            ratings = self.ip("ratings"),
            fork = self.ip("reviews-fork"),
        );
        Agent::builder(&self.net, &self.cgroup)
            .routes(&routes)
            .spawn()
    }

    /// curl from the client pod (in the cgroup) with `header` (if any);
    /// returns the pod that served it (`X-Served-By`).
    pub fn curl(&self, service: &str, path: &str, header: Option<&str>) -> String {
        let output = self
            .curl_command(service, path, header)
            .output()
            .expect("curl");
        let headers = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "curl failed: {output:?}");
        headers
            .lines()
            .find_map(|l| l.strip_prefix("X-Served-By: "))
            .unwrap_or_else(|| panic!("no X-Served-By in {headers:?}"))
            .trim()
            .to_owned()
    }

    pub fn curl_command(&self, service: &str, path: &str, header: Option<&str>) -> Command {
        let mut command = Command::new("nsenter");
        command.args([
            &format!("--net={}", self.net.pod("client").netns.path()),
            "--",
            "sh",
            "-c",
            &self.cgroup.enter_script(),
            "sh",
            "curl",
            "-sS",
            "-m",
            "10",
            "-o",
            "/dev/null",
            "-D",
            "-",
        ]);
        if let Some(header) = header {
            command.args(["-H", header]);
        }
        command.arg(format!("http://{}:{PORT}{path}", self.ip(service)));
        command
    }

    /// The pod that owns an address `ip:port`.
    pub fn pod_at(&self, endpoint: &str) -> &'static str {
        ["reviews", "reviews-fork", "ratings"]
            .into_iter()
            .find(|pod| endpoint == format!("{}:{PORT}", self.ip(pod)))
            .unwrap_or_else(|| panic!("no pod at {endpoint}"))
    }
}

/// `detour --socket <agent's> ARGS...`.
pub fn detour(agent: &Agent, args: &[&str]) -> Output {
    detour_at(agent.admin_socket(), args)
}

pub fn detour_at(socket: &Path, args: &[&str]) -> Output {
    Command::new(detour_bin())
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("run detour")
}

/// Stdout of a run that must succeed.
pub fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "detour failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn json(output: &Output) -> Value {
    let text = ok(output);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The one line a failing run prints, after checking its exit code.
pub fn failure(output: &Output, code: i32) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(code), "stderr: {stderr}");
    assert!(output.stdout.is_empty(), "stdout on failure: {output:?}");
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr:?}");
    stderr.trim_end().to_owned()
}

pub fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap_or_else(|| panic!("not a string: {v}")))
        .collect()
}

/// Polls `detour flows -o json` until `found` picks a flow, or panics.
pub fn wait_for_flow(agent: &Agent, found: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let flows = json(&detour(agent, &["flows", "-o", "json"]));
        if let Some(flow) = flows["flows"]
            .as_array()
            .and_then(|f| f.iter().find(|f| found(f)))
        {
            return flow.clone();
        }
        assert!(Instant::now() < deadline, "flow never seen: {flows}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `detour trace ...` running in the background, its stdout lines on a channel.
pub fn spawn_trace(agent: &Agent, args: &[&str]) -> (Proc, mpsc::Receiver<String>) {
    let mut child = Command::new(detour_bin())
        .arg("--socket")
        .arg(agent.admin_socket())
        .arg("trace")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("detour trace");
    let stdout = child.stdout.take().expect("piped");
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if send.send(line).is_err() {
                break;
            }
        }
    });
    (Proc::new(child), receive)
}

/// A copy of the binary that `nobody` may run (the original may sit under
/// /root), in a directory removed on drop.
pub struct NobodyBinary(std::path::PathBuf);

impl NobodyBinary {
    pub fn new() -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(unique_name("detour-cli-nobody-"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let binary = dir.join("detour");
        std::fs::copy(detour_bin(), &binary).expect("copy detour");
        for path in [&dir, &binary] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        Self(dir)
    }

    pub fn run(&self, args: &[&str]) -> Output {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(self.0.join("detour"))
            .args(args)
            .output()
            .expect("run setpriv")
    }
}

impl Drop for NobodyBinary {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
