//! `detour agent`: the long-running node agent. This verb only parses and
//! checks flags; the agent's life cycle is `crate::app`.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::bail;
use clap::Args;

use crate::{
    app::{self, Config},
    datapath::Capacities,
    defaults,
    http::routing_key::{DEFAULT_KEY_NAMES, RoutingKeys},
    proxy::{http1, upstream::Upstream},
    telemetry::LogFormat,
};

/// Run the node agent.
///
/// Examples:
///   detour agent --routes examples/routes.yaml --cgroup /sys/fs/cgroup/unified/demo
///   detour agent --routes routes.yaml --cgroup /sys/fs/cgroup/kubepods.slice \
///       --proxy-addr 10.0.0.5:15001 --log-format json
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct AgentArgs {
    /// Routes file (standalone mode); see docs/standalone.md for the format.
    #[arg(
        long,
        env = "DETOUR_ROUTES",
        value_name = "FILE",
        conflicts_with = "kubernetes"
    )]
    routes: Option<PathBuf>,

    /// Take routes from the Kubernetes API (Sandboxes, RouteGroups, Services,
    /// EndpointSlices, fork Pods): the default inside a pod. The client is
    /// configured from the pod's service account, or `KUBECONFIG`.
    #[arg(long, env = "DETOUR_KUBERNETES")]
    kubernetes: bool,

    /// The Kubernetes node this agent runs on (the DaemonSet sets it from
    /// `spec.nodeName`): its Sandboxes' fork pods there get the fork
    /// programs (docs/sandboxes.md). Unset: no fork pod is known.
    #[arg(long, env = "DETOUR_NODE_NAME", value_name = "NAME")]
    node_name: Option<String>,

    /// cgroup v2 directory whose processes' connects are steered. Default:
    /// the node's kubepods cgroup, detected (the agent's own pod cgroup, else
    /// the known layouts: kubepods.slice, kubepods, kind's, hybrid ones under
    /// /sys/fs/cgroup/unified); `detour status` shows the choice and why.
    #[arg(long, env = "DETOUR_CGROUP", value_name = "PATH")]
    cgroup: Option<PathBuf>,

    /// Proxy listen address and redirect target; repeat for one IPv4 and one
    /// IPv6 address. Must be reachable from the clients' network namespaces.
    #[arg(long = "proxy-addr", env = "DETOUR_PROXY_ADDR", value_delimiter = ',', default_value = defaults::PROXY_ADDR)]
    proxy_addrs: Vec<SocketAddr>,

    /// Prometheus metrics, /healthz and /readyz.
    #[arg(long, env = "DETOUR_METRICS_ADDR", default_value = defaults::METRICS_ADDR)]
    metrics_addr: SocketAddr,

    /// SO_MARK of the agent's upstream sockets, which are never redirected.
    #[arg(long, env = "DETOUR_MARK", default_value_t = defaults::SOCKET_MARK)]
    mark: u32,

    /// Key names looked up in `baggage`, `tracestate`, `uberctx-<name>` and
    /// `ot-baggage-<name>`; repeat for several. Replaces the default list.
    #[arg(long = "routing-key-name", env = "DETOUR_ROUTING_KEY_NAME", value_delimiter = ',', default_values_t = DEFAULT_KEY_NAMES.map(String::from))]
    routing_key_names: Vec<String>,

    /// Extra headers whose whole value is the routing key; repeatable.
    #[arg(
        long = "routing-header",
        env = "DETOUR_ROUTING_HEADER",
        value_delimiter = ','
    )]
    routing_headers: Vec<String>,

    /// A query parameter whose value is the routing key, for clients that
    /// cannot set headers (browser links, WebSockets); repeatable. Ranked
    /// after every header source.
    #[arg(
        long = "routing-query-param",
        env = "DETOUR_ROUTING_QUERY_PARAM",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    routing_query_params: Vec<String>,

    /// A cookie whose value is the routing key; repeatable. Ranked after
    /// the query parameters.
    #[arg(
        long = "routing-cookie",
        env = "DETOUR_ROUTING_COOKIE",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    routing_cookies: Vec<String>,

    /// Protocol detection timeout on `auto` ports (then: splice to baseline).
    #[arg(long, env = "DETOUR_DETECT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    detect_timeout: Duration,

    /// A request head must arrive within this; 408 otherwise.
    #[arg(long, env = "DETOUR_HEAD_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    head_timeout: Duration,

    /// Keep-alive connections idle this long between requests are closed.
    #[arg(long, env = "DETOUR_IDLE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,

    /// HTTP/1 keep-alive connections idle this long between requests are
    /// parked: their sockets wait outside the proxy's tasks, at a fifth of
    /// the memory, and resume on their next request. 0s: never.
    #[arg(long, env = "DETOUR_PARK_IDLE_AFTER", default_value = "1s", value_parser = humantime::parse_duration)]
    park_idle_after: Duration,

    /// Upstream connect timeout; 504 beyond it, 502 when refused.
    #[arg(long, env = "DETOUR_CONNECT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    connect_timeout: Duration,

    /// How long to wait for an upstream's response head; 504 beyond it.
    #[arg(long, env = "DETOUR_UPSTREAM_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    upstream_timeout: Duration,

    /// When a destination becomes steered (and at start), connections from
    /// the cgroup that bypass the proxy to it are closed so that their
    /// clients reconnect through it: idle ones at once, busy ones when idle
    /// or after this grace period.
    #[arg(long, env = "DETOUR_RECONNECT_GRACE", default_value = "2s", value_parser = humantime::parse_duration)]
    reconnect_grace: Duration,

    /// Most connections proxied at once; more are closed at accept and
    /// counted in `detour_connections_rejected_total{reason="over_limit"}`.
    /// Default: 10000, or fewer when the open-file limit (two files per
    /// connection) holds fewer.
    #[arg(long, env = "DETOUR_MAX_CONNECTIONS")]
    max_connections: Option<usize>,

    /// Capacity of the STEERED map: steered destinations (address:port) the
    /// kernel can hold. Beyond it, destinations are not steered (their
    /// connects go direct), counted in `detour_steered_not_installed` and
    /// listed by `detour status`.
    #[arg(long, env = "DETOUR_STEERED_CAPACITY", value_name = "N", default_value_t = detour_common::capacity::STEERED, value_parser = clap::value_parser!(u32).range(1..))]
    steered_capacity: u32,

    /// Capacity of each of ORIG_BY_COOKIE and ORIG_BY_PEER (default 16384
    /// and 65536): redirected connects not yet accepted by the proxy. Beyond
    /// it the oldest records are evicted and the proxy closes their
    /// connections (`detour_connections_rejected_total{reason="no_original_destination"}`).
    #[arg(long, env = "DETOUR_ORIG_DST_CAPACITY", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    orig_dst_capacity: Option<u32>,

    /// Relay the bytes of spliced connections (`tcp` ports, non-HTTP bytes,
    /// after a 101 Upgrade) in the kernel, between the two sockets, instead
    /// of copying them through the proxy. Off by default: the kernel applies
    /// no backpressure to these redirects, so a reader that stops reading
    /// lets its peer queue unbounded kernel memory. Where the kernel refuses,
    /// bytes are copied (`detour_splices_total{relay="user"}`).
    #[arg(long, env = "DETOUR_KERNEL_RELAY", value_name = "BOOL", default_value_t = false, action = clap::ArgAction::Set)]
    kernel_relay: bool,

    /// The source address of the proxy's upstream connections: `client`
    /// (each made in the client pod's network namespace, so servers and
    /// NetworkPolicies see the pod, as without detour), or `node` (the
    /// node's address, for every client).
    #[arg(long, env = "DETOUR_CLIENT_ADDRESS", value_name = "FROM", default_value = "client", value_parser = ["client", "node"])]
    client_address: String,

    /// Proxy worker threads (default: one per CPU).
    #[arg(long, env = "DETOUR_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    worker_threads: Option<u16>,

    /// The admin socket the CLI talks to (mode 0600: root only).
    #[arg(long, env = "DETOUR_ADMIN_SOCKET", default_value = defaults::ADMIN_SOCKET)]
    admin_socket: PathBuf,

    /// Where this agent hands its sockets to a successor, and where a new
    /// agent looks for a running one to take over from (hitless upgrades;
    /// mode 0600: root only).
    #[arg(long, env = "DETOUR_HANDOVER_SOCKET", default_value = defaults::HANDOVER_SOCKET)]
    handover_socket: PathBuf,

    /// Where to pin the maps so that `detour bpf` can read them while the
    /// agent is down: on a bpf filesystem (the node's /sys/fs/bpf is mounted
    /// when missing); `none`: no pinned maps.
    #[arg(long, env = "DETOUR_PIN_DIR", default_value = defaults::PIN_DIR)]
    pin_dir: PathBuf,

    /// Log format.
    #[arg(long, env = "DETOUR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

