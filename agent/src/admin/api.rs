//! The admin API's wire types: JSON bodies of the agent's admin socket, as
//! the CLI reads them and `-o json` prints them. Field names are stable
//! (documented in `docs/cli.md`); add fields, never rename them.
//!
//! Endpoints (HTTP/1.1 on the Unix socket, default `/run/detour/admin.sock`):
//!
//! | method, path | body | answer |
//! |---|---|---|
//! | `GET /status` | | [`Status`] |
//! | `GET /routes?key=K&service=NS/NAME` | | [`Routes`] (filtered) |
//! | `GET /flows` | | [`Flows`] |
//! | `GET /trace?key=K&service=NS/NAME` | | a stream of [`TraceEvent`], one JSON object per line |
//! | `POST /explain` | [`ExplainRequest`] | [`Explanation`] |
//! | `PUT /log-level` | [`LogLevel`] | [`LogLevel`] (the filter now in force) |
//!
//! Errors are a non-2xx status with an [`ApiError`] body.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

pub use crate::routes::Reason;

/// `GET /status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub pid: u32,
    pub uptime_seconds: u64,
    /// The cgroup the programs are attached to.
    pub cgroup: String,
    /// Why that cgroup: set by `--cgroup`, or how it was detected.
    #[serde(default)]
    pub cgroup_reason: String,
    /// Attached programs, by name.
    pub programs: Vec<String>,
    pub proxy_addrs: Vec<SocketAddr>,
    /// Where the maps are pinned (`detour bpf` reads them there).
    pub pin_dir: Option<String>,
    pub maps: Vec<MapStatus>,
    pub route_source: RouteSourceStatus,
    pub ready: bool,
    /// Live proxied connections.
    pub flows: u64,
    /// The source address servers see on proxied connections, and why.
    #[serde(default)]
    pub client_address: String,
    /// Established connections from the cgroup to steered destinations that
    /// bypass the proxy right now (opened before steering, or while no agent
    /// ran; being closed); `None` when they cannot be found on this kernel.
    #[serde(default)]
    pub bypassing_connections: Option<u64>,
    /// What the agent cannot do on this node (e.g. close connections that
    /// predate steering on a kernel without `CONFIG_INET_DIAG_DESTROY`).
    #[serde(default)]
    pub warnings: Vec<String>,
    /// The fork pods on this node the fork programs serve (a pod whose
    /// cgroup is missing, or that could not be attached, is also a route
    /// problem).
    #[serde(default)]
    pub fork_pods: Vec<ForkPodStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkPodStatus {
    pub sandbox: String,
    /// `namespace/name` of a Kubernetes pod, or a cgroup directory.
    pub pod: String,
    /// Whether its requests without a key inherit the sandbox's.
    pub inherits_key: bool,
    /// Keyless destinations its connects go to the sandbox's forks of.
    pub keyless_forks: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapStatus {
    pub name: String,
    /// Current number of entries (for per-CPU arrays: slots).
    pub entries: u64,
    pub max_entries: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteSourceStatus {
    /// `file` or `kubernetes`.
    pub kind: String,
    /// The routes file, for `file`.
    pub path: Option<String>,
    pub synced: bool,
    /// Route problems: objects the source ignored (conflicting keys, missing
    /// services...), then steered destinations the `STEERED` map could not
    /// hold (not steered until they fit).
    pub problems: Vec<String>,
}

/// `GET /routes`: the route snapshot, every list sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Routes {
    pub services: Vec<ServiceRoutes>,
    pub sandboxes: Vec<SandboxRoutes>,
    pub route_groups: Vec<GroupRoutes>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServiceRoutes {
    /// `namespace/name`.
    pub service: String,
    /// Steered destinations, `address:port (protocol)`.
    pub destinations: Vec<Destination>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Destination {
    pub address: SocketAddr,
    /// `http`, `h2c`, `tcp` or `auto`.
    pub protocol: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxRoutes {
    pub sandbox: String,
    pub routing_key: String,
    pub forks: Vec<ForkRoutes>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkRoutes {
    pub service: String,
    /// Endpoints for any destination port.
    pub endpoints: Vec<SocketAddr>,
    /// Endpoints by destination port.
    pub by_port: Vec<PortEndpoints>,
    /// False when no endpoint is ready (requests fall back to baseline).
    pub ready: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortEndpoints {
    pub port: u16,
    pub endpoints: Vec<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRoutes {
    pub route_group: String,
    pub routing_key: String,
    pub sandboxes: Vec<String>,
}

/// `GET /flows`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Flows {
    pub flows: Vec<Flow>,
    /// As [`Status::bypassing_connections`].
    #[serde(default)]
    pub bypassing_connections: Option<u64>,
}

/// One live proxied connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Flow {
    pub id: u64,
    pub client: SocketAddr,
    pub original_dst: SocketAddr,
    pub service: String,
    /// `http1`, `h2`, `opaque`, `timeout`, or `detecting`.
    pub protocol: String,
    /// Requests routed so far (HTTP/2: streams).
    pub requests: u64,
    /// HTTP/2 streams open now (0 for other protocols).
    #[serde(default)]
    pub live_streams: u64,
    pub age_seconds: f64,
    pub last_decision: Option<Routing>,
    /// An idle HTTP/1 keep-alive connection, parked: its socket waits for
    /// the next request outside the proxy's tasks.
    #[serde(default)]
    pub parked: bool,
}

/// How one request was routed: where it went, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Routing {
    /// `baseline` or `sandbox`.
    pub destination: String,
    pub sandbox: Option<String>,
    /// The upstream chosen.
    pub endpoint: SocketAddr,
    pub routing_key: Option<String>,
    /// `no-key`, `no-route-for-key`, `fork-no-ready-endpoints`, `fork`.
    pub reason: Reason,
}

/// One line of `GET /trace`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceEvent {
    /// Unix time, seconds with fraction.
    pub time: f64,
    pub flow: u64,
    pub client: SocketAddr,
    pub service: String,
    pub method: String,
    #[serde(flatten)]
    pub routing: Routing,
}

/// `POST /explain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplainRequest {
    /// `namespace/name`.
    pub service: String,
    /// The destination port the request would be sent to; default: the
    /// service's first steered port.
    pub port: Option<u16>,
    /// Request headers as `(name, value)`.
    pub headers: Vec<(String, String)>,
    /// The request target (`/path?query`), for `--routing-query-param`.
    #[serde(default)]
    pub path: Option<String>,
    /// The pod the request would come from, as `detour status` lists fork
    /// pods (`namespace/name`, or a cgroup directory): a fork pod's request
    /// without a key inherits its sandbox's, and its connects to keyless
    /// forked services go to the forks.
    #[serde(default)]
    pub from: Option<String>,
}

/// The whole reasoning behind a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    pub service: String,
    pub port: u16,
    /// The key, and where it came from (e.g. `baggage member detour-routing-key`).
    pub routing_key: Option<String>,
    pub key_source: Option<String>,
    /// The sandbox or route group that owns the key, if any.
    pub matched: Option<String>,
    /// What would happen: `baseline` or `sandbox`.
    pub destination: String,
    pub sandbox: Option<String>,
    /// The endpoint that would be chosen next (`None` for baseline: the
    /// client's own original destination).
    pub endpoint: Option<SocketAddr>,
    pub reason: Reason,
    /// Every step, in words.
    pub steps: Vec<String>,
    /// Existing connections from the cgroup to this service that bypass the
    /// proxy: their requests go to baseline whatever their key, until they
    /// are closed.
    #[serde(default)]
    pub bypassing_connections: Option<u64>,
}

/// `PUT /log-level`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLevel {
    /// An `EnvFilter` directive, e.g. `debug` or `info,detour::proxy=debug`.
    pub filter: String,
}

/// The body of any error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}
