//! `cgroup/connect4` and `cgroup/connect6`: redirect steered TCP connects to
//! the proxy.

use aya_ebpf::{
    EbpfContext,
    bindings::{bpf_sock, bpf_sock_addr},
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use aya_log_ebpf::debug;
use detour_common::{
    AF_INET, AF_INET6, CONFIG_HAS_PROXY4, CONFIG_HAS_PROXY6, OrigDst, STEERED_FORK_SOURCES_ONLY,
    SockKey, counter,
};

use crate::{
    maps::{CONFIG, FORK_SOURCES, ORIG_BY_COOKIE, STEERED, count},
    sock_addr::{ALLOW, Family, is_tcp, read_ip6, write_ip6},
};

/// Why a program gave up; every variant lets the connect through.
enum Failure {
    NoConfig,
    RecordFull,
}

#[cgroup_sock_addr(connect4)]
pub fn detour_connect4(ctx: SockAddrContext) -> i32 {
    verdict(try_connect(&ctx, Family::V4))
}

#[cgroup_sock_addr(connect6)]
pub fn detour_connect6(ctx: SockAddrContext) -> i32 {
    verdict(try_connect(&ctx, Family::V6))
}

/// Fail-open: an error is counted and the connect proceeds unmodified.
#[inline(always)]
fn verdict(result: Result<(), Failure>) -> i32 {
    if let Err(Failure::NoConfig | Failure::RecordFull) = result {
        count(counter::ERRORS);
    }
    ALLOW
}

#[inline(always)]
fn try_connect(ctx: &SockAddrContext, family: Family) -> Result<(), Failure> {
    // SAFETY: the kernel hands the program a valid `bpf_sock_addr`.
    let addr: &mut bpf_sock_addr = unsafe { &mut *ctx.sock_addr };
    if !is_tcp(addr) {
        return Ok(());
    }
    // `user_port` holds the port in network order in its low 16 bits.
    let port = addr.user_port as u16;
    let dst = match family {
        Family::V4 => SockKey::v4(addr.user_ip4, port),
        Family::V6 => SockKey::v6(read_ip6(addr), port),
    };
    let Some(steered) = (unsafe { STEERED.get(dst) }) else {
        count(counter::NOT_STEERED);
        return Ok(());
    };
    let (service_id, flags) = (steered.service_id, steered.flags);
    // SAFETY: the helper only reads the context's socket.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // A fork pod's connect carries its sandbox's mark, left by the fork
    // programs of its cgroup (which ran first, in this same call).
    // SAFETY: the value is copied out before the entry is removed.
    let source_sandbox = match unsafe { FORK_SOURCES.get(cookie) }.copied() {
        Some(sandbox) => {
            let _ = FORK_SOURCES.remove(cookie);
            sandbox
        }
        None => 0,
    };
    if flags & STEERED_FORK_SOURCES_ONLY != 0 && source_sandbox == 0 {
        count(counter::NOT_STEERED);
        return Ok(());
    }
    let config = CONFIG.get(0).ok_or(Failure::NoConfig)?;

    // SAFETY: `sk` of a connect hook's context is always a valid socket.
    let sk: *mut bpf_sock = unsafe { addr.__bindgen_anon_1.sk };
    if unsafe { (*sk).mark } == config.mark {
        count(counter::OWN_SOCKET);
        return Ok(());
    }

    // A v4 destination through connect6 (dual-stack socket) goes to the IPv4
    // proxy in its mapped form; a v6 one needs the IPv6 proxy.
    let (has_proxy, socket_family) = match family {
        Family::V4 => (config.flags & CONFIG_HAS_PROXY4 != 0, AF_INET),
        Family::V6 if dst.is_v4() => (config.flags & CONFIG_HAS_PROXY4 != 0, AF_INET6),
        Family::V6 => (config.flags & CONFIG_HAS_PROXY6 != 0, AF_INET6),
    };
    if !has_proxy {
        count(counter::NO_PROXY_FAMILY);
        return Ok(());
    }

    // SAFETY: the helper only reads the context's socket's namespace.
    let netns = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    let record = OrigDst {
        dst,
        service_id,
        family: socket_family,
        _pad: 0,
        source_sandbox,
        netns,
    };
    ORIG_BY_COOKIE
        .insert(cookie, record, 0)
        .map_err(|_| Failure::RecordFull)?;

    match family {
        Family::V4 => {
            addr.user_ip4 = config.proxy_ip4;
            addr.user_port = u32::from(config.proxy_port4);
        }
        Family::V6 if dst.is_v4() => {
            write_ip6(addr, SockKey::v4(config.proxy_ip4, 0).addr);
            addr.user_port = u32::from(config.proxy_port4);
        }
        Family::V6 => {
            write_ip6(addr, config.proxy_ip6);
            addr.user_port = u32::from(config.proxy_port6);
        }
    }
    count(counter::REDIRECTED);
    debug!(ctx, "redirected cookie {} service {}", cookie, service_id);
    Ok(())
}
