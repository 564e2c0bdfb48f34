//! The config files of the servers `bench http` and `bench h2` start, for
//! HTTP/1.1 ([`Proto::Http1`]) or h2c with prior knowledge ([`Proto::H2c`]).
//!
//! Backends: an nginx answering every request with the same tiny body
//! (`base\n` or `fork\n`), and a `stub_status` page (HTTP/1) on the pod's
//! loopback; for h2c its port listens `http2` (nginx 1.22's syntax, Debian
//! 12), plaintext, so it speaks h2c to prior-knowledge clients.
//!
//! Proxies, each routing a request whose `baggage` contains
//! `detour-routing-key=bench-fork` to the fork, the others to baseline:
//! - nginx: `map $http_baggage` picks the upstream; HTTP/1.1 `proxy_pass`
//!   with keep-alive, or for h2c a `listen ... http2` and `grpc_pass
//!   grpc://` (nginx's only HTTP/2 upstream: one stream per upstream
//!   connection, kept alive: [`nginx_keepalive`]).
//! - haproxy: `acl hdr_sub(baggage)` + `use_backend`, `http-reuse always`;
//!   for h2c `proto h2` on the bind and the servers.
//! - Envoy: a route matching the header (`contains`); for h2c the listener's
//!   codec is HTTP/2 and the clusters get `http2_protocol_options`.
//!
//! The HTTP/1.1 texts are byte for byte those `bench http` always used.

use std::{net::SocketAddrV4, path::Path};

use crate::stage::peers::{BACKEND_PORT, KEY, Proto, STATUS_PORT, Upstreams};

const BACKLOG: u32 = 4096;

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

/// ` http2` after an nginx `listen` address for h2c, nothing for HTTP/1.
fn nginx_listen(proto: Proto) -> &'static str {
    match proto {
        Proto::Http1 => "",
        Proto::H2c => " http2",
    }
}

/// Idle upstream connections nginx keeps per upstream: above the clients'
/// concurrency (wrk's 32 connections; over h2c, where `grpc_pass` carries
/// one stream per upstream connection, h2load's 8 x 32 streams), so that it
/// never closes one it will need again.
fn nginx_keepalive(proto: Proto) -> u32 {
    match proto {
        Proto::Http1 => 64,
        Proto::H2c => 1024,
    }
}

pub fn nginx_backend(proto: Proto, dir: &Path, name: &str, body: &str) -> String {
    let http2 = nginx_listen(proto);
    nginx_common(dir, name)
        + &format!(
            r#"  default_type text/plain;
  server {{
    listen {BACKEND_PORT}{http2} backlog={BACKLOG};
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

pub fn nginx_proxy(proto: Proto, dir: &Path, listen: SocketAddrV4, up: Upstreams) -> String {
    let Upstreams { base, fork } = up;
    let http2 = nginx_listen(proto);
    let keepalive = nginx_keepalive(proto);
    let pass = match proto {
        Proto::Http1 => {
            r#"      proxy_pass http://$bench_upstream;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
"#
        }
        Proto::H2c => "      grpc_pass grpc://$bench_upstream;\n",
    };
    nginx_common(dir, "nginx")
        + &format!(
            r#"  map $http_baggage $bench_upstream {{
    default base;
    "~detour-routing-key={KEY}" fork;
  }}
  upstream base {{ server {base}; keepalive {keepalive}; keepalive_requests 1000000; }}
  upstream fork {{ server {fork}; keepalive {keepalive}; keepalive_requests 1000000; }}
  server {{
    listen {listen}{http2} backlog={BACKLOG};
    location / {{
{pass}    }}
  }}
}}
"#
        )
}

pub fn haproxy(proto: Proto, listen: SocketAddrV4, up: Upstreams) -> String {
    let Upstreams { base, fork } = up;
    let h2 = match proto {
        Proto::Http1 => "",
        Proto::H2c => " proto h2",
    };
    let maxconn = crate::procs::proxy_connection_limit();
    format!(
        r"global
  nbthread 1
  maxconn {maxconn}
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s
  http-reuse always
frontend bench
  bind {listen}{h2} backlog {BACKLOG}
  acl keyed hdr_sub(baggage) detour-routing-key={KEY}
  use_backend fork if keyed
  default_backend base
backend fork
  server fork {fork}{h2}
backend base
  server base {base}{h2}
"
    )
}

/// haproxy as a plain TCP forwarder (`bench relay`): every connection to
/// `listen` is copied to `upstream` in user space.
pub fn haproxy_tcp(listen: SocketAddrV4, upstream: SocketAddrV4) -> String {
    format!(
        r"global
  nbthread 1
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend bulk
  bind {listen}
  default_backend sink
backend sink
  server sink {upstream}
"
    )
}

pub fn envoy(proto: Proto, listen: SocketAddrV4, up: Upstreams) -> String {
    let options = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
    let h2_options = match proto {
        Proto::Http1 => String::new(),
        Proto::H2c => format!(
            r#"    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": {options}
        explicit_http_config:
          http2_protocol_options: {{}}
"#
        ),
    };
    let cluster = |name: &str, addr: SocketAddrV4| {
        let (ip, port) = (addr.ip(), addr.port());
        format!(
            r"  - name: {name}
    type: STATIC
{h2_options}    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{ address: {ip}, port_value: {port} }}
"
        )
    };
    let codec = match proto {
        Proto::Http1 => "",
        Proto::H2c => "          codec_type: HTTP2\n",
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
{codec}          generate_request_id: false
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
