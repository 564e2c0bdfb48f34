//! Map types shared by detour's eBPF programs and its agent.
//!
//! Every type here crosses the kernel/user boundary as raw bytes, so each is
//! plain data: `#[repr(C)]`, fixed-width integers only, padding spelled out as
//! named fields, and a compile-time size assertion. Addresses are always stored
//! as 16 bytes: IPv4 addresses in their IPv4-mapped IPv6 form
//! (`::ffff:a.b.c.d`), so that one key type serves `connect4`, `connect6` and
//! dual-stack sockets that connect to an IPv4 address through `connect6`.
//!
//! Byte order: addresses and ports are kept in **network byte order**, exactly
//! as the kernel hands them to `cgroup/connect*` programs (`user_ip4`,
//! `user_ip6`, `user_port`). The agent converts with [`SockKey::new`] and
//! [`SockKey::ip`]/[`SockKey::port`].

#![no_std]

/// Names of the maps in the eBPF object, as the agent and CLI look them up.
pub mod maps {
    /// `HASH` of [`SockKey`](super::SockKey) -> [`Steered`](super::Steered):
    /// the destinations whose connections are redirected to the proxy.
    pub const STEERED: &str = "STEERED";
    /// `LRU_HASH` of socket cookie (`u64`) -> [`OrigDst`](super::OrigDst):
    /// written by `connect4/6`, consumed by `sock_ops` moments later.
    pub const ORIG_BY_COOKIE: &str = "ORIG_BY_COOKIE";
    /// `LRU_HASH` of client [`SockKey`](super::SockKey) -> [`OrigDst`](super::OrigDst):
    /// written by `sock_ops` at `TCP_CONNECT_CB`, taken by the proxy on accept.
    pub const ORIG_BY_PEER: &str = "ORIG_BY_PEER";
    /// `ARRAY` with one [`Config`](super::Config).
    pub const CONFIG: &str = "CONFIG";
    /// `PERCPU_ARRAY` of `u64`, indexed by the [`counter`](super::counter) constants.
    pub const COUNTERS: &str = "COUNTERS";
    /// `SOCKHASH` of socket cookie (`u64`) -> socket: each relayed socket
    /// under its peer's cookie, read by the `sk_skb` stream verdict.
    pub const RELAY: &str = "RELAY";
    /// Of a fork object (one per sandbox): `HASH` of baseline destination
    /// [`SockKey`](super::SockKey) -> the sandbox's fork endpoint
    /// [`SockKey`](super::SockKey), or [`NO_FORK_ENDPOINT`](super::NO_FORK_ENDPOINT).
    pub const FORK_DEPS: &str = "FORK_DEPS";
    /// Of a fork object: `PERCPU_ARRAY` of `u64`, indexed by the
    /// [`fork_counter`](super::fork_counter) constants.
    pub const FORK_COUNTERS: &str = "FORK_COUNTERS";
    /// `LRU_HASH` of socket cookie (`u64`) -> sandbox id (`u32`), shared by
    /// the node's object and every fork object (pinned): a fork program
    /// marks its pod's connect with its sandbox, the node's `connect4/6`
    /// read the mark (in the same `connect()` call) into
    /// [`OrigDst::source_sandbox`](super::OrigDst::source_sandbox).
    pub const FORK_SOURCES: &str = "FORK_SOURCES";
}

