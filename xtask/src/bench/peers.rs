//! What `bench http` compares, and the configs of the servers it starts.
//!
//! Backends: one nginx per backend pod (`base` and `fork`), answering every
//! request with the same tiny body (`base\n` or `fork\n`: same size, so a
//! response tells which one answered) and a `stub_status` page on the pod's
//! loopback, whose request counter the run is checked against.
//!
//! Proxies: nginx, haproxy and Envoy on the node, each configured the plain
//! way to do what detour does for the benchmark's request: send it to the
//! fork when its `baggage` contains `detour-routing-key=bench-fork`, else to
//! baseline. Fair settings for all: one worker (nginx `worker_processes 1`,
//! haproxy `nbthread 1`, Envoy `--concurrency 1`; detour's runtime gets one
//! worker thread from `TOKIO_WORKER_THREADS`), no access logs, keep-alive to
//! the upstreams (nginx `keepalive` + HTTP/1.1 + an empty `Connection`,
//! haproxy `http-reuse always`, Envoy's default pool), a 4096-deep accept
//! queue (as detour's), and no request limit per connection. Envoy's
//! request-id generation and `x-envoy-*` headers are turned off: none of the
//! others does that work. The peers match the key as a substring (nginx
//! regex, haproxy `hdr_sub`, Envoy `contains`); detour parses the baggage
//! list member by member, which is more work, not less.

use std::{net::SocketAddrV4, path::Path, time::Duration};

use anyhow::bail;
use detour_tests::netns::Netns;

use super::daemon::{Daemon, TempDir};

/// The routing key of the sandbox, and the header every measured request carries.
pub const KEY: &str = "bench-fork";
pub const BAGGAGE: &str = "baggage: detour-routing-key=bench-fork";
/// Backends' HTTP port, and the `stub_status` port on their loopback.
pub const BACKEND_PORT: u16 = 8080;
pub const STATUS_PORT: u16 = 8081;
const BACKLOG: u32 = 4096;

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

    pub fn describe(self) -> &'static str {
        match self {
            Self::Direct => "the client connects to the fork backend pod itself",
            Self::Detour => {
                "the client connects to the baseline backend's address; detour's connect4 \
                 redirects it to the agent's proxy on the node, which routes each request \
                 by its baggage key to the fork"
            }
            Self::Nginx => {
                "nginx 1 worker on the node; `map $http_baggage` picks the fork upstream \
                 (keepalive 64)"
            }
            Self::Haproxy => {
                "haproxy nbthread 1 on the node; `acl hdr_sub(baggage)` + `use_backend`, \
                 http-reuse always"
            }
            Self::Envoy => {
                "envoy --concurrency 1 on the node; a route matching the baggage header \
                 (`contains`) to the fork cluster"
            }
        }
    }
}

/// The two backends' addresses.
#[derive(Debug, Clone, Copy)]
pub struct Upstreams {
    pub base: SocketAddrV4,
    pub fork: SocketAddrV4,
}

/// The lines every nginx config here shares, for an instance named `name`,
/// up to the open `http` block.
fn nginx_common(dir: &Path, name: &str) -> String {
    let d = dir.display();
    format!(
        r"user nobody nogroup;
worker_processes 1;
daemon off;
pid {d}/{name}.pid;
error_log {d}/{name}.log warn;
worker_rlimit_nofile 65536;
events {{ worker_connections 30000; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
  client_body_temp_path {d}/{name}-tmp/body;
  proxy_temp_path {d}/{name}-tmp/proxy;
  fastcgi_temp_path {d}/{name}-tmp/fastcgi;
  uwsgi_temp_path {d}/{name}-tmp/uwsgi;
  scgi_temp_path {d}/{name}-tmp/scgi;
"
    )
}

fn nginx_backend(dir: &Path, name: &str, body: &str) -> String {
    nginx_common(dir, name)
        + &format!(
            r#"  default_type text/plain;
  server {{
    listen {BACKEND_PORT} backlog={BACKLOG};
    location / {{ return 200 "{body}\n"; }}
  }}
  server {{
    listen 127.0.0.1:{STATUS_PORT};
    location = /status {{ stub_status; }}
  }}
}}
"#
        )
}

