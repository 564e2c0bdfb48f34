//! What `bench http` and `bench h2` compare, and starting their servers
//! (the config texts are [`crate::stage::peer_configs`]).
//!
//! Backends: one nginx per backend pod (`base` and `fork`), answering every
//! request with the same tiny body (`base\n` or `fork\n`: same size, so a
//! response tells which one answered) and a `stub_status` page on the pod's
//! loopback, whose request counter the run is checked against.
//!
//! Proxies: nginx, haproxy and Envoy on the node, each configured the plain
//! way to do what detour does for the benchmark's request: send it to the
//! fork when its `baggage` contains `detour-routing-key=bench-fork`, else to
//! baseline; over HTTP/1.1 or h2c, both sides ([`Proto`]). Fair settings for
//! all: one worker (nginx `worker_processes 1`, haproxy `nbthread 1`, Envoy
//! `--concurrency 1`; detour's runtime gets one worker thread from
//! `TOKIO_WORKER_THREADS`), no access logs, keep-alive to the upstreams
//! (nginx `keepalive` + HTTP/1.1 + an empty `Connection`, or `keepalive`
//! with `grpc_pass`; haproxy `http-reuse always`, Envoy's default pool), a
//! 4096-deep accept queue (as detour's), and no request limit per
//! connection. Envoy's request-id generation and `x-envoy-*` headers are
//! turned off: none of the others does that work. The peers match the key
//! as a substring (nginx regex, haproxy `hdr_sub`, Envoy `contains`); detour
//! parses the baggage list member by member, which is more work, not less.

use std::{net::SocketAddrV4, path::Path, time::Duration};

use anyhow::bail;
use detour_tests::netns::Netns;

use crate::{
    daemon::{Daemon, TempDir},
    stage::peer_configs,
};

/// The routing key of the sandbox, and the header every measured request carries.
pub const KEY: &str = "bench-fork";
pub const BAGGAGE: &str = "baggage: detour-routing-key=bench-fork";
/// Backends' HTTP port, and the `stub_status` port on their loopback.
pub const BACKEND_PORT: u16 = 8080;
pub const STATUS_PORT: u16 = 8081;

/// The rows of the table, in order; `peer as usize` indexes per-peer arrays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Direct,
    Detour,
    Nginx,
    Haproxy,
    Envoy,
}

impl Peer {
    pub const ALL: [Self; 5] = [
        Self::Direct,
        Self::Detour,
        Self::Nginx,
        Self::Haproxy,
        Self::Envoy,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Direct => "direct (no proxy)",
            Self::Detour => "detour",
            Self::Nginx => "nginx",
            Self::Haproxy => "haproxy",
            Self::Envoy => "envoy",
        }
    }

    /// The node port a proxy peer listens on (detour's is the agent's).
    pub fn node_port(self) -> Option<u16> {
        match self {
            Self::Nginx => Some(18001),
            Self::Haproxy => Some(18002),
            Self::Envoy => Some(18003),
            Self::Direct | Self::Detour => None,
        }
    }

    /// How the client reaches the fork through this peer, over `proto`.
    pub fn describe(self, proto: Proto) -> &'static str {
        match (self, proto) {
            (Self::Direct, _) => "the client connects to the fork backend pod itself",
            (Self::Detour, Proto::Http1) => {
                "the client connects to the baseline backend's address; detour's connect4 \
                 redirects it to the agent's proxy on the node, which routes each request \
                 by its baggage key to the fork"
            }
            (Self::Detour, Proto::H2c) => {
                "the client connects to the baseline backend's address (its port declared \
                 `protocol: h2c`); detour's connect4 redirects it to the agent's proxy on the \
                 node, which routes each stream by its baggage key to a pooled, multiplexed \
                 HTTP/2 connection to the fork"
            }
            (Self::Nginx, Proto::Http1) => {
                "nginx 1 worker on the node; `map $http_baggage` picks the fork upstream \
                 (keepalive 64)"
            }
            (Self::Nginx, Proto::H2c) => {
                "nginx 1 worker on the node, `listen ... http2`; `map $http_baggage` picks the \
                 upstream of `grpc_pass grpc://` (HTTP/2 upstream, one stream per upstream \
                 connection, keepalive 1024)"
            }
            (Self::Haproxy, Proto::Http1) => {
                "haproxy nbthread 1 on the node; `acl hdr_sub(baggage)` + `use_backend`, \
                 http-reuse always"
            }
            (Self::Haproxy, Proto::H2c) => {
                "haproxy nbthread 1 on the node, `bind ... proto h2`; `acl hdr_sub(baggage)` + \
                 `use_backend` to servers with `proto h2`, http-reuse always"
            }
            (Self::Envoy, Proto::Http1) => {
                "envoy --concurrency 1 on the node; a route matching the baggage header \
                 (`contains`) to the fork cluster"
            }
            (Self::Envoy, Proto::H2c) => {
                "envoy --concurrency 1 on the node, HTTP/2 codec; a route matching the baggage \
                 header (`contains`) to the fork cluster, clusters with `http2_protocol_options`"
            }
        }
    }
}

