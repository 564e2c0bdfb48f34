//! Paths, ports, marks and environment variable names in one place, so that
//! the agent, the CLI, the tests and the docs agree on them.

/// Where the proxy listens (and connects are redirected to) when nothing is
/// configured: loopback, for standalone use on one host.
pub const PROXY_ADDR: &str = "127.0.0.1:15001";

/// Where the Prometheus endpoint listens when nothing is configured.
pub const METRICS_ADDR: &str = "127.0.0.1:15020";

/// The admin socket the CLI talks to.
pub const ADMIN_SOCKET: &str = "/run/detour/admin.sock";

/// Where a running agent hands its sockets to a successor (hitless
/// upgrades); beside the admin socket, on a directory both agents' pods see.
pub const HANDOVER_SOCKET: &str = "/run/detour/handover.sock";

/// Where the maps are pinned for `detour bpf`.
pub const PIN_DIR: &str = "/sys/fs/bpf/detour";

/// `SO_MARK` set on the agent's own upstream sockets; the connect programs
/// never redirect a socket that carries it. ASCII "dt" in the upper half, so
/// it stays clear of kube-proxy's 0x4000/0x8000 bits.
pub const SOCKET_MARK: u32 = 0x6474_0000;

/// Most connections the proxy serves at once. Each costs a task and its
/// buffers (about 40 KiB while active).
pub const MAX_CONNECTIONS: usize = 10_000;

/// How long an upstream connect may take before the client is told.
pub const UPSTREAM_CONNECT_TIMEOUT_SECS: u64 = 5;

/// How long SIGTERM waits for in-flight connections before exiting anyway.
pub const DRAIN_TIMEOUT_SECS: u64 = 10;

/// Filter for the agent's logs, in `tracing-subscriber` `EnvFilter` syntax.
pub const ENV_LOG: &str = "DETOUR_LOG";