fn nginx_proxy(dir: &Path, listen: SocketAddrV4, up: Upstreams) -> String {
    let Upstreams { base, fork } = up;
    nginx_common(dir, "nginx")
        + &format!(
            r#"  map $http_baggage $bench_upstream {{
    default base;
    "~detour-routing-key={KEY}" fork;
  }}
  upstream base {{ server {base}; keepalive 64; keepalive_requests 1000000; }}
  upstream fork {{ server {fork}; keepalive 64; keepalive_requests 1000000; }}
  server {{
    listen {listen} backlog={BACKLOG};
    location / {{
      proxy_pass http://$bench_upstream;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"#
        )
}

fn haproxy(listen: SocketAddrV4, up: Upstreams) -> String {
    let Upstreams { base, fork } = up;
    format!(
        r"global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s
  http-reuse always
frontend bench
  bind {listen} backlog {BACKLOG}
  acl keyed hdr_sub(baggage) detour-routing-key={KEY}
  use_backend fork if keyed
  default_backend base
backend fork
  server fork {fork}
backend base
  server base {base}
"
    )
}

fn envoy(listen: SocketAddrV4, up: Upstreams) -> String {
    let cluster = |name: &str, addr: SocketAddrV4| {
        let (ip, port) = (addr.ip(), addr.port());
        format!(
            r"  - name: {name}
    type: STATIC
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{ address: {ip}, port_value: {port} }}
"
        )
    };
    let (ip, port) = (listen.ip(), listen.port());
    let manager = "type.googleapis.com/envoy.extensions.filters.network.\
                   http_connection_manager.v3.HttpConnectionManager";
    let router = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
    format!(
        r#"static_resources:
  listeners:
  - name: bench
    address:
      socket_address: {{ address: {ip}, port_value: {port} }}
    tcp_backlog_size: {BACKLOG}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": {manager}
          stat_prefix: bench
          generate_request_id: false
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match:
                  prefix: "/"
                  headers:
                  - name: baggage
                    string_match: {{ contains: "detour-routing-key={KEY}" }}
                route: {{ cluster: fork }}
              - match: {{ prefix: "/" }}
                route: {{ cluster: base }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": {router}
              suppress_envoy_headers: true
  clusters:
{}{}"#,
        cluster("fork", up.fork),
        cluster("base", up.base),
    )
}

/// Starts the backend nginx of a pod, answering `body`.
pub fn spawn_backend(
    nginx: &Path,
    dir: &TempDir,
    netns: &Netns,
    pin: &[String],
    name: &str,
    body: &str,
) -> anyhow::Result<Daemon> {
    let conf = dir.write(
        &format!("{name}.conf"),
        &nginx_backend(dir.path(), name, body),
    )?;
    let daemon = Daemon::spawn(
        name,
        netns,
        pin,
        nginx,
        &nginx_args(dir, name, &conf),
        &dir.path().join(format!("{name}.out")),
    )?;
    let url = format!("http://127.0.0.1:{BACKEND_PORT}/");
    wait_for(&daemon, netns, &url, &format!("{body}\n"))?;
    Ok(daemon)
}

/// Starts a proxy peer on the node (`peer` is nginx, haproxy or Envoy).
pub fn spawn_proxy(
    peer: Peer,
    program: &Path,
    dir: &TempDir,
    node: &Netns,
    pin: &[String],
    listen: SocketAddrV4,
    up: Upstreams,
) -> anyhow::Result<Daemon> {
    let name = peer.label();
    let args = match peer {
        Peer::Nginx => {
            let conf = dir.write("nginx.conf", &nginx_proxy(dir.path(), listen, up))?;
            nginx_args(dir, name, &conf)
        }
        Peer::Haproxy => {
            let conf = dir.write("haproxy.cfg", &haproxy(listen, up))?;
            vec!["-db".into(), "-f".into(), conf.display().to_string()]
        }
        Peer::Envoy => {
            let conf = dir.write("envoy.yaml", &envoy(listen, up))?;
            let args = ["--concurrency", "1", "--disable-hot-restart", "--log-level"];
            let mut args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
            args.extend(["warn".into(), "-c".into(), conf.display().to_string()]);
            args
        }
        Peer::Direct | Peer::Detour => bail!("{name} is not a proxy peer"),
    };
    let log = dir.path().join(format!("{name}.out"));
    let daemon = Daemon::spawn(name, node, pin, program, &args, &log)?;
    // Unkeyed, from the node: readiness, and the baseline route.
    wait_for(&daemon, node, &format!("http://{listen}/"), "base\n")?;
    Ok(daemon)
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

/// Polls `url` from inside `netns` until it answers `body` (up to 30 s).
fn wait_for(daemon: &Daemon, netns: &Netns, url: &str, body: &str) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while std::time::Instant::now() < deadline {
        daemon.check_alive()?;
        let output = netns.exec("curl", &["-s", "-m", "2", url]);
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