/// What the clients, the proxies and the backends speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 over cleartext TCP with prior knowledge (no upgrade, no TLS).
    H2c,
}

impl Proto {
    /// The `protocol` of the steered port in detour's routes file.
    pub fn routes_protocol(self) -> &'static str {
        match self {
            Self::Http1 => "http",
            Self::H2c => "h2c",
        }
    }

    /// curl's flags to speak it.
    pub fn curl_args(self) -> &'static [&'static str] {
        match self {
            Self::Http1 => &[],
            Self::H2c => &["--http2-prior-knowledge"],
        }
    }
}

/// The two backends' addresses.
#[derive(Debug, Clone, Copy)]
pub struct Upstreams {
    pub base: SocketAddrV4,
    pub fork: SocketAddrV4,
}

/// How a run's servers start: what they speak, where their configs and logs
/// go, and the CPUs they are pinned to (a `taskset` prefix, or nothing).
#[derive(Debug, Clone, Copy)]
pub struct Servers<'a> {
    pub proto: Proto,
    pub dir: &'a TempDir,
    pub pin: &'a [String],
}

impl Servers<'_> {
    /// Starts the backend nginx of a pod, answering `body`.
    pub fn backend(
        &self,
        nginx: &Path,
        netns: &Netns,
        name: &str,
        body: &str,
    ) -> anyhow::Result<Daemon> {
        let dir = self.dir;
        let text = peer_configs::nginx_backend(self.proto, dir.path(), name, body);
        let conf = dir.write(&format!("{name}.conf"), &text)?;
        let daemon = Daemon::spawn(
            name,
            netns,
            self.pin,
            nginx,
            &nginx_args(dir, name, &conf),
            &dir.path().join(format!("{name}.out")),
        )?;
        let url = format!("http://127.0.0.1:{BACKEND_PORT}/");
        self.wait_for(&daemon, netns, &url, &format!("{body}\n"))?;
        Ok(daemon)
    }

    /// Starts a proxy peer on the node (`peer` is nginx, haproxy or Envoy).
    pub fn proxy(
        &self,
        peer: Peer,
        program: &Path,
        node: &Netns,
        listen: SocketAddrV4,
        up: Upstreams,
    ) -> anyhow::Result<Daemon> {
        let (dir, proto, name) = (self.dir, self.proto, peer.label());
        let args = match peer {
            Peer::Nginx => {
                let text = peer_configs::nginx_proxy(proto, dir.path(), listen, up);
                let conf = dir.write("nginx.conf", &text)?;
                nginx_args(dir, name, &conf)
            }
            Peer::Haproxy => {
                let conf = dir.write("haproxy.cfg", &peer_configs::haproxy(proto, listen, up))?;
                vec!["-db".into(), "-f".into(), conf.display().to_string()]
            }
            Peer::Envoy => {
                let conf = dir.write("envoy.yaml", &peer_configs::envoy(proto, listen, up))?;
                let args = ["--concurrency", "1", "--disable-hot-restart", "--log-level"];
                let mut args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
                args.extend(["warn".into(), "-c".into(), conf.display().to_string()]);
                args
            }
            Peer::Direct | Peer::Detour => bail!("{name} is not a proxy peer"),
        };
        let log = dir.path().join(format!("{name}.out"));
        let daemon = Daemon::spawn(name, node, self.pin, program, &args, &log)?;
        // Unkeyed, from the node: readiness, and the baseline route.
        self.wait_for(&daemon, node, &format!("http://{listen}/"), "base\n")?;
        Ok(daemon)
    }

    /// Polls `url` from inside `netns` until it answers `body` (up to 30 s).
    fn wait_for(
        &self,
        daemon: &Daemon,
        netns: &Netns,
        url: &str,
        body: &str,
    ) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut last = String::new();
        let mut args = vec!["-s", "-m", "2"];
        args.extend(self.proto.curl_args());
        args.push(url);
        while std::time::Instant::now() < deadline {
            daemon.check_alive()?;
            let output = netns.exec("curl", &args);
            last = String::from_utf8_lossy(&output.stdout).into_owned();
            if output.status.success() && last == body {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "{} did not answer {body:?} at {url} within 30 s (last answer {last:?}); log:\n{}",
            daemon.name(),
            daemon.log_tail()
        )
    }
}

/// `nginx -p DIR -e LOG -c CONF`: nothing of the system's nginx (config,
/// logs, temporary paths) is used. nginx makes the temporary directories
/// itself, owned by its worker user, inside `{name}-tmp`.
fn nginx_args(dir: &TempDir, name: &str, conf: &Path) -> Vec<String> {
    let d = dir.path().display();
    let _ = std::fs::create_dir_all(dir.path().join(format!("{name}-tmp")));
    vec![
        "-p".into(),
        d.to_string(),
        "-e".into(),
        format!("{d}/{name}.log"),
        "-c".into(),
        conf.display().to_string(),
    ]
}