/// Default map capacities. They bound kernel memory; the reasons for each
/// size are given beside it. The agent can override the first three at load
/// (`--steered-capacity`, `--orig-dst-capacity`).
pub mod capacity {
    /// Steered destinations: one entry per (address, port) of a service that has
    /// forks, including its baseline pod IPs. 16 Ki entries cover 1,000 forked
    /// services with 16 addresses and ports each; an entry is 28 bytes.
    pub const STEERED: u32 = 16 * 1024;
    /// Records live only between `connect()` and the SYN (microseconds); the
    /// LRU bound only matters for connects that fail before the SYN.
    pub const ORIG_BY_COOKIE: u32 = 16 * 1024;
    /// Records live between the SYN and the proxy's `accept()`: bounded by the
    /// accept backlog under normal load. 64 Ki covers a burst of 64 Ki
    /// concurrent connects on one node. Beyond it the LRU evicts the oldest
    /// records: those of connections that never reached the proxy, or, if
    /// the proxy is not accepting, of connections still waiting, which the
    /// proxy then closes. An entry is 60 bytes.
    pub const ORIG_BY_PEER: u32 = 64 * 1024;
    /// Two entries per relayed connection (its client and upstream
    /// sockets): 64 Ki relays 32 Ki connections at once; beyond that,
    /// connections are spliced in user space.
    pub const RELAY: u32 = 64 * 1024;
    /// Keyless destinations one sandbox forks (address:port of each `tcp`
    /// port of its forked services): 1 Ki covers a sandbox forking 64
    /// databases with 16 addresses each; an entry is 40 bytes.
    pub const FORK_DEPS: u32 = 1024;
    /// A mark lives for one `connect()` call; one left behind (a connect
    /// to a destination that is not steered) is evicted by the LRU.
    pub const FORK_SOURCES: u32 = 16 * 1024;
}

/// Indexes into the `COUNTERS` per-CPU array.
pub mod counter {
    /// A connect was redirected to the proxy.
    pub const REDIRECTED: u32 = 0;
    /// A TCP connect to a destination that is not steered (untouched).
    pub const NOT_STEERED: u32 = 1;
    /// A steered destination, but the socket carries the agent's mark (the
    /// agent's own upstream connection): untouched.
    pub const OWN_SOCKET: u32 = 2;
    /// A steered destination, but the proxy has no address of the socket's
    /// family: untouched (fail-open).
    pub const NO_PROXY_FAMILY: u32 = 3;
    /// An internal error (map full, missing config): untouched (fail-open).
    pub const ERRORS: u32 = 4;
    /// `sock_ops` re-keyed a record by the client's source address.
    pub const REKEYED: u32 = 5;
    /// `sock_ops` saw a connect to the proxy address with no record under its
    /// cookie: the LRU evicted it (too many connects in flight for
    /// `ORIG_BY_COOKIE`), or the process connected to the proxy port
    /// directly. The proxy closes that connection.
    pub const RECORD_MISSING: u32 = 6;
    /// The relay sent a received segment straight out of the peer socket.
    pub const RELAYED: u32 = 7;
    /// The relay found no peer for a segment (its connection is ending, or
    /// the map was full): passed to the proxy, which forwards it itself.
    pub const RELAY_MISSED: u32 = 8;
    /// Number of counters.
    pub const COUNT: u32 = 9;
    /// Names, in index order, as used by the agent's metrics and the CLI.
    pub const NAMES: [&str; COUNT as usize] = [
        "redirected",
        "not_steered",
        "own_socket",
        "no_proxy_family",
        "errors",
        "rekeyed",
        "record_missing",
        "relayed",
        "relay_missed",
    ];
}

/// Indexes into a fork object's `FORK_COUNTERS` per-CPU array.
pub mod fork_counter {
    /// A fork pod's connect to a forked keyless destination went to the fork.
    pub const REDIRECTED: u32 = 0;
    /// Refused (`EPERM`): the fork has no ready endpoint, or none of the
    /// socket's family. Never sent to baseline instead.
    pub const REFUSED: u32 = 1;
    /// Number of counters.
    pub const COUNT: u32 = 2;
    /// Names, in index order.
    pub const NAMES: [&str; COUNT as usize] = ["redirected", "refused"];
}

/// A `FORK_DEPS` value that means "forked, but no endpoint is ready": the
/// fork program refuses the connect rather than let it reach baseline.
pub const NO_FORK_ENDPOINT: SockKey = SockKey {
    addr: [0; 4],
    port: 0,
    _pad: 0,
};

/// `AF_INET`, as stored in [`OrigDst::family`].
pub const AF_INET: u16 = 2;
/// `AF_INET6`, as stored in [`OrigDst::family`].
pub const AF_INET6: u16 = 10;

