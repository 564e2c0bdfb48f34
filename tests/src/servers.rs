//! The test servers a pod runs (`tests/servers/`), each started in the
//! pod's namespace and waited for until it listens; and the request logs
//! and directories they leave, removed on drop.

use std::process::{Command, Stdio};

use crate::{cmd::Proc, topology::Pod, unique_name};

impl Pod {
    /// Starts the echo server (`tests/servers/echo.py`) on `port` of every
    /// address of the pod, and waits until it listens.
    pub fn echo_server(&self, port: u16) -> Proc {
        self.start_echo(port, None)
    }

    /// As [`Pod::echo_server`], logging every request it receives to the
    /// returned file (one `METHOD PATH` line each).
    pub fn logged_echo_server(&self, port: u16) -> (Proc, RequestLog) {
        let log = RequestLog(
            std::env::temp_dir().join(unique_name(&format!("detour-{}-requests-", self.name))),
        );
        std::fs::write(&log.0, "").expect("create request log");
        (self.start_echo(port, Some(&log.0)), log)
    }

    /// Starts `tests/servers/faulty.py`: slow, hanging and resetting paths.
    pub fn faulty_server(&self, port: u16) -> Proc {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/servers/faulty.py");
        self.start_script(script, port, None)
    }

    /// Starts `tests/servers/h2_inspect.py`, an h2c server that answers each
    /// request with the request exactly as it arrived (JSON).
    pub fn h2_inspect_server(&self, port: u16) -> Proc {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/servers/h2_inspect.py");
        self.start_script(script, port, None)
    }

    /// Starts `tests/servers/banner.py`, a server that speaks first.
    pub fn banner_server(&self, port: u16) -> Proc {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/servers/banner.py");
        self.start_script(script, port, None)
    }

    /// Starts `tests/servers/stream.py`: reads to the client's half-close,
    /// answers a digest of it, then streams bytes back (see the script).
    pub fn stream_server(&self, port: u16) -> Proc {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/servers/stream.py");
        self.start_script(script, port, None)
    }

    /// Starts `tests/servers/blast.py`: writes to each connection for 2 s
    /// as fast as it is let, then logs how many bytes it wrote.
    pub fn blast_server(&self, port: u16) -> (Proc, RequestLog) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/servers/blast.py");
        let log = RequestLog(
            std::env::temp_dir().join(unique_name(&format!("detour-{}-blast-", self.name))),
        );
        std::fs::write(&log.0, "").expect("create blast log");
        (self.start_script(script, port, Some(&log.0)), log)
    }

    /// Starts `tests/servers/grpc_server.py` (service `detour.test.Echo`) on
    /// `port`, logging each call it receives (`METHOD served_by=NAME
    /// key=... peer=ipv4:HOST:PORT`, the address the server saw) and each
    /// cancellation it sees (`cancelled METHOD`).
    pub fn grpc_server(&self, port: u16) -> (Proc, RequestLog) {
        self.grpc_server_with(port, &[])
    }

    /// As [`Pod::grpc_server`], with environment variables for the server
    /// (`GRPC_MAX_STREAMS=1`: advertise `SETTINGS_MAX_CONCURRENT_STREAMS` 1).
    pub fn grpc_server_with(&self, port: u16, env: &[(&str, &str)]) -> (Proc, RequestLog) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/servers/grpc_server.py");
        let log = RequestLog(
            std::env::temp_dir().join(unique_name(&format!("detour-{}-calls-", self.name))),
        );
        std::fs::write(&log.0, "").expect("create call log");
        let proc = self.start_script_with(script, port, Some(&log.0), env);
        (proc, log)
    }

    /// Starts `tests/servers/relay.py` on `port`: each request calls
    /// `downstream` (`http://HOST:PORT`), passing its `baggage` on when
    /// `propagate`; in `cgroup` when given (a fork pod's), so that its
    /// calls are that pod's connects.
    pub fn relay_server(
        &self,
        port: u16,
        downstream: &str,
        propagate: bool,
        cgroup: Option<&crate::Cgroup>,
    ) -> Proc {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/servers/relay.py");
        let mode = if propagate { "propagate" } else { "drop" };
        let args = [script, &port.to_string(), &self.name, downstream, mode];
        let child = match cgroup {
            Some(cgroup) => self.spawn_in(cgroup, "python3", &args),
            None => Command::new("nsenter")
                .arg(format!("--net={}", self.netns.path()))
                .args(["--", "python3"])
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("start relay.py"),
        };
        listening(child, script)
    }

    /// Starts `nghttpd`, an h2c (prior knowledge) file server, on `port`,
    /// serving `/who` with the pod's name and a newline. Its directory is
    /// removed when the returned guard drops.
    pub fn h2c_file_server(&self, port: u16) -> (Proc, TempDir) {
        let dir = TempDir::new(&format!("detour-{}-www-", self.name));
        std::fs::write(dir.0.join("who"), format!("{}\n", self.name)).expect("write /who");
        let child = Command::new("nsenter")
            .args([&format!("--net={}", self.netns.path()), "--", "nghttpd"])
            .args(["--no-tls", "-d"])
            .arg(&dir.0)
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start nghttpd: {e}"));
        let proc = Proc::new(child);
        self.wait_listening(port);
        (proc, dir)
    }

    /// Waits (up to 5 s) until something listens on TCP `port` in the pod.
    pub(crate) fn wait_listening(&self, port: u16) {
        let filter = format!("( sport = :{port} )");
        for _ in 0..100 {
            let output = self.netns.exec("ss", &["-Htln", &filter]);
            if !output.stdout.is_empty() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("nothing listens on port {port} in {}", self.name);
    }

    fn start_echo(&self, port: u16, log: Option<&std::path::Path>) -> Proc {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/servers/echo.py");
        self.start_script(script, port, log)
    }

    fn start_script(&self, script: &str, port: u16, log: Option<&std::path::Path>) -> Proc {
        self.start_script_with(script, port, log, &[])
    }

    fn start_script_with(
        &self,
        script: &str,
        port: u16,
        log: Option<&std::path::Path>,
        env: &[(&str, &str)],
    ) -> Proc {
        let mut command = Command::new("nsenter");
        command.envs(env.iter().copied());
        command.args([
            &format!("--net={}", self.netns.path()),
            "--",
            "python3",
            script,
            &port.to_string(),
            &self.name,
        ]);
        if let Some(log) = log {
            command.arg(log);
        }
        let child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {script}: {e}"));
        listening(child, script)
    }
}

/// A test server (`script`) just started, once it printed "listening".
fn listening(mut child: std::process::Child, script: &str) -> Proc {
    let stdout = child.stdout.take().expect("piped stdout");
    let proc = Proc::new(child);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
        .unwrap_or_else(|e| panic!("{script}'s output: {e}"));
    assert!(
        line.starts_with("listening"),
        "{script} did not start: {line:?}"
    );
    proc
}

/// The requests an echo server received; removed on drop.
#[derive(Debug)]
pub struct RequestLog(pub std::path::PathBuf);

impl RequestLog {
    /// Every `METHOD PATH` line so far.
    pub fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.0)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for RequestLog {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A directory removed on drop.
#[derive(Debug)]
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let dir = std::env::temp_dir().join(unique_name(prefix));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
