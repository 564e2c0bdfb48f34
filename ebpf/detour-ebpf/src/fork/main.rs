//! detour's fork programs: `cgroup/connect4` and `cgroup/connect6` for the
//! pods of one sandbox's forks, loaded once per sandbox and attached to each
//! of its fork pods' cgroups.
//!
//! A connect from a fork pod to a destination the sandbox forks with no
//! routing key to carry (a `tcp` port: a database, a cache, a broker) goes
//! to the sandbox's fork of it instead, decided here at `connect()` with no
//! proxy hop. Every other connect is untouched.
//!
//! Every other TCP connect of a fork pod is marked with the sandbox
//! (`FORK_SOURCES`, shared with the node's programs): when the node's
//! programs redirect it to the proxy, its requests without a routing key
//! inherit the sandbox's.
//!
//! Unlike the node's programs these fail closed, on purpose: a fork's
//! database connection that reached the baseline database would write into
//! everyone's data. A forked destination with no ready fork endpoint, or
//! none of the socket's family, is refused (`EPERM`). The agent pins their
//! links, so they outlive it: while the agent is down, a fork's connects
//! still reach its own database.

#![no_std]
#![no_main]

#[path = "../sock_addr.rs"]
mod sock_addr;

use aya_ebpf::{
    EbpfContext,
    bindings::bpf_sock_addr,
    helpers::bpf_get_socket_cookie,
    macros::{cgroup_sock_addr, map},
    maps::{HashMap, LruHashMap, PerCpuArray},
    programs::SockAddrContext,
};
use detour_common::{NO_FORK_ENDPOINT, SockKey, capacity, fork_counter};
use sock_addr::{ALLOW, Family, is_tcp, read_ip6, write_ip6};

/// Verdict that fails the connect with `EPERM`.
const DENY: i32 = 0;

/// The sandbox's id in the agent's route snapshot, set at load; 0: its
/// requests inherit no key (the sandbox opted out, or no map is shared).
#[unsafe(no_mangle)]
static SANDBOX_ID: u32 = 0;

/// The node object's map, shared through its pin: this connect's sandbox.
#[map]
static FORK_SOURCES: LruHashMap<u64, u32> = LruHashMap::with_max_entries(capacity::FORK_SOURCES, 0);

/// Baseline destination -> the sandbox's fork endpoint, or `NO_FORK_ENDPOINT`.
#[map]
static FORK_DEPS: HashMap<SockKey, SockKey> = HashMap::with_max_entries(capacity::FORK_DEPS, 0);

#[map]
static FORK_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(fork_counter::COUNT, 0);

#[cgroup_sock_addr(connect4)]
pub fn detour_fork_connect4(ctx: SockAddrContext) -> i32 {
    steer(&ctx, Family::V4)
}

#[cgroup_sock_addr(connect6)]
pub fn detour_fork_connect6(ctx: SockAddrContext) -> i32 {
    steer(&ctx, Family::V6)
}

#[inline(always)]
fn steer(ctx: &SockAddrContext, family: Family) -> i32 {
    // SAFETY: the kernel hands the program a valid `bpf_sock_addr`.
    let addr: &mut bpf_sock_addr = unsafe { &mut *ctx.sock_addr };
    if !is_tcp(addr) {
        return ALLOW;
    }
    // `user_port` holds the port in network order in its low 16 bits.
    let port = addr.user_port as u16;
    let dst = match family {
        Family::V4 => SockKey::v4(addr.user_ip4, port),
        Family::V6 => SockKey::v6(read_ip6(addr), port),
    };
    // SAFETY: the value is copied out before the map can change under it.
    let Some(endpoint) = (unsafe { FORK_DEPS.get(dst) }).copied() else {
        mark_source(ctx);
        return ALLOW;
    };
    if endpoint == NO_FORK_ENDPOINT {
        count(fork_counter::REFUSED);
        return DENY;
    }
    match family {
        Family::V4 if endpoint.is_v4() => addr.user_ip4 = endpoint.addr[3],
        // An IPv4 socket cannot reach an IPv6 fork: refused, not baseline.
        Family::V4 => {
            count(fork_counter::REFUSED);
            return DENY;
        }
        // An IPv6 socket reaches an IPv4 fork in the mapped form
        // (dual-stack); a v6-only socket then fails to connect, which is
        // as safe as a refusal.
        Family::V6 => write_ip6(addr, endpoint.addr),
    }
    addr.user_port = u32::from(endpoint.port);
    count(fork_counter::REDIRECTED);
    ALLOW
}

/// Marks the connect with this sandbox, for the node's programs: if they
/// redirect it to the proxy, its requests inherit the sandbox's key.
#[inline(always)]
fn mark_source(ctx: &SockAddrContext) {
    // SAFETY: a read of this object's own constant, set at load.
    let sandbox = unsafe { core::ptr::read_volatile(&SANDBOX_ID) };
    if sandbox == 0 {
        return;
    }
    // SAFETY: the helper only reads the context's socket.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // A full LRU evicts an old mark: never fails for want of room.
    let _ = FORK_SOURCES.insert(cookie, sandbox, 0);
}

#[inline(always)]
fn count(index: u32) {
    if let Some(slot) = FORK_COUNTERS.get_ptr_mut(index) {
        // SAFETY: the pointer is to this CPU's slot, valid for the program run.
        unsafe { *slot += 1 };
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable in a verified program; required by `no_std`.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