impl AgentArgs {
    /// The map sizes the flags ask for.
    pub fn capacities(&self) -> Capacities {
        Capacities {
            steered: self.steered_capacity,
            ..Capacities::default().with_orig_dst(self.orig_dst_capacity)
        }
    }
}

impl AgentArgs {
    /// The agent's configuration; flags that cannot work are refused here.
    pub fn config(self) -> anyhow::Result<Config> {
        let keys = RoutingKeys::with_browser_sources(
            &self.routing_key_names,
            &self.routing_headers,
            &self.routing_query_params,
            &self.routing_cookies,
        )?;
        if self.routes.is_none() && !(self.kubernetes || in_cluster()) {
            bail!("no route source: pass --routes FILE (standalone) or --kubernetes");
        }
        Ok(Config {
            capacities: self.capacities(),
            kernel_relay: self.kernel_relay,
            keep_client_address: self.client_address == "client",
            routes: self.routes,
            node_name: self.node_name,
            cgroup: self.cgroup,
            proxy_addrs: self.proxy_addrs,
            metrics_addr: self.metrics_addr,
            admin_socket: self.admin_socket,
            handover_socket: self.handover_socket,
            pin_dir: (self.pin_dir != Path::new("none")).then_some(self.pin_dir),
            keys,
            upstream: Upstream {
                mark: self.mark,
                connect_timeout: self.connect_timeout,
                response_timeout: self.upstream_timeout,
            },
            http1: http1::Settings {
                head_timeout: self.head_timeout,
                idle_timeout: self.idle_timeout,
                park_after: self.park_idle_after,
            },
            detect_timeout: self.detect_timeout,
            reconnect_grace: self.reconnect_grace,
            max_connections: self.max_connections,
            worker_threads: self.worker_threads,
            log_format: self.log_format,
        })
    }
}

/// `detour agent`: the flags become a [`Config`], and the agent runs.
pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    app::run(args.config()?)
}

/// Inside a pod, Kubernetes sets this for every container.
fn in_cluster() -> bool {
    std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
}