/// The word `::ffff:0:0/96` puts before an IPv4 address, in memory order.
const V4_MAPPED_WORD: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

/// A socket address as a map key: 16 address bytes and a port, both in
/// network byte order. IPv4 is stored IPv4-mapped.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SockKey {
    /// IPv6 address (or IPv4-mapped), network byte order, as four words in
    /// memory order (the layout of `bpf_sock_addr.user_ip6`).
    pub addr: [u32; 4],
    /// Port, network byte order.
    pub port: u16,
    /// Explicit padding; always zero so that keys hash identically.
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<SockKey>() == 20);

impl SockKey {
    /// A key for an IPv4 address (`user_ip4` layout) and port, both network order.
    #[inline(always)]
    pub const fn v4(ip4: u32, port: u16) -> Self {
        Self {
            addr: [0, 0, V4_MAPPED_WORD, ip4],
            port,
            _pad: 0,
        }
    }

    /// A key for an IPv6 address (`user_ip6` layout) and port, both network order.
    #[inline(always)]
    pub const fn v6(ip6: [u32; 4], port: u16) -> Self {
        Self {
            addr: ip6,
            port,
            _pad: 0,
        }
    }

    /// Whether the address is IPv4-mapped.
    #[inline(always)]
    pub const fn is_v4(&self) -> bool {
        self.addr[0] == 0 && self.addr[1] == 0 && self.addr[2] == V4_MAPPED_WORD
    }
}

/// [`Steered::flags`] bit: steered only for fork pods' connects (a service
/// no sandbox forks, whose requests from a fork inherit its key); anyone
/// else's connect to it is untouched.
pub const STEERED_FORK_SOURCES_ONLY: u32 = 1 << 0;

/// What the kernel knows about a steered destination.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Steered {
    /// The agent's identifier of the service this destination belongs to.
    pub service_id: u32,
    /// `STEERED_*` bits.
    pub flags: u32,
}
const _: () = assert!(core::mem::size_of::<Steered>() == 8);

/// The destination a client asked for before it was redirected.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OrigDst {
    /// The original destination (address and port, network order).
    pub dst: SockKey,
    /// [`Steered::service_id`] of the destination.
    pub service_id: u32,
    /// Address family of the client socket ([`AF_INET`] or [`AF_INET6`]).
    pub family: u16,
    /// Explicit padding.
    pub _pad: u16,
    /// The sandbox of the fork pod that connected (its id in the route
    /// snapshot); 0: not a fork pod. Also keeps `netns` 8-byte aligned.
    pub source_sandbox: u32,
    /// The network namespace cookie of the client socket
    /// (`bpf_get_netns_cookie`): the proxy opens the upstream connection in
    /// that namespace, so that it leaves with the client's address.
    pub netns: u64,
}
const _: () = assert!(core::mem::size_of::<OrigDst>() == 40);

/// [`Config::flags`] bit: `proxy_ip4`/`proxy_port4` are set.
pub const CONFIG_HAS_PROXY4: u32 = 1 << 0;
/// [`Config::flags`] bit: `proxy_ip6`/`proxy_port6` are set.
pub const CONFIG_HAS_PROXY6: u32 = 1 << 1;

/// The agent's settings for the programs (index 0 of the `CONFIG` array).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Proxy address for IPv4 sockets, network order.
    pub proxy_ip4: u32,
    /// Proxy address for IPv6 sockets, network order (`user_ip6` layout).
    pub proxy_ip6: [u32; 4],
    /// Proxy port for IPv4 sockets, network order.
    pub proxy_port4: u16,
    /// Proxy port for IPv6 sockets, network order.
    pub proxy_port6: u16,
    /// `SO_MARK` carried by the agent's own upstream sockets: never redirected.
    pub mark: u32,
    /// `CONFIG_HAS_*` bits.
    pub flags: u32,
}
const _: () = assert!(core::mem::size_of::<Config>() == 32);

#[cfg(feature = "user")]
mod user;
#[cfg(feature = "user")]
pub use user::*;
